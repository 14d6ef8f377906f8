"""Why the consumer loop collects garbage on resume: aiokafka's dropped fetches are cycles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from kafka_tools import create_topics, produce

pytestmark = pytest.mark.integration


@pytest.fixture
def collector_off() -> Iterator[None]:
    """No automatic collection during the test: only reference counting frees objects."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("collector_off")
async def test_records_fetched_for_a_paused_partition_are_freed_only_by_a_collection(
    kafka_bootstrap: str, unique: str
) -> None:
    """A paused partition's half-read fetch outlives its last reference until gc.collect()."""
    topic = f"paused-fetch-{unique}"
    await create_topics(kafka_bootstrap, {topic: 1})
    await produce(kafka_bootstrap, ((topic, None, b"x" * 100) for _ in range(50)))
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        await consumer.start()
        consumer.assign([tp])
        first = await consumer.getmany(tp, timeout_ms=10_000, max_records=1)
        assert len(first[tp]) == 1
        # aiokafka's internals, read only: the rest of that fetch, still buffered.
        buffered = consumer._fetcher._records[tp]._partition_records
        assert buffered is not None
        dropped = weakref.ref(buffered)
        del buffered
        consumer.pause(tp)
        assert await consumer.getmany(timeout_ms=0) == {}
        assert tp not in consumer._fetcher._records
        assert dropped() is not None, "no cycle any more: COLLECT_ON_RESUME may be dropped"
        gc.collect()
        assert dropped() is None
    finally:
        await consumer.stop()
