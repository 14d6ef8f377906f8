"""Retries: full-jitter backoff, Retry-After honoured, attempts bounded, partial retries."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from capillary_fakes import (
    VirtualClock,
    applied_for,
    batch,
    bulk,
    command,
    config,
    err,
    make_client,
    ok,
)

from promo_bridge.capillary import ApiUnavailable, ClientHooks, UnavailableReason
from promo_bridge.capillary._retry import Backoff, parse_retry_after, retry_after_of
from promo_bridge.domain.commands import Action, Endpoint
from promo_bridge.domain.outcomes import OutcomeStatus

NOW = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
ENROL = Endpoint.ENROL_AND_EARN


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    """The wait is rng * min(cap, base * 2**(n-1)): from 0 up to the capped exponential."""
    backoff = Backoff(base_s=0.5, cap_s=8.0)
    assert backoff.delay(1, lambda: 0.0) == 0.0
    assert [backoff.delay(n, lambda: 0.5) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff.delay(200, lambda: 0.999) == pytest.approx(8.0 * 0.999)


def test_backoff_never_waits_less_than_retry_after() -> None:
    """Retry-After is a floor under the jittered wait."""
    backoff = Backoff(base_s=0.5, cap_s=8.0)
    assert backoff.delay(1, lambda: 0.0, retry_after=7.0) == 7.0
    assert backoff.delay(5, lambda: 0.999, retry_after=1.0) == pytest.approx(7.992)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("1.5", 1.5),
        ("0", 0.0),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        ("Sat, 21 Nov 2026 09:59:00 GMT", 0.0),
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    """Delta-seconds and HTTP dates are read; past dates mean now; garbage is ignored."""
    assert parse_retry_after(value, now=NOW) == expected


def test_retry_after_date_is_measured_from_the_response_date() -> None:
    """An HTTP-date Retry-After counts from the response's Date header, not our clock."""
    headers = httpx.Headers(
        {
            "Retry-After": format_datetime(NOW + timedelta(seconds=45), usegmt=True),
            "Date": format_datetime(NOW, usegmt=True),
        }
    )
    far_future = NOW + timedelta(days=1)
    assert retry_after_of(headers, wall_clock=lambda: far_future) == 45.0


def _sequence(*responses: httpx.Response) -> Any:
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        if queue:
            return queue.pop(0)
        return httpx.Response(200, json=applied_for(request))

    return handler


async def test_retry_waits_at_least_retry_after_seconds() -> None:
    """429 with Retry-After: 7 is resent no sooner than 7 s later, even with zero jitter."""
    client, api, clock = make_client(
        _sequence(httpx.Response(429, headers={"Retry-After": "7"})), rng=lambda: 0.0
    )
    async with client:
        [result] = await client.send(batch([command(0)]))
    assert result.status is OutcomeStatus.APPLIED
    assert api.times[1] - api.times[0] >= 7.0
    assert clock.sleeps == [7.0]


async def test_retry_waits_until_an_http_date_retry_after() -> None:
    """A 503 with an HTTP-date Retry-After 30 s after its Date header waits 30 s."""
    headers = {
        "Retry-After": format_datetime(NOW + timedelta(seconds=30), usegmt=True),
        "Date": format_datetime(NOW, usegmt=True),
    }
    client, api, _ = make_client(_sequence(httpx.Response(503, headers=headers)), rng=lambda: 0.0)
    async with client:
        await client.send(batch([command(0)]))
    assert api.times[1] - api.times[0] >= 30.0


async def test_retry_after_holds_the_whole_endpoint() -> None:
    """A 429's Retry-After also delays another batch for that endpoint, not only the retry."""
    clock = VirtualClock(start=0.0)
    throttled = asyncio.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        if not throttled.is_set():
            throttled.set()
            return httpx.Response(429, headers={"Retry-After": "10"})
        return httpx.Response(200, json=applied_for(request))

    client, api, _ = make_client(handler, clock=clock, rng=lambda: 0.0)

    async def scenario() -> None:
        first = asyncio.ensure_future(client.send(batch([command(0)], batch_id="a")))
        await throttled.wait()
        await asyncio.sleep(0)
        await client.send(batch([command(1)], batch_id="b"))
        await first

    async with client:
        await clock.run(scenario())
    assert api.times[0] == 0.0
    assert len(api.times) == 3
    assert min(api.times[1:]) >= 10.0


async def test_backoff_grows_between_attempts() -> None:
    """Consecutive 500s are resent after growing waits (0.5, 1, 2, 4 s at rng 1)."""
    client, _, clock = make_client(
        _sequence(*[httpx.Response(500)] * 4), cfg=config(max_attempts=5), rng=lambda: 1.0
    )
    async with client:
        [result] = await client.send(batch([command(0)]))
    assert result.attempts == 5
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]


async def test_attempts_are_bounded_then_api_unavailable() -> None:
    """A call failing every time is tried max_attempts times, then reported unavailable."""
    retries: list[tuple[Any, ...]] = []
    client, api, _ = make_client(
        lambda _r: httpx.Response(502),
        cfg=config(max_attempts=4),
        hooks=ClientHooks(on_retry=lambda *args: retries.append(args)),
    )
    cmds = [command(0), command(1)]
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(batch(cmds))
    assert len(api.requests) == 4
    assert caught.value.pending == tuple(cmds)
    assert caught.value.completed == ()
    assert caught.value.attempts == {"cmd-0": 4, "cmd-1": 4}
    assert caught.value.reason is UnavailableReason.SERVER_ERROR
    assert retries == [(ENROL, UnavailableReason.SERVER_ERROR)] * 3


