"""The holdings ledger and reconciliation: intents, results, read-back, expiry, verdicts."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import orjson
from test_flow import RULES, applied, record

from harness import order_placed
from promo_bridge.domain.commands import Action, Command
from promo_bridge.domain.flow import Flow
from promo_bridge.domain.ledger import Holding, Ledger, StateRecord, decode_key, encode_key
from promo_bridge.domain.outcomes import CommandResult, Delivery, ErrorClass, OutcomeStatus
from promo_bridge.domain.reconcile import Finding, Standing, verified_result, verify
from promo_bridge.domain.restore import RestoredOutcome
from promo_bridge.domain.rules import RuleSet

AT = datetime(2026, 11, 29, tzinfo=UTC)
DAY_MS = 24 * 3600 * 1000


def commands(customer: str = "7", offset: int = 0) -> list[Command]:
    """The enrol and earn of one big order (the `big` promotion) and the direct-issue earn."""
    rules = RuleSet.from_yaml(RULES)
    flow = Flow(rules)
    intake = flow.accept([record(offset, order_placed(customer, 6000.0))], 0.0, AT)
    return intake.accepted


def result(command: Command, **fields: object) -> CommandResult:
    return CommandResult(command.command_id, OutcomeStatus.APPLIED, **fields)  # type: ignore[arg-type]


def replay(ledger: Ledger, records: list[tuple[bytes, bytes | None]]) -> Ledger:
    fresh = Ledger()
    fresh.restore(0, records)
    return fresh


def test_an_intent_is_recorded_for_enrol_and_earn_only() -> None:
    """Intents go out for ENROL and EARN; other actions need none (already-applied codes)."""
    enrol, earn, direct = commands()
    ledger = Ledger(id_factory=lambda: "g1")
    (record_,) = ledger.intend([enrol, earn, direct], now_ms=5)
    assert (record_.partition, record_.key) == (0, b"intents\x1fg1")
    assert set(orjson.loads(record_.value or b"")["c"]) == {
        enrol.command_id,
        earn.command_id,
        direct.command_id,
    }
    assert set(ledger.open_intents(0)) == {enrol.command_id, earn.command_id, direct.command_id}


def test_an_intent_group_is_one_record_per_partition_and_closes_when_all_settled() -> None:
    """A request's intents: one group record per state partition, a tombstone after its last."""
    (enrol_a, _, _), (enrol_b, _, _) = commands("7", 0), commands("8", 1)
    enrol_b = dataclasses.replace(
        enrol_b, position=dataclasses.replace(enrol_b.position, partition=1)
    )
    ledger = Ledger(track_orders=False, id_factory=lambda: "g")
    written = ledger.intend([enrol_a, enrol_b], now_ms=1)
    assert sorted((r.partition, r.key) for r in written) == [
        (0, b"intents\x1fg"),
        (1, b"intents\x1fg"),
    ]
    # A settled ENROL leaves no holding record: nothing to tombstone but the group.
    assert ledger.settle([(enrol_a, result(enrol_a, issual_id="1"))], now_ms=2) == [
        StateRecord(0, b"intents\x1fg", None)
    ]
    assert set(ledger.open_intents(1)) == {enrol_b.command_id}
    assert len(ledger) == 1


def test_intents_kept_in_a_holding_record_by_an_earlier_version_are_read_and_closed() -> None:
    """An intent inside a holding record ("n") is open when read back; its result rewrites it."""
    _, earn, _ = commands()
    key = encode_key(("key", "7", earn.subject_label))
    legacy = orjson.dumps({"t": 1, "e": ["5"], "n": {earn.command_id: ["earn", 1]}})
    ledger = Ledger()
    ledger.restore(0, [(key, legacy)])
    assert set(ledger.open_intents(0)) == {earn.command_id}
    (rewritten,) = ledger.settle([(earn, result(earn, earned_id="6"))], now_ms=2)
    assert rewritten.key == key
    holding = Holding.decode(rewritten.value or b"")
    assert (holding.earned, holding.intents) == (("5", "6"), {})
    # Sent again after a verification, the intent moves to a group and leaves the holding's
    # record at once (left there, it would be read back as open for ever).
    again = Ledger()
    again.restore(0, [(key, legacy)])
    group, holding_record = again.intend([earn], now_ms=3)
    assert group.key.startswith(b"intents\x1f")
    assert holding_record.key == key
    assert Holding.decode(holding_record.value or b"").intents == {}
    assert set(again.open_intents(0)) == {earn.command_id}


