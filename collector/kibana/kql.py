"""The part of Kibana's query language (KQL) the saved objects and the README use, parsed
and translated to the query DSL the way Kibana translates it (``@kbn/es-query``'s kuery
functions), so that a query can be checked against the field list and run against
Elasticsearch without a Kibana.

Supported: ``field: value``, ``field: "a phrase"``, ``field: val*`` (wildcards),
``field: *`` (exists), ``field: (a or b)`` (value lists with and/or/not), ``field >= 3``
(``<``, ``<=``, ``>``, ``>=``), ``and``, ``or``, ``not`` (any case) and parentheses.
Anything else (free text without a field, wildcards in field names, nested ``{}``) is a
``KqlError``: the checks here must not pass a query they do not understand.

Translation (Kibana's ``is``, ``range``, ``and``, ``or``, ``not``):

* ``f: v`` -> ``bool.should[match f=v]``, quoted: ``match_phrase``, on a date field:
  ``range gte=lte=v``; with ``*``: ``query_string`` on ``[f]``; ``f: *``: ``exists``;
  every one wrapped in ``{"bool": {"should": [...], "minimum_should_match": 1}}``;
* ``f >= v`` -> ``bool.should[range f gte v]``;
* ``a and b`` -> ``bool.filter[a, b]``; ``a or b`` -> ``bool.should[a, b]`` with
  ``minimum_should_match: 1``; ``not a`` -> ``bool.must_not: a``.

Unquoted values become numbers, booleans or null as in Kibana's grammar (``3`` is a
number, ``007`` a string).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

DATE_TYPES = frozenset({"date", "date_nanos"})
# Characters that end an unquoted literal unless escaped with a backslash.
_SPECIAL = set(' \t\r\n\\():<>"*{}')
_NUMBER_RE = re.compile(r"^(-?[1-9]+\d*([.]\d+)?)$|^(-?0[.]\d*[1-9]+)$|^0$|^0.0$|^[.]\d+$")
# query_string's reserved characters: a literal part of a wildcard value is escaped.
_QUERY_STRING_RESERVED = set('+-=&|><!(){}[]^"~*?:\\/ ')
RANGE_OPERATORS = {"<=": "lte", ">=": "gte", "<": "lt", ">": "gt"}

Scalar = Union[str, int, float, bool, None]


class KqlError(ValueError):
    """A query outside the supported KQL, with the position it failed at."""


@dataclass(frozen=True)
class Value:
    """One value of ``field: value``: a literal, a quoted phrase or a wildcard pattern
    (the pattern keeps ``*`` for wildcards and the literal text between them)."""

    value: Scalar
    phrase: bool = False
    wildcard: tuple[str, ...] = ()  # literal parts between the wildcards

    @property
    def is_exists(self) -> bool:
        return self.wildcard == ("", "")

    @property
    def kind(self) -> str:
        if self.is_exists:
            return "exists"
        if self.wildcard:
            return "wildcard"
        return "phrase" if self.phrase else "match"


@dataclass(frozen=True)
class Use:
    """A field a query names, and how (match, phrase, wildcard, exists, range)."""

    field: str
    kind: str
    value: Scalar


class Node:
    def to_dsl(self, types: Mapping[str, str]) -> dict[str, Any]:
        raise NotImplementedError

    def uses(self) -> list[Use]:
        raise NotImplementedError


@dataclass(frozen=True)
class Is(Node):
    field: str
    value: Value

    def to_dsl(self, types: Mapping[str, str]) -> dict[str, Any]:
        return _should([self._leaf(types.get(self.field, ""))])

    def _leaf(self, field_type: str) -> dict[str, Any]:
        value = self.value
        if value.is_exists:
            return {"exists": {"field": self.field}}
        if value.wildcard:
            return {"query_string": {"fields": [self.field],
                                     "query": _query_string(value.wildcard)}}
        if field_type in DATE_TYPES:
            return {"range": {self.field: {"gte": value.value, "lte": value.value}}}
        return {"match_phrase" if value.phrase else "match": {self.field: value.value}}

    def uses(self) -> list[Use]:
        return [Use(self.field, self.value.kind, self.value.value)]


@dataclass(frozen=True)
class Range(Node):
    field: str
    operator: str
    value: Scalar

    def to_dsl(self, types: Mapping[str, str]) -> dict[str, Any]:
        return _should([{"range": {self.field: {RANGE_OPERATORS[self.operator]: self.value}}}])

    def uses(self) -> list[Use]:
        return [Use(self.field, "range", self.value)]


@dataclass(frozen=True)
class And(Node):
    children: tuple[Node, ...]

    def to_dsl(self, types: Mapping[str, str]) -> dict[str, Any]:
        return {"bool": {"filter": [c.to_dsl(types) for c in self.children]}}

    def uses(self) -> list[Use]:
        return [u for c in self.children for u in c.uses()]


@dataclass(frozen=True)
class Or(Node):
    children: tuple[Node, ...]

    def to_dsl(self, types: Mapping[str, str]) -> dict[str, Any]:
        return _should([c.to_dsl(types) for c in self.children])

    def uses(self) -> list[Use]:
        return [u for c in self.children for u in c.uses()]


@dataclass(frozen=True)
class Not(Node):
    child: Node

    def to_dsl(self, types: Mapping[str, str]) -> dict[str, Any]:
        return {"bool": {"must_not": self.child.to_dsl(types)}}

    def uses(self) -> list[Use]:
        return self.child.uses()


@dataclass(frozen=True)
class MatchAll(Node):
    """The empty query."""

    def to_dsl(self, types: Mapping[str, str]) -> dict[str, Any]:
        return {"match_all": {}}

    def uses(self) -> list[Use]:
        return []


def _should(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    return {"bool": {"should": clauses, "minimum_should_match": 1}}


def _query_string(parts: tuple[str, ...]) -> str:
    escaped = ["".join("\\" + ch if ch in _QUERY_STRING_RESERVED else ch for ch in part)
               for part in parts]
    return "*".join(escaped)


# ============================================================================ parser


def parse(text: str) -> Node:
    """The query tree of ``text``; KqlError for anything outside the supported KQL."""
    parser = _Parser(text)
    if parser.at_end():
        return MatchAll()
    node = parser.or_query()
    if not parser.at_end():
        parser.fail("unexpected text")
    return node


def to_dsl(text: str, types: Mapping[str, str]) -> dict[str, Any]:
    """The query DSL Kibana sends for ``text``; ``types`` maps field -> mapping type."""
    return parse(text).to_dsl(types)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # ---------------------------------------------------------------- helpers
    def fail(self, why: str) -> None:
        raise KqlError(f"{why} at offset {self.pos} of {self.text!r}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.text)

    def peek(self, token: str) -> bool:
        self.skip_space()
        return self.text.startswith(token, self.pos)

    def keyword(self, word: str) -> bool:
        """Consumes ``word`` (any case) when it stands alone here."""
        self.skip_space()
        end = self.pos + len(word)
        if self.text[self.pos:end].lower() != word:
            return False
        if end < len(self.text) and not (self.text[end].isspace() or self.text[end] == "("):
            return False
        self.pos = end
        return True

    def expect(self, token: str) -> None:
        if not self.peek(token):
            self.fail(f"expected {token!r}")
        self.pos += len(token)

    # ---------------------------------------------------------------- queries
    def or_query(self) -> Node:
        children = [self.and_query()]
        while self.keyword("or"):
            children.append(self.and_query())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_query(self) -> Node:
        children = [self.not_query()]
        while self.keyword("and"):
            children.append(self.not_query())
        return children[0] if len(children) == 1 else And(tuple(children))

    def not_query(self) -> Node:
        if self.keyword("not"):
            return Not(self.not_query())
        if self.peek("("):
            self.expect("(")
            node = self.or_query()
            self.expect(")")
            return node
        return self.expression()

    def expression(self) -> Node:
        self.skip_space()
        start = self.pos
        field = self.literal()
        if field.wildcard or field.value is None:
            self.pos = start
            self.fail("a field name without wildcards is needed")
        name = str(field.value)
        self.skip_space()
        for op in ("<=", ">=", "<", ">"):
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                self.skip_space()
                bound = self.literal()
                if bound.wildcard:
                    self.fail("a range bound cannot hold a wildcard")
                return Range(name, op, bound.value)
        if not self.peek(":"):
            self.pos = start
            self.fail("free text is not supported: write field: value")
        self.expect(":")
        if self.peek("{"):
            self.fail("nested queries are not supported")
        return self.value_list(name)

    # ---------------------------------------------------------------- values
    def value_list(self, field: str) -> Node:
        if self.peek("("):
            self.expect("(")
            node = self.or_values(field)
            self.expect(")")
            return node
        return Is(field, self.literal())

    def or_values(self, field: str) -> Node:
        children = [self.and_values(field)]
        while self.keyword("or"):
            children.append(self.and_values(field))
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_values(self, field: str) -> Node:
        children = [self.not_values(field)]
        while self.keyword("and"):
            children.append(self.not_values(field))
        return children[0] if len(children) == 1 else And(tuple(children))

    def not_values(self, field: str) -> Node:
        if self.keyword("not"):
            return Not(self.not_values(field))
        return self.value_list(field)

    def literal(self) -> Value:
        self.skip_space()
        if self.peek('"'):
            return Value(self.quoted(), phrase=True)
        return self.unquoted()

    def quoted(self) -> str:
        self.expect('"')
        out = []
        while self.pos < len(self.text) and self.text[self.pos] != '"':
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                self.pos += 1
                ch = self.text[self.pos]
            out.append(ch)
            self.pos += 1
        if self.pos >= len(self.text):
            self.fail("unterminated quoted string")
        self.pos += 1
        return "".join(out)

    def unquoted(self) -> Value:
        parts, current, wildcard = [], [], False
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                current.append(self.text[self.pos + 1])
                self.pos += 2
            elif ch == "*":
                parts.append("".join(current))
                current, wildcard = [], True
                self.pos += 1
            elif ch in _SPECIAL:
                break
            else:
                current.append(ch)
                self.pos += 1
        parts.append("".join(current))
        if not wildcard:
            text = parts[0]
            if not text:
                self.fail("a value is needed")
            return Value(_typed(text))
        return Value("*".join(parts), wildcard=tuple(parts))


def _typed(text: str) -> Scalar:
    """Kibana's reading of an unquoted literal: null, true, false, a number, or text."""
    if text in ("null", "true", "false"):
        return {"null": None, "true": True, "false": False}[text]
    if _NUMBER_RE.match(text):
        number = float(text)
        return int(number) if number.is_integer() and "." not in text else number
    return text
