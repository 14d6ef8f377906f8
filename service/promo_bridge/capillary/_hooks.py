"""Observation hooks: how metrics (owned elsewhere) learn what the client does.

Every hook is a plain synchronous callable with a no-op default; set the ones you need:

    ClientHooks(on_request=lambda endpoint, status, seconds, request_id: ...)

A hook that raises is logged and ignored: an observation must never turn a call whose side
effect already happened into an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from promo_bridge.capillary._errors import SplitReason, UnavailableReason
from promo_bridge.capillary._lookup import LookupEndpoint
from promo_bridge.domain.commands import Endpoint

log = structlog.get_logger("promo_bridge.capillary")

# What the `endpoint` argument of a hook can be: a bulk endpoint or the lookup.
EndpointLabel = Endpoint | LookupEndpoint


def _ignore(*_args: object) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ClientHooks:
    """Callbacks fired by the client; all optional.

    on_request(endpoint, http_status, seconds, request_id): after every HTTP request to an
        endpoint; `http_status` is None when no response came (network error, timeout) and
        `request_id` is the response's X-Cap-Requestid.
    on_retry(endpoint, reason): before the client waits and resends (whole call or the
        customers that answered a retryable code).
    on_throttle_wait(endpoint, seconds): a call waited for the client-side budget.
    on_token_refresh(ok, seconds): an OAuth token request finished (ok=False: it failed).
    on_split(endpoint, reason): a multi-customer call is being split in halves and resent.
    on_unknown_code(endpoint, code): a code missing from the error table was answered
        (the command is rejected; `code` is None for an error entry without a code).

    on_request, on_retry and on_throttle_wait also fire for lookups, with
    `LookupEndpoint.PROMOTION_DATA` as `endpoint` (an `EndpointLabel`: a str enum like
    `Endpoint`, so `.value` makes the metric label).
    """

    on_request: Callable[[EndpointLabel, int | None, float, str | None], None] = _ignore
    on_retry: Callable[[EndpointLabel, UnavailableReason], None] = _ignore
    on_throttle_wait: Callable[[EndpointLabel, float], None] = _ignore
    on_token_refresh: Callable[[bool, float], None] = _ignore
    on_split: Callable[[Endpoint, SplitReason], None] = _ignore
    on_unknown_code: Callable[[Endpoint, int | None], None] = _ignore


def fire(hook: Callable[..., None], *args: object) -> None:
    """Call a hook, containing its failure."""
    try:
        hook(*args)
    # Any failure of an observer is contained by design.
    except Exception:
        log.warning(
            "capillary_hook_failed", hook=getattr(hook, "__name__", repr(hook)), exc_info=True
        )
