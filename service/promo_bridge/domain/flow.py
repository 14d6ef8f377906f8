"""The flow core: how records, commands, results and offsets move, as pure state.

No asyncio, no Kafka, no HTTP: every method that depends on time takes `now` (seconds on one
monotonic clock), and the async shell (pipeline.py) does the waiting and the I/O. The core owns:

- the micro-batcher (lanes and buckets) and the offset watermark;
- the commands accepted and not yet published (`_accepted`), with when their event arrived and
  how many requests already carried them (`attempts` counts across requeues);
- followers: positions of redelivered copies of a pending command, complete with the original;
- orphans: in-flight commands of partitions let go, whose results must not touch the watermark
  of an offset that may be tracked again by then;
- the API hold (after the API was unavailable or asked for a pause) and the refused-credentials
  flag;
- flow control: the partitions pause above `max_pending` and resume below `resume_below`, and
  pause while the credentials are refused.

A command's life: `accept` (decoded, rules applied, bucketed, offset tracked) → `ready` or
`drain` (handed out in a batch) → `delivered` (the sender's `Delivery`: settled results come
back as `Completion`s to publish, pending commands go back to their buckets and hold the API) →
`published` (the outcomes are acknowledged: the lane moves on, the watermark moves forward).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from promo_bridge.domain._recent import RecentMap
from promo_bridge.domain._values import value
from promo_bridge.domain.batcher import DEFAULT_COMPLETED_MEMORY, DEFAULT_WINDOW_MS, MicroBatcher
from promo_bridge.domain.commands import (
    DEFAULT_BATCH_LIMITS,
    Action,
    Batch,
    Command,
    Endpoint,
    EventPosition,
)
from promo_bridge.domain.events import EventDecodeError, decode_event
from promo_bridge.domain.ledger import ORDER_REVOKES, Ledger, StateRecord
from promo_bridge.domain.offsets import OffsetTracker
from promo_bridge.domain.outcomes import CommandResult, Delivery, ErrorClass, OutcomeStatus
from promo_bridge.domain.restore import RestoredOutcome, RestoreMarks
from promo_bridge.domain.rules import RuleSet, SkippedAction

TopicPartition = tuple[str, int]


@value
class InputRecord:
    """A consumed Kafka record, reduced to what the engine needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """The engine's limits; units are in the names."""

    window_ms: int = DEFAULT_WINDOW_MS
    batch_limits: Mapping[Endpoint, int] = field(default_factory=lambda: dict(DEFAULT_BATCH_LIMITS))
    # Pause the partitions at this many pending commands, resume below `resume_below`.
    max_pending: int = 10_000
    resume_below: int = 5_000
    # After the API was unavailable, nothing is sent for this long (or the longer pause it asked).
    unavailable_retry_s: float = 5.0
    # Calls handed to the sender and not answered yet, at most (None: no bound). Batches wait
    # in the core meanwhile, so the oldest due ones (a lane's next command included) go first.
    max_calls_in_flight: int | None = None
    # A command the API keeps failing (not merely down) fails `retry_exhausted` after this many
    # sends came back without its result, or this long after the first did (None: no bound).
    retry_max_sends: int | None = 10
    retry_max_s: float | None = 900.0
    # Bytes of refused records held until their DLQ record is acknowledged: the partitions
    # pause at this many too (a burst of large bad records), and resume below half of it.
    max_pending_bytes: int = 64 * 1024 * 1024
    # Events of a type no rule reads: counted always; sent to the DLQ too when True (a producer
    # writing to the wrong topic, a type renamed upstream), else passed over.
    dead_letter_unread: bool = False
    # A return whose order the ledger does not know (older than the retention, or from before
    # the service ran): False skips its revoke_earn (outcome skipped, order_unknown); True sends
    # it without earnIds, which revokes every earn of the customer in that promotion.
    unknown_order_revokes_all: bool = False

    def __post_init__(self) -> None:
        if self.max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if not 0 <= self.resume_below < self.max_pending:
            raise ValueError("resume_below must be between 0 and max_pending - 1")
        if self.unavailable_retry_s < 0:
            raise ValueError("unavailable_retry_s must not be negative")
        if self.max_calls_in_flight is not None and self.max_calls_in_flight < 1:
            raise ValueError("max_calls_in_flight must be at least 1")
        if self.max_pending_bytes < 1:
            raise ValueError("max_pending_bytes must be at least 1")
        if self.retry_max_sends is not None and self.retry_max_sends < 1:
            raise ValueError("retry_max_sends must be at least 1")
        if self.retry_max_s is not None and self.retry_max_s <= 0:
            raise ValueError("retry_max_s must be positive")


