"""Whole records in and out of a topic, for the operator commands and the test helpers.

Not the service's path (that is consumer.py and producer.py): these read with no consumer
group, so they commit nothing and never disturb the service's offsets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

_POLL_MS = 200


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """A record read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    # The record's timestamp (CreateTime unless the topic says LogAppendTime), epoch ms.
    timestamp_ms: int | None = None

    def json(self) -> Any:
        """The value parsed as JSON."""
        return json.loads(self.value or b"null")


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record to send; `partition` None lets the key choose it."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    partition: int | None = None


def read_records(fetched: Mapping[TopicPartition, Sequence[Any]]) -> list[ReadRecord]:
    """The messages of one `getmany` as ReadRecords."""
    return [
        ReadRecord(
            tp.topic, tp.partition, m.offset, m.key, m.value, tuple(m.headers or ()), m.timestamp
        )
        for tp, messages in fetched.items()
        for m in messages
    ]


async def send(options: Mapping[str, Any], records: Iterable[OutgoingRecord]) -> int:
    """Send the records in order and wait until every one is acknowledged by all replicas."""
    producer = AIOKafkaProducer(**{**options, "acks": "all"})
    try:
        await producer.start()
        futures = [
            await producer.send(
                r.topic,
                value=r.value,
                key=r.key,
                partition=r.partition,
                # A header's value may be null (None), as Kafka allows.
                headers=list(r.headers) or None,
            )
            for r in records
        ]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def read_to_end(
    options: Mapping[str, Any],
    partitions: Sequence[TopicPartition],
    *,
    isolation_level: str = "read_committed",
    timeout_s: float = 120.0,
) -> list[ReadRecord]:
    """Read the partitions from their beginning to their end as of this call.

    With read_committed the end is the last stable offset: records of aborted or open
    transactions are not returned. TimeoutError if the end is not reached within `timeout_s`.
    """
    consumer = AIOKafkaConsumer(
        **options, group_id=None, enable_auto_commit=False, isolation_level=isolation_level
    )
    try:
        await consumer.start()
        consumer.assign(list(partitions))
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(list(partitions))
        records: list[ReadRecord] = []
        deadline = time.monotonic() + timeout_s
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"end not reached, {len(records)} records read")
            records.extend(read_records(await consumer.getmany(timeout_ms=_POLL_MS)))
        return records
    finally:
        await consumer.stop()


async def follow(
    options: Mapping[str, Any],
    partitions: Sequence[TopicPartition],
    *,
    from_beginning: bool,
    max_records: int | None,
    idle_timeout_s: float,
) -> AsyncGenerator[ReadRecord, None]:
    """Records as they arrive, until `max_records` or `idle_timeout_s` without a new one.

    From the partitions' end as of this call unless `from_beginning`.
    """
    consumer = AIOKafkaConsumer(**options, group_id=None, enable_auto_commit=False)
    try:
        await consumer.start()
        consumer.assign(list(partitions))
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        seen = 0
        last_new = time.monotonic()
        while max_records is None or seen < max_records:
            if time.monotonic() - last_new > idle_timeout_s:
                return
            batch = read_records(await consumer.getmany(timeout_ms=_POLL_MS))
            # Partitions are fetched independently: order by time, then place, for people.
            batch.sort(key=lambda r: (r.timestamp_ms or 0, r.partition, r.offset))
            for record in batch:
                last_new = time.monotonic()
                yield record
                seen += 1
                if max_records is not None and seen >= max_records:
                    return
    finally:
        await consumer.stop()
