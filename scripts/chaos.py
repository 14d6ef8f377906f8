"""`make chaos`: the service under process, broker and API faults, on a real broker.

    make chaos                                   # full sizes, about 8 minutes
    make chaos ARGS=--quick                      # small sizes, about 2 minutes
    make chaos ARGS='--only sigkill --kills 3'   # one experiment, own sizes
    .venv/bin/python scripts/chaos.py --help

Each experiment runs its own Kafka broker (scripts/kafka_broker.py), the Capillary simulator
(`promo-bridge simulate-api`) and one or two `promo-bridge run` instances, each a separate
process, and prints ONE line of figures on stdout (progress goes to stderr). Logs and a
summary.json per experiment are under .run/chaos/<experiment>/. See docs/chaos.md.

Exit status: 0 when every experiment lost no command and committed the end of every input
partition; --strict also fails on duplicate EARN side effects or duplicate outcome records.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from aiokafka.errors import KafkaError

import kafka_broker
from chaos_measure import STOP_TIMEOUT_S, Figures, Trial, measure, unmeasured
from chaos_rig import (
    COMMANDS_PER_EVENT,
    POLL_INTERVAL_S,
    Rig,
    ServiceChild,
    open_rig,
    order_events,
    say,
    wait_for,
)

# What an experiment may run into and still print its line; anything else is a bug here.
FAILURES = (RuntimeError, OSError, KafkaError, httpx.HTTPError, ValueError, KeyError)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How big each experiment is, how slow the API answers, how long a wait may last."""

    sigkill_events: int
    kills: int
    churn_events: int
    churn_restarts: int
    churn_rate_per_s: int
    broker_events: int
    outage_s: float
    fault_commands: int
    fault_rate: float
    catchup_timeout_s: float
    api_latency_ms: float
    calls_per_minute: int


FULL = Plan(
    sigkill_events=50_000,
    kills=5,
    churn_events=20_000,
    churn_restarts=6,
    churn_rate_per_s=200,
    broker_events=20_000,
    outage_s=30,
    fault_commands=10_000,
    fault_rate=0.10,
    catchup_timeout_s=900,
    # Plus up to as much again: a bulk call of a real API takes its time, and without it the
    # service drains a backlog between two progress polls.
    api_latency_ms=100,
    # The service's own budget per endpoint: it paces a backlog (10 calls/s of 100 commands
    # is ~1,000 commands/s), so kills and outages fall mid-stream, several commits apart.
    calls_per_minute=600,
)
QUICK = dataclasses.replace(
    FULL,
    sigkill_events=2_000,
    kills=2,
    churn_events=2_000,
    churn_restarts=3,
    churn_rate_per_s=100,
    broker_events=2_000,
    outage_s=10,
    fault_commands=4_000,
    catchup_timeout_s=120,
    calls_per_minute=300,
)


# -- experiments ---------------------------------------------------------------------------------


async def _backlog(trial: Trial, count: int) -> int:
    """Create the topics and produce `count` order events before any service runs; commands."""
    await trial.rig.create_topics()
    trial.events = order_events(trial.name, count)
    await trial.rig.produce(trial.events)
    say(trial.name, f"backlog of {count} events produced")
    return count * COMMANDS_PER_EVENT


async def sigkill(trial: Trial, plan: Plan) -> None:
    """SIGKILL the only instance `kills` times at spaced points of a backlog, restarting it."""
    rig = trial.rig
    commands = await _backlog(trial, plan.sigkill_events)
    trial.start_clock()
    child = await rig.start_service()
    step = commands // (plan.kills + 1)
    trial.extra["kills"] = 0
    for number in range(1, plan.kills + 1):
        if not await rig.wait_outcomes(number * step, plan.catchup_timeout_s):
            trial.note(f"outcomes never reached {number * step}: no more kills")
            break
        rig.kill(child)
        trial.extra["kills"] = number
        say(trial.name, f"SIGKILLed service-{child.number} at >= {number * step} outcomes")
        child = await rig.start_service()
    await trial.settle(plan.catchup_timeout_s)


async def _produce_paced(rig: Rig, events: list[dict[str, Any]], per_s: int) -> None:
    """Produce `events` in one chunk of `per_s` per second, as live traffic would arrive."""
    started = time.monotonic()
    for second, first in enumerate(range(0, len(events), per_s)):
        await rig.produce(events[first : first + per_s])
        # Pacing, not synchronisation: the next chunk is due one second after this one.
        await asyncio.sleep(max(0.0, started + second + 1 - time.monotonic()))


