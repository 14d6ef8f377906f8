"""End-to-end benchmark on a real broker: the service against a bare aiokafka loop (issue 13).

Run: make bench-e2e ARGS="--events 5000 --rounds 1"   or   .venv/bin/python bench/bench_e2e.py

One broker (scripts/kafka_broker.py) and one API simulator, each a process of its own, serve
every run; each run gets fresh topics (6 input partitions) and a fresh group, a backlog of
order events produced before its process starts, and is timed from the process's start to the
group's committed offsets reaching the end of every input partition. Rounds interleave the
variants, so a slow spell of the machine spreads over all of them:

  bare         a bare aiokafka loop: fetch, decode JSON, produce one record, commit
  bare-uvloop  the same loop on uvloop's event loop, the one the service runs on
  floor        the loop on uvloop writing what the service must have acknowledged: intent groups,
               outcomes of the service's size, tombstones (no rules, no API, no bookkeeping)
  durable      the service with its defaults (durable state on: an intent before each call)
  asyncio      the service on asyncio's own event loop (PROMO_BRIDGE_EVENT_LOOP=asyncio)
  volatile     the service with PROMO_BRIDGE_DURABLE_STATE=false
  no-match     the service on events under the rules' threshold: no command at all
  baseline     with --baseline REV: the service's code at git revision REV, defaults as durable

Then the latency mode: the service (defaults, API at 20 ms) at a steady event rate, and the
p50/p95/p99 of event-to-outcome latency; once at --latency-rate (1,000 events/s) and once at
--capacity-fraction (0.8) of the events/s the service itself reached above. Stdout gets the
figures; progress goes to stderr; .run/bench/e2e/ keeps every process's log and the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The broker harness and the chaos rig live in scripts/, which is not a package.
sys.path.insert(0, str(ROOT / "scripts"))

from chaos_rig import PARTITIONS, Rig, open_rig, say  # noqa: E402
from e2e_latency import measure_latency  # noqa: E402
from e2e_runs import Measurement, Variant, measure_run, write_rules  # noqa: E402

NAME = "e2e"
RUN_ROOT = ROOT / ".run" / "bench"
# No call budget in the way: the benchmark measures the service, not the org's allowance.
CALLS_PER_MINUTE = 10_000_000
VARIANTS = (
    Variant("bare", "bare aiokafka loop", service=False),
    Variant("bare-uvloop", "bare loop on uvloop", service=False, bare_args=("--loop", "uvloop")),
    Variant(
        "floor",
        "floor: the service's writes",
        service=False,
        bare_args=("--loop", "uvloop", "--writes", "service"),
        bare_writes_state=True,
    ),
    Variant("durable", "service, durable state on"),
    Variant("asyncio", "service on asyncio's loop", settings={"EVENT_LOOP": "asyncio"}),
    Variant("volatile", "service, durable state off", settings={"DURABLE_STATE": "false"}),
    Variant("no-match", "service, no rule matches", matching=False),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="backlog per run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument(
        "--commands-per-event", type=int, choices=(1, 2), default=1, help="1: enrol; 2: + earn"
    )
    parser.add_argument(
        "--api-latency-ms", type=float, default=0.0, help="simulator latency, throughput runs"
    )
    parser.add_argument(
        "--latency-rate", type=float, default=1000.0, help="events/s of the latency mode; 0: skip"
    )
    parser.add_argument("--latency-duration-s", type=float, default=30.0)
    parser.add_argument("--latency-window-ms", type=int, default=500, help="BATCH_WINDOW_MS")
    parser.add_argument("--latency-api-ms", type=float, default=20.0, help="simulator latency")
    parser.add_argument(
        "--capacity-fraction",
        type=float,
        default=0.8,
        help="latency again at this fraction of the measured events/s (durable); 0: skip",
    )
    parser.add_argument("--skip-throughput", action="store_true", help="only the latency mode")
    parser.add_argument(
        "--variants",
        default=",".join(v.key for v in VARIANTS),
        help="comma-separated subset of: " + ", ".join(v.key for v in VARIANTS),
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the service's code at this git revision (variant baseline), interleaved",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy samples each service run: .run/bench/e2e/profiles/<run>.txt",
    )
    return parser.parse_args(argv)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _num(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _calls(calls: int, optimum: int) -> str:
    return f"{calls}/{optimum} ({calls / optimum:.3f})" if optimum else f"{calls}/0"


def mean_rate(measurements: list[Measurement], variant: str) -> float | None:
    """A variant's events/s, averaged over its rounds (runs that timed out left out)."""
    return _mean([r for m in measurements if m.variant == variant and (r := m.events_per_s)])


