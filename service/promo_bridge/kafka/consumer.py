"""The consumer loop: fetch, hand records to the pipeline, pause under pressure, commit.

Offsets are committed only from the pipeline's watermark, i.e. once every command of every
event below the offset has its outcome acknowledged. On a rebalance the revoked partitions are
drained (flush, wait for in-flight calls, publish, commit) before they are let go.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from promo_bridge.domain.flow import InputRecord, PauseReason
from promo_bridge.kafka.restore import OutcomeRestorer, RestoreError, encode_mark
from promo_bridge.observability.metrics import Metrics
from promo_bridge.observability.status import PartitionStatus
from promo_bridge.pipeline import Pipeline

log = structlog.get_logger(__name__)


_PAUSE_EVENTS = {PauseReason.AUTH: "auth_pause", PauseReason.BACKPRESSURE: "backpressure_pause"}
_RESUME_EVENTS = {PauseReason.AUTH: "auth_resume", PauseReason.BACKPRESSURE: "backpressure_resume"}
# Records handed to the engine between two turns of the event loop (see _consume).
ACCEPT_SLICE: Final = 100
# aiokafka drops what it had fetched for a partition that is paused, and the dropped records
# are garbage in a reference cycle (their iterator refers back to them) holding the fetched
# bytes, up to a partition's fetch size each. Reference counting never frees them, and with
# the service's collector thresholds (_cli_run) a full collection is rare: at the peak of a
# 300,000-event backlog with backpressure pauses, 124 such buffers (128 MB) were alive. So a
# collection runs when partitions resume, at most once in this many seconds (one took 40-70 ms
# with 10,000 commands pending).
COLLECT_ON_RESUME_MIN_INTERVAL_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class ConsumerLoopConfig:
    """Knobs of the loop; units are in the names."""

    topics: tuple[str, ...]
    max_poll_records: int = 500
    poll_timeout_ms: int = 200
    commit_interval_s: float = 1.0
    drain_timeout_s: float = 20.0
    error_backoff_initial_s: float = 0.5
    error_backoff_max_s: float = 30.0
    # /readyz turns false when the broker has not answered for this long (three probes).
    broker_stale_s: float = 15.0
    broker_probe_interval_s: float = 5.0


class ConsumerLoop:
    """Owns the AIOKafkaConsumer once it is started; one instance per service."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        pipeline: Pipeline,
        metrics: Metrics,
        config: ConsumerLoopConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        restorer: OutcomeRestorer | None = None,
        on_share: Callable[[int, int], None] | None = None,
        collect_garbage: Callable[[], int] = gc.collect,
    ) -> None:
        """`on_share(assigned, total)` hears this instance's share of the input partitions.

        It is called on every assignment, before the new partitions' work starts, and after a
        revocation's drain (eagerly rebalanced, the share is 0 then: nobody owns partitions
        until the group hands out the new assignment). `collect_garbage` frees what paused
        partitions left behind (COLLECT_ON_RESUME_MIN_INTERVAL_S).
        """
        self._collect_garbage = collect_garbage
        self._last_collect: float | None = None
        self._on_share = on_share
        self._consumer = consumer
        self._restorer = restorer
        self._pipeline = pipeline
        self._metrics = metrics
        self._config = config
        self._clock = clock
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = clock()
        self._last_fetch_ok: float | None = None
        self._pause_reason: PauseReason | None = None
        # Assigned partitions whose completed work is being read back: not consumed yet.
        self._restoring: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self._commit_lock = asyncio.Lock()

    # -- readiness --------------------------------------------------------------------------

    @property
    def assigned(self) -> bool:
        """True once the group gave this instance at least one partition."""
        return bool(self._consumer.assignment())

    @property
    def broker_reachable(self) -> bool:
        """True while fetches succeed."""
        last = self._last_fetch_ok
        return last is not None and self._clock() - last < self._config.broker_stale_s

    def partition_status(self) -> list[PartitionStatus]:
        """The assigned partitions with the offsets the lag gauge is computed from."""
        return [
            PartitionStatus(
                topic=tp.topic,
                partition=tp.partition,
                highwater=self._consumer.highwater(tp),
                committed=self._committed.get(tp),
                paused=tp in self._paused,
            )
            for tp in sorted(self._consumer.assignment())
        ]

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; then return without draining (the runtime drains)."""
        self._consumer.subscribe(list(self._config.topics), listener=_Rebalance(self))
        probe = asyncio.create_task(self._probe_broker(stop), name="broker-probe")
        try:
            await self._consume(stop)
        finally:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe

    async def _probe_broker(self, stop: asyncio.Event) -> None:
        # getmany() answers empty rather than failing while the broker is away, and paused
        # partitions fetch nothing: a metadata round trip is what tells readiness the truth.
        while not stop.is_set():
            try:
                await asyncio.wait_for(
                    self._consumer.topics(), self._config.broker_probe_interval_s
                )
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("kafka_broker_unreachable", error=repr(exc))
            else:
                self._last_fetch_ok = self._clock()
            await _wait_or_stop(stop, self._config.broker_probe_interval_s)

    async def _consume(self, stop: asyncio.Event) -> None:
        backoff_s = self._config.error_backoff_initial_s
        while not stop.is_set():
            self._apply_flow_control()
            try:
                fetched = await self._consumer.getmany(
                    timeout_ms=self._config.poll_timeout_ms,
                    max_records=self._config.max_poll_records,
                )
            except KafkaError as exc:
                log.warning("kafka_fetch_failed", error=repr(exc), retry_in_s=backoff_s)
                await _wait_or_stop(stop, backoff_s)
                backoff_s = min(backoff_s * 2, self._config.error_backoff_max_s)
                continue
            backoff_s = self._config.error_backoff_initial_s
            if fetched:
                self._last_fetch_ok = self._clock()
            for tp, messages in fetched.items():
                if messages:
                    # Until this instance commits, the lag counts from where the group was.
                    self._committed.setdefault(tp, messages[0].offset)
                for start in range(0, len(messages), ACCEPT_SLICE):
                    if start:
                        # Let the calls and publishes run between slices: a fetch of 500 at
                        # once held the loop long enough that, near capacity, requests queued
                        # for their in-flight slots (bench-e2e at 7,300 events/s: p99 867 and
                        # 905 ms; in slices of 100: 369 and 510 ms).
                        await asyncio.sleep(0)
                    self._pipeline.accept(
                        InputRecord(
                            topic=tp.topic,
                            partition=tp.partition,
                            offset=message.offset,
                            key=message.key,
                            value=message.value,
                            headers=tuple(message.headers or ()),
                            timestamp_ms=message.timestamp,
                        )
                        for message in messages[start : start + ACCEPT_SLICE]
                    )
            if self._clock() - self._last_commit >= self._config.commit_interval_s:
                await self.commit()
            self._update_lag()

    def _apply_flow_control(self) -> None:
        """Pause or resume partitions as the engine's core decides; restoring ones stay paused."""
        reason = self._pipeline.pause_reason()
        if reason is not self._pause_reason:
            self._log_pause_change(self._pause_reason, reason)
            self._pause_reason = reason
        assignment = self._consumer.assignment()
        wanted = set(assignment) if reason is not None else self._restoring & assignment
        to_pause = wanted - self._paused
        if to_pause:
            self._consumer.pause(*to_pause)
        to_resume = (self._paused - wanted) & assignment
        if to_resume:
            self._consumer.resume(*to_resume)
            self._collect_dropped_fetches()
        self._paused = wanted
        self._metrics.paused_partitions.set(len(self._paused))

    def _collect_dropped_fetches(self) -> None:
        """Free the fetched records aiokafka dropped while partitions were paused."""
        now = self._clock()
        last = self._last_collect
        if last is not None and now - last < COLLECT_ON_RESUME_MIN_INTERVAL_S:
            return
        self._last_collect = now
        started = time.perf_counter()
        found = self._collect_garbage()
        log.debug(
            "garbage_collected",
            reason="partitions_resumed",
            objects=found,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )

    def _log_pause_change(self, before: PauseReason | None, after: PauseReason | None) -> None:
        pending = self._pipeline.pending
        if before is not None:
            log.info(_RESUME_EVENTS[before], pending=pending)
        if after is not None:
            self._metrics.partition_pauses.labels(after.value).inc()
            log.info(_PAUSE_EVENTS[after], pending=pending)

    async def commit(self) -> None:
        """Commit the watermark of every partition that moved; failures are retried later."""
        async with self._commit_lock:
            self._last_commit = self._clock()
            self._pipeline.expire_state()
            offsets = self._pipeline.committable()
            if not offsets:
                # Idle and fully committed is not a stuck commit; a watermark held by a
                # pending event is, so seconds_since_last_commit keeps growing then.
                if self._pipeline.pending == 0:
                    self._metrics.up_to_date()
                return
            assignment = self._consumer.assignment()
            owned = {
                key: offset for key, offset in offsets.items() if TopicPartition(*key) in assignment
            }
            marks = self._pipeline.restore_marks(owned)
            to_commit = {
                TopicPartition(*key): OffsetAndMetadata(offset, encode_mark(marks.get(key)))
                for key, offset in owned.items()
            }
            if not to_commit:
                return
            try:
                await self._consumer.commit(to_commit)
            except (CommitFailedError, KafkaError) as exc:
                log.warning("offset_commit_failed", error=repr(exc))
                return
            self._pipeline.committed(
                {(tp.topic, tp.partition): meta.offset for tp, meta in to_commit.items()}
            )
            self._committed.update({tp: meta.offset for tp, meta in to_commit.items()})
            self._metrics.committed(self._clock)
            log.debug("offsets_committed", count=len(to_commit))

    def _update_lag(self) -> None:
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            base = self._committed.get(tp)
            if base is None:
                continue
            self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                max(0, highwater - base)
            )

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish the work of partitions about to move, commit, then let them go."""
        if not revoked:
            return
        keys = {(tp.topic, tp.partition) for tp in revoked}
        started = self._clock()
        drained = await self._pipeline.drain(keys, self._config.drain_timeout_s)
        await self.commit()
        self._pipeline.forget(keys)
        for tp in revoked:
            self._committed.pop(tp, None)
            # prometheus_client raises KeyError for a child that was never set.
            with contextlib.suppress(KeyError):
                self._metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        self._paused -= revoked
        self._restoring -= revoked
        # Only now: the drain above still needed the old share to send what was pending.
        self._report_share(set(self._consumer.assignment()) - revoked)
        log.info(
            "partitions_revoked",
            partitions=sorted(f"{t}-{p}" for t, p in keys),
            drained=drained,
            seconds=round(self._clock() - started, 3),
        )

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Read back the new partitions' completed work before any of their records is taken.

        They stay paused meanwhile. A partition whose committed offset carries no restore mark
        (first run, or committed by something else) gets one now: from here on, a crash
        anywhere leaves a point to read back from.
        """
        log.info(
            "partitions_assigned",
            partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in assigned),
        )
        self._report_share(set(self._consumer.assignment()) | assigned)
        self._metrics.partitions_assigned.inc(len(assigned))
        if not assigned or self._restorer is None:
            return
        self._restoring |= assigned
        self._consumer.pause(*assigned)
        self._paused |= assigned
        try:
            await self._restore_state({tp.partition for tp in assigned})
            restored = await self._restorer.restore((tp.topic, tp.partition) for tp in assigned)
        except RestoreError as exc:
            # Waiting for ever would stall the partitions; going on risks repeating work that
            # was done before the crash. Say so loudly and go on.
            self._metrics.restore_failures.inc(len(assigned))
            log.error("outcomes_read_back_failed", error=str(exc))  # noqa: TRY400
            restored = {}
        unmarked: dict[TopicPartition, OffsetAndMetadata] = {}
        for key, result in restored.items():
            self._pipeline.restore(key, result.outcomes, result.outcomes_end)
            self._metrics.restored_commands.inc(len(result.outcomes))
            if not result.had_mark:
                tp = TopicPartition(*key)
                position = await self._consumer.position(tp)
                unmarked[tp] = OffsetAndMetadata(position, encode_mark(result.outcomes_end))
        if unmarked:
            with contextlib.suppress(CommitFailedError, KafkaError):
                await self._consumer.commit(unmarked)
        self._restoring -= assigned

    def _report_share(self, owned: set[TopicPartition]) -> None:
        if self._on_share is None:
            return
        topics = self._config.topics
        # The group's assignment was computed from this metadata: the same partition counts.
        total = sum(len(self._consumer.partitions_for_topic(topic) or ()) for topic in topics)
        assigned = sum(1 for tp in owned if tp.topic in topics)
        self._on_share(min(assigned, total), total)

    async def _restore_state(self, numbers: set[int]) -> None:
        """Read back the holdings ledger of partition numbers this instance does not hold yet.

        An already loaded number (another input topic's partition of that number is owned
        here) keeps its state in memory: it is newer than the topic's.
        """
        assert self._restorer is not None
        wanted = {number for number in numbers if not self._pipeline.state_loaded(number)}
        for number, records in (await self._restorer.read_state(wanted)).items():
            self._pipeline.restore_state(number, records)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._loop.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._loop.on_assigned(set(assigned))


async def _wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return
