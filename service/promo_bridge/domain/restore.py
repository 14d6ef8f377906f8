"""Restore marks: from where in the outcomes topic a partition's completed work can be re-read.

Outcomes are written to the outcomes partition with the number of their event's input
partition (co-partitioned), so the outcomes of input partition (T, p) are in outcomes partition
p, among those of other input topics' partition p. A committed input offset N carries, in its
commit metadata, a mark M: every outcome of an event of (T, p) at offset >= N is at an outcomes
offset >= M. After a crash or a re-assignment, the new owner reads outcomes partition p from M
to its end, and the commands found there are not sent or published again.

A mark is the smallest outcomes offset among outcomes of events at or above N that this owner
has seen acknowledged; when there is none, one past the newest outcome it has seen in that
outcomes partition (later outcomes come after it), or the end of the outcomes partition when
the partition was restored. Pure: no I/O, plain integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class RestoredOutcome:
    """An outcome read back from the outcomes topic: whose event it was, and where it lies."""

    command_id: str
    source: TopicPartition
    source_offset: int
    outcomes_offset: int


@dataclass(slots=True)
class _Marks:
    # Input offset -> (smallest outcomes offset of its outcomes, how many outcomes).
    pending: dict[int, tuple[int, int]] = field(default_factory=dict)
    # Every later outcome of the partition is at or after this outcomes offset.
    next_after: int | None = None


class RestoreMarks:
    """Per input partition, the outcomes offset from which its uncommitted work can be re-read."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _Marks] = {}
        # Per outcomes partition, one past the newest outcome seen there (of any input topic):
        # an input partition with nothing pending has nothing of its own below it to re-read.
        self._newest: dict[int, int] = {}

    def restored(self, tp: TopicPartition, outcomes_end: int) -> None:
        """The partition is (re)assigned; its outcomes were read up to `outcomes_end`."""
        self._partitions[tp] = _Marks(next_after=outcomes_end)

    def published(self, tp: TopicPartition, input_offset: int, outcomes_offset: int) -> None:
        """An outcome of the event at `input_offset` is acknowledged at `outcomes_offset`."""
        marks = self._partitions.setdefault(tp, _Marks())
        lowest, count = marks.pending.get(input_offset, (outcomes_offset, 0))
        marks.pending[input_offset] = (min(lowest, outcomes_offset), count + 1)
        if marks.next_after is None or outcomes_offset >= marks.next_after:
            marks.next_after = outcomes_offset + 1
        self._newest[tp[1]] = max(self._newest.get(tp[1], 0), outcomes_offset + 1)

    def mark(self, tp: TopicPartition, committed: int) -> int | None:
        """The mark to store with committed offset `committed`; None when nothing is known.

        Outcomes of events below `committed` are forgotten: they will not be re-read.
        """
        marks = self._partitions.get(tp)
        if marks is None:
            return None
        for offset in [o for o in marks.pending if o < committed]:
            del marks.pending[offset]
        if marks.pending:
            return min(lowest for lowest, _ in marks.pending.values())
        newest = self._newest.get(tp[1])
        if marks.next_after is None or newest is None:
            return marks.next_after if newest is None else newest
        return max(marks.next_after, newest)

    def forget(self, tp: TopicPartition) -> None:
        """The partition went to another owner."""
        self._partitions.pop(tp, None)

    @property
    def completed_uncommitted(self) -> int:
        """Outcomes acknowledged for events above the last mark asked for (not yet committed)."""
        return sum(
            count for marks in self._partitions.values() for _, count in marks.pending.values()
        )
