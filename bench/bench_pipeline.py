"""Micro-benchmark of the per-event hot path: decode, rules, batching (no Kafka, no HTTP).

Run: .venv/bin/python bench/bench_pipeline.py [--events N] [--repeat R] [--cel-only]

Events are the examples/events.jsonl lines with fresh ids, so the batcher sees no duplicates.
Each stage is timed cumulatively (decode; decode + rules; decode + rules + batching) and
compared with `json.loads` of the same bytes, measured in the same run: the ratio says how much
dearer than merely parsing the JSON the whole pipeline is, on whatever machine runs it.
"rules alone" times `RuleSet.evaluate` on events decoded beforehand. `--cel-only` drops the
compiled conditions (domain/_cel_fast.py), so every condition runs in the CEL library as it did
before them: the same run then shows what the fast path saves.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson

from promo_bridge._cli_run import _GC_THRESHOLDS
from promo_bridge.capillary._wire import (
    Answered,
    CallContext,
    Settled,
    build_request,
    interpret,
)
from promo_bridge.domain.batcher import MicroBatcher
from promo_bridge.domain.commands import Batch, Command, EventPosition
from promo_bridge.domain.events import decode_event
from promo_bridge.domain.flow import Flow, FlowConfig, InputRecord
from promo_bridge.domain.outcomes import (
    CommandResult,
    Delivery,
    OutcomeStatus,
    encode_outcome,
    outcome_record,
)
from promo_bridge.domain.rules import RuleSet, load_rules

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# The service-core line reuses bench-e2e's backlog and rules (bench/e2e_runs.py, scripts/).
sys.path.insert(0, str(ROOT / "scripts"))

from chaos_rig import order_events  # noqa: E402
from e2e_runs import write_rules  # noqa: E402


def make_events(count: int) -> list[bytes]:
    """`count` raw events cycled from the examples, each with a unique CloudEvents id."""
    samples = [json.loads(line) for line in (EXAMPLES / "events.jsonl").read_text().splitlines()]
    events = []
    for index in range(count):
        event = dict(samples[index % len(samples)])
        event["id"] = f"bench-{index}"
        events.append(json.dumps(event, separators=(",", ":")).encode())
    return events


def run_json(events: list[bytes]) -> None:
    for raw in events:
        json.loads(raw)


def run_decode(events: list[bytes]) -> None:
    for raw in events:
        decode_event(raw)


def cel_only(rules: RuleSet) -> RuleSet:
    """The same rules without their compiled conditions: every one runs in the CEL library."""
    plain = tuple(
        dataclasses.replace(
            rule,
            condition=rule.condition and dataclasses.replace(rule.condition, fast=None),
        )
        for rule in rules.rules
    )
    return RuleSet(dataclasses.replace(rules.spec, rules=plain))


def make_rules_alone_stage(rules: RuleSet, events: list[bytes]) -> Callable[[list[bytes]], None]:
    decoded = [decode_event(raw) for raw in events]

    def run(_events: list[bytes]) -> None:
        for offset, event in enumerate(decoded):
            rules.evaluate(event, EventPosition("bench", 0, offset))

    return run


def make_rules_stage(rules: RuleSet) -> Callable[[list[bytes]], None]:

    def run(events: list[bytes]) -> None:
        for offset, raw in enumerate(events):
            rules.commands_for(decode_event(raw), EventPosition("bench", 0, offset))

    return run


def make_pipeline_stage(rules: RuleSet) -> Callable[[list[bytes]], None]:

    def run(events: list[bytes]) -> None:
        batcher = MicroBatcher(window_ms=200)
        now = 0.0
        for offset, raw in enumerate(events):
            now += 0.0001  # 10,000 events/s arriving
            event = decode_event(raw)
            for command in rules.commands_for(event, EventPosition("bench", 0, offset)):
                batcher.add(command, now)
            # Calls "succeed" at once: completing lets each lane's next command in.
            for batch in batcher.ready(now):
                batcher.complete(batch)
        while batcher.pending_count:
            for batch in batcher.flush_all(now):
                batcher.complete(batch)

    return run


def make_flow_stage(rules: RuleSet) -> Callable[[list[bytes]], None]:
    """The service's flow core: intake, batches, results, publishes and the watermark."""
    received_at = datetime.now(UTC)

    def settle(flow: Flow, batches: list[Batch], now: float) -> None:
        for batch in batches:
            results = tuple(
                CommandResult(c.command_id, OutcomeStatus.APPLIED) for c in batch.commands
            )
            flow.published(flow.delivered(batch, Delivery(completed=results), now))

    def run(events: list[bytes]) -> None:
        flow = Flow(rules, FlowConfig(window_ms=200, max_pending=len(events) * 4 + 1))
        now = 0.0
        for offset, raw in enumerate(events):
            now += 0.0001  # 10,000 events/s arriving
            flow.accept([InputRecord("bench", 0, offset, None, raw)], now, received_at)
            settle(flow, flow.ready(now), now)
        while flow.pending:
            settle(flow, flow.drain(now), now)
        flow.committed(flow.committable())

    return run


def make_order_events(count: int) -> list[bytes]:
    """`count` order.placed events over the threshold, one customer each: bench-e2e's backlog."""
    return [orjson.dumps(event) for event in order_events("bench", count)]


