"""Liveness under malformed and oversized input: no partition stalls, memory stays bounded.

Run: make bench-fuzz   or   .venv/bin/python bench/fuzz_liveness.py [--bad N] [--good N] ...

On a real broker (scripts/kafka_broker.py), with the API simulator and the service as separate
processes (scripts/chaos_rig.py), it produces malformed records (random bytes, empty values and
tombstones, invalid UTF-8, truncated JSON, JSON arrays and scalars, wrong types, missing fields,
deep nesting, 20 x 1 MiB, 5 x 600 KB and 10 x 400 KB values, and a few values of control
characters whose JSON text is six times their size) shuffled with good order events across the
input partitions, starts one service instance with default settings, and waits until the group
has committed the end of every input partition. The input topic takes records up to 2 MiB; the
DLQ topic keeps the broker's default limit, so oversized originals must be cut to fit.

Stdout gets ONE line of figures; progress goes to stderr. Every record produced as bad is first
checked to be refused by the service's own decoder, so "bad" means what the service means.
Figures: bad records, DLQ records for them (cut ones counted apart), DLQ records the broker
refused (from the service's metrics), good events, good outcomes lost, committed = end, peak
RSS of the service process (VmHWM, read before it stops), its RSS at the end, the
pending_commands gauge at the end, elapsed seconds from service start to committed = end.

Exit 0 when issue 11's targets hold: every bad record has a DLQ record, committed = end, no
good outcome lost, peak RSS <= --max-rss-mb.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
# The broker harness and the chaos rig live in scripts/, which is not a package.
sys.path.insert(0, str(ROOT / "scripts"))

from chaos_rig import (  # noqa: E402
    COMMANDS_PER_EVENT,
    DLQ_TOPIC,
    INPUT_TOPIC,
    OUTCOMES_TOPIC,
    PARTITIONS,
    Rig,
    ServiceChild,
    open_rig,
    order_events,
    say,
)
from kafka_tools import customer_key, read_to_end  # noqa: E402
from promo_bridge.domain.events import EventDecodeError, decode_event  # noqa: E402

NAME = "fuzz-liveness"
RUN_ROOT = ROOT / ".run" / "bench"
KIB = 1024
MIB = 1024 * KIB
# Room for a 1 MiB value with its key, headers and batch overhead; the DLQ topic keeps the
# broker default (about 1 MiB), so a DLQ record carrying a whole 1 MiB original cannot fit.
INPUT_MAX_MESSAGE_BYTES = 2 * MIB
PRODUCER_MAX_REQUEST_BYTES = 4 * MIB
# (category, value size in bytes, count)
LARGE = (("1MiB", MIB, 20), ("600KB", 600_000, 5), ("400KB", 400_000, 10))
# Valid UTF-8 below the DLQ cut, whose JSON escapes (\u0001) make the DLQ text 6x the value.
CONTROL_TEXT = ("control-text", 200_000, 3)
DEEPEST = 100_000
API_LATENCY_MS = 20.0
CALLS_PER_MINUTE = 600
RSS_INTERVAL_S = 0.2


@dataclass(frozen=True)
class BadRecord:
    """A record the service must refuse, and where it landed once produced."""

    category: str
    key: bytes
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


# -- the malformed records -------------------------------------------------------------------


def _event(rng: random.Random, number: int) -> dict[str, Any]:
    """A good order.placed event to spoil (its customer outside the good events' range)."""
    customer = str(900_000_000 + number)
    return {
        "specversion": "1.0",
        "id": f"fuzz-bad-{number}",
        "source": "/fuzz",
        "type": "order.placed",
        "time": "2026-11-21T10:00:00Z",
        "subject": customer,
        "data": {
            "order_id": f"o-bad-{number}",
            "customer": {"id": customer, "source": "INSTORE"},
            "total": {"amount": rng.choice([10.0, 6000.0]), "currency": "INR"},
        },
    }


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def random_bytes(rng: random.Random, number: int) -> bytes | None:
    """Bytes from nowhere, up to 2 KiB."""
    return rng.randbytes(rng.randint(1, 2 * KIB))


def empty(rng: random.Random, number: int) -> bytes | None:
    """An empty value or a tombstone (no value at all)."""
    return b"" if number % 2 else None


def invalid_utf8(rng: random.Random, number: int) -> bytes | None:
    """An event whose id holds bytes that are not UTF-8."""
    raw = _dumps(_event(rng, number))
    bad = rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xe2\x82", b"\xf0\x28\x8c\xbc", b"\xed\xa0\x80"])
    return raw.replace(b'"fuzz-bad-', b'"' + bad + b"-", 1)


def truncated(rng: random.Random, number: int) -> bytes | None:
    """An event cut short."""
    raw = _dumps(_event(rng, number))
    return raw[: rng.randint(1, len(raw) - 1)]


def json_array(rng: random.Random, number: int) -> bytes | None:
    """A JSON array: empty, of numbers, or holding a good event."""
    return _dumps(rng.choice([[], list(range(rng.randint(1, 50))), [_event(rng, number)]]))


def json_scalar(rng: random.Random, number: int) -> bytes | None:
    """A JSON value that is not an object."""
    return rng.choice([b"null", b"42", b"-1.5e308", b'"order.placed"', b"true"])


_WRONG_TYPES: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("specversion",), 1.0),
    (("id",), 123),
    (("id",), None),
    (("type",), ["order.placed"]),
    (("source",), {"uri": "/fuzz"}),
    (("time",), "yesterday"),
    (("data",), []),
    (("data",), "order"),
    (("data", "order_id"), None),
    (("data", "customer"), "bob"),
    (("data", "customer", "id"), {"n": 1}),
    (("data", "total"), 6000),
    (("data", "total", "amount"), "lots"),
    (("data", "total", "amount"), [6000]),
    (("data", "total", "currency"), 356),
)