async def test_retry_after_longer_than_the_allowed_wait_reports_at_once() -> None:
    """Retry-After beyond max_retry_wait_s ends the send after one request, with the hint."""
    client, api, clock = make_client(
        _sequence(httpx.Response(429, headers={"Retry-After": "600"})),
        cfg=config(max_retry_wait_s=60),
    )
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(batch([command(0)]))
    assert len(api.requests) == 1
    assert clock.sleeps == []
    assert caught.value.retry_after == 600.0
    assert caught.value.reason is UnavailableReason.THROTTLED


async def test_only_customers_answering_a_retryable_code_are_resent() -> None:
    """8896 for the middle customer resends just that customer; the others settle once."""
    answers = [bulk(ok(423927000), err(8896), ok(423927002)), bulk(ok(423927001))]
    client, api, _ = make_client(lambda _r: httpx.Response(200, json=answers.pop(0)))
    async with client:
        results = await client.send(batch([command(n) for n in range(3)]))
    assert [r.status for r in results] == [OutcomeStatus.APPLIED] * 3
    assert [r.attempts for r in results] == [1, 2, 1]
    assert api.customers() == [["423927000", "423927001", "423927002"], ["423927001"]]


async def test_partly_unavailable_batch_delivers_its_successes() -> None:
    """8896 persisting for one customer: the others are completed, that one stays pending."""
    client, _, _ = make_client(
        lambda r: httpx.Response(
            200,
            json=bulk(
                *(
                    err(8896) if c["identifierValue"] == "423927001" else ok(c["identifierValue"])
                    for c in json.loads(r.content)["customers"]
                )
            ),
        ),
        cfg=config(max_attempts=3),
    )
    cmds = [command(n) for n in range(3)]
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(batch(cmds))
    assert [r.command_id for r in caught.value.completed] == ["cmd-0", "cmd-2"]
    assert all(r.status is OutcomeStatus.APPLIED for r in caught.value.completed)
    assert caught.value.pending == (cmds[1],)
    assert caught.value.reason is UnavailableReason.RETRYABLE_CODE
    assert caught.value.attempts == {"cmd-1": 3}


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (httpx.ConnectError("refused"), UnavailableReason.CONNECT_ERROR),
        (httpx.ConnectTimeout("slow"), UnavailableReason.CONNECT_ERROR),
        (httpx.PoolTimeout("pool"), UnavailableReason.CONNECT_ERROR),
        (httpx.ProxyError("proxy refused"), UnavailableReason.CONNECT_ERROR),
        (httpx.UnsupportedProtocol("ftp"), UnavailableReason.CONNECT_ERROR),
        (httpx.LocalProtocolError("bad header"), UnavailableReason.CONNECT_ERROR),
        (httpx.ReadTimeout("slow"), UnavailableReason.TIMEOUT),
        (httpx.WriteTimeout("slow"), UnavailableReason.TIMEOUT),
        (httpx.ReadError("reset"), UnavailableReason.NETWORK_ERROR),
        (httpx.RemoteProtocolError("closed"), UnavailableReason.NETWORK_ERROR),
    ],
)
async def test_transport_errors_are_retried_with_their_reason(
    error: httpx.RequestError, reason: UnavailableReason
) -> None:
    """Without verification, each httpx failure gets its reason, is retried, never escapes."""
    failures = [error]
    requests: list[tuple[Any, ...]] = []
    retries: list[tuple[Any, ...]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop()
        return httpx.Response(200, json=applied_for(request), headers={"X-Cap-Requestid": "r2"})

    hooks = ClientHooks(
        on_retry=lambda *args: retries.append(args),
        on_request=lambda *args: requests.append(args),
    )
    client, _, _ = make_client(handler, hooks=hooks, cfg=config(verify_unsure_actions=frozenset()))
    async with client:
        [result] = await client.send(batch([command(0)]))
    assert result.status is OutcomeStatus.APPLIED
    assert retries == [(ENROL, reason)]
    assert requests[0][1] is None  # no HTTP status: no response came
    assert requests[1][1] == 200
    assert requests[1][3] == "r2"


async def test_network_failures_past_attempts_are_unavailable_not_failed() -> None:
    """Connection errors on every attempt end in ApiUnavailable: no failure outcome."""

    def handler(_request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    client, _, _ = make_client(handler, cfg=config(max_attempts=2))
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(batch([command(0)]))
    assert caught.value.reason is UnavailableReason.CONNECT_ERROR
    assert caught.value.__cause__ is None
    assert "refused" not in str(caught.value)


async def test_malformed_success_body_is_retried_never_failed() -> None:
    """A 200 whose body is no answer (an HTML page) to a revoke: retried, then unavailable."""
    # ENROL and EARN are not resent after a 2xx: see test_capillary_unsure.py.
    client, api, _ = make_client(
        lambda _r: httpx.Response(200, text="<html>gateway</html>"), cfg=config(max_attempts=3)
    )
    revokes = [command(n, action=Action.REVOKE_EARN) for n in range(2)]
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(batch(revokes))
    assert caught.value.reason is UnavailableReason.MALFORMED_RESPONSE
    assert len(caught.value.pending) == 2
    assert len(api.requests) == 3
