"""Backoff between attempts, and the Retry-After header."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

# Beyond this the exponential term is far past any sensible cap; keeps 2**n finite.
_MAX_EXPONENT = 32
_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: a uniform wait in [0, min(cap, base * 2**(n-1))).

    Full jitter spreads the retries of many callers that failed together (a 503 burst), so they
    do not come back together.
    """

    base_s: float
    cap_s: float

    def delay(
        self, attempt: int, rng: Callable[[], float], retry_after: float | None = None
    ) -> float:
        """The wait after failed attempt number `attempt` (1-based); never below Retry-After."""
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        ceiling = min(self.cap_s, self.base_s * 2.0**exponent)
        jittered = rng() * ceiling
        if retry_after is not None:
            return max(jittered, retry_after)
        return jittered


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP date (RFC 9110 IMF-fixdate and the obsolete forms) as an aware datetime."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait according to a Retry-After value (delta-seconds or an HTTP date).

    `now` is the time the date is measured from: the response's own Date header when it has
    one (so our clock's skew does not matter), else our wall clock. Unparseable values are
    ignored (None) rather than trusted.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    when = parse_http_date(text)
    if when is None:
        return None
    return max(0.0, (when - now).total_seconds())


def retry_after_of(
    headers: Mapping[str, str], *, wall_clock: Callable[[], datetime]
) -> float | None:
    """The Retry-After of a response, measured from its Date header when it has one."""
    value = headers.get("retry-after")
    if value is None:
        return None
    now = parse_http_date(headers.get("date")) or wall_clock()
    return parse_retry_after(value, now=now)
