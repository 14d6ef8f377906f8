"""Helpers for the runtime integration tests: the service as a subprocess, scrapes, waits.

The in-process helpers (settings, running_service, order events) live in harness.py; this
module adds what the runtime tests need on top: a second event type on the same topic, the
service run as `promo-bridge run` in a child process (to signal it and to measure its memory),
Prometheus text parsing, and condition waits with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from harness import RULES_ENROL_BIG_SPENDERS
from kafka_tools import ReadRecord, customer_key
from promo_bridge.domain.rules import command_id
from promo_bridge.settings import Settings

# Enrol big spenders on order.placed, earn on review.submitted: both types travel on ONE topic
# keyed by customer, so a customer's earn is read after (and must not overtake) their enrol.
RULES_ENROL_THEN_EARN = (
    RULES_ENROL_BIG_SPENDERS
    + """\
  - name: coupon-for-review
    on: review.submitted
    then: [{earn: big-spender}]
"""
)
ENROL_RULE = "enrol-big-spenders"
EARN_RULE = "coupon-for-review"


def review_submitted(customer_id: str, *, event_id: str | None = None) -> dict[str, Any]:
    """A review.submitted CloudEvent for one customer."""
    return {
        "specversion": "1.0",
        "id": event_id or f"evt-review-{customer_id}",
        "source": "/shop/reviews",
        "type": "review.submitted",
        "time": "2026-11-21T10:05:00Z",
        "subject": customer_id,
        "data": {
            "review_id": f"rv-{customer_id}",
            "order_id": f"o-{customer_id}",
            "sku": "SKU-1",
            "rating": 5,
            "customer": {"id": customer_id, "source": "INSTORE"},
        },
    }


def expected_command_id(event: Mapping[str, Any]) -> str:
    """The command_id the rules above make for an event (first action of its rule)."""
    rule = ENROL_RULE if event["type"] == "order.placed" else EARN_RULE
    return command_id(str(event["id"]), rule, 0)


def encode(events: Iterable[Mapping[str, Any]], topic: str) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) records keyed by customer, ready for kafka_tools `produce`."""
    return [(topic, customer_key(e), json.dumps(e).encode()) for e in events]


@dataclass(frozen=True, slots=True)
class Produced:
    """Where a record landed."""

    topic: str
    partition: int
    offset: int


async def produce_with_headers(
    bootstrap: str,
    records: Sequence[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]],
) -> list[Produced]:
    """Send (topic, key, value, headers) records; returns each one's position."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key, headers=headers)
            for topic, key, value, headers in records
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [Produced(m.topic, m.partition, m.offset) for m in metadata]


# -- waiting -----------------------------------------------------------------------------------


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
) -> None:
    """Poll `condition` until it holds; TimeoutError naming `what` once the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(interval_s)


# -- Prometheus text -----------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    """The label sets present for `name`."""
    return [dict(ls) for (n, ls) in samples if n == name]


SCRAPE_FILE_ENV = "PROMO_BRIDGE_TEST_SCRAPE_FILE"


async def scrape(port: int) -> Samples:
    """GET /metrics on the ops port and parse it."""
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    # CI lints a real scrape with `promtool check metrics` (scripts/check_deploy.sh).
    keep = os.environ.get(SCRAPE_FILE_ENV)
    if keep:
        await asyncio.to_thread(Path(keep).write_text, response.text)
    return parse_metrics(response.text)


async def probe(port: int, path: str) -> tuple[int, Any]:
    """GET an ops endpoint; (status, JSON body)."""
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}{path}")
    return response.status_code, response.json()


# -- outcomes ------------------------------------------------------------------------------------


@dataclass
class OutcomeTally:
    """Counts outcome records by command_id as they are read (a `read_topic` condition)."""

    expected: set[str]
    seen: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    _read: int = 0

    def __call__(self, records: list[ReadRecord]) -> bool:
        for record in records[self._read :]:
            outcome = record.json()
            cid = outcome["command_id"]
            self.seen[cid] = self.seen.get(cid, 0) + 1
            self.statuses[cid] = outcome["status"]
        self._read = len(records)
        return self.expected <= self.seen.keys()

    @property
    def duplicates(self) -> int:
        """Outcome records beyond the first per command_id."""
        return sum(n - 1 for n in self.seen.values())


# -- the service as a child process ---------------------------------------------------------------


def child_settings(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The values of an in-process service's Settings, for the same service as a child process.

    Child logs are parsed as JSON, so the log format is left to `service_process`.
    """
    values = settings.model_dump(mode="json", exclude_defaults=True, exclude={"log_format"})
    for name in values:
        secret = getattr(settings, name)
        if isinstance(secret, SecretStr):
            values[name] = secret.get_secret_value()
    values.update(overrides)
    return values


def service_env(**values: Any) -> dict[str, str]:
    """PROMO_BRIDGE_* variables for `promo-bridge run`, on top of this process's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMO_BRIDGE_")}
    for name, raw in values.items():
        if isinstance(raw, (list, tuple)):
            text = ",".join(str(item) for item in raw)
        elif isinstance(raw, bool):
            text = "true" if raw else "false"
        else:
            text = str(raw)
        env[f"PROMO_BRIDGE_{name.upper()}"] = text
    return env


def _command() -> list[str]:
    script = Path(sys.executable).with_name("promo-bridge")
    if script.exists():
        return [str(script), "run"]
    return [sys.executable, "-m", "promo_bridge.cli", "run"]


@dataclass
class ServiceProcess:
    """`promo-bridge run` in a child process, its JSON log lines in a file."""

    process: subprocess.Popen[bytes]
    log_path: Path
    ops_port: int = 0

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.process.pid

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far (other lines are skipped)."""
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries

    def events(self, name: str) -> list[dict[str, Any]]:
        """Log entries whose event is `name`."""
        return [e for e in self.logs() if e.get("event") == name]

    def log_text(self) -> str:
        """The raw log."""
        return self.log_path.read_text(errors="replace")

    def peak_rss_kib(self) -> int:
        """VmHWM (peak resident set) of the running child, KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM in /proc status")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the running child so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the command name: state is field 3; utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def terminate(self) -> None:
        """SIGTERM: begin graceful shutdown."""
        self.process.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout_s: float) -> int:
        """The exit code, waiting at most `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (code := self.process.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"promo-bridge pid {self.pid} still running after {timeout_s}s")
            await asyncio.sleep(0.05)
        return code


@contextlib.asynccontextmanager
async def service_process(
    log_path: Path, *, start_timeout_s: float = 30, **settings: Any
) -> AsyncIterator[ServiceProcess]:
    """Start `promo-bridge run` with PROMO_BRIDGE_* settings; wait until it serves /metrics.

    On exit a child still running is killed (a test that wants a graceful stop signals it and
    waits itself).
    """
    settings.setdefault("http_port", 0)
    settings.setdefault("log_format", "json")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # noqa: ASYNC220 - a long-running child, not awaited here
            _command(),
            env=service_env(**settings),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    child = ServiceProcess(process, log_path)
    try:

        def started() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"promo-bridge exited with {process.returncode}:\n{child.log_text()[-4000:]}"
                )
            entries = child.events("service_started")
            if entries:
                child.ops_port = int(entries[0]["ops_port"])
            return bool(entries)

        await wait_until(started, timeout_s=start_timeout_s, what="promo-bridge started")
        yield child
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
