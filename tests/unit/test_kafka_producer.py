"""The record publisher replaces a producer that cannot deliver again, and says why."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, OutOfOrderSequenceNumber

from promo_bridge.domain.outcomes import OutcomeRecord, OutcomeStatus
from promo_bridge.kafka.producer import PublishError, RecordPublisher
from runtime_support import wait_until

AT = datetime(2026, 11, 29, tzinfo=UTC)


def outcome(command_id: str, partition: int = 0) -> OutcomeRecord:
    return OutcomeRecord(
        command_id=command_id,
        event_id="e1",
        topic="orders",
        partition=partition,
        offset=0,
        rule="r",
        action="enrol",
        subject="big",
        identifier_name="id",
        identifier_value="42",
        status=OutcomeStatus.APPLIED,
        attempts=1,
        received_at=AT,
        completed_at=AT,
    )


class FakeBatch:
    """aiokafka's BatchBuilder as the publisher uses it: records appended, then closed."""

    def __init__(self, room: int = 1000) -> None:
        self.keys: list[bytes | None] = []
        self.room = room
        self.closed = False

    def append(self, *, timestamp: None, key: bytes | None, value: Any, headers: Any) -> Any:
        if self.closed or len(self.keys) == self.room:
            return None
        self.keys.append(key)
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Acknowledges sends, or fails each with the error it was built with."""

    batch_room = 1000

    def __init__(self, error: Exception | None = None, start_error: Exception | None = None):
        self.error = error
        self.start_error = start_error
        self.sent: list[tuple[str, bytes | None, int | None]] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(
        self, topic: str, *, value: bytes, key: bytes | None, headers: Any, partition: int | None
    ) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.error is not None:
            future.set_exception(self.error)
        else:
            self.sent.append((topic, key, partition))
            future.set_result(SimpleNamespace(offset=100 + len(self.sent)))
        return future

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.batch_room)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        assert batch.closed
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.error is not None:
            future.set_exception(self.error)
        else:
            base = 101 + len(self.sent)
            self.sent.extend((topic, key, partition) for key in batch.keys)
            future.set_result(SimpleNamespace(offset=base, partition=partition))
        return future


def publisher_over(producers: list[FakeProducer], replaced: list[int]) -> RecordPublisher:
    made = iter(producers)
    return RecordPublisher(
        lambda: next(made),  # type: ignore[arg-type,return-value]
        outcomes_topic="out",
        dlq_topic="dlq",
        on_replace=lambda: replaced.append(1),
    )


async def test_out_of_order_sequence_replaces_the_producer_once() -> None:
    """After OutOfOrderSequenceNumber the next publish goes out on a fresh producer."""
    broken = FakeProducer(error=OutOfOrderSequenceNumber())
    fresh = FakeProducer()
    replaced: list[int] = []
    publisher = publisher_over([broken, fresh], replaced)
    await publisher.start()
    with pytest.raises(PublishError, match="producer replaced"):
        await publisher.publish_outcomes([outcome("c1")])
    assert broken.stopped
    assert fresh.started
    assert await publisher.publish_outcomes([outcome("c1")]) == [101]
    assert fresh.sent == [("out", b"42", 0)]
    assert replaced == [1]


async def test_a_passing_error_keeps_the_producer() -> None:
    """A connection error is retried on the same producer: it recovers by itself."""
    flaky = FakeProducer(error=KafkaConnectionError())
    replaced: list[int] = []
    publisher = publisher_over([flaky], replaced)
    await publisher.start()
    with pytest.raises(PublishError, match="out: KafkaConnectionError"):
        await publisher.publish_outcomes([outcome("c1")])
    flaky.error = None
    await publisher.publish_outcomes([outcome("c1")])
    assert flaky.sent == [("out", b"42", 0)]
    assert replaced == []


async def test_a_replacement_that_cannot_start_is_tried_again_later() -> None:
    """While the broker is away the new producer may not start; the next failure retries."""
    broken = FakeProducer(error=OutOfOrderSequenceNumber())
    unstartable = FakeProducer(start_error=KafkaConnectionError())
    fresh = FakeProducer()
    replaced: list[int] = []
    publisher = publisher_over([broken, unstartable, fresh], replaced)
    await publisher.start()
    with pytest.raises(PublishError, match="cannot start a new producer"):
        await publisher.publish_outcomes([outcome("c1")])
    assert unstartable.stopped
    with pytest.raises(PublishError, match="producer replaced"):
        await publisher.publish_outcomes([outcome("c1")])
    await publisher.publish_outcomes([outcome("c1")])
    assert fresh.sent == [("out", b"42", 0)]
    assert replaced == [1]


class FakeReadBack:
    """The outcomes topic as the read-back sees it: what landed, by command_id."""

    def __init__(self, landed: dict[str, int], known_end: int | None = 40) -> None:
        self.landed = landed
        self.end = known_end
        self.asked: list[tuple[dict[int, int], set[str]]] = []

    def known_end(self, partition: int) -> int | None:
        return self.end

    async def find(self, since: dict[int, int], command_ids: set[str]) -> dict[str, int]:
        self.asked.append((since, command_ids))
        return {c: o for c, o in self.landed.items() if c in command_ids}


async def test_an_outcome_that_landed_before_a_lost_answer_is_not_published_twice() -> None:
    """After a failure without an answer, records found on the topic are not sent again."""
    producer = FakeProducer(error=KafkaConnectionError())
    read_back = FakeReadBack({"c1": 41})
    publisher = RecordPublisher(
        lambda: producer,  # type: ignore[arg-type,return-value]
        outcomes_topic="out",
        dlq_topic="dlq",
        read_back=read_back,  # type: ignore[arg-type]
    )
    await publisher.start()
    with pytest.raises(PublishError):
        await publisher.publish_outcomes([outcome("c1"), outcome("c2")])
    producer.error = None
    assert await publisher.publish_outcomes([outcome("c1"), outcome("c2")]) == [41, 101]
    assert producer.sent == [("out", b"42", 0)]
    assert read_back.asked == [({0: 40}, {"c1", "c2"})]
    # Settled: a later publish asks nothing more.
    await publisher.publish_outcomes([outcome("c3")])
    assert len(read_back.asked) == 1


class HalfWayProducer(FakeProducer):
    """Queues the first batches (acknowledged only when released), then refuses one at once."""

    def __init__(self, refuse_at: int) -> None:
        super().__init__()
        self.refuse_at = refuse_at
        self.queued: list[tuple[asyncio.Future[Any], int]] = []

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        if len(self.queued) == self.refuse_at:
            raise KafkaTimeoutError
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queued.append((future, partition))
        return future

    def release(self) -> None:
        for future, partition in self.queued:
            future.set_result(SimpleNamespace(offset=0, partition=partition))


async def test_a_send_refused_half_way_waits_for_the_records_already_queued() -> None:
    """The publish fails only once the records queued before the refusal landed or failed."""
    producer = HalfWayProducer(refuse_at=2)
    publisher = publisher_over([producer], [])
    records = [outcome(f"c{i}", partition=i) for i in range(3)]
    publish = asyncio.create_task(publisher.publish_outcomes(records))
    await wait_until(lambda: len(producer.queued) == 2, timeout_s=5, what="two batches queued")
    assert not publish.done()
    producer.release()
    with pytest.raises(PublishError):
        await asyncio.wait_for(publish, 5)


async def test_records_go_a_batch_per_partition_and_keep_their_order() -> None:
    """Outcomes of several partitions go one batch each; offsets come back in input order."""
    producer = FakeProducer()
    publisher = publisher_over([producer], [])
    records = [outcome("a0", 0), outcome("b1", 1), outcome("c0", 0), outcome("d1", 1)]
    offsets = await publisher.publish_outcomes(records)
    assert [partition for _, _, partition in producer.sent] == [0, 0, 1, 1]
    # Partition 0's batch landed at 101 (a0, c0), partition 1's at 103 (b1, d1).
    assert offsets == [101, 103, 102, 104]


async def test_a_full_batch_is_sent_and_the_rest_goes_in_the_next() -> None:
    """A partition's records beyond one batch's room go in further batches, offsets in order."""
    producer = FakeProducer()
    producer.batch_room = 2
    publisher = publisher_over([producer], [])
    offsets = await publisher.publish_outcomes([outcome(f"c{i}") for i in range(5)])
    assert offsets == [101, 102, 103, 104, 105]
    assert len(producer.sent) == 5


class OrphaningProducer(FakeProducer):
    """Queues batches and never answers them, as one whose sender task died."""

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        return asyncio.get_running_loop().create_future()


async def test_a_send_never_answered_fails_at_the_bound_and_goes_out_on_a_new_producer() -> None:
    """Orphaned sends end the publish with PublishError at the bound; the retry is delivered."""
    orphaning, fresh = OrphaningProducer(), FakeProducer()
    made = iter([orphaning, fresh])
    publisher = RecordPublisher(
        lambda: next(made),  # type: ignore[arg-type,return-value]
        outcomes_topic="out",
        dlq_topic="dlq",
        ack_timeout_s=0.05,
    )
    await publisher.start()
    with pytest.raises(PublishError, match=r"unanswered after 0\.05 s; producer replaced"):
        await asyncio.wait_for(publisher.publish_outcomes([outcome("c1")]), 5)
    assert orphaning.stopped
    assert await publisher.publish_outcomes([outcome("c1")]) == [101]
