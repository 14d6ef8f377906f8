"""The org's API budget follows partitions, on the real broker and the simulator over HTTP.

In CI: each instance's share follows the group as instances join and leave one at a time.
Set PROMO_BRIDGE_TEST_BUDGET_WINDOWS=1 to also run the full scenario (`make bench-budget` prints
it): three instances started at once, then two, each phase measured over a full 60 s window
at the simulator. Three consumers joining a new group at the same moment sometimes get no
assignment for minutes (a group-formation matter, seen with the split off too), which would
make CI flaky; joining one at a time does not.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from budget_scenario import (
    ENDPOINT,
    SETTLE_TIMEOUT_S,
    budget_limit,
    budget_rig,
    run_budget_scenario,
)
from harness import order_placed, running_service
from kafka_tools import produce
from runtime_support import encode, wait_until

pytestmark = pytest.mark.integration

# Divisible by the 6 partitions: floor() loses nothing, so "whole" can be held to 99 %.
BUDGET = 600
WINDOWS = os.environ.get("PROMO_BRIDGE_TEST_BUDGET_WINDOWS") == "1"


async def test_each_instance_takes_its_share_as_instances_join_and_leave(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """One instance holds the whole budget, two hold half each, and one again the whole; no 429."""
    async with contextlib.AsyncExitStack() as exits:
        sim, settings = await budget_rig(
            exits, kafka_bootstrap, tmp_path, unique, budget=BUDGET, partitions=6
        )
        topic = settings.input_topics[0]
        await produce(
            kafka_bootstrap,
            encode((order_placed(str(2_000_000 + n), 10.0) for n in range(300)), topic),
        )
        first = await exits.enter_async_context(running_service(settings))
        await wait_until(
            lambda: budget_limit(first) == BUDGET, timeout_s=SETTLE_TIMEOUT_S, what="first: whole"
        )
        async with contextlib.AsyncExitStack() as second_stack:
            second = await second_stack.enter_async_context(running_service(settings))
            await wait_until(
                lambda: (budget_limit(first), budget_limit(second)) == (BUDGET // 2, BUDGET // 2),
                timeout_s=SETTLE_TIMEOUT_S,
                what="two instances: half each",
            )
        await wait_until(
            lambda: budget_limit(first) == BUDGET,
            timeout_s=SETTLE_TIMEOUT_S,
            what="first: whole again",
        )
        await wait_until(
            lambda: any(c.endpoint == ENDPOINT for c in sim.calls), timeout_s=30, what="calls made"
        )
    assert not [c for c in sim.calls if c.status == 429]


@pytest.mark.skipif(not WINDOWS, reason="PROMO_BRIDGE_TEST_BUDGET_WINDOWS=1 only")
async def test_instances_together_use_the_whole_budget_and_never_more(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """3 instances, then 2 after a graceful stop: >= 99 % of the org budget per window, no 429."""
    run = await run_budget_scenario(
        kafka_bootstrap, tmp_path, unique, budget=BUDGET, partitions=6, instances=3
    )
    print(
        f"\nbudget {BUDGET}/min; settled after {run.settle_s}; windows: "
        + ", ".join(f"{w.phase}: {w.calls}" for w in run.windows)
        + f"; busiest 60 s window {run.busiest_window}; 429: {run.throttled}"
    )
    assert [w.instances for w in run.windows] == [3, 2]
    for window in run.windows:
        assert window.calls >= 0.99 * BUDGET, window
    assert run.throttled == 0
    assert run.busiest_window <= BUDGET
