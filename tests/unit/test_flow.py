"""The flow core: records in, batches out, results back, offsets forward, with plain values."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from harness import order_placed
from kafka_tools import customer_key
from promo_bridge.domain.commands import Batch, Endpoint, EventPosition
from promo_bridge.domain.events import EventDecodeError, decode_event
from promo_bridge.domain.flow import (
    Completion,
    Flow,
    FlowConfig,
    InputRecord,
    PauseReason,
    Refusal,
)
from promo_bridge.domain.outcomes import CommandResult, Delivery, ErrorClass, OutcomeStatus
from promo_bridge.domain.restore import RestoredOutcome
from promo_bridge.domain.rules import RuleSet

TOPIC = "orders"
AT = datetime(2026, 11, 29, tzinfo=UTC)

# Two commands on one lane (enrol, then earn) for big orders, and one on another promotion.
RULES = """\
program_id: 2714
promotions:
  big: {promotion_id: 202779, type: ENROL_AND_ISSUE}
  direct: {promotion_id: 202780, type: DIRECT_ISSUE}
rules:
  - name: big-order
    on: order.placed
    when: "event.data.total.amount >= 5000.0"
    then: [{enrol: big}, {earn: big}]
  - name: coupon
    on: order.placed
    then: [{earn: direct}]
