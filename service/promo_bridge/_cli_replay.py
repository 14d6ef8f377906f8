"""`promo-bridge replay FILE EVENTS.jsonl --dry-run`: events through the rules and the batcher.

No Kafka and no API: the clock is simulated and every call is assumed to succeed at once, so
the output shows which batches the service would send. Exit 1 when the rules are invalid or a
line cannot be decoded.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from promo_bridge._cli_rules import load_rules_or_report, plural
from promo_bridge.domain.commands import Batch, Command
from promo_bridge.domain.events import Event, EventDecodeError, decode_event
from promo_bridge.domain.flow import Flow, FlowConfig, InputRecord
from promo_bridge.domain.keys import customer_key
from promo_bridge.domain.outcomes import CommandResult, Delivery, OutcomeStatus
from promo_bridge.domain.rules import RuleSet
from promo_bridge.settings import FlowSettings, SettingsError, load_flow_settings

_DEFAULT_INTERVAL_MS = 10
# Outcome timestamps are not shown by a dry run.
_RECEIVED_AT = datetime(1970, 1, 1, tzinfo=UTC)
_SERVICE_WINDOW_MS = FlowSettings.model_fields["batch_window_ms"].default


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `replay` on the main parser's subparsers."""
    replay = subparsers.add_parser(
        "replay",
        help="run events through the rules and the batcher, and show the calls (no API call)",
        description=(
            "Run a JSON-lines file of CloudEvents through the rules and the micro-batcher and"
            " print the batches that would be sent. The clock is simulated: an event's `time`,"
            " or --interval-ms after the previous event when it has none. Calls are assumed to"
            " succeed at once. Exit 1 if a line cannot be decoded."
        ),
    )
    replay.add_argument("file", type=Path, help="the rules YAML file")
    replay.add_argument("events", type=Path, help="CloudEvents, one JSON document per line")
    replay.add_argument(
        "--dry-run",
        action="store_true",
        required=True,
        help="required: replay never calls the API (the only mode so far)",
    )
    replay.add_argument("--format", choices=("table", "json"), default="table")
    replay.add_argument(
        "--window-ms",
        type=_non_negative,
        default=None,
        help="batch window (default: the service's, PROMO_BRIDGE_BATCH_WINDOW_MS or"
        f" {_SERVICE_WINDOW_MS})",
    )
    replay.add_argument(
        "--interval-ms",
        type=_non_negative,
        default=_DEFAULT_INTERVAL_MS,
        help=f"simulated gap before an event without `time` (default {_DEFAULT_INTERVAL_MS})",
    )
    replay.set_defaults(func=run_replay)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


@dataclass(slots=True)
class ReplayRun:
    """What a dry run saw, for printing."""

    lines: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)
    commands: list[tuple[int, Command]] = field(default_factory=list)
    duplicates: list[tuple[int, Command]] = field(default_factory=list)
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    batches: list[tuple[float, Batch]] = field(default_factory=list)
    start: float | None = None


def run_replay(args: argparse.Namespace) -> int:
    """`replay FILE EVENTS.jsonl --dry-run`."""
    rules = load_rules_or_report(args.file, sys.stderr)
    if rules is None:
        return 1
    try:
        text = args.events.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{args.events}: cannot read: {exc}", file=sys.stderr)
        return 1
    try:
        # The same limits as the service: its PROMO_BRIDGE_* batching settings and defaults.
        overrides = {} if args.window_ms is None else {"batch_window_ms": args.window_ms}
        config = load_flow_settings(**overrides).flow_config()
    except SettingsError as exc:
        print(f"promo-bridge: {exc}", file=sys.stderr)
        return 2
    replay = simulate(rules, text, args.events.name, config, args.interval_ms)
    if args.format == "json":
        print(json.dumps(_replay_dict(replay), indent=2))
    else:
        print(_replay_table(replay))
    return 1 if replay.refused else 0


def simulate(
    rules: RuleSet, text: str, topic: str, config: FlowConfig, interval_ms: int
) -> ReplayRun:
    """Run JSON lines through the service's flow core on a simulated clock; nothing leaves.

    Every line is a record of partition 0 at offset = its line number; every batch is answered
    `applied` and published at once, so a lane's next command follows at the same instant.
    """
    counter = itertools.count(1)
    flow = Flow(rules, config, id_factory=lambda: f"b{next(counter)}")
    replay = ReplayRun()
    now: float | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        replay.lines += 1
        key: bytes | None = None
        with contextlib.suppress(EventDecodeError):
            # A line that cannot be decoded takes no time; the core refuses it below.
            event = decode_event(line)
            now = _arrival(event, now, interval_ms)
            key = customer_key(json.loads(line))
            if replay.start is None:
                replay.start = now
        at = 0.0 if now is None else now
        _advance(flow, at, replay)
        record = InputRecord(topic, 0, number, key, line.encode())
        intake = flow.accept([record], at, _RECEIVED_AT)
        for refusal in intake.refused:
            replay.refused.append((number, refusal.reason))
            flow.dead_letter_published(refusal)
        replay.skipped.extend(
            (number, rule, f"{s.action.value} {s.subject}: {s.reason.value}: {s.detail}")
            for rule, s in intake.skipped
        )
        replay.errors.extend((number, rule, error) for rule, _, error in intake.rule_errors)
        replay.commands.extend((number, command) for command in intake.accepted)
        replay.duplicates.extend((number, command) for command in intake.duplicates)
        _send_due(flow, at, replay)
    # Let the clock run on until every window has expired and every lane has drained.
    _advance(flow, float("inf"), replay)
    return replay


