"""Rules: load-time validation with file/line/rule errors, and events to commands."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path
from typing import Any

import cel
import pytest

from promo_bridge.domain import _cel
from promo_bridge.domain.commands import (
    Action,
    EventPosition,
    IdentifierName,
    PromotionRef,
    TargetRef,
)
from promo_bridge.domain.events import CEL_VIEW_CONTEXT, Event, decode_event
from promo_bridge.domain.rules import (
    PromotionType,
    RulesError,
    RuleSet,
    SkipReason,
    Verdict,
    command_id,
    load_rules,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
POSITION = EventPosition("orders", 3, 1200)

HEADER = """\
program_id: 2714
promotions:
  big-spender: {promotion_id: 202779, type: ENROL_AND_ISSUE}
  direct-10pct: {promo_identifier: 95c77d88-470c-4dd3-bde4-606ae1b64277, type: DIRECT_ISSUE}
targets:
  monthly-milestone: {target_group_id: 12, target_id: 34}
"""


def rules_from(body: str, header: str = HEADER) -> RuleSet:
    return RuleSet.from_yaml(header + textwrap.dedent(body), "rules.yaml")


def problems_of(body: str, header: str = HEADER) -> list[str]:
    with pytest.raises(RulesError) as caught:
        rules_from(body, header)
    return [str(problem) for problem in caught.value.problems]


def event(event_type: str, data: dict[str, Any], event_id: str = "evt-1") -> Event:
    doc = {"specversion": "1.0", "id": event_id, "source": "//shop", "type": event_type}
    return decode_event(json.dumps({**doc, "data": data}))


def customer(**fields: Any) -> dict[str, Any]:
    return {"source": "INSTORE", **fields}


def order(amount: float | str, **changes: Any) -> Event:
    data: dict[str, Any] = {
        "order_id": "o-1",
        "customer": customer(id="423927867", mobile="919986000586"),
        "total": {"amount": amount, "currency": "INR"},
        "items": [
            {
                "sku": "S-1",
                "category": "shoes",
                "quantity": 1,
                "amount": {"amount": 1, "currency": "INR"},
            }
        ],
    }
    data.update(changes)
    return event("order.placed", data)


def returned(full: bool, **customer_fields: Any) -> Event:
    fields = customer_fields or {"id": "423927867"}
    return event(
        "return.created",
        {
            "return_id": "r-1",
            "order_id": "o-1",
            "full_return": full,
            "customer": customer(**fields),
        },
    )


# -- the shipped examples --------------------------------------------------------------------


def test_example_rules_load() -> None:
    """examples/rules.yaml loads, with its promotions, target and rules, and no warnings."""
    rules = load_rules(EXAMPLES / "rules.yaml")
    assert rules.promotions["big-spender"].ref == PromotionRef(2714, promotion_id=202779)
    assert rules.promotions["direct-10pct"].type is PromotionType.DIRECT_ISSUE
    assert rules.targets["monthly-milestone"].ref == TargetRef(12, 34)
    assert [r.name for r in rules.rules][:1] == ["enrol-big-spenders"]
    assert rules.event_types == {"order.placed", "review.submitted", "return.created"}
    assert rules.warnings == ()


def test_bad_example_names_file_line_and_rule() -> None:
    """examples/bad-rules.yaml fails on the revoke_enrol of a direct-issue promotion, by line."""
    with pytest.raises(RulesError) as caught:
        load_rules(EXAMPLES / "bad-rules.yaml")
    lines = (EXAMPLES / "bad-rules.yaml").read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if "revoke_enrol:" in text)
    assert str(caught.value) == (
        f"{EXAMPLES / 'bad-rules.yaml'}:{line}: rule 'revoke-on-return': action revoke_enrol"
        " is not supported by promotion 'direct-10pct' (DIRECT_ISSUE)"
    )


def test_every_example_event_is_valid() -> None:
    """Every line of examples/events.jsonl is a valid CloudEvent."""
    for line in (EXAMPLES / "events.jsonl").read_text().splitlines():
        decode_event(line)


# -- load errors -----------------------------------------------------------------------------


def test_action_unsupported_by_promotion_type_is_a_load_error() -> None:
    """enrol on a direct-issue promotion is refused at load, naming line and rule."""
    problems = problems_of(
        """\
        rules:
          - name: enrol-direct
            on: order.placed
            then: [{enrol: direct-10pct}]
        """
    )
    assert problems == [
        (
            "rules.yaml:10: rule 'enrol-direct': action enrol is not supported by promotion"
            " 'direct-10pct' (DIRECT_ISSUE)"
        )
    ]


def test_every_problem_is_listed_in_line_order() -> None:
    """A file with several mistakes reports all of them, sorted by line."""
    problems = problems_of(
        """\
        rules:
          - name: a
            on: order.placed
            when: "event.data.total.amount >="
            then: [{earn: no-such-promotion}]
          - name: a
            on: order.placed
            colour: red
            then: [{unenroll: big-spender}]
        """
    )
    assert problems == [
        "rules.yaml:10: rule 'a': when: invalid CEL at column 27: mismatched input '<EOF>'",
        "rules.yaml:11: rule 'a': action earn: unknown promotion 'no-such-promotion'",
        "rules.yaml:12: rule 'a': duplicate rule name (first on line 8)",
        (
            "rules.yaml:14: rule 'a': rule: unknown key 'colour' (expected name, description, on,"
            " when, then, identifier_preference)"
        ),
        (
            "rules.yaml:15: rule 'a': action unenroll: unknown target 'big-spender'"
            " (it is a promotion)"
        ),
    ]


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("evnt.data.x > 1", "unknown variable 'evnt' (a condition sees only 'event')"),
        ("lowerAscii(event.type) == 'x'", "unknown function 'lowerAscii'"),
        ("event.data.(", "invalid CEL at column 12: no viable alternative at input '.('"),
    ],
)
def test_bad_conditions_are_load_errors(when: str, message: str) -> None:
    """Syntax errors, unknown variables and unknown functions in `when` stop the load."""
    problems = problems_of(
        f"""\
        rules:
          - name: r
            on: order.placed
            when: {json.dumps(when)}
            then: [{{earn: big-spender}}]
        """
    )
    assert problems == [f"rules.yaml:10: rule 'r': when: {message}"]


def test_revoke_direct_earn_needs_a_promotion_id() -> None:
    """revoke_direct_earn is refused on a promotion known only by promo_identifier."""
    problems = problems_of(
        """\
        rules:
          - name: r
            on: return.created
            then: [{revoke_direct_earn: direct-10pct}]
        """
    )
    assert problems == [
        (
            "rules.yaml:10: rule 'r': action revoke_direct_earn needs promotion 'direct-10pct'"
            " to have a promotion_id"
        )
    ]


def test_revoke_direct_earn_is_allowed_on_both_types() -> None:
    """revoke_direct_earn loads on direct-issue and enrol-and-issue promotions (FACTS.md)."""
    header = HEADER.replace(
        "promo_identifier: 95c77d88-470c-4dd3-bde4-606ae1b64277", "promotion_id: 5709"
    )
    rules = rules_from(
        """\
        rules:
          - name: r
            on: return.created
            then: [{revoke_direct_earn: direct-10pct}, {revoke_direct_earn: big-spender}]
        """,
        header,
    )
    assert [a.action for a in rules.rules[0].actions] == [Action.REVOKE_DIRECT_EARN] * 2


def test_action_order_within_a_rule_is_checked() -> None:
    """earn before enrol, or revoke_enrol before revoke_earn, of one promotion is refused."""
    problems = problems_of(
        """\
        rules:
          - name: r
            on: order.placed
            then: [{earn: big-spender}, {enrol: big-spender}]
          - name: s
            on: return.created
            then:
              - revoke_enrol: big-spender
              - revoke_earn: big-spender
        """
    )
    assert problems == [
        (
            "rules.yaml:10: rule 'r': on promotion 'big-spender' enrol must come before earn"
            " (actions run in list order)"
        ),
        (
            "rules.yaml:15: rule 's': on promotion 'big-spender' revoke_earn must come before"
            " revoke_enrol (actions run in list order)"
        ),
    ]


def test_promotion_definitions_are_checked() -> None:
    """Promotion entries need one id, a known type and a program; duplicates are refused."""
    header = """\