"""


def record(offset: int, event: dict[str, Any] | bytes, partition: int = 0) -> InputRecord:
    """A record keyed by customer, as producers are asked to key them."""
    if isinstance(event, bytes):
        return InputRecord(TOPIC, partition, offset, b"k", event)
    return InputRecord(TOPIC, partition, offset, customer_key(event), json.dumps(event).encode())


def applied(batch: Batch, commands: Iterable[Any] | None = None) -> Delivery:
    chosen = batch.commands if commands is None else commands
    return Delivery(
        completed=tuple(CommandResult(c.command_id, OutcomeStatus.APPLIED) for c in chosen)
    )


def make_flow(**config: Any) -> Flow:
    return Flow(RuleSet.from_yaml(RULES), FlowConfig(**config))


def run_to_end(flow: Flow, now: float) -> list[Batch]:
    """Send, answer `applied` and publish until nothing is left; the batches in order."""
    sent: list[Batch] = []
    while batches := flow.drain(now):
        for batch in batches:
            sent.append(batch)
            flow.published(flow.delivered(batch, applied(batch), now))
    return sent


# -- examples ----------------------------------------------------------------------------------


def test_a_lane_runs_in_event_order_and_the_watermark_follows_outcomes() -> None:
    """The earn waits for its enrol; the offset completes only when all three are published."""
    flow = make_flow(window_ms=0)
    intake = flow.accept([record(0, order_placed("1", 6000.0))], 0.0, AT)
    assert [c.action.value for c in intake.commands] == ["enrol", "earn", "earn"]
    first = flow.ready(0.0)
    assert sorted(b.key.endpoint for b in first) == [
        Endpoint.ENROL_AND_EARN,
        Endpoint.ENROL_AND_EARN,
    ]
    assert sorted(b.key.action.value for b in first) == ["earn", "enrol"]
    for batch in first:
        flow.published(flow.delivered(batch, applied(batch), 0.0))
    assert flow.committable() == {}
    (earn,) = flow.ready(0.0)
    assert earn.key.action.value == "earn"
    assert earn.commands[0].subject == "big"
    flow.published(flow.delivered(earn, applied(earn), 0.0))
    assert flow.committable() == {(TOPIC, 0): 1}
    assert flow.pending == 0


def test_results_are_not_complete_until_published() -> None:
    """A delivered result holds its offset and its lane until its outcome is acknowledged."""
    flow = make_flow(window_ms=0)
    flow.accept([record(0, order_placed("1", 10.0))], 0.0, AT)
    (batch,) = flow.ready(0.0)
    completions = flow.delivered(batch, applied(batch), 0.0)
    assert flow.committable() == {}
    assert flow.pending == 1
    flow.published(completions)
    assert flow.committable() == {(TOPIC, 0): 1}


def test_pending_commands_hold_the_api_and_carry_their_attempts() -> None:
    """An unavailable API holds sending for the longer pause; attempts add up across sends."""
    flow = make_flow(window_ms=0, unavailable_retry_s=1.0)
    flow.accept([record(0, order_placed("1", 10.0))], 0.0, AT)
    (batch,) = flow.ready(0.0)
    command = batch.commands[0]
    flow.delivered(
        batch, Delivery(pending=batch.commands, pause_s=3.0, attempts={command.command_id: 2}), 0.0
    )
    assert flow.ready(2.9) == []
    assert flow.drain(2.9) == []
    assert flow.next_deadline(2.9) == 3.0
    (again,) = flow.ready(3.0)
    result = CommandResult(command.command_id, OutcomeStatus.APPLIED, attempts=1)
    (completion,) = flow.delivered(again, Delivery(completed=(result,)), 3.0)
    assert completion.result.attempts == 3


def test_refused_credentials_pause_until_a_complete_delivery() -> None:
    """Auth refusal pauses the partitions; the next complete delivery resumes them."""
    flow = make_flow(window_ms=0, unavailable_retry_s=0.5)
    flow.accept([record(0, order_placed("1", 10.0))], 0.0, AT)
    (batch,) = flow.ready(0.0)
    flow.delivered(batch, Delivery(pending=batch.commands, auth_refused=True), 0.0)
    assert flow.pause_reason() is PauseReason.AUTH
    (batch,) = flow.ready(1.0)
    flow.published(flow.delivered(batch, applied(batch), 1.0))
    assert flow.pause_reason() is None


def test_backpressure_pauses_at_the_bound_and_resumes_below_the_low_water_mark() -> None:
    """Pending commands at max_pending pause; only falling below resume_below resumes."""
    flow = make_flow(window_ms=0, max_pending=3, resume_below=1)
    flow.accept([record(i, order_placed(str(i), 10.0)) for i in range(3)], 0.0, AT)
    assert flow.pause_reason() is PauseReason.BACKPRESSURE
    batches = flow.ready(0.0)
    (batch,) = batches
    flow.published(flow.delivered(batch, applied(batch, batch.commands[:2]), 0.0))
    assert flow.pending == 1
    assert flow.pause_reason() is PauseReason.BACKPRESSURE
    flow.published(flow.delivered(batch, applied(batch, batch.commands[2:]), 0.0))
    assert flow.pause_reason() is None


def test_a_redelivered_copy_completes_with_the_original() -> None:
    """A copy of a pending command is not sent again and its offset waits for the original."""
    flow = make_flow(window_ms=0)
    event = order_placed("1", 10.0)
    flow.accept([record(0, event)], 0.0, AT)
    intake = flow.accept([record(1, event)], 0.0, AT)
    assert len(intake.duplicates) == 1
    (batch,) = flow.ready(0.0)
    assert len(batch) == 1
    assert flow.committable() == {}
    flow.published(flow.delivered(batch, applied(batch), 0.0))
    assert flow.committable() == {(TOPIC, 0): 2}


def test_a_dead_letter_of_a_partition_let_go_does_not_complete_its_re_read() -> None:
    """After a re-assignment, only the re-read record's own DLQ record completes its offset."""
    flow = make_flow(window_ms=0)
    (old,) = flow.accept([record(0, b"{oops")], 0.0, AT).refused
    flow.forget([(TOPIC, 0)])
    (new,) = flow.accept([record(0, b"{oops")], 0.0, AT).refused
    flow.dead_letter_published(old)
    assert flow.committable() == {}
    assert flow.pending == 1
    flow.dead_letter_published(new)
    assert flow.committable() == {(TOPIC, 0): 1}
    assert flow.pending == 0


