"""Retries are bounded: an answer that keeps failing ends in failed outcomes, and work flows on."""

from __future__ import annotations

from collections import Counter

import pytest

from harness import Rig, order_placed, running_service
from kafka_tools import end_offsets, produce_events, read_topic, wait_caught_up
from promo_bridge.simulator import Faults, Simulator
from runtime_support import scrape, value

pytestmark = pytest.mark.integration

EVENTS = 6


async def test_an_8896_answered_for_ever_fails_retry_exhausted_and_later_events_flow(
    kafka_bootstrap: str, rig: Rig
) -> None:
    """Every entry answers 8896: after the bound, failed/retry_exhausted; then events flow."""
    sim = Simulator(faults=Faults(entry_error_rate=1.0))
    settings = await rig.prepare(
        sim,
        partitions=1,
        batch_window_ms=20,
        unavailable_retry_s=0.1,
        capillary_max_attempts=2,
        retry_max_sends=2,
    )
    first = [order_placed(str(897_000 + i), 6000.0) for i in range(EVENTS)]
    later = [order_placed(str(898_000 + i), 6000.0) for i in range(EVENTS)]
    await produce_events(kafka_bootstrap, first, {"order.placed": rig.topic})

    async with running_service(settings) as service:
        failed = await read_topic(
            kafka_bootstrap,
            settings.outcomes_topic,
            until=lambda r: len(r) >= EVENTS,
            timeout_s=60,
        )
        sim.set_faults(Faults())
        await produce_events(kafka_bootstrap, later, {"order.placed": rig.topic})
        committed = await wait_caught_up(
            kafka_bootstrap, settings.group_id, [rig.topic], timeout_s=60
        )
        assert service.ops_port is not None
        samples = await scrape(service.ops_port)
    outcomes = await read_topic(
        kafka_bootstrap, settings.outcomes_topic, until=lambda r: len(r) >= 2 * EVENTS
    )

    first_classes = {(o.json()["status"], o.json()["error_class"]) for o in failed}
    assert first_classes == {("failed", "retry_exhausted")}
    assert all("code 8896" in (o.json()["error_message"] or "") for o in failed)
    assert Counter(o.json()["status"] for o in outcomes) == {"failed": EVENTS, "applied": EVENTS}
    assert sim.ledger.totals() == {"ENROL": EVENTS}
    assert committed == await end_offsets(kafka_bootstrap, [rig.topic])
    assert (
        value(
            samples, "promo_bridge_outcomes_total", status="failed", error_class="retry_exhausted"
        )
        == EVENTS
    )
