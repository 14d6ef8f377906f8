"""The chaos suite's rig: one experiment's broker, simulator and service processes.

Each experiment gets a fresh directory .run/chaos/<name>/ with the broker's data (kafka/), the
simulator's log, one log per service instance (service-<n>.log) and the rules file. The broker
is scripts/kafka_broker.py on free ports, the simulator `promo-bridge simulate-api` and the
service `promo-bridge run`, each a separate process; `open_rig` stops all of them on the way
out, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka.errors import GroupCoordinatorNotAvailableError, KafkaError

import kafka_broker
import local_stack
from kafka_tools import (
    committed_offsets,
    create_topics,
    end_offsets,
    produce_events,
    wait_caught_up,
)

ROOT = Path(__file__).resolve().parents[1]
RUN_ROOT = ROOT / ".run" / "chaos"
INPUT_TOPIC = "chaos-orders"
OUTCOMES_TOPIC = "chaos-outcomes"
DLQ_TOPIC = "chaos-dlq"
PARTITIONS = 6
POLL_INTERVAL_S = 0.5
# Progress polls (one costs ~0.1 s) decide when to strike: finer than the other waits.
PROGRESS_INTERVAL_S = 0.1
START_TIMEOUT_S = 60.0

# Every order enrols its customer in an ENROL_AND_ISSUE promotion and earns it: two commands
# per event, the earn behind the enrol in the customer's lane.
RULE_NAME = "enrol-and-earn"
COMMANDS_PER_EVENT = 2
RULES_YAML = f"""\
program_id: 2714
promotions:
  big-spender: {{promotion_id: 202779, type: ENROL_AND_ISSUE}}
rules:
  - name: {RULE_NAME}
    on: order.placed
    then: [{{enrol: big-spender}}, {{earn: big-spender}}]
"""
FIRST_CUSTOMER_ID = 700_000_000


def say(name: str, message: str) -> None:
    """A progress line on stderr (stdout carries only the figures)."""
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {message}", file=sys.stderr, flush=True)


async def wait_for(
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float,
    interval_s: float = POLL_INTERVAL_S,
) -> bool:
    """Poll `condition` until it holds (True) or `timeout_s` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval_s)
    return True


def order_events(name: str, count: int) -> list[dict[str, Any]]:
    """`count` order.placed CloudEvents, each for a customer of its own."""
    events = []
    for number in range(count):
        customer = str(FIRST_CUSTOMER_ID + number)
        data = {
            "order_id": f"o-{name}-{number}",
            "customer": {"id": customer, "source": "INSTORE"},
            "total": {"amount": 6000.0, "currency": "INR"},
        }
        events.append(
            {
                "specversion": "1.0",
                "id": f"chaos-{name}-{number:07d}",
                "source": "/chaos/checkout",
                "type": "order.placed",
                "time": "2026-11-21T10:00:00Z",
                "subject": customer,
                "data": data,
            }
        )
    return events


@dataclass
class ServiceChild:
    """One `promo-bridge run` instance and its JSON log."""

    number: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    ops_port: int | None = None

    def alive(self) -> bool:
        """Whether the child still runs."""
        return self.proc.poll() is None

    def log_entries(self) -> Iterator[dict[str, Any]]:
        """The structlog JSON objects of its log, one a line (tracebacks and the like skipped)."""
        with self.log_path.open(errors="replace") as log:
            for line in log:
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        yield json.loads(line)

    def started_port(self) -> int | None:
        """The ops port from its `service_started` line, once logged."""
        started = (e for e in self.log_entries() if e.get("event") == "service_started")
        entry = next(started, None)
        return None if entry is None else int(entry["ops_port"])


class ServiceStartError(RuntimeError):
    """A service instance exited or did not log `service_started` in time."""


