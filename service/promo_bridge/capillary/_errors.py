"""The error taxonomy: the one table that says what every Capillary answer means to the service.

Two tables live here and nowhere else:

- `ERROR_CODES`: every code FACTS.md and the endpoint pages list (plus the few status-like codes
  the older v2 docs list), each with its `ErrorClass`, whether it is request-level (it answers
  the whole call, so one entry may answer a multi-customer batch) and what it means.
- `http_disposition`: what an HTTP status means when the body carries no recognisable code.

`classify_code` turns a code into a `Classification` for a given action; the client never
interprets codes anywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from promo_bridge.domain.commands import Action
from promo_bridge.domain.outcomes import ErrorClass, OutcomeStatus


class UnavailableReason(StrEnum):
    """Why a call could not get a final answer; a bounded label set for logs and metrics."""

    # The request never reached the server (connect error or timeout, pool timeout, a proxy
    # that could not connect, a request httpx refused to write): resending cannot duplicate a
    # side effect.
    CONNECT_ERROR = "connect_error"
    # The request was (maybe) sent but no answer came back in time (read or write timeout): it
    # may have been applied.
    TIMEOUT = "timeout"
    # The connection broke mid-exchange (reset, closed without an answer): it may have been
    # applied.
    NETWORK_ERROR = "network_error"
    # HTTP 429.
    THROTTLED = "throttled"
    # HTTP 5xx and the other retryable statuses (408, 409, 423, 425, 461).
    SERVER_ERROR = "server_error"
    # A retryable Capillary code in the body (4001, 8896, ...).
    RETRYABLE_CODE = "retryable_code"
    # A success status whose body is not a response of the called endpoint at all (an HTML
    # page from a gateway, truncated JSON): nothing can be matched, so nothing is concluded.
    MALFORMED_RESPONSE = "malformed_response"


# A transport failure for one of these reasons may follow a request the API applied.
MAYBE_APPLIED_REASONS: frozenset[UnavailableReason] = frozenset(
    {UnavailableReason.TIMEOUT, UnavailableReason.NETWORK_ERROR}
)


class SplitReason(StrEnum):
    """Why a multi-customer call was split in halves and resent."""

    # The response matched no customer reliably (count or entityId mismatch, odd entry).
    AMBIGUOUS_RESPONSE = "ambiguous_response"
    # The API said the batch is too large (1060): a smaller one may pass.
    BATCH_LIMIT = "batch_limit"
    # HTTP 400/413/422 without a code: one customer's data may be the culprit.
    BAD_REQUEST = "bad_request"


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeSpec:
    """What one Capillary code means."""

    error_class: ErrorClass
    # True when the code is about the call, not one customer: a single entry carrying it
    # answers every customer of the batch (FACTS.md, "Statuses and partial failure").
    request_level: bool
    meaning: str
    # When set, `error_class` holds only for these actions and the code is REJECTED elsewhere
    # (8903 and 2305 mean "already revoked" only for a revoke).
    only_for: frozenset[Action] | None = None
    # A smaller batch may succeed where this one failed: split before giving up.
    split: bool = False


REVOKE_ACTIONS: frozenset[Action] = frozenset(
    {Action.REVOKE_EARN, Action.REVOKE_ENROL, Action.REVOKE_DIRECT_EARN}
)

_C = ErrorClass


def _call(error_class: ErrorClass, meaning: str, *, split: bool = False) -> CodeSpec:
    """A request-level code: about the call, so one entry may answer every customer."""
    return CodeSpec(error_class=error_class, request_level=True, meaning=meaning, split=split)


def _customer(
    error_class: ErrorClass, meaning: str, *, only_for: frozenset[Action] | None = None
) -> CodeSpec:
    """A code about one customer: it must come at that customer's position."""
    return CodeSpec(
        error_class=error_class, request_level=False, meaning=meaning, only_for=only_for
    )