def cpu_us(measurements: list[Measurement], variant: str) -> tuple[float | None, float | None]:
    """A variant's CPU over all its runs, per event and per command (None where there were none)."""
    runs = [m for m in measurements if m.variant == variant]
    cpu_s = sum(m.cpu_s for m in runs)
    events, commands = sum(m.events for m in runs), sum(m.commands for m in runs)
    return (
        cpu_s / events * 1e6 if events else None,
        cpu_s / commands * 1e6 if commands else None,
    )


def table(measurements: list[Measurement], variants: tuple[Variant, ...]) -> list[str]:
    """The rows: one per variant, rates averaged over rounds, CPU over all events."""
    bare_rate = mean_rate(measurements, "bare")
    header = (
        f"{'variant':<28} {'events/s':>9} {'x bare':>6} {'CPU us/event':>12} {'CPU us/cmd':>10}"
        f" {'core %':>6} {'peak RSS MB':>11} {'start-up s':>10} {'calls/optimum':>18}"
        "  events/s per round"
    )
    rows = [header]
    for variant in variants:
        runs = [m for m in measurements if m.variant == variant.key]
        if not runs:
            continue
        rate = mean_rate(measurements, variant.key)
        per_event_us, per_command_us = cpu_us(measurements, variant.key)
        cpu_s = sum(m.cpu_s for m in runs)
        calls, optimum = sum(m.calls for m in runs), sum(m.optimum_calls for m in runs)
        elapsed_s = sum(m.elapsed_s or 0 for m in runs)
        rows.append(
            f"{variant.label:<28} {_num(rate):>9}"
            f" {_num(rate / bare_rate if rate and bare_rate else None, '.2f'):>6}"
            f" {_num(per_event_us):>12}"
            f" {_num(per_command_us):>10}"
            f" {_num(cpu_s / elapsed_s * 100 if elapsed_s else None):>6}"
            f" {_num(max((m.peak_rss_mb for m in runs), default=None)):>11}"
            f" {_num(_mean([m.start_up_s for m in runs]), '.1f'):>10}"
            f" {_calls(calls, optimum):>18}"
            f"  {' '.join(_num(m.events_per_s) if m.elapsed_s else 'timeout' for m in runs)}"
        )
    loads = [m.load_1m for m in measurements]
    rows.append(f"load average (1 min) as runs ended: {min(loads):.1f} to {max(loads):.1f}")
    durable, on_asyncio = mean_rate(measurements, "durable"), mean_rate(measurements, "asyncio")
    bare_uvloop = mean_rate(measurements, "bare-uvloop")
    if durable and bare_uvloop:
        rows.append(
            f"service vs the bare loop on the same event loop (uvloop): {durable / bare_uvloop:.2f}"
        )
    if durable and on_asyncio:
        rows.append(
            f"uvloop: the service's events/s on uvloop / on asyncio = {durable / on_asyncio:.2f}"
        )
    # The floor writes one enrolment's records an event: only with one command an event (the
    # service's CPU per command then equals its CPU per event) is that the same work.
    floor_us, _ = cpu_us(measurements, "floor")
    durable_event_us, durable_us = cpu_us(measurements, "durable")
    if floor_us and durable_us and durable_us == durable_event_us:
        rows.append(
            f"the service's CPU per command above the floor's per event (its Kafka writes):"
            f" {durable_us - floor_us:.0f} us ({durable_us:.0f} - {floor_us:.0f})"
        )
    baseline = mean_rate(measurements, "baseline")
    if durable and baseline:
        rows.append(f"this checkout vs the baseline revision: events/s {durable / baseline:.2f}")
    volatile = mean_rate(measurements, "volatile")
    if durable and volatile:
        rows.append(
            f"price of durable state: events/s off / on = {volatile / durable:.2f}"
            f" (on runs at {durable / volatile:.2f} of off)"
        )
    return rows


