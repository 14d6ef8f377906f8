"""Authentication of the simulator: Basic and OAuth as FACTS.md documents them."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from promo_bridge.simulator import Credentials, Faults, Simulator, basic_header

WORKED_EXAMPLE = "Basic c3RvcmUuc2VydmVyOjhhMTZhNmI3MDUwNWViMWYxZmY3Y2RjMGNkNTU1OWE3"
TOKEN_PATH = "/v3/oauth/token/generate"
ENROL = {
    "type": "CUSTOMER",
    "bulkAction": "ENROL",
    "promotionDetails": {"programId": 2714, "promotionId": 202779},
    "identifierName": "id",
    "customers": [{"identifierValue": "423926199", "source": "INSTORE"}],
}
ENROL_PATH = "/v2/promotion/bulk/enrolAndEarn"


class FakeClock:
    """A wall clock that moves only when told."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _call(sim: Simulator, headers: dict[str, str]) -> httpx.Response:
    async with sim.client(auth=False) as client:
        return await client.post(ENROL_PATH, json=ENROL, headers=headers)


async def _token(
    sim: Simulator, key: str | None = None, secret: str | None = None
) -> httpx.Response:
    creds = sim.credentials
    body = {"key": key or creds.oauth_key, "secret": secret or creds.oauth_secret}
    async with sim.client(auth=False) as client:
        return await client.post(TOKEN_PATH, json=body)


def test_default_credentials_produce_the_docs_worked_example() -> None:
    """till store.server / password server123 give exactly the header value of the docs."""
    assert Credentials().basic_header() == WORKED_EXAMPLE
    assert basic_header("store.server", "server123") == WORKED_EXAMPLE


async def test_worked_basic_example_is_accepted() -> None:
    """The docs' literal Basic header authenticates a bulk call."""
    response = await _call(Simulator(), {"Authorization": WORKED_EXAMPLE})
    assert response.status_code == 200
    assert response.json()["failureCount"] == 0


async def test_wrong_password_is_refused_with_401() -> None:
    """Basic with the right till and a wrong password answers 401 code 401, no side effect."""
    sim = Simulator()
    response = await _call(sim, {"Authorization": basic_header("store.server", "wrong")})
    assert response.status_code == 401
    assert response.json() == {"code": 401, "message": "Unauthorized"}
    assert sim.ledger.total() == 0


async def test_plain_password_instead_of_md5_is_refused() -> None:
    """Basic carrying the password itself rather than its md5 is refused."""
    value = "Basic " + base64.b64encode(b"store.server:server123").decode()
    assert (await _call(Simulator(), {"Authorization": value})).status_code == 401


async def test_missing_and_garbled_credentials_are_refused() -> None:
    """No auth header, a non-base64 Basic value and a forged token all answer 401 code 401."""
    sim = Simulator()
    for headers in ({}, {"Authorization": "Basic !!!"}, {"X-CAP-API-OAUTH-TOKEN": "a.b.c"}):
        response = await _call(sim, headers)
        assert response.status_code == 401
        assert response.json()["code"] == 401


async def test_oauth_token_flow_authenticates_calls() -> None:
    """A generated token (JWT-shaped, ttlSeconds 300) authenticates through the OAuth header."""
    sim = Simulator()
    response = await _token(sim)
    assert response.status_code == 200
    body = response.json()
    assert body["errors"] is None
    assert body["data"]["ttlSeconds"] == 300
    token = body["data"]["accessToken"]
    assert token.count(".") == 2
    call = await _call(sim, {"X-CAP-API-OAUTH-TOKEN": token})
    assert call.status_code == 200
    assert sim.calls[-1].auth == "oauth"
    assert sim.stats["token_requests"] == 1


async def test_bad_oauth_secret_answers_320001() -> None:
    """A wrong secret answers the documented body with code 320001 (HTTP 401)."""
    response = await _token(Simulator(), secret="nope")
    assert response.status_code == 401
    assert response.json() == {
        "data": None,
        "errors": [{"code": 320001, "message": "Invalid client key and secret"}],
    }