class PauseReason(StrEnum):
    """Why the consumer's partitions should be paused."""

    AUTH = "auth"
    BACKPRESSURE = "backpressure"


@value
class Refusal:
    """A record that could not be decoded: it goes to the DLQ, and completes when it is there."""

    record: InputRecord
    reason: str
    # Tells this refusal from one of the same record read again after a re-assignment.
    seq: int


@dataclass(slots=True)
class Intake:
    """What `accept` did with a fetch's records, for metrics, logs and the DLQ."""

    # (topic, event type) of every decoded event, and of those no rule reads.
    consumed: Counter[tuple[str, str]] = field(default_factory=Counter)
    unread: Counter[tuple[str, str]] = field(default_factory=Counter)
    refused: list[Refusal] = field(default_factory=list)
    # (rule, event id, error) of conditions that could not be evaluated.
    rule_errors: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: list[tuple[str, SkippedAction]] = field(default_factory=list)
    # Commands the rules made: new ones, and copies of a pending or recent one (not sent).
    accepted: list[Command] = field(default_factory=list)
    duplicates: list[Command] = field(default_factory=list)

    @property
    def commands(self) -> list[Command]:
        """Every command the rules made, duplicates included."""
        return self.accepted + self.duplicates


@value
class Completion:
    """A command with its final result, to be published as one outcome record."""

    command: Command
    result: CommandResult
    received_at: datetime


@dataclass(slots=True)
class _Accepted:
    command: Command
    received_at: datetime
    # Requests that carried the command in earlier sends (requeued after ApiUnavailable).
    attempts: int = 0
    # Sends that came back without its result while the API was not merely down, and when the
    # first of them did: the retry bound.
    failed_sends: int = 0
    failing_since: float | None = None


