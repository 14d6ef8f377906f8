"""Start-up without a broker: alive, not ready, and a stop still ends it cleanly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

import kafka_broker
from harness import service_settings, write_rules
from kafka_tools import create_topics
from promo_bridge.kafka.restore import TopologyError
from promo_bridge.runtime import build_service, run_service
from promo_bridge.settings import Settings
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


def _settings_on(bootstrap: str, unique: str, tmp_path: Path) -> Settings:
    return service_settings(
        bootstrap=bootstrap,
        api_url="http://127.0.0.1:9",
        rules_file=write_rules(tmp_path),
        unique=unique,
        topics=[f"orders-{unique}"],
    )


async def test_outcomes_topic_narrower_than_the_input_fails_start_up_saying_how_to_fix_it(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """Outcomes must be co-partitioned with the input: too few partitions stop the start."""
    settings = _settings_on(kafka_bootstrap, unique, tmp_path)
    await create_topics(kafka_bootstrap, {f"orders-{unique}": 3, settings.outcomes_topic: 1})
    service = build_service(settings)
    with pytest.raises(TopologyError) as caught:
        await asyncio.wait_for(run_service(service, install_signals=False), timeout=60)
    assert str(caught.value) == (
        f"outcomes topic {settings.outcomes_topic} has 1 partitions but input orders-{unique} (3)"
        " has more: outcomes are co-partitioned with the input, so give the outcomes topic at"
        " least 3 partitions"
    )
    assert not service.started.is_set()


async def test_a_missing_outcomes_topic_fails_start_up_and_is_not_created(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """Start-up refuses to run without the outcomes topic instead of auto-creating a wrong one."""
    settings = _settings_on(kafka_bootstrap, unique, tmp_path)
    await create_topics(kafka_bootstrap, {f"orders-{unique}": 2})
    with pytest.raises(TopologyError, match="does not exist: create it with at least 2"):
        await asyncio.wait_for(
            run_service(build_service(settings), install_signals=False), timeout=60
        )
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert settings.outcomes_topic not in await admin.list_topics()
    finally:
        await admin.close()
