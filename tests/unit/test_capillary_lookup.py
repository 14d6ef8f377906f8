"""The customer promotion lookup: query, reading the standing, retries, auth, budget."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from capillary_fakes import (
    PROMOTION,
    applied_for,
    batch,
    command,
    config,
    holding,
    lookup_body,
    make_client,
    oauth_config,
    unknown_customer,
)

from promo_bridge.capillary import (
    ApiUnavailable,
    AuthenticationFailed,
    ClientHooks,
    LookupEndpoint,
    LookupFailedError,
    PromotionStanding,
    UnavailableReason,
)
from promo_bridge.domain.commands import IdentifierName, PromotionRef

LOOKUP_PATH = "/v2/customers/lookup/promotionData"
TOKEN_PATH = "/v3/oauth/token/generate"
LOOKUP = LookupEndpoint.PROMOTION_DATA
BY_IDENTIFIER = PromotionRef(program_id=2714, promo_identifier="95c77d88-470c")


def _ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body, headers={"X-Cap-Requestid": "rq-1"})


async def _lookup(client: Any, promotion: PromotionRef = PROMOTION) -> PromotionStanding | None:
    standing: PromotionStanding | None = await client.lookup_promotion(
        IdentifierName.MOBILE, "919986000586", "INSTORE", promotion
    )
    return standing


def _sequence(*answers: httpx.Response | Exception) -> Any:
    queue = list(answers)

    def handler(_request: httpx.Request) -> httpx.Response:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler


# --------------------------------------------------------------------------- the answer


async def test_lookup_sends_the_query_with_the_promotion_id() -> None:
    """GET promotionData with identifier, source, programId, promotionId and the page size."""
    client, api, _ = make_client(lambda _r: _ok(lookup_body(holding())))
    async with client:
        await _lookup(client)
    [request] = api.requests
    assert request.method == "GET"
    assert request.url.path == LOOKUP_PATH
    assert dict(request.url.params) == {
        "identifierName": "mobile",
        "identifierValue": "919986000586",
        "source": "INSTORE",
        "programId": "2714",
        "promotionId": "202779",
        "limit": "100",
    }
    assert request.headers["Authorization"].startswith("Basic ")


async def test_lookup_reads_the_standing_with_ids_as_text() -> None:
    """issualId, active and revoked earnIds (ints or strings) and the status come back as text."""
    entry = holding(
        issual_id=845,
        earned_ids=[957, "959"],
        revoked_earn_ids=["960", 961],
        status="AVAILABLE_TO_REDEEM",
    )
    client, _, _ = make_client(lambda _r: _ok(lookup_body(entry)))
    async with client:
        standing = await _lookup(client)
    assert standing == PromotionStanding(
        issual_id="845",
        earned_ids=frozenset({"957", "959"}),
        revoked_earn_ids=frozenset({"960", "961"}),
        status="AVAILABLE_TO_REDEEM",
    )


async def test_null_issual_id_and_earn_lists_read_as_empty() -> None:
    """A holding without enrolment or earns: no issualId, empty sets."""
    entry = {**holding(issual_id=None), "earnedIds": None, "revokedEarnIds": None}
    client, _, _ = make_client(lambda _r: _ok(lookup_body(entry)))
    async with client:
        standing = await _lookup(client)
    assert standing == PromotionStanding(None, frozenset(), frozenset(), "AVAILABLE_TO_EARN")


async def test_unknown_customer_is_none() -> None:
    """HTTP 200 with code 8015 and data null: the API does not know the customer."""
    client, api, _ = make_client(lambda _r: _ok(unknown_customer()))
    async with client:
        assert await _lookup(client) is None
    assert len(api.requests) == 1


async def test_customer_without_the_promotion_is_none() -> None:
    """A known customer whose answer lists no entry for the promotion."""
    client, _, _ = make_client(lambda _r: _ok(lookup_body()))
    async with client:
        assert await _lookup(client) is None


async def test_promo_identifier_is_matched_in_the_answer_not_sent() -> None:
    """By promoIdentifier: no promotionId in the query; the answer's entries are filtered."""
    entries = [
        holding(202779, earned_ids=[1]),
        holding(202780, promo_identifier="95c77d88-470c", earned_ids=[974]),
    ]
    client, api, _ = make_client(lambda _r: _ok(lookup_body(*entries)))
    async with client:
        standing = await _lookup(client, BY_IDENTIFIER)
    assert standing is not None
    assert standing.earned_ids == frozenset({"974"})
    assert "promotionId" not in api.requests[0].url.params


async def test_entries_of_other_promotions_or_programs_are_not_taken() -> None:
    """An API ignoring the filter: another promotion's (or program's) holding is not this one."""
    entries = [holding(202780, earned_ids=[1]), holding(202779, program_id=469, earned_ids=[2])]
    client, _, _ = make_client(lambda _r: _ok(lookup_body(*entries)))
    async with client:
        assert await _lookup(client) is None


