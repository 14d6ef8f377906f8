"""`promo-bridge run`: the service, configured by PROMO_BRIDGE_* environment variables.

Exit 2, with one line on stderr, when the settings, the rules, the topics or the ops port are
unfit; otherwise run until stopped and exit 0.
"""

# The service's modules are imported inside `run`, so that the other commands start fast and
# never load Kafka or HTTP.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promo_bridge.settings import EventLoop

# Collect young objects every 50,000 allocations instead of 700 (see _tune_garbage_collection).
_GC_THRESHOLDS = (50_000, 20, 100)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `run` on the main parser's subparsers."""
    parser = subparsers.add_parser(
        "run",
        help="run the service (configured by PROMO_BRIDGE_* environment variables)",
        description="Run the service. Every setting is an environment variable PROMO_BRIDGE_*;"
        " see README.md.",
    )
    parser.set_defaults(func=run)


def run(_: argparse.Namespace) -> int:
    """`run`: check the settings, build the service, serve until stopped."""
    from promo_bridge.settings import (
        ENV_PREFIX,
        SettingsError,
        check_known_variables,
        load_settings,
    )

    try:
        # A misspelt variable would otherwise leave its setting at the default, unnoticed.
        check_known_variables(os.environ)
        settings = load_settings()
    except SettingsError as exc:
        print(f"promo-bridge: {exc}", file=sys.stderr)
        return 2

    from promo_bridge.domain.rules import RulesError
    from promo_bridge.kafka.restore import TopologyError
    from promo_bridge.observability.http import OpsPortError
    from promo_bridge.observability.logging import configure_logging
    from promo_bridge.runtime import build_service, run_service

    configure_logging(settings.log_level, settings.log_format.value)
    try:
        service = build_service(settings)
    except (SettingsError, RulesError) as exc:
        print(f"promo-bridge: {exc}", file=sys.stderr)
        return 2
    _tune_garbage_collection()
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
            runner.run(run_service(service))
    except TopologyError as exc:
        print(f"promo-bridge: {exc}", file=sys.stderr)
        return 2
    except OpsPortError as exc:
        print(
            f"promo-bridge: {ENV_PREFIX}HTTP_PORT: {exc}; set it (or {ENV_PREFIX}HTTP_HOST)"
            " to an address that is free",
            file=sys.stderr,
        )
        return 2
    return 0


def _loop_factory(kind: EventLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop `run` serves on: uvloop's unless the settings ask for asyncio's."""
    from promo_bridge.settings import EventLoop

    if kind is EventLoop.ASYNCIO:
        return None  # asyncio.Runner's default
    import uvloop

    return uvloop.new_event_loop


def _tune_garbage_collection() -> None:
    """Fewer collections, and none that walks what start-up made.

    On a backlog the defaults ran the collector ~200 times a second, and every few seconds a
    full collection walked every object the imports and the compiled rules made: 2.2 s of
    10.8 s CPU in a `make bench-e2e` run (gc.callbacks), pauses of tens of milliseconds in
    the latency tail. Frozen, start-up objects are never walked again; with the larger
    first threshold the collector ran 10 times in that run, 0.25 s in all. The service's
    objects are short-lived and freed by reference counting; the collector only finds cycles.
    """
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
