"""`promo-bridge check`: prove a deployment's settings before `run` (see _cli_check_probes.py).

One line per finding on stdout (`ok:`, `warning:` or `error:` and what), exit 1 when any is an
error, else 0. Reads the same PROMO_BRIDGE_* variables as `run`.
"""

# The probes load Kafka and HTTP: imported inside `run_check`, so that the other commands
# start fast and never load them.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import asyncio


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `check` on the main parser's subparsers."""
    parser = subparsers.add_parser(
        "check",
        help="check the settings, rules, broker, topics and Capillary credentials; create nothing",
        description="Check what `run` needs: every PROMO_BRIDGE_* variable known and valid, the"
        " rules, the broker, the topics and their partition counts, and the Capillary"
        " credentials. One line per finding; exit 1 on any error.",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="how long to wait for the broker (default 15)",
    )
    parser.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    """`check`: print every finding; 1 when any is an error."""
    from promo_bridge._cli_check_probes import check
    from promo_bridge.observability.logging import configure_logging

    # The findings say everything; the libraries' own logs would only repeat them.
    configure_logging("CRITICAL", "console")
    findings = asyncio.run(check(timeout_s=args.timeout))
    for finding in findings.items:
        print(finding.render(), flush=True)
    return 1 if findings.failed else 0
