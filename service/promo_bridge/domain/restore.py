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

from dataclasses import dataclass

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class RestoredOutcome:
    """An outcome read back from the outcomes topic: whose event it was, and where it lies."""

    command_id: str
    source: TopicPartition
    source_offset: int
    outcomes_offset: int
    # What the outcome says the call did, for the holdings ledger ("" when unknown).
    status: str = ""
    issual_id: str | None = None
    earned_id: str | None = None
    order_id: str | None = None


class RestoreMarks:
    """Per input partition, the outcomes offset from which its uncommitted work can be re-read."""

    def __init__(self) -> None:
        # Per input partition: input offset -> (smallest outcomes offset of its outcomes, how
        # many outcomes), for the events above the last mark asked for.
        self._pending: dict[TopicPartition, dict[int, tuple[int, int]]] = {}
        # Per outcomes partition, one past the newest outcome known there (of any input topic,
        # or the end read at a restore): later outcomes lie at or after it, so an input
        # partition with nothing pending has nothing of its own below it to re-read.
        self._newest: dict[int, int] = {}

    def restored(self, tp: TopicPartition, outcomes_end: int) -> None:
        """The partition is (re)assigned; its outcomes were read up to `outcomes_end`."""
        self._pending[tp] = {}
        self._advance(tp[1], outcomes_end)

    def published(self, tp: TopicPartition, input_offset: int, outcomes_offset: int) -> None:
        """An outcome of the event at `input_offset` is acknowledged at `outcomes_offset`."""
        pending = self._pending.setdefault(tp, {})
        lowest, count = pending.get(input_offset, (outcomes_offset, 0))
        pending[input_offset] = (min(lowest, outcomes_offset), count + 1)
        self._advance(tp[1], outcomes_offset + 1)

    def mark(self, tp: TopicPartition, committed: int) -> int | None:
        """The mark to store with committed offset `committed`; None when nothing is known.

        Outcomes of events below `committed` are forgotten: they will not be re-read.
        """
        pending = self._pending.get(tp)
        if pending is None:
            return None
        for offset in [o for o in pending if o < committed]:
            del pending[offset]
        if pending:
            return min(lowest for lowest, _ in pending.values())
        return self._newest.get(tp[1])

    def _advance(self, outcomes_partition: int, offset: int) -> None:
        self._newest[outcomes_partition] = max(self._newest.get(outcomes_partition, 0), offset)

    def forget(self, tp: TopicPartition) -> None:
        """The partition went to another owner."""
        self._pending.pop(tp, None)

    @property
    def completed_uncommitted(self) -> int:
        """Outcomes acknowledged for events above the last mark asked for (not yet committed)."""
        return sum(count for pending in self._pending.values() for _, count in pending.values())
