"""End to end on the real broker and the simulator over HTTP: events in, calls out, outcomes."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from harness import Rig, order_placed, running_service
from kafka_tools import (
    committed_offsets,
    end_offsets,
    produce_events,
    read_topic,
    wait_caught_up,
)
from promo_bridge.simulator import Simulator

pytestmark = pytest.mark.e2e


async def test_250_customers_make_three_bulk_calls_and_250_outcomes(
    kafka_bootstrap: str, rig: Rig
) -> None:
    """250 enrols inside one window go out as 100+100+50 and each gets an applied outcome."""
    sim = Simulator()
    settings = await rig.prepare(sim, partitions=3, batch_window_ms=3000)
    topic = rig.topic
    events = [order_placed(str(500_000 + i), 6000.0) for i in range(250)]
    await produce_events(kafka_bootstrap, events, {"order.placed": topic})

    async with running_service(settings):
        outcomes = await read_topic(
            kafka_bootstrap, settings.outcomes_topic, until=lambda r: len(r) >= 250
        )
        committed = await wait_caught_up(kafka_bootstrap, settings.group_id, [topic], timeout_s=30)

    calls = [c for c in sim.calls if c.endpoint == "enrolAndEarn"]
    assert sorted(c.customers for c in calls) == [50, 100, 100]
    assert all(c.bulk_action == "ENROL" and c.status == 200 for c in calls)

    records = [json.loads(r.value or b"") for r in outcomes]
    assert len(records) == 250
    assert Counter(r["status"] for r in records) == {"applied": 250}
    assert len({r["command_id"] for r in records}) == 250
    assert {r["identifier_value"] for r in records} == {e["data"]["customer"]["id"] for e in events}
    assert all(r["issual_id"] for r in records)
    assert sim.ledger.total("ENROL") == 250

    ends = await end_offsets(kafka_bootstrap, [topic])
    assert sum(ends.values()) == 250
    assert committed == ends
    assert await committed_offsets(kafka_bootstrap, settings.group_id) == ends
