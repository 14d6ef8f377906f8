"""The wire: request bodies built from commands, and responses turned into verdicts.

Pure functions only (no I/O), so every rule about matching answers to customers is testable
without a transport. The rules (DESIGN.md, "Responses"):

- entries match customers by position; where identifierName is `id`, each result's entityId
  must be the customer sent at that position;
- one entry with a request-level code answering a multi-customer call applies to all;
- anything else is ambiguous: a multi-customer call is split in halves and resent, a
  single-customer call ends FAILED. Nothing is ever guessed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promo_bridge.capillary._errors import (
    Classification,
    HttpDisposition,
    SplitReason,
    UnavailableReason,
    classify_code,
    http_disposition,
)
from promo_bridge.domain._values import value
from promo_bridge.domain.commands import (
    BULK_ACTION_OF_ACTION,
    Action,
    BatchKey,
    Command,
    Endpoint,
    IdentifierName,
    PromotionRef,
)
from promo_bridge.domain.outcomes import CommandResult, ErrorClass, OutcomeStatus

BULK_PATHS: Mapping[Endpoint, str] = {
    Endpoint.ENROL_AND_EARN: "/v2/promotion/bulk/enrolAndEarn",
    Endpoint.REVOKE_ENROL_AND_EARN: "/v2/promotion/bulk/revokeEnrolAndEarn",
    Endpoint.REVOKE_DIRECT_EARN: "/v2/promotion/bulk/revokeDirectEarn",
}
TOKEN_PATH = "/v3/oauth/token/generate"  # noqa: S105 - a path, not a password
REQUEST_ID_HEADER = "X-Cap-Requestid"
OAUTH_TOKEN_HEADER = "X-CAP-API-OAUTH-TOKEN"  # noqa: S105 - a header name, not a password

# Capillary messages go into outcome records; bound them so a runaway body cannot bloat them.
_MAX_MESSAGE = 500
_EARN_ID_ACTIONS = frozenset({Action.REVOKE_EARN, Action.REVOKE_DIRECT_EARN})
_GATEWAY_TIMEOUT = 504


# --------------------------------------------------------------------------- requests


@value
class WireRequest:
    """One HTTP request: a POST of `body` (JSON) to `path` (relative to the base URL)."""

    path: str
    body: object


def _promotion_details(promotion: PromotionRef) -> dict[str, object]:
    details: dict[str, object] = {"programId": promotion.program_id}
    if promotion.promotion_id is not None:
        details["promotionId"] = promotion.promotion_id
    else:
        details["promoIdentifier"] = promotion.promo_identifier
    return details


def _customer(command: Command) -> dict[str, object]:
    customer: dict[str, object] = {
        "identifierValue": command.identifier_value,
        # Sent exactly as the event gave it: the pages use both "INSTORE" and "instore".
        "source": command.source,
    }
    if command.earn_ids:
        customer["earnIds"] = list(command.earn_ids)
    return customer


def _bulk_action(action: Action, *, revoke_direct_earn_bulk_action: bool) -> str | None:
    if action is Action.REVOKE_DIRECT_EARN:
        return "REVOKE_EARN" if revoke_direct_earn_bulk_action else None
    return BULK_ACTION_OF_ACTION[action]


def is_customer_id(value: str) -> bool:
    """True for a customer id as unEnroll needs it: ASCII digits only."""
    return value.isascii() and value.isdecimal()


def build_request(
    key: BatchKey,
    commands: Sequence[Command],
    *,
    unenroll_prefix: str,
    revoke_direct_earn_bulk_action: bool,
) -> WireRequest:
    """The request carrying `commands` (all of batch key `key`, already validated)."""
    if key.endpoint is Endpoint.UNENROLL:
        target = key.target
        if target is None:
            raise ValueError("an unEnroll batch needs a target")
        path = (
            f"{unenroll_prefix}/targetGroups/{target.target_group_id}"
            f"/targets/{target.target_id}/unEnroll"
        )
        return WireRequest(path, [{"customerId": int(c.identifier_value)} for c in commands])
    promotion = key.promotion
    if promotion is None:
        raise ValueError(f"a {key.endpoint} batch needs a promotion")
    body: dict[str, object] = {"type": "CUSTOMER"}
    bulk_action = _bulk_action(
        key.action, revoke_direct_earn_bulk_action=revoke_direct_earn_bulk_action
    )
    if bulk_action is not None:
        body["bulkAction"] = bulk_action
    body["promotionDetails"] = _promotion_details(promotion)
    body["identifierName"] = key.identifier_name.value
    body["customers"] = [_customer(c) for c in commands]
    return WireRequest(BULK_PATHS[key.endpoint], body)


def check_batch(key: BatchKey, commands: Sequence[Command]) -> None:
    """Raise ValueError for a batch the batcher should never have made (a programming error)."""
    seen: set[str] = set()
    for command in commands:
        if command.command_id in seen:
            raise ValueError(f"command {command.command_id} appears twice in one batch")
        seen.add(command.command_id)
        if command.batch_key != key:
            raise ValueError(f"command {command.command_id} does not belong to batch key {key}")
        if command.earn_ids and command.action not in _EARN_ID_ACTIONS:
            raise ValueError(f"command {command.command_id}: earn_ids only go with a revoke earn")
    if key.endpoint is Endpoint.UNENROLL and key.target is None:
        raise ValueError("an unEnroll batch needs a target")
    if key.endpoint is not Endpoint.UNENROLL and key.promotion is None:
        raise ValueError(f"a {key.endpoint} batch needs a promotion")


# --------------------------------------------------------------------------- verdicts


@value
class Settled:
    """A final answer for one command."""

    status: OutcomeStatus
    error_class: ErrorClass | None = None
    error_code: int | None = None
    error_message: str | None = None
    issual_id: str | None = None
    earned_id: str | None = None
    revoked_earn_ids: tuple[int, ...] = ()
    revoked_issual_id: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    unknown_code: bool = False

    def to_result(
        self, *, command_id: str, attempts: int, request_id: str | None, batch_id: str
    ) -> CommandResult:
        """The published verdict for one command."""
        return CommandResult(
            command_id=command_id,
            status=self.status,
            error_class=self.error_class,
            error_code=self.error_code,
            error_message=self.error_message,
            issual_id=self.issual_id,
            earned_id=self.earned_id,
            revoked_earn_ids=self.revoked_earn_ids,
            revoked_issual_id=self.revoked_issual_id,
            attempts=attempts,
            request_id=request_id,
            batch_id=batch_id,
            extra=dict(self.extra),
        )


@dataclass(frozen=True, slots=True)
class RetryLater:
    """A retryable code for this customer: resend it (alone or with the others retrying)."""

    code: int | None
    message: str | None


@dataclass(frozen=True, slots=True)
class AuthRefused:
    """The credentials were refused (HTTP status and/or code)."""

    http_status: int | None
    code: int | None


EntryVerdict = Settled | RetryLater | AuthRefused


@value
class Answered:
    """One verdict per command sent, in the order sent."""

    verdicts: tuple[EntryVerdict, ...]


@dataclass(frozen=True, slots=True)
class Unavailable:
    """No answer for anyone; the whole call may be retried."""

    reason: UnavailableReason
    retry_after: float | None = None
    detail: str = ""
    # The answer says nothing of what happened, yet the request reached Capillary, which may
    # have applied it (HTTP 504, an unreadable 2xx): resending could repeat the side effect.
    maybe_applied: bool = False


@dataclass(frozen=True, slots=True)
class Split:
    """Resend the customers in two halves (only ever for more than one customer)."""

    reason: SplitReason
    detail: str


CallOutcome = Answered | Unavailable | Split


def precheck(key: BatchKey, command: Command) -> Settled | None:
    """A verdict for a command that must not be sent at all, else None.

    unEnroll takes a numeric customerId, so it needs identifierName `id` (a rules-file
    problem otherwise: class config) and a numeric value (this customer's data: rejected, the
    same verdict 310011 "invalid userId" would give).
    """
    if key.endpoint is not Endpoint.UNENROLL:
        return None
    if key.identifier_name is not IdentifierName.ID:
        return Settled(
            OutcomeStatus.REJECTED,
            ErrorClass.CONFIG,
            error_message=f"unEnroll needs identifierName id, not {key.identifier_name}",
        )
    if not is_customer_id(command.identifier_value):
        return Settled(
            OutcomeStatus.REJECTED,
            ErrorClass.REJECTED,
            error_message="unEnroll needs a numeric customer id",
        )
    return None


# --------------------------------------------------------------------------- response models


class _Model(BaseModel):
    # Capillary adds fields over time; unknown ones are ignored, ids are text on our side.
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


class WireError(_Model):
    """One entry of an `errors` list."""

    code: int | None = None
    message: str | None = None


class WireResult(_Model):
    """The `result` object of a successful bulk entry."""

    entity_id: int | None = Field(default=None, alias="entityId")
    issual_id: str | None = Field(default=None, alias="issualId")
    earned_id: str | None = Field(default=None, alias="earnedId")
    revoked_earn_ids: tuple[int, ...] = Field(default=(), alias="revokedEarnIds")
    revoked_issual_id: str | None = Field(default=None, alias="revokedIssualId")


class _BulkEntry(_Model):
    result: WireResult | None = None
    errors: list[WireError] | None = None
    warnings: list[Any] | None = None


class _BulkBody(_Model):
    response: list[_BulkEntry]
    total_count: int | None = Field(default=None, alias="totalCount")
    failure_count: int | None = Field(default=None, alias="failureCount")


class _UnenrollBody(_Model):
    data: int | None = None
    errors: list[WireError] | None = None
    warnings: list[Any] | None = None


class _Envelope(_Model):
    # The shapes an error answer outside the bulk format takes in the docs: v3 style (a null
    # `data` and an `errors` list of codes), an `errorCode` with a `message` (access groups),
    # and a top-level `code` with a `message` (token errors: 401, 498 "Token expired at ...").
    errors: list[WireError] | None = None
    error_code: int | None = Field(default=None, alias="errorCode")
    code: int | None = None
    message: str | None = None


class _TokenData(_Model):
    access_token: str = Field(alias="accessToken", min_length=1)
    ttl_seconds: float | None = Field(default=None, alias="ttlSeconds", gt=0)


class _TokenBody(_Model):
    data: _TokenData | None = None
    errors: list[WireError] | None = None


@value
class Entry:
    """One decoded answer entry, whatever the endpoint's format."""

    result: WireResult | None
    errors: tuple[WireError, ...]
    warnings: tuple[str, ...] = ()


