"""Publishing outcome, state and DLQ records, acknowledged by the broker before offsets move.

aiokafka's idempotent producer does not recover from some broker answers: after a broker
outage every later send fails with OutOfOrderSequenceNumber until the process restarts (an open
aiokafka issue; librdkafka treats the same error as fatal for the producer instance). So the
publisher owns its producer, and replaces it (stop, new instance, start) when the producer has
failed in a way it cannot recover from; the caller retries the publish, which then goes out on
the new producer with a new producer id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    RecordTooLargeError,
    UnknownProducerId,
)

from promo_bridge.domain.dead_letters import DeadLetterRecord
from promo_bridge.domain.ledger import StateRecord
from promo_bridge.domain.outcomes import OutcomeRecord, encode_outcome
from promo_bridge.kafka.restore import OutcomeRestorer, RestoreError

log = structlog.get_logger(__name__)

# Errors after which this producer instance will not deliver again.
_FATAL_TO_PRODUCER: Final = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    ProducerFenced,
    ProducerClosed,
)
_STOP_TIMEOUT_S: Final = 10.0
_REQUEST_TIMEOUT_MS: Final = 30_000
# A live producer settles every send within about two request timeouts: a batch not sent by
# then expires (KafkaTimeoutError), one sent gets an answer or a timeout. Past this bound the
# send is orphaned: a producer whose sender task died (a fatal error) leaves its queued
# batches unanswered for ever, and a publish waiting on them held its partition for good
# (`make chaos`, broker stopped 30 s: 100 commands stuck after the producer was replaced).
ACK_TIMEOUT_S: Final = 2 * _REQUEST_TIMEOUT_MS / 1000 + 15

ProducerFactory = Callable[[], AIOKafkaProducer]
# key, value, headers, partition (None: by key).
_Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]], int | None]


class PublishError(Exception):
    """A record was not acknowledged; the message names the topic and the broker's error."""


class _UnacknowledgedError(Exception):
    """Sends neither acknowledged nor failed within the acknowledgement bound."""


class PublishRefusedError(PublishError):
    """The broker refuses the record for good (too large): sending it again cannot help."""


