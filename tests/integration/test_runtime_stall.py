"""A stuck pipeline is not ready: work pending, nothing completing, /readyz says so."""

from __future__ import annotations

import pytest

from harness import Rig, order_placed, running_service
from kafka_tools import produce_events, wait_caught_up
from promo_bridge.simulator import Faults, Simulator
from runtime_support import probe, scrape, value, wait_until

pytestmark = pytest.mark.integration

EVENTS = 20


async def test_pending_work_with_nothing_completing_turns_readyz_503_until_it_moves(
    kafka_bootstrap: str, rig: Rig
) -> None:
    """Calls hang past the stall bound: 503 with making_progress false; answered, 200 again."""
    # Every call hangs longer than the stall bound (the client gives up after 5 s, then retries).
    # Only the bulk calls hang: the start-up credentials probe (a lookup) is answered.
    sim = Simulator(
        faults=Faults(timeout_rate=1.0, timeout_seconds=120, endpoints=("enrolAndEarn",))
    )
    settings = await rig.prepare(
        sim,
        partitions=1,
        batch_window_ms=50,
        stall_timeout_s=1.5,
        capillary_read_timeout_s=5,
    )
    events = [order_placed(str(895_000 + i), 6000.0) for i in range(EVENTS)]
    await produce_events(kafka_bootstrap, events, {"order.placed": rig.topic})

    async with running_service(settings) as service:
        port = service.ops_port
        assert port is not None

        async def readyz(expected: int) -> bool:
            status, _ = await probe(port, "/readyz")
            return status == expected

        async def stuck_reported() -> bool:
            _, body = await probe(port, "/readyz")
            return body["checks"]["making_progress"] is False

        await wait_until(stuck_reported, timeout_s=30, what="/readyz: not making progress")
        status, body = await probe(port, "/readyz")
        stuck = await scrape(port)
        sim.set_faults(Faults())
        await wait_caught_up(kafka_bootstrap, settings.group_id, [rig.topic], timeout_s=120)
        await wait_until(lambda: readyz(200), timeout_s=10, what="/readyz 200 once it moved")
        moving = await scrape(port)

    assert status == 503
    assert body["checks"]["making_progress"] is False
    assert body["checks"]["api_authenticated"] is True
    assert value(stuck, "promo_bridge_seconds_without_progress") >= 1.5
    assert value(stuck, "promo_bridge_pending_commands") == EVENTS
    assert value(moving, "promo_bridge_seconds_without_progress") == 0
    assert value(moving, "promo_bridge_outcomes_total", status="applied") == EVENTS
