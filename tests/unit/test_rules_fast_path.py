"""Compiled conditions: the subset they accept, and answers that always equal the CEL library's."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import cel
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, field_serializer

from promo_bridge.domain import _cel
from promo_bridge.domain._cel_fast import compile_fast
from promo_bridge.domain.commands import EventPosition
from promo_bridge.domain.events import (
    CEL_VIEW_CONTEXT,
    DEFAULT_REGISTRY,
    Event,
    EventRegistry,
    decode_event,
)
from promo_bridge.domain.rules import RuleSet, load_rules

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
POSITION = EventPosition("orders", 0, 1)


def generic(data: Any, event_type: str = "cart.updated", **envelope: Any) -> Event:
    doc = {"specversion": "1.0", "id": "e-1", "source": "//shop", "type": event_type, **envelope}
    return decode_event(json.dumps({**doc, "data": data}))


def reference(condition: _cel.Condition, event: Event) -> bool | str:
    """What the library makes of the condition on the view rules.py builds: a bool or an error."""
    view = event.model_dump(
        mode="json",
        context=CEL_VIEW_CONTEXT,
        include=_cel.view_include(condition.paths),
        exclude_none=True,
    )
    try:
        return condition.evaluate(cel.Context(variables={"event": view}))
    except _cel.ConditionError as exc:
        return f"error: {exc}"


def compiled(source: str) -> _cel.Condition:
    condition, problems = _cel.compile_condition(source)
    assert condition is not None, problems
    return condition


def without_fast_path(rules: RuleSet) -> RuleSet:
    """The same rules evaluated by the library alone."""
    plain = tuple(
        dataclasses.replace(
            rule,
            condition=None
            if rule.condition is None
            else dataclasses.replace(rule.condition, fast=None),
        )
        for rule in rules.rules
    )
    return RuleSet(dataclasses.replace(rules.spec, rules=plain))


def assert_agrees(source: str, event: Event) -> bool | None:
    """The fast answer, after checking that it is the library's whenever there is one."""
    condition = compiled(source)
    assert condition.fast is not None, source
    fast = condition.fast(event)
    if fast is not None:
        assert fast == reference(condition, event), source
    return fast


# -- what compiles ---------------------------------------------------------------------------

SUBSET = [
    "event.data.total.amount >= 5000.0",
    "event.data.total.amount >= 5000",
    'event.type == "order.placed"',
    'event.data.channel in ["web", "app"]',
    "has(event.data.x)",
    "event.data.full_return",
    "!event.data.full_return",
    "(event.data.a > 1 || event.data.b <= -2.5) && !(event.data.c != null)",
    'event.data.items.exists(i, i.category == "shoes")',
    "event.data.items.all(i, has(i.category) && i.quantity >= 1)",
    "event.data.l.exists(x, event.data.l.all(y, y == x))",
    "event.data.a == 0x1F && event.data.b < .5e1",
    "'it\\'s' == event.data.s || \"tab\\there\" == event.data.s",
    "true",
    "event.data.a == event.data.b",
    "1 == 1 == true",
]


@pytest.mark.parametrize("source", SUBSET)
def test_subset_conditions_compile_to_the_fast_path(source: str) -> None:
    """Comparisons, in, has, !, &&, ||, literals and exists/all over paths get a closure."""
    assert compiled(source).fast is not None


OUTSIDE = [
    "event.data.total.amount * 2.0 > 10.0",
    "size(event.data.items) > 1",
    'event["data"]["store"] == "s-42"',
    '"vip" in event.data.tags',
    "event.data.a == 1u",
    'event.type == r"order.placed"',
    'event.type == b"x"',
    'event.type == "\\x41"',
    'event.type == """order.placed"""',
    'timestamp(event.time) > timestamp("2020-01-01T00:00:00Z")',
    "event.data.full_return ? true : false",
    'event.data.items.map(i, i.sku).exists(s, s == "a")',
    'event.data.items.exists_one(i, i.sku == "a")',
    'event.data.store.startsWith("s-")',
    "[1] == [1]",
    "event.data.l.exists(event, true)",
    "-event.data.a < 0",
    "event.data.a in [event.data.b]",
    "event.data.a in [[1]]",
    "event.data.items[0].sku == 'a'",
    "dyn(event.data.a) == 1",
    "event == {}",
    "event.data.a == 1 // a comment",
]