@dataclass
class Rig:
    """An experiment's running broker, simulator and service instances."""

    name: str
    directory: Path
    broker: kafka_broker.Broker
    api_url: str
    rules_file: Path
    calls_per_minute: int
    services: list[ServiceChild] = field(default_factory=list)
    # The simulator's process (for its CPU figures); 0 when unknown.
    simulator_pid: int = 0

    @property
    def group_id(self) -> str:
        """The consumer group of every instance."""
        return f"chaos-{self.name}"

    # -- the service ---------------------------------------------------------------------------

    def service_settings(self, **overrides: str) -> dict[str, str]:
        """PROMO_BRIDGE_* values (without the prefix) of an instance of this experiment."""
        settings = {
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "GROUP_ID": self.group_id,
            "INPUT_TOPICS": INPUT_TOPIC,
            "OUTCOMES_TOPIC": OUTCOMES_TOPIC,
            "DLQ_TOPIC": DLQ_TOPIC,
            "RULES_FILE": str(self.rules_file),
            "CAPILLARY_BASE_URL": self.api_url,
            "CAPILLARY_CALLS_PER_MINUTE": str(self.calls_per_minute),
            "CAPILLARY_LOOKUP_CALLS_PER_MINUTE": str(self.calls_per_minute),
            "HTTP_PORT": "0",
            "LOG_FORMAT": "json",
            **local_stack.SIMULATOR_SETTINGS,
        }
        settings.update(overrides)
        return settings

    async def start_service(
        self, *, environment: Mapping[str, str] | None = None, **overrides: str
    ) -> ServiceChild:
        """Start an instance; return once it logged `service_started` (with its ops port).

        `overrides` are settings (PROMO_BRIDGE_ left off); `environment` other variables.
        """
        number = len(self.services) + 1
        log_path = self.directory / f"service-{number}.log"
        env = local_stack.service_env(self.service_settings(**overrides), inherit_settings=False)
        env.update(environment or {})
        proc = local_stack.spawn([str(local_stack.BIN), "run"], log_path, env)
        child = ServiceChild(number, proc, log_path)
        self.services.append(child)

        async def started() -> bool:
            if not child.alive():
                raise ServiceStartError(f"service-{number} exited with {proc.returncode}")
            child.ops_port = child.started_port()
            return child.ops_port is not None

        if not await wait_for(started, timeout_s=START_TIMEOUT_S, interval_s=0.1):
            raise ServiceStartError(f"service-{number}: no service_started in {START_TIMEOUT_S} s")
        return child

    def kill(self, child: ServiceChild) -> None:
        """SIGKILL the instance's process group and reap it."""
        local_stack.signal_group(child.proc, signal.SIGKILL)
        child.proc.wait(timeout=10)

    async def terminate(self, child: ServiceChild, timeout_s: float) -> int | None:
        """SIGTERM the instance; its exit code, or None if it still runs after `timeout_s`."""
        local_stack.signal_group(child.proc, signal.SIGTERM)

        async def exited() -> bool:
            return not child.alive()

        await wait_for(exited, timeout_s=timeout_s, interval_s=0.1)
        return child.proc.poll()

    def live_services(self) -> list[ServiceChild]:
        """Instances still running."""
        return [child for child in self.services if child.alive()]

    # -- the broker -----------------------------------------------------------------------------

    async def stop_broker(self) -> None:
        """Stop the broker cleanly (SIGTERM, as kafka_broker.py stop does)."""
        await asyncio.to_thread(kafka_broker.stop_broker, self.broker)

    async def restart_broker(self) -> None:
        """Start the broker again on the same data directory and ports."""
        broker = self.broker
        self.broker = await asyncio.to_thread(
            kafka_broker.start_broker,
            broker.data_dir,
            broker.port,
            90,
            broker.controller_port,
        )

    # -- Kafka ----------------------------------------------------------------------------------

    async def create_topics(self) -> None:
        """The input topic (PARTITIONS), the outcomes topic (PARTITIONS) and the DLQ (1)."""
        await create_topics(
            self.broker.bootstrap,
            {INPUT_TOPIC: PARTITIONS, OUTCOMES_TOPIC: PARTITIONS, DLQ_TOPIC: 1},
        )

    async def produce(self, events: list[dict[str, Any]]) -> None:
        """Send order events to the input topic, keyed by customer."""
        await produce_events(
            self.broker.bootstrap, events, topic_of_type={"order.placed": INPUT_TOPIC}
        )

    async def outcomes_written(self) -> int | None:
        """Outcome records on the topic so far (None while the broker does not answer)."""
        try:
            return sum((await end_offsets(self.broker.bootstrap, [OUTCOMES_TOPIC])).values())
        except (KafkaError, OSError):
            return None

    async def wait_outcomes(self, at_least: int, timeout_s: float) -> bool:
        """Wait until the outcomes topic holds `at_least` records."""

        async def enough() -> bool:
            written = await self.outcomes_written()
            return written is not None and written >= at_least

        return await wait_for(enough, timeout_s=timeout_s, interval_s=PROGRESS_INTERVAL_S)

    async def wait_caught_up(self, timeout_s: float) -> bool:
        """Wait until the group committed the end of every input partition."""
        deadline = time.monotonic() + timeout_s
        while (left_s := deadline - time.monotonic()) > 0:
            try:
                await wait_caught_up(
                    self.broker.bootstrap, self.group_id, [INPUT_TOPIC], timeout_s=left_s
                )
            except TimeoutError:
                return False
            except (KafkaError, OSError):
                await asyncio.sleep(POLL_INTERVAL_S)  # broker not answering yet: ask again
            else:
                return True
        return False

    async def committed_equals_end(self) -> bool:
        """Whether the group's committed offsets equal the end offsets on every input partition."""
        ends = await end_offsets(self.broker.bootstrap, [INPUT_TOPIC])
        try:
            committed = await committed_offsets(self.broker.bootstrap, self.group_id)
        except GroupCoordinatorNotAvailableError:
            # No group ever formed on this broker (the offsets topic does not exist yet).
            committed = {}
        return all(committed.get(tp, 0) == end for tp, end in ends.items())

    # -- the simulator ----------------------------------------------------------------------------

    async def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """GET (or POST `body` to) the simulator's /__admin/`path`; the JSON answer."""
        async with httpx.AsyncClient(base_url=self.api_url, timeout=30) as client:
            url = f"/__admin/{path}"
            response = await (client.get(url) if body is None else client.post(url, json=body))
        response.raise_for_status()
        return response.json()


