"""Fault injection: what can go wrong between the client and Capillary, on demand.

``Faults`` is an immutable description (constructor, CLI flags, ``POST /__admin/faults``);
``FaultInjector`` turns it into per-call decisions with a seeded random generator, so a run with
the same seed and the same call sequence makes the same decisions.

Per call, in order: latency (fixed + uniform jitter) is waited; then one exclusive draw picks at
most one of drop, timeout, 429 or an error status (their rates add up to at most 1); a scripted
fault, when queued, replaces the draw. Per customer entry, ``entry_error_rate`` answers 8896.
The simulator's own limit (``rate_limit_per_minute`` / ``rate_limits``) is separate: a sliding
60-second window per endpoint, answered with 429 and the Retry-After of the oldest call in it.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final, Literal

from promo_bridge.simulator import _codes

ENDPOINTS: Final = (
    "enrolAndEarn",
    "revokeEnrolAndEarn",
    "revokeDirectEarn",
    "unEnroll",
    "token",
    "promotionData",
)
WINDOW_SECONDS: Final = 60.0

# Script items: one is consumed per (matching) API call, before any random draw.
SCRIPT_OK: Final = "ok"
SCRIPT_DROP: Final = "drop"
SCRIPT_TIMEOUT: Final = "timeout"
SCRIPT_EXPIRED_TOKEN: Final = "expired_token"  # noqa: S105 - a fault name, not a secret
SCRIPT_ENTRY_ERROR: Final = "8896"  # every customer entry of the call answers 8896
_SCRIPT_WORDS: Final = (
    SCRIPT_OK,
    SCRIPT_DROP,
    SCRIPT_TIMEOUT,
    SCRIPT_EXPIRED_TOKEN,
    SCRIPT_ENTRY_ERROR,
)

# Bodies of injected error statuses. The docs document 403/4000 and 503/4001; the others are
# plain gateway-style answers of the simulator's choosing.
DEFAULT_ERROR_BODIES: Final[dict[int, dict[str, Any]]] = {
    403: {"code": _codes.ACCESS_DENIED, "message": _codes.message(_codes.ACCESS_DENIED)},
    429: {"code": 429, "message": "Too Many Requests"},
    500: {"code": 500, "message": "Internal Server Error"},
    502: {"code": 502, "message": "Bad Gateway"},
    503: {
        "code": _codes.AUTHORIZATION_UNAVAILABLE,
        "message": _codes.message(_codes.AUTHORIZATION_UNAVAILABLE),
    },
    504: {"code": 504, "message": "Gateway Timeout"},
}


def _is_status(value: object) -> bool:
    return isinstance(value, int) and 400 <= value <= 599


def _rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value}")


@dataclass(frozen=True, slots=True)
class Faults:
    """What to inject. All rates are probabilities per call (per entry for 8896)."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    # HTTP status -> probability, e.g. {503: 0.1}. 429 belongs in rate_429 (it has Retry-After).
    error_rates: Mapping[int, float] = field(default_factory=dict)
    # Override the body of an injected status.
    error_bodies: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    rate_429: float = 0.0
    # Retry-After of injected 429s, seconds (sent rounded up); None sends no header.
    retry_after_seconds: float | None = 1.0
    timeout_rate: float = 0.0
    # How long a "timeout" call holds the connection before answering: longer than the
    # client's read timeout. Cut short when the client hangs up or the server stops.
    timeout_seconds: float = 60.0
    drop_rate: float = 0.0
    # Drops and timeouts happen after the side effects instead of before: the call was
    # applied but the client cannot know, so a retry duplicates it.
    process_before_fault: bool = False
    entry_error_rate: float = 0.0
    # The simulator's own calls-per-minute limit, per endpoint; rate_limits overrides it for
    # named endpoints.
    rate_limit_per_minute: int | None = None
    rate_limits: Mapping[str, int] = field(default_factory=dict)
    # Injected faults (not the rate limit) hit only these endpoints; None means all.
    endpoints: tuple[str, ...] | None = None
    # One-shot faults consumed in order by the next matching calls: "ok", "drop", "timeout",
    # "expired_token", "8896" or an HTTP status such as "503" or "429".
    script: tuple[str, ...] = ()
    # The next N OAuth token checks answer 498 whatever the token.
    expired_tokens: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        self._check_rates()
        self._check_names()

    def _check_rates(self) -> None:
        for name in ("rate_429", "timeout_rate", "drop_rate", "entry_error_rate"):
            _rate(name, getattr(self, name))
        for status, rate in self.error_rates.items():
            if not _is_status(status) or status == 429:
                raise ValueError(
                    f"error_rates keys must be 4xx/5xx statuses other than 429: {status}"
                )
            _rate(f"error_rates[{status}]", rate)
        exclusive = (
            self.drop_rate + self.timeout_rate + self.rate_429 + sum(self.error_rates.values())
        )
        if exclusive > 1.0 + 1e-9:
            raise ValueError(f"drop, timeout, 429 and error rates add up to {exclusive} > 1")
        if self.latency_ms < 0 or self.jitter_ms < 0 or self.timeout_seconds < 0:
            raise ValueError("latency_ms, jitter_ms and timeout_seconds must not be negative")
        if self.retry_after_seconds is not None and self.retry_after_seconds < 0:
            raise ValueError("retry_after_seconds must not be negative")
        if self.expired_tokens < 0:
            raise ValueError("expired_tokens must not be negative")

    def _check_names(self) -> None:
        limits = dict(self.rate_limits)
        if self.rate_limit_per_minute is not None:
            limits["*"] = self.rate_limit_per_minute
        for endpoint, limit in limits.items():
            if endpoint != "*" and endpoint not in ENDPOINTS:
                raise ValueError(f"unknown endpoint {endpoint!r}; use one of {ENDPOINTS}")
            if limit < 1:
                raise ValueError(f"rate limit of {endpoint} must be at least 1 per minute")
        for endpoint in self.endpoints or ():
            if endpoint not in ENDPOINTS:
                raise ValueError(f"unknown endpoint {endpoint!r}; use one of {ENDPOINTS}")
        for item in self.script:
            if item not in _SCRIPT_WORDS and not (item.isdigit() and _is_status(int(item))):
                raise ValueError(f"unknown script item {item!r}: use {_SCRIPT_WORDS} or a status")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Faults:
        """Build from JSON-like data (status keys may be strings); raises ``ValueError``."""
        return cls().merged(data)

    def merged(self, data: Mapping[str, Any]) -> Faults:
        """A copy with the given fields replaced (the admin endpoint's PATCH-like update)."""
        known = {f.name for f in fields(self)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        changes: dict[str, Any] = dict(data)
        try:
            if "error_rates" in changes:
                changes["error_rates"] = {
                    int(k): float(v) for k, v in changes["error_rates"].items()
                }
            if "error_bodies" in changes:
                changes["error_bodies"] = {
                    int(k): dict(v) for k, v in changes["error_bodies"].items()
                }
            if "rate_limits" in changes:
                changes["rate_limits"] = {str(k): int(v) for k, v in changes["rate_limits"].items()}
            if changes.get("endpoints") is not None:
                changes["endpoints"] = tuple(str(e) for e in changes["endpoints"])
            if "script" in changes:
                changes["script"] = tuple(str(item) for item in changes["script"])
        except (AttributeError, TypeError) as exc:
            raise ValueError(f"malformed faults: {exc}") from exc
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["error_rates"] = {str(k): v for k, v in self.error_rates.items()}
        data["error_bodies"] = {str(k): dict(v) for k, v in self.error_bodies.items()}
        data["rate_limits"] = dict(self.rate_limits)
        data["endpoints"] = list(self.endpoints) if self.endpoints is not None else None
        data["script"] = list(self.script)
        return data

    def limit_for(self, endpoint: str) -> int | None:
        """Calls per minute allowed on an endpoint, if limited."""
        return self.rate_limits.get(endpoint, self.rate_limit_per_minute)

    def error_body(self, status: int) -> dict[str, Any]:
        """Body of an injected error status."""
        body = self.error_bodies.get(status) or DEFAULT_ERROR_BODIES.get(status)
        return dict(body) if body is not None else {"code": status, "message": f"HTTP {status}"}


FaultKind = Literal["none", "status", "drop", "timeout", "expired_token", "entry_error"]


@dataclass(frozen=True, slots=True)
class Decision:
    """The fault chosen for one call."""

    kind: FaultKind
    status: int | None = None

    @property
    def label(self) -> str:
        """Short name for the call log (``503``, ``429``, ``drop`` ...)."""
        return str(self.status) if self.kind == "status" else self.kind


NO_FAULT: Final = Decision("none")


class SlidingWindowLimiter:
    """Calls per endpoint within the last 60 seconds."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def acquire(self, endpoint: str, limit: int) -> float | None:
        """Count a call and return None, or return seconds until the window has room."""
        now = self._clock()
        hits = self._hits.setdefault(endpoint, deque())
        while hits and hits[0] <= now - WINDOW_SECONDS:
            hits.popleft()
        if len(hits) >= limit:
            # Only the calls over the limit wait; the oldest in the window frees the next slot.
            return max(hits[len(hits) - limit] + WINDOW_SECONDS - now, 0.0)
        hits.append(now)
        return None

    def clear(self) -> None:
        """Forget all windows."""
        self._hits.clear()


class FaultInjector:
    """Per-call decisions for the current ``Faults``."""

    def __init__(self, faults: Faults, clock: Callable[[], float]) -> None:
        self.limiter = SlidingWindowLimiter(clock)
        self._faults = faults
        self._rng = random.Random(faults.seed)  # noqa: S311 - reproducible faults, not secrets
        self._script: deque[str] = deque(faults.script)

    @property
    def faults(self) -> Faults:
        """The current configuration."""
        return self._faults

    @property
    def script_left(self) -> list[str]:
        """Scripted faults not yet consumed."""
        return list(self._script)

    def configure(self, faults: Faults, *, reseed: bool) -> None:
        """Switch to new faults; the script restarts, and the generator when asked (or seeded)."""
        if reseed or faults.seed != self._faults.seed:
            self._rng = random.Random(faults.seed)  # noqa: S311 - reproducible faults
        self._faults = faults
        self._script = deque(faults.script)

    def applies_to(self, endpoint: str) -> bool:
        """Whether injected faults hit this endpoint."""
        only = self._faults.endpoints
        return only is None or endpoint in only

    def latency_seconds(self, endpoint: str) -> float:
        """Delay before answering this call."""
        f = self._faults
        if not self.applies_to(endpoint) or (f.latency_ms == 0 and f.jitter_ms == 0):
            return 0.0
        jitter = self._rng.uniform(0.0, f.jitter_ms) if f.jitter_ms > 0 else 0.0
        return (f.latency_ms + jitter) / 1000.0

    def decide(self, endpoint: str) -> Decision:
        """The fault of this call, scripted first, then drawn."""
        if not self.applies_to(endpoint):
            return NO_FAULT
        if self._script:
            return _scripted(self._script.popleft())
        f = self._faults
        if not (f.drop_rate or f.timeout_rate or f.rate_429 or f.error_rates):
            return NO_FAULT
        draw = self._rng.random()
        for kind, status, rate in (
            ("drop", None, f.drop_rate),
            ("timeout", None, f.timeout_rate),
            ("status", 429, f.rate_429),
            *(("status", s, r) for s, r in sorted(f.error_rates.items())),
        ):
            if draw < rate:
                return Decision(kind, status)  # type: ignore[arg-type]
            draw -= rate
        return NO_FAULT

    def entry_fails(self, endpoint: str) -> bool:
        """Whether one customer entry answers 8896."""
        rate = self._faults.entry_error_rate
        return rate > 0 and self.applies_to(endpoint) and self._rng.random() < rate

    def retry_after_header(self, seconds: float | None) -> dict[str, str]:
        """Retry-After header for a 429 (whole seconds, rounded up, at least 1)."""
        if seconds is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _scripted(item: str) -> Decision:
    if item == SCRIPT_OK:
        return NO_FAULT
    if item == SCRIPT_DROP:
        return Decision("drop")
    if item == SCRIPT_TIMEOUT:
        return Decision("timeout")
    if item == SCRIPT_EXPIRED_TOKEN:
        return Decision("expired_token")
    if item == SCRIPT_ENTRY_ERROR:
        return Decision("entry_error")
    return Decision("status", int(item))