@pytest.mark.parametrize("source", OUTSIDE)
def test_conditions_outside_the_subset_are_left_to_the_library(source: str) -> None:
    """Syntax beyond the subset gets no closure: the library alone evaluates it."""
    assert compiled(source).fast is None
    assert compile_fast(source) is None


def test_refused_conditions_still_evaluate_in_the_rules() -> None:
    """A rule whose condition is outside the subset matches exactly as before."""
    rules = RuleSet.from_yaml(
        "program_id: 1\npromotions: {p: {promotion_id: 1, type: ENROL_AND_ISSUE}}\n"
        "rules:\n  - {name: r, on: cart.updated, when: 'size(event.data.l) > 1 "
        "&& event.data.a * 2 == 4', then: [{enrol: p}]}\n"
    )
    assert rules.rules[0].condition is not None
    assert rules.rules[0].condition.fast is None
    data = {"l": [1, 2], "a": 2, "customer": {"id": "1", "source": "X"}}
    assert len(rules.commands_for(generic(data), POSITION)) == 1


def test_the_parser_keeps_cels_precedence() -> None:
    """`!` binds tighter than relations, relations than &&, && than ||."""
    event = generic({"a": 1, "b": False})
    for source, expected in [
        ("!event.data.b == true", True),
        ("event.data.a == 2 && false || true", True),
        ("event.data.a == 2 && (false || true)", False),
        ("false || event.data.a == 1 && event.data.b == false", True),
    ]:
        assert assert_agrees(source, event) is expected, source


# -- answers ---------------------------------------------------------------------------------


def test_example_rules_answer_without_the_library() -> None:
    """Every shipped rule compiles, and answers every shipped event by itself."""
    rules = load_rules(EXAMPLES / "rules.yaml")
    events = [decode_event(line) for line in (EXAMPLES / "events.jsonl").read_text().splitlines()]
    for rule in rules.rules:
        assert rule.condition is not None
        assert rule.condition.fast is not None, rule.name
        for item in events:
            if item.type == rule.on:
                answer = rule.condition.fast(item)
                assert answer is not None, (rule.name, item.id)
                assert answer == reference(rule.condition, item), (rule.name, item.id)


def test_example_rules_explain_the_same_without_the_fast_path() -> None:
    """Verdicts, details and commands equal those of the library-only rule set."""
    rules = load_rules(EXAMPLES / "rules.yaml")
    slow = without_fast_path(rules)
    for line in (EXAMPLES / "events.jsonl").read_text().splitlines():
        item = decode_event(line)
        assert rules.evaluate(item, POSITION) == slow.evaluate(item, POSITION), item.id


def test_an_absent_field_is_the_librarys_error() -> None:
    """The closure steps aside on a missing key; the rule reports CEL's 'no such key'."""
    rules = RuleSet.from_yaml(
        "program_id: 1\npromotions: {p: {promotion_id: 1, type: ENROL_AND_ISSUE}}\n"
        "rules:\n  - {name: r, on: cart.updated, when: 'event.data.store == \"s\"',"
        " then: [{enrol: p}]}\n"
    )
    condition = rules.rules[0].condition
    assert condition is not None
    assert condition.fast is not None
    event = generic({"total": 1})
    assert condition.fast(event) is None
    assert rules.evaluate(event, POSITION).errors == [("r", "no such key: store")]


