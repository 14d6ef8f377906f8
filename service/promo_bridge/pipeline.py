"""The async shell that runs the flow core: it waits, calls, publishes, and reports.

Every decision (what to send when, what an answer means, which offset may be committed, when to
pause) is the core's (`domain/flow.py`); this module owns the tasks and the timers, talks to the
API and to the outcome topic through the two ports below, and turns what the core did into
metrics and log lines. It imports neither Kafka nor Capillary code, so tests drive it with fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import structlog

from promo_bridge.domain.commands import Batch, BeforeRequest, Command
from promo_bridge.domain.dead_letters import DeadLetterRecord, dead_letter
from promo_bridge.domain.flow import (
    Completion,
    Flow,
    InputRecord,
    Intake,
    PauseReason,
    Refusal,
    TopicPartition,
)
from promo_bridge.domain.ledger import StateRecord
from promo_bridge.domain.outcomes import (
    Delivery,
    ErrorClass,
    OutcomeRecord,
    OutcomeStatus,
    outcome_record,
)
from promo_bridge.domain.restore import RestoredOutcome
from promo_bridge.observability.metrics import Metrics
from promo_bridge.observability.status import RECENT_LIMIT, DeadLetterNote, OutcomeNote

__all__ = [
    "BeforeRequest",
    "CommandSender",
    "InputRecord",
    "Pipeline",
    "PipelineConfig",
    "RecordSink",
]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

# Distinct event types given a label of their own in metrics.
_MAX_TYPE_LABELS = 50


class CommandSender(Protocol):
    """The Capillary API as the engine sees it: a batch in, a `Delivery` out, never raising.

    `before_request` runs before every request that carries commands, with those commands.
    """

    async def send(
        self, batch: Batch, *, before_request: BeforeRequest | None = None
    ) -> Delivery: ...


class RecordSink(Protocol):
    """The outcome and DLQ topics as the engine sees them; both return once acknowledged.

    `publish_outcomes` writes each record to the outcomes partition numbered like its event's
    input partition, and returns the offsets they landed at (or none, if it cannot tell).
    `publish_dead_letter` returns False when the broker refuses the record for good.
    `publish_state` writes holdings-ledger records to the state topic, each to its partition.
    """

    async def publish_state(self, records: Sequence[StateRecord]) -> None: ...

    async def publish_outcomes(self, records: Sequence[OutcomeRecord]) -> Sequence[int]: ...

    async def publish_dead_letter(
        self,
        record: DeadLetterRecord,
        *,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Timing knobs of the shell."""

    # First wait before a failed publish is retried, doubling up to the cap.
    publish_retry_s: float = 0.5
    publish_retry_max_s: float = 5.0
    # DLQ records sent at once, at most (the rest wait their turn in order).
    dead_letter_chunk: int = 100
    # Write intents before calls and ledger changes with outcomes to the state topic, so that
    # a command whose call's fate is unknown after a crash is verified, not resent.
    durable_state: bool = True
    # Holdings idle for longer than this are dropped (from memory and, by tombstone, the topic).
    state_retention_ms: int = 30 * 24 * 3600 * 1000