promotions:
  a: {promotion_id: 1, promo_identifier: x, type: LOYALTY, program_id: 7}
  b: {promotion_id: 2, type: GENERIC, program_id: 7}
  c: {promotion_id: 3, type: LOYALTY}
  d: {promotion_id: 4, type: LOYALTY, program_id: 7}
  e: {promotion_id: 4, type: ISSUE_AND_EARN, program_id: 7}
  f: {promo_identifier: 12345, type: DIRECT, program_id: 7}
"""
    problems = problems_of("rules:\n  - {name: r, on: x, then: [{earn: d}]}\n", header)
    assert problems == [
        "rules.yaml:2: promotion 'a' needs exactly one of promotion_id or promo_identifier",
        (
            "rules.yaml:3: promotion 'b': unknown type 'GENERIC' (expected ENROL_AND_ISSUE,"
            " LOYALTY_EARNING, ISSUE_AND_EARN, DIRECT_ISSUE, LOYALTY, DIRECT, DIRECT_EARN)"
        ),
        "rules.yaml:4: promotion 'c' has no program_id (set it at the top or on the promotion)",
        "rules.yaml:6: promotion 'e' is the same Capillary promotion as 'd'",
        "rules.yaml:7: promotion 'f': promo_identifier must be a non-empty string (quote it)",
    ]


def test_backend_type_names_are_aliases() -> None:
    """LOYALTY_EARNING/ISSUE_AND_EARN mean enrol-and-issue; LOYALTY/DIRECT/DIRECT_EARN direct."""
    header = "program_id: 1\npromotions:\n" + "".join(
        f"  p{n}: {{promotion_id: {n}, type: {name}}}\n"
        for n, name in enumerate(
            ["LOYALTY_EARNING", "issue_and_earn", "LOYALTY", "DIRECT", "DIRECT_EARN"], 1
        )
    )
    rules = rules_from("rules:\n  - {name: r, on: x, then: [{earn: p1}]}\n", header)
    types = [rules.promotions[f"p{n}"].type for n in range(1, 6)]
    assert types == [PromotionType.ENROL_AND_ISSUE] * 2 + [PromotionType.DIRECT_ISSUE] * 3
    assert [rules.promotions[f"p{n}"].ref.kind for n in range(1, 6)] == types


def test_commands_carry_the_promotion_type_of_the_rules_file() -> None:
    """Each command's PromotionRef.kind is its promotion's type; a direct EARN's issual is dummy."""
    rules = rules_from(
        """\
        rules:
          - name: big
            on: order.placed
            then: [{enrol: big-spender}, {earn: big-spender}, {earn: direct-10pct}]
        """
    )
    commands = rules.commands_for(order(6000.0), POSITION)
    assert [(c.action, c.promotion.kind if c.promotion else None) for c in commands] == [
        (Action.ENROL, PromotionType.ENROL_AND_ISSUE),
        (Action.EARN, PromotionType.ENROL_AND_ISSUE),
        (Action.EARN, PromotionType.DIRECT_ISSUE),
    ]
    assert [c.issual_id_is_dummy for c in commands] == [False, False, True]