def _answer(commands: Sequence[Command]) -> bytes:
    """The simulator's bulk answer for an ENROL of `commands`, every customer applied."""
    return orjson.dumps(
        {
            "response": [
                {
                    "result": {
                        "entityType": "CUSTOMER",
                        "entityId": int(command.identifier_value),
                        "programId": 2714,
                        "issualId": str(900_000 + index),
                    },
                    "errors": None,
                    "warnings": [],
                }
                for index, command in enumerate(commands)
            ],
            "totalCount": len(commands),
            "failureCount": 0,
        }
    )


def make_service_core_stage(rules: RuleSet) -> Callable[[list[bytes]], None]:
    """What the service does per command besides I/O: the flow core, the request and its
    answer, intents, the ledger, outcome and state records encoded, the commit marks."""
    received_at = datetime.now(UTC)

    now_at = received_at

    def send(flow: Flow, batch: Batch, now: float) -> None:
        flow.intents(batch.commands, 0)
        request = build_request(
            batch.key, batch.commands, unenroll_prefix="", revoke_direct_earn_bulk_action=False
        )
        orjson.dumps(request.body)
        context = CallContext(
            endpoint=batch.key.endpoint,
            action=batch.key.action,
            identifier_name=batch.key.identifier_name,
            commands=batch.commands,
            accepted_statuses=frozenset({200}),
            not_enrolled_codes=frozenset(),
        )
        outcome = interpret(context, 200, _answer(batch.commands), None)
        if not isinstance(outcome, Answered):
            raise TypeError(f"unexpected answer {outcome}")
        results = tuple(
            verdict.to_result(
                command_id=command.command_id, attempts=1, request_id="r", batch_id=batch.batch_id
            )
            for command, verdict in zip(batch.commands, outcome.verdicts, strict=True)
            if isinstance(verdict, Settled)
        )
        completions = flow.delivered(batch, Delivery(completed=results), now)
        records = [
            encode_outcome(
                outcome_record(c.command, c.result, received_at=now_at, completed_at=now_at)
            )
            for c in completions
        ]
        for state in flow.settle(completions, 0):
            len(state.key)
        flow.published(completions, range(len(records)))

    def run(events: list[bytes]) -> None:
        flow = Flow(rules, FlowConfig(window_ms=200, max_pending=len(events) * 4 + 1))
        now = 0.0
        for start in range(0, len(events), 500):
            now += 0.05  # fetches of 500 records, 10,000 events/s arriving
            records = [
                InputRecord("bench", 0, offset, str(offset).encode(), events[offset])
                for offset in range(start, min(start + 500, len(events)))
            ]
            flow.accept(records, now, received_at)
            for batch in flow.ready(now):
                send(flow, batch, now)
            flow.restore_marks(flow.committable())
        while flow.pending:
            for batch in flow.drain(now):
                send(flow, batch, now)
        flow.committed(flow.committable())

    return run


def best_of(stage: Callable[[list[bytes]], None], events: list[bytes], repeat: int) -> float:
    """Best wall time of `repeat` runs (the least disturbed by the rest of the machine)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        stage(events)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rules", type=Path, default=EXAMPLES / "rules.yaml")
    parser.add_argument(
        "--cel-only", action="store_true", help="evaluate every condition in the CEL library"
    )
    args = parser.parse_args()

    events = make_events(args.events)
    rules = load_rules(args.rules)
    if args.cel_only:
        rules = cel_only(rules)
    stages: list[tuple[str, Callable[[list[bytes]], None]]] = [
        ("json.loads (baseline)", run_json),
        ("decode", run_decode),
        ("rules alone (decoded events)", make_rules_alone_stage(rules, events)),
        ("decode + rules", make_rules_stage(rules)),
        ("decode + rules + batcher", make_pipeline_stage(rules)),
        ("flow core (+ results, watermark)", make_flow_stage(rules)),
    ]
    conditions = "CEL library only" if args.cel_only else "compiled where possible"
    print(
        f"{len(events)} events, best of {args.repeat}, Python {platform.python_version()},"
        f" conditions: {conditions}"
    )
    baseline: float | None = None
    for name, stage in stages:
        seconds = best_of(stage, events, args.repeat)
        per_event_us = seconds / len(events) * 1e6
        baseline = baseline if baseline is not None else per_event_us
        rate = len(events) / seconds
        ratio = per_event_us / baseline
        print(f"  {name:<34} {rate:>10,.0f} events/s  {per_event_us:7.2f} us/event  x{ratio:.1f}")
    report_service_core(args.events, args.repeat)


def report_service_core(count: int, repeat: int) -> None:
    """The per-command path of `make bench-e2e` without its I/O, against json.loads."""
    orders = make_order_events(count)
    # As `promo-bridge run` sets it: with Python's default a collection every 700 allocations
    # costs the core a third more than in the service.
    gc.set_threshold(*_GC_THRESHOLDS)
    with tempfile.TemporaryDirectory() as directory:
        # bench-e2e's rules file with one command per matching event.
        order_rules = load_rules(write_rules(Path(directory))[1])
    print(f"{count} order events over the threshold, one enrol each (the rule of make bench-e2e)")
    baseline = best_of(run_json, orders, repeat) / count * 1e6
    print(f"  {'json.loads (baseline)':<34} {baseline:7.2f} us/event")
    core = best_of(make_service_core_stage(order_rules), orders, repeat) / count * 1e6
    print(
        f"  {'service core (no I/O)':<34} {core:7.2f} us/command  x{core / baseline:.1f}"
        "  (flow, request and answer, intents, ledger, outcome and state records)"
    )


if __name__ == "__main__":
    main()