@pytest.mark.parametrize(
    ("source", "data", "expected"),
    [
        # cel-rust compares int with double as doubles, so 2**53 + 1 rounds down.
        ("event.data.a == 9007199254740992.0", {"a": 2**53 + 1}, True),
        ("event.data.a > 9007199254740992.0", {"a": 2**53 + 1}, False),
        ("event.data.a == 1.0", {"a": 1}, True),
        ("event.data.a == 1", {"a": True}, False),
        ("event.data.a == 1", {"a": "1"}, False),
        ("event.data.a != null", {"a": 0}, True),
        ("event.data.d.n == null", {"d": {"n": None}}, True),
        ("has(event.data.d.n)", {"d": {"n": None}}, True),
        ("has(event.data.n)", {"n": None}, False),
        ("event.data.a < event.data.b", {"a": "Z", "b": "a"}, True),
        ("event.data.a > event.data.b", {"a": "é", "b": "z"}, True),
        ("event.data.a < event.data.b", {"a": False, "b": True}, True),
        ("event.data.a in [1, 'a', null]", {"a": 1.0}, True),
        ("false && event.data.missing", {}, False),
        ("true || event.data.missing", {}, True),
        ("event.data.l.exists(x, x > 0)", {"l": [1, "a"]}, True),
        ("event.data.l.all(x, x < 0)", {"l": [1, "a"]}, False),
    ],
)
def test_cel_value_rules_are_mirrored(source: str, data: dict[str, Any], expected: bool) -> None:
    """Mixed numbers, bool vs int, nulls, string order and short circuits answer as CEL does."""
    assert assert_agrees(source, generic(data)) is expected


@pytest.mark.parametrize(
    ("source", "data"),
    [
        ("event.data.a < 1", {"a": "1"}),
        ("event.data.a < null", {"a": None, "b": 1}),
        ("event.data.a == 1", {"a": 2**70}),
        ("event.data.a == event.data.b", {"a": [1], "b": [1]}),
        ("event.data.a && true", {"a": 1}),
        ("event.data.a.b == 1", {"a": "x"}),
        ("has(event.data.a.b)", {"a": 1}),
        ("event.data.m.exists(k, k == 'a')", {"m": {"a": 1}}),
        ("event.data.a", {"a": "text"}),
        ("event.time == '2026-11-21T10:00:00Z'", {}),
    ],
)
def test_what_the_closure_does_not_model_goes_to_the_library(
    source: str, data: dict[str, Any]
) -> None:
    """No overload, huge ints, whole lists, maps ranged over, datetimes, non-bools: no answer."""
    event = generic(data, time="2026-11-21T10:00:00Z")
    assert assert_agrees(source, event) is None


class Points(BaseModel):
    """A payload whose view is not its fields: the closure must not read into it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    value: int

    @field_serializer("value")
    def _doubled(self, value: int) -> int:
        return value * 2


def test_payload_models_it_does_not_know_go_to_the_library() -> None:
    """A registered payload with its own serializer is read through the library's view."""
    registry: EventRegistry = DEFAULT_REGISTRY.with_payload("points.added", Points)
    doc = {"specversion": "1.0", "id": "e", "source": "s", "type": "points.added"}
    event = registry.decode(json.dumps({**doc, "data": {"value": 2}}))
    condition = compiled("event.data.value == 4")
    assert condition.fast is not None
    assert condition.fast(event) is None
    assert reference(condition, event) is True


# -- the property: whenever the closure answers, the library answers the same -----------------

_FIELDS = ["a", "b", "s", "n", "d", "l", "missing"]
_PATHS = [f"event.data.{name}" for name in _FIELDS] + [
    "event.data.d.a",
    "event.data.d.n",
    "event.type",
    "event.id",
]

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.sampled_from([0, 1, -1, 2**53 + 1, 2**63 - 1, -(2**63), 2**63])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1.0, 0.5, 9007199254740992.0])
    | st.text(max_size=4)
    | st.sampled_from(["", "a", "web", "order.placed"])
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "n", "x"]), inner, max_size=3)
    ),
    max_leaves=6,
)
_data = st.dictionaries(st.sampled_from(_FIELDS[:-1]), _json_values)


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped.replace("\r", "\\r").replace("\t", "\\t") + '"'


_literal_values = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63) + 1, 2**63 - 1)
    | st.sampled_from([0, 1, 2**53 + 1])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs", "Cc"]), max_size=3)
    | st.sampled_from(["", "a", "web"])
)


def _literal_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    return repr(float(value)) if isinstance(value, float) else str(value)


