"""`make run`'s summary says why N events made M outcomes and marks the injected DLQ record."""

from __future__ import annotations

from typing import Any

import demo


def _event(event_id: str, kind: str = "order.placed") -> dict[str, Any]:
    return {"id": event_id, "type": kind}


def _outcome(event_id: str, status: str = "applied") -> dict[str, Any]:
    return {"event_id": event_id, "status": status}


def test_summary_accounts_for_every_event() -> None:
    """Outcomes per event, the duplicate, the events no rule matched, and the poison record."""
    events = [
        _event("e1"),
        _event("e2", "review.submitted"),
        _event("e2", "review.submitted"),
        _event("e3"),
        _event("e4", "cart.abandoned"),
    ]
    outcomes = [_outcome("e1"), _outcome("e1"), _outcome("e2", "skipped")]
    letters = [{"source_offset": 5, "source_topic": "orders", "reason": "Invalid JSON"}]

    lines = demo.summary(events, outcomes, letters, api_calls=2)

    assert lines == [
        (
            "5 events -> 3 outcomes (2 applied, 1 skipped) in 2 API calls; offsets committed to the"
            " end:"
        ),
        (
            "  2 events made the 3 commands above (one outcome each; an event can match several"
            " rules and a rule make several commands)"
        ),
        "  1 duplicate event(s) (e2: an id already seen) made no new command",
        "  2 events matched no rule, so made no command (cart.abandoned x1, order.placed x1)",
        "  + 1 injected poison record (not from the file) -> DLQ: offset 5 of orders: Invalid JSON",
    ]


def test_summary_leaves_out_empty_categories() -> None:
    """No duplicate and no unmatched event: only the totals and the commands line."""
    lines = demo.summary([_event("e1")], [_outcome("e1")], [], api_calls=1)
    assert len(lines) == 2