class RecordPublisher:
    """Sends outcome records (keyed by customer) and DLQ records (keyed like the original)."""

    def __init__(
        self,
        producer_factory: ProducerFactory,
        *,
        outcomes_topic: str,
        dlq_topic: str,
        state_topic: str | None = None,
        on_replace: Callable[[], None] = lambda: None,
        read_back: OutcomeRestorer | None = None,
        ack_timeout_s: float = ACK_TIMEOUT_S,
    ) -> None:
        self._factory = producer_factory
        self._ack_timeout_s = ack_timeout_s
        self._on_replace = on_replace
        self._read_back = read_back
        # Per outcomes partition, one past the newest offset acknowledged to this publisher.
        self._acked_end: dict[int, int] = {}
        # Outcomes whose publish failed without an answer (they may have landed): command_id
        # -> an offset of their partition below which they cannot lie.
        self._unsure: dict[str, int] = {}
        self._producer = producer_factory()
        self._outcomes_topic = outcomes_topic
        self._dlq_topic = dlq_topic
        self._state_topic = state_topic
        self._replacing = asyncio.Lock()

    async def start(self) -> None:
        """Connect the producer."""
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and close the producer."""
        await self._producer.stop()

    async def publish_outcomes(self, records: Sequence[OutcomeRecord]) -> list[int]:
        """Send every record to the outcomes partition numbered like its event's partition.

        Returns once the broker acknowledged all of them, with the offsets they landed at:
        co-partitioned, a partition's outcomes can be read back when it is assigned. A record
        whose earlier publish failed without an answer is first looked for on the topic, and
        not sent again if it is there (a new producer after a broker outage is not
        deduplicated by the broker).
        """
        landed = await self._landed(records)
        to_send = [record for record in records if record.command_id not in landed]
        bounds = {r.partition: self._lower_bound(r.partition) for r in to_send}
        try:
            offsets = await self._send_all(
                self._outcomes_topic,
                [
                    (
                        record.identifier_value.encode(),
                        encode_outcome(record),
                        [],
                        record.partition,
                    )
                    for record in to_send
                ],
            )
        except PublishError:
            for record in to_send:
                bound = bounds[record.partition]
                if bound is not None:
                    self._unsure.setdefault(record.command_id, bound)
            raise
        sent = dict(zip((r.command_id for r in to_send), offsets, strict=True))
        for record in to_send:
            self._acked_end[record.partition] = max(
                self._acked_end.get(record.partition, 0), sent[record.command_id] + 1
            )
        for record in records:
            self._unsure.pop(record.command_id, None)
        return [landed.get(r.command_id, sent.get(r.command_id, -1)) for r in records]

    def _lower_bound(self, partition: int) -> int | None:
        if partition in self._acked_end:
            return self._acked_end[partition]
        return self._read_back.known_end(partition) if self._read_back is not None else None

    async def _landed(self, records: Sequence[OutcomeRecord]) -> dict[str, int]:
        unsure = [r for r in records if r.command_id in self._unsure]
        if not unsure or self._read_back is None:
            return {}
        since: dict[int, int] = {}
        for record in unsure:
            bound = self._unsure[record.command_id]
            since[record.partition] = min(bound, since.get(record.partition, bound))
        try:
            landed = await self._read_back.find(since, {r.command_id for r in unsure})
        except RestoreError as exc:
            raise PublishError(f"{self._outcomes_topic}: {exc}") from None
        if landed:
            log.info("outcomes_found_published", count=len(landed), of=len(unsure))
        return landed

    async def publish_state(self, records: Sequence[StateRecord]) -> None:
        """Send holdings-ledger records (tombstones too) to their state partitions; acknowledged.

        Sending one again after a failure without an answer is harmless: the topic is compacted
        and a holding's record is its whole value.
        """
        if self._state_topic is None:
            raise PublishError("no state topic is configured")
        await self._send_all(
            self._state_topic,
            [(record.key, record.value, [], record.partition) for record in records],
        )

    async def publish_dead_letter(
        self,
        record: DeadLetterRecord,
        *,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> bool:
        """Send one DLQ record with the original headers; True once acknowledged.

        False when the broker refuses it for good (larger than the topic takes, although the
        value was cut): the caller logs where it came from and moves on.
        """
        try:
            await self._send_all(
                self._dlq_topic, [(key, record.model_dump_json().encode(), list(headers), None)]
            )
        except PublishRefusedError:
            return False
        return True

    async def _send_all(self, topic: str, records: Sequence[_Record]) -> list[int]:
        """Send and wait for every acknowledgement; the offsets in the order of `records`."""
        producer = self._producer
        # (future, how many records it acknowledges; 0 for a single send's own future)
        futures: list[tuple[asyncio.Future[Any], int]] = []
        try:
            try:
                if all(record[3] is not None for record in records):
                    await _queue_batches(producer, topic, records, futures)
                else:
                    for key, value, headers, partition in records:
                        future = await producer.send(
                            topic, value=value, key=key, headers=headers, partition=partition
                        )
                        futures.append((future, 0))
            except Exception:
                # A send refused half-way (no metadata while the broker is away) leaves the
                # records queued before it on their way: they land once the broker is back.
                # Wait for them to land or fail, so that a retry's read-back sees the ones
                # that landed instead of sending them a second time.
                with contextlib.suppress(_UnacknowledgedError):
                    await self._settled(futures)
                raise
            settled = await self._settled(futures)
            _raise_first_error(settled)
        except _FATAL_TO_PRODUCER as exc:
            await self._replace(producer, exc)
            raise PublishError(f"{topic}: {exc!r}; producer replaced") from None
        except _UnacknowledgedError as exc:
            await self._replace(producer, exc)
            raise PublishError(f"{topic}: {exc}; producer replaced") from None
        except (RecordTooLargeError, MessageSizeTooLargeError) as exc:
            raise PublishRefusedError(f"{topic}: {exc!r}") from None
        except KafkaError as exc:
            raise PublishError(f"{topic}: {exc!r}") from None
        finally:
            # A send that failed half-way leaves futures nobody awaits: retrieve their errors
            # so that asyncio does not log each as "never retrieved".
            for future, _ in futures:
                future.add_done_callback(_retrieve)
        return _offsets(records, futures, settled)

    async def _settled(self, futures: Sequence[tuple[asyncio.Future[Any], int]]) -> list[Any]:
        """Each send's result or exception; _UnacknowledgedError if one is open at the bound.

        Not `wait_for(gather(...))`: a timeout would cancel the producer's own futures.
        """
        waiting = [future for future, _ in futures]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self._ack_timeout_s)
            if late:
                raise _UnacknowledgedError(
                    f"{len(late)} of {len(waiting)} sends unanswered after {self._ack_timeout_s} s"
                )
        return [_result_or_error(future) for future in waiting]

    async def _replace(self, broken: AIOKafkaProducer, error: Exception) -> None:
        """Swap in a new producer once, however many sends saw the old one fail."""
        async with self._replacing:
            if self._producer is not broken:
                return
            log.warning("kafka_producer_replaced", error=repr(error))
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(broken.stop(), _STOP_TIMEOUT_S)
            fresh = self._factory()
            try:
                await fresh.start()
            except KafkaError as exc:
                # The broker may still be away: the next publish attempt tries again.
                with contextlib.suppress(KafkaError):
                    await fresh.stop()
                raise PublishError(f"cannot start a new producer: {exc!r}") from None
            self._producer = fresh
            self._on_replace()


async def _queue_batches(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[_Record],
    futures: list[tuple[asyncio.Future[Any], int]],
) -> None:
    """Queue the records as one batch per partition (more where one fills up).

    One future per batch instead of one per record: resolving a future per record and waking
    every waiter cost more CPU than building the records (a profile at ~10 %). The records of
    a batch land at consecutive offsets from the batch's base offset.
    """
    by_partition: dict[int, list[_Record]] = {}
    for record in records:
        by_partition.setdefault(cast("int", record[3]), []).append(record)
    for partition, own in by_partition.items():
        builder = producer.create_batch()
        count = 0
        for key, value, headers, _ in own:
            while builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                if count == 0:
                    # The builder takes any first record, so an empty batch refusing one
                    # cannot happen; a record over the request size fails in the send.
                    raise RecordTooLargeError(f"{topic}: a record no batch can hold")
                futures.append((await _send_batch(producer, builder, topic, partition), count))
                builder, count = producer.create_batch(), 0
            count += 1
        futures.append((await _send_batch(producer, builder, topic, partition), count))


async def _send_batch(
    producer: AIOKafkaProducer, builder: Any, topic: str, partition: int
) -> asyncio.Future[Any]:
    # Closed, the batch leaves at once instead of lingering for records it will never get.
    builder.close()
    return cast(
        "asyncio.Future[Any]", await producer.send_batch(builder, topic, partition=partition)
    )


def _offsets(
    records: Sequence[_Record],
    futures: Sequence[tuple[asyncio.Future[Any], int]],
    settled: Sequence[Any],
) -> list[int]:
    """Each record's offset, in the order of `records` (batches hold them by partition)."""
    if all(count == 0 for _, count in futures):
        return [int(meta.offset) for meta in settled]
    landed: dict[int, list[int]] = {}
    for (_, count), meta in zip(futures, settled, strict=True):
        base = int(meta.offset)
        landed.setdefault(int(meta.partition), []).extend(range(base, base + count))
    cursor = dict.fromkeys(landed, 0)
    offsets = []
    for record in records:
        partition = cast("int", record[3])
        offsets.append(landed[partition][cursor[partition]])
        cursor[partition] += 1
    return offsets


def _result_or_error(future: asyncio.Future[Any]) -> Any:
    # As gather(return_exceptions=True) gives them.
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception() or future.result()


def _raise_first_error(settled: Sequence[Any]) -> None:
    for outcome in settled:
        if isinstance(outcome, BaseException):
            raise outcome


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def producer_options(*, idempotence: bool) -> dict[str, Any]:
    """Producer settings: every record acknowledged by all in-sync replicas."""
    return {
        "acks": "all",
        "enable_idempotence": idempotence,
        "linger_ms": 5,
        # Outcome and state records go a batch per partition (see _queue_batches): room for
        # a whole bulk call's records in one, well under the broker's 1 MB message limit.
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": _REQUEST_TIMEOUT_MS,
    }