ERROR_CODES: Mapping[int, CodeSpec] = MappingProxyType(
    {
        # --- configuration: the promotion/target/program is wrong; other promotions flow on.
        1101: _call(_C.CONFIG, "invalid programId"),
        8874: _call(_C.CONFIG, "promotion id passed is invalid"),
        8881: _call(_C.CONFIG, "insufficient parameters: program and promotion needed"),
        8892: _call(_C.CONFIG, "promotion is inactive"),
        8899: _call(_C.CONFIG, "cannot enrol/issue to the user group"),
        8901: _call(_C.CONFIG, "invalid entity type passed"),
        8902: _call(_C.CONFIG, "bulk action not supported for the promotion type"),
        310017: _call(_C.CONFIG, "target group not found or deactivated"),
        310018: _call(_C.CONFIG, "target rule not found"),
        310019: _call(_C.CONFIG, "target period not found"),
        # Older v2 docs: "batch limit exceeded". Our configured limit is above the org's: split
        # and resend; a single customer still refused is a configuration problem.
        1060: _call(_C.CONFIG, "batch limit exceeded", split=True),
        # --- rejected for this customer.
        8015: _customer(_C.REJECTED, "customer not found for the given identifiers"),
        # Per customer: we always send identifierName, so an empty value or source is one
        # customer's data. Not request-level, so one 11013 for many customers splits the batch.
        11013: _customer(_C.REJECTED, "identifierName, identifierValue, source empty"),
        310011: _customer(_C.REJECTED, "invalid userId"),
        # "invalid input" (milestone pages): about this record's data.
        300004: _customer(_C.REJECTED, "invalid input"),
        # Listed on the unEnroll page as "user already enrolled for the target". For an
        # un-enrol this reads as a copy of the enrol API's error; treating it as "already
        # un-enrolled" would claim the opposite of what it says, so it is a visible rejection.
        # The real "not enrolled" answer is configured (ClientConfig.unenroll_not_enrolled_codes).
        310119: _customer(_C.REJECTED, "user already enrolled for the target"),
        # --- already applied (only for a revoke; safe on replay).
        8903: _customer(
            _C.ALREADY_APPLIED, "earn ids invalid or already revoked", only_for=REVOKE_ACTIONS
        ),
        2305: _customer(
            _C.ALREADY_APPLIED,
            "active issued promotion not available for the customer",
            only_for=REVOKE_ACTIONS,
        ),
        # --- retryable.
        # The examples answer 8896 with one entry for the call, so it may be request-level;
        # per customer it retries just that customer.
        8896: _call(_C.RETRYABLE, "error occurred while issuing promotion"),
        4001: _call(_C.RETRYABLE, "authorization status unavailable"),
        # Older v2 docs: "search busy" and "concurrent actions on the same customer".
        461: _call(_C.RETRYABLE, "search busy"),
        521: _customer(_C.RETRYABLE, "concurrent actions on the same customer"),
        # --- authentication: refresh the token once, then pause consumption.
        401: _call(_C.AUTH, "unauthorized"),
        403: _call(_C.AUTH, "client has no access to the resource"),
        498: _call(_C.AUTH, "token expired"),
        4000: _call(_C.AUTH, "not authorized, access denied (access group)"),
        320001: _call(_C.AUTH, "invalid client key and secret"),
    }
)

# The outcome a final class becomes; RETRYABLE and AUTH are never final.
STATUS_OF_CLASS: Mapping[ErrorClass, OutcomeStatus] = MappingProxyType(
    {
        ErrorClass.ALREADY_APPLIED: OutcomeStatus.ALREADY_APPLIED,
        ErrorClass.REJECTED: OutcomeStatus.REJECTED,
        ErrorClass.CONFIG: OutcomeStatus.REJECTED,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Classification:
    """A code read in the context of one action."""

    error_class: ErrorClass
    request_level: bool
    split: bool
    # False for a code missing from the table (or an error entry without a code).
    known: bool

    @property
    def status(self) -> OutcomeStatus | None:
        """The final outcome, or None while the command is not settled (retryable, auth)."""
        return STATUS_OF_CLASS.get(self.error_class)


def classify_code(
    code: int | None,
    action: Action | None,
    *,
    not_enrolled_codes: frozenset[int] = frozenset(),
) -> Classification:
    """Classify a Capillary code for `action`.

    Unknown codes are REJECTED (class rejected), never retried: retrying an answer we do not
    understand could loop forever or repeat a side effect, while a rejection is visible in the
    outcome (with the code) and in the unknown-code hook, and can be replayed once understood.
    `action` None (the token endpoint) reads every code without action-specific meaning.
    """
    if action is Action.UNENROLL and code is not None and code in not_enrolled_codes:
        return Classification(
            error_class=ErrorClass.ALREADY_APPLIED, request_level=False, split=False, known=True
        )
    spec = ERROR_CODES.get(code) if code is not None else None
    if spec is None:
        return Classification(
            error_class=ErrorClass.REJECTED, request_level=False, split=False, known=False
        )
    error_class = spec.error_class
    if spec.only_for is not None and (action is None or action not in spec.only_for):
        error_class = ErrorClass.REJECTED
    return Classification(
        error_class=error_class, request_level=spec.request_level, split=spec.split, known=True
    )


class HttpDisposition(StrEnum):
    """What an HTTP status says about a call before (or without) its body."""

    # A response of the endpoint: decode the body and match entries.
    BODY = "body"
    AUTH = "auth"
    RETRYABLE = "retryable"
    # The request was refused as malformed without a code: a customer's data may be the cause.
    SPLIT = "split"
    # Wrong URL, method or media type: nothing was applied and resending the same will not help.
    CONFIG = "config"


_AUTH_STATUSES = frozenset({401, 403, 498})
# 408 request timeout, 409/423 conflicts and locks (concurrent actions), 425 too early,
# 429 throttled, 461 "search busy" (older v2 docs); every 5xx is retryable as well.
_RETRYABLE_STATUSES = frozenset({408, 409, 423, 425, 429, 461})
_SPLIT_STATUSES = frozenset({400, 413, 422})


def http_disposition(status: int, accepted: frozenset[int]) -> HttpDisposition:
    """The meaning of an HTTP status; `accepted` are the statuses that carry endpoint bodies.

    AUTH and RETRYABLE win over any body; for SPLIT and CONFIG a code in the body, when there
    is one, decides instead.
    """
    if status in _AUTH_STATUSES:
        return HttpDisposition.AUTH
    if status in _RETRYABLE_STATUSES or status >= 500:
        return HttpDisposition.RETRYABLE
    if status in accepted:
        return HttpDisposition.BODY
    if status in _SPLIT_STATUSES:
        return HttpDisposition.SPLIT
    return HttpDisposition.CONFIG
