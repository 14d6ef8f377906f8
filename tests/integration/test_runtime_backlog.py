"""A 50,000-event backlog under a small pending bound: pauses, resumes, finishes, flat memory.

The service runs as `promo-bridge run` in a child process so its peak RSS (VmHWM) is its own.
Set PROMO_BRIDGE_TEST_RSS_COMPARE=1 to also run it with a pending bound above the backlog,
for the memory comparison (not needed in CI).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from harness import Rig, order_placed
from kafka_tools import end_offsets, produce, read_topic, wait_caught_up
from promo_bridge.simulator import Simulator
from runtime_support import child_settings, scrape, service_process, value

pytestmark = pytest.mark.integration

BACKLOG = 50_000
MAX_POLL_RECORDS = 500
COMPARE = os.environ.get("PROMO_BRIDGE_TEST_RSS_COMPARE") == "1"


def _backlog(topic: str) -> list[tuple[str, bytes, bytes]]:
    template = json.dumps(order_placed("CUSTOMER", 6000.0, event_id="EVENT"))
    records = []
    for i in range(BACKLOG):
        customer = str(10_000_000 + i)
        value = template.replace("CUSTOMER", customer).replace("EVENT", f"evt-backlog-{i}")
        records.append((topic, customer.encode(), value.encode()))
    return records


@pytest.mark.parametrize(
    "max_pending",
    [
        2_000,
        pytest.param(
            100_000,
            marks=pytest.mark.skipif(not COMPARE, reason="PROMO_BRIDGE_TEST_RSS_COMPARE=1 only"),
        ),
    ],
)
async def test_backlog_pauses_and_resumes_under_the_pending_bound_and_finishes(
    kafka_bootstrap: str, rig: Rig, tmp_path: Path, max_pending: int
) -> None:
    """Pending stays within bound + one poll; partitions pause and resume; all 50k applied."""
    sim = Simulator()
    settings = await rig.prepare(
        sim,
        partitions=4,
        capillary_calls_per_minute=1_000_000,
        max_pending_commands=max_pending,
        max_poll_records=MAX_POLL_RECORDS,
        batch_window_ms=200,
        commit_interval_ms=500,
        log_level="INFO",
    )
    topic = rig.topic
    produced_at = time.monotonic()
    await produce(kafka_bootstrap, _backlog(topic))
    produce_s = time.monotonic() - produced_at

    async with service_process(tmp_path / "service.log", **child_settings(settings)) as service:
        started = time.monotonic()
        await wait_caught_up(kafka_bootstrap, settings.group_id, [topic], timeout_s=120)
        elapsed_s = time.monotonic() - started
        samples = await scrape(service.ops_port)
        peak_rss_kib = service.peak_rss_kib()
        cpu_s = service.cpu_seconds()
        service.terminate()
        exit_code = await service.wait_exit(timeout_s=30)
    records = await read_topic(
        kafka_bootstrap, settings.outcomes_topic, until=lambda r: len(r) >= BACKLOG, timeout_s=60
    )

    pauses = service.events("backpressure_pause")
    resumes = service.events("backpressure_resume")
    print(
        f"\nbacklog {BACKLOG} max_pending={max_pending}: produced in {produce_s:.1f}s, "
        f"processed in {elapsed_s:.1f}s ({BACKLOG / elapsed_s:,.0f} events/s, "
        f"service CPU {cpu_s:.1f}s), "
        f"peak RSS {peak_rss_kib / 1024:.1f} MiB, {len(pauses)} pauses, {len(resumes)} resumes, "
        f"pending at pause {[p['pending'] for p in pauses][:10]}"
    )
    assert exit_code == 0

    # Everything processed once: outcomes, API side effects, offsets at the end.
    assert value(samples, "promo_bridge_events_consumed_total") == BACKLOG
    assert value(samples, "promo_bridge_outcomes_total", status="applied") == BACKLOG
    assert len(records) == BACKLOG
    assert len({json.loads(r.value or b"")["command_id"] for r in records}) == BACKLOG
    assert sim.ledger.totals() == {"ENROL": BACKLOG}
    assert sim.ledger.duplicates() == {}
    assert sum((await end_offsets(kafka_bootstrap, [topic])).values()) == BACKLOG
    assert value(samples, "promo_bridge_pending_commands") == 0

    if max_pending < BACKLOG:
        # The bound held (it is checked before each poll of at most MAX_POLL_RECORDS events,
        # one command each), and consumption paused and resumed on the way.
        assert pauses
        assert resumes
        assert all(p["pending"] < max_pending + MAX_POLL_RECORDS for p in pauses)
        assert value(samples, "promo_bridge_partition_pauses_total", reason="backpressure") == len(
            pauses
        )
    else:
        assert not pauses
