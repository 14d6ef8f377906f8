"""Two instances in one consumer group; one is SIGTERMed mid-stream (a rolling deploy)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness import Rig, order_placed, running_service
from kafka_tools import (
    committed_offsets,
    end_offsets,
    produce,
    read_topic,
    wait_caught_up,
)
from promo_bridge.simulator import Credentials, Faults, Simulator
from runtime_support import (
    RULES_ENROL_THEN_EARN,
    OutcomeTally,
    child_settings,
    encode,
    expected_command_id,
    probe,
    review_submitted,
    scrape,
    service_process,
    value,
    wait_until,
)

pytestmark = pytest.mark.integration

CUSTOMERS = 1500
BLOCK = 100  # customers per produced block; a block's reviews follow the next block's orders
PASSWORD = "rolling-deploy-s3cret"


def _stream(customers: list[str]) -> list[list[dict[str, Any]]]:
    """Blocks of events: orders of block b, then reviews of block b-1 (earn after enrol)."""
    blocks = [customers[i : i + BLOCK] for i in range(0, len(customers), BLOCK)]
    chunks: list[list[dict[str, Any]]] = []
    for index, block in enumerate(blocks):
        chunk = [order_placed(c, 6000.0) for c in block]
        if index:
            chunk += [review_submitted(c) for c in blocks[index - 1]]
        chunks.append(chunk)
    chunks.append([review_submitted(c) for c in blocks[-1]])
    return chunks


async def test_sigterm_of_one_instance_mid_stream_loses_nothing_and_repeats_nothing(
    kafka_bootstrap: str, rig: Rig, tmp_path: Path
) -> None:
    """A SIGTERMed instance drains, commits and exits 0; the survivor finishes: no loss, no dup."""
    # Latency keeps calls in flight and buckets filling when SIGTERM lands.
    sim = Simulator(
        credentials=Credentials(password=PASSWORD),
        faults=Faults(latency_ms=60, jitter_ms=40, seed=5),
    )
    settings = await rig.prepare(
        sim,
        partitions=4,
        rules=RULES_ENROL_THEN_EARN,
        batch_window_ms=300,
        capillary_password=PASSWORD,
        capillary_calls_per_minute=100_000,
        drain_timeout_s=15,
    )
    topic = rig.topic
    customers = [str(700_000 + i) for i in range(CUSTOMERS)]
    chunks = _stream(customers)
    events = [event for chunk in chunks for event in chunk]
    expected = {expected_command_id(e) for e in events}
    assert len(expected) == 2 * CUSTOMERS

    async with service_process(tmp_path / "doomed.log", **child_settings(settings)) as doomed:

        async def doomed_assigned() -> bool:
            status, body = await probe(doomed.ops_port, "/readyz")
            return status == 200 and bool(body["checks"]["partitions_assigned"])

        await wait_until(doomed_assigned, timeout_s=30, what="child instance assigned")
        async with running_service(settings) as survivor:
            # The survivor is assigned only once the rebalance that split the partitions
            # between both members completed.
            await wait_until(
                lambda: survivor.readiness().reasons["partitions_assigned"],
                timeout_s=30,
                what="survivor assigned",
            )
            await wait_until(doomed_assigned, timeout_s=30, what="child kept partitions")

            async def stream() -> None:
                for chunk in chunks:
                    await produce(kafka_bootstrap, encode(chunk, topic))
                    await asyncio.sleep(0.15)  # pacing, so events keep flowing

            producing = asyncio.create_task(stream())

            async def doomed_busy() -> bool:
                samples = await scrape(doomed.ops_port)
                return (
                    value(samples, "promo_bridge_outcomes_total") >= 200
                    and value(samples, "promo_bridge_pending_commands") > 0
                )

            await wait_until(doomed_busy, timeout_s=60, what="child instance busy")
            assert not producing.done(), "the stream ended before SIGTERM: not mid-stream"
            doomed.terminate()
            signalled = time.monotonic()
            exit_code = await doomed.wait_exit(timeout_s=30)
            exit_s = time.monotonic() - signalled

            await producing
            committed = await wait_caught_up(
                kafka_bootstrap, settings.group_id, [topic], timeout_s=60
            )
            tally = OutcomeTally(expected)
            await read_topic(kafka_bootstrap, settings.outcomes_topic, until=tally, timeout_s=60)

    # The SIGTERMed instance stopped gracefully, in bounded time, with work to drain.
    assert exit_code == 0, doomed.log_text()[-4000:]
    assert exit_s < 15
    draining = doomed.events("shutdown_draining")
    assert len(draining) == 1
    assert draining[0]["pending"] > 0, "SIGTERM found nothing pending: not mid-stream"
    assert not doomed.events("shutdown_drain_timeout")
    assert doomed.events("service_stopped")

    # Exactly one side effect per command at the API, and earns never overtook enrols.
    assert sim.ledger.duplicates() == {}
    assert sim.ledger.totals() == {"ENROL": CUSTOMERS, "EARN": CUSTOMERS}
    assert {e.customer_id for e in sim.ledger.entries(action="EARN")} == {int(c) for c in customers}

    # Every command has its outcome, all applied; downstream dedupes on command_id.
    assert set(tally.seen) == expected
    assert Counter(tally.statuses.values()) == {"applied": 2 * CUSTOMERS}
    print(
        f"\nSIGTERM: child exited {exit_code} in {exit_s:.2f}s with "
        f"{draining[0]['pending']} commands pending; duplicate outcome records: "
        f"{tally.duplicates}"
    )
    assert tally.duplicates == 0

    # The group's offsets reached the end of every input partition.
    ends = await end_offsets(kafka_bootstrap, [topic])
    assert sum(ends.values()) == len(events)
    assert committed == ends
    assert await committed_offsets(kafka_bootstrap, settings.group_id) == ends

    # No secret reached the child's logs (neither the password nor what is derived from it).
    text = doomed.log_text()
    digest = hashlib.md5(PASSWORD.encode()).hexdigest()
    header = base64.b64encode(f"store.server:{digest}".encode()).decode()
    for secret in (PASSWORD, digest, header):
        assert secret not in text
