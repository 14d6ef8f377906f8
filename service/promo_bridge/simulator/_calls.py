"""The call log: one record per API request the simulator answered (or dropped)."""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any

# Outcome of a call, as the simulator saw it.
PROCESSED = "processed"  # reached the endpoint logic; `status` says how it answered
UNAUTHORIZED = "unauthorized"
RATE_LIMITED = "rate_limited"  # the simulator's own per-endpoint calls-per-minute limit
FAULT_PREFIX = "fault:"  # an injected fault: fault:503, fault:429, fault:drop, fault:timeout, ...


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One API request."""

    seq: int
    request_id: str
    at: float
    method: str
    path: str
    endpoint: str
    bulk_action: str | None
    customers: int
    # None when the connection was dropped without an answer.
    status: int | None
    outcome: str
    failure_count: int
    duration_ms: float
    auth: str | None  # "basic", "oauth" or None
    # Whether the endpoint logic ran (side effects applied); true for a fault injected after
    # processing, the case that makes a retry a duplicate.
    processed: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (admin endpoint)."""
        return asdict(self)


class CallLog:
    """Recent call records plus exact counters; thread-safe."""

    def __init__(self, max_records: int | None = 100_000) -> None:
        self._lock = threading.Lock()
        self._records: deque[CallRecord] = deque(maxlen=max_records)
        self._by_endpoint: Counter[str] = Counter()
        self._by_outcome: Counter[str] = Counter()
        self._by_status: Counter[str] = Counter()
        self._customers = 0
        self._token_failures = 0
        self._seq = 0

    def next_seq(self) -> int:
        """Reserve the sequence number of a call that is starting."""
        with self._lock:
            self._seq += 1
            return self._seq

    def add(self, record: CallRecord) -> None:
        """Append a finished call."""
        with self._lock:
            self._records.append(record)
            self._by_endpoint[record.endpoint] += 1
            self._by_outcome[record.outcome] += 1
            self._by_status[str(record.status)] += 1
            self._customers += record.customers
            if record.endpoint == "token" and record.status != 200:
                self._token_failures += 1

    def records(self, since: int = 0, endpoint: str | None = None) -> list[CallRecord]:
        """Retained records with ``seq > since``, optionally of one endpoint, oldest first."""
        with self._lock:
            return [
                r
                for r in self._records
                if r.seq > since and (endpoint is None or r.endpoint == endpoint)
            ]

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last reset."""
        with self._lock:
            return {
                "calls": sum(self._by_endpoint.values()),
                "by_endpoint": dict(self._by_endpoint),
                "by_outcome": dict(self._by_outcome),
                "by_status": dict(self._by_status),
                "customers": self._customers,
                "token_requests": self._by_endpoint["token"],
                "token_failures": self._token_failures,
            }

    def clear(self) -> None:
        """Forget everything (admin reset)."""
        with self._lock:
            self._records.clear()
            self._by_endpoint.clear()
            self._by_outcome.clear()
            self._by_status.clear()
            self._customers = 0
            self._token_failures = 0
            self._seq = 0
