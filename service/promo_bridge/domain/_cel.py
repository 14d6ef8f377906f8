"""CEL conditions: compiled once at load, checked for what they reference, evaluated per event.

A rule sees one variable, `event`: the event as JSON-like values (see `rules.py` for the typing
rules). The library (`common-expression-language`, cel-rust underneath) converts the whole
variable into CEL values on every evaluation, and that conversion costs far more than the
evaluation itself. So each condition also records which parts of the event it reads, as far as a
conservative scan of its source can tell, and the rule set serializes only those parts. Better
still, a condition in the subset `_cel_fast` compiles skips the view and the library for every
event it can answer for (see that module for why its answers are the library's).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import cel

from promo_bridge.domain._cel_fast import FastCondition, compile_fast

ROOT_VARIABLE: Final = "event"

# Names the native library resolves that look like variables: the `optional` namespace
# (`optional.of(x)`) and type values (`type(x) == int`).
_NAMESPACES: Final = frozenset(
    {
        "optional",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "bool",
        "list",
        "map",
        "null_type",
        "type",
    }
)

# The functions cel-rust provides natively (the cel.stdlib Python extras are not registered:
# they would run as Python callbacks on the hot path). Checked against the library by a test.
NATIVE_FUNCTIONS: Final = frozenset(
    {
        "size",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "timestamp",
        "duration",
        "dyn",
        "type",
        "getFullYear",
        "getMonth",
        "getDate",
        "getDayOfMonth",
        "getDayOfWeek",
        "getDayOfYear",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
        "of",
        "none",
        "hasValue",
        "value",
        "orValue",
        "or",
    }
)

_MACROS: Final = frozenset({"all", "exists_one", "exists", "map", "filter"})
_IDENT: Final = r"[A-Za-z_]\w*"
# Comprehension macros bind a variable of their own: `items.exists(i, i.sku == "x")`.
_MACRO_BINDING: Final = re.compile(
    r"\.\s*(?:" + "|".join(sorted(_MACROS)) + r")\s*\(\s*(" + _IDENT + r")\s*,"
)
# A name followed by field selections; group 2: a call follows the last selection (so it is a
# method, not a field); group 3: the call's first argument when it is a bare name and a comma
# follows (a macro's bound variable). Anything else (`event["data"]`, a bare `event`) ends the
# selections there, and the whole value at that point is read.
_REFERENCE: Final = r"((?:\s*\.\s*" + _IDENT + r")*)(\s*\(\s*(?:(" + _IDENT + r")\s*,)?)?"
_EVENT_REFERENCE: Final = re.compile(r"\b" + ROOT_VARIABLE + r"\b" + _REFERENCE)
# Marks "every element" in a path: a macro's variable ranges over a list's elements.
ELEMENTS: Final = "*"
_COMPILE_ERROR: Final = re.compile(r"ERROR: <input>:(\d+):(\d+): (?:Syntax error: )?([^\n]*)")
_EXPECTING: Final = re.compile(r"\s*expecting \{.*$")

Path = tuple[str, ...]


class ConditionError(Exception):
    """A condition failed at run time (missing field, type mismatch...): the rule did not match."""


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled `when` expression and the event paths it reads."""

    source: str
    program: cel.Program
    # Field paths under `event`, e.g. ("data", "total", "amount"); () means the whole event.
    paths: tuple[Path, ...]
    # Answers from the decoded event without the library, or None ("ask the library").
    fast: FastCondition | None = None

    def evaluate(self, context: cel.Context) -> bool:
        """True when the condition holds; ConditionError when it cannot be evaluated."""
        try:
            result = self.program.execute(context)
        except Exception as exc:  # noqa: BLE001 - any failure of user code means "no match"
            raise ConditionError(describe_runtime_error(exc)) from None
        if not isinstance(result, bool):
            raise ConditionError(f"condition returned {type(result).__name__}, not a bool")
        return result


