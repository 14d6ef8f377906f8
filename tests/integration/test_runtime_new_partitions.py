"""Partitions added to an input topic while the service runs are read within seconds."""

from __future__ import annotations

import json
import time

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from harness import Rig, order_placed, running_service
from kafka_tools import customer_key, read_topic
from promo_bridge.simulator import Simulator

pytestmark = pytest.mark.integration

# aiokafka's default metadata age was 300 s; the service's consumer refreshes every 5 s, and a
# rebalance follows. Well under the old figure, with room for a slow CI machine.
PICKED_UP_WITHIN_S = 30.0


async def test_partition_added_after_start_is_consumed_within_seconds(rig: Rig) -> None:
    """A partition added to the input topic after start-up is assigned and read in seconds."""
    # In-memory state: the durable state topic is sized at start-up for the input as it was.
    settings = await rig.prepare(Simulator(), partitions=1, durable_state=False)
    async with running_service(settings):
        admin = AIOKafkaAdminClient(bootstrap_servers=rig.bootstrap)
        await admin.start()
        try:
            # Outcomes first: an event's outcome goes to the outcomes partition of its number.
            await admin.create_partitions({settings.outcomes_topic: NewPartitions(total_count=2)})
            await admin.create_partitions({rig.topic: NewPartitions(total_count=2)})
        finally:
            await admin.close()
        added = time.monotonic()
        event = order_placed("910001", 6000.0)
        producer = AIOKafkaProducer(bootstrap_servers=rig.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                rig.topic, json.dumps(event).encode(), key=customer_key(event), partition=1
            )
        finally:
            await producer.stop()
        outcomes = await read_topic(
            rig.bootstrap,
            settings.outcomes_topic,
            until=lambda records: len(records) >= 1,
            timeout_s=PICKED_UP_WITHIN_S,
        )
        elapsed = time.monotonic() - added
    assert outcomes[0].json()["event_id"] == event["id"]
    assert elapsed < PICKED_UP_WITHIN_S