def wrong_types(rng: random.Random, number: int) -> bytes | None:
    """An event with one field of the wrong type."""
    event = _event(rng, number)
    path, value = _WRONG_TYPES[number % len(_WRONG_TYPES)]
    _at(event, path[:-1])[path[-1]] = value
    return _dumps(event)


_REQUIRED = (
    ("specversion",),
    ("id",),
    ("source",),
    ("type",),
    ("data",),
    ("data", "order_id"),
    ("data", "customer"),
    ("data", "total"),
    ("data", "total", "amount"),
)


def missing_fields(rng: random.Random, number: int) -> bytes | None:
    """An event without one of its required fields."""
    event = _event(rng, number)
    path = _REQUIRED[number % len(_REQUIRED)]
    del _at(event, path[:-1])[path[-1]]
    return _dumps(event)


def deep_nesting(rng: random.Random, number: int) -> bytes | None:
    """Arrays or objects nested thousands of levels (now and then DEEPEST), or as a customer."""
    depth = DEEPEST if number % 100 == 0 else rng.randint(100, 5_000)
    shape = number % 3
    if shape == 0:
        return b"[" * depth + b"]" * depth
    if shape == 1:
        return b'{"a":' * depth + b"1" + b"}" * depth
    event = _event(rng, number)
    event["data"]["customer"] = "NESTED"
    nested = b'{"id":' * depth + b'"1"' + b"}" * depth
    return _dumps(event).replace(b'"NESTED"', nested, 1)


