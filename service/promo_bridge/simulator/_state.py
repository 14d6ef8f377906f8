"""The simulated org's mutable state and its state machine, free of any wire format.

Per (customer, promotion):

- enrol-and-issue: ENROL gives an issualId (an ENROL of an enrolled customer answers the same
  issualId again and the ledger marks it a repeat); EARN needs an active enrolment and gives a
  new earnedId each time; REVOKE_EARN revokes all active earns or the given ones; REVOKE_ENROL
  needs every earn revoked first and then revokes the issualId (a later ENROL gets a new one).
- direct issue: EARN gives a new earnedId plus a fresh dummy issualId each time; REVOKE_EARN as
  above. ENROL and REVOKE_ENROL are refused (8902) before any customer is looked at.

Ids come from org-wide sequences (like the docs' examples) that start after every id the
catalogue already holds. Errors are returned as ``EntryError`` values, never raised: one
customer's failure must not stop the rest of a batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from promo_bridge.simulator import _codes
from promo_bridge.simulator._catalogue import (
    Catalogue,
    CodeSpec,
    Program,
    Promotion,
    PromotionKind,
    Target,
)
from promo_bridge.simulator._ledger import Subject


@dataclass(frozen=True, slots=True)
class EntryError:
    """A per-customer (or request-level) error: code and message."""

    code: int
    message: str

    @classmethod
    def of(cls, code: int) -> EntryError:
        """The documented message of a code."""
        return cls(code, _codes.message(code))

    @classmethod
    def spec(cls, spec: CodeSpec) -> EntryError:
        """An error configured in the catalogue."""
        return cls(spec.code, spec.message)


@dataclass(slots=True)
class CustomerRecord:
    """A customer the org knows."""

    id: int
    mobile: str | None = None
    email: str | None = None
    registered_by_simulator: bool = False


@dataclass(slots=True)
class PromotionState:
    """One customer's state in one promotion."""

    issual_id: str | None = None
    # earned id -> still active; dicts keep insertion order, so revocations list oldest first.
    earns: dict[int, bool] = field(default_factory=dict)
    revoked_issual_ids: list[str] = field(default_factory=list)

    def active_earns(self) -> list[int]:
        """Earned ids not revoked yet."""
        return [earn for earn, active in self.earns.items() if active]


@dataclass(frozen=True, slots=True)
class Enrolled:
    """Result of an ENROL."""

    issual_id: str
    repeat: bool


@dataclass(frozen=True, slots=True)
class Earned:
    """Result of an EARN (the issualId is a dummy on direct-issue promotions)."""

    issual_id: str
    earned_id: str


class _Sequence:
    def __init__(self, start: int, taken: Iterable[int]) -> None:
        self._next = max([start, *(t + 1 for t in taken)])

    def take(self) -> int:
        value = self._next
        self._next += 1
        return value


