"""Authentication: Basic header, OAuth tokens (single-flight refresh), and secrets kept secret."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

import httpx
import pytest
import structlog
from capillary_fakes import (
    OAUTH_SECRET,
    PASSWORD,
    applied_for,
    batch,
    command,
    config,
    make_client,
    oauth_config,
)

from promo_bridge.capillary import (
    ApiUnavailable,
    AuthenticationFailed,
    ClientConfig,
    ClientHooks,
    OAuthAuth,
)
from promo_bridge.domain.outcomes import OutcomeStatus

TOKEN_PATH = "/v3/oauth/token/generate"


class FakeOAuthApi:
    """Issues numbered tokens; only the latest is accepted, older ones answer 498."""

    def __init__(self, ttl: float | None = 300) -> None:
        self.ttl = ttl
        self.token_requests: list[httpx.Request] = []
        self.valid: set[str] = set()
        self.token_answers: list[httpx.Response] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        # Yield a few times so that concurrent callers really overlap.
        for _ in range(3):
            await asyncio.sleep(0)
        if request.url.path == TOKEN_PATH:
            self.token_requests.append(request)
            if self.token_answers:
                return self.token_answers.pop(0)
            token = f"jwt-{len(self.token_requests)}"
            self.valid = {token}
            data: dict[str, Any] = {"accessToken": token}
            if self.ttl is not None:
                data["ttlSeconds"] = self.ttl
            return httpx.Response(200, json={"data": data, "errors": None})
        if request.headers.get("X-CAP-API-OAUTH-TOKEN") not in self.valid:
            return httpx.Response(
                401, json={"errors": [{"code": 498, "message": "Token expired at 10:00"}]}
            )
        return httpx.Response(200, json=applied_for(request), headers={"X-Cap-Requestid": "rq"})


def _oauth_client(
    api: FakeOAuthApi, cfg: ClientConfig | None = None, **kwargs: Any
) -> tuple[Any, Any, Any]:
    return make_client(api, cfg=cfg or oauth_config(max_in_flight=8), **kwargs)


async def test_token_request_and_header() -> None:
    """The token comes from POST /v3/oauth/token/generate {key, secret} and rides every call."""
    fake = FakeOAuthApi()
    client, api, _ = _oauth_client(fake)
    async with client:
        [result] = await client.send(batch([command(0)]))
    assert result.status is OutcomeStatus.APPLIED
    token_request, call = api.requests
    assert token_request.url.path == TOKEN_PATH
    assert json.loads(token_request.content) == {"key": "client-key", "secret": OAUTH_SECRET}
    assert "authorization" not in token_request.headers
    assert "x-cap-api-oauth-token" not in token_request.headers
    assert call.headers["X-CAP-API-OAUTH-TOKEN"] == "jwt-1"
    assert "authorization" not in call.headers


async def test_token_refreshed_before_ttl_minus_margin() -> None:
    """A 300 s token with a 30 s margin is reused at 269 s and replaced from 270 s on."""
    fake = FakeOAuthApi(ttl=300)
    client, _, clock = _oauth_client(fake, oauth_config(token_refresh_margin_s=30))
    async with client:
        start = clock.now
        await client.send(batch([command(0)]))
        clock.now = start + 269
        await client.send(batch([command(1)]))
        assert len(fake.token_requests) == 1
        clock.now = start + 270
        await client.send(batch([command(2)]))
    assert len(fake.token_requests) == 2


async def test_fifty_concurrent_calls_with_expired_token_make_one_token_request() -> None:
    """50 calls finding the token expired (by its ttl) share exactly one refresh."""
    fake = FakeOAuthApi(ttl=300)
    client, api, clock = _oauth_client(fake)
    async with client:
        await client.send(batch([command(0)]))
        clock.advance(301)
        results = await asyncio.gather(
            *(client.send(batch([command(n)], batch_id=f"b{n}")) for n in range(50))
        )
    assert len(fake.token_requests) == 2
    assert all(r.status is OutcomeStatus.APPLIED for [r] in results)
    assert {r.headers["X-CAP-API-OAUTH-TOKEN"] for r in api.requests[-50:]} == {"jwt-2"}


async def test_fifty_concurrent_calls_refused_498_make_one_token_request() -> None:
    """50 calls refused with 498 (token revoked early) trigger one refresh and all succeed."""
    fake = FakeOAuthApi(ttl=300)
    client, _, _ = _oauth_client(fake)
    async with client:
        await client.send(batch([command(0)]))
        fake.valid = set()
        results = await asyncio.gather(
            *(client.send(batch([command(n)], batch_id=f"b{n}")) for n in range(50))
        )
    assert len(fake.token_requests) == 2
    assert all(r.status is OutcomeStatus.APPLIED for [r] in results)
    # Calls refused with the stale token were resent once; later ones went out with the new one.
    attempts = [r.attempts for [r] in results]
    assert set(attempts) == {1, 2}


async def test_refusal_after_refresh_raises_authentication_failed() -> None:
    """If the fresh token is refused too, the call stops after exactly one refresh."""
    fake = FakeOAuthApi(ttl=300)

    async def never_valid(request: httpx.Request) -> httpx.Response:
        response = await fake(request)
        fake.valid = set()
        return response

    client, api, _ = make_client(never_valid, cfg=oauth_config())
    async with client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.send(batch([command(0), command(1)]))
    assert len(fake.token_requests) == 2
    assert caught.value.code == 498
    assert caught.value.http_status == 401
    assert [c.command_id for c in caught.value.pending] == ["cmd-0", "cmd-1"]
    assert caught.value.attempts == {"cmd-0": 2, "cmd-1": 2}
    assert len(api.requests) == 4


async def test_invalid_client_key_and_secret_fails_without_calling_the_endpoint() -> None:
    """Token answer 320001 raises AuthenticationFailed; no bulk call is made."""
    fake = FakeOAuthApi()
    fake.token_answers = [
        httpx.Response(
            200,
            json={"data": None, "errors": [{"code": 320001, "message": "Invalid client key"}]},
        )
    ]
    client, api, _ = _oauth_client(fake)
    async with client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.send(batch([command(0)]))
    assert caught.value.code == 320001
    assert [r.url.path for r in api.requests] == [TOKEN_PATH]


async def test_token_endpoint_outage_is_retried_then_succeeds() -> None:
    """A 503 from the token endpoint is retryable: the call backs off and tries again."""
    fake = FakeOAuthApi()
    fake.token_answers = [httpx.Response(503, text="down")]
    refreshes: list[bool] = []
    hooks = ClientHooks(on_token_refresh=lambda ok, _seconds: refreshes.append(ok))
    client, _, clock = _oauth_client(fake, hooks=hooks)
    async with client:
        [result] = await client.send(batch([command(0)]))
    assert result.status is OutcomeStatus.APPLIED
    assert len(fake.token_requests) == 2
    assert refreshes == [False, True]
    assert len(clock.sleeps) == 1


async def test_token_endpoint_outage_past_attempts_is_unavailable() -> None:
    """A token endpoint down for every attempt ends in ApiUnavailable, never a failure."""
    fake = FakeOAuthApi()
    fake.token_answers = [httpx.Response(502, text="down")] * 3
    client, api, _ = _oauth_client(fake, oauth_config(max_attempts=3))
    async with client:
        with pytest.raises(ApiUnavailable) as caught:
            await client.send(batch([command(0)]))
    assert caught.value.pending[0].command_id == "cmd-0"
    assert [r.url.path for r in api.requests] == [TOKEN_PATH] * 3


async def test_token_without_ttl_is_used_until_refused() -> None:
    """Without ttlSeconds the token is kept (no invented ttl) and replaced once refused."""
    fake = FakeOAuthApi(ttl=None)
    client, _, clock = _oauth_client(fake)
    async with client:
        await client.send(batch([command(0)]))
        clock.advance(100_000)
        await client.send(batch([command(1)]))
        assert len(fake.token_requests) == 1
        fake.valid = set()
        [result] = await client.send(batch([command(2)]))
    assert result.status is OutcomeStatus.APPLIED
    assert len(fake.token_requests) == 2


async def test_authenticate_probes_the_credentials() -> None:
    """authenticate() fetches a token now and raises when the credentials are refused."""
    fake = FakeOAuthApi()
    client, _, _ = _oauth_client(fake)
    async with client:
        await client.authenticate()
        assert len(fake.token_requests) == 1
        fake.token_answers = [httpx.Response(401, json={"errors": [{"code": 401}]})]
        with pytest.raises(AuthenticationFailed):
            await client.authenticate()


async def test_a_cancelled_waiter_does_not_cancel_the_shared_refresh() -> None:
    """One caller giving up while the token is fetched leaves the refresh for the others."""
    fake = FakeOAuthApi()
    client, _, _ = _oauth_client(fake)
    async with client:
        first = asyncio.ensure_future(client.send(batch([command(0)])))
        second = asyncio.ensure_future(client.send(batch([command(1)], batch_id="b2")))
        await asyncio.sleep(0)
        first.cancel()
        [result] = await second
    assert result.status is OutcomeStatus.APPLIED
    assert len(fake.token_requests) == 1


# --------------------------------------------------------------------------- secrets


def _secrets(access_tokens: list[str]) -> list[str]:
    md5 = hashlib.md5(PASSWORD.encode(), usedforsecurity=False).hexdigest()
    return [
        PASSWORD,
        md5,
        "c3RvcmUuc2VydmVyOjhhMTZhNmI3MDUwNWViMWYxZmY3Y2RjMGNkNTU1OWE3",
        OAUTH_SECRET,
        *access_tokens,
    ]


async def test_secrets_never_reach_logs_reprs_or_exceptions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Passwords, digests, headers, client secrets and tokens appear in no log, repr or error."""
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with structlog.testing.capture_logs() as logs:
        # Basic: a success, then a refusal.
        answers = [
            httpx.Response(200, json={"response": [{"result": {"entityId": 423927000}}]}),
            httpx.Response(401, json={"errors": [{"code": 401, "message": "Unauthorized"}]}),
        ]
        basic, _, _ = make_client(lambda _r: answers.pop(0))
        async with basic:
            await basic.send(batch([command(0)]))
            with pytest.raises(AuthenticationFailed) as basic_error:
                await basic.send(batch([command(1)]))
            seen += [repr(basic), str(basic_error.value), repr(basic_error.value)]
        # OAuth: a refresh after 498, then a refused secret.
        fake = FakeOAuthApi()
        oauth, _, _ = _oauth_client(fake)
        async with oauth:
            await oauth.send(batch([command(0)]))
            fake.valid = set()
            await oauth.send(batch([command(1)]))
            fake.token_answers = [
                httpx.Response(200, json={"data": None, "errors": [{"code": 320001}]})
            ]
            fake.valid = set()
            with pytest.raises(AuthenticationFailed) as oauth_error:
                await oauth.send(batch([command(2)]))
            seen += [repr(oauth), str(oauth_error.value), repr(oauth_error.value)]
    cfg = oauth_config()
    seen += [repr(cfg), str(cfg), cfg.model_dump_json(), repr(config()), str(config())]
    seen += [repr(entry) for entry in logs] + [caplog.text]
    assert len(fake.token_requests) == 3
    assert logs  # the flows above did log
    text = "\n".join(seen)
    for secret in _secrets(["jwt-1", "jwt-2", "jwt-3"]):
        assert secret not in text


