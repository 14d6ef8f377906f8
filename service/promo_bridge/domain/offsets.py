"""The offset watermark: which offset each partition may commit.

An event is complete when every command it made has its outcome acknowledged (or it made none,
or it went to the DLQ). Offset N+1 may be committed once every tracked event at or below N is
complete. The consumer reads a partition in increasing offset order, so each partition keeps a
FIFO of its incomplete-or-blocked events: completing the front pops it and every complete event
behind it. Offsets that never reach the tracker (compacted away, transaction markers) leave gaps
that block nothing: the committable offset is the first incomplete tracked offset, or the last
tracked offset + 1 when all are complete.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from promo_bridge.domain.commands import EventPosition

TopicPartition = tuple[str, int]


@dataclass(slots=True)
class _Pending:
    offset: int
    remaining: int


@dataclass(slots=True)
class _Partition:
    events: deque[_Pending] = field(default_factory=deque)
    by_offset: dict[int, _Pending] = field(default_factory=dict)
    # Next offset to read: one past the last tracked offset.
    end: int = 0
    # The offset the group has stored; nothing at or below it is reported again.
    committed: int = 0

    @property
    def committable(self) -> int:
        return self.events[0].offset if self.events else self.end


class OffsetTracker:
    """Per-partition watermark of complete events (see the module docstring)."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._pending = 0

    @property
    def pending_count(self) -> int:
        """Events tracked and not yet released by the watermark (incomplete, or behind one)."""
        return self._pending

    def track(self, position: EventPosition, n_commands: int) -> None:
        """Start tracking an event that made `n_commands` commands (0: complete at once).

        Offsets of one partition must arrive in increasing order; the first one tracked is taken
        as the position the group had committed.
        """
        if n_commands < 0:
            raise ValueError("n_commands must not be negative")
        tp = (position.topic, position.partition)
        partition = self._partitions.get(tp)
        if partition is None:
            partition = _Partition(end=position.offset, committed=position.offset)
            self._partitions[tp] = partition
        elif position.offset < partition.end:
            raise ValueError(
                f"offset {position.offset} of {tp[0]}[{tp[1]}] is behind the tracked end "
                f"{partition.end}: forget the partition before reading it again"
            )
        partition.end = position.offset + 1
        if n_commands == 0 and not partition.events:
            return
        pending = _Pending(position.offset, n_commands)
        partition.events.append(pending)
        partition.by_offset[position.offset] = pending
        self._pending += 1

    def command_done(self, position: EventPosition) -> bool:
        """One command of the event at `position` has its outcome; False if not tracked.

        Untracked means its partition was forgotten (revoked): the late result is ignored.
        """
        pending = self._find(position)
        if pending is None:
            return False
        if pending.remaining == 0:
            raise ValueError(f"more results than commands for {position}")
        pending.remaining -= 1
        if pending.remaining == 0:
            self._release((position.topic, position.partition))
        return True

    def complete(self, position: EventPosition) -> bool:
        """The event at `position` is complete whatever remains; False if not tracked."""
        pending = self._find(position)
        if pending is None:
            return False
        if pending.remaining:
            pending.remaining = 0
            self._release((position.topic, position.partition))
        return True

    def has_incomplete(self, tp: TopicPartition) -> bool:
        """Whether the partition holds an event that is not complete."""
        partition = self._partitions.get(tp)
        return partition is not None and bool(partition.events)

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets to commit: per partition, the next offset to read after the complete prefix.

        Only partitions whose committable offset moved past the last `mark_committed` appear.
        """
        offsets: dict[TopicPartition, int] = {}
        for tp, partition in self._partitions.items():
            offset = partition.committable
            if offset > partition.committed:
                offsets[tp] = offset
        return offsets

    def mark_committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """The group stored these offsets (as returned by `committable`)."""
        for tp, offset in offsets.items():
            partition = self._partitions.get(tp)
            if partition is not None and offset > partition.committed:
                partition.committed = offset

    def forget_partition(self, tp: TopicPartition) -> None:
        """Stop tracking a partition (revoked or lost); later results for it are ignored."""
        partition = self._partitions.pop(tp, None)
        if partition is not None:
            self._pending -= len(partition.events)

    def forget_partitions(self, tps: Iterable[TopicPartition]) -> None:
        """`forget_partition` for each."""
        for tp in tps:
            self.forget_partition(tp)

    def partitions(self) -> list[TopicPartition]:
        """Partitions being tracked."""
        return list(self._partitions)

    def _find(self, position: EventPosition) -> _Pending | None:
        partition = self._partitions.get((position.topic, position.partition))
        if partition is None:
            return None
        return partition.by_offset.get(position.offset)

    def _release(self, tp: TopicPartition) -> None:
        partition = self._partitions[tp]
        events = partition.events
        while events and events[0].remaining == 0:
            done = events.popleft()
            del partition.by_offset[done.offset]
            self._pending -= 1
