"""End to end on the real broker and the simulator over HTTP: events in, calls out, outcomes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness import order_placed, running_service, service_settings, write_rules
from promo_bridge.devkit.kafka_tools import (
    committed_offsets,
    create_topics,
    end_offsets,
    produce_events,
    read_topic,
    wait_caught_up,
)
from promo_bridge.simulator import Simulator, serve

pytestmark = pytest.mark.e2e


async def test_250_customers_make_three_bulk_calls_and_250_outcomes(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """250 enrols inside one window go out as 100+100+50 and each gets an applied outcome."""
    orders = f"orders-{unique}"
    settings = service_settings(
        bootstrap=kafka_bootstrap,
        api_url="http://placeholder",
        rules_file=write_rules(tmp_path),
        unique=unique,
        topics=[orders],
        batch_window_ms=3000,
    )
    await create_topics(kafka_bootstrap, {orders: 3, settings.outcomes_topic: 3})
    events = [order_placed(str(500_000 + i), 6000.0) for i in range(250)]
    await produce_events(kafka_bootstrap, events, {"order.placed": orders})

    sim = Simulator()
    async with serve(sim) as api:
        settings = settings.model_copy(update={"capillary_base_url": api.base_url})
        async with running_service(settings):
            outcomes = await read_topic(
                kafka_bootstrap, settings.outcomes_topic, until=lambda r: len(r) >= 250
            )
            committed = await wait_caught_up(
                kafka_bootstrap, settings.group_id, [orders], timeout_s=30
            )

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

    ends = await end_offsets(kafka_bootstrap, [orders])
    assert sum(ends.values()) == 250
    assert committed == ends
    assert await committed_offsets(kafka_bootstrap, settings.group_id) == ends
