"""Doc values: the indexed values of one field for every stored document of an index.

Documents are stored as raw JSON (see :mod:`.store`); a query, sort or aggregation on a
field reads a *column*: one entry per slot, ``None`` (no value), the value, or a tuple of
values, normalized as the field's mapping indexes them (keywords as strings, numbers,
dates as epoch millis or nanos for ``date_nanos``, text as its tokens).  Columns are built
on first use by parsing every document once (all columns asked for together share the
parse) and extended when documents are added; a merge drops them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from .mapping import (
    FieldMapper,
    Mapping,
    ObjectMapper,
    fast_iso_nanos,
    parse_iso_millis,
    to_millis,
)

if TYPE_CHECKING:
    from .store import Index

_TOKEN_RE = re.compile(r"\w+", re.UNICODE)
_NANOS_RE = re.compile(r"(.*T\d{2}:\d{2}:\d{2})[.,](\d{1,9})(.*)")
NANOS_PER_MILLI = 1_000_000


def get_values(source: Any, path: str) -> list[Any]:
    """All non-null leaf values at a dotted path; literal dotted keys are honoured."""
    out: list[Any] = []
    _collect(source, path, out)
    return out


def _collect(obj: Any, path: str, out: list[Any]) -> None:
    t = type(obj)
    if t is list:
        for item in obj:
            _collect(item, path, out)
        return
    if t is not dict:
        return
    v = obj.get(path, _MISSING)
    if v is not _MISSING:
        _flatten(v, out)
    if "." not in path:
        return
    for key, value in obj.items():
        if len(key) < len(path) and path.startswith(key) and path[len(key)] == ".":
            _collect(value, path[len(key) + 1 :], out)


_MISSING = object()


def _flatten(v: Any, out: list[Any]) -> None:
    if type(v) is list:
        for item in v:
            _flatten(item, out)
    elif v is not None:
        out.append(v)


def analyze(value: Any) -> list[str]:
    """Standard-analyzer-ish tokenization: unicode word tokens, lowercased."""
    return [t.lower() for t in _TOKEN_RE.findall(str(value))]


def parse_nanos(value: str) -> int | None:
    """An ISO date string to epoch nanoseconds (None when invalid)."""
    fast = fast_iso_nanos(value)
    if fast is not None:
        return fast
    millis = parse_iso_millis(value)
    if millis is None:
        return None
    m = _NANOS_RE.fullmatch(value)
    if m is None:
        return millis * NANOS_PER_MILLI
    frac = (m.group(2) + "000000000")[:9]
    return (millis - millis % 1000) * NANOS_PER_MILLI + int(frac) if millis >= 0 else \
        millis * NANOS_PER_MILLI  # pre-1970 nanos: millis precision is enough here


def to_nanos(value: Any) -> int | None:
    """A ``date_nanos`` value: ISO string (nanosecond precision) or epoch millis number."""
    if isinstance(value, str):
        if value.lstrip("-").isdigit() and len(value) != 4:
            return int(value) * NANOS_PER_MILLI
        return parse_nanos(value)
    millis = to_millis(value)
    return None if millis is None else millis * NANOS_PER_MILLI


class Field:
    """A resolved field: where its value lives in _source and how it is indexed."""

    __slots__ = ("_norm", "_parts", "ignore_above", "kind", "nanos", "path", "source_path",
                 "type")

    def __init__(self, path: str, mapping: Mapping) -> None:
        self.path = path
        mapper = mapping.resolve(path)
        self.source_path = path
        self.ignore_above: int | None = None
        self.nanos = False
        if isinstance(mapper, FieldMapper):
            self.kind = mapper.kind
            self.type = mapper.type
            self.ignore_above = mapper.ignore_above
            self.source_path = mapping.source_path(path)
            self.nanos = mapper.type == "date_nanos"
        elif isinstance(mapper, ObjectMapper):
            self.kind = "object"
            self.type = mapper.type
        else:
            self.kind = "unmapped"
            self.type = ""
        self._parts = tuple(self.source_path.split("."))
        self._norm = _NORMALIZERS.get(self.kind)

    @property
    def signature(self) -> tuple[str, str, str]:
        """What a column of this field depends on."""
        return (self.source_path, self.kind, self.type)

    def terms(self, source: dict[str, Any]) -> list[Any]:
        """Indexed terms of this field for one document."""
        if self.kind in ("unmapped", "object"):
            return []
        values = _nested(source, self._parts)
        if values is None:
            values = get_values(source, self.source_path)
        if not values:
            return []
        if self.kind == "text":
            return [tok for v in values for tok in analyze(v)]
        norm = self._norm
        if norm is not None and self.ignore_above is None:
            out = []
            for v in values:
                t = norm(v, self)
                if t is not None:
                    out.append(t)
            return out
        return [t for t in (self.norm(v) for v in values) if t is not None]

    def norm(self, v: Any) -> Any:
        """Normalize a source or query value to the indexed form (None = not indexed)."""
        kind = self.kind
        try:
            if kind == "keyword":
                if isinstance(v, bool):
                    s = "true" if v else "false"
                elif isinstance(v, (dict, list)):
                    return None
                else:
                    s = str(v)
                if self.ignore_above is not None and len(s) > self.ignore_above:
                    return None
                return s
            if kind == "long":
                if isinstance(v, bool):
                    return None
                if isinstance(v, str):
                    v = float(v) if ("." in v or "e" in v.lower()) else int(v)
                return int(v)
            if kind == "double":
                if isinstance(v, bool):
                    return None
                return float(v)
            if kind == "date":
                return to_nanos(v) if self.nanos else to_millis(v)
            if kind == "boolean":
                if v is True or v == "true":
                    return True
                if v is False or v in ("false", ""):
                    return False
                return None
            if kind == "ip":
                return ipaddress.ip_address(v)
            if kind == "text":
                return str(v)
        except (ValueError, TypeError):
            return None
        return v

    def entry_function(self, pool: dict[Any, Any]) -> Callable[[dict[str, Any]], Any]:
        """``source -> column entry``, with a fast path for one plain value."""
        parts, norm, slow = self._parts, self._norm, self._slow_entry
        if norm is None or self.ignore_above is not None or self.kind == "text":
            return lambda src: slow(src, pool)
        locate = _locator(parts)

        def entry(src: dict[str, Any]) -> Any:
            node = locate(src)
            if node is _MISSING or node is None or type(node) in (list, dict):
                return slow(src, pool)
            value = norm(node, self)
            if type(value) is str:
                return pool.setdefault(value, value)
            return value

        return entry

    def _slow_entry(self, src: dict[str, Any], pool: dict[Any, Any]) -> Any:
        return compact(self.terms(src), pool)

    def millis(self, v: Any) -> Any:
        """A column value as aggregations see it (date_nanos aggregate in millis)."""
        return v // NANOS_PER_MILLI if self.nanos and isinstance(v, int) else v

    def sort_value(self, v: Any) -> Any:
        if self.kind == "boolean":
            return 1 if v else 0
        if self.kind == "ip":
            return str(v)
        return v


def _locator(parts: tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    """``source -> node at parts`` (or _MISSING), unrolled for the usual depths."""
    if len(parts) == 1:
        (a,) = parts
        return lambda src: src.get(a, _MISSING)
    if len(parts) == 2:
        a, b = parts

        def two(src: dict[str, Any]) -> Any:
            node = src.get(a)
            return node.get(b, _MISSING) if type(node) is dict else _MISSING

        return two
    if len(parts) == 3:
        a, b, c = parts

        def three(src: dict[str, Any]) -> Any:
            node = src.get(a)
            if type(node) is dict:
                node = node.get(b)
                if type(node) is dict:
                    return node.get(c, _MISSING)
            return _MISSING

        return three
    return lambda src: _walk(src, parts)


def _walk(source: dict[str, Any], parts: tuple[str, ...]) -> Any:
    """The node at ``parts`` through nested objects, or _MISSING."""
    node: Any = source
    for part in parts:
        if type(node) is not dict:
            return _MISSING
        node = node.get(part, _MISSING)
        if node is _MISSING:
            return _MISSING
    return node


def _nested(source: Any, parts: tuple[str, ...]) -> list[Any] | None:
    """Values at ``parts`` through nested objects; None when the document needs the general
    walk (arrays of objects on the way, or literal dotted keys)."""
    node = source
    for part in parts:
        if type(node) is not dict:
            return None
        nxt = node.get(part, _MISSING)
        if nxt is _MISSING:
            for key in node:
                if "." in key:
                    return None
            return []
        node = nxt
    if node is None:
        return []
    if type(node) is list:
        out: list[Any] = []
        _flatten(node, out)
        return out
    return [node]


def _norm_keyword(v: Any, f: Field) -> Any:
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "true" if v else "false"
    if t is dict or t is list:
        return None
    return str(v)


def _norm_long(v: Any, f: Field) -> Any:
    if type(v) is int:
        return v
    return f.norm(v)


def _norm_date(v: Any, f: Field) -> Any:
    if type(v) is str and f.nanos:
        fast = fast_iso_nanos(v)
        if fast is not None:
            return fast
    return f.norm(v)


_NORMALIZERS: dict[str, Callable[[Any, Field], Any]] = {
    "keyword": _norm_keyword, "long": _norm_long, "date": _norm_date}


def compact(values: list[Any], pool: dict[Any, Any] | None = None) -> Any:
    """A column entry: None, the single value, or a tuple (strings shared via ``pool``)."""
    if not values:
        return None
    if pool is not None:
        values = [pool.setdefault(v, v) if type(v) is str else v for v in values]
    if len(values) == 1:
        return values[0]
    return tuple(values)


def each(entry: Any) -> tuple[Any, ...]:
    """The values of a column entry."""
    if entry is None:
        return ()
    return entry if type(entry) is tuple else (entry,)


class Columns:
    """The doc values of one index, aligned with its slots."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._cols: dict[str, tuple[tuple[str, str, str], list[Any], dict[Any, Any]]] = {}

    def get(self, fields: list[Field]) -> list[list[Any]]:
        """Columns of ``fields`` covering every slot (built or extended as needed)."""
        slots = self.index.slots
        n = len(slots)
        todo: dict[int, list[Field]] = {}
        for f in {f.path: f for f in fields}.values():
            have = self._cols.get(f.path)
            if have is None or have[0] != f.signature:
                self._cols[f.path] = (f.signature, [], {})
                todo.setdefault(0, []).append(f)
            elif len(have[1]) < n:
                todo.setdefault(len(have[1]), []).append(f)
        for start, group in todo.items():
            targets = [(self._cols[f.path][1].append, f.entry_function(self._cols[f.path][2]))
                       for f in group]
            loads = orjson.loads
            if len(targets) == 1:
                (append, entry), = targets
                for i in range(start, n):
                    append(entry(loads(slots[i].raw)))
                continue
            for i in range(start, n):
                src = loads(slots[i].raw)
                for append, entry in targets:
                    append(entry(src))
        return [self._cols[f.path][1] for f in fields]

    def column(self, field: Field) -> list[Any]:
        return self.get([field])[0]
