"""The error taxonomy: one table, checked against FACTS.md and DESIGN.md, and each code's effect."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from capillary_fakes import batch, bulk, command, config, err, make_client, ok

from promo_bridge.capillary import (
    ERROR_CODES,
    ApiUnavailable,
    AuthenticationFailed,
    ClientHooks,
    UnavailableReason,
    classify_code,
)
from promo_bridge.domain.commands import Action
from promo_bridge.domain.outcomes import ErrorClass, OutcomeStatus

# Every code of FACTS.md's error table, plus the codes its auth section names.
FACTS_CODES = {
    8892, 8015, 1101, 8874, 8899, 8902, 8881, 8903, 2305, 8896, 8901, 11013,
    310119, 310011, 310019, 310017, 310018, 300004, 320001,
    401, 403, 498, 4000, 4001,
}  # fmt: skip

# The classes DESIGN.md gives (and our documented choices for the codes it leaves open).
EXPECTED_CLASS = {
    # configuration
    1101: ErrorClass.CONFIG, 8874: ErrorClass.CONFIG, 8881: ErrorClass.CONFIG,
    8892: ErrorClass.CONFIG, 8899: ErrorClass.CONFIG, 8901: ErrorClass.CONFIG,
    8902: ErrorClass.CONFIG, 310017: ErrorClass.CONFIG, 310018: ErrorClass.CONFIG,
    310019: ErrorClass.CONFIG, 1060: ErrorClass.CONFIG,
    # rejected for this customer
    8015: ErrorClass.REJECTED, 11013: ErrorClass.REJECTED, 310011: ErrorClass.REJECTED,
    300004: ErrorClass.REJECTED, 310119: ErrorClass.REJECTED,
    # already applied (for revokes)
    8903: ErrorClass.ALREADY_APPLIED, 2305: ErrorClass.ALREADY_APPLIED,
    # retryable
    8896: ErrorClass.RETRYABLE, 4001: ErrorClass.RETRYABLE, 461: ErrorClass.RETRYABLE,
    521: ErrorClass.RETRYABLE,
    # authentication
    401: ErrorClass.AUTH, 403: ErrorClass.AUTH, 498: ErrorClass.AUTH, 4000: ErrorClass.AUTH,
    320001: ErrorClass.AUTH,
}  # fmt: skip

FINAL_STATUS = {
    ErrorClass.CONFIG: OutcomeStatus.REJECTED,
    ErrorClass.REJECTED: OutcomeStatus.REJECTED,
    ErrorClass.ALREADY_APPLIED: OutcomeStatus.ALREADY_APPLIED,
}


def test_table_covers_every_documented_code() -> None:
    """Every code FACTS.md lists has an entry in the one table."""
    assert set(ERROR_CODES) >= FACTS_CODES


def test_table_classes_match_the_design() -> None:
    """The table holds exactly the expected codes, each with DESIGN.md's class."""
    assert {code: spec.error_class for code, spec in ERROR_CODES.items()} == EXPECTED_CLASS


def test_request_level_codes_are_the_documented_ones() -> None:
    """FACTS.md's request-level codes (and auth/4001/8896) are flagged request-level."""
    request_level = {code for code, spec in ERROR_CODES.items() if spec.request_level}
    assert {1101, 8874, 8892, 8901, 8899, 8902, 8881, 8896, 4001} <= request_level
    assert {8015, 11013, 310011, 8903, 2305}.isdisjoint(request_level)