def baseline_variant(revision: str, directory: Path) -> Variant:
    """The service's code at a git revision, exported under `directory` (Python only)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    code = directory / f"baseline-{sha}"
    if not code.exists():
        archive = subprocess.run(
            ["git", "archive", sha, "service"], cwd=ROOT, check=True, capture_output=True
        ).stdout
        code.mkdir(parents=True)
        subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    return Variant("baseline", f"service at {sha}", code=code / "service")


async def throughput(
    rig: Rig, args: argparse.Namespace, rules: dict[int, Path]
) -> list[Measurement]:
    """Every variant in every round, interleaved; the table printed as it ends."""
    per_event = args.commands_per_event
    print(
        f"throughput: {args.events:,} order events a run, {PARTITIONS} partitions,"
        f" {args.rounds} round(s) interleaved, {per_event} command(s) per matching event,"
        f" API {args.api_latency_ms:g} ms",
        flush=True,
    )
    variants = VARIANTS
    if args.baseline:
        variants += (baseline_variant(args.baseline, RUN_ROOT),)
    measurements = [
        await measure_run(
            rig,
            variant,
            round_number,
            args.events,
            per_event,
            rules[per_event],
            profile_dir=rig.directory / "profiles" if args.profile else None,
        )
        for round_number in range(1, args.rounds + 1)
        for variant in variants
        if variant.key in args.variants.split(",") or variant.key == "baseline"
    ]
    (rig.directory / "throughput.json").write_text(
        json.dumps([asdict(m) for m in measurements], indent=2)
    )
    for row in table(measurements, variants):
        print(row, flush=True)
    return measurements


async def latency(
    rig: Rig, args: argparse.Namespace, rules_file: Path, rate: float, label: str
) -> None:
    """One latency run at `rate` events/s; its line printed after `label`."""
    figures = await measure_latency(
        rig,
        rules_file,
        rate_per_s=rate,
        duration_s=args.latency_duration_s,
        window_ms=args.latency_window_ms,
        api_latency_ms=args.latency_api_ms,
    )
    print(f"{label}: {figures.line()}", flush=True)


async def run(rig: Rig, args: argparse.Namespace) -> None:
    rules = write_rules(rig.directory)
    rules_file = rules[args.commands_per_event]
    # open_rig adds jitter as large as the latency; these runs want the latency alone.
    await rig.admin("faults", {"latency_ms": args.api_latency_ms, "jitter_ms": 0})
    print(
        f"bench-e2e: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the start",
        flush=True,
    )
    capacity = None
    if not args.skip_throughput:
        capacity = mean_rate(await throughput(rig, args, rules), "durable")
    if args.latency_rate > 0:
        await latency(rig, args, rules_file, args.latency_rate, "fixed rate")
    if capacity and args.capacity_fraction > 0:
        # The service's own capacity: its default settings' events/s on the backlog above.
        rate = args.capacity_fraction * capacity
        await latency(rig, args, rules_file, rate, f"{args.capacity_fraction:g} x capacity")
    say(NAME, f"logs and figures under {rig.directory}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with open_rig(NAME, args.api_latency_ms, CALLS_PER_MINUTE, run_root=RUN_ROOT) as rig:
        asyncio.run(run(rig, args))


if __name__ == "__main__":
    main()