async def test_token_generation_needs_no_auth_and_rejects_a_non_object_body() -> None:
    """The token endpoint takes no auth header; a body that is not an object answers 320001."""
    async with Simulator().client(auth=False) as client:
        response = await client.post(TOKEN_PATH, content=b"[1]")
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == 320001


async def test_expired_token_answers_498_with_the_expiry_time() -> None:
    """Once ttlSeconds pass, the token answers HTTP 401 with code 498 "Token expired at ..."."""
    clock = FakeClock()
    sim = Simulator(credentials=Credentials(token_ttl_seconds=60), clock=clock)
    token = (await _token(sim)).json()["data"]["accessToken"]
    clock.now += 59
    assert (await _call(sim, {"X-CAP-API-OAUTH-TOKEN": token})).status_code == 200
    clock.now += 2
    response = await _call(sim, {"X-CAP-API-OAUTH-TOKEN": token})
    assert response.status_code == 401
    body: dict[str, Any] = response.json()
    assert body["code"] == 498
    assert body["message"].startswith("Token expired at 2027-01-15T08:")


async def test_expire_tokens_forces_a_new_token() -> None:
    """After expire_tokens(), old tokens answer 498 and a freshly generated one works."""
    sim = Simulator()
    old = (await _token(sim)).json()["data"]["accessToken"]
    sim.expire_tokens()
    assert (await _call(sim, {"X-CAP-API-OAUTH-TOKEN": old})).json()["code"] == 498
    new = (await _token(sim)).json()["data"]["accessToken"]
    assert (await _call(sim, {"X-CAP-API-OAUTH-TOKEN": new})).status_code == 200


async def test_forced_expiries_fail_the_next_token_checks_only() -> None:
    """Faults(expired_tokens=2) makes exactly the next two token checks answer 498."""
    sim = Simulator(faults=Faults(expired_tokens=2))
    token = (await _token(sim)).json()["data"]["accessToken"]
    headers = {"X-CAP-API-OAUTH-TOKEN": token}
    codes = [(await _call(sim, headers)).status_code for _ in range(3)]
    assert codes == [401, 401, 200]


async def test_forced_expiries_do_not_touch_basic_auth() -> None:
    """Forced token expiries apply to OAuth only; Basic keeps working."""
    sim = Simulator(faults=Faults(expired_tokens=5))
    response = await _call(sim, {"Authorization": WORKED_EXAMPLE})
    assert response.status_code == 200


async def test_rotating_the_oauth_key_invalidates_its_tokens() -> None:
    """A token of a replaced OAuth key no longer authenticates (401 code 401)."""
    sim = Simulator()
    token = (await _token(sim)).json()["data"]["accessToken"]
    sim.set_credentials(oauth_key="new-key")
    response = await _call(sim, {"X-CAP-API-OAUTH-TOKEN": token})
    assert response.status_code == 401
    assert response.json()["code"] == 401


async def test_wrong_credentials_then_fixed_through_admin() -> None:
    """The server starts with other credentials; after POST /__admin/credentials, calls pass."""
    sim = Simulator(credentials=Credentials(password="rotated"))
    assert (await _call(sim, {"Authorization": WORKED_EXAMPLE})).status_code == 401
    async with sim.client(auth=False) as client:
        admin = await client.post("/__admin/credentials", json={"password": "server123"})
    assert admin.status_code == 200
    assert (await _call(sim, {"Authorization": WORKED_EXAMPLE})).status_code == 200


async def test_admin_rejects_unknown_credential_fields() -> None:
    """POST /__admin/credentials with an unknown field answers 400 and changes nothing."""
    sim = Simulator()
    async with sim.client(auth=False) as client:
        response = await client.post("/__admin/credentials", json={"pasword": "typo"})
    assert response.status_code == 400
    assert sim.credentials == Credentials()


async def test_disabled_basic_auth_refuses_the_worked_example() -> None:
    """With basic_enabled false only OAuth authenticates."""
    sim = Simulator(credentials=Credentials(basic_enabled=False))
    assert (await _call(sim, {"Authorization": WORKED_EXAMPLE})).status_code == 401
