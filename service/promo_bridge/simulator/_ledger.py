"""The side-effect ledger: every state change the simulated API made, counted per key.

Tests assert "nothing was issued twice" by reading counts here rather than by parsing
responses: a retry that the client thought failed but the API applied shows up as a second
effect for the same (customer, promotion, action). Counts stay exact however long the run; the
entry list keeps only the most recent ``max_entries`` effects so benchmarks run in flat memory.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# Ledger actions: the bulkAction names, plus one for each endpoint that carries none.
ENROL = "ENROL"
EARN = "EARN"
REVOKE_EARN = "REVOKE_EARN"
REVOKE_ENROL = "REVOKE_ENROL"
REVOKE_DIRECT_EARN = "REVOKE_DIRECT_EARN"
UNENROLL = "UNENROLL"
ACTIONS = (ENROL, EARN, REVOKE_EARN, REVOKE_ENROL, REVOKE_DIRECT_EARN, UNENROLL)

# A promotion or target reference: numeric id, promoIdentifier, name, "program/promotion" or
# "group/target" text, or a (program, promotion) / (group, target) pair.
Ref = int | str | tuple[int, int]


@dataclass(frozen=True, slots=True)
class Subject:
    """What an effect applied to: a promotion of a program, or a target of a target group."""

    kind: Literal["promotion", "target"]
    parent_id: int  # program id, or target group id
    id: int  # promotion id, or target id
    promo_identifier: str | None = None
    name: str | None = None
    # Stable text key, e.g. ``promotion:2714/202779`` or ``target:12/34``; computed once
    # because the ledger indexes every effect by it.
    key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.kind}:{self.parent_id}/{self.id}")

    def matches(self, ref: Ref) -> bool:
        """Whether ``ref`` names this subject."""
        if isinstance(ref, tuple):
            return ref == (self.parent_id, self.id)
        if isinstance(ref, int):
            return ref == self.id
        return ref in (
            str(self.id),
            f"{self.parent_id}/{self.id}",
            self.key,
            self.promo_identifier,
            self.name,
        )


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One side effect of one customer entry of one call."""

    seq: int
    at: float
    request_id: str
    endpoint: str
    action: str
    customer_id: int
    subject: Subject
    issual_id: str | None = None
    earned_id: str | None = None
    revoked_earn_ids: tuple[int, ...] = ()
    revoked_issual_id: int | None = None
    # The effect restated state that already existed (an ENROL of an enrolled customer). The
    # API answered success, so a client cannot tell; the ledger can.
    repeat: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (admin endpoint)."""
        data = asdict(self)
        data["subject"] = self.subject.key
        data["promotion_id"] = self.subject.id if self.subject.kind == "promotion" else None
        data["program_id"] = self.subject.parent_id if self.subject.kind == "promotion" else None
        data["promo_identifier"] = self.subject.promo_identifier
        data["name"] = self.subject.name
        data["revoked_earn_ids"] = list(self.revoked_earn_ids)
        return data


CountKey = tuple[int, str, str]  # (customer id, subject key, action)


class Ledger:
    """Counts of side effects per (customer, promotion or target, action), and recent entries.

    Thread-safe, so a benchmark can read it while the server runs in another thread.
    """

    def __init__(self, max_entries: int | None = 1_000_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[LedgerEntry] = deque(maxlen=max_entries)
        # customer -> (subject key, action) -> effects; plain dicts: this is the hot path.
        self._by_customer: dict[int, dict[tuple[str, str], int]] = {}
        self._subjects: dict[str, Subject] = {}
        self._totals: Counter[str] = Counter()
        self._seq = 0

    def record(
        self,
        *,
        at: float,
        request_id: str,
        endpoint: str,
        action: str,
        customer_id: int,
        subject: Subject,
        issual_id: str | None = None,
        earned_id: str | None = None,
        revoked_earn_ids: tuple[int, ...] = (),
        revoked_issual_id: int | None = None,
        repeat: bool = False,
    ) -> LedgerEntry:
        """Add one effect (the simulator calls this; tests only read)."""
        with self._lock:
            self._seq += 1
            entry = LedgerEntry(
                seq=self._seq,
                at=at,
                request_id=request_id,
                endpoint=endpoint,
                action=action,
                customer_id=customer_id,
                subject=subject,
                issual_id=issual_id,
                earned_id=earned_id,
                revoked_earn_ids=revoked_earn_ids,
                revoked_issual_id=revoked_issual_id,
                repeat=repeat,
            )
            self._entries.append(entry)
            counts = self._by_customer.get(customer_id)
            if counts is None:
                counts = self._by_customer[customer_id] = {}
            key = (subject.key, action)
            counts[key] = counts.get(key, 0) + 1
            self._subjects.setdefault(subject.key, subject)
            self._totals[action] += 1
            return entry

    def count(
        self,
        *,
        customer_id: int | None = None,
        promotion: Ref | None = None,
        target: Ref | None = None,
        action: str | None = None,
    ) -> int:
        """Effects matching every given filter (exact, whatever the entry retention)."""
        with self._lock:
            if customer_id is None:
                counters = list(self._by_customer.values())
            else:
                counters = [self._by_customer.get(customer_id, {})]
            return sum(
                n
                for counter in counters
                for (key, act), n in counter.items()
                if _matches(self._subjects[key], act, promotion, target, action)
            )

    def total(self, action: str | None = None) -> int:
        """All effects, or all effects of one action."""
        with self._lock:
            return self._totals[action] if action is not None else sum(self._totals.values())

    def totals(self) -> dict[str, int]:
        """Effects per action."""
        with self._lock:
            return dict(self._totals)

    def entries(
        self,
        *,
        customer_id: int | None = None,
        promotion: Ref | None = None,
        target: Ref | None = None,
        action: str | None = None,
    ) -> list[LedgerEntry]:
        """Retained entries matching every given filter, oldest first."""
        with self._lock:
            return [
                e
                for e in self._entries
                if (customer_id is None or e.customer_id == customer_id)
                and _matches(e.subject, e.action, promotion, target, action)
            ]

    def duplicates(self, action: str | None = None) -> dict[CountKey, int]:
        """Keys with more than one effect: a second enrol, earn, revoke or un-enrol.

        Two earns can be legitimate (two reviews); the caller knows which keys expected one.
        """
        with self._lock:
            return {
                (customer, key, act): n
                for customer, counter in self._by_customer.items()
                for (key, act), n in counter.items()
                if n > 1 and (action is None or act == action)
            }

    def clear(self) -> None:
        """Forget everything (admin reset)."""
        with self._lock:
            self._entries.clear()
            self._by_customer.clear()
            self._subjects.clear()
            self._totals.clear()
            self._seq = 0


def _matches(
    subject: Subject, act: str, promotion: Ref | None, target: Ref | None, action: str | None
) -> bool:
    if action is not None and act != action:
        return False
    if promotion is not None and not (subject.kind == "promotion" and subject.matches(promotion)):
        return False
    return target is None or (subject.kind == "target" and subject.matches(target))