async def _restart(trial: Trial, child: ServiceChild) -> tuple[ServiceChild, float]:
    """SIGTERM an instance, wait for it to exit, start a new one; the new one, seconds to exit."""
    started = time.monotonic()
    code = await trial.rig.terminate(child, STOP_TIMEOUT_S)
    exit_s = time.monotonic() - started
    if code is None:
        trial.note(f"service-{child.number} still running {STOP_TIMEOUT_S:g} s after SIGTERM")
        trial.rig.kill(child)
    elif code != 0:
        trial.note(f"service-{child.number} exited with {code} on SIGTERM")
    return await trial.rig.start_service(), exit_s


async def sigterm_churn(trial: Trial, plan: Plan) -> None:
    """Two instances in one group; SIGTERM and restart them in turn while events arrive."""
    rig = trial.rig
    await rig.create_topics()
    trial.events = order_events(trial.name, plan.churn_events)
    commands = len(trial.events) * COMMANDS_PER_EVENT
    trial.start_clock()
    pair = [await rig.start_service(), await rig.start_service()]
    producer = asyncio.create_task(_produce_paced(rig, trial.events, plan.churn_rate_per_s))
    exit_times_s: list[float] = []
    try:
        step = commands // (plan.churn_restarts + 1)
        for number in range(1, plan.churn_restarts + 1):
            if not await rig.wait_outcomes(number * step, plan.catchup_timeout_s):
                trial.note(f"outcomes never reached {number * step}: no more restarts")
                break
            which = (number - 1) % len(pair)
            say(trial.name, f"SIGTERM service-{pair[which].number} at >= {number * step} outcomes")
            pair[which], exit_s = await _restart(trial, pair[which])
            exit_times_s.append(exit_s)
        await producer
    finally:
        producer.cancel()
    trial.extra["restarts"] = len(exit_times_s)
    trial.extra["max_exit_s"] = max(exit_times_s, default=0.0)
    await trial.settle(plan.catchup_timeout_s)


async def _readyz(port: int) -> tuple[str, list[str]]:
    """GET /readyz: its status ("200", "503", or "error") and the checks that failed."""
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            response = await client.get(f"http://127.0.0.1:{port}/readyz")
    except httpx.HTTPError:
        return "error", []
    try:
        checks = response.json().get("checks", {})
    except ValueError:
        checks = {}
    return str(response.status_code), sorted(name for name, ok in checks.items() if not ok)


async def _sample_readyz(
    child: ServiceChild, duration_s: float
) -> tuple[Counter[str], Counter[str]]:
    """Sample /readyz every poll interval for `duration_s`; statuses and failed checks counted."""
    statuses: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        status, checks = await _readyz(child.ops_port or 0)
        statuses[status] += 1
        failed.update(checks)
        await asyncio.sleep(POLL_INTERVAL_S)  # the sampling rate; the deadline ends the loop
    return statuses, failed


