"""The published outcome record of a command and its result."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promo_bridge.domain.commands import (
    Action,
    Command,
    EventPosition,
    IdentifierName,
    PromotionRef,
    PromotionType,
)
from promo_bridge.domain.outcomes import (
    OUTCOME_ADAPTER,
    CommandResult,
    ErrorClass,
    OutcomeRecord,
    OutcomeStatus,
    encode_outcome,
    outcome_record,
)

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


_TEXT = st.text(max_size=12)
_OPTIONAL_TEXT = st.none() | _TEXT
_OPTIONAL_INT = st.none() | st.integers(-(2**53), 2**53)
_UTC_TIMES = st.datetimes(timezones=st.just(UTC))


@given(
    st.builds(
        OutcomeRecord,
        command_id=_TEXT,
        event_id=_TEXT,
        topic=_TEXT,
        partition=st.integers(0, 1000),
        offset=st.integers(0, 2**62),
        rule=_TEXT,
        action=_TEXT,
        subject=_TEXT,
        promotion_id=_OPTIONAL_INT,
        promo_identifier=_OPTIONAL_TEXT,
        identifier_name=_TEXT,
        identifier_value=_TEXT,
        order_id=_OPTIONAL_TEXT,
        status=st.sampled_from(OutcomeStatus),
        error_class=st.none() | st.sampled_from(ErrorClass),
        error_code=_OPTIONAL_INT,
        error_message=_OPTIONAL_TEXT,
        issual_id=_OPTIONAL_TEXT,
        revoked_earn_ids=st.lists(st.integers(0, 2**53), max_size=3),
        attempts=st.integers(1, 100),
        skip_reason=_OPTIONAL_TEXT,
        received_at=_UTC_TIMES,
        completed_at=_UTC_TIMES,
    )
)
def test_the_fast_encoding_is_the_published_contract(record: OutcomeRecord) -> None:
    """orjson's bytes equal pydantic's serialization of the contract and read back the same."""
    encoded = encode_outcome(record)
    assert json.loads(encoded) == json.loads(OUTCOME_ADAPTER.dump_json(record))
    assert OUTCOME_ADAPTER.validate_json(encoded) == record
