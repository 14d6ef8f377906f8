"""The micro-batcher: size and window flushes, per-lane order, dedupe, requeue, and properties."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from promo_bridge.domain.batcher import MicroBatcher
from promo_bridge.domain.commands import (
    Action,
    Batch,
    Command,
    Endpoint,
    EventPosition,
    IdentifierName,
    PromotionRef,
    TargetRef,
)

PROMOTIONS = {"p1": PromotionRef(2714, promotion_id=1), "p2": PromotionRef(2714, promotion_id=2)}
TARGET = TargetRef(12, 34)
_ids = itertools.count()


def cmd(
    customer: str = "c1",
    subject: str = "p1",
    action: Action = Action.EARN,
    *,
    command_id: str | None = None,
    partition: int = 0,
    identifier: IdentifierName = IdentifierName.ID,
) -> Command:
    number = next(_ids)
    unenroll = action is Action.UNENROLL
    return Command(
        command_id=command_id or f"cmd-{number}",
        event_id=f"evt-{number}",
        position=EventPosition("orders", partition, number),
        rule="r",
        action=action,
        subject="milestone" if unenroll else subject,
        identifier_name=identifier,
        identifier_value=customer,
        source="INSTORE",
        promotion=None if unenroll else PROMOTIONS[subject],
        target=TARGET if unenroll else None,
    )


def counter_ids() -> MicroBatcher:
    counter = itertools.count(1)
    return MicroBatcher(window_ms=200, id_factory=lambda: f"b{next(counter)}")


def test_window_flush_after_oldest_waited() -> None:
    """A bucket below its size limit flushes once its oldest command has waited the window."""
    batcher = counter_ids()
    first, second = cmd("c1"), cmd("c2")
    assert batcher.add(first, 10.0)
    assert batcher.add(second, 10.1)
    assert batcher.ready(10.199) == []
    assert batcher.next_deadline() == pytest.approx(10.2)
    (batch,) = batcher.ready(10.2)
    assert batch.commands == (first, second)
    assert batch.reason == "window"
    assert batch.batch_id == "b1"
    assert batch.key == first.batch_key
    assert batcher.next_deadline() is None


def test_size_flush_at_endpoint_limit() -> None:
    """A bucket that reaches its endpoint's limit is due at once, in batches of the limit."""
    batcher = MicroBatcher(limits={Endpoint.ENROL_AND_EARN: 3}, window_ms=1000)
    commands = [cmd(f"c{n}") for n in range(7)]
    for command in commands:
        batcher.add(command, 0.0)
    assert batcher.next_deadline() == 0.0
    batches = batcher.ready(0.0)
    assert [(len(b), b.reason) for b in batches] == [(3, "size"), (3, "size")]
    assert batcher.ready(0.5) == []
    (rest,) = batcher.ready(1.0)
    assert rest.commands == (commands[6],)


def test_limits_default_per_endpoint() -> None:
    """Unnamed endpoints keep the default limits: unEnroll sends one record per call."""
    batcher = MicroBatcher(limits={Endpoint.REVOKE_DIRECT_EARN: 5})
    assert batcher.limit(Endpoint.REVOKE_DIRECT_EARN) == 5
    assert batcher.limit(Endpoint.UNENROLL) == 1
    assert batcher.limit(Endpoint.ENROL_AND_EARN) == 100
    batcher.add(cmd("c1", action=Action.UNENROLL), 0.0)
    batcher.add(cmd("c2", action=Action.UNENROLL), 0.0)
    assert [len(b) for b in batcher.ready(0.0)] == [1, 1]


def test_bad_configuration_is_refused() -> None:
    """A limit below 1 or a negative window is a configuration error."""
    with pytest.raises(ValueError, match="at least 1"):
        MicroBatcher(limits={Endpoint.UNENROLL: 0})
    with pytest.raises(ValueError, match="negative"):
        MicroBatcher(window_ms=-1)


def test_different_batch_keys_go_to_different_batches() -> None:
    """Promotion, action and identifier name each separate buckets."""
    batcher = MicroBatcher(window_ms=0)
    batcher.add(cmd("c1", "p1"), 0.0)
    batcher.add(cmd("c2", "p2"), 0.0)
    batcher.add(cmd("c3", "p1", Action.ENROL), 0.0)
    batcher.add(cmd("c4", "p1", identifier=IdentifierName.MOBILE), 0.0)
    assert len(batcher.ready(0.0)) == 4


