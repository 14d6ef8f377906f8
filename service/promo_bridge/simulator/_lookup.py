"""GET /v2/customers/lookup/promotionData: a customer's promotions and where each stands.

FACTS.md names the endpoint and the ``promotionStatusForCustomer`` values but no page shows a
response, so this shape is INFERRED (v2 conventions of the bulk pages: entries plus
errors/warnings)::

    {"data": {"customerId": 423927867,
              "promotions": [{"programId": 2714, "promotionId": 202779,
                              "promoIdentifier": null, "promotionName": "big-spender",
                              "pointsOfferType": "LOYALTY_EARNING",
                              "loyaltyEarningType": "ISSUE_AND_EARN", "active": true,
                              "promotionStatusForCustomer": "AVAILABLE_TO_EARN",
                              "issualId": "845", "earnedIds": [], "revokedEarnIds": []}],
              "totalCount": 1},
     "errors": [], "warnings": []}

Status: enrol-and-issue without an active enrolment → AVAILABLE_TO_ENROL; enrolled with no
active earn, or direct issue with no active earn → AVAILABLE_TO_EARN; an active earn (or a
generic promotion) → AVAILABLE_TO_REDEEM; an inactive promotion → EXPIRED. Query parameters:
identifierName, identifierValue, source (required: else HTTP 400 code 11013), optional
programId, promotionId, status (comma-separated) and limit (1-100, default 100). A lookup never
registers a customer: unknown → HTTP 200 with code 8015 and ``data: null``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from promo_bridge.simulator import _codes
from promo_bridge.simulator._bulk import IDENTIFIER_NAMES, SOURCES
from promo_bridge.simulator._catalogue import Promotion, PromotionKind
from promo_bridge.simulator._state import EntryError, OrgState, PromotionState

ENDPOINT = "promotionData"
AVAILABLE_TO_ENROL = "AVAILABLE_TO_ENROL"
AVAILABLE_TO_EARN = "AVAILABLE_TO_EARN"
AVAILABLE_TO_REDEEM = "AVAILABLE_TO_REDEEM"
EXPIRED = "EXPIRED"
STATUSES = (AVAILABLE_TO_ENROL, AVAILABLE_TO_EARN, AVAILABLE_TO_REDEEM, EXPIRED)
MAX_LIMIT = 100


@dataclass(frozen=True, slots=True)
class LookupAnswer:
    """HTTP status and body of a lookup."""

    status: int
    body: dict[str, Any]


def status_for(promotion: Promotion, state: PromotionState | None) -> str:
    """``promotionStatusForCustomer`` of one promotion for one customer."""
    if not promotion.active:
        return EXPIRED
    active_earns = bool(state and state.active_earns())
    if promotion.type is PromotionKind.GENERIC or active_earns:
        return AVAILABLE_TO_REDEEM
    if promotion.type is PromotionKind.ENROL_AND_ISSUE and (
        state is None or state.issual_id is None
    ):
        return AVAILABLE_TO_ENROL
    return AVAILABLE_TO_EARN


def _error(status: int, error: EntryError) -> LookupAnswer:
    errors = [{"status": False, "code": error.code, "message": error.message}]
    return LookupAnswer(status, {"data": None, "errors": errors, "warnings": []})


def lookup(state: OrgState, query: Mapping[str, str]) -> LookupAnswer:
    """Answer one lookup."""
    name = query.get("identifierName", "").strip()
    value = query.get("identifierValue", "").strip()
    source = query.get("source", "").strip().upper()
    if name not in IDENTIFIER_NAMES or not value or source not in SOURCES:
        return _error(400, EntryError.of(_codes.IDENTIFIERS_EMPTY))
    customer_id = state.find_customer(name, value)
    if customer_id is None:
        return _error(200, EntryError.of(_codes.CUSTOMER_NOT_FOUND))

    program_filter = query.get("programId")
    promotion_filter = query.get("promotionId")
    wanted = {s.strip().upper() for s in query.get("status", "").split(",") if s.strip()}
    try:
        limit = int(query.get("limit", MAX_LIMIT))
    except ValueError:
        limit = -1
    if not 1 <= limit <= MAX_LIMIT or (wanted - set(STATUSES)):
        return _error(400, EntryError.of(_codes.INSUFFICIENT_PARAMETERS))

    promotions: list[dict[str, Any]] = []
    for program_id, promotion, pstate in state.holdings_of(customer_id):
        if program_filter is not None and program_filter != str(program_id):
            continue
        if promotion_filter is not None and not promotion.matches(promotion_filter):
            continue
        status = status_for(promotion, pstate)
        if wanted and status not in wanted:
            continue
        promotions.append(
            {
                "programId": program_id,
                "promotionId": promotion.promotion_id,
                "promoIdentifier": promotion.promo_identifier,
                "promotionName": promotion.name,
                "pointsOfferType": promotion.type.points_offer_type,
                "loyaltyEarningType": promotion.type.loyalty_earning_type,
                "active": promotion.active,
                "promotionStatusForCustomer": status,
                "issualId": pstate.issual_id if pstate else None,
                "earnedIds": pstate.active_earns() if pstate else [],
                "revokedEarnIds": [e for e, a in pstate.earns.items() if not a] if pstate else [],
            }
        )
    total = len(promotions)
    data = {"customerId": customer_id, "promotions": promotions[:limit], "totalCount": total}
    return LookupAnswer(200, {"data": data, "errors": [], "warnings": []})
