"""The order ledger: a return takes back what its order earned, whatever the arrival order."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from harness import order_placed
from promo_bridge.domain.commands import Action, Batch
from promo_bridge.domain.flow import Flow, FlowConfig, InputRecord
from promo_bridge.domain.outcomes import CommandResult, Delivery, OutcomeStatus
from promo_bridge.domain.rules import RulesError, RuleSet

AT = datetime(2026, 11, 29, tzinfo=UTC)
RULES = """\
program_id: 2714
promotions:
  big: {promotion_id: 202779, type: ENROL_AND_ISSUE}
rules:
  - name: big-order
    on: order.placed
    when: "event.data.total.amount >= 5000.0"
    then: [{enrol: big}, {earn: big}]
  - name: return
    on: return.created
    then: [{revoke_earn: big}]
"""
RULES_REVOKE_ALL = RULES.replace(
    "{revoke_earn: big}", "{revoke_earn: {promotion: big, earns: all}}"
)


def order(order_id: str, amount: float = 6000.0) -> dict[str, Any]:
    event = order_placed("7", amount, event_id=f"evt-{order_id}")
    event["data"]["order_id"] = order_id
    return event


def returned(order_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"evt-return-{order_id}",
        "source": "/shop/returns",
        "type": "return.created",
        "subject": "7",
        "data": {
            "return_id": f"r-{order_id}",
            "order_id": order_id,
            "full_return": True,
            "customer": {"id": "7", "source": "INSTORE"},
        },
    }


class Api:
    """Answers every batch: each EARN gets the next earnedId; skips stay unsent."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.next_earn = 100
        self.sent: list[Batch] = []
        self.results: dict[str, CommandResult] = {}

    def run(self, records: list[dict[str, Any]], now: float = 0.0) -> None:
        values = [json.dumps(r).encode() for r in records]
        self.flow.accept(
            [
                InputRecord("t", 0, i + len(self.results) * 10, b"7", v)
                for i, v in enumerate(values)
            ],
            now,
            AT,
        )
        while batches := self.flow.drain(now):
            for batch in batches:
                self.sent.append(batch)
                self.answer(batch, now)

    def answer(self, batch: Batch, now: float) -> None:
        results = []
        for command in batch.commands:
            if command.command_id in batch.skip:
                result = CommandResult(
                    command.command_id,
                    OutcomeStatus.SKIPPED,
                    extra={"skip_reason": batch.skip[command.command_id]},
                )
            elif command.action is Action.EARN:
                self.next_earn += 1
                result = CommandResult(
                    command.command_id, OutcomeStatus.APPLIED, earned_id=str(self.next_earn)
                )
            else:
                result = CommandResult(command.command_id, OutcomeStatus.APPLIED, issual_id="845")
            results.append(result)
            self.results[command.command_id] = result
        completions = self.flow.delivered(batch, Delivery(completed=tuple(results)), now)
        self.flow.settle(completions, 1)
        self.flow.published(completions)

    def revokes(self) -> list[tuple[tuple[int, ...], str | None]]:
        return [
            (c.earn_ids, b.skip.get(c.command_id))
            for b in self.sent
            for c in b.commands
            if c.action is Action.REVOKE_EARN
        ]

    def earn_skips(self) -> list[str | None]:
        return [
            b.skip.get(c.command_id)
            for b in self.sent
            for c in b.commands
            if c.action is Action.EARN
        ]


def make(rules: str = RULES, **config: Any) -> Api:
    return Api(Flow(RuleSet.from_yaml(rules), FlowConfig(window_ms=0, **config)))


def test_a_return_revokes_exactly_the_earns_of_its_order() -> None:
    """Two qualifying orders, one returned: the revoke carries only that order's earnedId."""
    api = make()
    api.run([order("o1"), order("o2")])
    api.run([returned("o1")])
    assert api.revokes() == [((101,), None)]


def test_a_return_read_before_its_order_skips_the_order_earn() -> None:
    """Return first: its revoke is skipped (order unknown), then the order's earn is skipped."""
    api = make()
    api.run([returned("o1")])
    api.run([order("o1")])
    assert api.revokes() == [((), "order_unknown")]
    assert api.earn_skips() == ["order_returned"]


def test_a_return_of_an_order_that_earned_nothing_sends_no_revoke() -> None:
    """An order below the threshold earned nothing: no call (without earnIds it revokes all)."""
    api = make()
    api.run([order("o1"), order("o2", amount=10.0)])
    api.run([returned("o2")])
    assert api.revokes() == [((), "order_unknown")]
    api2 = make()
    api2.run([order("o1")])
    api2.run([returned("o1"), returned("o1") | {"id": "evt-return-again"}])
    assert api2.revokes() == [((101,), None), ((), "nothing_earned")]


def test_an_unknown_order_revokes_all_when_configured() -> None:
    """unknown_order_revokes_all: the revoke goes out without earnIds, and is counted."""
    api = make(unknown_order_revokes_all=True)
    api.run([returned("o9")])
    assert api.revokes() == [((), None)]
    assert api.flow.unknown_order_returns == 1


def test_earns_all_in_the_rules_revokes_every_earn() -> None:
    """`revoke_earn: {promotion: big, earns: all}` sends no earnIds, by the rules' choice."""
    api = make(RULES_REVOKE_ALL)
    api.run([order("o1"), order("o2")])
    api.run([returned("o1")])
    assert api.revokes() == [((), None)]


RULES_MIXED = """\
program_id: 2714
promotions:
  big: {promotion_id: 202779, type: ENROL_AND_ISSUE}
rules:
  - name: big-order
    on: order.placed
    identifier_preference: [mobile, id]
    then: [{enrol: big}, {earn: big}]
  - name: return
    on: return.created
    identifier_preference: [id]
    then: [{revoke_earn: big}, {revoke_enrol: big}]
"""


def test_rules_picking_other_identifiers_still_run_one_customer_in_order() -> None:
    """Order by mobile, return by id, read together: enrol, earn, revoke_earn, revoke_enrol."""
    api = make(RULES_MIXED)
    placed = order("o1")
    placed["data"]["customer"]["mobile"] = "919986000586"
    api.run([placed, returned("o1")])
    actions = [c.action.value for b in api.sent for c in b.commands]
    assert actions == ["enrol", "earn", "revoke_earn", "revoke_enrol"]
    assert [c.identifier_name.value for b in api.sent for c in b.commands] == [
        "mobile",
        "mobile",
        "id",
        "id",
    ]
    assert api.revokes() == [((101,), None)]


def test_a_revoke_scope_other_than_order_or_all_fails_at_load_naming_the_line() -> None:
    """`earns: some` is refused when the rules load, with the file line and rule."""
    bad = RULES.replace("{revoke_earn: big}", "{revoke_earn: {promotion: big, earns: some}}")
    with pytest.raises(RulesError) as caught:
        RuleSet.from_yaml(bad)
    message = str(caught.value)
    assert ":11:" in message
    assert "'return'" in message
    assert "earns must be 'order'" in message
