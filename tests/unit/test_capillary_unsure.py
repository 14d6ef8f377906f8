"""Lost answers: a call that may have been applied is not resent for the verified actions."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from capillary_fakes import (
    applied_for,
    batch,
    bulk,
    command,
    config,
    err,
    make_client,
    oauth_config,
)

from promo_bridge.capillary import (
    ApiUnavailable,
    AuthenticationFailed,
    ClientConfig,
    ClientHooks,
    UnavailableReason,
)
from promo_bridge.capillary._client import _Run
from promo_bridge.capillary._wire import CallContext, Settled, Unavailable, interpret
from promo_bridge.domain.commands import Action, Endpoint, IdentifierName
from promo_bridge.domain.outcomes import OutcomeStatus

TOKEN_PATH = "/v3/oauth/token/generate"

NEVER_SENT = [
    httpx.ConnectError("refused"),
    httpx.ConnectTimeout("slow"),
    httpx.PoolTimeout("pool"),
    httpx.ProxyError("proxy refused"),
    httpx.UnsupportedProtocol("ftp"),
    httpx.LocalProtocolError("bad header"),
]


def _failing_once(error: Exception) -> Any:
    failures = [error]

    def handler(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop()
        return httpx.Response(200, json=applied_for(request))

    return handler


def _values(request: httpx.Request) -> list[str]:
    return [c["identifierValue"] for c in json.loads(request.content)["customers"]]


def test_default_verified_actions_are_enrol_and_earn() -> None:
    """ENROL and EARN are verified by default; revokes and unEnroll are resent as before."""
    assert config().verify_unsure_actions == frozenset({Action.ENROL, Action.EARN})
    assert ClientConfig.model_validate(
        {**config().model_dump(), "verify_unsure_actions": ["earn"]}
    ).verify_unsure_actions == frozenset({Action.EARN})


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (httpx.ReadTimeout("slow"), UnavailableReason.TIMEOUT),
        (httpx.WriteTimeout("slow"), UnavailableReason.TIMEOUT),
        (httpx.ReadError("reset"), UnavailableReason.NETWORK_ERROR),
        (httpx.WriteError("broken pipe"), UnavailableReason.NETWORK_ERROR),
        (httpx.RemoteProtocolError("disconnected"), UnavailableReason.NETWORK_ERROR),
    ],
)
@pytest.mark.parametrize("action", [Action.ENROL, Action.EARN])
async def test_a_lost_answer_leaves_the_command_pending_unsure_and_unsent(
    error: httpx.RequestError, reason: UnavailableReason, action: Action
) -> None:
    """A timeout or a broken connection after sending: one request, pending and unsure."""
    retries: list[tuple[Any, ...]] = []
    client, api, clock = make_client(
        _failing_once(error), hooks=ClientHooks(on_retry=lambda *a: retries.append(a))
    )
    cmds = [command(0, action=action), command(1, action=action)]
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(batch(cmds))
    assert len(api.requests) == 1
    assert caught.value.pending == tuple(cmds)
    assert caught.value.unsure == frozenset({"cmd-0", "cmd-1"})
    assert caught.value.reason is reason
    assert caught.value.retry_after is None
    assert caught.value.attempts == {"cmd-0": 1, "cmd-1": 1}
    assert caught.value.completed == ()
    assert retries == []
    assert clock.sleeps == []
    assert "unsure" in str(caught.value)


@pytest.mark.parametrize("error", NEVER_SENT, ids=lambda e: type(e).__name__)
async def test_a_request_that_never_left_is_resent_even_for_verified_actions(
    error: httpx.RequestError,
) -> None:
    """Connect errors, connect and pool timeouts cannot have applied anything: resent."""
    client, api, _ = make_client(_failing_once(error))
    async with client:
        [result] = await client.send(batch([command(0, action=Action.EARN)]))
    assert result.status is OutcomeStatus.APPLIED
    assert len(api.requests) == 2


@pytest.mark.parametrize("action", [Action.REVOKE_EARN, Action.REVOKE_ENROL, Action.UNENROLL])
async def test_actions_outside_the_verified_set_are_resent_after_a_lost_answer(
    action: Action,
) -> None:
    """A revoke or unEnroll whose answer was lost is resent, as before (idempotent enough)."""

    def answer(request: httpx.Request) -> httpx.Response:
        if action is Action.UNENROLL:
            return httpx.Response(200, json={"data": 423927000, "errors": [], "warnings": []})
        return httpx.Response(200, json=applied_for(request))

    failures = [httpx.ReadTimeout("slow")]

    def handler(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop()
        return answer(request)

    client, api, _ = make_client(handler)
    async with client:
        [result] = await client.send(batch([command(0, action=action)]))
    assert result.status is OutcomeStatus.APPLIED
    assert len(api.requests) == 2


async def test_an_empty_verified_set_resends_as_before() -> None:
    """verify_unsure_actions empty: an EARN whose answer was lost is resent."""
    client, api, _ = make_client(
        _failing_once(httpx.ReadTimeout("slow")), cfg=config(verify_unsure_actions=frozenset())
    )
    async with client:
        [result] = await client.send(batch([command(0, action=Action.EARN)]))
    assert result.status is OutcomeStatus.APPLIED
    assert len(api.requests) == 2


async def test_a_token_request_timeout_is_not_a_lost_answer() -> None:
    """The token request timing out sent no EARN: the EARN goes out afterwards, once."""
    token_failures = [httpx.ReadTimeout("slow")]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == TOKEN_PATH:
            if token_failures:
                raise token_failures.pop()
            return httpx.Response(200, json={"data": {"accessToken": "t", "ttlSeconds": 300}})
        return httpx.Response(200, json=applied_for(request))

    client, api, _ = make_client(handler, cfg=oauth_config())
    async with client:
        [result] = await client.send(batch([command(0, action=Action.EARN)]))
    assert result.status is OutcomeStatus.APPLIED
    assert [r.url.path for r in api.requests].count("/v2/promotion/bulk/enrolAndEarn") == 1


async def test_only_the_call_whose_answer_was_lost_is_unsure() -> None:
    """Four EARNs in two calls: the call that timed out is unsure, the other settles."""

    def handler(request: httpx.Request) -> httpx.Response:
        if "423927002" in _values(request):
            raise httpx.ReadTimeout("slow")
        return httpx.Response(200, json=applied_for(request))

    cmds = [command(n, action=Action.EARN) for n in range(4)]
    client, _, _ = make_client(handler, cfg=config(batch_limits={Endpoint.ENROL_AND_EARN: 2}))
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(batch(cmds))
    assert [r.command_id for r in caught.value.completed] == ["cmd-0", "cmd-1"]
    assert caught.value.pending == (cmds[2], cmds[3])
    assert caught.value.unsure == frozenset({"cmd-2", "cmd-3"})


async def test_a_later_wave_held_behind_a_lost_answer_is_pending_but_not_unsure() -> None:
    """The customer's second command waits for the first; it was never sent, so not unsure."""
    first = command(0, action=Action.EARN, value="423927000", command_id="first")
    second = command(1, action=Action.EARN, value="423927000", command_id="second")
    client, api, _ = make_client(_failing_once(httpx.ReadTimeout("slow")))
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(batch([first, second]))
    assert len(api.requests) == 1
    assert caught.value.pending == (first, second)
    assert caught.value.unsure == frozenset({"first"})