_literals = _literal_values.map(_literal_text)
_operands = st.sampled_from(_PATHS) | _literals
_atoms = (
    st.builds(
        "{} {} {}".format,
        _operands,
        st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
        _operands,
    )
    | st.sampled_from(_PATHS).map("has({})".format)
    | st.builds(
        "{} in [{}]".format,
        _operands,
        st.lists(_literals, max_size=3).map(", ".join),
    )
    | st.builds(
        "event.data.l.{}(x, x {} {})".format,
        st.sampled_from(["exists", "all"]),
        st.sampled_from(["==", "<", ">="]),
        _literals,
    )
    | st.sampled_from(
        [
            "event.data.l.exists(x, has(x.a) && x.a == 1)",
            "event.data.l.all(x, x.n != null)",
            "event.data.b",
            "true",
            "false",
        ]
    )
)
_expressions = st.recursive(
    _atoms,
    lambda inner: (
        st.builds("({} && {})".format, inner, inner)
        | st.builds("({} || {})".format, inner, inner)
        | inner.map("!{}".format)
    ),
    max_leaves=5,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=_expressions, data=_data)
@example(source="event.data.a >= 5000", data={"a": 5000.0})
@example(source="event.data.a == 9007199254740992.0", data={"a": 2**53 + 1})
@example(source="event.data.d.n == null || event.data.a", data={"d": {"n": None}})
def test_fast_answers_equal_the_librarys(source: str, data: dict[str, Any]) -> None:
    """On generated events and conditions, every answer the closure gives is the library's."""
    condition, _ = _cel.compile_condition(source)
    assume(condition is not None)
    assert condition is not None
    assert condition.fast is not None, source
    event = generic(data)
    fast = condition.fast(event)
    if fast is not None:
        assert fast == reference(condition, event), (source, data)


_orders = st.fixed_dictionaries(
    {
        "order_id": st.just("o-1"),
        "customer": st.just({"id": "1", "source": "INSTORE"}),
        "total": st.fixed_dictionaries(
            {
                "amount": st.decimals(-(10**6), 10**6, places=2, allow_nan=False).map(str)
                | st.integers(0, 10**7)
                | st.floats(0, 1e7),
                "currency": st.just("INR"),
            }
        ),
        "items": st.lists(
            st.fixed_dictionaries(
                {
                    "sku": st.just("S"),
                    "quantity": st.integers(1, 3),
                    "amount": st.just({"amount": "1", "currency": "INR"}),
                },
                optional={"category": st.none() | st.sampled_from(["shoes", "bags"])},
            ),
            max_size=3,
        ),
    },
    optional={"store": st.none() | st.sampled_from(["s-42", "s-7"]), "tier": _json_values},
)
_order_conditions = [
    "event.data.total.amount >= 5000.0",
    "event.data.total.amount >= 5000 && event.data.total.currency == 'INR'",
    "event.data.total.amount < 0.01 || event.data.total.amount == 1000000",
    'event.data.items.exists(i, i.category == "shoes")',
    'event.data.items.all(i, has(i.category) && i.category in ["shoes", "bags"])',
    "event.data.items.exists(i, i.amount.amount >= 1 && i.quantity > 2)",
    'has(event.data.store) && event.data.store == "s-42"',
    'event.data.store == "s-42"',
    "event.data.tier == 'gold' || event.data.tier > 3",
    "!has(event.data.placed_at) && event.type == 'order.placed'",
]


@settings(max_examples=200, deadline=None)
@given(data=_orders, order_time=st.none() | st.just("2026-11-21T10:00:00+05:30"))
def test_typed_orders_answer_like_the_library(data: dict[str, Any], order_time: str | None) -> None:
    """On typed order payloads (decimal amounts, optional fields), the rule set agrees too."""
    if order_time is not None:
        data = {**data, "placed_at": order_time}
    event = generic(data, event_type="order.placed")
    for source in _order_conditions:
        assert_agrees(source, event)
    # Amounts arrive as decimals; the closure reads them as the view's doubles.
    assert isinstance(event.data.total.amount, Decimal)


def test_compile_fast_refuses_what_it_cannot_parse() -> None:
    """compile_fast returns None (no closure) for syntax outside the subset."""
    assert compile_fast("size(event.data.items) > 1") is None
    assert compile_fast("event.data.a >= 1") is not None
