"""The three bulk promotion endpoints: request validation, per-customer processing, responses.

Request-level problems answer ONE failed entry (totalCount 1, failureCount 1) whatever the
number of customers, as the pages show. They are checked in this order: entity type (8899 for
USERGROUP*, else 8901), promotionDetails present (8881), programId (1101), promotion (8874),
active (8892), bulkAction present (8881) and supported by the endpoint and promotion type
(8902), customers present (8881), batch size (1060). Then each customer gets its own entry, in
request order: empty/invalid identifierName, identifierValue or source (11013), unknown
customer (8015, unless auto-registration is on), injected 8896, then the state machine.

A result echoes the promotion the way the request named it: ``promotionId`` when it sent one,
``promoIdentifier`` when it sent that (the revoke-by-promoIdentifier example does so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from promo_bridge.simulator import _codes, _ledger
from promo_bridge.simulator._catalogue import Promotion, PromotionKind
from promo_bridge.simulator._ledger import Ledger
from promo_bridge.simulator._options import ApiOptions
from promo_bridge.simulator._state import EntryError, OrgState

ENROL_AND_EARN: Final = "enrolAndEarn"
REVOKE_ENROL_AND_EARN: Final = "revokeEnrolAndEarn"
REVOKE_DIRECT_EARN: Final = "revokeDirectEarn"

_ACTIONS: Final[dict[str, tuple[str, ...]]] = {
    ENROL_AND_EARN: (_ledger.ENROL, _ledger.EARN),
    REVOKE_ENROL_AND_EARN: (_ledger.REVOKE_EARN, _ledger.REVOKE_ENROL),
    # revokeDirectEarn's table has no bulkAction, but its first example sends REVOKE_EARN.
    REVOKE_DIRECT_EARN: (_ledger.REVOKE_EARN,),
}
SOURCES: Final = frozenset(
    {
        "FACEBOOK",
        "WEB_ENGAGE",
        "INSTORE",
        "MARTJACK",
        "TMALL",
        "TAOBAO",
        "JD",
        "ECOMMERCE",
        "WEBSITE",
        "LINE",
        "ALL",
    }
)
IDENTIFIER_NAMES: Final = frozenset({"id", "mobile", "email"})


@dataclass(frozen=True, slots=True)
class BulkAnswer:
    """HTTP status and body of a bulk call, plus what the call log records."""

    status: int
    body: dict[str, Any]
    bulk_action: str | None
    customers: int
    failures: int


@dataclass(frozen=True, slots=True)
class _Request:
    program_id: int
    promotion: Promotion
    echo: dict[str, Any]
    action: str
    identifier_name: str | None
    customers: list[Any]


def ok_entry(result: dict[str, Any]) -> dict[str, Any]:
    """A successful response entry."""
    return {"result": result, "errors": [], "warnings": []}


def error_entry(error: EntryError) -> dict[str, Any]:
    """A failed response entry: no result, one error."""
    return {
        "errors": [{"status": False, "code": error.code, "message": error.message}],
        "warnings": [],
    }


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


def _as_text(value: object) -> str:
    # Identifier values are documented as strings; numbers are accepted as their text.
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


_INVALID_EARN_IDS: Final = object()


def _earn_ids(customer: dict[str, Any]) -> list[int] | object | None:
    """The customer's earnIds (``earnIDs`` on revokeDirectEarn's table), None when absent."""
    raw = customer.get("earnIds", customer.get("earnIDs"))
    if raw is None:
        return None
    items = raw if isinstance(raw, list) else [raw]
    ids = [_as_int(item) for item in items]
    if any(i is None for i in ids):
        return _INVALID_EARN_IDS
    return [i for i in ids if i is not None]


class BulkEndpoints:
    """Processes bulk calls against the org state, recording effects in the ledger."""

    def __init__(
        self,
        state: OrgState,
        ledger: Ledger,
        options: ApiOptions,
        entry_fails: Callable[[str], bool],
    ) -> None:
        self.state = state
        self._ledger = ledger
        self._options = options
        self._entry_fails = entry_fails

    def malformed(self, endpoint: str) -> BulkAnswer:
        """Answer to a body that is not a JSON object."""
        body = _single_error(EntryError.of(_codes.INSUFFICIENT_PARAMETERS))
        return BulkAnswer(self._options.malformed_body_status, body, None, 0, 1)

    def handle(
        self, endpoint: str, body: object, *, request_id: str, now: float, fail_all_entries: bool
    ) -> BulkAnswer:
        """Process one call; ``fail_all_entries`` answers 8896 for every valid customer."""
        bulk_action = body.get("bulkAction") if isinstance(body, dict) else None
        label = bulk_action if isinstance(bulk_action, str) else None
        customers = body.get("customers") if isinstance(body, dict) else None
        count = len(customers) if isinstance(customers, list) else 0
        request = self._parse(endpoint, body)
        if isinstance(request, EntryError):
            return BulkAnswer(self._options.failure_status, _single_error(request), label, count, 1)
        entries: list[dict[str, Any]] = []
        failures = 0
        for raw in request.customers:
            outcome = self._process_customer(
                endpoint, request, raw, request_id=request_id, now=now, fail=fail_all_entries
            )
            if isinstance(outcome, EntryError):
                failures += 1
                entries.append(error_entry(outcome))
            else:
                entries.append(ok_entry(outcome))
        if failures == 0:
            status = 200
        elif failures == len(entries):
            status = self._options.failure_status
        else:
            status = self._options.partial_failure_status
        response = {"response": entries, "totalCount": len(entries), "failureCount": failures}
        return BulkAnswer(status, response, label, len(entries), failures)

    # -- request level ------------------------------------------------------------------------

    # One early return per documented check, in the documented order: clearer than a table.
    def _parse(self, endpoint: str, body: object) -> _Request | EntryError:  # noqa: PLR0911, PLR0912
        if not isinstance(body, dict):
            return EntryError.of(_codes.INSUFFICIENT_PARAMETERS)
        entity_type = body.get("type")
        if isinstance(entity_type, str) and entity_type.startswith("USERGROUP"):
            return EntryError.of(_codes.USER_GROUP)
        if entity_type != "CUSTOMER":  # case-sensitive, as revokeDirectEarn's table says
            return EntryError.of(_codes.INVALID_ENTITY_TYPE)

        details = body.get("promotionDetails")
        if not isinstance(details, dict):
            return EntryError.of(_codes.INSUFFICIENT_PARAMETERS)
        raw_program = details.get("programId")
        raw_promotion = details.get("promotionId")
        raw_identifier = details.get("promoIdentifier")
        if raw_program in (None, "") or (
            raw_promotion in (None, "") and raw_identifier in (None, "")
        ):
            return EntryError.of(_codes.INSUFFICIENT_PARAMETERS)
        program_id = _as_int(raw_program)
        if program_id is None or self.state.program(program_id) is None:
            return EntryError.of(_codes.INVALID_PROGRAM)
        promotion_id = None if raw_promotion in (None, "") else _as_int(raw_promotion)
        identifier = raw_identifier if isinstance(raw_identifier, str) and raw_identifier else None
        if (raw_promotion not in (None, "") and promotion_id is None) or (
            raw_identifier not in (None, "") and identifier is None
        ):
            return EntryError.of(_codes.INVALID_PROMOTION)
        promotion = self.state.find_promotion(program_id, promotion_id, identifier)
        if promotion is None:
            return EntryError.of(_codes.INVALID_PROMOTION)
        if not promotion.active:
            return EntryError.of(_codes.PROMOTION_INACTIVE)

        action = self._action(endpoint, body.get("bulkAction"), promotion)
        if isinstance(action, EntryError):
            return action

        customers = body.get("customers")
        if not isinstance(customers, list) or not customers:
            return EntryError.of(_codes.INSUFFICIENT_PARAMETERS)
        limit = (
            self._options.revoke_direct_earn_limit
            if endpoint == REVOKE_DIRECT_EARN
            else self._options.bulk_limit
        )
        if limit is not None and len(customers) > limit:
            return EntryError(
                _codes.BATCH_LIMIT_EXCEEDED,
                f"{_codes.message(_codes.BATCH_LIMIT_EXCEEDED)}: at most {limit} per call",
            )

        echo: dict[str, Any] = {}
        if promotion_id is not None:
            echo["promotionId"] = promotion.promotion_id
        if identifier is not None:
            echo["promoIdentifier"] = identifier
        name = body.get("identifierName")
        identifier_name = name if isinstance(name, str) and name in IDENTIFIER_NAMES else None
        return _Request(program_id, promotion, echo, action, identifier_name, customers)

    def _action(self, endpoint: str, bulk_action: object, promotion: Promotion) -> str | EntryError:
        revoke = endpoint != ENROL_AND_EARN
        unsupported = EntryError(
            _codes.ACTION_NOT_SUPPORTED,
            _codes.REVOKE_ACTION_NOT_SUPPORTED_MESSAGE
            if revoke
            else _codes.message(_codes.ACTION_NOT_SUPPORTED),
        )
        if endpoint == REVOKE_DIRECT_EARN:
            if bulk_action not in (None, _ledger.REVOKE_EARN):
                return unsupported
            # "This API applies to LOYALTY and LOYALTY_EARNING promotion type."
            return (
                unsupported
                if promotion.type is PromotionKind.GENERIC
                else _ledger.REVOKE_DIRECT_EARN
            )
        if bulk_action in (None, ""):
            return EntryError.of(_codes.INSUFFICIENT_PARAMETERS)
        if bulk_action not in _ACTIONS[endpoint] or promotion.type is PromotionKind.GENERIC:
            return unsupported
        if promotion.type is PromotionKind.DIRECT_ISSUE and bulk_action in (
            _ledger.ENROL,
            _ledger.REVOKE_ENROL,
        ):
            return unsupported
        return str(bulk_action)

    # -- customer level -----------------------------------------------------------------------

    def _process_customer(  # noqa: PLR0911 - one return per documented per-entry error
        self,
        endpoint: str,
        request: _Request,
        raw: object,
        *,
        request_id: str,
        now: float,
        fail: bool,
    ) -> dict[str, Any] | EntryError:
        if not isinstance(raw, dict) or request.identifier_name is None:
            return EntryError.of(_codes.IDENTIFIERS_EMPTY)
        value = _as_text(raw.get("identifierValue"))
        source = raw.get("source")
        if not value or not isinstance(source, str) or source.strip().upper() not in SOURCES:
            return EntryError.of(_codes.IDENTIFIERS_EMPTY)
        state = self.state
        customer_id = state.resolve_customer(
            request.identifier_name, value, register=state.auto_register
        )
        if customer_id is None:
            return EntryError.of(_codes.CUSTOMER_NOT_FOUND)
        if fail or self._entry_fails(endpoint):
            return EntryError.of(_codes.ISSUE_FAILED)

        program_id, promotion, action = request.program_id, request.promotion, request.action
        result: dict[str, Any] = {
            "entityType": "CUSTOMER",
            "entityId": customer_id,
            **request.echo,
            "programId": program_id,
        }
        record: dict[str, Any] = {
            "at": now,
            "request_id": request_id,
            "endpoint": endpoint,
            "action": action,
            "customer_id": customer_id,
            "subject": state.subject(program_id, promotion),
        }
        if action == _ledger.ENROL:
            enrolled = state.enrol(customer_id, program_id, promotion)
            result["issualId"] = enrolled.issual_id
            self._ledger.record(**record, issual_id=enrolled.issual_id, repeat=enrolled.repeat)
        elif action == _ledger.EARN:
            earned = state.earn(customer_id, program_id, promotion)
            if isinstance(earned, EntryError):
                return earned
            result["issualId"] = earned.issual_id
            result["earnedId"] = earned.earned_id
            self._ledger.record(**record, issual_id=earned.issual_id, earned_id=earned.earned_id)
        elif action == _ledger.REVOKE_ENROL:
            revoked = state.revoke_enrol(customer_id, program_id, promotion)
            if isinstance(revoked, EntryError):
                return revoked
            result["revokedIssualId"] = int(revoked)
            self._ledger.record(**record, revoked_issual_id=int(revoked))
        else:  # REVOKE_EARN or REVOKE_DIRECT_EARN
            earn_ids = _earn_ids(raw)
            if earn_ids is _INVALID_EARN_IDS:
                return EntryError.of(_codes.EARN_IDS_INVALID)
            none_active = EntryError.of(
                _codes.NO_ACTIVE_ISSUED_PROMOTION
                if action == _ledger.REVOKE_DIRECT_EARN
                else _codes.EARN_IDS_INVALID
            )
            revoked_earns = state.revoke_earns(
                customer_id,
                program_id,
                promotion,
                earn_ids if isinstance(earn_ids, list) else None,
                none_active=none_active,
            )
            if isinstance(revoked_earns, EntryError):
                return revoked_earns
            result["revokedEarnIds"] = revoked_earns
            self._ledger.record(**record, revoked_earn_ids=tuple(revoked_earns))
        return result


def _single_error(error: EntryError) -> dict[str, Any]:
    return {"response": [error_entry(error)], "totalCount": 1, "failureCount": 1}
