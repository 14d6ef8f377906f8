"""A return takes back exactly what its order earned, on the real broker and the simulator."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from harness import Rig, order_placed, running_service
from kafka_tools import create_topics, produce_events, read_topic, wait_caught_up
from promo_bridge.simulator import Simulator, default_catalogue
from promo_bridge.simulator._catalogue import Customer as CatalogueCustomer
from promo_bridge.simulator._lookup import lookup
from runtime_support import child_settings, service_process

pytestmark = pytest.mark.e2e

RULES = """\
program_id: 2714
promotions:
  big-spender: {promotion_id: 202779, type: ENROL_AND_ISSUE}
rules:
  - name: big-order
    on: order.placed
    when: "event.data.total.amount >= 5000.0"
    then: [{enrol: big-spender}, {earn: big-spender}]
  - name: revoke-on-return
    on: return.created
    then: [{revoke_earn: big-spender}]
"""


def order(customer: str, order_id: str) -> dict[str, Any]:
    event = order_placed(customer, 6000.0, event_id=f"evt-{order_id}")
    event["data"]["order_id"] = order_id
    return event


def return_of(customer: str, order_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"evt-return-{order_id}",
        "source": "/shop/returns",
        "type": "return.created",
        "time": "2026-11-21T11:00:00Z",
        "subject": customer,
        "data": {
            "return_id": f"r-{order_id}",
            "order_id": order_id,
            "full_return": True,
            "customer": {"id": customer, "source": "INSTORE"},
        },
    }


def holding(sim: Simulator, customer: str) -> dict[str, Any]:
    answer = lookup(
        sim.state,
        {
            "identifierName": "id",
            "identifierValue": customer,
            "source": "INSTORE",
            "promotionId": "202779",
        },
    )
    (promotion,) = answer.body["data"]["promotions"]
    return dict(promotion)


async def test_a_return_revokes_only_its_order_earn(kafka_bootstrap: str, rig: Rig) -> None:
    """Two qualifying orders, one returned: its earnedId is revoked, the other stays active."""
    sim = Simulator()
    settings = await rig.prepare(sim, partitions=2, rules=RULES, batch_window_ms=50)
    topics = {"order.placed": rig.topic, "return.created": rig.topic}
    await produce_events(kafka_bootstrap, [order("9101", "o1"), order("9101", "o2")], topics)
    async with running_service(settings):
        earned = await read_topic(
            kafka_bootstrap, settings.outcomes_topic, until=lambda r: len(r) >= 4, timeout_s=30
        )
        first_earn = next(
            o.json()["earned_id"]
            for o in earned
            if o.json()["action"] == "earn" and o.json()["order_id"] == "o1"
        )
        await produce_events(kafka_bootstrap, [return_of("9101", "o1")], topics)
        outcomes = await read_topic(
            kafka_bootstrap, settings.outcomes_topic, until=lambda r: len(r) >= 5, timeout_s=30
        )
        await wait_caught_up(kafka_bootstrap, settings.group_id, [rig.topic], timeout_s=30)

    revoke = next(o.json() for o in outcomes if o.json()["action"] == "revoke_earn")
    state = holding(sim, "9101")
    assert revoke["status"] == "applied"
    assert [str(e) for e in revoke["revoked_earn_ids"]] == [first_earn]
    assert len(state["earnedIds"]) == 1
    assert [str(e) for e in state["revokedEarnIds"]] == [first_earn]


async def test_a_return_read_before_its_order_leaves_no_earn(
    kafka_bootstrap: str, rig: Rig
) -> None:
    """The return on its own topic is read first: the order's earn is then skipped."""
    sim = Simulator()
    returns_topic = f"returns-{rig.unique}"
    settings = await rig.prepare(
        sim,
        partitions=2,
        rules=RULES,
        batch_window_ms=50,
        input_topics=[rig.topic, returns_topic],
    )
    await create_topics(kafka_bootstrap, {returns_topic: 2})
    await produce_events(
        kafka_bootstrap, [return_of("9102", "o7")], {"return.created": returns_topic}
    )
    async with running_service(settings):
        first = await read_topic(
            kafka_bootstrap, settings.outcomes_topic, until=lambda r: len(r) >= 1, timeout_s=30
        )
        await produce_events(kafka_bootstrap, [order("9102", "o7")], {"order.placed": rig.topic})
        outcomes = await read_topic(
            kafka_bootstrap, settings.outcomes_topic, until=lambda r: len(r) >= 3, timeout_s=30
        )

    by_action = {o.json()["action"]: o.json() for o in outcomes}
    assert [o.json()["skip_reason"] for o in first] == ["order_unknown"]
    assert by_action["earn"]["status"] == "skipped"
    assert by_action["earn"]["skip_reason"] == "order_returned"
    assert by_action["earn"]["earned_id"] is None
    assert sim.ledger.totals() == {"ENROL": 1}
    assert holding(sim, "9102")["earnedIds"] == []


