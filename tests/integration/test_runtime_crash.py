"""SIGKILL: the next process redoes nothing that was done, nor anything that may have been.

Completed work is read back from the outcomes topic (co-partitioned with the input) from the
restore mark stored with the committed offsets, so re-read events make no call and no second
outcome record. A call that was out when the process died left an intent in the state topic:
the next process looks the customer up before sending it again.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from harness import Rig, order_placed, running_service
from kafka_tools import committed_offsets, end_offsets, produce_events, read_topic, wait_caught_up
from promo_bridge.simulator import Faults, Simulator
from runtime_support import (
    RULES_ENROL_THEN_EARN,
    OutcomeTally,
    child_settings,
    expected_command_id,
    review_submitted,
    scrape,
    service_process,
    value,
    wait_until,
)

pytestmark = pytest.mark.integration

EVENTS = 300
IN_FLIGHT = 40


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


async def test_sigkill_with_calls_in_flight_verifies_them_instead_of_calling_again(
    kafka_bootstrap: str, rig: Rig, tmp_path: Path
) -> None:
    """Applied calls unanswered at SIGKILL: the restart looks them up and calls nothing twice."""
    # Every call is applied, then its answer hangs: the kill finds each ENROL in flight.
    sim = Simulator(
        faults=Faults(timeout_rate=1.0, process_before_fault=True, endpoints=("enrolAndEarn",))
    )
    settings = await rig.prepare(sim, partitions=2, rules=RULES_ENROL_THEN_EARN, batch_window_ms=50)
    customers = [str(890_000 + i) for i in range(IN_FLIGHT)]
    events = [order_placed(c, 6000.0) for c in customers] + [review_submitted(c) for c in customers]
    await produce_events(
        kafka_bootstrap, events, {"order.placed": rig.topic, "review.submitted": rig.topic}
    )

    async with service_process(
        tmp_path / "killed.log",
        **child_settings(settings, capillary_read_timeout_s=120, capillary_max_attempts=1),
    ) as doomed:
        await wait_until(
            lambda: sim.ledger.total("ENROL") == IN_FLIGHT,
            timeout_s=60,
            what="every ENROL applied, its answer hanging",
        )
        doomed.process.send_signal(signal.SIGKILL)
        assert await doomed.wait_exit(timeout_s=10) == -signal.SIGKILL
    sim.set_faults(Faults())

    async with running_service(settings) as service:
        await wait_caught_up(kafka_bootstrap, settings.group_id, [rig.topic], timeout_s=60)
        assert service.ops_port is not None
        samples = await scrape(service.ops_port)
    outcomes = await read_topic(
        kafka_bootstrap,
        settings.outcomes_topic,
        until=lambda r: len(r) >= 2 * IN_FLIGHT,
        timeout_s=30,
    )
    by_action = Counter(
        (o.json()["action"], o.json()["status"], o.json()["verified_by"]) for o in outcomes
    )

    assert sim.ledger.totals() == {"ENROL": IN_FLIGHT, "EARN": IN_FLIGHT}
    assert sim.ledger.duplicates() == {}
    assert by_action == {
        ("enrol", "applied", "lookup"): IN_FLIGHT,
        ("earn", "applied", None): IN_FLIGHT,
    }
    assert value(samples, "promo_bridge_commands_verified_total", finding="applied") == IN_FLIGHT