async def broker_stop(trial: Trial, plan: Plan) -> None:
    """Stop the broker mid-backlog for `outage_s`, start it again; does the service recover?"""
    rig = trial.rig
    commands = await _backlog(trial, plan.broker_events)
    trial.start_clock()
    child = await rig.start_service()
    if not await rig.wait_outcomes(commands // 5, plan.catchup_timeout_s):
        trial.note(f"outcomes never reached {commands // 5} before the outage")
    await rig.stop_broker()
    say(trial.name, f"broker stopped; sampling /readyz for {plan.outage_s:g} s")
    statuses, failed = await _sample_readyz(child, plan.outage_s)
    trial.extra["readyz_outage"] = dict(statuses)
    trial.extra["unready_checks"] = dict(failed)
    await rig.restart_broker()
    restarted = time.monotonic()
    say(trial.name, "broker started again")

    async def ready() -> bool:
        return (await _readyz(child.ops_port or 0))[0] == "200"

    if await wait_for(ready, timeout_s=plan.catchup_timeout_s):
        trial.extra["ready_after_s"] = time.monotonic() - restarted
    else:
        trial.extra["ready_after_s"] = "never"
    await trial.settle(plan.catchup_timeout_s)
    trial.extra["same_process"] = "yes" if child.alive() else f"no (exit {child.proc.poll()})"


def fault_mix(rate: float) -> dict[str, Any]:
    """Simulator faults on `rate` of the calls: 5xx, 429 + Retry-After, timeouts, drops.

    Drops and timeouts come after the simulator applied the call (process_before_fault): the
    API did it, the client cannot know. The simulator answers 5xx and 429 before applying.
    """
    return {
        "error_rates": dict.fromkeys((500, 502, 503, 504), rate * 0.3 / 4),
        "rate_429": rate * 0.2,
        "retry_after_seconds": 1,
        "timeout_rate": rate * 0.25,
        "timeout_seconds": 5,
        "drop_rate": rate * 0.25,
        "process_before_fault": True,
        "seed": 20261121,
    }


async def api_faults(trial: Trial, plan: Plan) -> None:
    """A backlog against a simulator that faults on `fault_rate` of the calls."""
    rig = trial.rig
    await rig.admin("faults", fault_mix(plan.fault_rate))
    await _backlog(trial, plan.fault_commands // COMMANDS_PER_EVENT)
    trial.start_clock()
    # Shorter than the simulator's 5 s hold, so a held call times out on the client's side.
    await rig.start_service(CAPILLARY_READ_TIMEOUT_S="2")
    await trial.settle(plan.catchup_timeout_s)
    calls = (await rig.admin("calls"))["calls"]
    faults = Counter(
        c["outcome"].removeprefix("fault:") for c in calls if c["outcome"] != "processed"
    )
    trial.extra["calls"] = len(calls)
    trial.extra["faults"] = dict(faults)
    trial.extra["applied_then_faulted"] = sum(
        1 for c in calls if c["processed"] and c["outcome"] in ("fault:drop", "fault:timeout")
    )


Drive = Callable[[Trial, Plan], Awaitable[None]]
EXPERIMENTS: dict[str, Drive] = {
    "sigkill": sigkill,
    "sigterm-churn": sigterm_churn,
    "broker-stop": broker_stop,
    "api-faults": api_faults,
}


# -- running -------------------------------------------------------------------------------------


async def _run_trial(name: str, rig: Rig, drive: Drive, plan: Plan) -> Figures:
    """Drive one experiment, then measure it, whatever happened while driving."""
    trial = Trial(name, rig)
    try:
        await drive(trial, plan)
    except FAILURES as exc:
        trial.note(f"aborted: {exc!r}")
    try:
        return await measure(trial)
    except FAILURES as exc:
        return unmeasured(trial, repr(exc))


def run_experiment(name: str, plan: Plan) -> Figures:
    """One experiment on a rig of its own; its figures."""
    say(name, "starting broker and simulator")
    try:
        with open_rig(name, plan.api_latency_ms, plan.calls_per_minute) as rig:
            return asyncio.run(_run_trial(name, rig, EXPERIMENTS[name], plan))
    except (*FAILURES, kafka_broker.BrokerError) as exc:
        say(name, f"rig failed: {exc!r}")
        return Figures(name, 0, 0, None, {}, None, committed_end=False, time_s=0.0)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Plan]:
    """The options, and the plan: the preset (full or --quick) with any size flag on top."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (about 2 minutes)")
    parser.add_argument("--only", choices=list(EXPERIMENTS), help="run one experiment")
    parser.add_argument(
        "--strict", action="store_true", help="also fail on duplicate EARN or outcome records"
    )
    knobs = parser.add_argument_group("plan (default: the full run's; --quick: smaller)")
    for knob in dataclasses.fields(Plan):
        flag = "--" + knob.name.replace("_", "-")
        kind = int if knob.type == "int" else float
        full, quick = getattr(FULL, knob.name), getattr(QUICK, knob.name)
        knobs.add_argument(flag, type=kind, help=f"full {full}, quick {quick}")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    chosen = {f.name: getattr(args, f.name) for f in dataclasses.fields(Plan)}
    return args, dataclasses.replace(preset, **{k: v for k, v in chosen.items() if v is not None})


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the suite like Ctrl-C does, through every cleanup on the way."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the chosen experiments; the exit status."""
    args, plan = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    # This script's own clients retry through leader moves and outages; their warnings would
    # only clutter the progress lines (the service's logs are in its files).
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    names = [args.only] if args.only else list(EXPERIMENTS)
    results = []
    try:
        for name in names:
            figures = run_experiment(name, plan)
            print(figures.line(), flush=True)
            results.append(figures)
    except KeyboardInterrupt:
        print("chaos: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    failed = [f.name for f in results if not f.passed(args.strict)]
    criteria = "lost 0, committed=end" + (", no duplicate EARN or outcome" if args.strict else "")
    verdict = f"FAIL ({', '.join(failed)})" if failed else "PASS"
    print(f"chaos: {verdict}; criteria: {criteria}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
