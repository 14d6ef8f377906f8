"""CLI commands that need no Kafka and no API: `rules check`, `rules explain`, `replay --dry-run`.

`cli.py` registers them with `add_rules_parsers` and runs `args.func(args)`; each returns the
exit code: 0 when all is well, 1 when the rules or the input are invalid.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from promo_bridge.domain.batcher import DEFAULT_WINDOW_MS, MicroBatcher
from promo_bridge.domain.commands import Batch, Command, EventPosition
from promo_bridge.domain.events import Event, EventDecodeError, decode_event
from promo_bridge.domain.rules import RulesError, RuleSet, load_rules

_DEFAULT_INTERVAL_MS = 10


def add_rules_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `rules check`, `rules explain` and `replay` on the main parser's subparsers."""
    rules = subparsers.add_parser(
        "rules",
        help="check a rules file, or explain what it does with one event",
        description="Check a rules file, or explain what it does with one event.",
    )
    commands = rules.add_subparsers(dest="rules_command", required=True)

    check = commands.add_parser(
        "check",
        help="validate a rules file (exit 1 listing every problem)",
        description="Validate a rules file: print a summary, or every problem with its line.",
    )
    check.add_argument("file", type=Path, help="the rules YAML file")
    check.set_defaults(func=run_check)

    explain = commands.add_parser(
        "explain",
        help="show which rules match one event, which commands they make, and why not",
        description="Decode one CloudEvent (JSON) and show every rule's verdict on it.",
    )
    explain.add_argument("file", type=Path, help="the rules YAML file")
    explain.add_argument("event", help="a file holding one CloudEvent as JSON, or - for stdin")
    explain.add_argument("--format", choices=("text", "json"), default="text")
    explain.set_defaults(func=run_explain)

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
        default=DEFAULT_WINDOW_MS,
        help=f"batch window (default {DEFAULT_WINDOW_MS})",
    )
    replay.add_argument(
        "--interval-ms",
        type=_non_negative,
        default=_DEFAULT_INTERVAL_MS,
        help=f"simulated gap before an event without `time` (default {_DEFAULT_INTERVAL_MS})",
    )
    replay.set_defaults(func=run_replay)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _load(path: Path, out: TextIO) -> RuleSet | None:
    try:
        return load_rules(path)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=out)
        print(f"{path}: {_plural(len(exc.problems), 'problem')}", file=out)
        return None


# -- rules check ----------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    """`rules check FILE`."""
    rules = _load(args.file, sys.stdout)
    if rules is None:
        return 1
    for warning in rules.warnings:
        print(f"warning: {warning}")
    print(f"{args.file}: OK: {rules.summary()}")
    return 0


# -- rules explain --------------------------------------------------------------------------


def run_explain(args: argparse.Namespace) -> int:
    """`rules explain FILE EVENT.json`."""
    rules = _load(args.file, sys.stderr)
    if rules is None:
        return 1
    source = "stdin" if args.event == "-" else args.event
    try:
        raw = sys.stdin.buffer.read() if args.event == "-" else Path(args.event).read_bytes()
        event = decode_event(raw)
    except OSError as exc:
        print(f"{source}: cannot read: {exc}", file=sys.stderr)
        return 1
    except EventDecodeError as exc:
        print(f"{source}: not a valid event: {exc}", file=sys.stderr)
        return 1
    explanation = rules.explain(event)
    if args.format == "json":
        print(json.dumps(explanation.to_dict(), indent=2))
    else:
        print(explanation.render())
    return 0


# -- replay --dry-run -----------------------------------------------------------------------


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
    rules = _load(args.file, sys.stderr)
    if rules is None:
        return 1
    try:
        text = args.events.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{args.events}: cannot read: {exc}", file=sys.stderr)
        return 1
    replay = simulate(rules, text, args.events.name, args.window_ms, args.interval_ms)
    if args.format == "json":
        print(json.dumps(_replay_dict(replay), indent=2))
    else:
        print(_replay_table(replay))
    return 1 if replay.refused else 0


def simulate(rules: RuleSet, text: str, topic: str, window_ms: int, interval_ms: int) -> ReplayRun:
    """Run JSON lines through rules and batcher on a simulated clock; nothing leaves."""
    counter = itertools.count(1)
    batcher = MicroBatcher(window_ms=window_ms, id_factory=lambda: f"b{next(counter)}")
    replay = ReplayRun()
    now: float | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        replay.lines += 1
        try:
            event = decode_event(line)
        except EventDecodeError as exc:
            replay.refused.append((number, str(exc)))
            continue
        now = _arrival(event, now, interval_ms)
        if replay.start is None:
            replay.start = now
        _advance(batcher, now, replay)
        explanation = rules.evaluate(event, EventPosition(topic, 0, number))
        replay.skipped.extend(
            (number, rule, f"{s.action.value} {s.subject}: {s.reason.value}: {s.detail}")
            for rule, s in explanation.skipped
        )
        replay.errors.extend((number, rule, error) for rule, error in explanation.errors)
        for command in explanation.commands:
            if batcher.add(command, now):
                replay.commands.append((number, command))
            else:
                replay.duplicates.append((number, command))
        _send_due(batcher, now, replay)
    # Let the clock run on until every window has expired and every lane has drained.
    _advance(batcher, float("inf"), replay)
    return replay


def _arrival(event: Event, previous: float | None, interval_ms: int) -> float:
    if event.time is not None:
        at = event.time.timestamp()
    elif previous is None:
        at = 0.0
    else:
        at = previous + interval_ms / 1000
    # The batcher's clock is monotonic: an event stamped in the past arrives "now".
    return at if previous is None else max(at, previous)


def _advance(batcher: MicroBatcher, until: float, replay: ReplayRun) -> None:
    """Run the clock from deadline to deadline up to `until`, as the runtime's timer would."""
    while (deadline := batcher.next_deadline()) is not None and deadline <= until:
        _send_due(batcher, deadline, replay)
    if until != float("inf"):
        _send_due(batcher, until, replay)


def _send_due(batcher: MicroBatcher, now: float, replay: ReplayRun) -> None:
    # Completing a head can make the lane's next command due at once: repeat until quiet.
    while batches := batcher.ready(now):
        for batch in batches:
            replay.batches.append((now, batch))
            batcher.complete(batch)


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
        f"commands: {len(replay.commands)} ({_plural(len(replay.duplicates), 'duplicate')}"
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
        out.extend(_columns([header, *rows]))
    return "\n".join(out)


def _section(title: str, lines: Iterator[str]) -> list[str]:
    body = [f"  {line}" for line in lines]
    return ["", f"{title}:", *body] if body else []


def _customers(batch: Batch, shown: int = 5) -> str:
    values = [command.identifier_value for command in batch.commands]
    text = ", ".join(values[:shown])
    return text + (f" (+{len(values) - shown})" if len(values) > shown else "")


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