def test_a_result_closes_its_intent_and_records_what_it_produced() -> None:
    """An applied EARN's earnedId is kept, and the order it came from; the intent is gone."""
    enrol, earn, _ = commands()
    ledger = Ledger()
    ledger.intend([enrol], now_ms=1)
    ledger.settle([(enrol, result(enrol, issual_id="845"))], now_ms=2)
    ledger.intend([earn], now_ms=3)
    records = ledger.settle([(earn, result(earn, earned_id="900"))], now_ms=4)
    assert ledger.open_intents(0) == {}
    assert ledger.known_earned(earn) == frozenset({"900"})
    holding_record, group_tombstone = records
    assert group_tombstone.value is None
    holding = Holding.decode(holding_record.value or b"")
    assert (holding.earned, holding.orders) == (("900",), {earn.order_id: ("900",)})


def test_a_holding_left_with_nothing_is_dropped_with_a_tombstone() -> None:
    """Without revokes in the rules, a settled ENROL leaves nothing: no memory, a tombstone."""
    enrol = commands()[0]
    ledger = Ledger(track_orders=False)
    assert ledger.intend([enrol], now_ms=1)[0].value is not None
    records = ledger.settle([(enrol, result(enrol, issual_id="845"))], now_ms=2)
    # Its holding never had a record of its own: only the intent group is closed.
    assert [(decode_key(r.key), r.value) for r in records] == [(None, None)]
    assert len(ledger) == 0
    # A holding record of an earlier version that held only the intent gets a tombstone.
    key = encode_key(("key", "7", enrol.subject_label))
    legacy = Ledger(track_orders=False)
    legacy.restore(0, [(key, orjson.dumps({"t": 1, "n": {enrol.command_id: ["enrol", 1]}}))])
    records = legacy.settle([(enrol, result(enrol, issual_id="845"))], now_ms=3)
    assert [(r.key, r.value) for r in records] == [(key, None)]
    assert len(legacy) == 0
    # Settled without an intent (durable state off) leaves nothing either.
    ledger.settle([(enrol, result(enrol, issual_id="845"))], now_ms=3)
    assert len(ledger) == 0
    # With order revokes in the rules, the order is kept: a return of it is known.
    tracking = Ledger()
    tracking.settle([(enrol, result(enrol, issual_id="845"))], now_ms=3)
    assert tracking.order_earns(enrol) == []


def test_the_state_records_read_back_give_the_same_ledger() -> None:
    """Last record per key wins; a tombstone removes the holding; foreign records are skipped."""
    enrol, earn, _ = commands()
    ledger = Ledger()
    written = ledger.intend([enrol], now_ms=1)
    written += ledger.settle([(enrol, result(enrol, issual_id="845"))], now_ms=2)
    written += ledger.intend([earn], now_ms=3)
    log = [(r.key, r.value) for r in written] + [
        (b"not-a-holding", b"{}"),
        (encode_key(("id", "9", "x")), b"["),
    ]
    restored = replay(ledger, log)
    assert set(restored.open_intents(0)) == {earn.command_id}
    assert len(restored) == 1
    assert replay(ledger, [*log, (written[-1].key, None)]).open_intents(0) == {}


def test_an_outcome_read_back_closes_the_intent_it_answers() -> None:
    """Died after the outcome, before the state record: the read-back settles the intent."""
    enrol, earn, _ = commands()
    ledger = Ledger()
    ledger.intend([earn], now_ms=1)
    closed = ledger.settle_restored(
        0,
        [RestoredOutcome(earn.command_id, ("orders", 0), 0, 17, status="applied", earned_id="901")],
        now_ms=2,
    )
    # The holding's record (what the earn made) and the group's tombstone.
    assert [r.value is None for r in closed] == [False, True]
    assert ledger.open_intents(0) == {}
    assert ledger.known_earned(earn) == frozenset({"901"})
    assert ledger.known_earned(enrol) == frozenset({"901"})


def test_idle_holdings_expire_with_a_tombstone_but_never_with_an_open_intent() -> None:
    """Expiry drops holdings idle past the retention; one waiting for verification stays."""
    enrol, _, direct = commands()
    ledger = Ledger()
    ledger.intend([enrol, direct], now_ms=0)
    ledger.settle([(enrol, result(enrol, issual_id="1"))], now_ms=0)
    tombstones = ledger.expire(now_ms=31 * DAY_MS, retention_ms=30 * DAY_MS)
    assert [(decode_key(t.key), t.value) for t in tombstones] == [
        (("key", "7", enrol.subject_label), None)
    ]
    assert set(ledger.open_intents(0)) == {direct.command_id}


