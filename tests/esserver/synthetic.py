"""Synthetic ``_source``: what a ``logsdb`` index returns instead of the document it stored.

Following Elasticsearch's "Synthetic _source modifications":

* fields come back alphabetically ordered, named as they are mapped (dotted keys become
  objects);
* values come back as the field type renders them (``"5"`` in a ``long`` is ``5``, a date is
  printed in its format, a number in a ``keyword`` is a string);
* ``index.mapping.synthetic_source_keep: none``: arrays move to the leaves (an array of
  objects becomes an object of arrays), ``keyword``/``ip`` arrays are sorted and
  de-duplicated, numeric/date/boolean arrays sorted, a single value is no array;
* ``arrays`` (the default for ``logsdb``): arrays keep their order and duplicates, arrays of
  objects are kept as they were (nested arrays are flattened);
* unmapped fields (``dynamic: false``, disabled objects) come back as stored.
"""

from __future__ import annotations

import datetime
from typing import Any

from .mapping import FieldMapper, Mapping, ObjectMapper, to_millis
from .settings import put_path

_SORTED_DEDUPED = frozenset({"keyword", "ip"})
_SORTED = frozenset({"long", "double", "date", "boolean"})


def synthesize(source: dict[str, Any], mapping: Mapping, keep: str) -> dict[str, Any]:
    leaves: dict[tuple[str, ...], _Leaf] = {}
    verbatim: dict[tuple[str, ...], Any] = {}
    _walk(source, mapping.root, (), keep, leaves, verbatim)
    out: dict[str, Any] = {}
    for path, leaf in leaves.items():
        value = leaf.render(keep)
        if value is not _NONE:
            put_path(out, path, value)
    for path, value in verbatim.items():
        put_path(out, path, value)
    return _sorted(out)


_NONE = object()


class _Leaf:
    __slots__ = ("array", "field", "values")

    def __init__(self, field: FieldMapper) -> None:
        self.field = field
        self.values: list[Any] = []
        self.array = False

    def add(self, value: Any) -> None:
        if isinstance(value, list):
            self.array = True
            for v in value:
                self.add_flat(v)
        else:
            self.add_flat(value)

    def add_flat(self, value: Any) -> None:
        if isinstance(value, list):
            for v in value:
                self.add_flat(v)
        elif value is not None and not isinstance(value, dict):
            rendered = _render(self.field, value)
            if rendered is not None:
                self.values.append(rendered)

    def render(self, keep: str) -> Any:
        values = self.values
        if not values:
            return _NONE
        if keep == "none":
            kind = self.field.kind
            if kind in _SORTED_DEDUPED:
                values = sorted(set(values))
            elif kind in _SORTED:
                values = sorted(values)
            return values[0] if len(values) == 1 else values
        return values if self.array or len(values) > 1 else values[0]


def _walk(obj: dict[str, Any], node: ObjectMapper, prefix: tuple[str, ...], keep: str,
          leaves: dict[tuple[str, ...], _Leaf], verbatim: dict[tuple[str, ...], Any]) -> None:
    for key, value in obj.items():
        parts = tuple(key.split("."))
        cur: FieldMapper | ObjectMapper | None = node
        path = prefix
        for i, part in enumerate(parts):
            path = (*path, part)
            child = cur.props.get(part) if isinstance(cur, ObjectMapper) else None
            if child is None or (isinstance(child, ObjectMapper) and not child.enabled):
                _keep_verbatim(verbatim, (*path, *parts[i + 1:]), value)
                break
            cur = child
            if isinstance(cur, FieldMapper):
                if i == len(parts) - 1:
                    leaves.setdefault(path, _Leaf(cur)).add(value)
                else:
                    _keep_verbatim(verbatim, (*path, *parts[i + 1:]), value)
                break
        else:
            assert isinstance(cur, ObjectMapper)
            _object(value, cur, path, keep, leaves, verbatim)


def _object(value: Any, node: ObjectMapper, path: tuple[str, ...], keep: str,
            leaves: dict[tuple[str, ...], _Leaf], verbatim: dict[tuple[str, ...], Any]) -> None:
    if isinstance(value, dict):
        _walk(value, node, path, keep, leaves, verbatim)
    elif isinstance(value, list):
        if keep != "none" and any(isinstance(v, dict) for v in value):
            _keep_verbatim(verbatim, path, [_sorted(v) if isinstance(v, dict) else v
                                            for v in _flat(value)])
            return
        for item in value:
            _object(item, node, path, keep, leaves, verbatim)


def _flat(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        out.extend(_flat(v) if isinstance(v, list) else [v])
    return out


def _keep_verbatim(verbatim: dict[tuple[str, ...], Any], path: tuple[str, ...],
                   value: Any) -> None:
    if path in verbatim:
        before = verbatim[path]
        verbatim[path] = [*(before if isinstance(before, list) else [before]), value]
    else:
        verbatim[path] = value


def _render(field: FieldMapper, value: Any) -> Any:
    kind = field.kind
    try:
        if kind == "keyword":
            if isinstance(value, bool):
                return "true" if value else "false"
            return str(value)
        if kind == "long":
            return int(float(value)) if isinstance(value, str) else int(value)
        if kind == "double":
            return float(value)
        if kind == "boolean":
            return value if isinstance(value, bool) else str(value) == "true"
        if kind == "date":
            return _format_date(field, value)
    except (TypeError, ValueError):
        return value
    return value


def _format_date(field: FieldMapper, value: Any) -> Any:
    if field.type == "date_nanos" and isinstance(value, str) and "." in value:
        return _nanos_string(value)
    millis = to_millis(value)
    if millis is None:
        return value
    dt = datetime.datetime.fromtimestamp(millis / 1000, tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"


def _nanos_string(value: str) -> str:
    """``strict_date_optional_time_nanos`` printing: 3 to 9 fraction digits, UTC."""
    head, _, rest = value.partition(".")
    digits = "".join(c for c in rest if c.isdigit())
    zone = rest[len(digits):]
    if zone not in ("Z", ""):
        return value  # offsets would need converting; leave them as stored
    frac = digits.rstrip("0")
    frac = frac + "0" * (3 - len(frac)) if len(frac) < 3 else frac
    return f"{head}.{frac}Z"


def _sorted(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [_sorted(v) for v in obj]
    return obj