def test_the_promotion_type_changes_no_equality_or_batch_key() -> None:
    """kind is description, not identity: refs, batch keys and hashes ignore it."""
    rules = rules_from("rules:\n  - {name: r, on: order.placed, then: [{earn: direct-10pct}]}\n")
    (command,) = rules.commands_for(order(10.0), POSITION)
    assert command.promotion is not None
    bare = dataclasses.replace(command.promotion, kind=None)
    assert command.promotion == bare
    assert hash(command.promotion) == hash(bare)
    assert command.batch_key == dataclasses.replace(command, promotion=bare).batch_key
    assert not dataclasses.replace(command, promotion=bare).issual_id_is_dummy


def test_yaml_structure_problems() -> None:
    """Duplicate keys, unknown top-level keys, and a bad identifier preference are refused."""
    header = """\
program_id: 1
program_id: 2
colour: red
identifier_preference: [id, phone]
promotions:
  p: {promotion_id: 1, type: LOYALTY}
"""
    problems = problems_of("rules:\n  - {name: r, on: x, then: [{earn: p}]}\n", header)
    assert problems == [
        "rules.yaml:2: the rules file: duplicate key 'program_id' (first on line 1)",
        (
            "rules.yaml:3: the rules file: unknown key 'colour' (expected program_id,"
            " identifier_preference, promotions, targets, rules)"
        ),
        "rules.yaml:4: identifier_preference: 'phone' is not one of id, mobile, email",
    ]