def _warning_texts(warnings: list[Any] | None) -> tuple[str, ...]:
    texts = []
    for warning in warnings or ():
        if isinstance(warning, dict) and "message" in warning:
            texts.append(str(warning["message"]))
        else:
            texts.append(str(warning))
    return tuple(texts)


def load_json(content: bytes) -> object:
    """The decoded JSON of a body; None when it is not JSON."""
    try:
        return json.loads(content)
    except ValueError:
        return None


def _envelope_entries(document: object) -> list[Entry] | None:
    if not isinstance(document, dict):
        return None
    try:
        envelope = _Envelope.model_validate(document)
    except ValidationError:
        return None
    errors = tuple(e for e in envelope.errors or () if e.code is not None)
    if errors:
        return [Entry(None, errors)]
    if envelope.error_code is not None:
        return [Entry(None, (WireError(code=envelope.error_code, message=envelope.message),))]
    # Gateways answer {"code": <HTTP status>, "message": <reason phrase>} as well: such a code
    # only restates the status, and reading it as a Capillary code would turn a wrong path
    # (404) into an unknown-code rejection. Only codes the table knows are read at top level.
    if envelope.code is not None and classify_code(envelope.code, None).known:
        return [Entry(None, (WireError(code=envelope.code, message=envelope.message),))]
    return None


