"""One measured run of bench_e2e: fresh topics and group, a backlog, one process, its figures.

The broker, the simulator and the service come from scripts/chaos_rig.py (one rig for the whole
benchmark); each run gets topics and a consumer group of its own on it, and the simulator's
state and call log are reset before it, so every figure belongs to that run alone.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiokafka.errors import GroupCoordinatorNotAvailableError

import local_stack
from chaos_rig import PARTITIONS, Rig, order_events, say, wait_for
from e2e_bare_loop import BARE_LOOP_STARTED
from fuzz_liveness import memory_mb
from kafka_tools import create_topics, end_offsets, produce_events, wait_caught_up
from promo_bridge.domain.commands import DEFAULT_BATCH_LIMITS, Endpoint

BARE_LOOP = Path(__file__).resolve().parent / "e2e_bare_loop.py"
START_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.1
# How often the wait for catching up looks whether the process still runs.
CHECK_EXIT_S = 5.0
# Every command of these rules goes to enrolAndEarn, which takes this many customers a call.
BULK_LIMIT = DEFAULT_BATCH_LIMITS[Endpoint.ENROL_AND_EARN]
# The rules' threshold, and amounts over and under it (the stream no rule matches).
THRESHOLD = 5000.0
MATCHING_AMOUNT = 6000.0
UNMATCHED_AMOUNT = 10.0
ACTIONS = ({"enrol": "big-spender"}, {"earn": "big-spender"})
# Keep the simulator's state and call log; reset only what a run changes.
RESET_RUN = {"faults": False, "credentials": False}


@dataclass(frozen=True)
class Variant:
    """What runs on the backlog: the bare loop or the service with some settings."""

    key: str
    label: str
    service: bool = True
    matching: bool = True
    settings: Mapping[str, str] = field(default_factory=dict)
    # The bare loop's own options (e.g. its event loop).
    bare_args: tuple[str, ...] = ()
    # The bare loop writes intent groups and tombstones beside one record per event (`--writes
    # service`): its output is more than one record per event.
    bare_writes_state: bool = False
    # The service's code from this folder instead of the checkout's (bench_e2e.py --baseline).
    code: Path | None = None


@dataclass(frozen=True)
class RunTopics:
    """A run's own topics and group, so that no run sees another's records or offsets."""

    name: str

    @property
    def input(self) -> str:
        return f"{self.name}.orders"

    @property
    def output(self) -> str:
        return f"{self.name}.outcomes"

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    @property
    def group(self) -> str:
        return f"{self.name}.group"

    async def create(self, bootstrap: str) -> None:
        await create_topics(
            bootstrap, {self.input: PARTITIONS, self.output: PARTITIONS, self.dlq: 1}
        )

    def service_settings(self, rules_file: Path) -> dict[str, str]:
        """PROMO_BRIDGE_* values (without the prefix) that point the service at this run."""
        return {
            "GROUP_ID": self.group,
            "INPUT_TOPICS": self.input,
            "OUTCOMES_TOPIC": self.output,
            "DLQ_TOPIC": self.dlq,
            "RULES_FILE": str(rules_file),
        }


@dataclass
class Measurement:
    """One run's figures. `elapsed_s` None: the group did not catch up in time."""

    variant: str
    round_number: int
    events: int
    commands: int
    elapsed_s: float | None
    start_up_s: float
    cpu_s: float
    peak_rss_mb: float
    outputs: int
    calls: int
    optimum_calls: int
    # The machine's 1-minute load average as the run ended: above the cores, it was shared.
    load_1m: float

    @property
    def events_per_s(self) -> float | None:
        return None if not self.elapsed_s else self.events / self.elapsed_s


def rules_yaml(per_event: int) -> str:
    """One rule for orders over the threshold, with `per_event` actions (enrol, then earn)."""
    rules = {
        "program_id": 2714,
        "promotions": {"big-spender": {"promotion_id": 202779, "type": "ENROL_AND_ISSUE"}},
        "rules": [
            {
                "name": "big-spenders",
                "on": "order.placed",
                "when": f"event.data.total.amount >= {THRESHOLD}",
                "then": list(ACTIONS[:per_event]),
            }
        ],
    }
    return yaml.safe_dump(rules, sort_keys=False)


def write_rules(directory: Path) -> dict[int, Path]:
    """The rules files, by commands per matching event."""
    paths = {}
    for per_event in range(1, len(ACTIONS) + 1):
        paths[per_event] = directory / f"rules-{per_event}.yaml"
        paths[per_event].write_text(rules_yaml(per_event))
    return paths


async def fresh_run(rig: Rig, name: str) -> RunTopics:
    """A run's topics, created; the simulator's state and call log emptied for it."""
    topics = RunTopics(name)
    await topics.create(rig.broker.bootstrap)
    await rig.admin("reset", RESET_RUN)
    return topics


