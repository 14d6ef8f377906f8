"""A revocation that drains for longer than the session timeout keeps its member in the group."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import Rig, order_placed, running_service
from kafka_tools import produce
from promo_bridge.simulator import Faults, Simulator
from runtime_support import encode, scrape, value, wait_until

pytestmark = pytest.mark.integration

# Longer than the consumer's 10 s session timeout, shorter than the 20 s drain timeout.
CALL_S = 14.0


def partition_counts(*services: object) -> tuple[int, ...]:
    return tuple(len(s.status().partitions) for s in services)  # type: ignore[attr-defined]


async def test_a_member_draining_longer_than_the_session_timeout_is_not_dropped(
    kafka_bootstrap: str, rig: Rig, tmp_path: Path
) -> None:
    """Calls take 14 s: a second member joins, the first drains its calls, one rebalance: 3 each."""
    sim = Simulator(faults=Faults(latency_ms=CALL_S * 1000, endpoints=("enrolAndEarn",)))
    settings = await rig.prepare(sim, partitions=6, batch_window_ms=50)
    orders = [order_placed(str(800_000 + n), 6000.0) for n in range(60)]
    await produce(kafka_bootstrap, encode(orders, rig.topic))
    async with running_service(settings) as first:

        def calls_out() -> bool:
            status = first.status()
            used = sum(b.used for b in status.budgets if b.endpoint == "enrolAndEarn")
            return len(status.partitions) == 6 and used > 0

        await wait_until(calls_out, timeout_s=30, what="first member assigned, calls out")
        async with running_service(settings) as second:
            await wait_until(
                lambda: partition_counts(first, second) == (3, 3),
                timeout_s=2 * CALL_S + 30,
                what="3 partitions each",
            )
            assigned = [
                value(await scrape(s.ops_port), "promo_bridge_partitions_assigned_total")
                for s in (first, second)
            ]
    # 6, then 3 after the one rebalance; 3 for the newcomer. Dropped from that rebalance while
    # draining (14 s, past the 10 s session timeout), the first member would have rejoined
    # and started another, in which the second, with calls out by then, drained in turn.
    assert assigned == [9, 3]
