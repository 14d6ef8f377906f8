"""Instances of one group sharing the org's API budget, measured at a rate-limited simulator.

Shared by tests/integration/test_runtime_budget_share.py (one window per phase, in CI) and
bench/bench_budget.py (longer, by hand). Every instance runs in this process against the real
broker; the simulator answers 429 beyond `budget` calls in any sliding 60 s window, exactly as
the service is told the org's budget is. Each event makes one unEnroll call (its batch limit is
1), so a backlog of events is a backlog of calls: the instances are saturated.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import order_placed, running_service, service_settings, write_rules
from kafka_tools import create_topics, produce
from promo_bridge.runtime import Service
from promo_bridge.settings import Settings
from promo_bridge.simulator import CallRecord, Faults, Simulator, serve
from runtime_support import encode, wait_until

RULES_UNENROLL_EVERY_ORDER = """\
program_id: 2714
targets:
  monthly-milestone: {target_group_id: 12, target_id: 34}
rules:
  - name: unenroll-every-order
    on: order.placed
    when: "true"
    then: [{unenroll: monthly-milestone}]
"""
ENDPOINT = "unEnroll"
# The simulator's window, and the service's budget window in production settings.
WINDOW_S = 60.0
# Rebalances with three members and a drain each take seconds; this bounds the wait.
SETTLE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Window:
    """Calls the simulator answered (not 429) in one full window of one phase."""

    phase: str
    instances: int
    start: float
    calls: int


@dataclass
class BudgetRun:
    """What the simulator saw: per-window calls, 429 answers, the busiest sliding window."""

    budget: int
    windows: list[Window] = field(default_factory=list)
    throttled: int = 0
    busiest_window: int = 0
    settle_s: dict[str, float] = field(default_factory=dict)


def _answered(records: Sequence[CallRecord], start: float, end: float) -> int:
    return sum(
        1
        for r in records
        if r.endpoint == ENDPOINT and start <= r.at < end and r.status not in {None, 429}
    )


def busiest_window(records: Sequence[CallRecord], window_s: float = WINDOW_S) -> int:
    """The most answered calls of the endpoint in any window of `window_s` (sliding)."""
    times = sorted(r.at for r in records if r.endpoint == ENDPOINT and r.status != 429)
    most, first = 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - window_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def budget_limit(service: Service) -> int:
    """The calls per minute `service` may make to the scenario's endpoint now."""
    return next((b.limit for b in service.status().budgets if b.endpoint == ENDPOINT), -1)


async def _settled(services: Sequence[Service], budget: int, partitions: int) -> None:
    """Until every instance holds an equal share of the partitions and has work to call with.

    An assigned partition reads back its outcomes before its records are fetched: until then
    the instance has its share and nothing to spend it on.
    """
    share = partitions // len(services)
    expected = budget * share // partitions
    await wait_until(
        lambda: all(budget_limit(s) == expected and s.status().pending > 0 for s in services),
        timeout_s=SETTLE_TIMEOUT_S,
        what=f"{len(services)} instances at {expected} calls/min each",
    )


def _progress(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} budget scenario: {line}", file=sys.stderr, flush=True)


async def _flowing(sim: Simulator, budget: int) -> None:
    """Until the simulator answered the whole budget's rate over the last few seconds.

    Every instance shares this process's event loop: right after a rebalance the instances
    read back and fetch their backlogs, which stalls everyone's calls for a moment. A window
    measured from then would count that, not the split.
    """
    recent_s = 5.0

    def full_rate() -> bool:
        now = time.time()
        return _answered(sim.calls, now - recent_s, now) >= 0.97 * budget * recent_s / WINDOW_S

    await wait_until(full_rate, timeout_s=SETTLE_TIMEOUT_S, what="calls at the budget's rate")


async def _until(deadline: float) -> None:
    # A measurement period of wall-clock length, not a wait for something to happen.
    await asyncio.sleep(max(0.0, deadline - time.time()))


