"""`promo-bridge simulate-api`: the Capillary API simulator, which owns its options and command.

The simulator package keeps them (``promo_bridge.simulator._cli``, also run by ``python -m
promo_bridge.simulator``) because it shares no code with the client or the domain; this
module only hangs the command on the main parser.
"""

from __future__ import annotations

import argparse

from promo_bridge import simulator


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `simulate-api` on the main parser's subparsers."""
    simulator.add_simulate_api_parser(subparsers)
