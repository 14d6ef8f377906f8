"""The published outcome record of a command and its result."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from promo_bridge.domain.commands import (
    Action,
    Command,
    EventPosition,
    IdentifierName,
    PromotionRef,
    PromotionType,
)
from promo_bridge.domain.outcomes import CommandResult, OutcomeStatus, outcome_record

AT = datetime(2026, 11, 29, tzinfo=UTC)


def _command(action: Action, kind: PromotionType | None) -> Command:
    return Command(
        command_id="cmd-1",
        event_id="evt-1",
        position=EventPosition("orders", 0, 1),
        rule="rule",
        action=action,
        subject="promo",
        identifier_name=IdentifierName.ID,
        identifier_value="423927000",
        source="INSTORE",
        promotion=PromotionRef(2714, promotion_id=202780, kind=kind),
    )


def _record(command: Command, issual_id: str) -> tuple[str | None, str | None]:
    result = CommandResult(
        command.command_id, OutcomeStatus.APPLIED, issual_id=issual_id, earned_id="880"
    )
    record = outcome_record(command, result, received_at=AT, completed_at=AT)
    return record.issual_id, record.earned_id


def test_a_direct_issue_earn_never_publishes_an_issual_id() -> None:
    """Whatever result it gets, a direct EARN's record has issual_id None and its earned_id."""
    assert _record(_command(Action.EARN, PromotionType.DIRECT_ISSUE), "990") == (None, "880")


@pytest.mark.parametrize(
    ("action", "kind"),
    [
        (Action.EARN, PromotionType.ENROL_AND_ISSUE),
        (Action.EARN, None),
        (Action.ENROL, PromotionType.ENROL_AND_ISSUE),
    ],
)
def test_other_commands_publish_their_issual_id(action: Action, kind: PromotionType | None) -> None:
    """An enrol, or an earn not known to be direct issue, publishes the result's issualId."""
    assert _record(_command(action, kind), "845") == ("845", "880")
