"""The subset of CEL that `_cel_fast` compiles to Python, parsed into a small syntax tree.

Only conditions the CEL library has already compiled reach this parser, so it does not report
syntax errors: anything it does not recognise, valid CEL or not, raises UnsupportedError and the
condition keeps running on the library alone. The subset is what real rules files write:

- field paths from `event` (`event.data.total.amount`), `has(path)`;
- literals: int (decimal or hex, optionally negated), double, string (quoted once, simple
  escapes only), bool, null; lists of literals only as the right side of `in`;
- comparisons `== != < <= > >=`, `in`, `!`, `&&`, `||`, parentheses;
- `path.exists(x, ...)` and `path.all(x, ...)` over a field path, with `x.field` paths inside.

Precedence and associativity are CEL's: `||` < `&&` < relations (left-associative) < unary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, TypeAlias

ROOT: Final = "event"

Scalar: TypeAlias = bool | int | float | str | None


class UnsupportedError(Exception):
    """The condition is outside the subset; CEL alone evaluates it."""


@dataclass(frozen=True, slots=True)
class Const:
    """A literal."""

    value: Scalar


@dataclass(frozen=True, slots=True)
class ListConst:
    """A list of literals: `In` takes its values, and the compiler refuses it anywhere else."""

    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Path:
    """A variable (`event`, or a macro's) followed by field selections."""

    variable: str
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Has:
    """`has(path)`: whether the last field of a path is present."""

    path: Path


@dataclass(frozen=True, slots=True)
class Not:
    """`!operand`."""

    operand: Expr


@dataclass(frozen=True, slots=True)
class Logical:
    """`left && right` or `left || right`."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Compare:
    """A relation: `==`, `!=`, `<`, `<=`, `>`, `>=`."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class In:
    """`left in [literals]`."""

    left: Expr
    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Quantifier:
    """`target.exists(variable, body)` or `target.all(variable, body)`."""

    kind: str
    target: Path
    variable: str
    body: Expr


Expr: TypeAlias = Const | ListConst | Path | Has | Not | Logical | Compare | In | Quantifier

_TOKEN: Final = re.compile(
    r"""
    (?P<space>[ \t\r\n\f]+)
    | (?P<double>(?:\d+\.\d+|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
    | (?P<hex>0[xX][0-9a-fA-F]+)
    | (?P<int>\d+)
    | (?P<string>"(?:[^"\\\r\n]|\\.)*"|'(?:[^'\\\r\n]|\\.)*')
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>==|!=|<=|>=|&&|\|\||[<>!\-()\[\],.])
    """,
    re.VERBOSE,
)
_ESCAPES: Final = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}
_RELATIONS: Final = frozenset({"==", "!=", "<", "<=", ">", ">="})
_KEYWORDS: Final = {"true": True, "false": False, "null": None}
_QUANTIFIERS: Final = frozenset({"exists", "all"})
_INT64_MAX: Final = 2**63 - 1

# A token: its kind (a _TOKEN group name, or "end") and its text.
_Token: TypeAlias = tuple[str, str]


def parse(source: str) -> Expr:
    """The syntax tree of a condition; UnsupportedError when it is outside the subset."""
    parser = _Parser(_tokens(source))
    try:
        tree = parser.expression(frozenset({ROOT}))
    except RecursionError:
        raise UnsupportedError("nested too deeply") from None
    parser.expect("end")
    return tree