def test_oauth_key_is_not_in_the_repr() -> None:
    """The OAuth client key, half of the credential pair, stays out of reprs too."""
    assert "client-key" not in repr(OAuthAuth(key="client-key", secret=OAUTH_SECRET))


# --------------------------------------------------------------------------- token error bodies


@pytest.mark.parametrize("status", [401, 200])
async def test_a_token_error_with_a_top_level_code_refreshes_the_token(status: int) -> None:
    """{"code": 498, "message": "Token expired at ..."} is read like errors[].code: one refresh."""
    refusals = [httpx.Response(status, json={"code": 498, "message": "Token expired at 10:00"})]
    fake = FakeOAuthApi()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path != TOKEN_PATH and refusals:
            return refusals.pop(0)
        return await fake(request)

    client, api, _ = make_client(handler, cfg=oauth_config())
    async with client:
        [result] = await client.send(batch([command(0)]))
    assert result.status is OutcomeStatus.APPLIED
    assert result.attempts == 2
    assert len(fake.token_requests) == 2
    assert len(api.requests) == 4


@pytest.mark.parametrize(("status", "code"), [(401, 498), (401, 401), (403, 403), (200, 401)])
async def test_a_top_level_token_error_code_is_reported(status: int, code: int) -> None:
    """Refused again after the refresh: AuthenticationFailed carries the top-level code."""
    fake = FakeOAuthApi()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == TOKEN_PATH:
            return await fake(request)
        return httpx.Response(status, json={"code": code, "message": "refused"})

    client, _, _ = make_client(handler, cfg=oauth_config())
    async with client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.send(batch([command(0)]))
    assert (caught.value.code, caught.value.http_status) == (code, status)
    assert len(fake.token_requests) == 2


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (401, {"code": 401, "message": "Unauthorized"}, 401),
        (200, {"code": 403, "message": "Client doesn't have access"}, 403),
        (401, {"data": None, "errors": [{"code": 320001, "message": "Invalid key"}]}, 320001),
    ],
)
async def test_a_token_endpoint_refusal_is_read_in_either_body_form(
    status: int, body: dict[str, Any], code: int
) -> None:
    """The token request's refusal code is read from a top-level code or the errors list."""
    fake = FakeOAuthApi()
    fake.token_answers = [httpx.Response(status, json=body)]
    client, api, _ = _oauth_client(fake)
    async with client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.send(batch([command(0)]))
    assert caught.value.code == code
    assert [r.url.path for r in api.requests] == [TOKEN_PATH]
