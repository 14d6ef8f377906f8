"""Conditions of the `_cel_subset` compiled to Python closures that read the decoded event.

The CEL library needs the event as a JSON view (a pydantic dump per event) and converts that view
into CEL values on every evaluation; a closure reads the few fields a condition names straight
from the event's models. It reads them as the view would show them: a model field or extra
that is None is absent, a plain dict keeps its nulls, Money amounts are doubles.

The library stays the reference. A closure answers only when it evaluated without meeting
anything it is unsure of, and returns None otherwise: an absent field, a type CEL has no
overload for, a non-bool where a bool is needed, a value it does not model (a datetime, a list
compared as a whole, an int beyond int64, a NaN, a model class it does not know). The caller then
asks the library, which gives the answer or the error it always gave. That keeps the answers
exact without mirroring CEL's error rules: `false && <error>` is false in both, because the
closure stops at `false` just as CEL's absorption would, and anything that errors goes to CEL.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final, TypeAlias

from pydantic import BaseModel

from promo_bridge.domain._cel_subset import (
    ROOT,
    Compare,
    Const,
    Expr,
    Has,
    In,
    ListConst,
    Logical,
    Not,
    Path,
    Quantifier,
    Scalar,
    UnsupportedError,
    parse,
)
from promo_bridge.domain.events import (
    CloudEvent,
    Customer,
    GenericPayload,
    LineItem,
    Money,
    OrderPlaced,
    ReturnCreated,
    ReviewSubmitted,
)

# The answer of a compiled condition for an event; None means "ask the CEL library".
FastCondition: TypeAlias = Callable[[BaseModel], "bool | None"]

# Values bound to the condition's variables: the event first, then one slot per nested macro.
_Scope: TypeAlias = list[Any]
_Node: TypeAlias = Callable[[_Scope], Any]

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_NUMBERS: Final = frozenset({int, float})
_SCALARS: Final = frozenset({int, float, str, bool, type(None)})
_MIRRORED: Final = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_RELATIONS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# Payload models whose JSON view is their fields and extras as they are, except Money's amount
# (a Decimal the CEL view renders as a double). A model of another class may serialize its
# fields otherwise, so reading into one is left to the library.
_PLAIN_MODELS: Final = frozenset(
    {Money, Customer, LineItem, OrderPlaced, ReturnCreated, ReviewSubmitted, GenericPayload}
)
# Envelope classes are made per registered type at run time, so they are recognised by
# subclass and remembered; a class's answer never changes, so the cache needs no eviction.
_known_models: dict[type, bool] = {}


class _UnsureError(Exception):
    """The closure cannot be sure of CEL's answer for this event."""


def compile_fast(source: str) -> FastCondition | None:
    """A closure answering like CEL for `source`, or None when it is outside the subset."""
    try:
        tree = parse(source)
        node = _compile(tree, (ROOT,))
    except (UnsupportedError, _UnsureError, RecursionError):
        return None
    slots = [None] * _depth(tree)

    def holds(event: BaseModel) -> bool | None:
        try:
            result = node([event, *slots])
        except Exception:  # noqa: BLE001 - whatever went wrong, the CEL library decides
            return None
        return result if type(result) is bool else None

    return holds


def _depth(tree: Expr) -> int:
    """How many macro variables are bound at once at the deepest point of the tree."""
    if isinstance(tree, Quantifier):
        return 1 + _depth(tree.body)
    if isinstance(tree, Not):
        return _depth(tree.operand)
    if isinstance(tree, Logical | Compare):
        return max(_depth(tree.left), _depth(tree.right))
    if isinstance(tree, In):
        return _depth(tree.left)
    return 0


