"""The ops port over real HTTP: /metrics agrees with what was processed; /healthz, /readyz."""

from __future__ import annotations

import pytest

from harness import Rig, order_placed, running_service
from kafka_tools import end_offsets, produce, read_topic, wait_caught_up
from promo_bridge.simulator import Simulator
from runtime_support import (
    RULES_ENROL_THEN_EARN,
    Samples,
    encode,
    probe,
    review_submitted,
    scrape,
    series,
    value,
    wait_until,
)

pytestmark = pytest.mark.integration

BIG, SMALL, REVIEWS = 30, 10, 12


async def test_metrics_match_the_processed_events_and_probes_answer(
    kafka_bootstrap: str, rig: Rig
) -> None:
    """Known events in: every main series present and equal to what was consumed and sent."""
    sim = Simulator()
    settings = await rig.prepare(
        sim, partitions=3, rules=RULES_ENROL_THEN_EARN, batch_window_ms=200
    )
    topic = rig.topic
    big = [order_placed(str(820_000 + i), 6000.0) for i in range(BIG)]
    small = [order_placed(str(821_000 + i), 100.0) for i in range(SMALL)]
    # Reviews of enrolled customers, on the same topic and key: each earns after its enrol.
    reviews = [review_submitted(str(820_000 + i)) for i in range(REVIEWS)]
    records = encode(big + small + reviews, topic)
    records.append((topic, b"820999", b"not json"))
    await produce(kafka_bootstrap, records)
    commands = BIG + REVIEWS
    total_events = BIG + SMALL + REVIEWS + 1

    async with running_service(settings) as service:
        port = service.ops_port
        assert port is not None
        await wait_caught_up(kafka_bootstrap, settings.group_id, [topic], timeout_s=30)
        await read_topic(
            kafka_bootstrap, settings.outcomes_topic, until=lambda r: len(r) >= commands
        )
        ends = await end_offsets(kafka_bootstrap, [topic])
        last: list[Samples] = []

        async def lag_settled() -> bool:
            # Lag is refreshed after each fetch; wait until it reflects the final commit.
            samples = await scrape(port)
            last[:] = [samples]
            lags = {
                int(s["partition"]): value(
                    samples, "promo_bridge_consumer_lag", topic=topic, partition=s["partition"]
                )
                for s in series(samples, "promo_bridge_consumer_lag")
            }
            return set(lags) == {tp.partition for tp in ends} and not any(lags.values())

        await wait_until(lag_settled, timeout_s=20, what="consumer_lag 0 on every partition")
        samples = last[0]
        health = await probe(port, "/healthz")
        ready = await probe(port, "/readyz")

    assert health == (200, {"status": "alive"})
    assert ready == (
        200,
        {
            "ready": True,
            "checks": {
                "partitions_assigned": True,
                "broker_reachable": True,
                "api_authenticated": True,
                "making_progress": True,
                "not_stopping": True,
            },
        },
    )

    def v(name: str, **labels: str) -> float:
        return value(samples, f"promo_bridge_{name}", **labels)

    # What was consumed.
    assert v("events_consumed_total", topic=topic, type="order.placed") == BIG + SMALL
    assert v("events_consumed_total", topic=topic, type="review.submitted") == REVIEWS
    assert v("events_consumed_total") == total_events - 1
    assert v("decode_failures_total", topic=topic) == 1
    assert v("dlq_records_total", topic=topic) == 1

    # What the rules made of it, and how it was batched.
    assert v("commands_total", action="enrol", promotion="big-spender") == BIG
    assert v("commands_total", action="earn", promotion="big-spender") == REVIEWS
    assert v("commands_deduplicated_total") == 0
    calls = [c for c in sim.calls if c.endpoint == "enrolAndEarn"]
    assert v("batch_size_sum", endpoint="enrolAndEarn") == commands
    assert v("batch_size_count", endpoint="enrolAndEarn") == len(calls)
    assert v("batch_flushes_total", endpoint="enrolAndEarn") == len(calls)
    assert v("batch_size_bucket", endpoint="enrolAndEarn", le="+Inf") == len(calls)

    # What the API answered, and what was published.
    assert v("api_request_duration_seconds_count", endpoint="enrolAndEarn", status="200") == len(
        calls
    )
    assert v("api_request_duration_seconds_sum", endpoint="enrolAndEarn") > 0
    assert v("outcomes_total", status="applied") == commands
    assert v("outcomes_total") == commands
    assert sum(c.customers for c in calls) == commands

    # State gauges: nothing pending or paused, committed recently, no lag.
    assert v("pending_commands") == 0
    assert v("paused_partitions") == 0
    assert v("auth_paused") == 0
    assert v("partition_pauses_total") == 0
    assert v("offset_commits_total") >= 1
    assert 0 <= v("seconds_since_last_commit") < 10
    assert len(series(samples, "promo_bridge_consumer_lag")) == len(ends)