def test_invalid_yaml_and_empty_files() -> None:
    """Unparsable YAML, an empty file, and a missing rules list are reported with a line."""
    assert problems_of("rules: [\n", "") == [
        "rules.yaml:2: invalid YAML: expected the node content, but found '<stream end>'"
    ]
    assert problems_of("", "") == ["rules.yaml:1: the rules file is empty"]
    assert problems_of("", "program_id: 1\n") == [
        "rules.yaml:1: the rules file needs a 'rules' list"
    ]


def test_on_key_is_not_read_as_boolean() -> None:
    """`on:` stays the key 'on' (YAML 1.1 would read it as true)."""
    rules = rules_from("rules:\n  - {name: r, on: order.placed, then: [{enrol: big-spender}]}\n")
    assert rules.rules[0].on == "order.placed"


def test_missing_rule_parts_are_reported() -> None:
    """A rule without name, on or then is refused, labelled by its position."""
    problems = problems_of("rules:\n  - {when: 'true'}\n")
    assert problems == [
        "rules.yaml:8: rule '#1': a rule needs a name",
        "rules.yaml:8: rule '#1': a rule needs 'on' (the event type it matches)",
        "rules.yaml:8: rule '#1': a rule needs 'then' (a list of actions)",
    ]


def test_unreadable_file_is_a_rules_error(tmp_path: Path) -> None:
    """A missing rules file raises RulesError, like any other bad rules file."""
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "absent.yaml")


def test_suspicious_but_legal_things_are_warnings() -> None:
    """Undeclared fields and unregistered event types load, with warnings naming them."""
    rules = rules_from(
        """\
        rules:
          - name: r
            on: order.placed
            when: 'event.data.totl.amount > 1.0 || event.data.items.exists(i, i.categry == "x")'
            then: [{earn: big-spender}]
          - name: s
            on: cart.abandoned
            when: "event.data.value.amount > 1.0"
            then: [{earn: big-spender}]
        """
    )
    assert [str(w) for w in rules.warnings] == [
        (
            "rules.yaml:10: rule 'r': when: event.data.totl is not a declared field; only events"
            " that carry it as an extra field can match"
        ),
        (
            "rules.yaml:10: rule 'r': when: event.data.items[*].categry is not a declared field;"
            " only events that carry it as an extra field can match"
        ),
        (
            "rules.yaml:13: rule 's': no payload model is registered for type 'cart.abandoned':"
            " its data is untyped"
        ),
    ]


REVOKE_ENROL_WARNING = (
    "revoke_enrol on promotion 'big-spender' has no revoke_earn or revoke_direct_earn of it"
    " before it: Capillary wants the earns revoked before the enrolment (put one earlier in this"
    " rule)"
)


def test_revoke_enrol_without_an_earlier_earn_revoke_is_a_warning() -> None:
    """A revoke_enrol with no revoke of the earns before it loads, with a warning at its line."""
    rules = rules_from(
        """\
        rules:
          - name: r
            on: return.created
            then:
              - revoke_enrol: big-spender
              - revoke_direct_earn: big-spender
        """
    )
    assert [str(w) for w in rules.warnings] == [f"rules.yaml:11: rule 'r': {REVOKE_ENROL_WARNING}"]


