"""Poison events go to the DLQ whole; good events around them flow; offsets pass them.

Parametrized over the producer's idempotence: the same flow with aiokafka's idempotent
producer (PROMO_BRIDGE_PRODUCER_IDEMPOTENCE=true) pins that it works against our broker.
"""

from __future__ import annotations

import base64
import json
from collections import Counter

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from harness import Rig, order_placed, running_service
from kafka_tools import committed_offsets, end_offsets, read_topic, wait_caught_up
from promo_bridge.simulator import Simulator
from runtime_support import (
    RULES_ENROL_THEN_EARN,
    OutcomeTally,
    expected_command_id,
    produce_with_headers,
    scrape,
    value,
)

pytestmark = pytest.mark.integration

GOOD = 40


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.mark.parametrize("idempotence", [False, True], ids=["plain", "idempotent-producer"])
async def test_poison_events_each_make_one_dlq_record_and_the_rest_flows(
    kafka_bootstrap: str, rig: Rig, idempotence: bool
) -> None:
    """Invalid JSON and a customer-less event: one DLQ record each, whole; all good applied."""
    sim = Simulator()
    settings = await rig.prepare(
        sim,
        partitions=2,
        rules=RULES_ENROL_THEN_EARN,
        batch_window_ms=100,
        producer_idempotence=idempotence,
    )
    topic = rig.topic
    good = [order_placed(str(810_000 + i), 6000.0) for i in range(GOOD)]
    broken_json = b'{"specversion": "1.0", "id": "evt-broken", "type": "order.pl'
    broken_headers = [("trace-id", b"t-123"), ("binary", b"\xff\x00\x01")]
    no_customer = order_placed("810999", 6000.0, event_id="evt-no-customer")
    del no_customer["data"]["customer"]
    no_customer_bytes = json.dumps(no_customer).encode()
    no_customer_headers = [("content-type", b"application/cloudevents+json")]

    def record(event: dict[str, object]) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
        customer = event["data"]["customer"]  # type: ignore[index]
        return (topic, str(customer["id"]).encode(), json.dumps(event).encode(), [])

    records = [record(e) for e in good[:15]]
    records.append((topic, b"810998", broken_json, broken_headers))
    records += [record(e) for e in good[15:30]]
    records.append((topic, b"810999", no_customer_bytes, no_customer_headers))
    records += [record(e) for e in good[30:]]
    positions = await produce_with_headers(kafka_bootstrap, records)
    broken_at, no_customer_at = positions[15], positions[31]

    async with running_service(settings) as service:
        committed = await wait_caught_up(kafka_bootstrap, settings.group_id, [topic], timeout_s=30)
        tally = OutcomeTally({expected_command_id(e) for e in good})
        await read_topic(kafka_bootstrap, settings.outcomes_topic, until=tally, timeout_s=30)
        dlq = await read_topic(
            kafka_bootstrap, settings.dlq_topic, until=lambda r: len(r) >= 2, timeout_s=30
        )
        assert service.ops_port is not None
        samples = await scrape(service.ops_port)

    # One DLQ record per poison event, keyed and headed like the original, carrying it whole.
    assert len(dlq) == 2
    letters = {(r.json()["source_partition"], r.json()["source_offset"]): r for r in dlq}
    broken = letters[(broken_at.partition, broken_at.offset)]
    missing = letters[(no_customer_at.partition, no_customer_at.offset)]

    body = broken.json()
    assert body["reason"].startswith("Invalid JSON")
    assert body["source_topic"] == topic
    assert body["value_b64"] == _b64(broken_json)
    assert body["key_b64"] == _b64(b"810998")
    assert body["headers"] == [
        {"key": "trace-id", "value_b64": _b64(b"t-123")},
        {"key": "binary", "value_b64": _b64(b"\xff\x00\x01")},
    ]
    assert broken.key == b"810998"
    assert list(broken.headers) == broken_headers

    body = missing.json()
    assert "data.customer" in body["reason"]
    assert body["source_topic"] == topic
    assert body["value_b64"] == _b64(no_customer_bytes)
    assert json.loads(body["value_text"]) == no_customer
    assert body["headers"] == [
        {"key": "content-type", "value_b64": _b64(b"application/cloudevents+json")}
    ]
    assert missing.key == b"810999"

    # Every good event was applied once; nothing was sent for the poison ones.
    assert set(tally.seen) == tally.expected
    assert tally.duplicates == 0
    assert Counter(tally.statuses.values()) == {"applied": GOOD}
    assert sim.ledger.totals() == {"ENROL": GOOD}
    assert sim.ledger.count(customer_id=810998) == sim.ledger.count(customer_id=810999) == 0

    # The metrics say the same, and the offsets went past the poison records to the end.
    assert value(samples, "promo_bridge_decode_failures_total", topic=topic) == 2
    assert value(samples, "promo_bridge_dlq_records_total", topic=topic) == 2
    assert value(samples, "promo_bridge_outcomes_total", status="applied") == GOOD
    ends = await end_offsets(kafka_bootstrap, [topic])
    assert sum(ends.values()) == GOOD + 2
    assert committed == ends
    assert await committed_offsets(kafka_bootstrap, settings.group_id) == ends


async def test_a_dead_letter_the_broker_refuses_moves_the_offset_on(
    kafka_bootstrap: str, rig: Rig, unique: str
) -> None:
    """A DLQ topic too small for the record: logged, counted, and the partition still flows."""
    dlq = f"dlq-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(dlq, 1, 1, topic_configs={"max.message.bytes": "2000"})]
        )
    finally:
        await admin.close()
    sim = Simulator()
    settings = await rig.prepare(sim, partitions=1, batch_window_ms=50)
    assert settings.dlq_topic == dlq
    good = [order_placed(str(890_000 + i), 6000.0) for i in range(5)]
    poison = b"{" + b"x" * 5_000
    records = [(rig.topic, b"890000", json.dumps(good[0]).encode(), [])]
    records.append((rig.topic, b"890099", poison, []))
    records += [
        (rig.topic, str(890_000 + i).encode(), json.dumps(e).encode(), [])
        for i, e in enumerate(good[1:], 1)
    ]
    await produce_with_headers(kafka_bootstrap, records)

    async with running_service(settings) as service:
        committed = await wait_caught_up(
            kafka_bootstrap, settings.group_id, [rig.topic], timeout_s=30
        )
        tally = OutcomeTally({expected_command_id(e) for e in good})
        await read_topic(kafka_bootstrap, settings.outcomes_topic, until=tally, timeout_s=30)
        assert service.ops_port is not None
        samples = await scrape(service.ops_port)

    assert committed == await end_offsets(kafka_bootstrap, [rig.topic])
    assert value(samples, "promo_bridge_dlq_refused_total", topic=rig.topic) == 1
    assert value(samples, "promo_bridge_dlq_records_total", topic=rig.topic) == 0
    assert Counter(tally.statuses.values()) == {"applied": len(good)}