async def _measure(
    sim: Simulator, run: BudgetRun, phase: str, instances: int, windows: int
) -> None:
    start = time.time()
    await _until(start + windows * WINDOW_S)
    records = sim.calls
    for index in range(windows):
        begin = start + index * WINDOW_S
        run.windows.append(
            Window(phase, instances, begin, _answered(records, begin, begin + WINDOW_S))
        )


async def budget_rig(
    exits: contextlib.AsyncExitStack,
    bootstrap: str,
    directory: Path,
    unique: str,
    *,
    budget: int,
    partitions: int,
) -> tuple[Simulator, Settings]:
    """A simulator answering 429 beyond `budget` calls a window, and settings calling it.

    The settings give the service `budget` as the org's budget, one unEnroll per order, and
    the topics (created here); the simulator stops with `exits`.
    """
    sim = Simulator(faults=Faults(rate_limit_per_minute=budget))
    api = await exits.enter_async_context(serve(sim))
    settings = service_settings(
        bootstrap=bootstrap,
        api_url=api.base_url,
        rules_file=write_rules(directory, RULES_UNENROLL_EVERY_ORDER),
        unique=unique,
        topics=[f"events-{unique}"],
        capillary_calls_per_minute=budget,
        capillary_lookup_calls_per_minute=budget,
        capillary_unenroll_not_enrolled_codes=[310120],
        # Revoked partitions' backlog is not worth waiting for here: it is read again.
        drain_timeout_s=2.0,
        batch_window_ms=50,
    )
    await create_topics(
        bootstrap,
        {
            settings.input_topics[0]: partitions,
            settings.outcomes_topic: partitions,
            settings.dlq_topic: 1,
        },
    )
    return sim, settings


async def run_budget_scenario(
    bootstrap: str,
    directory: Path,
    unique: str,
    *,
    budget: int,
    partitions: int = 6,
    instances: int = 3,
    windows_per_phase: int = 1,
) -> BudgetRun:
    """`instances` in one group, then one fewer (stopped gracefully); a phase each, measured.

    A phase's windows start once every instance holds its new share (the settle time is
    recorded); they are full `WINDOW_S` windows of the simulator's call log.
    """
    run = BudgetRun(budget)
    async with contextlib.AsyncExitStack() as exits:
        sim, settings = await budget_rig(
            exits, bootstrap, directory, unique, budget=budget, partitions=partitions
        )
        topic = settings.input_topics[0]
        # Enough calls for every phase at the whole budget, and half again.
        seconds = (2 * windows_per_phase + 1) * WINDOW_S
        events = int(budget * seconds / WINDOW_S * 1.5)
        await produce(
            bootstrap,
            encode((order_placed(str(1_000_000 + n), 10.0) for n in range(events)), topic),
        )

        # One stack per instance, so one can be stopped alone; all stop at the end.
        stacks = [contextlib.AsyncExitStack() for _ in range(instances)]
        for stack in stacks:
            exits.push_async_callback(stack.aclose)
        services = list(
            await asyncio.gather(
                *(stack.enter_async_context(running_service(settings)) for stack in stacks)
            )
        )
        started = time.time()
        await _settled(services, budget, partitions)
        # The start-up credentials lookup waits for a share of the lookup budget: it must
        # go out once partitions are assigned.
        await wait_until(
            lambda: all(s.credentials_proven for s in services),
            timeout_s=SETTLE_TIMEOUT_S,
            what="credentials proven by every instance",
        )
        await _flowing(sim, budget)
        run.settle_s["start"] = round(time.time() - started, 1)
        _progress(f"{instances} instances settled; measuring {windows_per_phase} window(s)")
        await _measure(sim, run, "all", instances, windows_per_phase)

        _progress("stopping one instance")
        stopping = time.time()
        await stacks[-1].aclose()
        await _settled(services[:-1], budget, partitions)
        await _flowing(sim, budget)
        run.settle_s["one stopped"] = round(time.time() - stopping, 1)
        _progress(f"{instances - 1} instances settled; measuring {windows_per_phase} window(s)")
        await _measure(sim, run, "one stopped", instances - 1, windows_per_phase)

        records = sim.calls
        run.throttled = sum(1 for r in records if r.status == 429)
        run.busiest_window = busiest_window(records)
    return run
