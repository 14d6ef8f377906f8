"""POST {prefix}/targetGroups/{targetGroupId}/targets/{targetId}/unEnroll.

Body ``[{"customerId": N}]``, exactly one record (the page says no batch support). Success:
HTTP 200 ``{"data": N, "errors": null, "warnings": null}``. Errors (HTTP status configurable,
default 400): ``{"data": null, "errors": [{"code": C, "message": "..."}], "warnings": null}``,
checked in this order: path ids or body malformed (300004), group unknown or deactivated
(310017), target unknown in the group (310018), target period not active (310019), customer id
not positive or unknown with auto-registration off (310011), customer not enrolled in the
target (catalogue ``codes.target_not_enrolled``, default 310120, simulator-invented).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promo_bridge.simulator import _codes, _ledger
from promo_bridge.simulator._ledger import Ledger
from promo_bridge.simulator._state import EntryError, OrgState

ENDPOINT = "unEnroll"


@dataclass(frozen=True, slots=True)
class TargetAnswer:
    """HTTP status and body of an unEnroll call."""

    status: int
    body: dict[str, Any]
    failed: bool


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


class TargetEndpoints:
    """Un-enrolment from milestone/streak targets."""

    def __init__(self, state: OrgState, ledger: Ledger, error_status: int) -> None:
        self.state = state
        self._ledger = ledger
        self._error_status = error_status

    def unenroll(
        self, group: str, target_id: str, body: object, *, request_id: str, now: float
    ) -> TargetAnswer:
        """Process one un-enrolment."""
        outcome = self._unenroll(group, target_id, body, request_id=request_id, now=now)
        if isinstance(outcome, EntryError):
            errors = [{"code": outcome.code, "message": outcome.message}]
            body = {"data": None, "errors": errors, "warnings": None}
            return TargetAnswer(self._error_status, body, failed=True)
        return TargetAnswer(200, {"data": outcome, "errors": None, "warnings": None}, failed=False)

    def _unenroll(  # noqa: PLR0911 - one return per documented error, in order
        self, group: str, target_id: str, body: object, *, request_id: str, now: float
    ) -> int | EntryError:
        group_id = _positive_int(group)
        tid = _positive_int(target_id)
        if (
            group_id is None
            or tid is None
            or not isinstance(body, list)
            or len(body) != 1
            or not isinstance(body[0], dict)
        ):
            return EntryError.of(_codes.TARGET_INVALID_INPUT)
        customer_id = _positive_int(body[0].get("customerId"))
        if customer_id is None:
            return EntryError.of(_codes.TARGET_INVALID_INPUT)
        state = self.state
        target = state.target(group_id, tid)
        if not state.target_group_exists(group_id) or (
            target is not None and not target.group_active
        ):
            return EntryError.of(_codes.TARGET_GROUP_NOT_FOUND)
        if target is None:
            return EntryError.of(_codes.TARGET_RULE_NOT_FOUND)
        if not target.period_active:
            return EntryError.of(_codes.TARGET_PERIOD_NOT_FOUND)
        if customer_id <= 0 or (
            state.resolve_customer("id", str(customer_id), register=state.auto_register) is None
        ):
            return EntryError.of(_codes.TARGET_INVALID_USER)
        if not state.in_target(customer_id, target):
            return EntryError.spec(state.codes.target_not_enrolled)
        state.set_in_target(customer_id, target, enrolled=False)
        self._ledger.record(
            at=now,
            request_id=request_id,
            endpoint=ENDPOINT,
            action=_ledger.UNENROLL,
            customer_id=customer_id,
            subject=state.target_subject(target),
        )
        return customer_id
