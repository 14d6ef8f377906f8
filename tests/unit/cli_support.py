"""Running `promo-bridge` commands in-process, and the example files they read."""

from __future__ import annotations

from pathlib import Path

from promo_bridge.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "rules.yaml"
BAD_RULES = ROOT / "examples" / "bad-rules.yaml"
EVENTS = ROOT / "examples" / "events.jsonl"


def run(*argv: str | Path) -> int:
    """Parse `argv` with the real `promo-bridge` parser and run the command; its exit code."""
    args = build_parser().parse_args([str(a) for a in argv])
    result: int = args.func(args)
    return result


def first_line(text: str) -> str:
    return text.splitlines()[0]