def test_when_calls_are_scarce_a_lane_next_command_goes_before_later_events() -> None:
    """One call at a time: the earn of the first order goes before the second order's enrol."""
    flow = make_flow(window_ms=0, max_calls_in_flight=1)
    flow.accept([record(0, order_placed("1", 6000.0))], 0.0, AT)
    sent = []

    def send_one(now: float) -> None:
        (batch,) = flow.ready(now)
        # The only call is out: nothing else is released, and nothing is due until it returns.
        assert flow.ready(now) == []
        assert flow.next_deadline(now) is None
        sent.append(
            (
                batch.key.action.value,
                batch.commands[0].subject,
                [c.identifier_value for c in batch.commands],
            )
        )
        flow.published(flow.delivered(batch, applied(batch), now))

    send_one(0.0)
    flow.accept([record(1, order_placed("2", 6000.0))], 1.0, AT)
    for _ in range(4):
        send_one(1.0)
    assert sent == [
        ("enrol", "big", ["1"]),
        ("earn", "big", ["1"]),
        ("earn", "direct", ["1", "2"]),
        ("enrol", "big", ["2"]),
        ("earn", "big", ["2"]),
    ]
    assert flow.committable() == {(TOPIC, 0): 2}


def test_a_command_the_api_keeps_failing_fails_after_the_retry_bound() -> None:
    """Sends without a result count (not while merely down); at the bound: retry_exhausted."""
    flow = make_flow(window_ms=0, unavailable_retry_s=0.0, retry_max_sends=2)
    flow.accept([record(0, order_placed("1", 10.0))], 0.0, AT)
    (batch,) = flow.ready(0.0)
    (command,) = batch.commands
    down = Delivery(pending=batch.commands, down=True, detail="connect_error")
    assert flow.delivered(batch, down, 0.0) == []
    (batch,) = flow.ready(1.0)
    failing = Delivery(pending=batch.commands, detail="retryable code 8896")
    assert flow.delivered(batch, failing, 1.0) == []
    (batch,) = flow.ready(2.0)
    (completion,) = flow.delivered(batch, failing, 2.0)
    assert completion.command == command
    assert completion.result.status is OutcomeStatus.FAILED
    assert completion.result.error_class is ErrorClass.RETRY_EXHAUSTED
    assert "8896" in (completion.result.error_message or "")


def test_the_retry_bound_in_time_counts_from_the_first_failed_send() -> None:
    """A command failing for longer than retry_max_s fails at its next failed send."""
    flow = make_flow(window_ms=0, unavailable_retry_s=0.0, retry_max_s=60.0)
    flow.accept([record(0, order_placed("1", 10.0))], 0.0, AT)
    (batch,) = flow.ready(0.0)
    assert flow.delivered(batch, Delivery(pending=batch.commands), 0.0) == []
    (batch,) = flow.ready(30.0)
    assert flow.delivered(batch, Delivery(pending=batch.commands), 30.0) == []
    (batch,) = flow.ready(61.0)
    (completion,) = flow.delivered(batch, Delivery(pending=batch.commands), 61.0)
    assert completion.result.error_class is ErrorClass.RETRY_EXHAUSTED


def _unread_event() -> dict[str, Any]:
    event = order_placed("1", 10.0)
    event["type"] = "cart.abandoned"
    return event


def test_events_no_rule_reads_are_counted_and_passed_over_by_default() -> None:
    """An event of a type no rule reads is counted as unread; its offset completes at once."""
    flow = make_flow()
    intake = flow.accept([record(0, _unread_event())], 0.0, AT)
    assert intake.unread == {(TOPIC, "cart.abandoned"): 1}
    assert intake.refused == []
    assert flow.committable() == {(TOPIC, 0): 1}


def test_events_no_rule_reads_go_to_the_dlq_when_asked() -> None:
    """With dead_letter_unread, such an event is refused with a reason naming its type."""
    flow = make_flow(dead_letter_unread=True)
    intake = flow.accept([record(0, _unread_event())], 0.0, AT)
    (refusal,) = intake.refused
    assert "cart.abandoned" in refusal.reason
    assert flow.committable() == {}
    flow.dead_letter_published(refusal)
    assert flow.committable() == {(TOPIC, 0): 1}


def test_config_refuses_a_low_water_mark_at_the_bound() -> None:
    """resume_below must lie below max_pending."""
    with pytest.raises(ValueError, match="resume_below"):
        FlowConfig(max_pending=10, resume_below=10)


# -- the state machine -------------------------------------------------------------------------

PARTITIONS = (0, 1)
CUSTOMERS = ("1", "2", "3")
MAX_PENDING = 8
RESUME_BELOW = 4
FETCH_MAX = 3