def _action_for(code: int) -> Action:
    # 8903/2305 mean "already revoked" only for a revoke; every other code reads the same.
    return Action.REVOKE_EARN if code in {8903, 2305} else Action.EARN


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
async def test_each_code_produces_its_class(code: int) -> None:
    """A one-customer answer with the code ends as the table says (final, retried or auth)."""
    expected = EXPECTED_CLASS[code]
    answers = [bulk(err(code, f"message {code}")), bulk(ok(423927000))]
    retries: list[tuple[Any, ...]] = []
    hooks = ClientHooks(on_retry=lambda *args: retries.append(args))
    client, api, _ = make_client(lambda _r: httpx.Response(200, json=answers.pop(0)), hooks=hooks)
    cmd = command(0, action=_action_for(code))
    async with client:
        if expected is ErrorClass.AUTH:
            with pytest.raises(AuthenticationFailed) as caught:
                await client.send(batch([cmd]))
            assert caught.value.code == code
            assert caught.value.pending == (cmd,)
            return
        [result] = await client.send(batch([cmd]))
    if expected is ErrorClass.RETRYABLE:
        assert result.status is OutcomeStatus.APPLIED
        assert result.attempts == 2
        assert len(api.requests) == 2
        assert retries == [(cmd.endpoint, UnavailableReason.RETRYABLE_CODE)]
        return
    assert len(api.requests) == 1
    assert (result.status, result.error_class, result.error_code) == (
        FINAL_STATUS[expected],
        expected,
        code,
    )
    assert result.error_message == f"message {code}"


@pytest.mark.parametrize("code", [8903, 2305])
@pytest.mark.parametrize(
    "action", [Action.REVOKE_EARN, Action.REVOKE_ENROL, Action.REVOKE_DIRECT_EARN]
)
def test_already_revoked_codes_are_already_applied_for_every_revoke(
    code: int, action: Action
) -> None:
    """8903 and 2305 answering any revoke mean it is already applied (safe on replay)."""
    assert classify_code(code, action).error_class is ErrorClass.ALREADY_APPLIED


@pytest.mark.parametrize("code", [8903, 2305])
def test_already_revoked_codes_are_rejections_outside_revokes(code: int) -> None:
    """The same codes answering an enrol or earn are plain rejections, not success."""
    assert classify_code(code, Action.ENROL).error_class is ErrorClass.REJECTED
    assert classify_code(code, Action.EARN).error_class is ErrorClass.REJECTED


def _unenroll_error(code: int) -> Any:
    return lambda _r: httpx.Response(
        400, json={"data": None, "errors": [{"code": code, "message": "m"}], "warnings": None}
    )


async def test_configured_not_enrolled_code_makes_unenroll_already_applied() -> None:
    """With 310120 configured as "not enrolled", an unEnroll answering it is already applied."""
    cfg = config(unenroll_not_enrolled_codes=frozenset({310120}))
    client, _, _ = make_client(_unenroll_error(310120), cfg=cfg)
    async with client:
        [result] = await client.send(batch([command(0, action=Action.UNENROLL)]))
    assert (result.status, result.error_class, result.error_code) == (
        OutcomeStatus.ALREADY_APPLIED,
        ErrorClass.ALREADY_APPLIED,
        310120,
    )


async def test_unconfigured_not_enrolled_code_is_an_unknown_rejection() -> None:
    """By default no code is assumed to mean "not enrolled": 310120 is unknown, so rejected."""
    unknown: list[tuple[Any, ...]] = []
    hooks = ClientHooks(on_unknown_code=lambda *args: unknown.append(args))
    client, _, _ = make_client(_unenroll_error(310120), hooks=hooks)
    cmd = command(0, action=Action.UNENROLL)
    async with client:
        [result] = await client.send(batch([cmd]))
    assert (result.status, result.error_class) == (OutcomeStatus.REJECTED, ErrorClass.REJECTED)
    assert unknown == [(cmd.endpoint, 310120)]


async def test_already_enrolled_code_on_unenroll_is_a_rejection() -> None:
    """310119 ("user already enrolled") never passes for a successful un-enrol."""
    client, _, _ = make_client(_unenroll_error(310119))
    async with client:
        [result] = await client.send(batch([command(0, action=Action.UNENROLL)]))
    assert (result.status, result.error_class, result.error_code) == (
        OutcomeStatus.REJECTED,
        ErrorClass.REJECTED,
        310119,
    )