def _at(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for name in path:
        doc = doc[name]
    return doc


SMALL: tuple[Callable[[random.Random, int], bytes | None], ...] = (
    random_bytes,
    empty,
    invalid_utf8,
    truncated,
    json_array,
    json_scalar,
    wrong_types,
    missing_fields,
    deep_nesting,
)


def large_value(rng: random.Random, number: int, size: int) -> bytes:
    """A value of exactly `size` bytes: random, an event with a huge field, or plain text."""
    shape = number % 3
    if shape == 0:
        return rng.randbytes(size)
    if shape == 1:
        event = _event(rng, number)
        del event["data"]["customer"]
        head = _dumps({**event, "data": {**event["data"], "notes": ""}})
        # Fill the empty notes string so that the whole value is `size` bytes.
        filler = b"n" * (size - len(head))
        return head.replace(b'"notes": ""', b'"notes": "' + filler + b'"', 1)
    return (b"lorem ipsum " * (size // 12 + 1))[:size]


def bad_records(rng: random.Random, count: int) -> list[BadRecord]:
    """`count` records the decoder refuses: the large ones first, the rest cycling SMALL."""
    values: list[tuple[str, bytes | None]] = []
    for category, size, how_many in LARGE:
        values += [(category, large_value(rng, n, size)) for n in range(how_many)]
    category, size, how_many = CONTROL_TEXT
    values += [(category, b"\x01" * size) for _ in range(how_many)]
    for number in range(count - len(values)):
        # Each maker gets its own running count, so that it cycles through all of its shapes.
        make = SMALL[number % len(SMALL)]
        values.append((make.__name__, make(rng, number // len(SMALL))))
    records = []
    for number, (category, value) in enumerate(values[:count]):
        headers = (("trace", b"\xff\x00" + str(number).encode()),) if number % 10 == 0 else ()
        records.append(BadRecord(category, f"bad-{number}".encode(), value, headers))
    return records


def check_refused(records: list[BadRecord]) -> None:
    """Every bad record must be one the service's decoder refuses (SystemExit otherwise)."""
    accepted = Counter[str]()
    for record in records:
        if record.value is None:
            continue
        try:
            decode_event(record.value)
        except EventDecodeError:
            continue
        accepted[record.category] += 1
    if accepted:
        sys.exit(f"fuzz_liveness: these 'bad' records decode fine: {dict(accepted)}")


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Produced:
    """Where each record landed: bad ones by position, good ones by event id."""

    bad: dict[tuple[int, int], str]
    good_ids: set[str]


async def create_input_topic(bootstrap: str) -> None:
    """The input topic, taking records up to INPUT_MAX_MESSAGE_BYTES."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topic = NewTopic(
            name=INPUT_TOPIC,
            num_partitions=PARTITIONS,
            replication_factor=1,
            topic_configs={"max.message.bytes": str(INPUT_MAX_MESSAGE_BYTES)},
        )
        await admin.create_topics([topic])
    finally:
        await admin.close()


async def produce_all(
    bootstrap: str, bad: list[BadRecord], good: list[dict[str, Any]], rng: random.Random
) -> Produced:
    """Send bad records (spread over the partitions) and good events (keyed) in one shuffle."""
    items: list[tuple[BadRecord | None, dict[str, Any] | None]] = [(b, None) for b in bad]
    items += [(None, g) for g in good]
    rng.shuffle(items)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=PRODUCER_MAX_REQUEST_BYTES,
    )
    await producer.start()
    try:
        sends = []
        for number, (record, event) in enumerate(items):
            if record is not None:
                future = await producer.send(
                    INPUT_TOPIC,
                    value=record.value,
                    key=record.key,
                    headers=list(record.headers),
                    partition=number % PARTITIONS,
                )
            else:
                assert event is not None
                future = await producer.send(
                    INPUT_TOPIC, value=_dumps(event), key=customer_key(event)
                )
            sends.append(future)
        landed = await asyncio.gather(*sends)
    finally:
        await producer.stop()
    produced = Produced({}, set())
    for (record, event), meta in zip(items, landed, strict=True):
        if record is not None:
            produced.bad[(meta.partition, meta.offset)] = record.category
        else:
            assert event is not None
            produced.good_ids.add(str(event["id"]))
    return produced


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) of a process in MB (MiB), from /proc/<pid>/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmHWM", "VmRSS"}:
            fields[name] = int(value.split()[0]) / KIB
    return fields["VmHWM"], fields["VmRSS"]


async def sample_rss(pid: int, started: float) -> None:
    """Say on stderr how RSS grows, at each new high by 10 MB, until cancelled."""
    shown_mb = 0.0
    while True:
        _, rss_mb = memory_mb(pid)
        if rss_mb >= shown_mb + 10:
            shown_mb = rss_mb
            say(NAME, f"RSS {rss_mb:.0f} MB at {time.monotonic() - started:.1f} s")
        await asyncio.sleep(RSS_INTERVAL_S)


async def scrape(child: ServiceChild) -> dict[str, float]:
    """The service's /metrics samples, by name with labels (counters summed over labels)."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{child.ops_port}/metrics")).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.partition("{")[0]
            samples[name] = samples.get(name, 0.0) + float(value)
    return samples


@dataclass
class Figures:
    """The line this benchmark prints."""

    bad: int
    dlq_for_bad: int
    dlq_cut: int
    dlq_refused: int
    good: int
    good_lost: int
    committed_end: bool
    peak_rss_mb: float
    end_rss_mb: float
    pending_gauge: float
    elapsed_s: float

    def line(self) -> str:
        """One line, `name=value` pairs."""
        return (
            f"bad={self.bad} dlq={self.dlq_for_bad} (cut={self.dlq_cut})"
            f" dlq_refused={self.dlq_refused:.0f} good={self.good} good_lost={self.good_lost}"
            f" committed_eq_end={'yes' if self.committed_end else 'no'}"
            f" peak_rss_mb={self.peak_rss_mb:.0f} end_rss_mb={self.end_rss_mb:.0f}"
            f" pending_gauge={self.pending_gauge:.0f} elapsed_s={self.elapsed_s:.1f}"
        )


async def run(rig: Rig, args: argparse.Namespace) -> Figures:
    """Produce, start the service, wait for committed = end, and measure."""
    rng = random.Random(args.seed)
    bad = bad_records(rng, args.bad)
    check_refused(bad)
    good = order_events("fuzz", args.good)
    bootstrap = rig.broker.bootstrap
    await create_input_topic(bootstrap)
    await rig.create_topics()
    say(NAME, f"producing {len(bad)} bad records and {len(good)} good events")
    produced = await produce_all(bootstrap, bad, good, rng)
    say(NAME, "starting the service (default settings)")
    started = time.monotonic()
    child = await rig.start_service(**args.setting)
    sampler = asyncio.create_task(sample_rss(child.proc.pid, started))
    caught_up = await rig.wait_caught_up(args.timeout_s)
    elapsed_s = time.monotonic() - started
    sampler.cancel()
    peak_mb, end_mb = memory_mb(child.proc.pid)
    metrics = await scrape(child)
    say(NAME, f"caught up: {caught_up} after {elapsed_s:.1f} s; reading the DLQ and outcomes")
    committed_end = await rig.committed_equals_end()
    dlq = [r.json() for r in await read_to_end(bootstrap, DLQ_TOPIC)]
    outcomes = [r.json() for r in await read_to_end(bootstrap, OUTCOMES_TOPIC)]

    lettered = {
        (d["source_partition"], d["source_offset"]): d
        for d in dlq
        if d["source_topic"] == INPUT_TOPIC
    }
    missing = Counter(cat for pos, cat in produced.bad.items() if pos not in lettered)
    if missing:
        say(NAME, f"bad records without a DLQ record, by category: {dict(missing)}")
    good_commands = {o["command_id"] for o in outcomes if o["event_id"] in produced.good_ids}
    good_in_dlq = len(lettered.keys() - produced.bad.keys())
    if good_in_dlq:
        say(NAME, f"{good_in_dlq} DLQ records are not of a bad record")
    return Figures(
        bad=len(produced.bad),
        dlq_for_bad=len(lettered.keys() & produced.bad.keys()),
        dlq_cut=sum(
            1 for pos, d in lettered.items() if pos in produced.bad and d.get("value_truncated")
        ),
        dlq_refused=int(metrics.get("promo_bridge_dlq_refused_total", 0)),
        good=len(produced.good_ids),
        good_lost=COMMANDS_PER_EVENT * len(produced.good_ids) - len(good_commands),
        committed_end=caught_up and committed_end,
        peak_rss_mb=peak_mb,
        end_rss_mb=end_mb,
        pending_gauge=metrics.get("promo_bridge_pending_commands", float("nan")),
        elapsed_s=elapsed_s,
    )


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError("expected NAME=VALUE (NAME without PROMO_BRIDGE_)")
    return name.upper(), value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bad", type=int, default=10_000, help="malformed records (>= 38)")
    parser.add_argument("--good", type=int, default=1_000, help="good order events")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--timeout-s", type=float, default=600.0, help="wait for committed = end")
    parser.add_argument("--max-rss-mb", type=float, default=250.0, help="the RSS target")
    parser.add_argument(
        "--set",
        dest="setting",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting other than its default, e.g. KAFKA_FETCH_MAX_BYTES=4194304",
    )
    args = parser.parse_args(argv)
    args.setting = dict(args.setting)
    minimum = sum(how_many for _, _, how_many in LARGE) + CONTROL_TEXT[2]
    if args.bad < minimum:
        parser.error(f"--bad must be at least {minimum} (the large and control-text records)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run once; exit 0 when the targets hold."""
    args = parse_args(argv)
    with open_rig(NAME, API_LATENCY_MS, CALLS_PER_MINUTE, run_root=RUN_ROOT) as rig:
        figures = asyncio.run(run(rig, args))
    print(figures.line(), flush=True)
    ok = (
        figures.dlq_for_bad == figures.bad
        and figures.committed_end
        and figures.good_lost == 0
        and figures.peak_rss_mb <= args.max_rss_mb
    )
    say(NAME, f"targets {'met' if ok else 'NOT met'}; logs under {RUN_ROOT / NAME}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