def _tokens(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    number_end = -1
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            raise UnsupportedError(f"character {source[position]!r}")
        kind = match.lastgroup or ""
        text = match.group()
        position = match.end()
        if kind == "space":
            continue
        # `1u` (uint) or `1.0f`: a number glued to a name is not in the subset.
        if kind in {"name", "string"} and match.start() == number_end:
            raise UnsupportedError("number suffix")
        if kind in {"double", "hex", "int"}:
            number_end = position
        # A triple-quoted string would otherwise read as adjacent ordinary ones.
        if kind == "string" and len(text) == 2 and source.startswith(text[0], position):
            raise UnsupportedError("triple-quoted string")
        tokens.append((kind, text))
    tokens.append(("end", ""))
    return tokens


class _Parser:
    """Recursive descent over the tokens, one method per precedence level."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.index += 1
        return token

    def expect(self, kind: str, text: str | None = None) -> str:
        token_kind, token_text = self.take()
        if token_kind != kind or (text is not None and token_text != text):
            raise UnsupportedError(f"expected {text or kind}, found {token_text or 'the end'}")
        return token_text

    def at_op(self, *texts: str) -> bool:
        kind, text = self.peek()
        return kind == "op" and text in texts

    def expression(self, scope: frozenset[str]) -> Expr:
        left = self.conjunction(scope)
        while self.at_op("||"):
            self.take()
            left = Logical("||", left, self.conjunction(scope))
        return left

    def conjunction(self, scope: frozenset[str]) -> Expr:
        left = self.relation(scope)
        while self.at_op("&&"):
            self.take()
            left = Logical("&&", left, self.relation(scope))
        return left

    def relation(self, scope: frozenset[str]) -> Expr:
        left = self.unary(scope)
        while True:
            kind, text = self.peek()
            if kind == "op" and text in _RELATIONS:
                self.take()
                left = Compare(text, left, self.unary(scope))
            elif kind == "name" and text == "in":
                self.take()
                right = self.unary(scope)
                if not isinstance(right, ListConst):
                    raise UnsupportedError("`in` takes a list of literals here")
                left = In(left, right.values)
            else:
                break
        return left

    def unary(self, scope: frozenset[str]) -> Expr:
        if self.at_op("!"):
            self.take()
            return Not(self.unary(scope))
        if self.at_op("-"):
            self.take()
            return Const(self.number(negate=True))
        return self.member(scope)

    def member(self, scope: frozenset[str]) -> Expr:
        node = self.primary(scope)
        if isinstance(node, Path):
            node = self.selections(node, scope)
        # Indexing, calls or selections on anything but a path are outside the subset.
        if self.at_op(".", "[", "("):
            raise UnsupportedError(f"'{self.peek()[1]}' after {type(node).__name__}")
        return node

    def selections(self, path: Path, scope: frozenset[str]) -> Expr:
        while self.at_op("."):
            self.take()
            name = self.expect("name")
            if not self.at_op("("):
                path = Path(path.variable, (*path.fields, name))
                continue
            if name not in _QUANTIFIERS:
                raise UnsupportedError(f"call of {name}()")
            self.take()
            variable = self.expect("name")
            if variable in scope or variable in _KEYWORDS or variable in {"has", "in"}:
                raise UnsupportedError("a macro variable that shadows a name")
            self.expect("op", ",")
            body = self.expression(scope | {variable})
            self.expect("op", ")")
            return Quantifier(name, path, variable, body)
        return path

    def primary(self, scope: frozenset[str]) -> Expr:  # noqa: PLR0911 - one per kind
        kind, text = self.peek()
        if kind == "op" and text == "(":
            self.take()
            inner = self.expression(scope)
            self.expect("op", ")")
            return inner
        if kind == "op" and text == "[":
            return self.literal_list()
        if kind in {"double", "hex", "int"}:
            return Const(self.number(negate=False))
        if kind == "string":
            self.take()
            return Const(_unquote(text))
        if kind == "name":
            self.take()
            if text in _KEYWORDS:
                return Const(_KEYWORDS[text])
            if text == "has" and self.at_op("("):
                return self.has(scope)
            if text in scope:
                return Path(text, ())
        raise UnsupportedError(f"unexpected {text or 'end'}")

    def has(self, scope: frozenset[str]) -> Has:
        self.expect("op", "(")
        variable = self.expect("name")
        if variable not in scope:
            raise UnsupportedError(f"has() of {variable}")
        fields: list[str] = []
        while self.at_op("."):
            self.take()
            fields.append(self.expect("name"))
        self.expect("op", ")")
        if not fields:
            raise UnsupportedError("has() needs a field selection")
        return Has(Path(variable, tuple(fields)))

    def literal_list(self) -> ListConst:
        self.expect("op", "[")
        values: list[Scalar] = []
        while not self.at_op("]"):
            if values:
                self.expect("op", ",")
            element = self.unary(frozenset())
            if not isinstance(element, Const):
                raise UnsupportedError("a list element that is not a literal")
            values.append(element.value)
        self.take()
        return ListConst(tuple(values))

    def number(self, *, negate: bool) -> int | float:
        kind, text = self.take()
        if kind == "double":
            value: int | float = float(text)
        elif kind in {"hex", "int"}:
            value = int(text, 16 if kind == "hex" else 10)
            # The library refuses or wraps at the int64 bounds; leave those to it.
            if value > _INT64_MAX:
                raise UnsupportedError("int literal beyond int64")
        else:
            raise UnsupportedError("negation of something other than a number literal")
        return -value if negate else value


def _unquote(token: str) -> str:
    body = token[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    chars = iter(body)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        escaped = _ESCAPES.get(next(chars, ""))
        if escaped is None:
            raise UnsupportedError("string escape outside \\\\ \\\" \\' \\n \\t \\r")
        out.append(escaped)
    return "".join(out)