def _compile(tree: Expr, variables: tuple[str, ...]) -> _Node:  # noqa: PLR0911 - one per node kind
    if isinstance(tree, Const):
        return _constant(tree.value)
    if isinstance(tree, Path):
        return _reader(variables.index(tree.variable), tree.fields)
    if isinstance(tree, Has):
        return _has(
            _reader(variables.index(tree.path.variable), tree.path.fields[:-1]),
            tree.path.fields[-1],
        )
    if isinstance(tree, Not):
        return _negation(_compile(tree.operand, variables))
    if isinstance(tree, Logical):
        left, right = _compile(tree.left, variables), _compile(tree.right, variables)
        return _conjunction(left, right) if tree.op == "&&" else _disjunction(left, right)
    if isinstance(tree, Compare):
        return _comparison(tree, variables)
    if isinstance(tree, In):
        return _membership(_compile(tree.left, variables), tree.values)
    if isinstance(tree, Quantifier):
        target = _reader(variables.index(tree.target.variable), tree.target.fields)
        body = _compile(tree.body, (*variables, tree.variable))
        return _quantifier(target, len(variables), body, every=tree.kind == "all")
    if isinstance(tree, ListConst):
        raise UnsupportedError("a list literal outside `in`")
    raise UnsupportedError(type(tree).__name__)


def _comparison(tree: Compare, variables: tuple[str, ...]) -> _Node:
    op, left, right = tree.op, tree.left, tree.right
    # A literal operand is checked and converted once here rather than per event; on the left,
    # the relation is mirrored (`5 < x` is `x > 5`).
    if isinstance(left, Const) and not isinstance(right, Const):
        op, left, right = _MIRRORED[op], right, left
    if isinstance(right, Const) and right.value is not None:
        operand = _compile(left, variables)
        if op in {"==", "!="}:
            return _equality_with(operand, right.value, negate=op == "!=")
        return _ordering_with(_RELATIONS[op], operand, right.value)
    operands = _compile(left, variables), _compile(right, variables)
    if op in {"==", "!="}:
        return _equality(*operands, negate=op == "!=")
    return _ordering(_RELATIONS[op], *operands)


# -- reading the event as the CEL view shows it -----------------------------------------------


def _model_known(cls: type) -> bool:
    known = _known_models.get(cls)
    if known is None:
        known = _known_models[cls] = cls in _PLAIN_MODELS or issubclass(cls, CloudEvent)
    return known


def _select(value: Any, field: str) -> Any:
    """`value.field` as CEL reads it in the view; _UnsureError when absent or not a map."""
    if type(value) is dict:
        # Nulls inside plain dicts survive the view's exclude_none; absent keys raise.
        return value[field]
    if not _model_known(type(value)):
        raise _UnsureError
    found = value.__dict__.get(field)
    if found is None:
        extra = value.__pydantic_extra__
        if extra is not None:
            found = extra.get(field)
        if found is None:
            raise _UnsureError
    return found


def _present(value: Any, field: str) -> bool:
    """`has(value.field)`; _UnsureError where CEL errors (not a map) or the model is unknown."""
    cls = type(value)
    if cls is dict:
        return field in value
    if not _model_known(cls):
        raise _UnsureError
    if value.__dict__.get(field) is not None:
        return True
    extra = value.__pydantic_extra__
    return extra is not None and extra.get(field) is not None


def _reader(slot: int, fields: tuple[str, ...]) -> _Node:
    if not fields:
        return operator.itemgetter(slot)

    def read(scope: _Scope) -> Any:
        value = scope[slot]
        for field in fields:
            value = _select(value, field)
        # Only Money's amount is a Decimal, and nothing can be selected on a number, so the
        # view's conversion to a double is needed at the end of a path only.
        return float(value) if type(value) is Decimal else value

    return read


# -- CEL's operators on the values the view can hold --------------------------------------------


def _checked(value: Any) -> Any:
    """A scalar as CEL holds it; _UnsureError for a value the closure does not model."""
    cls = type(value)
    if cls is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise _UnsureError  # the library converts such ints in its own way
    elif cls is float:
        if math.isnan(value):
            raise _UnsureError
    elif cls not in _SCALARS:
        raise _UnsureError  # lists, maps, models, datetimes: compared by the library
    return value


def _equal(left: Any, right: Any) -> bool:
    """CEL `==` on scalars: ints and doubles compare as doubles, other types never equal."""
    left_type, right_type = type(_checked(left)), type(_checked(right))
    if left_type is right_type:
        return bool(left == right)
    if left_type in _NUMBERS and right_type in _NUMBERS:
        # cel-rust converts the int to a double (rounding past 2**53), so Python's exact
        # int/float comparison would disagree on large ints.
        return float(left) == float(right)
    return False