def _unenroll_entries(document: object) -> list[Entry] | None:
    try:
        body = _UnenrollBody.model_validate(document)
    except ValidationError:
        return None
    if body.errors:
        return [Entry(None, tuple(body.errors), _warning_texts(body.warnings))]
    if body.data is None:
        # Not an unEnroll answer; maybe an error in another shape (a token error).
        return _envelope_entries(document)
    result = WireResult.model_validate({"entityId": body.data})
    return [Entry(result, (), _warning_texts(body.warnings))]


def _bulk_entries(document: dict[str, object]) -> list[Entry] | None:
    try:
        bulk = _BulkBody.model_validate(document)
    except ValidationError:
        return None
    return _entries_of(bulk)


def _entries_of(bulk: _BulkBody) -> list[Entry]:
    return [
        Entry(entry.result, tuple(entry.errors or ()), _warning_texts(entry.warnings))
        for entry in bulk.response
    ]


def decode_entries(endpoint: Endpoint, content: bytes) -> list[Entry] | None:
    """The answer entries of a response body, or None if it is no answer of `endpoint`."""
    if endpoint is not Endpoint.UNENROLL:
        # The common answer, parsed and validated in one pass by pydantic-core (a third of the
        # cost of json.loads and then validating the dict); anything else takes the long way.
        try:
            bulk = _BulkBody.model_validate_json(content)
        except ValidationError:
            pass
        else:
            return _entries_of(bulk)
    document = load_json(content)
    if endpoint is Endpoint.UNENROLL:
        return _unenroll_entries(document)
    if isinstance(document, dict) and "response" in document:
        return _bulk_entries(document)
    return _envelope_entries(document)


def _first_code(content: bytes) -> int | None:
    error = first_error(load_json(content))
    return error.code if error else None


# --------------------------------------------------------------------------- interpretation