class OrgState:
    """Customers, their promotion and target states, and the id sequences."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.codes = catalogue.codes
        self.auto_register = catalogue.auto_register_customers
        self._programs: dict[int, Program] = {p.program_id: p for p in catalogue.programs}
        self._by_id: dict[tuple[int, int], Promotion] = {}
        self._by_identifier: dict[tuple[int, str], Promotion] = {}
        self._subjects: dict[tuple[int, int], Subject] = {}
        for program in catalogue.programs:
            for promotion in program.promotions:
                key = (program.program_id, promotion.promotion_id)
                self._by_id[key] = promotion
                if promotion.promo_identifier is not None:
                    self._by_identifier[(program.program_id, promotion.promo_identifier)] = (
                        promotion
                    )
                self._subjects[key] = Subject(
                    "promotion",
                    program.program_id,
                    promotion.promotion_id,
                    promotion.promo_identifier,
                    promotion.name,
                )
        self._targets: dict[tuple[int, int], Target] = {
            (t.target_group_id, t.target_id): t for t in catalogue.targets
        }
        self._target_groups = {t.target_group_id for t in catalogue.targets}
        # For enrolment "all" targets: who left; for "listed": who is in.
        self._target_members: dict[tuple[int, int], set[int]] = {
            (t.target_group_id, t.target_id): set(t.enrolled) for t in catalogue.targets
        }

        self._customers: dict[int, CustomerRecord] = {}
        self._by_mobile: dict[str, int] = {}
        self._by_email: dict[str, int] = {}
        for c in catalogue.customers:
            self._add_customer(CustomerRecord(c.id, c.mobile, c.email))

        self._promotions: dict[tuple[int, int, int], PromotionState] = {}
        issual_taken: list[int] = []
        earned_taken: list[int] = []
        for h in catalogue.holdings:
            held = catalogue.find_promotion(h.program_id, h.promotion)
            if held is None:  # pragma: no cover - the catalogue validator rejects it
                continue
            state = self.promotion_state(h.customer_id, h.program_id, held)
            if h.issual_id is not None:
                state.issual_id = h.issual_id
                issual_taken.append(int(h.issual_id))
            for earn in h.earned_ids:
                state.earns[earn] = True
                earned_taken.append(earn)
        seq = catalogue.sequences
        self._issual_seq = _Sequence(seq.issual_id_start, issual_taken)
        self._earned_seq = _Sequence(seq.earned_id_start, earned_taken)
        self._customer_seq = _Sequence(seq.customer_id_start, ())

    # -- customers ----------------------------------------------------------------------------

    def _add_customer(self, record: CustomerRecord) -> None:
        self._customers[record.id] = record
        if record.mobile:
            self._by_mobile[record.mobile] = record.id
        if record.email:
            self._by_email[record.email.lower()] = record.id

    def customer(self, customer_id: int) -> CustomerRecord | None:
        """A known customer by id."""
        return self._customers.get(customer_id)

    def find_customer(self, identifier_name: str, value: str) -> int | None:
        """Customer id for an identifier (``id``, ``mobile`` or ``email``), if known."""
        if identifier_name == "id":
            customer_id = _as_customer_id(value)
            return customer_id if customer_id in self._customers else None
        if identifier_name == "mobile":
            return self._by_mobile.get(value)
        if identifier_name == "email":
            return self._by_email.get(value.lower())
        return None

    def resolve_customer(self, identifier_name: str, value: str, *, register: bool) -> int | None:
        """Customer id for an identifier; with ``register``, unknown customers are created."""
        found = self.find_customer(identifier_name, value)
        if found is not None or not register:
            return found
        if identifier_name == "id":
            customer_id = _as_customer_id(value)
            if customer_id is None:
                return None
            self._add_customer(CustomerRecord(customer_id, registered_by_simulator=True))
            return customer_id
        customer_id = self._customer_seq.take()
        while customer_id in self._customers:
            customer_id = self._customer_seq.take()
        record = CustomerRecord(customer_id, registered_by_simulator=True)
        if identifier_name == "mobile":
            record.mobile = value
        else:
            record.email = value
        self._add_customer(record)
        return customer_id

    def customer_count(self) -> int:
        """How many customers the org knows."""
        return len(self._customers)

    # -- promotions ---------------------------------------------------------------------------

    def program(self, program_id: int) -> Program | None:
        """A program by id."""
        return self._programs.get(program_id)

    def find_promotion(
        self, program_id: int, promotion_id: int | None, promo_identifier: str | None
    ) -> Promotion | None:
        """A promotion by numeric id and/or promoIdentifier; both must agree when both given."""
        by_id = self._by_id.get((program_id, promotion_id)) if promotion_id is not None else None
        if promo_identifier is None:
            return by_id
        by_identifier = self._by_identifier.get((program_id, promo_identifier))
        if promotion_id is not None and by_id is not by_identifier:
            return None
        return by_identifier

    def subject(self, program_id: int, promotion: Promotion) -> Subject:
        """The ledger subject of a promotion."""
        return self._subjects[(program_id, promotion.promotion_id)]

    def promotion_state(
        self, customer_id: int, program_id: int, promotion: Promotion
    ) -> PromotionState:
        """A customer's state in a promotion (created empty on first use)."""
        key = (customer_id, program_id, promotion.promotion_id)
        state = self._promotions.get(key)
        if state is None:
            state = self._promotions[key] = PromotionState()
        return state

    def peek_promotion_state(
        self, customer_id: int, program_id: int, promotion: Promotion
    ) -> PromotionState | None:
        """A customer's state in a promotion without creating it."""
        return self._promotions.get((customer_id, program_id, promotion.promotion_id))

    def enrol(self, customer_id: int, program_id: int, promotion: Promotion) -> Enrolled:
        """ENROL on an enrol-and-issue promotion."""
        state = self.promotion_state(customer_id, program_id, promotion)
        if state.issual_id is not None:
            return Enrolled(state.issual_id, repeat=True)
        state.issual_id = str(self._issual_seq.take())
        return Enrolled(state.issual_id, repeat=False)

    def earn(self, customer_id: int, program_id: int, promotion: Promotion) -> Earned | EntryError:
        """EARN: a new earnedId; needs an enrolment unless the promotion is direct issue."""
        state = self.promotion_state(customer_id, program_id, promotion)
        if promotion.type is PromotionKind.DIRECT_ISSUE:
            issual_id = str(self._issual_seq.take())
        elif state.issual_id is None:
            return EntryError.spec(self.codes.earn_without_enrolment)
        else:
            issual_id = state.issual_id
        earned = self._earned_seq.take()
        state.earns[earned] = True
        return Earned(issual_id, str(earned))

    def revoke_earns(
        self,
        customer_id: int,
        program_id: int,
        promotion: Promotion,
        earn_ids: list[int] | None,
        *,
        none_active: EntryError,
    ) -> list[int] | EntryError:
        """Revoke the given earns, or all active ones; ``none_active`` when there are none.

        All-or-nothing: one unknown or already revoked id fails the entry with 8903 and
        revokes nothing, so a retry of a partly valid list cannot half-apply.
        """
        state = self.peek_promotion_state(customer_id, program_id, promotion)
        active = state.active_earns() if state is not None else []
        if state is None or not active:
            return none_active
        if earn_ids is None:
            targets = active
        else:
            if not earn_ids or any(not state.earns.get(earn, False) for earn in earn_ids):
                return EntryError.of(_codes.EARN_IDS_INVALID)
            targets = list(dict.fromkeys(earn_ids))
        for earn in targets:
            state.earns[earn] = False
        return targets

    def revoke_enrol(
        self, customer_id: int, program_id: int, promotion: Promotion
    ) -> str | EntryError:
        """REVOKE_ENROL: the revoked issualId, once every earn is revoked."""
        state = self.peek_promotion_state(customer_id, program_id, promotion)
        if state is None or state.issual_id is None:
            return EntryError.spec(self.codes.revoke_enrol_not_enrolled)
        if state.active_earns():
            return EntryError.spec(self.codes.revoke_enrol_with_active_earns)
        revoked = state.issual_id
        state.revoked_issual_ids.append(revoked)
        state.issual_id = None
        return revoked

    def holdings_of(self, customer_id: int) -> list[tuple[int, Promotion, PromotionState | None]]:
        """Every promotion of every program, with this customer's state where there is one."""
        return [
            (
                program.program_id,
                promotion,
                self.peek_promotion_state(customer_id, program.program_id, promotion),
            )
            for program in self._programs.values()
            for promotion in program.promotions
        ]

    # -- targets ------------------------------------------------------------------------------

    def target_group_exists(self, group_id: int) -> bool:
        """Whether the target group is known (active or not)."""
        return group_id in self._target_groups

    def target(self, group_id: int, target_id: int) -> Target | None:
        """A target by group and id."""
        return self._targets.get((group_id, target_id))

    def target_subject(self, target: Target) -> Subject:
        """The ledger subject of a target."""
        return Subject("target", target.target_group_id, target.target_id, None, target.name)

    def in_target(self, customer_id: int, target: Target) -> bool:
        """Whether the customer is enrolled in the target."""
        members = self._target_members[(target.target_group_id, target.target_id)]
        if target.enrolment == "all":
            return customer_id not in members
        return customer_id in members

    def set_in_target(self, customer_id: int, target: Target, enrolled: bool) -> None:
        """Enrol in or un-enrol from a target."""
        members = self._target_members[(target.target_group_id, target.target_id)]
        # For "all" targets the set holds who left; for "listed" ones, who is in.
        if (target.enrolment == "all") != enrolled:
            members.add(customer_id)
        else:
            members.discard(customer_id)


def _as_customer_id(value: str) -> int | None:
    if not (value.isascii() and value.isdigit()):
        return None
    customer_id = int(value)
    return customer_id if customer_id > 0 else None
