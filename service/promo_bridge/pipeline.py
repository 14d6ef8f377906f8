"""The engine between the consumer and the API: records in, outcomes out, offsets forward.

It owns no Kafka or HTTP object: the consumer hands it records, and it talks to the API and to
the outcome topic through the two ports below, so tests drive it with fakes and a fake clock.

Every accepted record is tracked by the offset watermark until each of its commands has an
outcome acknowledged by the broker (or, for an undecodable record, until its DLQ record is).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from promo_bridge.capillary import ApiUnavailable, AuthenticationFailed
from promo_bridge.domain.batcher import MicroBatcher
from promo_bridge.domain.commands import Batch, Command, EventPosition
from promo_bridge.domain.dead_letters import DeadLetterRecord, dead_letter
from promo_bridge.domain.events import EventDecodeError, decode_event
from promo_bridge.domain.offsets import OffsetTracker
from promo_bridge.domain.outcomes import (
    CommandResult,
    ErrorClass,
    OutcomeRecord,
    OutcomeStatus,
    outcome_record,
)
from promo_bridge.domain.rules import RuleSet
from promo_bridge.observability.metrics import Metrics

log = structlog.get_logger(__name__)

TopicPartition = tuple[str, int]


class CommandSender(Protocol):
    """The Capillary client as the pipeline sees it."""

    async def send(self, batch: Batch) -> list[CommandResult]: ...


class RecordSink(Protocol):
    """The outcome and DLQ topics as the pipeline sees them; both return once acknowledged."""

    async def publish_outcomes(self, records: Sequence[OutcomeRecord]) -> None: ...

    async def publish_dead_letter(
        self,
        record: DeadLetterRecord,
        *,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class InputRecord:
    """A consumed Kafka record, reduced to what the pipeline needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Timing knobs of the engine."""

    unavailable_retry_s: float = 5.0
    publish_retry_s: float = 1.0


class Pipeline:
    """Decode, apply rules, batch, call, publish outcomes, and move the offset watermark."""

    def __init__(
        self,
        *,
        rules: RuleSet,
        batcher: MicroBatcher,
        tracker: OffsetTracker,
        sender: CommandSender,
        sink: RecordSink,
        metrics: Metrics,
        config: PipelineConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._rules = rules
        self._batcher = batcher
        self._tracker = tracker
        self._sender = sender
        self._sink = sink
        self._metrics = metrics
        self._config = config or PipelineConfig()
        self._clock = clock
        self._wall_clock = wall_clock
        # Commands the batcher holds (by command_id), with when their event was decoded.
        self._accepted: dict[str, tuple[Command, datetime]] = {}
        # Positions of redelivered copies of a pending command, completed with the original.
        self._followers: dict[str, list[EventPosition]] = {}
        # In-flight commands of partitions let go after a drain timed out.
        self._orphans: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dead_letters_pending = 0
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        # Dispatching holds until this monotonic time after the API was unavailable.
        self._hold_until = 0.0
        self._auth_failed = False

    # -- state the runtime reads ----------------------------------------------------------

    @property
    def pending(self) -> int:
        """Commands and dead letters accepted and not yet acknowledged on their topic."""
        return self._batcher.pending_count + self._dead_letters_pending

    @property
    def auth_failed(self) -> bool:
        """True while Capillary refuses the credentials; cleared by the next successful call."""
        return self._auth_failed

    # -- intake ---------------------------------------------------------------------------

    def accept(self, records: Iterable[InputRecord]) -> None:
        """Take consumed records; never blocks, never drops one."""
        now = self._clock()
        received = self._wall_clock()
        for record in records:
            self._accept_one(record, now, received)
        self._update_pending()
        self._wake.set()

    def _accept_one(self, record: InputRecord, now: float, received: datetime) -> None:
        position = EventPosition(record.topic, record.partition, record.offset)
        try:
            event = decode_event(record.value or b"")
        except EventDecodeError as exc:
            self._metrics.decode_failures.labels(record.topic).inc()
            self._tracker.track(position, 1)
            self._spawn(self._send_dead_letter(record, position, str(exc)))
            return
        self._metrics.events_consumed.labels(record.topic, event.type).inc()
        verdicts = self._rules.evaluate(event, position)
        for rule, error in verdicts.errors:
            self._metrics.rule_errors.labels(rule).inc()
            log.warning("rule_condition_failed", rule=rule, event_id=event.id, error=error)
        for rule, skipped in verdicts.skipped:
            self._metrics.rule_actions_skipped.labels(rule, skipped.reason.value).inc()
        commands = verdicts.commands
        self._tracker.track(position, len(commands))
        for command in commands:
            self._metrics.commands.labels(command.action.value, command.subject).inc()
            if self._batcher.add(command, now):
                self._accepted[command.command_id] = (command, received)
                continue
            self._metrics.commands_deduplicated.inc()
            if command.command_id in self._accepted:
                # The same command is still pending (maybe in flight from before a rebalance):
                # its outcome covers this copy, so this event completes only with it.
                self._followers.setdefault(command.command_id, []).append(position)
            else:
                # Completed recently: the outcome is already on the topic.
                self._tracker.command_done(position)

    async def _send_dead_letter(
        self, record: InputRecord, position: EventPosition, reason: str
    ) -> None:
        letter = dead_letter(
            reason=reason,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp_ms,
            key=record.key,
            value=record.value,
            headers=list(record.headers),
            failed_at=self._wall_clock(),
        )
        log.warning(
            "event_refused",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
        )
        self._dead_letters_pending += 1
        try:
            await self._retry_publish(
                lambda: self._sink.publish_dead_letter(
                    letter, key=record.key, headers=record.headers
                )
            )
        finally:
            self._dead_letters_pending -= 1
        self._metrics.dlq_records.labels(record.topic).inc()
        self._tracker.command_done(position)
        self._signal_progress()

    # -- dispatch -------------------------------------------------------------------------

    async def run_dispatcher(self) -> None:
        """Send every batch the batcher releases; runs until cancelled."""
        while True:
            now = self._clock()
            if now >= self._hold_until:
                for batch in self._batcher.ready(now):
                    self._launch(batch)
            deadline = self._batcher.next_deadline()
            if now < self._hold_until:
                deadline = self._hold_until if deadline is None else min(deadline, self._hold_until)
            self._wake.clear()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _launch(self, batch: Batch) -> None:
        endpoint = batch.key.endpoint.value
        self._metrics.batch_flushes.labels(endpoint, batch.reason).inc()
        self._metrics.batch_size.labels(endpoint).observe(len(batch))
        self._spawn(self._execute(batch))

    async def _execute(self, batch: Batch) -> None:
        bound = structlog.contextvars.bound_contextvars(
            batch_id=batch.batch_id, endpoint=batch.key.endpoint.value
        )
        with bound:
            try:
                results = await self._sender.send(batch)
            except ApiUnavailable as exc:
                self._metrics.batches_unavailable.labels(batch.key.endpoint.value).inc()
                log.warning("api_unavailable", reason=str(exc), pending=len(exc.pending))
                await self._finish(batch, list(exc.completed))
                self._requeue(batch, list(exc.pending), hold_s=exc.retry_after)
                return
            except AuthenticationFailed as exc:
                if not self._auth_failed:
                    log.error("api_authentication_failed", reason=str(exc))  # noqa: TRY400 - no traceback wanted
                self._auth_failed = True
                self._metrics.auth_paused.set(1)
                await self._finish(batch, list(exc.completed))
                self._requeue(batch, list(exc.pending))
                return
            except Exception:
                # A bug or an unforeseen answer must not lose commands: keep them pending.
                log.exception("batch_send_crashed")
                self._requeue(batch, list(batch.commands))
                return
            if self._auth_failed:
                log.info("api_authentication_recovered")
                self._auth_failed = False
                self._metrics.auth_paused.set(0)
            await self._finish(batch, results)

    def _requeue(self, batch: Batch, commands: list[Command], hold_s: float | None = None) -> None:
        if commands:
            self._batcher.requeue(dataclasses.replace(batch, commands=tuple(commands)))
        wait_s = max(self._config.unavailable_retry_s, hold_s or 0.0)
        self._hold_until = max(self._hold_until, self._clock() + wait_s)
        self._wake.set()
        self._signal_progress()

    async def _finish(self, batch: Batch, results: list[CommandResult]) -> None:
        if not results:
            return
        by_id = {command.command_id: command for command in batch.commands}
        completed_at = self._wall_clock()
        records = []
        for result in results:
            command = by_id[result.command_id]
            received = self._accepted.get(command.command_id, (command, completed_at))[1]
            records.append(
                outcome_record(command, result, received_at=received, completed_at=completed_at)
            )
        await self._retry_publish(lambda: self._sink.publish_outcomes(records))
        done = [by_id[result.command_id] for result in results]
        self._batcher.complete(dataclasses.replace(batch, commands=tuple(done)))
        for record, command in zip(records, done, strict=True):
            self._metrics.outcomes.labels(
                record.status.value, record.error_class.value if record.error_class else ""
            ).inc()
            if record.status is not OutcomeStatus.APPLIED:
                _log_outcome(record)
            self._accepted.pop(command.command_id, None)
            if command.command_id in self._orphans:
                # Its partition was let go while it was in flight; the offset it held may be
                # tracked again (re-assigned here), as a follower of this very command.
                self._orphans.discard(command.command_id)
            else:
                self._tracker.command_done(command.position)
            for follower in self._followers.pop(command.command_id, ()):
                self._tracker.command_done(follower)
        self._update_pending()
        self._wake.set()
        self._signal_progress()

    async def _retry_publish(self, publish: Callable[[], Awaitable[None]]) -> None:
        """Publish until acknowledged: the API call already happened, so it must not repeat."""
        while True:
            try:
                await publish()
            except Exception:
                log.exception("publish_failed_retrying")
                await asyncio.sleep(self._config.publish_retry_s)
            else:
                return

    # -- draining, for rebalance and shutdown ---------------------------------------------

    async def drain(self, partitions: set[TopicPartition] | None, timeout_s: float) -> bool:
        """Flush and wait until every command of `partitions` (None: all) has its outcome.

        Returns False when the timeout ran out first; what is left stays pending.
        """
        deadline = self._clock() + timeout_s

        def selected(command: Command) -> bool:
            if partitions is None:
                return True
            return (command.position.topic, command.position.partition) in partitions

        while self._incomplete(partitions):
            # While the API asked for a pause (outage, Retry-After, refused credentials) a drain
            # must not hammer it either; what it cannot send stays pending and is re-read.
            if self._clock() >= self._hold_until:
                for batch in self._batcher.flush_all(self._clock(), where=selected):
                    self._launch(batch)
            remaining = deadline - self._clock()
            if remaining <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(remaining, 0.5))
        return True

    def _incomplete(self, partitions: set[TopicPartition] | None) -> bool:
        if partitions is None:
            return self.pending > 0 or self._tracker.pending_count > 0
        return any(self._tracker.has_incomplete(tp) for tp in partitions)

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets to commit now (the next offset to read per partition)."""
        return self._tracker.committable()

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Tell the watermark those offsets are stored."""
        self._tracker.mark_committed(offsets)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop what is left of partitions this instance no longer owns."""
        partition_set = set(partitions)
        dropped = self._batcher.discard(
            lambda c: (c.position.topic, c.position.partition) in partition_set
        )
        for command in dropped:
            self._accepted.pop(command.command_id, None)
            # The partition's new owner re-reads and sends the command; copies of it read
            # here from partitions this instance keeps need not wait for that.
            for follower in self._followers.pop(command.command_id, ()):
                self._tracker.command_done(follower)
        # What discard() left of those partitions is in flight: its result must not touch
        # the watermark of an offset that may be tracked again by then.
        self._orphans.update(
            command_id
            for command_id, (command, _) in self._accepted.items()
            if (command.position.topic, command.position.partition) in partition_set
        )
        for tp in partition_set:
            self._tracker.forget_partition(tp)
        self._update_pending()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Cancel what is still running (after drain gave up)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    # -- helpers --------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _signal_progress(self) -> None:
        self._progress.set()

    def _update_pending(self) -> None:
        self._metrics.pending_commands.set(self.pending)


def _log_outcome(record: OutcomeRecord) -> None:
    """One line per command that was not simply applied; config trouble is a warning."""
    fields = {
        "command_id": record.command_id,
        "event_id": record.event_id,
        "rule": record.rule,
        "action": record.action,
        "subject": record.subject,
        "status": record.status.value,
        "error_code": record.error_code,
        "error_class": record.error_class.value if record.error_class else None,
        "error_message": record.error_message,
        "request_id": record.request_id,
    }
    if record.error_class is ErrorClass.CONFIG or record.status is OutcomeStatus.FAILED:
        log.warning("command_not_applied", **fields)
    else:
        log.info("command_not_applied", **fields)
