"""Fault injection of the simulator, in-process (the real-HTTP faults are in integration)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from promo_bridge.simulator import Faults, Simulator
from promo_bridge.simulator._faults import FaultInjector, SlidingWindowLimiter

ENROL_AND_EARN = "/v2/promotion/bulk/enrolAndEarn"


def _enrol(*ids: str) -> dict[str, Any]:
    return {
        "type": "CUSTOMER",
        "bulkAction": "ENROL",
        "promotionDetails": {"programId": 2714, "promotionId": 202779},
        "identifierName": "id",
        "customers": [{"identifierValue": i, "source": "INSTORE"} for i in ids],
    }


class FakeMonotonic:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _statuses(sim: Simulator, n: int) -> list[int]:
    async with sim.client() as client:
        return [
            (await client.post(ENROL_AND_EARN, json=_enrol("423926199"))).status_code
            for _ in range(n)
        ]


async def test_injected_429_carries_retry_after_and_has_no_effect() -> None:
    """rate_429=1 answers 429 with Retry-After (seconds, rounded up) and applies nothing."""
    sim = Simulator(faults=Faults(rate_429=1.0, retry_after_seconds=6.2))
    async with sim.client() as client:
        response = await client.post(ENROL_AND_EARN, json=_enrol("423926199"))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert sim.ledger.total() == 0
    assert sim.calls[-1].outcome == "fault:429"


async def test_injected_error_status_answers_its_documented_body() -> None:
    """error_rates {503: 1} answers 503 with body code 4001 and no side effect."""
    sim = Simulator(faults=Faults(error_rates={503: 1.0}))
    async with sim.client() as client:
        response = await client.post(ENROL_AND_EARN, json=_enrol("423926199"))
    assert response.status_code == 503
    assert response.json() == {"code": 4001, "message": "Authorization status unavailable!"}
    assert sim.ledger.total() == 0


async def test_seeded_faults_are_reproducible() -> None:
    """Two simulators with the same seed and calls make the same mix of 200s and 500s."""
    faults = Faults(error_rates={500: 0.5}, seed=42)
    first = await _statuses(Simulator(faults=faults), 30)
    second = await _statuses(Simulator(faults=faults), 30)
    assert first == second
    assert set(first) == {200, 500}


async def test_script_is_consumed_in_order_before_random_faults() -> None:
    """script ["503", "ok", "429"] answers 503, 200, 429, then normal answers."""
    sim = Simulator(faults=Faults(script=("503", "ok", "429")))
    assert await _statuses(sim, 4) == [503, 200, 429, 200]
    assert sim.stats["script_left"] == []


async def test_per_entry_8896_fails_each_entry_without_effect() -> None:
    """entry_error_rate=1 answers 8896 for every customer entry, failureCount equal to them."""
    sim = Simulator(faults=Faults(entry_error_rate=1.0))
    async with sim.client() as client:
        body = (
            await client.post(ENROL_AND_EARN, json=_enrol("423926199", "423926198", "x"))
        ).json()
    assert [e["errors"][0]["code"] for e in body["response"]] == [8896, 8896, 8015]
    assert (body["totalCount"], body["failureCount"]) == (3, 3)
    assert sim.ledger.total() == 0


async def test_faults_can_target_one_endpoint() -> None:
    """endpoints=("revokeDirectEarn",) leaves enrolAndEarn untouched by a 100% error rate."""
    sim = Simulator(faults=Faults(error_rates={500: 1.0}, endpoints=("revokeDirectEarn",)))
    assert await _statuses(sim, 2) == [200, 200]
    async with sim.client() as client:
        response = await client.post("/v2/promotion/bulk/revokeDirectEarn", json=_enrol("1"))
    assert response.status_code == 500


async def test_rate_limit_slides_over_sixty_seconds() -> None:
    """Limit 2/min: the 3rd call answers 429 with Retry-After 60, 30 later; 60 s later it passes."""
    clock = FakeMonotonic()
    sim = Simulator(faults=Faults(rate_limit_per_minute=2), monotonic=clock)
    async with sim.client() as client:

        async def call() -> httpx.Response:
            return await client.post(ENROL_AND_EARN, json=_enrol("423926199"))

        assert [(await call()).status_code for _ in range(2)] == [200, 200]
        limited = await call()
        assert (limited.status_code, limited.headers["Retry-After"]) == (429, "60")
        clock.now += 30
        assert (await call()).headers["Retry-After"] == "30"
        clock.now += 30.001
        assert (await call()).status_code == 200
    assert sim.stats["by_outcome"]["rate_limited"] == 2


async def test_rate_limit_is_per_endpoint() -> None:
    """A limit reached on enrolAndEarn leaves revokeEnrolAndEarn its own budget."""
    sim = Simulator(faults=Faults(rate_limits={"enrolAndEarn": 1}), monotonic=FakeMonotonic())
    async with sim.client() as client:
        assert (await client.post(ENROL_AND_EARN, json=_enrol("423926199"))).status_code == 200
        assert (await client.post(ENROL_AND_EARN, json=_enrol("423926199"))).status_code == 429
        revoke = await client.post("/v2/promotion/bulk/revokeEnrolAndEarn", json=_enrol("1"))
    assert revoke.status_code == 200


def test_sliding_window_retry_after_is_the_wait_for_the_next_slot() -> None:
    """With limit 3 over calls at t=0, 10, 20, a call at t=25 must wait until t=60."""
    clock = FakeMonotonic()
    limiter = SlidingWindowLimiter(clock)
    for t in (0, 10, 20):
        clock.now = 1000.0 + t
        assert limiter.acquire("x", 3) is None
    clock.now = 1025.0
    assert limiter.acquire("x", 3) == pytest.approx(35.0)


def test_latency_draws_stay_within_fixed_plus_jitter() -> None:
    """latency 20 ms + jitter 10 ms draws delays within [20, 30] ms, reproducibly by seed."""
    faults = Faults(latency_ms=20, jitter_ms=10, seed=7)
    first = FaultInjector(faults, time.monotonic).latency_seconds("enrolAndEarn")
    injector = FaultInjector(faults, time.monotonic)
    draws = [injector.latency_seconds("enrolAndEarn") for _ in range(50)]
    assert all(0.020 <= d <= 0.030 for d in draws)
    assert draws[0] == first
    assert len(set(draws)) > 1


async def test_latency_delays_the_answer() -> None:
    """latency_ms=60 makes a call take at least 60 ms."""
    sim = Simulator(faults=Faults(latency_ms=60))
    async with sim.client() as client:
        started = time.perf_counter()
        response = await client.post(ENROL_AND_EARN, json=_enrol("423926199"))
        elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert elapsed >= 0.060


async def test_in_process_drop_raises_remote_protocol_error() -> None:
    """A dropped call through ASGITransport raises httpx.RemoteProtocolError, nothing applied."""
    sim = Simulator(faults=Faults(script=("drop",)))
    async with sim.client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(ENROL_AND_EARN, json=_enrol("423926199"))
        assert (await client.post(ENROL_AND_EARN, json=_enrol("423926199"))).status_code == 200
    assert sim.ledger.total("ENROL") == 1
    assert [c.outcome for c in sim.calls] == ["fault:drop", "processed"]


async def test_drop_after_processing_applies_the_effect() -> None:
    """process_before_fault: the dropped call was applied, so a retry makes a duplicate."""
    sim = Simulator(faults=Faults(script=("drop",), process_before_fault=True))
    async with sim.client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(ENROL_AND_EARN, json=_enrol("423926199"))
        await client.post(ENROL_AND_EARN, json=_enrol("423926199"))
    assert sim.ledger.duplicates("ENROL") == {(423926199, "promotion:2714/202779", "ENROL"): 2}
    assert sim.calls[0].processed is True


async def test_scripted_expired_token_answers_498() -> None:
    """script ["expired_token"] answers HTTP 401 code 498 once, whatever the auth scheme."""
    sim = Simulator(faults=Faults(script=("expired_token",)))
    async with sim.client() as client:
        response = await client.post(ENROL_AND_EARN, json=_enrol("423926199"))
    assert response.status_code == 401
    assert response.json()["code"] == 498


async def test_set_faults_merges_and_reseeds() -> None:
    """set_faults(**changes) keeps the other fields; passing a seed restarts the draws."""
    sim = Simulator(faults=Faults(latency_ms=5, seed=1))
    updated = sim.set_faults(error_rates={502: 0.25})
    assert (updated.latency_ms, dict(updated.error_rates)) == (5, {502: 0.25})
    sim.set_faults(error_rates={502: 0.5}, seed=3)
    first = await _statuses(sim, 10)
    sim.set_faults(seed=3)
    assert await _statuses(sim, 10) == first


@pytest.mark.parametrize(
    "changes",
    [
        {"drop_rate": 0.6, "error_rates": {503: 0.5}},
        {"error_rates": {429: 0.1}},
        {"rate_limits": {"nope": 5}},
        {"script": ["explode"]},
        {"entry_error_rate": 2},
        {"unknown": 1},
    ],
)
def test_invalid_faults_are_rejected(changes: dict[str, Any]) -> None:
    """Rates over 1, 429 in error_rates, unknown endpoints, script items or fields raise."""
    with pytest.raises(ValueError, match=r"."):
        Faults.from_dict(changes)


async def test_admin_faults_endpoint_updates_and_reports() -> None:
    """POST /__admin/faults merges JSON (string status keys) and GET reports it back."""
    sim = Simulator()
    async with sim.client(auth=False) as client:
        posted = await client.post("/__admin/faults", json={"error_rates": {"503": 1.0}})
        current = (await client.get("/__admin/faults")).json()
        bad = await client.post("/__admin/faults", json={"drop_rate": 5})
    assert posted.status_code == 200
    assert current["error_rates"] == {"503": 1.0}
    assert bad.status_code == 400
    assert await _statuses(sim, 1) == [503]


async def test_admin_faults_replace_and_expire_tokens() -> None:
    """ "replace" drops earlier faults; "expire_issued_tokens" makes old tokens answer 498."""
    sim = Simulator(faults=Faults(error_rates={500: 1.0}))
    creds = {"key": "promo-bridge-dev", "secret": "promo-bridge-dev-secret"}
    async with sim.client(auth=False) as client:
        # Token generation is an API call too: the injected 500 hits it.
        assert (await client.post("/v3/oauth/token/generate", json=creds)).status_code == 500
        await client.post("/__admin/faults", json={"replace": True})
        token = (await client.post("/v3/oauth/token/generate", json=creds)).json()["data"]
        await client.post("/__admin/faults", json={"expire_issued_tokens": True})
        response = await client.post(
            ENROL_AND_EARN,
            json=_enrol("423926199"),
            headers={"X-CAP-API-OAUTH-TOKEN": token["accessToken"]},
        )
    assert response.json()["code"] == 498
