"""Start-up without a broker: alive, not ready, and a stop still ends it cleanly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import kafka_broker
from harness import service_settings, write_rules
from promo_bridge.runtime import build_service, run_service
from runtime_support import probe, wait_until

pytestmark = pytest.mark.integration


async def test_waits_for_an_absent_broker_alive_but_not_ready(unique: str, tmp_path: Path) -> None:
    """With no broker the service keeps /healthz up, /readyz 503, and stops on request."""
    settings = service_settings(
        bootstrap=f"127.0.0.1:{kafka_broker.free_port()}",
        api_url="http://127.0.0.1:9",
        rules_file=write_rules(tmp_path),
        unique=unique,
        topics=[f"orders-{unique}"],
    )
    service = build_service(settings)
    task = asyncio.create_task(run_service(service, install_signals=False))
    await wait_until(lambda: service.ops_port is not None, timeout_s=10, what="ops port bound")
    assert service.ops_port is not None
    health = await probe(service.ops_port, "/healthz")
    status, body = await probe(service.ops_port, "/readyz")
    service.request_stop()
    await asyncio.wait_for(task, timeout=10)
    assert health[0] == 200
    assert status == 503
    assert body["checks"]["broker_reachable"] is False
    assert not service.started.is_set()
