"""`promo-bridge rules check` and `rules explain`: a rules file, alone or on one event.

No Kafka and no API. Each command returns the exit code: 0 when all is well, 1 when the rules
or the event are invalid. `load_rules_or_report` also serves `replay` (_cli_replay.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from promo_bridge.domain.events import EventDecodeError, decode_event
from promo_bridge.domain.rules import RulesError, RuleSet, load_rules


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `rules check` and `rules explain` on the main parser's subparsers."""
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


def plural(count: int, noun: str) -> str:
    """`1 problem`, `2 problems`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def load_rules_or_report(path: Path, out: TextIO) -> RuleSet | None:
    """The rules in `path`, or None after printing every problem (and their count) to `out`."""
    try:
        return load_rules(path)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=out)
        print(f"{path}: {plural(len(exc.problems), 'problem')}", file=out)
        return None


# -- rules check ----------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    """`rules check FILE`."""
    rules = load_rules_or_report(args.file, sys.stdout)
    if rules is None:
        return 1
    for warning in rules.warnings:
        print(f"warning: {warning}")
    print(f"{args.file}: OK: {rules.summary()}")
    return 0


# -- rules explain --------------------------------------------------------------------------


def run_explain(args: argparse.Namespace) -> int:
    """`rules explain FILE EVENT.json`."""
    rules = load_rules_or_report(args.file, sys.stderr)
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