@pytest.mark.parametrize("revoke", ["revoke_earn", "revoke_direct_earn"])
def test_an_earlier_earn_revoke_in_the_rule_silences_the_warning(revoke: str) -> None:
    """revoke_earn or revoke_direct_earn of the same promotion earlier in the rule is enough."""
    rules = rules_from(
        f"""\
        rules:
          - name: r
            on: return.created
            then: [{{{revoke}: big-spender}}, {{revoke_enrol: big-spender}}]
        """
    )
    assert rules.warnings == ()


def test_an_earn_revoke_of_another_promotion_does_not_count() -> None:
    """Revoking the earns of a different promotion leaves the revoke_enrol warned about."""
    rules = rules_from(
        """\
        rules:
          - name: r
            on: return.created
            then: [{revoke_earn: direct-10pct}, {revoke_enrol: big-spender}]
        """
    )
    assert [str(w) for w in rules.warnings] == [f"rules.yaml:10: rule 'r': {REVOKE_ENROL_WARNING}"]


@pytest.mark.parametrize(
    ("earlier_when", "earlier_on", "warned"),
    [
        pytest.param(None, "return.created", False, id="unconditional"),
        pytest.param("event.data.full_return", "return.created", False, id="same-condition"),
        pytest.param("has(event.data.refund)", "return.created", True, id="other-condition"),
        pytest.param(None, "order.placed", True, id="other-event-type"),
    ],
)
def test_an_earlier_rule_counts_only_when_it_always_runs_first(
    earlier_when: str | None, earlier_on: str, warned: bool
) -> None:
    """An earlier rule's earn revoke counts when it fires on every event the later one does."""
    when = f", when: {json.dumps(earlier_when)}" if earlier_when else ""
    rules = rules_from(
        f"""\
        rules:
          - {{name: take-back-earns, on: {earlier_on}{when}, then: [{{revoke_earn: big-spender}}]}}
          - name: take-back-enrolment
            on: return.created
            when: "event.data.full_return"
            then: [{{revoke_enrol: big-spender}}]
        """
    )
    expected = [f"rules.yaml:12: rule 'take-back-enrolment': {REVOKE_ENROL_WARNING}"]
    assert [str(w) for w in rules.warnings] == (expected if warned else [])


# -- events to commands ----------------------------------------------------------------------


def test_example_rules_turn_a_big_order_into_enrol_and_coupon() -> None:
    """A 6000 INR shoe order enrols by id and earns the direct coupon by mobile (preference)."""
    rules = load_rules(EXAMPLES / "rules.yaml")
    commands = rules.commands_for(order(6000.0), POSITION)
    assert [(c.rule, c.action, c.identifier_name, c.identifier_value) for c in commands] == [
        ("enrol-big-spenders", Action.ENROL, IdentifierName.ID, "423927867"),
        ("shoe-lovers-get-10pct", Action.EARN, IdentifierName.MOBILE, "919986000586"),
    ]
    enrol = commands[0]
    assert enrol.position == POSITION
    assert enrol.event_id == "evt-1"
    assert enrol.source == "INSTORE"
    assert enrol.promotion == PromotionRef(2714, promotion_id=202779)
    assert enrol.subject == "big-spender"


def test_command_ids_are_deterministic_and_distinct() -> None:
    """The same event gives the same ids; another event or action index gives others."""
    rules = load_rules(EXAMPLES / "rules.yaml")
    first = [c.command_id for c in rules.commands_for(returned(True), POSITION)]
    again = [c.command_id for c in rules.commands_for(returned(True), EventPosition("x", 0, 9))]
    assert first == again
    assert len(set(first)) == 3
    assert first[0] == command_id("evt-1", "revoke-on-return", 0)
    assert len(first[0]) == 32
    other = rules.commands_for(
        event("return.created", returned(True).data.model_dump(mode="json"), event_id="evt-2"),
        POSITION,
    )
    assert not set(first) & {c.command_id for c in other}


