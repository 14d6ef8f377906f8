"""promo-bridge run | rules check | rules explain | replay | simulate-api."""

from __future__ import annotations

import argparse
import asyncio
import sys

from promo_bridge._cli_rules import add_rules_parsers
from promo_bridge.simulator import add_simulate_api_parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `promo-bridge` console script."""
    parser = argparse.ArgumentParser(
        prog="promo-bridge",
        description="Kafka commerce events -> Capillary loyalty-promotion API calls.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run the service (configured by PROMO_BRIDGE_* environment variables)",
        description="Run the service. Every setting is an environment variable PROMO_BRIDGE_*;"
        " see README.md.",
    )
    run.set_defaults(func=_run)
    add_rules_parsers(sub)
    add_simulate_api_parser(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def _run(_: argparse.Namespace) -> int:
    # Imported here so `rules check` and `simulate-api` start fast and need no Kafka.
    # ruff: noqa: PLC0415
    from promo_bridge.domain.rules import RulesError
    from promo_bridge.observability.logging import configure_logging
    from promo_bridge.runtime import build_service, run_service
    from promo_bridge.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"promo-bridge: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format.value)
    try:
        service = build_service(settings)
    except RulesError as exc:
        print(f"promo-bridge: {exc}", file=sys.stderr)
        return 2
    asyncio.run(run_service(service))
    return 0


if __name__ == "__main__":
    sys.exit(main())