@contextlib.contextmanager
def open_rig(
    name: str, api_latency_ms: float, calls_per_minute: int, run_root: Path = RUN_ROOT
) -> Iterator[Rig]:
    """A fresh broker and simulator for experiment `name`; everything stopped on exit.

    The simulator answers after `api_latency_ms` plus a uniform jitter of as much again; the
    service instances get a budget of `calls_per_minute` per endpoint.
    """
    directory = run_root / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    rules_file = directory / "rules.yaml"
    rules_file.write_text(RULES_YAML)
    data_dir = directory / "kafka"
    simulator = None
    rig = None
    try:
        broker = kafka_broker.start_broker(data_dir)
        api_port = kafka_broker.free_port()
        latency = ("--latency-ms", str(api_latency_ms), "--jitter-ms", str(api_latency_ms))
        simulator = local_stack.start_simulator(api_port, directory / "simulator.log", *latency)
        api_url = f"http://127.0.0.1:{api_port}"
        rig = Rig(
            name,
            directory,
            broker,
            api_url,
            rules_file,
            calls_per_minute,
            simulator_pid=simulator.pid,
        )
        yield rig
    finally:
        for child in rig.services if rig else []:
            local_stack.stop(child.proc, timeout_s=5)
        if simulator is not None:
            local_stack.stop(simulator, timeout_s=5)
        # By its pid file, so a broker restarted by the experiment is stopped too.
        kafka_broker.stop_data_dir(data_dir)