def test_revocation_runs_in_list_order_and_unenrolls_by_id() -> None:
    """A full return makes revoke_earn, revoke_enrol, then unenroll with the numeric id."""
    rules = load_rules(EXAMPLES / "rules.yaml")
    commands = rules.commands_for(returned(True), POSITION)
    assert [c.action for c in commands] == [
        Action.REVOKE_EARN,
        Action.REVOKE_ENROL,
        Action.UNENROLL,
    ]
    assert commands[2].target == TargetRef(12, 34)
    assert commands[2].identifier_name is IdentifierName.ID
    assert rules.commands_for(returned(False), POSITION) == []


def test_unenroll_without_customer_id_is_skipped_with_a_reason() -> None:
    """A customer known only by mobile gets the revokes, and the unenroll is skipped."""
    rules = load_rules(EXAMPLES / "rules.yaml")
    result = rules.evaluate(returned(True, mobile="919900000001"), POSITION)
    assert [c.action for c in result.commands] == [Action.REVOKE_EARN, Action.REVOKE_ENROL]
    assert [c.identifier_name for c in result.commands] == [IdentifierName.MOBILE] * 2
    ((rule, skipped),) = result.skipped
    assert rule == "revoke-on-return"
    assert skipped.reason is SkipReason.NO_CUSTOMER_ID
    assert skipped.action is Action.UNENROLL


def test_unenroll_needs_a_numeric_id() -> None:
    """A non-numeric customer id cannot be a customerId: the unenroll is skipped."""
    rules = load_rules(EXAMPLES / "rules.yaml")
    result = rules.evaluate(returned(True, id="cust-7"), POSITION)
    assert [s.reason for _, s in result.skipped] == [SkipReason.NO_CUSTOMER_ID]
    assert "not 'cust-7'" in result.skipped[0][1].detail


def test_identifier_preference_missing_identifier_is_skipped() -> None:
    """When the customer has none of the rule's preferred identifiers, the action is skipped."""
    rules = rules_from(
        """\
        rules:
          - name: r
            on: order.placed
            identifier_preference: [email]
            then: [{earn: big-spender}]
        """
    )
    result = rules.evaluate(order(10.0), POSITION)
    assert result.commands == []
    assert [(r, s.reason) for r, s in result.skipped] == [("r", SkipReason.NO_IDENTIFIER)]


def test_top_level_identifier_preference_applies_to_rules() -> None:
    """identifier_preference at the top sets the default order for every rule."""
    header = "identifier_preference: [mobile, id]\n" + HEADER
    rules = rules_from(
        "rules:\n  - {name: r, on: order.placed, then: [{earn: big-spender}]}\n", header
    )
    (command,) = rules.commands_for(order(1.0), POSITION)
    assert command.identifier_name is IdentifierName.MOBILE


def test_int_and_double_literals_both_compare_with_amounts() -> None:
    """`amount >= 5000` and `amount >= 5000.0` agree, both at and below the threshold."""
    for literal in ("5000", "5000.0"):
        rules = rules_from(
            f"""\
            rules:
              - name: r
                on: order.placed
                when: "event.data.total.amount >= {literal}"
                then: [{{enrol: big-spender}}]
            """
        )
        assert len(rules.commands_for(order("5000.00"), POSITION)) == 1
        assert rules.commands_for(order("4999.99"), POSITION) == []


def test_condition_errors_do_not_match_and_are_reported() -> None:
    """A condition reading an absent field does not match; the error is in the verdict."""
    rules = rules_from(
        """\
        rules:
          - name: by-store
            on: order.placed
            when: 'event.data.store == "s-42"'
            then: [{earn: big-spender}]
          - name: guarded
            on: order.placed
            when: 'has(event.data.store) && event.data.store == "s-42"'
            then: [{earn: big-spender}]
        """
    )
    result = rules.evaluate(order(1.0), POSITION)
    assert result.commands == []
    assert [v.verdict for v in result.verdicts] == [
        Verdict.CONDITION_ERROR,
        Verdict.CONDITION_FALSE,
    ]
    assert result.errors == [("by-store", "no such key: store")]


