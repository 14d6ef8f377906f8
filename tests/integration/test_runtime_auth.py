"""Refused credentials pause consumption and report not ready; fixed, the service resumes."""

from __future__ import annotations

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
from promo_bridge.simulator import Credentials, Simulator
from runtime_support import OutcomeTally, expected_command_id, probe, scrape, value, wait_until

pytestmark = pytest.mark.integration

EVENTS = 60


async def test_wrong_credentials_pause_without_outcomes_then_resume_by_themselves(
    kafka_bootstrap: str, rig: Rig
) -> None:
    """401s: no outcome, not ready, auth_paused 1, partitions paused; fixed: all applied, ready."""
    # The org rotated the password; the service still sends the old one.
    sim = Simulator(credentials=Credentials(password="rotated-elsewhere"))
    settings = await rig.prepare(sim, partitions=2, batch_window_ms=50, unavailable_retry_s=0.5)
    topic = rig.topic
    events = [order_placed(str(830_000 + i), 6000.0) for i in range(EVENTS)]
    await produce_events(kafka_bootstrap, events, {"order.placed": topic})

    async with running_service(settings) as service:
        port = service.ops_port
        assert port is not None

        async def refused_and_paused() -> bool:
            status, body = await probe(port, "/readyz")
            samples = await scrape(port)
            return (
                status == 503
                and body["checks"]["api_authenticated"] is False
                and value(samples, "promo_bridge_auth_paused") == 1
                and value(samples, "promo_bridge_paused_partitions") == 2
            )

        await wait_until(refused_and_paused, timeout_s=20, what="auth pause")
        # It keeps probing (every unavailable_retry_s) and still issues nothing.
        refused_before = sum(1 for c in sim.calls if c.status == 401)
        await wait_until(
            lambda: sum(1 for c in sim.calls if c.status == 401) >= refused_before + 2,
            timeout_s=10,
            what="auth retried",
        )
        status, body = await probe(port, "/readyz")
        paused = await scrape(port)
        committed_while_paused = await committed_offsets(kafka_bootstrap, settings.group_id)
        effects_while_paused = sim.ledger.total()

        sim.set_credentials(password="server123")
        committed = await wait_caught_up(kafka_bootstrap, settings.group_id, [topic], timeout_s=30)
        tally = OutcomeTally({expected_command_id(e) for e in events})
        await read_topic(kafka_bootstrap, settings.outcomes_topic, until=tally, timeout_s=30)

        async def ready_again() -> bool:
            return (await probe(port, "/readyz"))[0] == 200

        await wait_until(ready_again, timeout_s=10, what="ready again")
        resumed = await scrape(port)

    # While refused: not ready for that reason only, paused, nothing published or committed.
    assert status == 503
    assert body["checks"] == {
        "partitions_assigned": True,
        "broker_reachable": True,
        "api_authenticated": False,
        "making_progress": True,
        "not_stopping": True,
    }
    assert value(paused, "promo_bridge_outcomes_total") == 0
    assert value(paused, "promo_bridge_partition_pauses_total", reason="auth") == 1
    assert value(paused, "promo_bridge_pending_commands") > 0
    # Stuck is visible: lag counts from the group's position, and the commit age grows.
    assert value(paused, "promo_bridge_consumer_lag") > 0
    assert value(paused, "promo_bridge_seconds_since_last_commit") > 0.8
    assert all(offset == 0 for offset in committed_while_paused.values())
    assert effects_while_paused == 0

    # Fixed: every command applied exactly once, never failed or rejected on the way.
    assert set(tally.seen) == tally.expected
    assert tally.duplicates == 0
    assert Counter(tally.statuses.values()) == {"applied": EVENTS}
    assert sim.ledger.totals() == {"ENROL": EVENTS}
    assert sim.ledger.duplicates() == {}
    assert value(resumed, "promo_bridge_auth_paused") == 0
    assert value(resumed, "promo_bridge_paused_partitions") == 0
    assert value(resumed, "promo_bridge_outcomes_total") == EVENTS
    assert value(resumed, "promo_bridge_outcomes_total", status="applied") == EVENTS
    ends = await end_offsets(kafka_bootstrap, [topic])
    assert committed == ends
    assert sum(ends.values()) == EVENTS


async def test_wrong_credentials_are_found_at_start_up_before_any_event(
    kafka_bootstrap: str,
    rig: Rig,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No event: the probe finds the refused password (not ready, one line); fixed, ready."""
    sim = Simulator(credentials=Credentials(password="rotated-elsewhere"))
    settings = await rig.prepare(sim, partitions=1, batch_window_ms=50)

    async with running_service(settings) as service:
        await wait_until(
            lambda: any(c.status == 401 for c in sim.calls),
            timeout_s=20,
            what="the probe refused",
        )
        await wait_until(
            lambda: service.readiness().reasons["partitions_assigned"],
            timeout_s=20,
            what="partitions assigned",
        )
        readiness = service.readiness()
        # Fixed by the org, still no event: the probe, retried, proves them and it turns ready.
        sim.set_credentials(password="server123")
        await wait_until(
            lambda: service.readiness().ready,
            timeout_s=20,
            what="ready once the credentials are accepted",
        )
    captured = capfd.readouterr()
    logged = captured.out + captured.err + caplog.text

    assert readiness.ready is False
    assert readiness.reasons["api_authenticated"] is False
    assert readiness.reasons["broker_reachable"] is True
    assert sim.ledger.total() == 0
    assert "capillary_credentials_refused" in logged
    assert "PROMO_BRIDGE_CAPILLARY_TILL_CODE/_PASSWORD" in logged
    assert "server123" not in logged