async def test_unknown_code_is_rejected_and_reported() -> None:
    """A code missing from the table is rejected (never retried) and fires on_unknown_code."""
    unknown: list[tuple[Any, ...]] = []
    hooks = ClientHooks(on_unknown_code=lambda *args: unknown.append(args))
    client, api, _ = make_client(lambda _r: httpx.Response(200, json=bulk(err(77777))), hooks=hooks)
    cmd = command(0)
    async with client:
        [result] = await client.send(batch([cmd]))
    assert (result.status, result.error_class, result.error_code) == (
        OutcomeStatus.REJECTED,
        ErrorClass.REJECTED,
        77777,
    )
    assert len(api.requests) == 1
    assert unknown == [(cmd.endpoint, 77777)]


# 504 is retryable too, but for an ENROL or EARN it may follow an applied call: see
# test_capillary_unsure.py. A revoke is resent whatever the status.
@pytest.mark.parametrize(
    ("status", "action"),
    [
        *((status, Action.ENROL) for status in (408, 409, 423, 425, 429, 461, 500, 502, 503, 521)),
        (504, Action.REVOKE_EARN),
    ],
)
async def test_retryable_http_statuses_are_retried(status: int, action: Action) -> None:
    """Each retryable status is resent; the next success settles the command."""
    answers = [httpx.Response(status, text="busy"), httpx.Response(200, json=bulk(ok(423927000)))]
    client, api, _ = make_client(lambda _r: answers.pop(0))
    async with client:
        [result] = await client.send(batch([command(0, action=action)]))
    assert result.status is OutcomeStatus.APPLIED
    assert result.attempts == 2
    assert len(api.requests) == 2


@pytest.mark.parametrize("status", [401, 403, 498])
async def test_auth_http_statuses_stop_with_authentication_failed(status: int) -> None:
    """A refused Basic credential raises AuthenticationFailed at once (nothing to refresh)."""
    client, api, _ = make_client(lambda _r: httpx.Response(status, text="no"))
    async with client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.send(batch([command(0), command(1)]))
    assert caught.value.http_status == status
    assert len(caught.value.pending) == 2
    assert len(api.requests) == 1


async def test_access_group_refusal_is_authentication() -> None:
    """HTTP 403 with errorCode 4000 (access group) is an authentication failure."""
    body = {"errorCode": 4000, "message": "Not authorized. Access is denied!"}
    client, _, _ = make_client(lambda _r: httpx.Response(403, json=body))
    async with client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.send(batch([command(0)]))
    assert caught.value.code == 4000


async def test_authorization_unavailable_503_is_retried_then_unavailable() -> None:
    """HTTP 503 with errorCode 4001 is retried up to max_attempts, then ApiUnavailable."""
    body = {"errorCode": 4001, "message": "Authorization status unavailable!"}
    client, api, _ = make_client(
        lambda _r: httpx.Response(503, json=body), cfg=config(max_attempts=3)
    )
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(batch([command(0)]))
    assert len(api.requests) == 3
    assert caught.value.reason is UnavailableReason.SERVER_ERROR
    assert caught.value.completed == ()


@pytest.mark.parametrize("status", [301, 404, 405, 415])
async def test_wrong_endpoint_statuses_are_config_rejections(status: int) -> None:
    """Redirects, 404, 405, 415 without a code reject every customer with class config."""
    client, api, _ = make_client(lambda _r: httpx.Response(status, text="<html>nope</html>"))
    async with client:
        results = await client.send(batch([command(0), command(1)]))
    assert [(r.status, r.error_class, r.error_code) for r in results] == [
        (OutcomeStatus.REJECTED, ErrorClass.CONFIG, status)
    ] * 2
    assert results[0].extra["http_status"] == str(status)
    assert len(api.requests) == 1


async def test_bad_request_with_a_coded_body_uses_the_code() -> None:
    """HTTP 400 carrying a request-level code (8881) is read by the code, for everyone."""
    client, _, _ = make_client(lambda _r: httpx.Response(400, json=bulk(err(8881))))
    async with client:
        results = await client.send(batch([command(0), command(1)]))
    assert [(r.error_class, r.error_code) for r in results] == [(ErrorClass.CONFIG, 8881)] * 2
    assert results[0].extra["http_status"] == "400"


