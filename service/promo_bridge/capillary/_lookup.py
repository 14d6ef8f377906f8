"""The customer promotion lookup: where one customer stands in one promotion.

`GET /v2/customers/lookup/promotionData` is read-only. FACTS.md names it and its
`promotionStatusForCustomer` values, but no page shows a response: the shape read here is the
one the project's simulator serves (inferred from the v2 conventions of the bulk pages)::

    {"data": {"customerId": 423927867,
              "promotions": [{"programId": 2714, "promotionId": 202779, "promoIdentifier": null,
                              "promotionStatusForCustomer": "AVAILABLE_TO_EARN",
                              "issualId": "845", "earnedIds": [], "revokedEarnIds": []}],
              "totalCount": 1},
     "errors": [], "warnings": []}

An unknown customer is HTTP 200 with code 8015 and `data: null`.

The caller decides from a standing whether an EARN went through, and "holds nothing" lets it
send the EARN again. So every field that decision rests on is required: an answer in a shape
we do not know is malformed (retried, then ApiUnavailable), never read as "holds nothing".
Pure functions only (no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promo_bridge.capillary._errors import (
    HttpDisposition,
    UnavailableReason,
    classify_code,
    http_disposition,
)
from promo_bridge.capillary._wire import (
    AuthRefused,
    Unavailable,
    WireError,
    first_error,
    load_json,
)
from promo_bridge.domain.commands import IdentifierName, PromotionRef
from promo_bridge.domain.outcomes import ErrorClass
from promo_bridge.domain.reconcile import Standing

LOOKUP_PATH = "/v2/customers/lookup/promotionData"
# The documented maximum page size; asked for explicitly since the default is not documented.
MAX_LIMIT = 100
CUSTOMER_NOT_FOUND = 8015
_SUCCESS = frozenset(range(200, 300))


class LookupEndpoint(StrEnum):
    """The lookup as hooks, logs and metrics name it, next to the bulk `Endpoint`s."""

    PROMOTION_DATA = "promotionData"


# The lookup answers with the domain's value: the engine verifies unsure commands with it as is.
PromotionStanding = Standing


def lookup_params(
    identifier_name: IdentifierName, identifier_value: str, source: str, promotion: PromotionRef
) -> dict[str, str]:
    """The query of one lookup; a promoIdentifier is matched in the answer, not sent."""
    params = {
        "identifierName": identifier_name.value,
        "identifierValue": identifier_value,
        # Sent as given, like the bulk calls.
        "source": source,
        "programId": str(promotion.program_id),
    }
    if promotion.promotion_id is not None:
        params["promotionId"] = str(promotion.promotion_id)
    params["limit"] = str(MAX_LIMIT)
    return params


# --------------------------------------------------------------------------- response model


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


class _Holding(_Model):
    program_id: int | None = Field(default=None, alias="programId")
    promotion_id: str = Field(alias="promotionId")
    promo_identifier: str | None = Field(default=None, alias="promoIdentifier")
    status: str = Field(alias="promotionStatusForCustomer")
    # Required, though they may be null: a missing key is a shape we do not know.
    issual_id: str | None = Field(alias="issualId")
    earned_ids: list[str] | None = Field(alias="earnedIds")
    revoked_earn_ids: list[str] | None = Field(alias="revokedEarnIds")

    def standing(self) -> PromotionStanding:
        return PromotionStanding(
            issual_id=self.issual_id,
            earned_ids=frozenset(self.earned_ids or ()),
            revoked_earn_ids=frozenset(self.revoked_earn_ids or ()),
            status=self.status,
        )


class _Data(_Model):
    promotions: list[_Holding]
    total_count: int | None = Field(default=None, alias="totalCount")


class _Body(_Model):
    data: _Data | None = None
    errors: list[WireError] | None = None


# --------------------------------------------------------------------------- interpretation


@dataclass(frozen=True, slots=True)
class Found:
    """The answer: the standing, or None (unknown customer, or no entry for the promotion)."""

    standing: PromotionStanding | None


@dataclass(frozen=True, slots=True)
class Refused:
    """An answer that settles nothing and would come again (raised as LookupFailedError)."""

    code: int | None
    http_status: int
    detail: str


LookupOutcome = Found | Refused | Unavailable | AuthRefused


def _is_promotion(holding: _Holding, promotion: PromotionRef) -> bool:
    if holding.program_id is not None and holding.program_id != promotion.program_id:
        return False
    if promotion.promotion_id is not None:
        return holding.promotion_id == str(promotion.promotion_id)
    return holding.promo_identifier == promotion.promo_identifier


def _standing(promotion: PromotionRef, data: _Data, http_status: int) -> Found | Refused:
    # Filtered here as well as by the query: a promoIdentifier cannot be sent, and an API
    # that ignored a filter must not make another promotion's holding pass for this one.
    matches = [h for h in data.promotions if _is_promotion(h, promotion)]
    if len(matches) > 1:
        return Refused(None, http_status, f"{len(matches)} entries for promotion {promotion.label}")
    if matches:
        return Found(matches[0].standing())
    listed = len(data.promotions)
    if data.total_count is not None and data.total_count > listed:
        return Refused(
            None,
            http_status,
            f"{listed} of {data.total_count} promotions listed, {promotion.label} not among them",
        )
    return Found(None)


def _coded(error: WireError, http_status: int, retry_after: float | None) -> LookupOutcome:
    code = error.code
    if code == CUSTOMER_NOT_FOUND:
        return Found(None)
    found = classify_code(code, None)
    if found.error_class is ErrorClass.AUTH:
        return AuthRefused(http_status, code)
    if found.error_class is ErrorClass.RETRYABLE:
        return Unavailable(UnavailableReason.RETRYABLE_CODE, retry_after, f"code {code}")
    return Refused(code, http_status, f"code {code}")


def interpret_lookup(
    promotion: PromotionRef, http_status: int, content: bytes, retry_after: float | None
) -> LookupOutcome:
    """Turn one lookup response into the standing of `promotion`, or why there is none."""
    disposition = http_disposition(http_status, _SUCCESS)
    document = load_json(content)
    if disposition is HttpDisposition.AUTH:
        error = first_error(document)
        return AuthRefused(http_status, error.code if error else None)
    if disposition is HttpDisposition.RETRYABLE:
        reason = (
            UnavailableReason.THROTTLED if http_status == 429 else UnavailableReason.SERVER_ERROR
        )
        return Unavailable(reason, retry_after, f"HTTP {http_status}")
    try:
        body: _Body | None = _Body.model_validate(document)
    except ValidationError:
        body = None
    if body is not None and body.data is not None and disposition is HttpDisposition.BODY:
        return _standing(promotion, body.data, http_status)
    error = first_error(document)
    if error is not None:
        return _coded(error, http_status, retry_after)
    if disposition is HttpDisposition.BODY:
        return Unavailable(
            UnavailableReason.MALFORMED_RESPONSE,
            None,
            f"HTTP {http_status} body is not a lookup response",
        )
    return Refused(None, http_status, f"HTTP {http_status} without an error code")