def test_non_boolean_condition_is_an_error() -> None:
    """A condition that yields a non-bool is an evaluation error, not a match."""
    rules = rules_from(
        "rules:\n  - {name: r, on: order.placed, when: 'event.id', then: [{earn: big-spender}]}\n"
    )
    result = rules.evaluate(order(1.0), POSITION)
    assert result.errors == [("r", "condition returned str, not a bool")]


def test_untyped_event_types_use_the_customer_they_carry() -> None:
    """Rules on an unregistered type read data.customer; without one, actions are skipped."""
    rules = rules_from(
        """\
        rules:
          - name: r
            on: cart.abandoned
            when: "event.data.value > 100.0"
            then: [{earn: big-spender}]
        """
    )
    carried = event("cart.abandoned", {"value": 150, "customer": customer(email="a@b.in")})
    (command,) = rules.commands_for(carried, POSITION)
    assert (command.identifier_name, command.identifier_value) == (IdentifierName.EMAIL, "a@b.in")
    bare = rules.evaluate(event("cart.abandoned", {"value": 150}), POSITION)
    assert [s.reason for _, s in bare.skipped] == [SkipReason.NO_CUSTOMER]
    invalid = rules.evaluate(
        event("cart.abandoned", {"value": 150, "customer": {"source": "X"}}), POSITION
    )
    assert [s.detail for _, s in invalid.skipped] == [
        "data.customer: at least one of id, mobile, email is required"
    ]


def test_events_of_other_types_make_nothing() -> None:
    """An event type no rule listens to yields an empty explanation."""
    rules = load_rules(EXAMPLES / "rules.yaml")
    result = rules.explain(event("cart.abandoned", {}))
    assert result.verdicts == ()
    assert "no rule listens to 'cart.abandoned'" in result.render()


def test_explain_says_why_each_rule_did_or_did_not_match() -> None:
    """explain lists matched rules with commands and unmatched ones with their condition."""
    rules = load_rules(EXAMPLES / "rules.yaml")
    small = order(100.0, items=[])
    text = rules.explain(small).render()
    assert text.splitlines() == [
        "event evt-1 (order.placed): 0 commands",
        "  enrol-big-spenders: not matched: condition is false (event.data.total.amount >= 5000.0)",
        (
            "  shoe-lovers-get-10pct: not matched: condition is false"
            ' (event.data.items.exists(i, i.category == "shoes"))'
        ),
    ]
    as_json = rules.explain(order(6000.0)).to_dict()
    assert [r["verdict"] for r in as_json["rules"]] == ["matched", "matched"]
    assert as_json["rules"][0]["commands"][0]["promotion_or_target"] == "202779"


# -- the CEL view ----------------------------------------------------------------------------

CONDITIONS = [
    "event.data.total.amount >= 5000.0",
    'event.data.items.exists(i, i.category == "shoes")',
    'event.data.items.exists(i, i.category.startsWith("sh")) && event.data.total.amount > 1.0',
    "event.data.items.filter(i, i.quantity > 1).exists(j, j.amount.amount > 100.0)",
    "event.data.items.map(i, i.amount.amount).exists(a, a > 1000.0)",
    "size(event.data.items) > 1 && event.data.items.all(i, has(i.category))",
    'has(event.data.customer.tier) && event.data.customer.tier == "gold"',
    'event.type == "order.placed" && event["data"]["store"] == "s-42"',
    "event.data.rating >= 4",
    "event.data.full_return",
    'has(event.data.store) && event.data.store.startsWith("s-")',
    "event.data.items.exists(i, i == {})",
]


