"""Restore marks: the outcomes offset from which a partition's uncommitted work is re-read."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from harness import RULES_ENROL_BIG_SPENDERS, order_placed
from promo_bridge.domain.flow import Flow, FlowConfig, InputRecord
from promo_bridge.domain.outcomes import CommandResult, Delivery, OutcomeStatus
from promo_bridge.domain.restore import RestoredOutcome, RestoreMarks
from promo_bridge.domain.rules import RuleSet
from promo_bridge.kafka.restore import decode_mark, encode_mark

TP = ("orders", 0)
AT = datetime(2026, 11, 29, tzinfo=UTC)


def test_the_mark_is_the_lowest_outcome_of_an_event_at_or_above_the_commit() -> None:
    """An outcome published early for a later event keeps the mark down until it is committed."""
    marks = RestoreMarks()
    marks.restored(TP, outcomes_end=10)
    marks.published(TP, input_offset=2, outcomes_offset=10)
    marks.published(TP, input_offset=0, outcomes_offset=11)
    assert marks.mark(TP, committed=1) == 10
    assert marks.completed_uncommitted == 1
    assert marks.mark(TP, committed=3) == 12


def test_without_outcomes_the_mark_is_where_the_next_one_will_land() -> None:
    """Restored and idle, the mark is the outcomes end read at assignment."""
    marks = RestoreMarks()
    marks.restored(TP, outcomes_end=42)
    assert marks.mark(TP, committed=5) == 42
    assert marks.mark(("orders", 1), committed=5) is None


def test_commit_metadata_round_trips_and_ignores_foreign_metadata() -> None:
    """encode_mark and decode_mark agree; metadata written by other tools reads as no mark."""
    assert decode_mark(encode_mark(1234)) == 1234
    assert encode_mark(None) == ""
    assert decode_mark("") is None
    assert decode_mark("someone else's") is None
    assert decode_mark("promo-bridge:outcomes=x") is None


def test_restored_commands_are_not_sent_again_and_complete_their_offsets() -> None:
    """After a crash, re-read events whose commands have outcomes make no call."""
    rules = RuleSet.from_yaml(RULES_ENROL_BIG_SPENDERS)
    records = [
        InputRecord("orders", 0, i, None, json.dumps(order_placed(str(i), 6000.0)).encode())
        for i in range(3)
    ]
    first = Flow(rules, FlowConfig(window_ms=0))
    first.accept(records, 0.0, AT)
    (batch,) = first.ready(0.0)
    results = tuple(CommandResult(c.command_id, OutcomeStatus.APPLIED) for c in batch.commands)
    first.published(first.delivered(batch, Delivery(completed=results), 0.0), [7, 8, 9])
    # The process dies before committing; the next one reads outcomes 7.. back.
    second = Flow(rules, FlowConfig(window_ms=0))
    second.restore(
        TP,
        [
            RestoredOutcome(c.command_id, TP, c.position.offset, 7 + i)
            for i, c in enumerate(batch.commands)
        ],
        outcomes_end=10,
    )
    intake = second.accept(records, 1.0, AT)
    assert len(intake.duplicates) == 3
    assert second.ready(1.0) == []
    assert second.committable() == {TP: 3}
    # Until they are committed, the read-back outcomes stay above the mark.
    assert second.restore_marks({TP: 2}) == {TP: 9}
    assert second.restore_marks({TP: 3}) == {TP: 10}


def test_a_copy_on_the_same_partition_holds_the_mark_of_the_original_outcome() -> None:
    """A redelivered copy completes with its original, so its commit keeps that outcome above."""
    rules = RuleSet.from_yaml(RULES_ENROL_BIG_SPENDERS)
    event = json.dumps(order_placed("1", 6000.0)).encode()
    flow = Flow(rules, FlowConfig(window_ms=0))
    flow.restore(TP, (), outcomes_end=0)
    flow.accept([InputRecord("orders", 0, 0, None, event)], 0.0, AT)
    flow.accept([InputRecord("orders", 0, 1, None, event)], 0.0, AT)
    (batch,) = flow.ready(0.0)
    results = tuple(CommandResult(c.command_id, OutcomeStatus.APPLIED) for c in batch.commands)
    flow.published(flow.delivered(batch, Delivery(completed=results), 0.0), [5])
    # Committing only the original leaves the copy to re-read: its outcome stays above the mark.
    assert flow.restore_marks({TP: 1}) == {TP: 5}


def test_an_idle_partition_mark_follows_its_outcomes_partition() -> None:
    """With nothing pending, the mark moves with outcomes of other topics on the same partition."""
    marks = RestoreMarks()
    marks.restored(TP, outcomes_end=3)
    marks.published(("returns", 0), input_offset=0, outcomes_offset=50)
    marks.published(("orders", 1), input_offset=0, outcomes_offset=90)
    assert marks.mark(TP, committed=0) == 51
