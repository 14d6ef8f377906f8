"""`make run`: a real broker, the API simulator and the service on the examples, end to end.

Starts everything it needs on free ports under .run/, produces examples/events.jsonl keyed by
customer, waits until the service has committed every input offset, prints the outcome records
as a table, then stops what it started (service first, with SIGTERM, so it drains).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import kafka_broker
import local_stack
from kafka_tools import (
    TOPIC_OF_TYPE,
    ReadRecord,
    create_topics,
    end_offsets,
    produce,
    produce_events,
    read_topic,
    wait_caught_up,
)

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / ".run"
EVENTS = ROOT / "examples" / "events.jsonl"
RULES = ROOT / "examples" / "rules.yaml"
OUTCOMES_TOPIC = "promo-bridge.outcomes"
DLQ_TOPIC = "promo-bridge.dlq"
# Not in examples/events.jsonl: produced by the demo itself so that the DLQ has something in it.
POISON = b'{"specversion": "1.0", "id": '


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _table(outcomes: list[ReadRecord]) -> str:
    columns = ["event", "rule", "action", "subject", "customer", "status", "ids / error"]
    rows = []
    for record in sorted(outcomes, key=lambda r: (r.json()["event_id"], r.json()["completed_at"])):
        o = record.json()
        if o["status"] in ("applied", "already_applied"):
            parts = [
                f"{name}={o[key]}"
                for name, key in (
                    ("issualId", "issual_id"),
                    ("earnedId", "earned_id"),
                    ("revokedIssualId", "revoked_issual_id"),
                )
                if o.get(key)
            ]
            if o.get("revoked_earn_ids"):
                parts.append(f"revokedEarnIds={o['revoked_earn_ids']}")
            ids = " ".join(parts)
        else:
            ids = f"{o.get('error_code')} {o.get('error_class')}: {o.get('error_message')}"
        customer = f"{o['identifier_name']}:{o['identifier_value']}"
        rows.append(
            [o["event_id"], o["rule"], o["action"], o["subject"], customer, o["status"], ids]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(columns, *rows, strict=False)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*columns), line.format(*("-" * w for w in widths))]
    out += [line.format(*map(str, row)) for row in rows]
    return "\n".join(out)


async def _exercise(
    bootstrap: str, group: str, events: list[dict[str, Any]]
) -> tuple[list[ReadRecord], list[ReadRecord]]:
    topics = sorted(set(TOPIC_OF_TYPE.values()))
    # Produced in the file's order, one run of same-topic events at a time, each run consumed
    # before the next: the story (orders, then reviews, then returns) happens in that order,
    # as it would over days. Types with no topic of their own (cart.abandoned) ride on the
    # orders topic; no rule matches them, so they complete at once.
    for run in _runs_by_topic(events):
        await produce_events(bootstrap, run, default_topic="orders")
        await wait_caught_up(bootstrap, group, topics, timeout_s=120)
    # One poison record, to show the DLQ: it is refused with a reason, the rest flows.
    print("injecting 1 poison record (truncated JSON) on orders to show the DLQ ...", flush=True)
    await produce(bootstrap, [("orders", b"423927867", POISON)])
    await wait_caught_up(bootstrap, group, topics, timeout_s=120)
    total = sum((await end_offsets(bootstrap, [OUTCOMES_TOPIC])).values())
    outcomes = await read_topic(bootstrap, OUTCOMES_TOPIC, until=lambda r: len(r) >= total)
    letters = await read_topic(bootstrap, DLQ_TOPIC, until=lambda r: len(r) >= 1)
    return outcomes, letters


def summary(
    events: list[dict[str, Any]],
    outcomes: list[dict[str, Any]],
    letters: list[dict[str, Any]],
    api_calls: int,
) -> list[str]:
    """Why N events made M outcomes, and which DLQ record the demo injected itself."""
    statuses = Counter(o["status"] for o in outcomes)
    with_outcome = {o["event_id"] for o in outcomes}
    seen: set[str] = set()
    duplicates: list[str] = []
    no_rule: Counter[str] = Counter()
    for event in events:
        if event["id"] in seen:
            duplicates.append(event["id"])
            continue
        seen.add(event["id"])
        if event["id"] not in with_outcome:
            no_rule[event["type"]] += 1
    status_text = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    lines = [
        (
            f"{len(events)} events -> {len(outcomes)} outcomes ({status_text}) in {api_calls} API"
            " calls; offsets committed to the end:"
        ),
        (
            f"  {len(with_outcome)} events made the {len(outcomes)} commands above (one outcome"
            " each; an event can match several rules and a rule make several commands)"
        ),
    ]
    if duplicates:
        lines.append(
            f"  {len(duplicates)} duplicate event(s) ({', '.join(duplicates)}: an id already"
            " seen) made no new command"
        )
    if no_rule:
        kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(no_rule.items()))
        lines.append(
            f"  {sum(no_rule.values())} events matched no rule, so made no command ({kinds})"
        )
    for letter in letters:
        where = f"offset {letter['source_offset']} of {letter['source_topic']}"
        lines.append(
            f"  + 1 injected poison record (not from the file) -> DLQ: {where}: {letter['reason']}"
        )
    return lines


def _runs_by_topic(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    runs: list[list[dict[str, Any]]] = []
    last = None
    for event in events:
        topic = TOPIC_OF_TYPE.get(event["type"], "orders")
        if topic != last:
            runs.append([])
            last = topic
        runs[-1].append(event)
    return runs


def main() -> int:
    """Run the demo; returns the exit status."""
    shutil.rmtree(RUN_DIR / "kafka", ignore_errors=True)
    logs = RUN_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        print("starting Kafka broker ...", flush=True)
        broker = kafka_broker.start_broker(RUN_DIR / "kafka")
        print(f"  broker {broker.bootstrap} up in {time.monotonic() - started:.1f} s", flush=True)
        api_port, ops_port = kafka_broker.free_port(), kafka_broker.free_port()
        (logs / "simulator.log").unlink(missing_ok=True)
        procs.append(local_stack.start_simulator(api_port, logs / "simulator.log"))
        api = f"http://127.0.0.1:{api_port}"
        print(f"  simulator {api}", flush=True)
        asyncio.run(
            create_topics(
                broker.bootstrap,
                {**dict.fromkeys(TOPIC_OF_TYPE.values(), 3), OUTCOMES_TOPIC: 3, DLQ_TOPIC: 1},
            )
        )
        group = f"promo-bridge-demo-{uuid.uuid4().hex[:6]}"
        env = local_stack.service_env(
            {
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "GROUP_ID": group,
                "RULES_FILE": str(RULES),
                "CAPILLARY_BASE_URL": api,
                "HTTP_PORT": str(ops_port),
                "BATCH_WINDOW_MS": "300",
                **local_stack.SIMULATOR_SETTINGS,
            }
        )
        (logs / "service.log").unlink(missing_ok=True)
        service = local_stack.spawn([str(local_stack.BIN), "run"], logs / "service.log", env)
        procs.append(service)
        local_stack.wait_http(f"http://127.0.0.1:{ops_port}/healthz", 30, service)
        print(f"  service  ops http://127.0.0.1:{ops_port}/metrics  (logs in {logs})", flush=True)
        events = [json.loads(line) for line in EVENTS.read_text().splitlines() if line.strip()]
        print(f"producing {len(events)} events from {EVENTS.relative_to(ROOT)} ...", flush=True)
        outcomes, letters = asyncio.run(_exercise(broker.bootstrap, group, events))
        calls = _get_json(f"{api}/__admin/calls")
        print()
        print(_table(outcomes))
        print()
        lines = summary(
            events, [r.json() for r in outcomes], [r.json() for r in letters], len(calls["calls"])
        )
        print("\n".join(lines))
        return 0
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short and leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for proc in reversed(procs):
            local_stack.stop(proc, timeout_s=30)
        # By its pid file: the broker may have been started but not yet reported up.
        kafka_broker.stop_data_dir(RUN_DIR / "kafka")
        print(f"stopped everything ({time.monotonic() - started:.1f} s in all)")


def _interrupt(_signum: int, _frame: object) -> None:
    # SIGTERM (a cancelled CI job, `timeout`) unwinds like Ctrl-C, through main's clean-up. As
    # a SIGINT: inside asyncio.run (producing the events) the runner then cancels its main
    # task; a KeyboardInterrupt raised here would land in whichever task was running, and
    # asyncio would log it with a traceback ("Task exception was never retrieved").
    signal.raise_signal(signal.SIGINT)


def run() -> int:
    """main() with SIGTERM handled like Ctrl-C; an interruption is one line, not a traceback."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run())