def test_pruned_view_evaluates_like_the_full_event() -> None:
    """Every condition gives the same result (or error) on its pruned view as on the full one."""
    events = [decode_event(line) for line in (EXAMPLES / "events.jsonl").read_text().splitlines()]
    for source in CONDITIONS:
        condition, problems = _cel.compile_condition(source)
        assert condition is not None, problems
        include = _cel.view_include(condition.paths)
        for item in events:
            full = item.model_dump(mode="json", context=CEL_VIEW_CONTEXT, exclude_none=True)
            pruned = item.model_dump(
                mode="json", context=CEL_VIEW_CONTEXT, exclude_none=True, include=include
            )
            assert _outcome(condition, full) == _outcome(condition, pruned), (source, item.id)


def _outcome(condition: _cel.Condition, view: dict[str, Any]) -> object:
    try:
        return condition.evaluate(cel.Context(variables={"event": view}))
    except _cel.ConditionError as exc:
        return f"error: {exc}"


def test_view_include_prunes_to_the_fields_read() -> None:
    """A condition's view holds only the fields it reads (and list elements' fields)."""
    paths = _cel.referenced_paths(
        'event.data.total.amount > 1.0 && event.data.items.exists(i, i.sku == "x")'
    )
    assert _cel.view_include(paths) == {
        "data": {"total": {"amount": True}, "items": {"__all__": {"sku": True}}}
    }
    assert _cel.view_include(_cel.referenced_paths("event == {}")) is None


NATIVE_EXAMPLES = {
    "size": "size([1]) == 1",
    "contains": '"ab".contains("a")',
    "startsWith": '"ab".startsWith("a")',
    "endsWith": '"ab".endsWith("b")',
    "matches": '"ab".matches("a.*")',
    "int": "int(1.5) == 1",
    "uint": "uint(1) == 1u",
    "double": "double(1) == 1.0",
    "string": 'string(1) == "1"',
    "bytes": 'bytes("a") == b"a"',
    "timestamp": 'timestamp("2020-01-01T00:00:00Z") < timestamp("2021-01-01T00:00:00Z")',
    "duration": 'duration("1s") < duration("2s")',
    "dyn": "dyn(1) == 1",
    "type": "type(1) == int",
    "getFullYear": 'timestamp("2020-01-01T00:00:00Z").getFullYear() == 2020',
    "getMonth": 'timestamp("2020-01-01T00:00:00Z").getMonth() == 0',
    "getDate": 'timestamp("2020-01-01T00:00:00Z").getDate() == 1',
    "getDayOfMonth": 'timestamp("2020-01-01T00:00:00Z").getDayOfMonth() == 0',
    "getDayOfWeek": 'timestamp("2020-01-01T00:00:00Z").getDayOfWeek() == 3',
    "getDayOfYear": 'timestamp("2020-01-01T00:00:00Z").getDayOfYear() == 0',
    "getHours": 'timestamp("2020-01-01T00:00:00Z").getHours() == 0',
    "getMinutes": 'timestamp("2020-01-01T00:00:00Z").getMinutes() == 0',
    "getSeconds": 'timestamp("2020-01-01T00:00:00Z").getSeconds() == 0',
    "getMilliseconds": 'timestamp("2020-01-01T00:00:00Z").getMilliseconds() == 0',
    "of": "optional.of(1).hasValue()",
    "none": "!optional.none().hasValue()",
    "hasValue": "optional.of(1).hasValue()",
    "value": "optional.of(1).value() == 1",
    "orValue": "optional.none().orValue(1) == 1",
    "or": "optional.none().or(optional.of(1)).value() == 1",
}


def test_every_allowed_function_exists_in_the_cel_library() -> None:
    """Each function the loader accepts compiles, passes the checks and evaluates to true."""
    assert set(NATIVE_EXAMPLES) == set(_cel.NATIVE_FUNCTIONS)
    for name, source in NATIVE_EXAMPLES.items():
        condition, problems = _cel.compile_condition(source)
        assert condition is not None, name
        assert problems == [], name
        assert condition.evaluate(cel.Context()) is True, name
