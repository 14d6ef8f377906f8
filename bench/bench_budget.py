"""The org's API budget split by partitions, measured where the limit is enforced.

Run: make bench-budget   or   .venv/bin/python bench/bench_budget.py [--budget B] [--windows W]

On a real broker (scripts/kafka_broker.py), three service instances of one consumer group run
in this process against the API simulator, which answers 429 beyond B calls of an endpoint in
any sliding 60 s window; the service is told that B is the org's budget. Every event makes one
unEnroll call, and far more events wait than B allows, so the instances are saturated. Phase
"all": three instances. Phase "one stopped": one is stopped gracefully, the group rebalances,
two remain. Each phase is measured over W full 60 s windows that start once every instance holds
its new share (tests/budget_scenario.py; PROMO_BRIDGE_TEST_BUDGET_WINDOWS=1 runs it as a test).

Prints B, the settle time of each phase, the calls the simulator answered in each window (and
as a fraction of B), the busiest sliding 60 s window of the whole run, and the 429 count. Exit
0 when every window used at least 99 % of B, no window held more than B and nothing got a 429.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from budget_scenario import BudgetRun, run_budget_scenario  # noqa: E402
from kafka_broker import start_broker, stop_broker  # noqa: E402
from promo_bridge.observability.logging import configure_logging  # noqa: E402

# The share used counts as "whole" from here; floor() and the windows' edges cost a call or two.
WHOLE = 0.99


def report(run: BudgetRun) -> bool:
    """Print the figures; whether the budget was used whole and never overrun."""
    print(f"budget B = {run.budget} calls/min (unEnroll), simulator limit = B")
    print(f"settled after (s): {run.settle_s}")
    whole = True
    for window in run.windows:
        fraction = window.calls / run.budget
        whole = whole and fraction >= WHOLE
        print(
            f"  phase {window.phase!r:14} instances {window.instances}: "
            f"{window.calls:5d} calls in 60 s = {fraction:.1%} of B"
        )
    print(f"busiest sliding 60 s window: {run.busiest_window} calls")
    print(f"429 answers: {run.throttled}")
    return whole and run.busiest_window <= run.budget and run.throttled == 0


def main(argv: list[str] | None = None) -> int:
    """Start a broker, run the scenario, print the figures; exit 1 if a target was missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=1200, help="org calls/min (default 1200)")
    parser.add_argument("--windows", type=int, default=2, help="60 s windows per phase")
    parser.add_argument("--partitions", type=int, default=6, help="input partitions")
    parser.add_argument(
        "--log-level", default="WARNING", help="services' log level on stderr (INFO: every call)"
    )
    args = parser.parse_args(argv)
    # The figures are on stdout, the services' logs on stderr.
    configure_logging(args.log_level, "console")
    with tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp:
        directory = Path(tmp)
        print("starting a Kafka broker...", file=sys.stderr)
        broker = start_broker(directory / "kafka")
        try:
            work = directory / "work"
            work.mkdir()
            run = asyncio.run(
                run_budget_scenario(
                    broker.bootstrap,
                    work,
                    uuid.uuid4().hex[:10],
                    budget=args.budget,
                    partitions=args.partitions,
                    windows_per_phase=args.windows,
                )
            )
        finally:
            stop_broker(broker)
    return 0 if report(run) else 1


if __name__ == "__main__":
    sys.exit(main())
