"""The `promo-bridge` command: the top-level parser, and dispatch to one module per command.

    run                      _cli_run.py           the service
    check                    _cli_check.py         what `run` needs, proven before it runs
    rules check | explain    _cli_rules.py         a rules file, alone or on one event
    replay --dry-run         _cli_replay.py        events through the rules and the batcher
    topics create, produce,  _cli_topics.py        one's own Kafka: the topics, a file of events,
    tail, dlq replay                               the outcomes and DLQ, dead letters sent back
    simulate-api             _cli_simulate_api.py  the Capillary API simulator

Each module's `register(subparsers)` adds its parsers and sets `func`; `main` runs
`args.func(args)` and returns its exit code.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version

from promo_bridge import (
    _cli_check,
    _cli_replay,
    _cli_rules,
    _cli_run,
    _cli_simulate_api,
    _cli_topics,
)


def build_parser() -> argparse.ArgumentParser:
    """The `promo-bridge` parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="promo-bridge",
        description="Kafka commerce events -> Capillary loyalty-promotion API calls.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version('promo-bridge')}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (_cli_run, _cli_check, _cli_rules, _cli_replay, _cli_topics, _cli_simulate_api):
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `promo-bridge` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