def test_lane_next_waits_for_head_then_keeps_its_enqueue_time() -> None:
    """The second command of a lane is held until the first completes, then is due at once."""
    batcher = MicroBatcher(window_ms=200)
    enrol = cmd("c1", action=Action.ENROL)
    earn = cmd("c1", action=Action.EARN)
    batcher.add(enrol, 0.0)
    batcher.add(earn, 0.05)
    (first,) = batcher.ready(0.2)
    assert first.commands == (enrol,)
    assert batcher.ready(5.0) == []  # the earn must not overtake its enrol
    assert batcher.pending_count == 2
    batcher.complete(first)
    assert batcher.next_deadline() == pytest.approx(0.25)
    (second,) = batcher.ready(5.0)
    assert second.commands == (earn,)


def test_one_customer_appears_once_per_batch() -> None:
    """Two commands of one lane never share a batch, even when both are the same action."""
    batcher = MicroBatcher(window_ms=0)
    batcher.add(cmd("c1"), 0.0)
    batcher.add(cmd("c1"), 0.0)
    batcher.add(cmd("c2"), 0.0)
    (batch,) = batcher.ready(0.0)
    assert [c.identifier_value for c in batch.commands] == ["c1", "c2"]


def test_redelivered_command_is_accepted_once() -> None:
    """The same command_id is refused while pending, and after it completed."""
    batcher = MicroBatcher(window_ms=0)
    original = cmd("c1", command_id="same")
    assert batcher.add(original, 0.0)
    assert not batcher.add(cmd("c1", command_id="same"), 0.1)
    (batch,) = batcher.ready(0.1)
    assert not batcher.add(original, 0.2)  # in flight
    batcher.complete(batch)
    assert not batcher.add(original, 0.3)  # recently completed
    assert batcher.duplicates == 3
    assert batcher.pending_count == 0


def test_completed_memory_is_bounded() -> None:
    """Only the last `completed_memory` completions are remembered for dedupe."""
    batcher = MicroBatcher(window_ms=0, completed_memory=1)
    first, second = cmd("c1", command_id="a"), cmd("c2", command_id="b")
    for command in (first, second):
        batcher.add(command, 0.0)
    for batch in batcher.ready(0.0):
        batcher.complete(batch)
    assert batcher.add(first, 1.0)  # forgotten
    assert not batcher.add(second, 1.0)


def test_requeue_puts_commands_back_first_and_keeps_lane_order() -> None:
    """Requeued commands go back ahead of newer ones and stay heads of their lanes."""
    batcher = MicroBatcher(limits={Endpoint.ENROL_AND_EARN: 2}, window_ms=100)
    old1, old2 = cmd("c1"), cmd("c2")
    behind = cmd("c1")
    batcher.add(old1, 0.0)
    batcher.add(old2, 0.0)
    batcher.add(behind, 0.01)
    (batch,) = batcher.ready(0.0)
    newer = cmd("c3")
    batcher.add(newer, 0.5)
    batcher.requeue(batch)
    assert batcher.in_flight_count == 0
    (again,) = batcher.ready(0.5)
    assert again.commands == (old1, old2)
    assert again.batch_id != batch.batch_id
    batcher.complete(again)
    (last,) = batcher.ready(0.6)
    assert last.commands == (behind, newer)


def test_complete_and_requeue_refuse_commands_not_in_flight() -> None:
    """Completing or requeuing a command that is not in flight raises and changes nothing."""
    batcher = MicroBatcher(window_ms=0)
    sent, waiting = cmd("c1"), cmd("c2")
    batcher.add(sent, 0.0)
    (batch,) = batcher.ready(0.0)
    batcher.add(waiting, 0.0)
    with pytest.raises(ValueError, match="not in flight"):
        batcher.complete([sent, waiting])
    assert batcher.in_flight_count == 1
    with pytest.raises(ValueError, match="not in flight"):
        batcher.requeue([sent, sent])
    batcher.complete(batch)
    assert batcher.pending_count == 1