def test_expiry_takes_exactly_the_idle_holdings_whatever_order_they_were_read_back_in() -> None:
    """A holding changed lately stays, older ones go, also when the topic held them unordered."""
    ledger = Ledger()
    changed_at = {"1": 5 * DAY_MS, "2": 1 * DAY_MS, "3": 9 * DAY_MS, "4": 2 * DAY_MS}
    # As time goes (the service's clock), in an order that is not the customers'.
    for customer, at_ms in sorted(changed_at.items(), key=lambda item: item[1]):
        enrol = commands(customer)[0]
        ledger.settle([(enrol, result(enrol, issual_id=customer))], now_ms=at_ms)
    # Customer 2's holding changes again, latest of all.
    enrol_2 = commands("2")[0]
    ledger.settle([(enrol_2, result(enrol_2, issual_id="2b"))], now_ms=10 * DAY_MS)
    read_back = Ledger()
    read_back.restore(
        0,
        [
            (
                encode_key(("key", customer, enrol_2.subject_label)),
                Holding(
                    earned=(customer,), seen_ms=10 * DAY_MS if customer == "2" else at_ms
                ).encode(),
            )
            # Not the order of the changes.
            for customer, at_ms in sorted(changed_at.items(), reverse=True)
        ],
    )
    for holdings in (ledger, read_back):
        gone = holdings.expire(now_ms=36 * DAY_MS, retention_ms=30 * DAY_MS)
        assert sorted(t.key for t in gone) == [
            encode_key(("key", customer, enrol_2.subject_label)) for customer in ("1", "4")
        ]
        assert len(holdings) == 2


def test_verify_tells_applied_from_not_applied_and_undecided() -> None:
    """ENROL by issualId; EARN by earnedIds this service did not record (one: ours)."""
    enrol, earn, _ = commands()
    assert verify(enrol, None, frozenset()).finding is Finding.NOT_APPLIED
    assert verify(enrol, Standing(issual_id=None), frozenset()).finding is Finding.NOT_APPLIED
    assert verify(enrol, Standing(issual_id="845"), frozenset()).issual_id == "845"
    known = frozenset({"1"})
    assert verify(earn, Standing("845", frozenset({"1"})), known).finding is Finding.NOT_APPLIED
    found = verify(earn, Standing("845", frozenset({"1"}), frozenset({"2"})), known)
    assert (found.finding, found.earned_id) == (Finding.APPLIED, "2")
    undecided = verify(earn, Standing("845", frozenset({"1", "2", "3"})), known)
    assert undecided.finding is Finding.UNDECIDED


def test_verdicts_become_results_or_a_send() -> None:
    """Applied → applied by lookup; undecided → failed/unverified; not applied → sent (None)."""
    _, earn, _ = commands()
    applied_result = verified_result(
        earn, verify(earn, Standing("8", frozenset({"5"})), frozenset())
    )
    assert applied_result is not None
    assert (applied_result.status, applied_result.earned_id) == (OutcomeStatus.APPLIED, "5")
    assert applied_result.extra == {"verified_by": "lookup"}
    undecided = verified_result(
        earn, verify(earn, Standing("8", frozenset({"5", "6"})), frozenset())
    )
    assert undecided is not None
    assert (undecided.status, undecided.error_class) == (
        OutcomeStatus.FAILED,
        ErrorClass.UNVERIFIED,
    )
    assert verified_result(earn, verify(earn, None, frozenset())) is None


def test_the_flow_verifies_an_unsure_command_before_sending_it_again() -> None:
    """A lost answer marks the command unsure; its next batch carries what the ledger knows."""
    flow = Flow(RuleSet.from_yaml(RULES))
    flow.accept([record(0, order_placed("7", 6000.0))], 0.0, AT)
    first = next(b for b in flow.drain(0.0) if b.key.action is Action.ENROL)
    assert flow.intents(first.commands, 1)
    (enrol,) = first.commands
    lost = Delivery(pending=first.commands, unsure=frozenset({enrol.command_id}))
    assert flow.delivered(first, lost, 0.0) == []
    (again,) = [b for b in flow.drain(100.0) if b.key.action is Action.ENROL]
    assert dict(again.verify) == {enrol.command_id: frozenset()}
    completions = flow.delivered(again, applied(again), 100.0)
    flow.settle(completions, 2)
    flow.published(completions)
    (earn_batch,) = [b for b in flow.drain(100.0) if b.key.action is Action.EARN]
    assert dict(earn_batch.verify) == {}


def test_intents_read_back_make_their_commands_unsure_until_an_outcome_says_otherwise() -> None:
    """A restored open intent is verified when its event is re-read, unless its outcome is back."""
    enrol, earn, _ = commands()
    ledger = Ledger()
    state = [(r.key, r.value) for r in ledger.intend([enrol, earn], now_ms=1)]
    flow = Flow(RuleSet.from_yaml(RULES))
    flow.restore_state(0, state)
    flow.restore(
        ("orders", 0), [RestoredOutcome(earn.command_id, ("other", 0), 3, 9, "applied")], 10
    )
    flow.accept([record(0, order_placed("7", 6000.0))], 0.0, AT)
    batches = flow.drain(0.0)
    verify_ids = {cid for b in batches for cid in b.verify}
    assert verify_ids == {enrol.command_id}
