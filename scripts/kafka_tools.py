"""Kafka helpers for `make run`, `make chaos` and the tests; not part of the service.

They talk to a real broker: create topics, produce CloudEvents keyed by customer, read a topic
from the start, and compare a group's committed offsets with the end of its partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from promo_bridge.domain.keys import record_key
from promo_bridge.kafka.records import OutgoingRecord, ReadRecord, read_records, send
from promo_bridge.kafka.records import read_to_end as _read_to_end

TOPIC_OF_TYPE: dict[str, str] = {
    "order.placed": "orders",
    "return.created": "returns",
    "review.submitted": "reviews",
}


def customer_key(event: Mapping[str, Any]) -> bytes:
    """Events are keyed by customer so one customer's events share a partition."""
    return record_key(event)


async def create_topics(bootstrap: str, partitions: Mapping[str, int]) -> None:
    """Create the topics that do not exist yet (replication factor 1)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        # Inside the try: a start cut short (Ctrl-C) still closes what it opened.
        await admin.start()
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name=name, num_partitions=count, replication_factor=1)
            for name, count in partitions.items()
            if name not in existing
        ]
        if new:
            # Another process may create the same topic between the listing and here.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    records: Iterable[tuple[str, bytes | None, bytes]],
) -> int:
    """Send (topic, key, value) records and wait for every acknowledgement."""
    return await send(
        {"bootstrap_servers": bootstrap, "linger_ms": 5},
        (OutgoingRecord(topic, key, value) for topic, key, value in records),
    )


async def produce_events(
    bootstrap: str,
    events: Sequence[Mapping[str, Any]],
    topic_of_type: Mapping[str, str] = TOPIC_OF_TYPE,
    default_topic: str | None = None,
) -> int:
    """Send CloudEvents to the topic of their type (else `default_topic`), keyed by customer."""

    def topic(event: Mapping[str, Any]) -> str:
        name = topic_of_type.get(str(event["type"]), default_topic)
        if name is None:
            raise KeyError(f"no topic for event type {event['type']!r}")
        return name

    return await produce(
        bootstrap,
        ((topic(event), customer_key(event), json.dumps(event).encode()) for event in events),
    )


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[ReadRecord]], bool],
    timeout_s: float = 60.0,
) -> list[ReadRecord]:
    """Read `topic` from the beginning until `until(records)` holds; TimeoutError otherwise."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records: list[ReadRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        await consumer.start()
        while not until(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: condition not met, {len(records)} records read")
            records.extend(read_records(await consumer.getmany(timeout_ms=200)))
        return records
    finally:
        await consumer.stop()


async def read_to_end(
    bootstrap: str,
    topic: str,
    *,
    isolation_level: str = "read_committed",
    timeout_s: float = 120.0,
) -> list[ReadRecord]:
    """Read every partition of `topic` from the beginning to its end as of this call.

    With read_committed the end is the last stable offset: records of aborted or open
    transactions are not returned. TimeoutError if the end is not reached within `timeout_s`.
    """
    partitions = await partitions_of(bootstrap, [topic])
    try:
        return await _read_to_end(
            {"bootstrap_servers": bootstrap},
            partitions,
            isolation_level=isolation_level,
            timeout_s=timeout_s,
        )
    except TimeoutError as exc:
        raise TimeoutError(f"{topic}: {exc}") from None


async def partitions_of(bootstrap: str, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of `topics`, from the broker's metadata."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return sorted(
        TopicPartition(topic["topic"], partition["partition"])
        for topic in described
        for partition in topic["partitions"]
    )


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """The next offset to be written, per partition of `topics`."""
    partitions = await partitions_of(bootstrap, topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        await consumer.start()
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return ends
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group_id: str) -> dict[TopicPartition, int]:
    """The group's committed offsets."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        offsets = await admin.list_consumer_group_offsets(group_id)
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    finally:
        await admin.close()


async def wait_caught_up(
    bootstrap: str, group_id: str, topics: Sequence[str], *, timeout_s: float = 60.0
) -> dict[TopicPartition, int]:
    """Wait until the group's committed offsets reach the end of every input partition."""
    deadline = time.monotonic() + timeout_s
    ends = await end_offsets(bootstrap, topics)
    while True:
        committed = await committed_offsets(bootstrap, group_id)
        behind = {tp: end for tp, end in ends.items() if end > 0 and committed.get(tp, 0) < end}
        if not behind:
            return committed
        if time.monotonic() > deadline:
            raise TimeoutError(f"group {group_id} still behind on {sorted(map(str, behind))}")
        await asyncio.sleep(0.2)