def backlog(name: str, count: int, *, matching: bool) -> list[dict[str, Any]]:
    """`count` order events, one customer each, over or under the rules' threshold."""
    events = order_events(name, count)
    for event in events:
        event["data"]["total"]["amount"] = MATCHING_AMOUNT if matching else UNMATCHED_AMOUNT
    return events


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process so far, from /proc/<pid>/stat."""
    # The command name (field 2) may hold spaces; the fields after it are plain numbers.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime_ticks, stime_ticks = int(fields[11]), int(fields[12])
    return (utime_ticks + stime_ticks) / os.sysconf("SC_CLK_TCK")


async def wait_done(
    bootstrap: str, topics: RunTopics, events: int, proc: subprocess.Popen[bytes]
) -> None:
    """Wait until the run's group committed the end of every input partition.

    RuntimeError if the process exits first; TimeoutError after a generous allowance (100
    events/s, a tenth of the slowest service figure seen).
    """
    deadline = time.monotonic() + START_TIMEOUT_S + events / 100
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{topics.name}: the process exited with {proc.returncode}")
        try:
            await wait_caught_up(bootstrap, topics.group, [topics.input], timeout_s=CHECK_EXIT_S)
        except GroupCoordinatorNotAvailableError:
            # No group has committed on this broker yet: its offsets topic is being created.
            await asyncio.sleep(POLL_INTERVAL_S)
        except TimeoutError:
            pass
        else:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topics.group} did not catch up")


async def start_process(
    rig: Rig, variant: Variant, topics: RunTopics, rules_file: Path
) -> subprocess.Popen[bytes]:
    """The bare loop or a service instance on this run's topics, once its clients started."""
    if variant.service:
        settings = {**topics.service_settings(rules_file), **variant.settings}
        # PYTHONPATH comes before the editable install's path entry: its package is imported.
        environment = {"PYTHONPATH": str(variant.code)} if variant.code else {}
        return (await rig.start_service(environment=environment, **settings)).proc
    args = ["--bootstrap", rig.broker.bootstrap, "--input", topics.input]
    args += ["--output", topics.output, "--group", topics.group, *variant.bare_args]
    log_path = rig.directory / f"{topics.name}.log"
    proc = local_stack.spawn([sys.executable, str(BARE_LOOP), *args], log_path)

    async def started() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the bare loop exited with {proc.returncode}: see {log_path}")
        return BARE_LOOP_STARTED in log_path.read_text()

    if not await wait_for(started, timeout_s=START_TIMEOUT_S, interval_s=POLL_INTERVAL_S):
        local_stack.stop(proc, timeout_s=5)
        raise RuntimeError(f"the bare loop did not start in {START_TIMEOUT_S:g} s: see {log_path}")
    return proc


async def measure_run(
    rig: Rig,
    variant: Variant,
    round_number: int,
    events: int,
    per_event: int,
    rules_file: Path,
    profile_dir: Path | None = None,
) -> Measurement:
    """Produce the backlog, let one process work it off, and take its figures.

    With `profile_dir`, py-spy samples a service process for the whole run (collapsed stacks
    in `<run>.txt`, for a flame graph or `bench/profile_top.py`). Each sample stops the process
    for a moment: within the noise of the CPU figures, and without it (`--nonblocking`) the
    stacks of a process on uvloop came out torn (frames under callers they never had).
    """
    bootstrap = rig.broker.bootstrap
    topics = await fresh_run(rig, f"e2e-r{round_number}-{variant.key}")
    await produce_events(
        bootstrap,
        backlog(topics.name, events, matching=variant.matching),
        topic_of_type={"order.placed": topics.input},
    )
    say(topics.name, f"backlog of {events} events produced; starting {variant.label}")
    spawned = time.monotonic()
    proc = await start_process(rig, variant, topics, rules_file)
    # The clock and the CPU count start once the clients started: imports and connecting are
    # the same whatever the backlog, and would swamp the per-event figures of a small one.
    started = time.monotonic()
    profiler = None
    if profile_dir is not None and variant.service:
        profiler = _profile(proc.pid, profile_dir / f"{topics.name}.txt")
    elapsed_s: float | None
    try:
        cpu_started_s = cpu_seconds(proc.pid)
        try:
            await wait_done(bootstrap, topics, events, proc)
            elapsed_s = time.monotonic() - started
        except TimeoutError as exc:
            say(topics.name, f"timed out: {exc}")
            elapsed_s = None
        # Read before the stop: the drain and exit are not part of the work measured.
        cpu_s = cpu_seconds(proc.pid) - cpu_started_s
        peak_rss_mb, _ = memory_mb(proc.pid)
    finally:
        local_stack.stop(proc, timeout_s=30)
        if profiler is not None:
            profiler.wait(timeout=30)
    commands = events * per_event if variant.service and variant.matching else 0
    stats = await rig.admin("stats")
    measurement = Measurement(
        variant=variant.key,
        round_number=round_number,
        events=events,
        commands=commands,
        elapsed_s=elapsed_s,
        start_up_s=started - spawned,
        cpu_s=cpu_s,
        peak_rss_mb=peak_rss_mb,
        outputs=sum((await end_offsets(bootstrap, [topics.output])).values()),
        calls=int(stats["calls"]) - int(stats["token_requests"]),
        optimum_calls=per_event * math.ceil(events / BULK_LIMIT) if commands else 0,
        load_1m=os.getloadavg()[0],
    )
    check(topics.name, variant, measurement, stats)
    return measurement


def _profile(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        say("profile", "py-spy is not installed (pip install py-spy): running without a profile")
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    argv = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(output)]
    return subprocess.Popen([*argv, "--rate", "200"], stdout=subprocess.DEVNULL)


def check(name: str, variant: Variant, measurement: Measurement, stats: dict[str, Any]) -> None:
    """Say what would make the run's figures mean something else than they seem to."""
    expected_outputs = measurement.commands if variant.service else measurement.events
    if variant.bare_writes_state:
        if measurement.outputs <= expected_outputs:
            say(name, f"{measurement.outputs} output records, over {expected_outputs} expected")
    elif measurement.outputs != expected_outputs:
        say(name, f"{measurement.outputs} output records, {expected_outputs} expected")
    effects = sum(stats["effects"].values())
    if effects != measurement.commands:
        say(name, f"{effects} side effects at the simulator, {measurement.commands} commands")
    others = {k: v for k, v in stats["by_endpoint"].items() if k not in {"token", "enrolAndEarn"}}
    if others:
        say(name, f"calls beyond enrolAndEarn: {others}")