async def test_the_ledger_survives_sigkill_and_serves_the_next_owner(
    kafka_bootstrap: str, rig: Rig, tmp_path: Path
) -> None:
    """Orders done by a SIGKILLed process: its successor's return revokes the right earnedId."""
    sim = Simulator()
    settings = await rig.prepare(sim, partitions=2, rules=RULES, batch_window_ms=50)
    topics = {"order.placed": rig.topic, "return.created": rig.topic}
    await produce_events(kafka_bootstrap, [order("9103", "o1"), order("9103", "o2")], topics)
    async with service_process(tmp_path / "killed.log", **child_settings(settings)) as doomed:
        earned = await read_topic(
            kafka_bootstrap, settings.outcomes_topic, until=lambda r: len(r) >= 4, timeout_s=30
        )
        await wait_caught_up(kafka_bootstrap, settings.group_id, [rig.topic], timeout_s=30)
        doomed.process.send_signal(signal.SIGKILL)
        assert await doomed.wait_exit(timeout_s=10) == -signal.SIGKILL
    second_earn = next(
        o.json()["earned_id"]
        for o in earned
        if o.json()["action"] == "earn" and o.json()["order_id"] == "o2"
    )

    await produce_events(kafka_bootstrap, [return_of("9103", "o2")], topics)
    async with running_service(settings):
        outcomes = await read_topic(
            kafka_bootstrap, settings.outcomes_topic, until=lambda r: len(r) >= 5, timeout_s=60
        )

    revoke = next(o.json() for o in outcomes if o.json()["action"] == "revoke_earn")
    assert revoke["status"] == "applied"
    assert [str(e) for e in revoke["revoked_earn_ids"]] == [second_earn]
    assert [str(e) for e in holding(sim, "9103")["revokedEarnIds"]] == [second_earn]


RULES_MIXED = """\
program_id: 2714
promotions:
  big-spender: {promotion_id: 202779, type: ENROL_AND_ISSUE}
rules:
  - name: big-order
    on: order.placed
    identifier_preference: [mobile, id]
    then: [{enrol: big-spender}, {earn: big-spender}]
  - name: revoke-on-return
    on: return.created
    identifier_preference: [id]
    then: [{revoke_earn: big-spender}, {revoke_enrol: big-spender}]
"""


async def test_rules_sending_other_identifiers_keep_each_customer_in_order(
    kafka_bootstrap: str, rig: Rig
) -> None:
    """Order by mobile, return by id, read together: enrol, earn, revoke_earn, revoke_enrol."""
    customers = [str(9200 + i) for i in range(20)]
    catalogue = default_catalogue().model_copy(
        update={
            "customers": [CatalogueCustomer(id=int(c), mobile=f"91{c}000000") for c in customers]
        }
    )
    sim = Simulator(catalogue)
    settings = await rig.prepare(sim, partitions=2, rules=RULES_MIXED, batch_window_ms=50)
    events = []
    for customer in customers:
        placed = order(customer, f"o-{customer}")
        placed["data"]["customer"]["mobile"] = f"91{customer}000000"
        events += [placed, return_of(customer, f"o-{customer}")]
    await produce_events(
        kafka_bootstrap, events, {"order.placed": rig.topic, "return.created": rig.topic}
    )
    async with running_service(settings):
        await read_topic(
            kafka_bootstrap,
            settings.outcomes_topic,
            until=lambda r: len(r) >= 4 * len(customers),
            timeout_s=60,
        )

    for customer in customers:
        actions = [entry.action for entry in sim.ledger.entries(customer_id=int(customer))]
        assert actions == ["ENROL", "EARN", "REVOKE_EARN", "REVOKE_ENROL"], customer
        state = holding(sim, customer)
        assert state["earnedIds"] == []
        assert state["issualId"] is None


RULES_PARTIAL = """\
program_id: 2714
promotions:
  direct-10pct: {promotion_id: 202780, type: DIRECT_ISSUE}
rules:
  - name: shoe-coupon
    on: order.placed
    when: 'event.data.items.exists(i, i.category == "shoes")'
    then: [{earn: direct-10pct}]
  - name: shoes-returned
    description: A partial return that gives back the shoe line takes back that order's coupon.
    on: return.created
    when: 'event.data.items.exists(i, i.category == "shoes")'
    then: [{revoke_direct_earn: direct-10pct}]
"""


async def test_a_partial_return_rule_takes_back_only_its_order_coupon(
    kafka_bootstrap: str, rig: Rig
) -> None:
    """Two shoe orders, the shoes of one returned (partial): only that order's coupon goes."""
    sim = Simulator()
    settings = await rig.prepare(sim, partitions=2, rules=RULES_PARTIAL, batch_window_ms=50)
    topics = {"order.placed": rig.topic, "return.created": rig.topic}
    await produce_events(kafka_bootstrap, [order("9105", "o1"), order("9105", "o2")], topics)
    partial = return_of("9105", "o2")
    partial["data"]["full_return"] = False
    partial["data"]["items"] = [
        {
            "sku": "SKU-1",
            "category": "shoes",
            "quantity": 1,
            "amount": {"amount": 6000.0, "currency": "INR"},
        }
    ]
    async with running_service(settings):
        earned = await read_topic(
            kafka_bootstrap, settings.outcomes_topic, until=lambda r: len(r) >= 2, timeout_s=30
        )
        await produce_events(kafka_bootstrap, [partial], topics)
        outcomes = await read_topic(
            kafka_bootstrap, settings.outcomes_topic, until=lambda r: len(r) >= 3, timeout_s=30
        )

    coupon = {o.json()["order_id"]: o.json()["earned_id"] for o in earned}
    revoke = next(o.json() for o in outcomes if o.json()["action"] == "revoke_direct_earn")
    assert revoke["status"] == "applied", revoke
    assert [str(e) for e in revoke["revoked_earn_ids"]] == [coupon["o2"]]
    assert coupon["o1"] in [str(e) for e in sim_earned(sim, "9105")]


def sim_earned(sim: Simulator, customer: str) -> list[Any]:
    answer = lookup(
        sim.state,
        {
            "identifierName": "id",
            "identifierValue": customer,
            "source": "INSTORE",
            "promotionId": "202780",
        },
    )
    (promotion,) = answer.body["data"]["promotions"]
    return list(promotion["earnedIds"])