@value
class CallContext:
    """What a response is matched against."""

    endpoint: Endpoint
    action: Action
    identifier_name: IdentifierName
    commands: Sequence[Command]
    accepted_statuses: frozenset[int]
    not_enrolled_codes: frozenset[int]


def _same_customer(entity_id: int | None, identifier_value: str) -> bool:
    if entity_id is None or not is_customer_id(identifier_value):
        return False
    return int(identifier_value) == entity_id


def _message(errors: Sequence[WireError]) -> str | None:
    text = "; ".join(e.message for e in errors if e.message)
    return text[:_MAX_MESSAGE] if text else None


def _extra(entry: Entry, http_status: int) -> dict[str, str]:
    extra: dict[str, str] = {}
    if entry.warnings:
        extra["warnings"] = " | ".join(entry.warnings)[:_MAX_MESSAGE]
    if http_status >= 300:
        extra["http_status"] = str(http_status)
    return extra


def _error_verdict(entry: Entry, found: Classification, http_status: int) -> EntryVerdict:
    # The first error decides; the others only add to the message.
    code = entry.errors[0].code
    message = _message(entry.errors)
    if found.error_class is ErrorClass.RETRYABLE:
        return RetryLater(code, message)
    if found.error_class is ErrorClass.AUTH:
        return AuthRefused(http_status, code)
    status = found.status
    if status is None:  # pragma: no cover - every other class has a final status
        raise AssertionError(f"no outcome for class {found.error_class}")
    return Settled(
        status,
        found.error_class,
        error_code=code,
        error_message=message,
        extra=_extra(entry, http_status),
        unknown_code=not found.known,
    )


def _applied(command: Command, entry: Entry, http_status: int) -> Settled:
    result = entry.result
    if result is None:  # pragma: no cover - callers check
        raise AssertionError("an applied entry needs a result")
    issual_id = result.issual_id
    revoked_issual_id = result.revoked_issual_id
    extra = _extra(entry, http_status)
    # The revokeEnrolAndEarn page's REVOKE_ENROL response example shows `issualId`, its
    # parameter table `revokedIssualId`: either names the issual that was revoked.
    if command.action is Action.REVOKE_ENROL and revoked_issual_id is None:
        revoked_issual_id, issual_id = issual_id, None
    if command.issual_id_is_dummy and issual_id is not None:
        # Presented as the customer's issual, it would be taken for an enrolment that does not
        # exist; kept apart for whoever traces the call with Capillary.
        extra["dummy_issual_id"] = issual_id
        issual_id = None
    return Settled(
        OutcomeStatus.APPLIED,
        issual_id=issual_id,
        earned_id=result.earned_id,
        revoked_earn_ids=result.revoked_earn_ids,
        revoked_issual_id=revoked_issual_id,
        extra=extra,
    )


def _ambiguous(ctx: CallContext, detail: str) -> CallOutcome:
    if len(ctx.commands) > 1:
        return Split(SplitReason.AMBIGUOUS_RESPONSE, detail)
    return Answered(
        (
            Settled(
                OutcomeStatus.FAILED,
                error_class=None,
                error_message=f"ambiguous response: {detail}",
                extra={"failure": "ambiguous_response"},
            ),
        )
    )


def _final_code(ctx: CallContext, entry: Entry) -> bool:
    """The entry carries a known code that settles the command (not retryable, not auth)."""
    if not entry.errors:
        return False
    found = _classify(ctx, entry)
    return found.known and found.status is not None


def _classify(ctx: CallContext, entry: Entry) -> Classification:
    return classify_code(
        entry.errors[0].code, ctx.action, not_enrolled_codes=ctx.not_enrolled_codes
    )


def _match_one_for_all(ctx: CallContext, entry: Entry, http_status: int) -> CallOutcome:
    count = len(ctx.commands)
    if entry.errors:
        found = _classify(ctx, entry)
        if found.request_level and found.split:
            return Split(SplitReason.BATCH_LIMIT, f"code {entry.errors[0].code}")
        if found.request_level:
            return Answered((_error_verdict(entry, found, http_status),) * count)
    return _ambiguous(ctx, f"one entry without a request-level code for {count} customers")