def _arrival(event: Event, previous: float | None, interval_ms: int) -> float:
    if event.time is not None:
        at = event.time.timestamp()
    elif previous is None:
        at = 0.0
    else:
        at = previous + interval_ms / 1000
    # The core's clock is monotonic: an event stamped in the past arrives "now".
    return at if previous is None else max(at, previous)


def _advance(flow: Flow, until: float, replay: ReplayRun) -> None:
    """Run the clock from deadline to deadline up to `until`, as the service's timer would."""
    while (deadline := flow.next_deadline(until)) is not None and deadline <= until:
        _send_due(flow, deadline, replay)
    if until != float("inf"):
        _send_due(flow, until, replay)


def _send_due(flow: Flow, now: float, replay: ReplayRun) -> None:
    # Completing a head can make the lane's next command due at once: repeat until quiet.
    while batches := flow.ready(now):
        for batch in batches:
            replay.batches.append((now, batch))
            applied = tuple(
                CommandResult(c.command_id, OutcomeStatus.APPLIED, batch_id=batch.batch_id)
                for c in batch.commands
            )
            flow.published(flow.delivered(batch, Delivery(completed=applied), now))


def _relative(replay: ReplayRun, at: float) -> float:
    return round(at - (replay.start or 0.0), 3)


def _replay_dict(replay: ReplayRun) -> dict[str, Any]:
    line_of = {command.command_id: number for number, command in replay.commands}
    return {
        "events": replay.lines,
        "refused": [{"line": n, "reason": reason} for n, reason in replay.refused],
        "condition_errors": [{"line": n, "rule": r, "error": e} for n, r, e in replay.errors],
        "skipped": [{"line": n, "rule": r, "detail": d} for n, r, d in replay.skipped],
        "commands": [
            {
                "line": number,
                "event_id": command.event_id,
                "command_id": command.command_id,
                "rule": command.rule,
                "action": command.action.value,
                "subject": command.subject,
                "identifier_name": command.identifier_name.value,
                "identifier_value": command.identifier_value,
            }
            for number, command in replay.commands
        ],
        "duplicates": [
            {"line": number, "command_id": command.command_id}
            for number, command in replay.duplicates
        ],
        "batches": [
            {
                "batch_id": batch.batch_id,
                "at_s": _relative(replay, at),
                "endpoint": batch.key.endpoint.value,
                "action": batch.key.action.value,
                "subject": batch.commands[0].subject,
                "promotion_or_target": batch.commands[0].subject_label,
                "identifier_name": batch.key.identifier_name.value,
                "reason": batch.reason,
                "size": len(batch),
                "commands": [
                    {
                        "command_id": c.command_id,
                        "line": line_of.get(c.command_id),
                        "identifier_value": c.identifier_value,
                    }
                    for c in batch.commands
                ],
            }
            for at, batch in replay.batches
        ],
    }


def _replay_table(replay: ReplayRun) -> str:
    summary = (
        f"events: {replay.lines} ({len(replay.refused)} refused); "
        f"commands: {len(replay.commands)} ({plural(len(replay.duplicates), 'duplicate')}"
        f" refused); batches: {len(replay.batches)}"
    )
    out = [summary]
    out.extend(_section("refused lines", (f"line {n}: {r}" for n, r in replay.refused)))
    out.extend(_section("condition errors", (f"line {n}: {r}: {e}" for n, r, e in replay.errors)))
    out.extend(_section("skipped actions", (f"line {n}: {r}: {d}" for n, r, d in replay.skipped)))
    header = ("batch", "at_s", "endpoint", "action", "subject", "id", "size", "reason", "customers")
    rows = [
        (
            batch.batch_id,
            f"+{_relative(replay, at):.3f}",
            batch.key.endpoint.value,
            batch.key.action.value,
            batch.commands[0].subject,
            batch.key.identifier_name.value,
            str(len(batch)),
            batch.reason,
            _customers(batch),
        )
        for at, batch in replay.batches
    ]
    if rows:
        out.append("")
        out.extend(columns([header, *rows]))
    return "\n".join(out)


def _section(title: str, lines: Iterator[str]) -> list[str]:
    body = [f"  {line}" for line in lines]
    return ["", f"{title}:", *body] if body else []


def _customers(batch: Batch, shown: int = 5) -> str:
    values = [command.identifier_value for command in batch.commands]
    text = ", ".join(values[:shown])
    return text + (f" (+{len(values) - shown})" if len(values) > shown else "")


def columns(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells as aligned lines (the first row is usually the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