def test_partial_completion_of_a_batch() -> None:
    """Completing some commands of a batch leaves the others in flight."""
    batcher = MicroBatcher(window_ms=0)
    a, b = cmd("c1"), cmd("c2")
    batcher.add(a, 0.0)
    batcher.add(b, 0.0)
    assert len(batcher.ready(0.0)) == 1
    batcher.complete([a])
    assert batcher.in_flight_count == 1
    batcher.requeue([b])
    (again,) = batcher.ready(0.0)
    assert again.commands == (b,)


def test_flush_all_ignores_the_window_and_filters() -> None:
    """flush_all releases bucketed commands at once, optionally only those matching."""
    batcher = MicroBatcher(window_ms=1000)
    keep, go = cmd("c1", partition=0), cmd("c2", partition=1)
    batcher.add(keep, 0.0)
    batcher.add(go, 0.0)
    (flushed,) = batcher.flush_all(0.1, where=lambda c: c.position.partition == 1)
    assert flushed.commands == (go,)
    assert flushed.reason == "flush"
    (late,) = batcher.flush_all(1.5)
    assert late.commands == (keep,)
    assert late.reason == "window"
    assert batcher.flush_all(2.0) == []


def test_flush_all_leaves_lane_followers_until_head_completes() -> None:
    """Commands behind an in-flight head are not flushed; they follow once it completes."""
    batcher = MicroBatcher(window_ms=1000)
    head, follower = cmd("c1"), cmd("c1")
    batcher.add(head, 0.0)
    batcher.add(follower, 0.0)
    (first,) = batcher.flush_all(0.0)
    assert batcher.flush_all(0.0) == []
    batcher.complete(first)
    (second,) = batcher.flush_all(0.0)
    assert second.commands == (follower,)


def test_discard_drops_held_commands_but_not_in_flight_ones() -> None:
    """discard removes bucketed and waiting commands of lost partitions; in flight stays."""
    batcher = MicroBatcher(window_ms=0)
    flying = cmd("c1", partition=1)
    batcher.add(flying, 0.0)
    (batch,) = batcher.ready(0.0)
    waiting = cmd("c1", partition=1)
    other_lane_behind = cmd("c1", partition=0)
    bucketed = cmd("c2", partition=1)
    for command in (waiting, other_lane_behind, bucketed):
        batcher.add(command, 0.0)
    dropped = batcher.discard(lambda c: c.position.partition == 1)
    assert set(dropped) == {waiting, bucketed}
    assert batcher.pending_count == 2
    batcher.complete(batch)
    (next_batch,) = batcher.ready(0.0)
    assert next_batch.commands == (other_lane_behind,)
    assert batcher.add(waiting, 1.0)  # never sent, so a redelivery is welcome


def test_discarding_a_bucketed_head_promotes_the_next() -> None:
    """When a bucketed lane head is discarded, the lane's next command enters its bucket."""
    batcher = MicroBatcher(window_ms=0)
    head, follower = cmd("c1", partition=1), cmd("c1", partition=0)
    batcher.add(head, 0.0)
    batcher.add(follower, 0.0)
    assert batcher.discard(lambda c: c.position.partition == 1) == [head]
    (batch,) = batcher.ready(0.0)
    assert batch.commands == (follower,)


def test_counters() -> None:
    """pending_count counts bucketed, waiting and in-flight commands."""
    batcher = MicroBatcher(window_ms=0)
    batcher.add(cmd("c1"), 0.0)
    batcher.add(cmd("c1"), 0.0)
    batcher.add(cmd("c2", partition=3), 0.0)
    assert (batcher.pending_count, batcher.bucketed_count, batcher.in_flight_count) == (3, 2, 0)
    batcher.ready(0.0)
    assert (batcher.pending_count, batcher.bucketed_count, batcher.in_flight_count) == (3, 0, 2)
    assert batcher.count_pending(lambda c: c.position.partition == 3) == 1


# -- properties ------------------------------------------------------------------------------

LIMITS = {
    Endpoint.ENROL_AND_EARN: 3,
    Endpoint.REVOKE_ENROL_AND_EARN: 2,
    Endpoint.REVOKE_DIRECT_EARN: 2,
    Endpoint.UNENROLL: 1,
}
ACTIONS = [Action.ENROL, Action.EARN, Action.REVOKE_EARN, Action.UNENROLL]


