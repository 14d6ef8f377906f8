"""The broker goes away under load and comes back: the service recovers alone, loses nothing.

The test runs its own broker (the session's is shared), stops it while outcomes are being
published, and starts it again on the same data and ports once /readyz says 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

import pytest

import kafka_broker
from harness import Rig, order_placed
from kafka_tools import committed_offsets, end_offsets, produce_events, read_topic, wait_caught_up
from promo_bridge.simulator import Simulator
from runtime_support import (
    OutcomeTally,
    child_settings,
    expected_command_id,
    probe,
    scrape,
    service_process,
    value,
    wait_until,
)

pytestmark = pytest.mark.integration

EVENTS = 2_000


async def test_broker_outage_under_load_recovers_alone_with_nothing_lost(
    unique: str, tmp_path: Path
) -> None:
    """Broker stopped mid-stream: /readyz 503 meanwhile; then every outcome once, offsets at end."""
    broker = await asyncio.to_thread(kafka_broker.start_broker, tmp_path / "kafka")
    try:
        async with contextlib.AsyncExitStack() as exits:
            rig = Rig(broker.bootstrap, unique, tmp_path, exits)
            sim = Simulator()
            # Two calls a second per endpoint: the stream lasts long enough to be cut.
            settings = await rig.prepare(
                sim, partitions=3, batch_window_ms=100, capillary_calls_per_minute=120
            )
            events = [order_placed(str(870_000 + i), 6000.0) for i in range(EVENTS)]
            await produce_events(broker.bootstrap, events, {"order.placed": rig.topic})
            service = await exits.enter_async_context(
                service_process(tmp_path / "service.log", **child_settings(settings))
            )

            async def outcomes(at_least: float) -> bool:
                samples = await scrape(service.ops_port)
                return value(samples, "promo_bridge_outcomes_total") >= at_least

            async def ready(expected: int) -> bool:
                status, _ = await probe(service.ops_port, "/readyz")
                return status == expected

            await wait_until(lambda: outcomes(300), timeout_s=60, what="outcomes flowing")
            await asyncio.to_thread(kafka_broker.stop_broker, broker)
            await wait_until(lambda: ready(503), timeout_s=40, what="/readyz 503 in the outage")
            published_during_outage = value(
                await scrape(service.ops_port), "promo_bridge_outcomes_total"
            )
            broker = await asyncio.to_thread(
                kafka_broker.start_broker,
                tmp_path / "kafka",
                port=broker.port,
                controller_port=broker.controller_port,
            )
            await wait_until(lambda: ready(200), timeout_s=60, what="/readyz 200 after it")
            committed = await wait_caught_up(
                broker.bootstrap, settings.group_id, [rig.topic], timeout_s=120
            )
            tally = OutcomeTally({expected_command_id(e) for e in events})
            await read_topic(broker.bootstrap, settings.outcomes_topic, until=tally, timeout_s=60)
            ends = await end_offsets(broker.bootstrap, [rig.topic])
            assert await committed_offsets(broker.bootstrap, settings.group_id) == ends
    finally:
        await asyncio.to_thread(kafka_broker.stop_broker, broker)

    assert published_during_outage < EVENTS, "the outage came after the stream had ended"
    assert set(tally.seen) == tally.expected
    assert tally.duplicates == 0
    assert Counter(tally.statuses.values()) == {"applied": EVENTS}
    assert sim.ledger.totals() == {"ENROL": EVENTS}
    assert sim.ledger.duplicates() == {}
    assert committed == ends