class FlowMachine(RuleBasedStateMachine):
    """Kafka logs, a consumer, an API and a producer around one Flow, interleaved at random.

    The model keeps the truth: what each log holds, which command_ids have their outcome
    published, which DLQ records are acknowledged. Rebalances (revoke, forget, re-read from
    the committed offset), redelivered events, requeues, auth refusals, crashes and drains
    interleave with sends and publishes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flow = self._new_flow()
        # The outcomes topic, co-partitioned: command_ids by outcomes offset, and the restore
        # marks stored with the committed offsets (the commit metadata).
        self.outcomes: dict[int, list[RestoredOutcome]] = {p: [] for p in PARTITIONS}
        self.marks: dict[int, int] = {}
        self.crashes = 0
        # Published commands a crash made unknown (see `crash`).
        self.forgotten: set[str] = set()
        self.rules = RuleSet.from_yaml(RULES)
        self.now = 0.0
        self.logs: dict[int, list[bytes]] = {p: [] for p in PARTITIONS}
        self.position = dict.fromkeys(PARTITIONS, 0)
        self.committed = dict.fromkeys(PARTITIONS, 0)
        self.assigned = set(PARTITIONS)
        self.in_flight: list[Batch] = []
        self.unpublished: list[list[Completion]] = []
        self.letters: list[Refusal] = []
        self.flying: set[str] = set()
        self.published: set[str] = set()
        self.letters_published: set[tuple[int, int]] = set()
        self.events = 0
        for partition in PARTITIONS:
            self._restore(partition)

    # -- the outside world ------------------------------------------------------------------

    @rule(
        partition=st.sampled_from(PARTITIONS),
        customer=st.sampled_from(CUSTOMERS),
        big=st.booleans(),
        kind=st.sampled_from(["new", "new", "new", "copy", "poison"]),
    )
    def produce(self, partition: int, customer: str, big: bool, kind: str) -> None:
        log = self.logs[partition]
        if kind == "poison":
            log.append(b'{"specversion": "1.0", "id": "broken"')
            return
        if kind == "copy" and log:
            # A redelivered event: the same bytes (same id) again, later in the log.
            log.append(log[-1])
            return
        self.events += 1
        event = order_placed(customer, 6000.0 if big else 10.0, event_id=f"e{self.events}")
        log.append(json.dumps(event).encode())

    @precondition(lambda self: self.flow.pause_reason() is None)
    @rule(partition=st.sampled_from(PARTITIONS), n=st.integers(1, FETCH_MAX))
    def fetch(self, partition: int, n: int) -> None:
        if partition not in self.assigned:
            return
        start = self.position[partition]
        values = self.logs[partition][start : start + n]
        records = [record(start + i, v, partition) for i, v in enumerate(values)]
        self.position[partition] = start + len(values)
        intake = self.flow.accept(records, self.now, AT)
        self.letters.extend(intake.refused)

    @rule(dt=st.sampled_from([0.0, 0.05, 0.1, 0.6]))
    def tick(self, dt: float) -> None:
        self.now += dt
        self._hand_out(self.flow.ready(self.now))

    @rule(partition=st.one_of(st.none(), st.sampled_from(PARTITIONS)))
    def drain(self, partition: int | None) -> None:
        self._hand_out(
            self.flow.drain(self.now, None if partition is None else {self._tp(partition)})
        )

    @precondition(lambda self: bool(self.in_flight))
    @rule(
        data=st.data(),
        answer=st.sampled_from(["applied", "applied", "partial", "unavailable", "auth", "crash"]),
    )
    def deliver(self, data: st.DataObject, answer: str) -> None:
        batch = self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))
        commands = batch.commands
        split = data.draw(st.integers(0, len(commands)))
        if answer == "applied":
            delivery = applied(batch)
        elif answer == "partial":
            delivery = Delivery(
                completed=applied(batch, commands[:split]).completed,
                pending=commands[split:],
                attempts={c.command_id: 1 for c in commands[split:]},
            )
        elif answer == "unavailable":
            delivery = Delivery(
                pending=commands,
                pause_s=data.draw(st.sampled_from([None, 1.0])),
                down=data.draw(st.booleans()),
            )
        elif answer == "auth":
            delivery = Delivery(pending=commands, auth_refused=True)
        else:
            delivery = Delivery.unsent(batch, "crashed")
        completions = self.flow.delivered(batch, delivery, self.now)
        done = {c.command.command_id for c in completions}
        answered = {r.command_id for r in delivery.completed}
        # Beyond the answered ones, only commands past their retry bound complete, as failed.
        assert answered <= done
        for completion in completions:
            if completion.command.command_id not in answered:
                assert completion.result.error_class is ErrorClass.RETRY_EXHAUSTED
                assert not delivery.down
                assert not delivery.auth_refused
        # No double send: a command has one final result, ever.
        assert not done & self._settled
        self.flying -= {c.command_id for c in commands}
        if completions:
            self.unpublished.append(completions)
        if delivery.auth_refused:
            assert self.flow.pause_reason() is PauseReason.AUTH
        elif delivery.complete:
            assert not self.flow.auth_refused

    @precondition(lambda self: bool(self.unpublished))
    @rule(data=st.data())
    def publish(self, data: st.DataObject) -> None:
        self._publish(self.unpublished.pop(data.draw(st.integers(0, len(self.unpublished) - 1))))

    @precondition(lambda self: bool(self.letters))
    @rule(data=st.data())
    def publish_dead_letter(self, data: st.DataObject) -> None:
        refusal = self.letters.pop(data.draw(st.integers(0, len(self.letters) - 1)))
        self.letters_published.add((refusal.record.partition, refusal.record.offset))
        self.flow.dead_letter_published(refusal)

    @rule()
    def commit(self) -> None:
        offsets = self.flow.committable()
        marks = self.flow.restore_marks(offsets)
        for (_, partition), offset in offsets.items():
            assert partition in self.assigned
            self.committed[partition] = max(self.committed[partition], offset)
            if (TOPIC, partition) in marks:
                self.marks[partition] = marks[(TOPIC, partition)]
        self.flow.committed(offsets)

    @precondition(lambda self: bool(self.assigned))
    @rule(data=st.data(), try_drain=st.booleans())
    def revoke(self, data: st.DataObject, try_drain: bool) -> None:
        partition = data.draw(st.sampled_from(sorted(self.assigned)))
        tp = self._tp(partition)
        if try_drain:
            # The drain's batches go out; it gives up before their answers come back.
            self._hand_out(self.flow.drain(self.now, {tp}))
        self.commit()
        self.flow.forget([tp])
        self.assigned.discard(partition)

    @rule(partition=st.sampled_from(PARTITIONS))
    def assign(self, partition: int) -> None:
        if partition in self.assigned:
            return
        self.assigned.add(partition)
        self._restore(partition)

    @rule()
    def crash(self) -> None:
        """SIGKILL: every bit of memory is gone; a new process is assigned every partition.

        What is read back is the outcomes from the restore mark stored with the last commit: a
        copy of an event committed before the crash is recognised only if its outcome lies
        there (the documented limit of the read-back) and may be sent once more otherwise,
        also when the copy was read before the crash but after that commit.
        """
        self.crashes += 1
        self.forgotten = {
            command_id
            for partition, log in self.logs.items()
            for offset in range(min(self.committed[partition], len(log)))
            for command_id in self._command_ids(partition, offset) or ()
        } - self._read_back_command_ids()
        self.flow = self._new_flow()
        self.in_flight.clear()
        self.unpublished.clear()
        self.letters.clear()
        self.flying.clear()
        self.assigned = set(PARTITIONS)
        for partition in PARTITIONS:
            self._restore(partition)

    def _read_back_command_ids(self) -> set[str]:
        # The outcomes the next process reads back: from each partition's stored mark on.
        return {
            outcome.command_id
            for partition in PARTITIONS
            for outcome in self.outcomes[partition][self.marks.get(partition, 0) :]
        }

    def _restore(self, partition: int) -> None:
        """What the consumer does on assignment: read back from the mark, then read on."""
        end = len(self.outcomes[partition])
        mark = self.marks.get(partition)
        if mark is None:
            # No mark yet: one is committed now, at the end of the outcomes partition.
            self.marks[partition] = mark = end
        completed = self.outcomes[partition][mark:]
        self.flow.restore(self._tp(partition), completed, end)
        # The new owner reads on from the group's committed offset.
        self.position[partition] = self.committed[partition]

    def _new_flow(self) -> Flow:
        return make_flow(
            window_ms=100,
            unavailable_retry_s=0.5,
            max_pending=MAX_PENDING,
            resume_below=RESUME_BELOW,
            max_calls_in_flight=2,
            # Small, so that exhausted retries interleave with everything else.
            retry_max_sends=3,
            retry_max_s=5.0,
        )

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def watermark_never_passes_an_incomplete_offset(self) -> None:
        for (_, partition), offset in self.flow.committable().items():
            for at in range(offset):
                assert self._done(partition, at), f"offset {at} of p{partition} committable"
        for partition, offset in self.committed.items():
            assert all(self._done(partition, at) for at in range(offset))

    @invariant()
    def pending_is_bounded_and_counted(self) -> None:
        assert 0 <= self.flow.pending < MAX_PENDING + 3 * FETCH_MAX
        assert self.flow.in_flight >= len(self.flying)

    # -- end: nothing lost ------------------------------------------------------------------

    def teardown(self) -> None:
        for partition in PARTITIONS:
            self.assign(partition)
        for _ in range(200):
            self.now += 1.0
            for partition in PARTITIONS:
                self.fetch(partition, len(self.logs[partition]))
            while self.in_flight:
                batch = self.in_flight.pop()
                completions = self.flow.delivered(batch, applied(batch), self.now)
                self.flying -= {c.command_id for c in batch.commands}
                self.unpublished.append(completions)
            while self.unpublished:
                self._publish(self.unpublished.pop(0))
            while self.letters:
                self.publish_dead_letter_first()
            self._hand_out(self.flow.drain(self.now))
            if not self.flow.incomplete() and not self.in_flight:
                break
        self.commit()
        assert self.flow.pending == 0
        for partition, log in self.logs.items():
            assert self.committed[partition] == len(log), f"p{partition} not at its end"
            assert all(self._done(partition, at) for at in range(len(log)))

    def _publish(self, completions: list[Completion]) -> None:
        ids = {c.command.command_id for c in completions}
        # No second outcome record for a command, across crashes and rebalances too.
        assert not ids & self._settled
        self.forgotten -= ids
        self.published |= ids
        offsets = []
        for completion in completions:
            position = completion.command.position
            log = self.outcomes[position.partition]
            offsets.append(len(log))
            log.append(
                RestoredOutcome(
                    completion.command.command_id,
                    (position.topic, position.partition),
                    position.offset,
                    len(log),
                )
            )
        self.flow.published(completions, offsets)

    def publish_dead_letter_first(self) -> None:
        refusal = self.letters.pop(0)
        self.letters_published.add((refusal.record.partition, refusal.record.offset))
        self.flow.dead_letter_published(refusal)

    # -- helpers ----------------------------------------------------------------------------

    def _tp(self, partition: int) -> tuple[str, int]:
        return (TOPIC, partition)

    def _hand_out(self, batches: list[Batch]) -> None:
        for batch in batches:
            ids = {c.command_id for c in batch.commands}
            # Never two copies of a command out at once, never one already settled.
            assert not ids & self.flying
            assert not ids & self._settled
            self.flying |= ids
            self.in_flight.append(batch)

    def _done(self, partition: int, offset: int) -> bool:
        commands = self._command_ids(partition, offset)
        if commands is None:
            return (partition, offset) in self.letters_published
        return all(command_id in self.published for command_id in commands)

    def _command_ids(self, partition: int, offset: int) -> list[str] | None:
        """The command_ids of the event at a position; None for a record that does not decode."""
        value = self.logs[partition][offset]
        try:
            event = decode_event(value)
        except EventDecodeError:
            return None
        position = EventPosition(TOPIC, partition, offset)
        return [c.command_id for c in self.rules.evaluate(event, position).commands]

    @property
    def _settled(self) -> set[str]:
        """Commands that must never be sent or published again."""
        return self.published - self.forgotten


FlowMachine.TestCase.settings = settings(max_examples=600, stateful_step_count=120, deadline=None)
TestFlowProperties = FlowMachine.TestCase