async def test_bad_request_without_code_splits_to_find_the_culprit() -> None:
    """HTTP 400 without a code splits the batch; the single culprit is rejected, others pass."""

    def handler(request: httpx.Request) -> httpx.Response:
        values = [
            c["identifierValue"]
            for c in httpx.Response(200, content=request.content).json()["customers"]
        ]
        if "423927001" in values:
            return httpx.Response(400, text="bad request")
        return httpx.Response(200, json=bulk(*(ok(v) for v in values)))

    client, api, _ = make_client(handler)
    async with client:
        results = await client.send(batch([command(n) for n in range(4)]))
    assert [r.status for r in results] == [
        OutcomeStatus.APPLIED,
        OutcomeStatus.REJECTED,
        OutcomeStatus.APPLIED,
        OutcomeStatus.APPLIED,
    ]
    assert results[1].error_code == 400
    assert api.customers()[0] == [str(423_927_000 + n) for n in range(4)]


async def test_a_5xx_whose_body_answers_every_customer_with_a_final_code_is_not_retried() -> None:
    """1101 ("invalid program") at HTTP 500: config rejections at once, one request."""
    client, api, _ = make_client(
        lambda _r: httpx.Response(500, json=bulk(err(1101, "invalid program")))
    )
    async with client:
        results = await client.send(batch([command(0), command(1)]))
    assert [(r.status, r.error_class, r.error_code) for r in results] == [
        (OutcomeStatus.REJECTED, ErrorClass.CONFIG, 1101)
    ] * 2
    assert len(api.requests) == 1


async def test_a_5xx_whose_body_lacks_codes_stays_retryable() -> None:
    """A 5xx body that answers without a code for every customer is retried as before."""
    answers = [
        httpx.Response(500, json=bulk(ok(423927000))),
        httpx.Response(200, json=bulk(ok(423927000))),
    ]
    client, api, _ = make_client(lambda _r: answers.pop(0))
    async with client:
        [result] = await client.send(batch([command(0)]))
    assert result.status is OutcomeStatus.APPLIED
    assert len(api.requests) == 2


@pytest.mark.parametrize("status", [200, 401])
async def test_unenroll_reads_a_top_level_token_error(status: int) -> None:
    """unEnroll answered {"code": 498, ...} (any status) is refused credentials, not malformed."""
    body = {"code": 498, "message": "Token expired at 10:00"}
    client, api, _ = make_client(lambda _r: httpx.Response(status, json=body))
    async with client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.send(batch([command(0, action=Action.UNENROLL)]))
    assert caught.value.code == 498
    assert len(api.requests) == 1


async def test_a_gateway_code_echoing_the_status_is_not_read_as_a_capillary_code() -> None:
    """{"code": 404, "message": "Not Found"}: still a config rejection by status, not unknown."""
    unknown: list[Any] = []
    client, _, _ = make_client(
        lambda _r: httpx.Response(404, json={"code": 404, "message": "Not Found"}),
        hooks=ClientHooks(on_unknown_code=lambda *a: unknown.append(a)),
    )
    async with client:
        [result] = await client.send(batch([command(0)]))
    assert (result.status, result.error_class, result.error_code) == (
        OutcomeStatus.REJECTED,
        ErrorClass.CONFIG,
        404,
    )
    assert unknown == []


async def test_a_known_top_level_code_at_http_200_is_read() -> None:
    """{"code": 1101, ...} at HTTP 200 answers every customer like an errors[] entry would."""
    client, api, _ = make_client(
        lambda _r: httpx.Response(200, json={"code": 1101, "message": "invalid programId"})
    )
    async with client:
        results = await client.send(batch([command(0), command(1)]))
    assert [(r.error_class, r.error_code) for r in results] == [(ErrorClass.CONFIG, 1101)] * 2
    assert len(api.requests) == 1