async def test_two_entries_for_the_promotion_fail_the_lookup() -> None:
    """Which of two entries is the holding cannot be told: LookupFailedError, no guess."""
    entries = [holding(earned_ids=[1]), holding(earned_ids=[2])]
    client, api, _ = make_client(lambda _r: _ok(lookup_body(*entries)))
    async with client:
        with pytest.raises(LookupFailedError) as caught:
            await _lookup(client)
    assert caught.value.http_status == 200
    assert len(api.requests) == 1


async def test_a_partial_listing_without_the_promotion_fails_the_lookup() -> None:
    """100 of 150 promotions listed, none this one: it may be on the rest, so not None."""
    entries = [holding(300_000 + n) for n in range(100)]
    client, _, _ = make_client(lambda _r: _ok(lookup_body(*entries, total=150)))
    async with client:
        with pytest.raises(LookupFailedError):
            await _lookup(client, BY_IDENTIFIER)


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (400, {"data": None, "errors": [{"code": 11013, "message": "empty"}]}, 11013),
        (200, {"data": None, "errors": [{"code": 1101, "message": "invalid programId"}]}, 1101),
        (404, {"code": 404, "message": "Not Found"}, None),
    ],
)
async def test_a_refused_lookup_is_not_retried(
    status: int, body: dict[str, Any], code: int | None
) -> None:
    """A rejection code (or a 4xx without one) raises LookupFailedError after one request."""
    client, api, _ = make_client(lambda _r: httpx.Response(status, json=body))
    async with client:
        with pytest.raises(LookupFailedError) as caught:
            await _lookup(client)
    assert (caught.value.code, caught.value.http_status) == (code, status)
    assert len(api.requests) == 1


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (httpx.ReadTimeout("slow"), UnavailableReason.TIMEOUT),
        (httpx.RemoteProtocolError("disconnected"), UnavailableReason.NETWORK_ERROR),
        (httpx.ConnectError("refused"), UnavailableReason.CONNECT_ERROR),
        (httpx.Response(503, text="down"), UnavailableReason.SERVER_ERROR),
        (httpx.Response(429, headers={"Retry-After": "3"}), UnavailableReason.THROTTLED),
        (
            httpx.Response(200, json={"errorCode": 4001, "message": "unavailable"}),
            UnavailableReason.RETRYABLE_CODE,
        ),
        (httpx.Response(200, text="<html>gateway</html>"), UnavailableReason.MALFORMED_RESPONSE),
        (
            # A shape we do not know (no earnedIds) is malformed, never "holds nothing".
            httpx.Response(
                200,
                json=lookup_body({k: v for k, v in holding().items() if k != "earnedIds"}),
            ),
            UnavailableReason.MALFORMED_RESPONSE,
        ),
    ],
    ids=lambda v: getattr(v, "value", None) or type(v).__name__,
)
async def test_retryable_failures_are_retried_a_timeout_included(
    failure: httpx.Response | Exception, reason: UnavailableReason
) -> None:
    """A lookup is read-only: every retryable failure is retried, then the answer is read."""
    retries: list[tuple[Any, ...]] = []
    requests: list[tuple[Any, ...]] = []
    hooks = ClientHooks(
        on_retry=lambda *a: retries.append(a), on_request=lambda *a: requests.append(a)
    )
    handler = _sequence(failure, _ok(lookup_body(holding(earned_ids=[7]))))
    client, api, clock = make_client(handler, hooks=hooks)
    async with client:
        standing = await _lookup(client)
    assert standing is not None
    assert standing.earned_ids == frozenset({"7"})
    assert retries == [(LOOKUP, reason)]
    assert len(api.requests) == 2
    assert [r[0] for r in requests] == [LOOKUP, LOOKUP]
    assert requests[-1][3] == "rq-1"
    if reason is UnavailableReason.THROTTLED:
        assert clock.sleeps[0] >= 3.0


async def test_lookup_unavailable_past_the_attempts_raises_api_unavailable() -> None:
    """503 on every attempt: ApiUnavailable with nothing completed, pending or unsure."""
    client, api, _ = make_client(
        lambda _r: httpx.Response(503, text="down"), cfg=config(max_attempts=3)
    )
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await _lookup(client)
    assert len(api.requests) == 3
    assert caught.value.reason is UnavailableReason.SERVER_ERROR
    assert (caught.value.completed, caught.value.pending) == ((), ())
    assert caught.value.unsure == frozenset()
    assert caught.value.__cause__ is None


