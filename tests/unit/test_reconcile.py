"""Verifying unsure commands on a direct-issue promotion, whose issualId is a dummy."""

from __future__ import annotations

import pytest

from promo_bridge.domain.commands import (
    Action,
    Command,
    EventPosition,
    IdentifierName,
    PromotionRef,
    PromotionType,
)
from promo_bridge.domain.reconcile import Finding, Standing, verified_result, verify


def _earn(kind: PromotionType | None) -> Command:
    return Command(
        command_id="cmd-1",
        event_id="evt-1",
        position=EventPosition("orders", 0, 1),
        rule="coupon",
        action=Action.EARN,
        subject="direct",
        identifier_name=IdentifierName.ID,
        identifier_value="423927000",
        source="INSTORE",
        promotion=PromotionRef(2714, promotion_id=202780, kind=kind),
    )


def test_a_verified_direct_issue_earn_takes_no_issual_id_from_the_lookup() -> None:
    """A direct EARN found applied: its earnedId is kept, the holding's issualId is not."""
    earn = _earn(PromotionType.DIRECT_ISSUE)
    verdict = verify(earn, Standing("990", frozenset({"880"})), frozenset())
    assert (verdict.finding, verdict.issual_id, verdict.earned_id) == (
        Finding.APPLIED,
        None,
        "880",
    )
    result = verified_result(earn, verdict)
    assert result is not None
    assert (result.issual_id, result.earned_id) == (None, "880")


@pytest.mark.parametrize("kind", [PromotionType.ENROL_AND_ISSUE, None])
def test_a_verified_earn_elsewhere_keeps_the_holdings_issual_id(
    kind: PromotionType | None,
) -> None:
    """An enrol-and-issue EARN (or one of unknown type) found applied carries the issualId."""
    verdict = verify(_earn(kind), Standing("845", frozenset({"880"})), frozenset())
    assert (verdict.finding, verdict.issual_id, verdict.earned_id) == (
        Finding.APPLIED,
        "845",
        "880",
    )