class BatcherMachine(RuleBasedStateMachine):
    """Random adds, duplicates, releases, flushes, completions and requeues against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.batcher = MicroBatcher(limits=LIMITS, window_ms=100)
        self.now = 0.0
        self.added: list[Command] = []  # unique commands, in add order
        self.lanes: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        self.completed: list[str] = []
        self.in_flight: dict[str, Command] = {}
        self.batches: list[Batch] = []

    @rule(
        customer=st.sampled_from(["c1", "c2", "c3", "c4"]),
        subject=st.sampled_from(["p1", "p2"]),
        action=st.sampled_from(ACTIONS),
        partition=st.integers(0, 2),
        dt=st.floats(0, 0.2),
    )
    def add(self, customer: str, subject: str, action: Action, partition: int, dt: float) -> None:
        self.now += dt
        command = cmd(customer, subject, action, partition=partition)
        assert self.batcher.add(command, self.now)
        self.added.append(command)
        self.lanes[command.lane_key].append(command.command_id)

    @precondition(lambda self: bool(self.added))
    @rule(data=st.data())
    def add_duplicate(self, data: st.DataObject) -> None:
        original = data.draw(st.sampled_from(self.added))
        assert not self.batcher.add(original, self.now)

    @rule(dt=st.floats(0, 0.3))
    def ready(self, dt: float) -> None:
        self.now += dt
        deadline = self.batcher.next_deadline()
        batches = self.batcher.ready(self.now)
        if deadline is not None and self.now >= deadline:
            assert batches, "a due deadline must release a batch"
        self._sent(batches)

    @rule(partition=st.one_of(st.none(), st.integers(0, 2)))
    def flush_all(self, partition: int | None) -> None:
        def where(command: Command) -> bool:
            return partition is None or command.position.partition == partition

        self._sent(self.batcher.flush_all(self.now, where=where if partition is not None else None))

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data(), partial=st.booleans())
    def complete(self, data: st.DataObject, partial: bool) -> None:
        batch = data.draw(st.sampled_from(self._open_batches()))
        commands = [c for c in batch.commands if c.command_id in self.in_flight]
        if partial and len(commands) > 1:
            commands = commands[: len(commands) // 2]
        self.batcher.complete(commands)
        for command in commands:
            del self.in_flight[command.command_id]
            self.completed.append(command.command_id)

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        batch = data.draw(st.sampled_from(self._open_batches()))
        commands = [c for c in batch.commands if c.command_id in self.in_flight]
        self.batcher.requeue(commands)
        for command in commands:
            del self.in_flight[command.command_id]

    def _open_batches(self) -> list[Batch]:
        return [b for b in self.batches if any(c.command_id in self.in_flight for c in b.commands)]

    def _sent(self, batches: list[Batch]) -> None:
        done = set(self.completed)
        for batch in batches:
            assert 1 <= len(batch) <= LIMITS[batch.key.endpoint]
            lanes = [c.lane_key for c in batch.commands]
            assert len(set(lanes)) == len(lanes), "two commands of one lane in a batch"
            for command in batch.commands:
                assert command.batch_key == batch.key
                assert command.command_id not in self.in_flight, "sent twice at once"
                assert command.command_id not in done, "sent after completion"
                lane = self.lanes[command.lane_key]
                earlier = lane[: lane.index(command.command_id)]
                assert all(e in done for e in earlier), "overtook an earlier lane command"
                self.in_flight[command.command_id] = command
            self.batches.append(batch)

    @invariant()
    def counts_match_the_model(self) -> None:
        assert self.batcher.pending_count == len(self.added) - len(self.completed)
        assert self.batcher.in_flight_count == len(self.in_flight)

    def teardown(self) -> None:
        # Drain: everything added is eventually completed exactly once, lanes in add order.
        for _ in range(len(self.added) + 1):
            for command_id in list(self.in_flight):
                self.batcher.complete([self.in_flight.pop(command_id)])
                self.completed.append(command_id)
            self._sent(self.batcher.flush_all(self.now))
            if not self.in_flight:
                break
        assert self.batcher.pending_count == 0
        assert sorted(self.completed) == sorted(c.command_id for c in self.added)
        position = {command_id: n for n, command_id in enumerate(self.completed)}
        for lane in self.lanes.values():
            assert [position[c] for c in lane] == sorted(position[c] for c in lane)


BatcherMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBatcherProperties = BatcherMachine.TestCase
