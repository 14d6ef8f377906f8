"""The org's API budget follows partitions: three instances, then two, use it whole, never more."""

from __future__ import annotations

from pathlib import Path

import pytest

from budget_scenario import run_budget_scenario

pytestmark = pytest.mark.integration

# Divisible by the 6 partitions: floor() loses nothing, so "whole" can be held to 99 %.
BUDGET = 600


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