class Flow:
    """The engine's state and its decisions; see the module docstring."""

    def __init__(
        self,
        rules: RuleSet,
        config: FlowConfig | None = None,
        *,
        id_factory: Callable[[], str] | None = None,
    ) -> None:
        self._rules = rules
        self._config = config or FlowConfig()
        self._batcher = MicroBatcher(
            self._config.batch_limits, self._config.window_ms, id_factory=id_factory
        )
        self._tracker = OffsetTracker()
        self._marks = RestoreMarks()
        # Completed commands' outcomes: (outcomes partition, offset), for copies read later.
        self._outcome_offsets: RecentMap[str, tuple[int, int]] = RecentMap(DEFAULT_COMPLETED_MEMORY)
        self._accepted: dict[str, _Accepted] = {}
        self._followers: dict[str, list[EventPosition]] = {}
        self._orphans: set[str] = set()
        # Refusals whose DLQ record is not acknowledged yet, by seq: their partition while their
        # offset is tracked, None once it was let go (the offset may be tracked again by then).
        self._letters: dict[int, TopicPartition | None] = {}
        self._letter_bytes: dict[int, int] = {}
        self._held_bytes = 0
        self._letter_seq = 0
        self._hold_until = 0.0
        self._calls = 0
        self._auth_refused = False
        self._backpressure = False
        self._ledger = Ledger(
            track_orders=any(
                action.action in ORDER_REVOKES for rule in rules.rules for action in rule.actions
            )
        )
        # Returns whose order the ledger did not know (a counter for metrics), and the pending
        # ones already counted.
        self.unknown_order_returns = 0
        self._unknown_orders: set[str] = set()
        # Commands whose last call may have applied them without an answer saying so: they are
        # verified with the lookup before being sent again (domain/reconcile.py).
        self._unsure: set[str] = set()
        # Input partitions owned per state partition number: the ledger of a number is kept
        # while any of them is.
        self._state_owners: dict[int, set[TopicPartition]] = {}

    # -- state ----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Commands and dead letters accepted and not yet acknowledged on their topic."""
        return self._batcher.pending_count + len(self._letters)

    @property
    def in_flight(self) -> int:
        """Commands handed out in batches and not yet published or requeued."""
        return self._batcher.in_flight_count

    @property
    def auth_refused(self) -> bool:
        """True while Capillary refuses the credentials; cleared by the next complete delivery."""
        return self._auth_refused

    def held(self, now: float) -> bool:
        """Whether sending waits for the API's pause to end."""
        return now < self._hold_until

    def pause_reason(self) -> PauseReason | None:
        """Why the partitions should be paused now, if they should."""
        if self._auth_refused:
            return PauseReason.AUTH
        if self._backpressure:
            return PauseReason.BACKPRESSURE
        return None

    # -- intake ---------------------------------------------------------------------------

    def accept(self, records: Iterable[InputRecord], now: float, received_at: datetime) -> Intake:
        """Decode, apply the rules, batch and track each record; never drops one."""
        intake = Intake()
        for record in records:
            self._accept_one(record, now, received_at, intake)
        self._update_backpressure()
        return intake

    def _accept_one(
        self, record: InputRecord, now: float, received_at: datetime, intake: Intake
    ) -> None:
        position = EventPosition(record.topic, record.partition, record.offset)
        try:
            event = decode_event(record.value or b"")
        except EventDecodeError as exc:
            self._refuse(record, position, str(exc), intake)
            return
        intake.consumed[(record.topic, event.type)] += 1
        if event.type not in self._rules.event_types:
            intake.unread[(record.topic, event.type)] += 1
            if self._config.dead_letter_unread:
                self._refuse(
                    record, position, f"no rule reads events of type {event.type!r}", intake
                )
                return
        customer = record.key.decode("utf-8", "backslashreplace") if record.key else ""
        commands, skipped, errors = self._rules.evaluate(event, position, customer).parts()
        if errors:
            intake.rule_errors.extend((rule, event.id, error) for rule, error in errors)
        if skipped:
            intake.skipped.extend(skipped)
        self._tracker.track(position, len(commands))
        for command in commands:
            command_id = command.command_id
            if self._batcher.add(command, now):
                self._accepted[command_id] = _Accepted(command, received_at)
                intake.accepted.append(command)
                continue
            intake.duplicates.append(command)
            if command_id in self._accepted:
                # The same command is still pending (maybe in flight from before a rebalance):
                # its outcome covers this copy, so this event completes only with it.
                self._followers.setdefault(command_id, []).append(position)
            else:
                # Completed recently: the outcome is already on the topic. Until this copy is
                # committed, a crash must find that outcome above the restore mark.
                self._tracker.command_done(position)
                outcome = self._outcome_offsets.get(command_id)
                if outcome is not None:
                    self._mark_at(position, *outcome)

    def _refuse(
        self, record: InputRecord, position: EventPosition, reason: str, intake: Intake
    ) -> None:
        """The record goes to the DLQ; its offset completes once the DLQ record is there."""
        self._tracker.track(position, 1)
        self._letter_seq += 1
        self._letters[self._letter_seq] = (record.topic, record.partition)
        size = len(record.value or b"") + len(record.key or b"")
        self._letter_bytes[self._letter_seq] = size
        self._held_bytes += size
        intake.refused.append(Refusal(record, reason, self._letter_seq))

    def dead_letter_published(self, refusal: Refusal) -> None:
        """The DLQ record of a refused record is acknowledged: its offset may move on."""
        self._held_bytes -= self._letter_bytes.pop(refusal.seq, 0)
        if self._letters.pop(refusal.seq) is not None:
            record = refusal.record
            self._tracker.command_done(EventPosition(record.topic, record.partition, record.offset))
        self._update_backpressure()

    # -- dispatch -------------------------------------------------------------------------

    def ready(self, now: float) -> list[Batch]:
        """Batches due now (full, or their window passed), oldest first, as calls are free.

        None while the API is held.
        """
        if self.held(now):
            return []
        limit = self._config.max_calls_in_flight
        batches = self._batcher.ready(now, None if limit is None else max(0, limit - self._calls))
        self._calls += len(batches)
        return [self._with_verify(batch) for batch in batches]

    def next_deadline(self, now: float) -> float | None:
        """When `ready` may next release a batch; None when nothing is waiting.

        Also None while every call is out: an answer frees one, and its delivery wakes the
        caller to ask again.
        """
        limit = self._config.max_calls_in_flight
        if limit is not None and self._calls >= limit:
            return None
        deadline = self._batcher.next_deadline()
        if deadline is not None and self.held(now):
            return max(deadline, self._hold_until)
        return deadline

    def drain(self, now: float, partitions: set[TopicPartition] | None = None) -> list[Batch]:
        """Every bucketed command of `partitions` (None: all), due or not; none while held.

        Commands behind an in-flight head stay in their lane: call again as results come in.
        """
        if self.held(now):
            return []
        if partitions is None:
            batches = self._batcher.flush_all(now)
        else:
            batches = self._batcher.flush_all(
                now, where=lambda c: (c.position.topic, c.position.partition) in partitions
            )
        self._calls += len(batches)
        return [self._with_verify(batch) for batch in batches]

    def _with_verify(self, batch: Batch) -> Batch:
        """What the ledger says of a released batch: orders to honour, commands to verify."""
        batch = self._with_orders(batch)
        if not self._unsure:
            return batch
        verify = {
            command.command_id: self._ledger.known_earned(command)
            for command in batch.commands
            if command.command_id in self._unsure
        }
        return dataclasses.replace(batch, verify=verify) if verify else batch

    def _with_orders(self, batch: Batch) -> Batch:
        """A return's revoke_earn carries its order's earnIds; a returned order earns nothing.

        A lane runs one command at a time, so what the ledger knows here includes every
        earlier command of the lane: a return read after its order revokes what it earned, one
        read before it marks the order returned, and the order's earn is then skipped.
        """
        skip: dict[str, str] = {}
        commands = list(batch.commands)
        for index, command in enumerate(commands):
            if command.order_id is None:
                continue
            if command.action is Action.EARN and self._ledger.order_returned(command):
                skip[command.command_id] = "order_returned"
            elif command.action in ORDER_REVOKES and not command.revoke_all:
                earns = self._ledger.order_earns(command)
                if earns is None:
                    if command.command_id not in self._unknown_orders:
                        self._unknown_orders.add(command.command_id)
                        self.unknown_order_returns += 1
                    if not self._config.unknown_order_revokes_all:
                        skip[command.command_id] = "order_unknown"
                elif not earns:
                    # Sent without earnIds it would revoke every earn of the promotion.
                    skip[command.command_id] = "nothing_earned"
                else:
                    ids = tuple(int(e) for e in earns if e.isdigit())
                    commands[index] = dataclasses.replace(command, earn_ids=ids)
        if not skip and commands == list(batch.commands):
            return batch
        return dataclasses.replace(batch, commands=tuple(commands), skip=skip)

    def intents(self, commands: Iterable[Command], now_ms: int) -> list[StateRecord]:
        """Record intents of commands about to be sent; the records to make durable first."""
        return self._ledger.intend(commands, now_ms)

    def incomplete(self, partitions: set[TopicPartition] | None = None) -> bool:
        """Whether `partitions` (None: anything) hold work without its outcome acknowledged."""
        if partitions is None:
            return self.pending > 0 or self._tracker.pending_count > 0
        return any(self._tracker.has_incomplete(tp) for tp in partitions)

    # -- results --------------------------------------------------------------------------

    def delivered(self, batch: Batch, delivery: Delivery, now: float) -> list[Completion]:
        """Take the sender's answer for a batch: settled results to publish, the rest requeued.

        Pending commands go back to their buckets and sending holds for the API's pause; the
        settled ones stay in flight (their lanes blocked) until `published`.
        """
        self._calls -= 1
        by_id = {command.command_id: command for command in batch.commands}
        self._unsure.difference_update(by_id)
        self._unsure.update(delivery.unsure & {command.command_id for command in delivery.pending})
        completions = []
        for answer in delivery.completed:
            # An in-flight command stays accepted until published, even if its partition went.
            accepted = self._accepted[answer.command_id]
            result = answer
            if accepted.attempts:
                result = dataclasses.replace(answer, attempts=answer.attempts + accepted.attempts)
            completions.append(Completion(by_id[answer.command_id], result, accepted.received_at))
        pending = delivery.pending
        if pending:
            for command in pending:
                self._accepted[command.command_id].attempts += delivery.attempts.get(
                    command.command_id, 0
                )
            if not (delivery.down or delivery.auth_refused):
                pending, exhausted = self._count_failure(pending, now)
                completions.extend(
                    self._exhausted(command, delivery.detail) for command in exhausted
                )
        if pending:
            self._batcher.requeue(pending)
            self._drop_unclaimed_orphans(pending)
            wait_s = max(self._config.unavailable_retry_s, delivery.pause_s or 0.0)
            self._hold_until = max(self._hold_until, now + wait_s)
        if delivery.auth_refused:
            self._auth_refused = True
        elif not delivery.pending:
            self._auth_refused = False
        return completions

    def settle(self, completions: Sequence[Completion], now_ms: int) -> list[StateRecord]:
        """Fold results into the holdings ledger; the state records to write with the outcomes."""
        return self._ledger.settle(((c.command, c.result) for c in completions), now_ms)

    @property
    def ledger_size(self) -> int:
        """Holdings kept in memory."""
        return len(self._ledger)

    def expire(self, now_ms: int, retention_ms: int) -> list[StateRecord]:
        """Drop holdings idle past the retention; the tombstones to write."""
        return self._ledger.expire(now_ms, retention_ms)

    def _count_failure(
        self, pending: Sequence[Command], now: float
    ) -> tuple[tuple[Command, ...], list[Command]]:
        """Count a failed send against each command's retry bound; split off the exhausted."""
        config = self._config
        kept: list[Command] = []
        exhausted: list[Command] = []
        for command in pending:
            accepted = self._accepted[command.command_id]
            accepted.failed_sends += 1
            if accepted.failing_since is None:
                accepted.failing_since = now
            over_sends = (
                config.retry_max_sends is not None
                and accepted.failed_sends >= config.retry_max_sends
            )
            failing_s = now - accepted.failing_since
            over_time = config.retry_max_s is not None and failing_s >= config.retry_max_s
            (exhausted if over_sends or over_time else kept).append(command)
        return tuple(kept), exhausted

    def _exhausted(self, command: Command, detail: str) -> Completion:
        accepted = self._accepted[command.command_id]
        self._unsure.discard(command.command_id)
        result = CommandResult(
            command_id=command.command_id,
            status=OutcomeStatus.FAILED,
            error_class=ErrorClass.RETRY_EXHAUSTED,
            error_message=f"gave up after {accepted.failed_sends} failed sends: {detail}",
            attempts=accepted.attempts,
        )
        return Completion(command, result, accepted.received_at)

    def published(
        self, completions: Sequence[Completion], outcome_offsets: Sequence[int] = ()
    ) -> None:
        """Outcome records are acknowledged: lanes move on and offsets complete.

        `outcome_offsets` (one per completion, where the sink tells them) are where the records
        landed in the outcomes partition of their event's partition number: the restore marks.
        """
        self._batcher.complete([completion.command for completion in completions])
        marks = zip(completions, outcome_offsets, strict=False) if outcome_offsets else ()
        for completion, outcome_offset in marks:
            self._mark(completion.command, outcome_offset)
        for completion in completions:
            command_id = completion.command.command_id
            self._accepted.pop(command_id, None)
            self._unknown_orders.discard(command_id)
            if command_id in self._orphans:
                # Its partition was let go while it was in flight; the offset it held may be
                # tracked again (re-assigned here), as a follower of this very command.
                self._orphans.discard(command_id)
            else:
                self._tracker.command_done(completion.command.position)
            for follower in self._followers.pop(command_id, ()):
                self._tracker.command_done(follower)
        self._update_backpressure()

    def _mark(self, command: Command, outcome_offset: int) -> None:
        outcome = (command.position.partition, outcome_offset)
        self._outcome_offsets.set(command.command_id, outcome)
        if command.command_id in self._orphans:
            return
        self._mark_at(command.position, *outcome)
        # A copy is re-read after a crash too, and its outcome is this one: it must stay above
        # the mark until the copy is committed.
        for follower in self._followers.get(command.command_id, ()):
            self._mark_at(follower, *outcome)

    def _mark_at(self, position: EventPosition, outcomes_partition: int, offset: int) -> None:
        # The outcomes partition read back for (T, p) is p: a copy on a partition of another
        # number cannot find the outcome there (it is sent again after a crash).
        if position.partition == outcomes_partition:
            self._marks.published((position.topic, position.partition), position.offset, offset)

    def restore(
        self,
        tp: TopicPartition,
        outcomes: Iterable[RestoredOutcome],
        outcomes_end: int,
        now_ms: int = 0,
    ) -> list[StateRecord]:
        """A partition is assigned: commands completed before (read back) are not sent again.

        Their outcomes stay above the restore mark until their events are committed here.
        Intents they left open in the ledger are closed: the state records to write.
        """
        self._marks.restored(tp, outcomes_end)
        self._state_owners.setdefault(tp[1], set()).add(tp)
        self._ledger.start_empty(tp[1])
        outcomes = list(outcomes)
        for outcome in outcomes:
            self._batcher.remember_completed([outcome.command_id])
            self._outcome_offsets.set(outcome.command_id, (tp[1], outcome.outcomes_offset))
            self._unsure.discard(outcome.command_id)
            if outcome.source == tp:
                self._marks.published(tp, outcome.source_offset, outcome.outcomes_offset)
        return self._ledger.settle_restored(tp[1], outcomes, now_ms)

    def state_loaded(self, partition: int) -> bool:
        """Whether the holdings of a state partition are in memory (read back or kept)."""
        return self._ledger.loaded(partition)

    def restore_state(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Load a state partition read back whole; its open intents become unsure commands.

        Call before `restore` of the input partitions with that number. Returns the holdings.
        """
        count = self._ledger.restore(partition, records)
        self._unsure.update(self._ledger.open_intents(partition))
        return count

    def restore_marks(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """For offsets about to be committed, the outcomes offset to store with each."""
        marks = {tp: self._marks.mark(tp, offset) for tp, offset in offsets.items()}
        return {tp: mark for tp, mark in marks.items() if mark is not None}

    @property
    def completed_uncommitted(self) -> int:
        """Outcomes published for events above the committed offsets (re-read after a crash)."""
        return self._marks.completed_uncommitted

    # -- offsets and partitions -----------------------------------------------------------

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets to commit now (the next offset to read per partition)."""
        return self._tracker.committable()

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Those offsets are stored by the group."""
        self._tracker.mark_committed(offsets)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop what is left of partitions this instance no longer owns."""
        partition_set = set(partitions)

        def owned_by_them(command: Command) -> bool:
            return (command.position.topic, command.position.partition) in partition_set

        for command in self._batcher.discard(owned_by_them):
            self._accepted.pop(command.command_id, None)
            # A requeued orphan may be discarded now: a later copy of it is a new command.
            self._orphans.discard(command.command_id)
            # The partition's new owner re-reads and sends the command; copies of it read
            # here from partitions this instance keeps need not wait for that.
            for follower in self._followers.pop(command.command_id, ()):
                self._tracker.command_done(follower)
        # Copies read from those partitions must not complete an offset tracked again later.
        for command_id, positions in list(self._followers.items()):
            kept = [p for p in positions if (p.topic, p.partition) not in partition_set]
            if kept:
                self._followers[command_id] = kept
            else:
                del self._followers[command_id]
        # What discard() left of those partitions is in flight: its result must not touch
        # the watermark of an offset that may be tracked again by then.
        self._orphans.update(
            command_id
            for command_id, accepted in self._accepted.items()
            if owned_by_them(accepted.command)
        )
        self._tracker.forget_partitions(partition_set)
        for tp in partition_set:
            self._marks.forget(tp)
            owners = self._state_owners.get(tp[1])
            if owners is not None:
                owners.discard(tp)
                if not owners:
                    # The numbers' other input partitions went too: the new owner reads the
                    # state back, and open intents are verified there.
                    del self._state_owners[tp[1]]
                    self._ledger.forget(tp[1])
        if self._unsure:
            open_intents = {cid for p in self._state_owners for cid in self._ledger.open_intents(p)}
            self._unsure = {
                command_id
                for command_id in self._unsure
                if command_id in self._accepted or command_id in open_intents
            }
        for seq, letter_tp in self._letters.items():
            if letter_tp in partition_set:
                self._letters[seq] = None
        self._update_backpressure()

    # -- internals ------------------------------------------------------------------------

    def _drop_unclaimed_orphans(self, pending: Iterable[Command]) -> None:
        """Pending commands of partitions let go are not resent unless a copy here waits.

        The partition's new owner re-reads and sends them; a copy read here since (the
        partition came back, or the same event sits on another partition) is a follower, and
        then this instance sends the command for it.
        """
        unclaimed = {
            command.command_id
            for command in pending
            if command.command_id in self._orphans and command.command_id not in self._followers
        }
        if not unclaimed:
            return
        self._batcher.discard(lambda command: command.command_id in unclaimed)
        for command_id in unclaimed:
            self._accepted.pop(command_id)
            self._orphans.discard(command_id)

    @property
    def pending_bytes(self) -> int:
        """Bytes of refused records held until their DLQ record is acknowledged."""
        return self._held_bytes

    def _update_backpressure(self) -> None:
        pending = self.pending
        held_bytes = self.pending_bytes
        max_bytes = self._config.max_pending_bytes
        if not self._backpressure and (
            pending >= self._config.max_pending or held_bytes >= max_bytes
        ):
            self._backpressure = True
        elif (
            self._backpressure
            and pending < self._config.resume_below
            and held_bytes < max_bytes // 2
        ):
            self._backpressure = False