def _match(ctx: CallContext, entries: Sequence[Entry], http_status: int) -> CallOutcome:
    count = len(ctx.commands)
    if len(entries) == 1 and count > 1:
        return _match_one_for_all(ctx, entries[0], http_status)
    if len(entries) != count:
        return _ambiguous(ctx, f"{len(entries)} entries for {count} customers")
    verdicts: list[EntryVerdict] = []
    for position, (command, entry) in enumerate(zip(ctx.commands, entries, strict=True)):
        if (
            ctx.identifier_name is IdentifierName.ID
            and entry.result is not None
            and not _same_customer(entry.result.entity_id, command.identifier_value)
        ):
            return _ambiguous(ctx, f"entityId at position {position} is not the customer sent")
        if entry.errors:
            found = _classify(ctx, entry)
            if found.split and count > 1:
                return Split(SplitReason.BATCH_LIMIT, f"code {entry.errors[0].code}")
            verdicts.append(_error_verdict(entry, found, http_status))
        elif entry.result is not None:
            verdicts.append(_applied(command, entry, http_status))
        else:
            return _ambiguous(ctx, f"entry at position {position} has no result and no errors")
    return Answered(tuple(verdicts))


def _without_code(ctx: CallContext, disposition: HttpDisposition, http_status: int) -> CallOutcome:
    """A refusal status whose body carries no code."""
    extra = {"http_status": str(http_status)}
    if disposition is HttpDisposition.SPLIT:
        if len(ctx.commands) > 1:
            return Split(SplitReason.BAD_REQUEST, f"HTTP {http_status} without an error code")
        rejected = Settled(
            OutcomeStatus.REJECTED,
            ErrorClass.REJECTED,
            error_code=http_status,
            error_message=f"HTTP {http_status} without an error code",
            extra=extra,
        )
        return Answered((rejected,))
    # Wrong URL, method or media type (or a redirect): the same for every customer.
    config = Settled(
        OutcomeStatus.REJECTED,
        ErrorClass.CONFIG,
        error_code=http_status,
        error_message=f"HTTP {http_status} from {ctx.endpoint}: check base_url and path prefix",
        extra=extra,
    )
    return Answered((config,) * len(ctx.commands))


def interpret(
    ctx: CallContext, http_status: int, content: bytes, retry_after: float | None
) -> CallOutcome:
    """Turn one HTTP response into verdicts for `ctx.commands`."""
    count = len(ctx.commands)
    disposition = http_disposition(http_status, ctx.accepted_statuses)
    if disposition is HttpDisposition.AUTH:
        return Answered((AuthRefused(http_status, _first_code(content)),) * count)
    if disposition is HttpDisposition.RETRYABLE:
        if http_status >= 500:
            # A 5xx whose body is this endpoint's answer with a final code for every customer
            # is an answer (e.g. 1101 "invalid program" at HTTP 500): the codes decide, as at
            # 200, instead of a retry for ever. Retryable codes (4001, 8896) stay retryable.
            entries = decode_entries(ctx.endpoint, content)
            if entries and all(_final_code(ctx, entry) for entry in entries):
                return _match(ctx, entries, http_status)
        reason = (
            UnavailableReason.THROTTLED if http_status == 429 else UnavailableReason.SERVER_ERROR
        )
        # A 504 is a gateway that stopped waiting for Capillary, not Capillary refusing: the
        # call may still complete behind it. 500, 502, 503 and 429 say it failed or was not taken.
        return Unavailable(
            reason,
            retry_after,
            f"HTTP {http_status}",
            maybe_applied=http_status == _GATEWAY_TIMEOUT,
        )
    entries = decode_entries(ctx.endpoint, content)
    if entries is not None:
        return _match(ctx, entries, http_status)
    if disposition is HttpDisposition.BODY or _is_success(http_status):
        # A success status whatever the body: Capillary took the call, so it may have applied it.
        return Unavailable(
            UnavailableReason.MALFORMED_RESPONSE,
            None,
            f"HTTP {http_status} body is not a {ctx.endpoint} response",
            maybe_applied=True,
        )
    return _without_code(ctx, disposition, http_status)


def _is_success(http_status: int) -> bool:
    return 200 <= http_status < 300


# --------------------------------------------------------------------------- token


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A token from /v3/oauth/token/generate; `ttl_s` None when the answer gave none."""

    access_token: str
    ttl_s: float | None


def token_body(key: str, secret: str) -> dict[str, str]:
    """The body of a token request."""
    return {"key": key, "secret": secret}


def decode_token(content: bytes) -> TokenGrant | WireError | None:
    """A grant, the refusal's first error, or None when the body is neither."""
    document = load_json(content)
    try:
        body = _TokenBody.model_validate(document)
    except ValidationError:
        return first_error(document)
    if body.data is not None:
        return TokenGrant(body.data.access_token, body.data.ttl_seconds)
    return first_error(document)


def first_error(document: object) -> WireError | None:
    """The first coded error of a decoded error answer, whatever its shape; None if none."""
    entries = _envelope_entries(document)
    return entries[0].errors[0] if entries else None