def compile_condition(source: str) -> tuple[Condition | None, list[str]]:
    """Compile and check a condition; return it, or None and every problem found."""
    try:
        program = cel.compile(source)
    except ValueError as exc:
        return None, [describe_compile_error(str(exc))]
    known = {ROOT_VARIABLE, *_NAMESPACES, *_MACRO_BINDING.findall(source)}
    problems = [
        f"unknown variable '{name}' (a condition sees only 'event')"
        for name in program.variables()
        if name not in known
    ]
    problems.extend(
        f"unknown function '{name}'"
        for name in program.functions()
        # Operators have non-identifier names such as `_&&_`, `!_` or `@in`.
        if name[:1].isalpha() and name not in NATIVE_FUNCTIONS
    )
    if problems:
        return None, problems
    condition = Condition(
        source=source,
        program=program,
        paths=referenced_paths(source),
        fast=compile_fast(source),
    )
    return condition, []


def referenced_paths(source: str) -> tuple[Path, ...]:
    """The `event` field paths a condition reads; over-approximates, never under.

    A bare `event`, an index (`event["x"]`) or a method on `event` itself yields the empty
    path, i.e. the whole event. A macro over an event list, `event.data.items.exists(i, ...)`,
    yields one path per use of `i`, through ELEMENTS: ("data", "items", "*", "category").
    """
    paths: list[Path] = []
    bindings: list[tuple[str, int, Path]] = []
    for match in _EVENT_REFERENCE.finditer(source):
        segments = _segments(match.group(1))
        if match.group(2):
            method = segments[-1] if segments else ""
            segments = segments[:-1]
            if method in _MACROS and match.group(3):
                bindings.append((match.group(3), match.start(3), segments))
                continue
        paths.append(segments)
    # Element paths are only sound when every macro variable in the condition ranges over an
    # event path: a variable bound on anything else (`x.filter(i, ...).exists(j, j.sku)`) might
    # range over event elements by another route, so then the receivers are read whole.
    all_bound = {match.start(1) for match in _MACRO_BINDING.finditer(source)}
    if all_bound != {position for _, position, _ in bindings}:
        paths.extend(receiver for _, _, receiver in bindings)
        return tuple(dict.fromkeys(paths))
    for name, position, receiver in bindings:
        uses = re.compile(r"\b" + re.escape(name) + r"\b" + _REFERENCE)
        for use in uses.finditer(source):
            if use.start() == position:
                continue  # the binding itself
            segments = _segments(use.group(1))
            if use.group(2):
                segments = segments[:-1]
            paths.append((*receiver, ELEMENTS, *segments))
    return tuple(dict.fromkeys(paths))


def _segments(selections: str) -> Path:
    return tuple(part.strip() for part in selections.split(".")[1:])


def view_include(paths: Iterable[Path]) -> dict[str, Any] | None:
    """A pydantic `include` spec covering every path; None when the whole event is needed.

    The spec is a tree of the paths: a path that ends at a node includes its whole subtree,
    and ELEMENTS becomes pydantic's "__all__" (every element of a list).
    """
    root: dict[str, Any] = {}
    for path in paths:
        if not path:
            return None
        node = root
        for depth, segment in enumerate(path, start=1):
            key = "__all__" if segment == ELEMENTS else segment
            existing = node.get(key)
            if existing is True:
                break  # an ancestor of this path is already included whole
            if depth == len(path):
                node[key] = True
                break
            if existing is None:
                existing = node[key] = {}
            node = existing
    return root


def describe_compile_error(message: str) -> str:
    """One line from the library's multi-line parse error."""
    match = _COMPILE_ERROR.search(message)
    if match is None:
        return f"invalid CEL: {' '.join(message.split())}"
    line, column, reason = match.groups()
    reason = _EXPECTING.sub("", reason).strip()
    where = f"column {column}" if line == "1" else f"line {line}, column {column}"
    return f"invalid CEL at {where}: {reason}"


def describe_runtime_error(exc: Exception) -> str:
    """One short line from an evaluation error (the library's messages run to a paragraph)."""
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0] if exc.args else '?'}"
    text = " ".join(str(exc).split())
    first, _, _ = text.partition(". ")
    return first.rstrip(".") or type(exc).__name__