async def test_a_resend_after_a_retryable_code_whose_answer_is_lost_is_unsure() -> None:
    """8896, then the resend times out: its last request may have applied it."""
    answers: list[Any] = [bulk(err(8896)), httpx.ReadTimeout("slow")]

    def handler(_request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(200, json=answer)

    client, api, _ = make_client(handler)
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(batch([command(0, action=Action.EARN)]))
    assert len(api.requests) == 2
    assert caught.value.unsure == frozenset({"cmd-0"})
    assert caught.value.attempts == {"cmd-0": 2}


async def test_unsure_commands_are_reported_with_an_authentication_failure() -> None:
    """One call's answer lost, another's credentials refused: the refusal carries the unsure."""

    def handler(request: httpx.Request) -> httpx.Response:
        if "423927000" in _values(request):
            raise httpx.ReadTimeout("slow")
        return httpx.Response(401, json={"code": 401, "message": "Unauthorized"})

    cmds = [command(n, action=Action.EARN) for n in range(2)]
    client, _, _ = make_client(handler, cfg=config(batch_limits={Endpoint.ENROL_AND_EARN: 1}))
    async with client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.send(batch(cmds))
    assert caught.value.pending == tuple(cmds)
    assert caught.value.unsure == frozenset({"cmd-0"})


def test_an_answer_clears_an_earlier_doubt() -> None:
    """A command marked unsure and then settled is neither pending nor unsure."""
    cmds = [command(0, action=Action.EARN), command(1, action=Action.EARN)]
    run = _Run(batch(cmds))
    run.park_unsure([0, 1], UnavailableReason.TIMEOUT)
    run.settle(0, Settled(OutcomeStatus.APPLIED, earned_id="e0"), "rq")
    with pytest.raises(ApiUnavailable) as caught:
        run.conclude()
    assert caught.value.unsure == frozenset({"cmd-1"})
    assert [r.command_id for r in caught.value.completed] == ["cmd-0"]
    run.settle(1, Settled(OutcomeStatus.APPLIED, earned_id="e1"), "rq")
    assert [r.earned_id for r in run.conclude()] == ["e0", "e1"]


# --------------------------------------------------------------------------- maybe applied

Answer = Callable[[], httpx.Response]

# (answer, reason): a 504, and 2xx bodies that cannot be read, accepted status or not.
MAYBE_APPLIED_ANSWERS: list[tuple[Answer, UnavailableReason]] = [
    (
        lambda: httpx.Response(504, json={"code": 504, "message": "Gateway Timeout"}),
        UnavailableReason.SERVER_ERROR,
    ),
    (
        lambda: httpx.Response(504, text="<html>upstream timed out</html>"),
        UnavailableReason.SERVER_ERROR,
    ),
    (
        lambda: httpx.Response(200, text="<html>gateway</html>"),
        UnavailableReason.MALFORMED_RESPONSE,
    ),
    (
        lambda: httpx.Response(200, text='{"response": [{"res'),
        UnavailableReason.MALFORMED_RESPONSE,
    ),
    (lambda: httpx.Response(201, content=b""), UnavailableReason.MALFORMED_RESPONSE),
    (lambda: httpx.Response(204), UnavailableReason.MALFORMED_RESPONSE),
]
MAYBE_APPLIED_IDS = ["504-json", "504-html", "200-html", "200-truncated", "201-empty", "204"]


def _answering_once(answer: Answer) -> Any:
    answers = [answer()]

    def handler(request: httpx.Request) -> httpx.Response:
        if answers:
            return answers.pop()
        return httpx.Response(200, json=applied_for(request))

    return handler


@pytest.mark.parametrize(("answer", "reason"), MAYBE_APPLIED_ANSWERS, ids=MAYBE_APPLIED_IDS)
@pytest.mark.parametrize("action", [Action.ENROL, Action.EARN])
async def test_a_504_or_an_unreadable_2xx_leaves_a_verified_command_unsure_and_unsent(
    answer: Answer, reason: UnavailableReason, action: Action
) -> None:
    """HTTP 504, or a 2xx whose body cannot be read: one request, pending and unsure."""
    retries: list[tuple[Any, ...]] = []
    client, api, clock = make_client(
        _answering_once(answer), hooks=ClientHooks(on_retry=lambda *a: retries.append(a))
    )
    cmds = [command(0, action=action), command(1, action=action)]
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(batch(cmds))
    assert len(api.requests) == 1
    assert caught.value.pending == tuple(cmds)
    assert caught.value.unsure == frozenset({"cmd-0", "cmd-1"})
    assert caught.value.reason is reason
    assert retries == []
    assert clock.sleeps == []


@pytest.mark.parametrize(("answer", "_reason"), MAYBE_APPLIED_ANSWERS, ids=MAYBE_APPLIED_IDS)
async def test_a_504_or_an_unreadable_2xx_is_resent_for_other_actions(
    answer: Answer, _reason: UnavailableReason
) -> None:
    """A revoke answered a 504 or an unreadable 2xx is resent, as before."""
    client, api, _ = make_client(_answering_once(answer))
    async with client:
        [result] = await client.send(batch([command(0, action=Action.REVOKE_EARN)]))
    assert result.status is OutcomeStatus.APPLIED
    assert len(api.requests) == 2


@pytest.mark.parametrize(
    "answer",
    [
        lambda: httpx.Response(500, json={"code": 500, "message": "Internal Server Error"}),
        lambda: httpx.Response(502, text="<html>bad gateway</html>"),
        lambda: httpx.Response(503, json={"errorCode": 4001, "message": "Authorization"}),
        lambda: httpx.Response(429, json={"code": 429, "message": "Too Many Requests"}),
    ],
    ids=["500", "502", "503", "429"],
)
async def test_statuses_saying_the_call_failed_are_resent_for_verified_actions(
    answer: Answer,
) -> None:
    """500, 502, 503 and 429 on an EARN: Capillary failed or refused the call, so it is resent."""
    client, api, _ = make_client(_answering_once(answer))
    async with client:
        [result] = await client.send(batch([command(0, action=Action.EARN)]))
    assert result.status is OutcomeStatus.APPLIED
    assert len(api.requests) == 2


async def test_a_504_whose_body_answers_every_customer_is_an_answer() -> None:
    """A 504 carrying a final code for the call (8892 inactive) settles it: nothing is unsure."""
    answer = bulk(err(8892, "promotion is inactive"))
    client, api, _ = make_client(_answering_once(lambda: httpx.Response(504, json=answer)))
    async with client:
        results = await client.send(batch([command(n, action=Action.EARN) for n in range(2)]))
    assert [(r.status, r.error_code) for r in results] == [(OutcomeStatus.REJECTED, 8892)] * 2
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    ("status", "content", "maybe_applied"),
    [
        (504, b"", True),
        (200, b"<html/>", True),
        (204, b"", True),
        (500, b"", False),
        (502, b"", False),
        (503, b"", False),
        (429, b"", False),
        (408, b"", False),
    ],
)
def test_interpret_marks_only_a_504_and_an_unreadable_2xx_as_maybe_applied(
    status: int, content: bytes, maybe_applied: bool
) -> None:
    """The wire says which unavailable answers may follow an applied call."""
    context = CallContext(
        endpoint=Endpoint.ENROL_AND_EARN,
        action=Action.EARN,
        identifier_name=IdentifierName.ID,
        commands=[command(0, action=Action.EARN)],
        accepted_statuses=frozenset({200, 201}),
        not_enrolled_codes=frozenset(),
    )
    outcome = interpret(context, status, content, None)
    assert isinstance(outcome, Unavailable)
    assert outcome.maybe_applied is maybe_applied
