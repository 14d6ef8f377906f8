"""Graceful shutdown when the API hangs: bounded by the drain timeout, and nothing lost."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from harness import Rig, order_placed, running_service
from kafka_tools import (
    committed_offsets,
    end_offsets,
    produce_events,
    read_topic,
    wait_caught_up,
)
from promo_bridge.simulator import Faults, Simulator
from runtime_support import (
    OutcomeTally,
    child_settings,
    expected_command_id,
    scrape,
    service_process,
    value,
    wait_until,
)

pytestmark = pytest.mark.integration

EVENTS = 50
DRAIN_TIMEOUT_S = 2.0


async def test_sigterm_with_calls_hanging_exits_within_the_drain_bound_and_a_restart_finishes(
    kafka_bootstrap: str, rig: Rig, tmp_path: Path
) -> None:
    """Drain gives up at its bound, commits nothing incomplete, exits 0; a restart applies all."""
    # Every call hangs far longer than the drain bound (the simulator applies nothing, and
    # stops holding the connection when the client hangs up).
    sim = Simulator(faults=Faults(timeout_rate=1.0, timeout_seconds=120))
    settings = await rig.prepare(sim, partitions=2, batch_window_ms=50)
    topic = rig.topic
    events = [order_placed(str(840_000 + i), 6000.0) for i in range(EVENTS)]
    await produce_events(kafka_bootstrap, events, {"order.placed": topic})

    async with service_process(
        tmp_path / "stuck.log", **child_settings(settings, drain_timeout_s=DRAIN_TIMEOUT_S)
    ) as stuck:

        async def in_flight() -> bool:
            samples = await scrape(stuck.ops_port)
            return value(samples, "promo_bridge_batch_flushes_total") >= 1 and value(
                samples, "promo_bridge_pending_commands"
            ) == len(events)

        await wait_until(in_flight, timeout_s=30, what="every command pending, calls out")
        stuck.terminate()
        signalled = time.monotonic()
        exit_code = await stuck.wait_exit(timeout_s=30)
        exit_s = time.monotonic() - signalled
        committed_after_stop = await committed_offsets(kafka_bootstrap, settings.group_id)

        sim.set_faults(Faults())
        async with running_service(settings):
            committed = await wait_caught_up(
                kafka_bootstrap, settings.group_id, [topic], timeout_s=30
            )
            tally = OutcomeTally({expected_command_id(e) for e in events})
            await read_topic(kafka_bootstrap, settings.outcomes_topic, until=tally, timeout_s=30)

    # Bounded by the drain timeout, and said so.
    assert exit_code == 0, stuck.log_text()[-4000:]
    assert DRAIN_TIMEOUT_S <= exit_s < DRAIN_TIMEOUT_S + 3
    assert [e["pending"] for e in stuck.events("shutdown_drain_timeout")] == [EVENTS]
    # Nothing incomplete was committed, so the restart re-read every event.
    assert all(offset == 0 for offset in committed_after_stop.values())

    assert set(tally.seen) == tally.expected
    assert Counter(tally.statuses.values()) == {"applied": EVENTS}
    assert sim.ledger.totals() == {"ENROL": EVENTS}
    assert sim.ledger.duplicates() == {}
    assert committed == await end_offsets(kafka_bootstrap, [topic])
