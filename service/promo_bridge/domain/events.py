"""Input events: the CloudEvents 1.0 envelope, the canonical payloads, and the one-step decoder.

Events arrive in CloudEvents structured JSON mode. `decode_event` validates envelope and payload
in one pydantic pass over the raw bytes (a union discriminated on `type`), because decoding sits
on the hot path of every record. Unknown fields, in the envelope (CloudEvents extension
attributes) and in payloads, are kept, so rules can read them.

A type without a registered payload model still decodes, with an untyped `GenericPayload`: a
topic may carry types nobody has declared yet, and refusing them would flood the DLQ with valid
events. `EventRegistry.with_payload` declares a model for a further type.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Final, Generic, Literal, TypeAlias, TypeVar, Union, cast

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializationInfo,
    TypeAdapter,
    ValidationError,
    create_model,
    field_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails

ORDER_PLACED: Final = "order.placed"
RETURN_CREATED: Final = "return.created"
REVIEW_SUBMITTED: Final = "review.submitted"

# Serialization context that renders decimals as floats: CEL has no decimal type (see rules.py).
CEL_VIEW_CONTEXT: Final[Mapping[str, bool]] = {"cel": True}


def _blank_to_none(value: object) -> object:
    # Upstream systems send "" for "unknown"; an empty identifier must not count as one.
    if isinstance(value, str) and not value.strip():
        return None
    return value


_OptionalText = Annotated[str | None, BeforeValidator(_blank_to_none)]
_Text = Annotated[str, Field(min_length=1)]

# Order ids and SKUs are often numbers upstream; they are identifiers, so they become text.
_PAYLOAD_CONFIG = ConfigDict(extra="allow", frozen=True, coerce_numbers_to_str=True)


class Money(BaseModel):
    """An amount in a currency; the amount is a decimal, never a binary float."""

    # Amounts sent as JSON strings are exact. pydantic reads JSON numbers through a float64, so
    # a numeric amount keeps about 15 significant digits: plenty for prices, not beyond.
    model_config = _PAYLOAD_CONFIG

    amount: Decimal = Field(allow_inf_nan=False)
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. INR.")

    @field_serializer("amount", when_used="json")
    def _amount_for_json(self, amount: Decimal, info: SerializationInfo) -> str | float:
        # JSON output keeps every digit (a string); only the CEL view asks for a double.
        context = info.context
        if context is not None and context.get("cel"):
            return float(amount)
        return str(amount)


class Customer(BaseModel):
    """Who the event is about: at least one identifier, and the registration source."""

    # Ids and mobiles are often numbers in upstream JSON; Capillary takes them as strings.
    model_config = _PAYLOAD_CONFIG

    id: _OptionalText = None
    mobile: _OptionalText = None
    email: _OptionalText = None
    source: _Text = Field(description="Registration source: INSTORE, ECOMMERCE, ...")

    @model_validator(mode="after")
    def _has_identifier(self) -> Customer:
        if self.id is None and self.mobile is None and self.email is None:
            raise ValueError("at least one of id, mobile, email is required")
        return self


class LineItem(BaseModel):
    """One order, or returned, line."""

    model_config = _PAYLOAD_CONFIG

    sku: _Text
    # Not every catalogue classifies products, so a line without a category is still valid.
    category: str | None = None
    quantity: int = Field(gt=0)
    amount: Money


class OrderPlaced(BaseModel):
    """Payload of `order.placed`."""

    model_config = _PAYLOAD_CONFIG

    order_id: _Text
    placed_at: AwareDatetime | None = None
    store: str | None = None
    customer: Customer
    total: Money
    items: list[LineItem] = Field(default_factory=list)


class ReturnCreated(BaseModel):
    """Payload of `return.created`."""

    model_config = _PAYLOAD_CONFIG

    return_id: _Text
    order_id: _Text
    full_return: bool
    customer: Customer
    items: list[LineItem] = Field(default_factory=list)
    # An exchange returns goods without refunding money.
    refund: Money | None = None


class ReviewSubmitted(BaseModel):
    """Payload of `review.submitted`."""

    model_config = _PAYLOAD_CONFIG

    review_id: _Text
    order_id: _Text
    sku: _Text
    rating: int = Field(ge=1, le=5)
    customer: Customer


class GenericPayload(BaseModel):
    """Payload of a type without a registered model: any JSON object, every field kept."""

    model_config = _PAYLOAD_CONFIG


DataT = TypeVar("DataT", bound=BaseModel)


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 event in structured JSON mode; extension attributes are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: _Text = Field(description="Unique per event; the root of every command_id.")
    source: _Text
    type: _Text
    time: AwareDatetime | None = None
    subject: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: DataT


Event: TypeAlias = CloudEvent[BaseModel]

CANONICAL_PAYLOADS: Final[Mapping[str, type[BaseModel]]] = {
    ORDER_PLACED: OrderPlaced,
    RETURN_CREATED: ReturnCreated,
    REVIEW_SUBMITTED: ReviewSubmitted,
}


class EventDecodeError(ValueError):
    """Raw bytes that are not a valid event; the message is one line, fit for a DLQ record."""

    def __init__(self, reason: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.problems = problems or (reason,)


# At most this many field problems are spelled out in one reason; the rest are counted.
_MAX_REASONS: Final = 3
_MAX_REASON_CHARS: Final = 600
# Pydantic prefixes messages of validators' ValueErrors with this.
_VALUE_ERROR_PREFIX: Final = "Value error, "
# Errors that say the `type` tag matched no registered model: decode as generic instead.
_TAG_ERRORS: Final = frozenset({"union_tag_invalid", "union_tag_not_found"})


class EventRegistry:
    """Which payload model each event type carries; immutable, so it is safe to share.

    Construction builds the decoder once (a pydantic union discriminated on `type`).
    """

    __slots__ = ("_adapter", "_generic", "_payloads", "_single")

    def __init__(self, payloads: Mapping[str, type[BaseModel]] | None = None) -> None:
        self._payloads: dict[str, type[BaseModel]] = dict(payloads or {})
        # TypeAdapter[Any]: the adapted types are built at run time, beyond a checker's reach.
        self._generic: TypeAdapter[Any] = TypeAdapter(CloudEvent[GenericPayload])
        envelopes = [self._envelope(name, model) for name, model in self._payloads.items()]
        self._adapter: TypeAdapter[Any] | None
        self._single = len(envelopes) == 1
        if not envelopes:
            self._adapter = None
        elif self._single:
            self._adapter = TypeAdapter(envelopes[0])
        else:
            union: Any = Union[tuple(envelopes)]  # noqa: UP007 - built from a runtime tuple
            self._adapter = TypeAdapter(Annotated[union, Field(discriminator="type")])

    @staticmethod
    def _envelope(event_type: str, model: type[BaseModel]) -> type[Event]:
        # A Literal `type` per model lets pydantic-core pick the model from the tag while it
        # parses, which is markedly faster than a Python discriminator callback.
        name = f"CloudEvent_{model.__name__}"
        tag: Any = Literal[event_type]
        envelope = create_model(
            name,
            __base__=CloudEvent[model],  # type: ignore[valid-type]
            type=(tag, ...),
        )
        return cast("type[Event]", envelope)

    def with_payload(self, event_type: str, model: type[BaseModel]) -> EventRegistry:
        """A registry that also decodes `event_type` payloads with `model`."""
        if not event_type:
            raise ValueError("event type must not be empty")
        return EventRegistry({**self._payloads, event_type: model})

    @property
    def types(self) -> frozenset[str]:
        """Event types with a registered payload model."""
        return frozenset(self._payloads)

    def payload_model(self, event_type: str) -> type[BaseModel]:
        """The payload model of `event_type` (GenericPayload when none is registered)."""
        return self._payloads.get(event_type, GenericPayload)

    def decode(self, raw: bytes | str) -> Event:
        """Validate raw JSON into an event; raise EventDecodeError naming the field and why."""
        adapter = self._adapter
        if adapter is None:
            return self._decode_generic(raw)
        try:
            event: Event = adapter.validate_json(raw)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            if self._is_unregistered_type(errors):
                return self._decode_generic(raw)
            # Union errors carry the matched tag as the first location element.
            raise _decode_error(errors, strip_tag=not self._single) from None
        return event

    def _is_unregistered_type(self, errors: list[ErrorDetails]) -> bool:
        if self._single:
            # One model, no union: a `type` that is missing or another value fails right there.
            return any(error["loc"][:1] == ("type",) for error in errors)
        return any(error["type"] in _TAG_ERRORS for error in errors)

    def _decode_generic(self, raw: bytes | str) -> Event:
        try:
            event: Event = self._generic.validate_json(raw)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            raise _decode_error(errors, strip_tag=False) from None
        return event


DEFAULT_REGISTRY: Final = EventRegistry(CANONICAL_PAYLOADS)


def decode_event(raw: bytes | str, registry: EventRegistry = DEFAULT_REGISTRY) -> Event:
    """Decode one CloudEvents structured-JSON record; raise EventDecodeError if it is invalid."""
    return registry.decode(raw)


def _decode_error(errors: list[ErrorDetails], *, strip_tag: bool) -> EventDecodeError:
    problems = tuple(_describe(error, strip_tag=strip_tag) for error in errors)
    reason = "; ".join(problems[:_MAX_REASONS])
    if len(problems) > _MAX_REASONS:
        reason += f" (+{len(problems) - _MAX_REASONS} more)"
    reason = " ".join(reason.split())  # one line, whatever the messages contain
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[: _MAX_REASON_CHARS - 3] + "..."
    return EventDecodeError(reason, problems)


def _describe(error: ErrorDetails, *, strip_tag: bool, root: str = "") -> str:
    loc = error["loc"][1:] if strip_tag and error["loc"] else error["loc"]
    message = error["msg"].removeprefix(_VALUE_ERROR_PREFIX)
    if error["type"] == "json_invalid":
        return message
    path = _path(loc)
    if root:
        path = f"{root}.{path}" if path else root
    return f"{path}: {message}" if path else f"event: {message}"


def _path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(f".{part}" if parts else part)
    return "".join(parts)


def customer_of(event: Event) -> Customer | None:
    """The event's customer, typed; None when the payload carries none.

    Raises ValueError when an untyped payload carries a `customer` that is not valid.
    """
    customer: Any = getattr(event.data, "customer", None)
    if customer is None or isinstance(customer, Customer):
        return customer
    try:
        return Customer.model_validate(customer)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        problems = (_describe(error, strip_tag=False, root="data.customer") for error in errors)
        raise ValueError("; ".join(problems)) from None


def order_id_of(event: Event) -> str | None:
    """The order an event belongs to (`data.order_id`, as text), if it names one."""
    order_id: Any = getattr(event.data, "order_id", None)
    if order_id is None or isinstance(order_id, (dict, list, bool)):
        return None
    text = str(order_id).strip()
    return text or None
