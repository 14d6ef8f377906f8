"""Commands: what one rule decided to do for one customer, and how commands group into batches.

Everything here is plain data. The batch key decides which commands may share one bulk call
(DESIGN.md, "Batching"); the lane key decides which commands must run one after another
(DESIGN.md, "Ordering").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from promo_bridge.domain._values import value


class Action(StrEnum):
    """A rule action, as written in the rules file."""

    ENROL = "enrol"
    EARN = "earn"
    REVOKE_EARN = "revoke_earn"
    REVOKE_ENROL = "revoke_enrol"
    # revokeDirectEarn: the dedicated endpoint for direct-issue promotions (10 per call by default).
    REVOKE_DIRECT_EARN = "revoke_direct_earn"
    UNENROLL = "unenroll"


class Endpoint(StrEnum):
    """A Capillary endpoint the service calls; the value is the name used in config and metrics."""

    ENROL_AND_EARN = "enrolAndEarn"
    REVOKE_ENROL_AND_EARN = "revokeEnrolAndEarn"
    REVOKE_DIRECT_EARN = "revokeDirectEarn"
    UNENROLL = "unEnroll"


ENDPOINT_OF_ACTION: dict[Action, Endpoint] = {
    Action.ENROL: Endpoint.ENROL_AND_EARN,
    Action.EARN: Endpoint.ENROL_AND_EARN,
    Action.REVOKE_EARN: Endpoint.REVOKE_ENROL_AND_EARN,
    Action.REVOKE_ENROL: Endpoint.REVOKE_ENROL_AND_EARN,
    Action.REVOKE_DIRECT_EARN: Endpoint.REVOKE_DIRECT_EARN,
    Action.UNENROLL: Endpoint.UNENROLL,
}

# The bulkAction value on the wire; revokeDirectEarn and unEnroll carry none.
BULK_ACTION_OF_ACTION: dict[Action, str | None] = {
    Action.ENROL: "ENROL",
    Action.EARN: "EARN",
    Action.REVOKE_EARN: "REVOKE_EARN",
    Action.REVOKE_ENROL: "REVOKE_ENROL",
    Action.REVOKE_DIRECT_EARN: None,
    Action.UNENROLL: None,
}

DEFAULT_BATCH_LIMITS: dict[Endpoint, int] = {
    Endpoint.ENROL_AND_EARN: 100,
    Endpoint.REVOKE_ENROL_AND_EARN: 100,
    Endpoint.REVOKE_DIRECT_EARN: 10,
    Endpoint.UNENROLL: 1,
}


class PromotionType(StrEnum):
    """What a promotion supports; the rules file may also use Capillary's backend names."""

    ENROL_AND_ISSUE = "ENROL_AND_ISSUE"
    DIRECT_ISSUE = "DIRECT_ISSUE"


class IdentifierName(StrEnum):
    """Which customer identifier a call carries (`identifierName`)."""

    ID = "id"
    MOBILE = "mobile"
    EMAIL = "email"


@dataclass(frozen=True, slots=True)
class PromotionRef:
    """A loyalty promotion: its program and exactly one of promotionId or promoIdentifier."""

    program_id: int
    promotion_id: int | None = None
    promo_identifier: str | None = None
    # From the rules file; None where no rules file said. It describes the promotion rather
    # than naming it, so it stays out of equality: batch keys and lanes do not change with it.
    kind: PromotionType | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.promotion_id is None) == (self.promo_identifier is None):
            raise ValueError("exactly one of promotion_id or promo_identifier must be set")

    @property
    def label(self) -> str:
        """A short stable text for logs, metrics and outcome records."""
        if self.promotion_id is not None:
            return str(self.promotion_id)
        return str(self.promo_identifier)


@dataclass(frozen=True, slots=True)
class TargetRef:
    """A milestone or streak target, the subject of an un-enrol."""

    target_group_id: int
    target_id: int

    @property
    def label(self) -> str:
        """A short stable text for logs, metrics and outcome records."""
        return f"{self.target_group_id}/{self.target_id}"


