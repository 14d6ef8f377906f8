"""The simulator over real HTTP: uvicorn on 127.0.0.1 with a random port."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from typing import Any

import httpx
import pytest

from promo_bridge.simulator import Faults, Simulator, serve

pytestmark = pytest.mark.integration

ENROL_AND_EARN = "/v2/promotion/bulk/enrolAndEarn"
WORKED_EXAMPLE = "Basic c3RvcmUuc2VydmVyOjhhMTZhNmI3MDUwNWViMWYxZmY3Y2RjMGNkNTU1OWE3"


def _enrol(*ids: str) -> dict[str, Any]:
    return {
        "type": "CUSTOMER",
        "bulkAction": "ENROL",
        "promotionDetails": {"programId": 2714, "promotionId": 202779},
        "identifierName": "id",
        "customers": [{"identifierValue": i, "source": "INSTORE"} for i in ids],
    }


def _client(base_url: str, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, headers={"Authorization": WORKED_EXAMPLE}, **kwargs)


async def test_serves_on_a_random_port_with_unique_request_ids() -> None:
    """serve() binds a real port; every answer carries a distinct X-Cap-Requestid."""
    sim = Simulator()
    async with serve(sim, port=0) as server, _client(server.base_url) as client:
        assert server.port > 0
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        responses = [await client.post(ENROL_AND_EARN, json=_enrol("423926199")) for _ in range(3)]
        responses.append(await client.get("/__admin/health"))
    assert [r.status_code for r in responses] == [200, 200, 200, 200]
    ids = {r.headers["X-Cap-Requestid"] for r in responses}
    assert len(ids) == 4
    assert {c.request_id for c in sim.calls} <= ids


async def test_dropped_connection_is_seen_by_httpx_as_a_protocol_error() -> None:
    """A dropped call closes the socket unanswered: httpx raises, nothing is applied."""
    sim = Simulator(faults=Faults(script=("drop",)))
    async with serve(sim) as server, _client(server.base_url) as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await client.post(ENROL_AND_EARN, json=_enrol("423926199"))
        after = await client.post(ENROL_AND_EARN, json=_enrol("423926199"))
    assert after.status_code == 200
    assert sim.ledger.count(customer_id=423926199, action="ENROL") == 1
    dropped = sim.calls[0]
    assert (dropped.outcome, dropped.status, dropped.processed) == ("fault:drop", None, False)


async def test_drop_after_processing_leaves_the_effect_applied() -> None:
    """process_before_fault: the client sees a dropped connection but the enrol happened."""
    sim = Simulator(faults=Faults(drop_rate=1.0, process_before_fault=True))
    async with serve(sim) as server, _client(server.base_url) as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await client.post(ENROL_AND_EARN, json=_enrol("423926199"))
    assert sim.ledger.count(customer_id=423926199, action="ENROL") == 1


async def test_timeout_fault_outlasts_the_client_and_applies_nothing() -> None:
    """A held call makes httpx time out; the server notices the hang-up and applies nothing."""
    sim = Simulator(faults=Faults(script=("timeout",), timeout_seconds=30))
    started = time.monotonic()
    async with serve(sim) as server, _client(server.base_url, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(ENROL_AND_EARN, json=_enrol("423926199"))
    # Leaving serve() waited for the held request: its record exists and shutdown was prompt.
    assert time.monotonic() - started < 10
    assert sim.ledger.total() == 0
    (held,) = sim.calls
    assert (held.outcome, held.processed) == ("fault:timeout", False)


async def test_timeout_shorter_than_the_client_answers_normally() -> None:
    """A client more patient than timeout_seconds gets the real answer, applied once."""
    sim = Simulator(faults=Faults(timeout_rate=1.0, timeout_seconds=0.1))
    async with serve(sim) as server, _client(server.base_url, timeout=5) as client:
        response = await client.post(ENROL_AND_EARN, json=_enrol("423926199"))
    assert response.status_code == 200
    assert sim.ledger.total("ENROL") == 1


async def test_rate_limit_answers_429_with_retry_after_over_http() -> None:
    """With 2 calls/min, the third call answers 429 with an integer Retry-After ≤ 60."""
    sim = Simulator(faults=Faults(rate_limit_per_minute=2))
    async with serve(sim) as server, _client(server.base_url) as client:
        statuses = [(await client.post(ENROL_AND_EARN, json=_enrol("423926199"))) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert 1 <= int(statuses[2].headers["Retry-After"]) <= 60


async def test_latency_is_added_over_http() -> None:
    """latency_ms=100 makes a real call take at least 100 ms."""
    sim = Simulator(faults=Faults(latency_ms=100))
    async with serve(sim) as server, _client(server.base_url) as client:
        started = time.perf_counter()
        response = await client.post(ENROL_AND_EARN, json=_enrol("423926199"))
        elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert elapsed >= 0.1


async def test_oauth_flow_and_admin_faults_over_http() -> None:
    """Token over HTTP authenticates; an admin-injected 503 then hits the next call only."""
    sim = Simulator()
    creds = {"key": "promo-bridge-dev", "secret": "promo-bridge-dev-secret"}
    async with serve(sim) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        token = (await client.post("/v3/oauth/token/generate", json=creds)).json()["data"][
            "accessToken"
        ]
        headers = {"X-CAP-API-OAUTH-TOKEN": token}
        ok = await client.post(ENROL_AND_EARN, json=_enrol("423926199"), headers=headers)
        await client.post("/__admin/faults", json={"script": ["503"]})
        failed = await client.post(ENROL_AND_EARN, json=_enrol("423926199"), headers=headers)
        again = await client.post(ENROL_AND_EARN, json=_enrol("423926199"), headers=headers)
    assert [ok.status_code, failed.status_code, again.status_code] == [200, 503, 200]


async def test_unenroll_is_served_with_and_without_prefix() -> None:
    """/v3.1/targetGroups/... and /targetGroups/... both reach unEnroll."""
    sim = Simulator()
    async with serve(sim) as server, _client(server.base_url) as client:
        prefixed = await client.post(
            "/v3.1/targetGroups/12/targets/34/unEnroll", json=[{"customerId": 423927867}]
        )
        bare = await client.post(
            "/targetGroups/12/targets/34/unEnroll", json=[{"customerId": 423927868}]
        )
    assert prefixed.json()["data"] == 423927867
    assert bare.json()["data"] == 423927868


async def test_busy_port_raises_oserror() -> None:
    """serve() on a port already bound raises OSError instead of exiting the process."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            async with serve(Simulator(), port=port):
                pass


async def test_module_command_serves_until_sigterm() -> None:
    """`python -m promo_bridge.simulator --port 0` reports its URL, serves, exits 0 on SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "promo_bridge.simulator",
        "--port",
        "0",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), timeout=20)).decode()
        assert "listening on http://127.0.0.1:" in line
        base_url = line.rsplit(" ", 1)[1].strip()
        async with httpx.AsyncClient(base_url=base_url) as client:
            health = await client.get("/__admin/health")
        assert health.json() == {"status": "ok"}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