def _comparable(left: Any, right: Any) -> tuple[Any, Any]:
    """The operands of an ordering as CEL orders them; _UnsureError where it has no overload."""
    left_type, right_type = type(_checked(left)), type(_checked(right))
    if left_type is right_type:
        if left_type is type(None):
            raise _UnsureError
        return left, right
    if left_type in _NUMBERS and right_type in _NUMBERS:
        return float(left), float(right)
    raise _UnsureError


def _constant(value: Any) -> _Node:
    def constant(_scope: _Scope) -> Any:
        return value

    return constant


def _equality(left: _Node, right: _Node, *, negate: bool) -> _Node:
    def equality(scope: _Scope) -> bool:
        return _equal(left(scope), right(scope)) is not negate

    return equality


def _ordering(relation: Callable[[Any, Any], bool], left: _Node, right: _Node) -> _Node:
    def ordering(scope: _Scope) -> bool:
        return relation(*_comparable(left(scope), right(scope)))

    return ordering


def _as_double(constant: Scalar) -> float | None:
    """A numeric literal as a double, for comparing it with the other numeric type."""
    if isinstance(constant, bool) or not isinstance(constant, int | float):
        return None
    return float(constant)


def _equality_with(operand: _Node, constant: Scalar, *, negate: bool) -> _Node:
    constant_type = type(_checked(constant))
    as_double = _as_double(constant)

    def equality(scope: _Scope) -> bool:
        value = operand(scope)
        value_type = type(value)
        if value_type is not str:
            _checked(value)
        if value_type is constant_type:
            return (value == constant) is not negate
        if as_double is not None and value_type in _NUMBERS:
            return (float(value) == as_double) is not negate
        return negate

    return equality


def _ordering_with(relation: Callable[[Any, Any], bool], operand: _Node, constant: Scalar) -> _Node:
    constant_type = type(_checked(constant))
    as_double = _as_double(constant)

    def ordering(scope: _Scope) -> bool:
        value = operand(scope)
        value_type = type(value)
        if value_type is not str:
            _checked(value)
        if value_type is constant_type:
            return relation(value, constant)
        if as_double is not None and value_type in _NUMBERS:
            return relation(float(value), as_double)
        raise _UnsureError

    return ordering


def _membership(left: _Node, values: tuple[Any, ...]) -> _Node:
    texts = frozenset(value for value in values if type(value) is str)

    def membership(scope: _Scope) -> bool:
        value = left(scope)
        if type(value) is str:
            return value in texts
        return any(_equal(value, candidate) for candidate in values)

    return membership


def _has(parent: _Node, field: str) -> _Node:
    def has(scope: _Scope) -> bool:
        return _present(parent(scope), field)

    return has


def _negation(operand: _Node) -> _Node:
    def negation(scope: _Scope) -> bool:
        value = operand(scope)
        if type(value) is not bool:
            raise _UnsureError
        return not value

    return negation


def _conjunction(left: _Node, right: _Node) -> _Node:
    def conjunction(scope: _Scope) -> bool:
        first = left(scope)
        if first is False:
            return False  # CEL too: `false && x` is false whatever x is, errors included
        second = right(scope)
        if first is not True or type(second) is not bool:
            raise _UnsureError
        return bool(second)

    return conjunction


def _disjunction(left: _Node, right: _Node) -> _Node:
    def disjunction(scope: _Scope) -> bool:
        first = left(scope)
        if first is True:
            return True  # CEL too: `true || x` is true whatever x is, errors included
        second = right(scope)
        if first is not False or type(second) is not bool:
            raise _UnsureError
        return bool(second)

    return disjunction


def _quantifier(target: _Node, slot: int, body: _Node, *, every: bool) -> _Node:
    # The library walks the list in order and stops at the first deciding element (or error,
    # which sends this event to it): stopping at the same element gives the same answer.
    decisive = not every

    def quantifier(scope: _Scope) -> bool:
        elements = target(scope)
        if type(elements) is not list:
            raise _UnsureError  # a map ranges over its keys; leave that to the library
        for element in elements:
            scope[slot] = element
            result = body(scope)
            if result is decisive:
                return not every
            if result is not every:
                raise _UnsureError
        return every

    return quantifier