async def test_a_long_retry_after_ends_the_lookup_at_once() -> None:
    """A Retry-After beyond max_retry_wait_s is reported as retry_after, not waited for."""
    client, api, clock = make_client(lambda _r: httpx.Response(429, headers={"Retry-After": "600"}))
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await _lookup(client)
    assert caught.value.retry_after == 600.0
    assert len(api.requests) == 1
    assert clock.sleeps == []


# --------------------------------------------------------------------------- auth


def _oauth_api(refusals: list[httpx.Response]) -> Any:
    tokens = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal tokens
        if request.url.path == TOKEN_PATH:
            tokens += 1
            return httpx.Response(200, json={"data": {"accessToken": f"t{tokens}"}})
        if refusals:
            return refusals.pop(0)
        return _ok(lookup_body(holding()))

    return handler


@pytest.mark.parametrize(
    "refusal",
    [
        httpx.Response(401, json={"code": 498, "message": "Token expired at 10:00"}),
        httpx.Response(401, json={"errors": [{"code": 498, "message": "Token expired"}]}),
        httpx.Response(200, json={"code": 498, "message": "Token expired at 10:00"}),
    ],
    ids=["top-level-code", "errors-list", "code-at-http-200"],
)
async def test_a_refused_token_is_refreshed_once(refusal: httpx.Response) -> None:
    """A 498 refusal (either body form, any status) fetches one new token and asks again."""
    client, api, _ = make_client(_oauth_api([refusal]), cfg=oauth_config())
    async with client:
        standing = await _lookup(client)
    assert standing is not None
    assert [r.url.path for r in api.requests] == [TOKEN_PATH, LOOKUP_PATH, TOKEN_PATH, LOOKUP_PATH]
    assert api.requests[-1].headers["X-CAP-API-OAUTH-TOKEN"] == "t2"


async def test_refused_after_the_refresh_raises_authentication_failed() -> None:
    """The fresh token refused too: AuthenticationFailed with the code, no third token."""
    refused = httpx.Response(401, json={"code": 401, "message": "Unauthorized"})
    client, api, _ = make_client(_oauth_api([refused, refused]), cfg=oauth_config())
    async with client:
        with pytest.raises(AuthenticationFailed) as caught:
            await _lookup(client)
    assert (caught.value.code, caught.value.http_status) == (401, 401)
    assert [r.url.path for r in api.requests].count(TOKEN_PATH) == 2
    assert caught.value.pending == ()


async def test_basic_credentials_refused_raise_at_once() -> None:
    """Basic has nothing to refresh: one refused lookup raises AuthenticationFailed."""
    body = {"errorCode": 4000, "message": "Not authorized. Access is denied!"}
    client, api, _ = make_client(lambda _r: httpx.Response(403, json=body))
    async with client:
        with pytest.raises(AuthenticationFailed) as caught:
            await _lookup(client)
    assert caught.value.code == 4000
    assert len(api.requests) == 1


# --------------------------------------------------------------------------- plumbing


async def test_lookups_have_their_own_budget() -> None:
    """Two lookups a minute: lookups are spaced 30 s apart, bulk calls are not held by them."""
    waits: list[tuple[Any, ...]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == LOOKUP_PATH:
            return _ok(lookup_body())
        return httpx.Response(200, json=applied_for(request))

    client, api, _ = make_client(
        handler,
        cfg=config(lookup_calls_per_minute=2),
        hooks=ClientHooks(on_throttle_wait=lambda *a: waits.append(a)),
    )
    async with client:
        for _ in range(3):
            await _lookup(client)
        await client.send(batch([command(0)]))
    assert api.times == [1000.0, 1030.0, 1060.0, 1060.0]
    assert waits == [(LOOKUP, 30.0), (LOOKUP, 30.0)]


async def test_lookups_share_the_in_flight_bound() -> None:
    """With max_in_flight 1, a lookup never overlaps a bulk call (or another lookup)."""
    open_now = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        for _ in range(5):
            await asyncio.sleep(0)
        open_now -= 1
        if request.url.path == LOOKUP_PATH:
            return _ok(lookup_body())
        return httpx.Response(200, json=applied_for(request))

    client, api, _ = make_client(handler, cfg=config(max_in_flight=1))
    async with client:
        await asyncio.gather(client.send(batch([command(0)])), _lookup(client), _lookup(client))
    assert peak == 1
    assert len(api.requests) == 3


def test_lookup_budget_must_be_positive() -> None:
    """lookup_calls_per_minute below 1 is refused; the default is 100."""
    assert config().lookup_calls_per_minute == 100
    with pytest.raises(ValueError, match="lookup_calls_per_minute"):
        config(lookup_calls_per_minute=0)


async def test_closed_client_refuses_to_look_up() -> None:
    """After aclose(), lookup_promotion raises instead of using a closed pool."""
    client, _, _ = make_client(lambda _r: _ok(lookup_body()))
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await _lookup(client)
