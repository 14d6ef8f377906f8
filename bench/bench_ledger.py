"""The holdings ledger at scale: state-topic bytes, memory and restore time for N orders.

Run: .venv/bin/python bench/bench_ledger.py [--orders 1000000] [--orders-per-customer 5]

Builds the ledger the way the service does (intent, then result, per order's enrol and earn),
takes the compacted state topic's content (the last record per holding), and times a restore
from it, as a replica does when a partition is assigned. No Kafka: reading the records from
the broker adds the fetch time of their bytes on top (printed, so it can be estimated).
A baseline measured in the same run: `json.loads` of the same record values.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from datetime import UTC, datetime

from promo_bridge.domain.commands import (
    Action,
    Command,
    EventPosition,
    IdentifierName,
    PromotionRef,
)
from promo_bridge.domain.ledger import Ledger
from promo_bridge.domain.outcomes import CommandResult, OutcomeStatus

PROMOTION = PromotionRef(program_id=2714, promotion_id=202779)


def command(customer: int, order: int, action: Action) -> Command:
    return Command(
        command_id=f"c-{customer}-{order}-{action.value}",
        event_id=f"e-{customer}-{order}",
        position=EventPosition("orders", 0, order),
        rule="big-order",
        action=action,
        subject="big-spender",
        identifier_name=IdentifierName.ID,
        identifier_value=str(customer),
        source="INSTORE",
        promotion=PROMOTION,
        order_id=f"o-{customer}-{order}",
        customer_key=str(customer),
    )


def build(orders: int, per_customer: int) -> dict[bytes, bytes | None]:
    """The compacted state partition after `orders` orders: last value per key."""
    ledger = Ledger()
    compacted: dict[bytes, bytes | None] = {}
    earned = 0
    for index in range(orders):
        customer, order = divmod(index, per_customer)
        for action in (Action.ENROL, Action.EARN):
            cmd = command(customer, order, action)
            for record in ledger.intend([cmd], now_ms=index):
                compacted[record.key] = record.value
            earned += 1
            result = CommandResult(
                cmd.command_id, OutcomeStatus.APPLIED, issual_id="845", earned_id=str(earned)
            )
            for record in ledger.settle([(cmd, result)], now_ms=index):
                compacted[record.key] = record.value
    return compacted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--orders-per-customer", type=int, default=5)
    args = parser.parse_args()

    started = time.perf_counter()
    compacted = build(args.orders, args.orders_per_customer)
    build_s = time.perf_counter() - started
    records = list(compacted.items())
    value_bytes = sum(len(k) + len(v or b"") for k, v in records)

    gc.collect()
    started = time.perf_counter()
    for _, value in records:
        json.loads(value or b"null")
    baseline_s = time.perf_counter() - started

    gc.collect()
    started = time.perf_counter()
    holdings = Ledger().restore(0, records)
    restore_s = time.perf_counter() - started

    # Measured apart: tracing allocations slows the restore several times over.
    gc.collect()
    tracemalloc.start()
    restored = Ledger()
    restored.restore(0, records)
    memory_bytes, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    print(f"ledger bench {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"orders {args.orders:,} ({args.orders_per_customer} per customer), holdings {holdings:,}"
    )
    print(f"state topic after compaction: {len(records):,} records, {value_bytes / 2**20:,.1f} MiB")
    print(
        f"restore: {restore_s:.2f} s ({len(records) / restore_s:,.0f} records/s), "
        f"json.loads alone {baseline_s:.2f} s (restore / json.loads = {restore_s / baseline_s:.2f})"
    )
    print(
        f"memory held by the restored ledger: {memory_bytes / 2**20:,.1f} MiB "
        f"({memory_bytes / max(1, args.orders):,.0f} bytes per order)"
    )
    print(f"(building it through intents and results: {build_s:.1f} s)")


if __name__ == "__main__":
    main()
