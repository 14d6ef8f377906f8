"""SIGKILL after the work is done but before it is committed: the next process redoes nothing.

Completed work is read back from the outcomes topic (co-partitioned with the input) from the
restore mark stored with the committed offsets, so re-read events make no call and no second
outcome record.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from harness import Rig, order_placed, running_service
from kafka_tools import committed_offsets, end_offsets, produce_events, read_topic, wait_caught_up
from promo_bridge.simulator import Simulator
from runtime_support import (
    OutcomeTally,
    child_settings,
    expected_command_id,
    scrape,
    service_process,
    value,
)

pytestmark = pytest.mark.integration

EVENTS = 300


async def test_sigkill_with_everything_uncommitted_repeats_no_call_and_no_outcome(
    kafka_bootstrap: str, rig: Rig, tmp_path: Path
) -> None:
    """All applied, nothing committed, SIGKILL: the restart reads back, calls nothing, commits."""
    sim = Simulator()
    settings = await rig.prepare(sim, partitions=3, batch_window_ms=50)
    events = [order_placed(str(880_000 + i), 6000.0) for i in range(EVENTS)]
    await produce_events(kafka_bootstrap, events, {"order.placed": rig.topic})
    tally = OutcomeTally({expected_command_id(e) for e in events})

    # Commits only on the hour: the kill finds every outcome published and nothing committed.
    async with service_process(
        tmp_path / "killed.log", **child_settings(settings, commit_interval_ms=3_600_000)
    ) as doomed:
        await read_topic(kafka_bootstrap, settings.outcomes_topic, until=tally, timeout_s=60)
        doomed.process.send_signal(signal.SIGKILL)
        assert await doomed.wait_exit(timeout_s=10) == -signal.SIGKILL
    committed_at_kill = await committed_offsets(kafka_bootstrap, settings.group_id)
    calls_before = sim.ledger.totals()

    async with running_service(settings) as service:
        committed = await wait_caught_up(
            kafka_bootstrap, settings.group_id, [rig.topic], timeout_s=30
        )
        assert service.ops_port is not None
        samples = await scrape(service.ops_port)
    outcomes = await read_topic(
        kafka_bootstrap, settings.outcomes_topic, until=lambda r: len(r) >= EVENTS, timeout_s=30
    )
    recount = OutcomeTally(tally.expected)
    recount(outcomes)

    assert sum(committed_at_kill.values()) == 0
    assert calls_before == {"ENROL": EVENTS}
    assert sim.ledger.totals() == {"ENROL": EVENTS}
    assert sim.ledger.duplicates() == {}
    assert recount.duplicates == 0
    assert Counter(recount.statuses.values()) == {"applied": EVENTS}
    assert value(samples, "promo_bridge_restored_commands_total") == EVENTS
    assert value(samples, "promo_bridge_outcomes_total") == 0
    assert committed == await end_offsets(kafka_bootstrap, [rig.topic])
