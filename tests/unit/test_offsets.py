"""The offset watermark: commit only past complete events, across gaps, per partition."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from promo_bridge.domain.commands import EventPosition
from promo_bridge.domain.offsets import OffsetTracker

TP = ("orders", 0)


def at(offset: int, partition: int = 0) -> EventPosition:
    return EventPosition("orders", partition, offset)


def test_nothing_to_commit_until_the_first_event_completes() -> None:
    """The first tracked offset is the baseline: nothing is committable before progress."""
    tracker = OffsetTracker()
    tracker.track(at(100), 2)
    assert tracker.committable() == {}
    tracker.command_done(at(100))
    assert tracker.committable() == {}
    tracker.command_done(at(100))
    assert tracker.committable() == {TP: 101}


def test_events_without_commands_complete_at_once() -> None:
    """An event that made no command is complete as soon as it is tracked."""
    tracker = OffsetTracker()
    tracker.track(at(5), 0)
    assert tracker.committable() == {TP: 6}
    assert tracker.pending_count == 0


def test_watermark_stops_at_the_first_incomplete_event() -> None:
    """Later complete events do not move the watermark past an earlier incomplete one."""
    tracker = OffsetTracker()
    tracker.track(at(10), 1)
    tracker.track(at(11), 0)
    tracker.track(at(12), 1)
    tracker.command_done(at(12))
    assert tracker.committable() == {}
    assert tracker.pending_count == 3
    tracker.command_done(at(10))
    assert tracker.committable() == {TP: 13}
    assert tracker.pending_count == 0


def test_offset_gaps_do_not_block() -> None:
    """Offsets never seen (compaction, transaction markers) are skipped over."""
    tracker = OffsetTracker()
    tracker.track(at(10), 1)
    tracker.track(at(15), 1)
    tracker.command_done(at(10))
    assert tracker.committable() == {TP: 15}
    tracker.command_done(at(15))
    assert tracker.committable() == {TP: 16}


def test_only_advanced_partitions_are_reported() -> None:
    """committable() lists a partition only while it is ahead of the last mark_committed."""
    tracker = OffsetTracker()
    tracker.track(at(1, 0), 0)
    tracker.track(at(7, 1), 1)
    assert tracker.committable() == {TP: 2}
    tracker.mark_committed({TP: 2})
    assert tracker.committable() == {}
    tracker.command_done(at(7, 1))
    assert tracker.committable() == {("orders", 1): 8}


def test_complete_finishes_an_event_whatever_remains() -> None:
    """complete(position) marks the whole event done (e.g. it went to the DLQ)."""
    tracker = OffsetTracker()
    tracker.track(at(3), 4)
    assert tracker.complete(at(3))
    assert tracker.committable() == {TP: 4}


def test_forgotten_partitions_ignore_late_results() -> None:
    """After forget_partition, results for it are ignored and nothing is committable."""
    tracker = OffsetTracker()
    tracker.track(at(3), 1)
    assert tracker.has_incomplete(TP)
    tracker.forget_partition(TP)
    assert not tracker.has_incomplete(TP)
    assert tracker.command_done(at(3)) is False
    assert tracker.committable() == {}
    assert tracker.pending_count == 0
    tracker.track(at(1), 0)  # re-assigned and read again from the committed offset
    assert tracker.committable() == {TP: 2}


def test_misuse_is_refused() -> None:
    """Offsets going backwards, negative counts and extra results raise."""
    tracker = OffsetTracker()
    tracker.track(at(5), 1)
    with pytest.raises(ValueError, match="behind"):
        tracker.track(at(5), 1)
    with pytest.raises(ValueError, match="negative"):
        tracker.track(at(6), -1)
    tracker.track(at(6), 1)
    tracker.command_done(at(6))
    tracker.track(at(7), 0)
    with pytest.raises(ValueError, match="more results"):
        tracker.command_done(at(6))


class WatermarkMachine(RuleBasedStateMachine):
    """Random tracking (with gaps), results, commits and revocations against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = OffsetTracker()
        self.next_offset = {0: 0, 1: 40}
        # partition -> offset -> commands remaining (complete events stay, for the checks)
        self.events: dict[int, dict[int, int]] = {0: {}, 1: {}}
        self.committed: dict[int, int] = {}
        self.reported: dict[int, int] = {}

    @rule(partition=st.sampled_from([0, 1]), gap=st.integers(0, 3), n=st.integers(0, 3))
    def track(self, partition: int, gap: int, n: int) -> None:
        offset = self.next_offset[partition] + gap
        self.tracker.track(at(offset, partition), n)
        self.events[partition][offset] = n
        self.next_offset[partition] = offset + 1

    def _incomplete(self) -> list[tuple[int, int]]:
        return [(p, o) for p, events in self.events.items() for o, n in events.items() if n > 0]

    @precondition(lambda self: bool(self._incomplete()))
    @rule(data=st.data())
    def command_done(self, data: st.DataObject) -> None:
        partition, offset = data.draw(st.sampled_from(self._incomplete()))
        assert self.tracker.command_done(at(offset, partition))
        self.events[partition][offset] -= 1

    @precondition(lambda self: bool(self._incomplete()))
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        partition, offset = data.draw(st.sampled_from(self._incomplete()))
        assert self.tracker.complete(at(offset, partition))
        self.events[partition][offset] = 0

    @rule()
    def commit(self) -> None:
        offsets = self.tracker.committable()
        self.tracker.mark_committed(offsets)
        for (_, partition), offset in offsets.items():
            self.committed[partition] = offset

    @rule(partition=st.sampled_from([0, 1]))
    def revoke(self, partition: int) -> None:
        self.tracker.forget_partition(("orders", partition))
        self.events[partition] = {}
        self.committed.pop(partition, None)
        self.reported.pop(partition, None)

    @invariant()
    def watermark_never_passes_an_incomplete_offset(self) -> None:
        for (_, partition), offset in self.tracker.committable().items():
            events = self.events[partition]
            assert all(n == 0 for o, n in events.items() if o < offset)
            assert offset in events or offset == max(events) + 1
            assert offset > self.committed.get(partition, min(events))
            assert offset >= self.reported.get(partition, offset), "watermark went back"
            self.reported[partition] = offset

    def teardown(self) -> None:
        for partition, events in self.events.items():
            for offset, n in events.items():
                for _ in range(n):
                    self.tracker.command_done(at(offset, partition))
        assert self.tracker.pending_count == 0
        final = self.tracker.committable()
        for partition, events in self.events.items():
            if events and max(events) + 1 > self.committed.get(partition, min(events)):
                assert final[("orders", partition)] == max(events) + 1, "did not reach the end"


WatermarkMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None
)
TestWatermarkProperties = WatermarkMachine.TestCase
