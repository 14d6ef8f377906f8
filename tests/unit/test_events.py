"""CloudEvents decoding: canonical payloads, extra fields, registry, and one-line error reasons."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from promo_bridge.domain.events import (
    CEL_VIEW_CONTEXT,
    DEFAULT_REGISTRY,
    Customer,
    EventDecodeError,
    EventRegistry,
    GenericPayload,
    OrderPlaced,
    ReturnCreated,
    ReviewSubmitted,
    customer_of,
    decode_event,
)

CUSTOMER = {"id": "423927867", "mobile": "919986000586", "email": "a@b.in", "source": "INSTORE"}


def envelope(event_type: str, data: Any, **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "//shop/orders",
        "type": event_type,
        "time": "2026-11-21T10:00:00Z",
        "data": data,
        **extra,
    }


def order_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "order_id": "o-1001",
        "placed_at": "2026-11-21T10:00:00Z",
        "store": "s-42",
        "customer": dict(CUSTOMER),
        "total": {"amount": 6000.0, "currency": "INR"},
        "items": [
            {
                "sku": "SKU-1",
                "category": "shoes",
                "quantity": 1,
                "amount": {"amount": 6000.0, "currency": "INR"},
            }
        ],
    }
    data.update(changes)
    return data


def raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def reason_of(doc: dict[str, Any] | bytes | str) -> str:
    payload = doc if isinstance(doc, bytes | str) else raw(doc)
    with pytest.raises(EventDecodeError) as caught:
        decode_event(payload)
    return str(caught.value)


def test_order_placed_decodes_into_its_model() -> None:
    """An order.placed event decodes with a typed OrderPlaced payload."""
    event = decode_event(raw(envelope("order.placed", order_data())))
    assert isinstance(event.data, OrderPlaced)
    assert event.id == "evt-1"
    assert event.data.customer.id == "423927867"
    assert event.data.items[0].category == "shoes"
    assert event.time is not None
    assert event.time.tzinfo is not None


def test_amounts_are_exact_decimals() -> None:
    """Money amounts keep every digit as Decimal, whether sent as number or string."""
    data = order_data(total={"amount": "6000.10", "currency": "INR"})
    event = decode_event(raw(envelope("order.placed", data)))
    assert isinstance(event.data, OrderPlaced)
    assert event.data.total.amount == Decimal("6000.10")


def test_return_and_review_decode_into_their_models() -> None:
    """return.created and review.submitted decode into their typed payloads."""
    returned = decode_event(
        raw(
            envelope(
                "return.created",
                {
                    "return_id": "r-77",
                    "order_id": "o-1001",
                    "full_return": True,
                    "customer": CUSTOMER,
                    "items": [],
                    "refund": {"amount": 6000, "currency": "INR"},
                },
            )
        )
    )
    review = decode_event(
        raw(
            envelope(
                "review.submitted",
                {
                    "review_id": "rv-9",
                    "order_id": "o-1001",
                    "sku": "SKU-1",
                    "rating": 5,
                    "customer": CUSTOMER,
                },
            )
        )
    )
    assert isinstance(returned.data, ReturnCreated)
    assert returned.data.full_return is True
    assert isinstance(review.data, ReviewSubmitted)
    assert review.data.rating == 5


def test_unknown_fields_are_kept_in_envelope_and_payload() -> None:
    """Extension attributes and extra payload fields survive decoding and reach the CEL view."""
    data = order_data(channel="app", customer={**CUSTOMER, "tier": "gold"})
    event = decode_event(raw(envelope("order.placed", data, partitionkey="c-1")))
    assert event.model_extra == {"partitionkey": "c-1"}
    view = event.model_dump(mode="json", context=CEL_VIEW_CONTEXT, exclude_none=True)
    assert view["partitionkey"] == "c-1"
    assert view["data"]["channel"] == "app"
    assert view["data"]["customer"]["tier"] == "gold"


def test_cel_view_has_double_amounts_but_json_keeps_decimal_text() -> None:
    """The CEL view renders amounts as floats; a plain JSON dump keeps them as exact text."""
    data = order_data(total={"amount": "6000.10", "currency": "INR"})
    event = decode_event(raw(envelope("order.placed", data)))
    view = event.model_dump(mode="json", context=CEL_VIEW_CONTEXT)
    assert view["data"]["total"]["amount"] == 6000.1
    assert isinstance(view["data"]["total"]["amount"], float)
    assert event.model_dump(mode="json")["data"]["total"]["amount"] == "6000.10"


def test_numeric_identifiers_become_text() -> None:
    """Customer ids, mobiles and order ids sent as JSON numbers decode as strings."""
    data = order_data(order_id=1001, customer={"id": 423927867, "source": "INSTORE"})
    event = decode_event(raw(envelope("order.placed", data)))
    assert isinstance(event.data, OrderPlaced)
    assert event.data.order_id == "1001"
    assert event.data.customer.id == "423927867"


def test_blank_identifiers_count_as_absent() -> None:
    """An empty-string identifier is treated as missing, not as an identifier."""
    data = order_data(customer={"id": " ", "mobile": "", "email": "a@b.in", "source": "INSTORE"})
    event = decode_event(raw(envelope("order.placed", data)))
    assert isinstance(event.data, OrderPlaced)
    assert event.data.customer.id is None
    assert event.data.customer.email == "a@b.in"


def test_customer_without_identifier_names_the_path_and_the_reason() -> None:
    """A customer with none of id, mobile, email is refused with that exact reason."""
    data = order_data(customer={"source": "INSTORE"})
    assert reason_of(envelope("order.placed", data)) == (
        "data.customer: at least one of id, mobile, email is required"
    )


def test_bad_decimal_names_the_field_path() -> None:
    """An amount that is not a decimal is reported at data.total.amount."""
    data = order_data(total={"amount": "lots", "currency": "INR"})
    assert reason_of(envelope("order.placed", data)) == (
        "data.total.amount: Input should be a valid decimal"
    )


def test_list_positions_appear_as_indexes() -> None:
    """A problem inside a list names the element index, e.g. data.items[0].quantity."""
    item = {"sku": "SKU-1", "quantity": 0, "amount": {"amount": 1, "currency": "INR"}}
    reason = reason_of(envelope("order.placed", order_data(items=[item])))
    assert reason.startswith("data.items[0].quantity: Input should be greater than 0")


def test_many_problems_are_summarised_on_one_line() -> None:
    """Several problems make one line: the first three, then a count of the rest."""
    data = {"customer": {"source": "X"}, "items": [{"sku": None}]}
    reason = reason_of(envelope("order.placed", data))
    assert "\n" not in reason
    assert reason.count(";") == 2
    assert reason.endswith("more)")


def test_invalid_json_and_non_objects_are_refused() -> None:
    """Truncated JSON, non-UTF-8 bytes and a JSON array are refused with a reason."""
    assert reason_of(b'{"id":').startswith("Invalid JSON")
    assert reason_of(b"\xff\xfe").startswith("Invalid JSON")
    assert reason_of(b"[]") == "event: Input should be an object"


def test_envelope_requirements() -> None:
    """specversion must be 1.0, type is required, and time needs a timezone."""
    assert reason_of({**envelope("x", {}), "specversion": "0.3"}) == (
        "specversion: Input should be '1.0'"
    )
    missing_type = envelope("x", {})
    del missing_type["type"]
    assert reason_of(missing_type) == "type: Field required"
    naive = envelope("order.placed", order_data(), time="2026-11-21T10:00:00")
    assert reason_of(naive).startswith("time: Input should have timezone info")


def test_rating_must_be_one_to_five() -> None:
    """A review rating outside 1..5 is refused."""
    data = {"review_id": "r", "order_id": "o", "sku": "s", "rating": 6, "customer": CUSTOMER}
    assert reason_of(envelope("review.submitted", data)).startswith("data.rating:")


def test_unregistered_type_decodes_as_generic_payload() -> None:
    """A type without a registered model still decodes, with every field kept."""
    event = decode_event(raw(envelope("cart.abandoned", {"cart_id": "c-5", "value": 12})))
    assert isinstance(event.data, GenericPayload)
    assert event.data.model_extra == {"cart_id": "c-5", "value": 12}


def test_generic_payload_must_be_an_object() -> None:
    """Even an untyped payload must be a JSON object."""
    assert reason_of(envelope("cart.abandoned", [1, 2])).startswith("data: Input should be")


class LoyaltyPing(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    ping_id: str
    customer: Customer


def test_registry_declares_a_payload_model_for_a_further_type() -> None:
    """with_payload adds a typed model for a new event type, leaving the defaults in place."""
    registry = DEFAULT_REGISTRY.with_payload("loyalty.ping", LoyaltyPing)
    event = registry.decode(raw(envelope("loyalty.ping", {"ping_id": "p", "customer": CUSTOMER})))
    assert isinstance(event.data, LoyaltyPing)
    assert isinstance(
        registry.decode(raw(envelope("order.placed", order_data()))).data, OrderPlaced
    )
    assert "loyalty.ping" not in DEFAULT_REGISTRY.types
    with pytest.raises(EventDecodeError, match=r"^data\.ping_id: Field required"):
        registry.decode(raw(envelope("loyalty.ping", {"customer": CUSTOMER})))


def test_single_model_registry_falls_back_to_generic_for_other_types() -> None:
    """A registry with one model still decodes other types generically, and checks its own."""
    registry = EventRegistry({"order.placed": OrderPlaced})
    assert isinstance(
        registry.decode(raw(envelope("order.placed", order_data()))).data, OrderPlaced
    )
    assert isinstance(registry.decode(raw(envelope("other", {}))).data, GenericPayload)
    data = order_data()
    del data["order_id"]
    with pytest.raises(EventDecodeError, match=r"^data\.order_id: Field required"):
        registry.decode(raw(envelope("order.placed", data)))


def test_empty_registry_decodes_everything_generically() -> None:
    """A registry without models decodes every type as a generic payload."""
    event = EventRegistry().decode(raw(envelope("order.placed", order_data())))
    assert isinstance(event.data, GenericPayload)


def test_customer_of_reads_typed_and_untyped_payloads() -> None:
    """customer_of returns the typed customer, validates an untyped one, or None."""
    typed = decode_event(raw(envelope("order.placed", order_data())))
    assert customer_of(typed) == Customer.model_validate(CUSTOMER)
    untyped = decode_event(raw(envelope("x", {"customer": {"mobile": 91, "source": "WEB"}})))
    assert customer_of(untyped) == Customer(mobile="91", source="WEB")
    assert customer_of(decode_event(raw(envelope("x", {})))) is None
    bad = decode_event(raw(envelope("x", {"customer": {"source": "WEB"}})))
    with pytest.raises(ValueError, match=r"data\.customer: at least one of id, mobile, email"):
        customer_of(bad)


def test_decode_accepts_text_as_well_as_bytes() -> None:
    """decode_event takes str as well as bytes."""
    assert decode_event(json.dumps(envelope("x", {}))).type == "x"