class Pipeline:
    """Runs a `Flow`: intake, dispatch, results, drains (see the module docstring)."""

    def __init__(
        self,
        *,
        flow: Flow,
        sender: CommandSender,
        sink: RecordSink,
        metrics: Metrics,
        config: PipelineConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._flow = flow
        self._sender = sender
        self._sink = sink
        self._metrics = metrics
        self._config = config or PipelineConfig()
        self._clock = clock
        self._wall_clock = wall_clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._letter_queue: list[Refusal] = []
        # Set once a call got results: the credentials work (readiness reads it).
        self.api_answered = False
        self._type_labels: set[str] = set()
        self._unknown_orders_seen = 0
        self._letter_worker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        # When a command or dead letter last completed, or work arrived with none pending.
        self._last_progress = clock()
        # What the status page lists; bounded, so a storm of failures costs no memory.
        self.recent_outcomes: deque[OutcomeNote] = deque(maxlen=RECENT_LIMIT)
        self.recent_dead_letters: deque[DeadLetterNote] = deque(maxlen=RECENT_LIMIT)

    # -- state the runtime reads ----------------------------------------------------------

    @property
    def pending(self) -> int:
        """Commands and dead letters accepted and not yet acknowledged on their topic."""
        return self._flow.pending

    @property
    def auth_failed(self) -> bool:
        """True while Capillary refuses the credentials; cleared by the next successful call."""
        return self._flow.auth_refused

    def seconds_without_progress(self) -> float:
        """How long work has been pending with nothing completed (0 when nothing is pending)."""
        if self._flow.pending == 0:
            return 0.0
        return max(0.0, self._clock() - self._last_progress)

    @property
    def pending_dead_letter_bytes(self) -> int:
        """Bytes of refused records held until their DLQ record is acknowledged."""
        return self._flow.pending_bytes

    def pause_reason(self) -> PauseReason | None:
        """Why the consumer should pause its partitions now (the core decides)."""
        return self._flow.pause_reason()

    # -- intake ---------------------------------------------------------------------------

    def accept(self, records: Iterable[InputRecord]) -> None:
        """Take consumed records; never blocks, never drops one."""
        now = self._clock()
        if self._flow.pending == 0:
            # Idle until now: the time without progress counts from this work's arrival.
            self._last_progress = now
        intake = self._flow.accept(records, now, self._wall_clock())
        self._report_intake(intake)
        if intake.refused:
            self._letter_queue.extend(intake.refused)
            if self._letter_worker is None or self._letter_worker.done():
                self._letter_worker = self._spawn(self._drain_dead_letters())
        self._update_pending()
        self._wake.set()

    def _report_intake(self, intake: Intake) -> None:
        metrics = self._metrics
        for (topic, event_type), count in intake.consumed.items():
            metrics.events_consumed.labels(topic, self._type_label(event_type)).inc(count)
        for (topic, event_type), count in intake.unread.items():
            metrics.events_unread.labels(topic, self._type_label(event_type)).inc(count)
        for refusal in intake.refused:
            metrics.decode_failures.labels(refusal.record.topic).inc()
        for rule, event_id, error in intake.rule_errors:
            metrics.rule_errors.labels(rule).inc()
            log.warning("rule_condition_failed", rule=rule, event_id=event_id, error=error)
        for rule, skipped in intake.skipped:
            metrics.rule_actions_skipped.labels(rule, skipped.reason.value).inc()
        made = Counter((command.action, command.subject) for command in intake.commands)
        for (action, subject), count in made.items():
            metrics.commands.labels(action.value, subject).inc(count)
        if intake.duplicates:
            metrics.commands_deduplicated.inc(len(intake.duplicates))

    async def _drain_dead_letters(self) -> None:
        """Send queued DLQ records a chunk at a time: a burst of bad records makes no storm.

        The producer batches a chunk's records into few requests; at most one chunk is out.
        """
        while self._letter_queue:
            chunk = self._letter_queue[: self._config.dead_letter_chunk]
            del self._letter_queue[: len(chunk)]
            await asyncio.gather(*(self._send_dead_letter(refusal) for refusal in chunk))

    async def _send_dead_letter(self, refusal: Refusal) -> None:
        record = refusal.record
        letter = dead_letter(
            reason=refusal.reason,
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
            reason=refusal.reason,
        )
        accepted = await self._retry_publish(
            lambda: self._sink.publish_dead_letter(letter, key=record.key, headers=record.headers)
        )
        self.recent_dead_letters.append(
            DeadLetterNote(record.topic, record.partition, record.offset, refusal.reason)
        )
        if accepted:
            self._metrics.dlq_records.labels(record.topic).inc()
        else:
            # Retrying cannot help: say where the record is, and let its offset move on.
            self._metrics.dlq_refused.labels(record.topic).inc()
            log.error(
                "dead_letter_refused",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                value_size=letter.value_size,
            )
        self._flow.dead_letter_published(refusal)
        self._last_progress = self._clock()
        self._update_pending()
        self._progress.set()

    # -- dispatch -------------------------------------------------------------------------

    async def run_dispatcher(self) -> None:
        """Send every batch the core releases; runs until cancelled."""
        while True:
            for batch in self._flow.ready(self._clock()):
                self._launch(batch)
            deadline = self._flow.next_deadline(self._clock())
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
                delivery = await self._sender.send(batch, before_request=self._intent_writer())
            except Exception:
                # A bug or an unforeseen answer must not lose commands: keep them pending.
                log.exception("batch_send_crashed")
                delivery = Delivery.unsent(batch, "sender crashed")
            was_refused = self._flow.auth_refused
            if delivery.completed and not delivery.auth_refused:
                self.api_answered = True
            completions = self._flow.delivered(batch, delivery, self._clock())
            self._report_delivery(delivery, was_refused=was_refused)
            # A call is free again, and requeued commands are due once any hold ends: the
            # dispatcher re-plans.
            self._wake.set()
            if delivery.pending:
                self._progress.set()
            await self._publish(completions)

    def _intent_writer(self) -> BeforeRequest:
        """Intents of a batch's commands, written as each request that carries them leaves.

        A call may apply its commands even if this process dies before the answer: the intent
        must be on the topic first. Written only then, not when the batch is released: a
        batch waiting for the call budget has sent nothing, and after a crash every open
        intent costs a lookup before its command may go out again.
        """
        written: set[str] = set()

        async def write(commands: Sequence[Command]) -> None:
            fresh = [command for command in commands if command.command_id not in written]
            if not fresh:
                return
            written.update(command.command_id for command in fresh)
            intents = self._flow.intents(fresh, self._epoch_ms())
            if intents and self._config.durable_state:
                await self._retry_publish(lambda: self._sink.publish_state(intents))

        return write

    def _report_delivery(self, delivery: Delivery, *, was_refused: bool) -> None:
        refused = self._flow.auth_refused
        if delivery.auth_refused:
            if not was_refused:
                log.error("api_authentication_failed", reason=delivery.detail)
        elif delivery.pending:
            log.warning("api_unavailable", reason=delivery.detail, pending=len(delivery.pending))
        if refused != was_refused:
            if not refused:
                log.info("api_authentication_recovered")
            self._metrics.auth_paused.set(1 if refused else 0)

    async def _publish(self, completions: list[Completion]) -> None:
        if not completions:
            return
        completed_at = self._wall_clock()
        records = [
            outcome_record(
                c.command, c.result, received_at=c.received_at, completed_at=completed_at
            )
            for c in completions
        ]
        state = self._flow.settle(completions, self._epoch_ms())
        offsets = await self._retry_publish(lambda: self._sink.publish_outcomes(records))
        await self._publish_state(state)
        self._flow.published(completions, offsets)
        unknown = self._flow.unknown_order_returns
        if unknown > self._unknown_orders_seen:
            self._metrics.unknown_order_returns.inc(unknown - self._unknown_orders_seen)
            self._unknown_orders_seen = unknown
        self._last_progress = self._clock()
        # Counted per label set, not per record: a label lookup costs more than the count.
        statuses: Counter[tuple[OutcomeStatus, ErrorClass | None]] = Counter()
        for record in records:
            error_class = record.error_class
            statuses[record.status, error_class] += 1
            if record.status is OutcomeStatus.APPLIED and record.verified_by is None:
                continue
            if record.skip_reason is not None:
                self._metrics.commands_skipped.labels(record.skip_reason).inc()
            if record.verified_by is not None:
                self._metrics.commands_verified.labels("applied").inc()
            elif error_class is ErrorClass.UNVERIFIED:
                self._metrics.commands_verified.labels("undecided").inc()
            if record.status is not OutcomeStatus.APPLIED:
                _log_outcome(record)
                self.recent_outcomes.append(_outcome_note(record))
        for (status, error_class), count in statuses.items():
            label = error_class.value if error_class else ""
            self._metrics.outcomes.labels(status.value, label).inc(count)
        self._update_pending()
        self._wake.set()
        self._progress.set()

    async def _retry_publish(self, publish: Callable[[], Awaitable[_T]]) -> _T:
        """Publish until acknowledged: the API call already happened, so it must not repeat.

        The broker being away is waited out with a capped backoff; the consumer pauses once
        the unpublished commands reach the pending bound, so memory stays bounded meanwhile.
        """
        delay_s = self._config.publish_retry_s
        while True:
            try:
                return await publish()
            except Exception as exc:  # noqa: BLE001 - every failure is retried, none is lost
                log.warning("publish_failed_retrying", error=str(exc), retry_in_s=delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, self._config.publish_retry_max_s)

    # -- draining, for rebalance and shutdown ---------------------------------------------

    async def drain(self, partitions: set[TopicPartition] | None, timeout_s: float) -> bool:
        """Flush and wait until every command of `partitions` (None: all) has its outcome.

        Returns False when the timeout ran out first; what is left stays pending. While the
        API asked for a pause the core releases nothing, so a drain does not hammer it either.
        """
        deadline = self._clock() + timeout_s
        while self._flow.incomplete(partitions):
            for batch in self._flow.drain(self._clock(), partitions):
                self._launch(batch)
            remaining = deadline - self._clock()
            if remaining <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(remaining, 0.5))
        return True

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets to commit now (the next offset to read per partition)."""
        return self._flow.committable()

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Tell the watermark those offsets are stored."""
        self._flow.committed(offsets)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop what is left of partitions this instance no longer owns."""
        self._flow.forget(partitions)
        self._update_pending()

    def restore(
        self, tp: TopicPartition, outcomes: Iterable[RestoredOutcome], outcomes_end: int
    ) -> None:
        """Commands of a newly assigned partition that already have outcomes (read back)."""
        closed = self._flow.restore(tp, outcomes, outcomes_end, self._epoch_ms())
        if closed:
            self._spawn(self._publish_state(closed))
        self._metrics.ledger_holdings.set(self._flow.ledger_size)

    def state_loaded(self, partition: int) -> bool:
        """Whether a state partition's holdings are in memory already (no read-back needed)."""
        return self._flow.state_loaded(partition)

    def restore_state(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> None:
        """A state partition read back whole; call before `restore` of its input partitions."""
        holdings = self._flow.restore_state(partition, records)
        log.info("state_read_back", partition=partition, holdings=holdings)

    def expire_state(self) -> None:
        """Drop holdings idle past the retention, and write their tombstones."""
        tombstones = self._flow.expire(self._epoch_ms(), self._config.state_retention_ms)
        if tombstones:
            self._spawn(self._publish_state(tombstones))
        self._metrics.ledger_holdings.set(self._flow.ledger_size)

    async def _publish_state(self, records: Sequence[StateRecord]) -> None:
        if records and self._config.durable_state:
            await self._retry_publish(lambda: self._sink.publish_state(records))

    def restore_marks(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The outcomes offsets to commit with `offsets` (see domain/restore.py)."""
        marks = self._flow.restore_marks(offsets)
        self._metrics.completed_uncommitted.set(self._flow.completed_uncommitted)
        return marks

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Cancel what is still running (after drain gave up)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    # -- helpers --------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _type_label(self, event_type: str) -> str:
        # Producers choose event types: past a bound, new ones share one label, so that a
        # stream of made-up types cannot grow the metric series without end.
        if event_type in self._type_labels or len(self._type_labels) < _MAX_TYPE_LABELS:
            self._type_labels.add(event_type)
            return event_type
        return "other"

    def _epoch_ms(self) -> int:
        return int(self._wall_clock().timestamp() * 1000)

    def _update_pending(self) -> None:
        self._metrics.pending_commands.set(self._flow.pending)
        self._metrics.pending_bytes.set(self._flow.pending_bytes)


def _outcome_note(record: OutcomeRecord) -> OutcomeNote:
    # Not the identifier: the status page is for operators, not a customer lookup.
    return OutcomeNote(
        command_id=record.command_id,
        rule=record.rule,
        action=record.action,
        status=record.status.value,
        reason=record.error_class.value if record.error_class else record.skip_reason,
        error_message=record.error_message,
    )


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
