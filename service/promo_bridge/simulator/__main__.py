"""``python -m promo_bridge.simulator [options]``: the simulate-api command without the CLI."""

from __future__ import annotations

import argparse
import sys

from promo_bridge.simulator._cli import configure_parser, main_simulate_api


def main(argv: list[str] | None = None) -> int:
    """Parse options and run the simulator."""
    parser = configure_parser(argparse.ArgumentParser(prog="python -m promo_bridge.simulator"))
    return main_simulate_api(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