@value
class EventPosition:
    """Where an event was read: the offset watermark and outcome records refer to it."""

    topic: str
    partition: int
    offset: int


@value
class BatchKey:
    """Commands with equal keys may share one bulk call (DESIGN.md, "Batching")."""

    endpoint: Endpoint
    action: Action
    identifier_name: IdentifierName
    promotion: PromotionRef | None = None
    target: TargetRef | None = None


@value
class Command:
    """One API side effect for one customer, decided by one rule for one event.

    `command_id` is deterministic (event id, rule name, action index), so a redelivered event
    makes the same command again and the batcher sends it once.
    """

    command_id: str
    event_id: str
    position: EventPosition
    rule: str
    action: Action
    # The name the rules file gives the promotion or target; lanes are per (customer, subject).
    subject: str
    identifier_name: IdentifierName
    identifier_value: str
    source: str
    promotion: PromotionRef | None = None
    target: TargetRef | None = None
    earn_ids: tuple[int, ...] = ()
    # The order the event belongs to (`data.order_id`): the ledger ties earns to it, and a
    # return's revoke_earn takes back exactly that order's earns.
    order_id: str | None = None
    # A revoke_earn the rules file scoped to every earn of the promotion (`earns: all`).
    revoke_all: bool = False
    # The customer as the input is keyed (the Kafka record key): the same for every event of
    # the customer, whichever identifier a rule picks to call Capillary with. Empty: unknown.
    customer_key: str = ""

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint that carries this command."""
        return ENDPOINT_OF_ACTION[self.action]

    @property
    def batch_key(self) -> BatchKey:
        """The bucket this command joins."""
        return BatchKey(
            endpoint=self.endpoint,
            action=self.action,
            identifier_name=self.identifier_name,
            promotion=self.promotion,
            target=self.target,
        )

    @property
    def lane_key(self) -> tuple[str, str, str]:
        """Commands with equal lane keys run strictly in event order.

        Per customer and subject: by the record key when there is one, so that rules picking
        different identifiers for one customer (mobile for the order, id for the return)
        still run that customer's commands in order.
        """
        if self.customer_key:
            return ("key", self.customer_key, self.subject)
        return (self.identifier_name.value, self.identifier_value, self.subject)

    @property
    def issual_id_is_dummy(self) -> bool:
        """Capillary's issualId for this command names no enrolment: a direct-issue EARN.

        FACTS.md: "A direct EARN returns a dummy issualId". False when the type is unknown.
        """
        return (
            self.action is Action.EARN
            and self.promotion is not None
            and self.promotion.kind is PromotionType.DIRECT_ISSUE
        )

    @property
    def subject_label(self) -> str:
        """The promotion or target as Capillary knows it."""
        if self.promotion is not None:
            return self.promotion.label
        if self.target is not None:
            return self.target.label
        return self.subject


# What a sender awaits with the commands of each request about to leave (its place in the call
# budget and an in-flight slot taken); the engine makes their intents durable there.
BeforeRequest = Callable[[Sequence[Command]], Awaitable[None]]


@value
class Batch:
    """Commands that go out in one API call; at most one command per lane."""

    batch_id: str
    key: BatchKey
    commands: tuple[Command, ...]
    # Why it left the batcher: "size", "window" or "flush" (shutdown, rebalance).
    reason: str = "window"
    attempts: int = field(default=0, compare=False)
    # Unsure commands (an earlier call's answer was lost) to verify with the customer lookup
    # before sending, each with the earnedIds this service recorded for its holding.
    verify: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: MappingProxyType({}), compare=False
    )
    # Commands the order ledger settles without a call, with the reason (order_returned, ...).
    skip: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), compare=False)

    def __len__(self) -> int:
        return len(self.commands)
