"""Aggregations: ``terms``, ``composite`` (``terms`` and ``date_histogram`` sources) and the
metrics ``min``, ``max``, ``sum``, ``avg``, ``value_count``, ``cardinality``, top level or
under a bucket aggregation.

Documents are *refs*: ``shard << 32 | slot`` (shard = position of the index in the search).
Values come from doc values; ``date_nanos`` aggregate in milliseconds, as in Elasticsearch.

Paging a composite aggregation re-runs it with ``after``; the grouping of one searcher
(refresh watermarks or point in time), query and sources is computed once and kept in a
small cache, so each further page costs a bisection, not another pass over the documents.
"""

from __future__ import annotations

import datetime
import itertools
import re
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from .docvalues import NANOS_PER_MILLI, Field
from .errors import ESError
from .query import QueryCompiler, date_math, parsing_error, shard_failure

MASK = 0xFFFFFFFF
METRICS = frozenset({"min", "max", "sum", "avg", "value_count", "cardinality"})
_NUMERIC_KINDS = frozenset({"long", "double", "date", "boolean"})
_CALENDAR = {"minute": "m", "1m": "m", "hour": "h", "1h": "h", "day": "d", "1d": "d",
             "week": "w", "1w": "w", "month": "M", "1M": "M", "quarter": "q", "1q": "q",
             "year": "y", "1y": "y", "second": "s", "1s": "s"}
_FIXED_RE = re.compile(r"(\d+)(ms|s|m|h|d)")
_FIXED_MS = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000}
_JAVA_TOKENS = re.compile(r"'[^']*'|yyyy|uuuu|yy|MM|dd|HH|mm|ss|SSS|XXX|XX|X|Z|.")
_TEXT_AGG = (
    "Text fields are not optimised for operations that require per-document field data like "
    "aggregations and sorting, so these operations are disabled by default. Please use a "
    "keyword field instead. Alternatively, set fielddata=true on [{}] in order to load field "
    "data by uninverting the inverted index. Note that this can use significant memory.")


class AggCache:
    """A few composite groupings, least recently used out."""

    def __init__(self, entries: int = 4) -> None:
        self.entries = entries
        self._data: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.entries:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


class AggContext:
    """The shards of one search and what aggregations need from them."""

    def __init__(self, compilers: list[QueryCompiler], cache: AggCache, identity: Any) -> None:
        self.compilers = compilers
        self.cache = cache
        self.identity = identity  # searcher + query: what a cached grouping is valid for
        self._fields: dict[str, tuple[Field, list[Any]]] = {}

    def field(self, path: str) -> tuple[Field, list[Any]]:
        """The field (as the first index mapping it sees it) and its column per shard."""
        found = self._fields.get(path)
        if found is None:
            found = self._fields[path] = self._resolve(path)
        return found

    def _resolve(self, path: str) -> tuple[Field, list[Any]]:
        fields = [c.field(path) for c in self.compilers]
        main = next((f for f in fields if f.kind not in ("unmapped", "object")), fields[0]) \
            if fields else None
        if main is None:
            raise parsing_error(f"no field [{path}]")
        if main.kind == "text":
            raise shard_failure(_TEXT_AGG.format(path))
        cols = [c.column(f) if f.kind not in ("unmapped", "object") else _Nones()
                for c, f in zip(self.compilers, fields)]
        return main, cols


class _Nones:
    """A column of a field an index does not map."""

    def __getitem__(self, slot: int) -> None:
        return None


def run_aggs(specs: dict[str, Any], ctx: AggContext, refs: Sequence[int],
             path: str = "") -> dict[str, Any]:
    if not isinstance(specs, dict):
        raise parsing_error("Expected [START_OBJECT] under [aggregations]")
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        if not isinstance(spec, dict):
            raise parsing_error(f"Expected [START_OBJECT] under [{name}]")
        kinds = [k for k in spec if k not in ("aggs", "aggregations", "meta")]
        if not kinds:
            raise parsing_error(f"Missing definition for aggregation [{name}]")
        if len(kinds) > 1:
            raise parsing_error(f"Found two aggregation type definitions in [{name}]: "
                                f"[{kinds[0]}] and [{kinds[1]}]")
        kind = kinds[0]
        body = spec[kind] or {}
        sub = spec.get("aggs") or spec.get("aggregations")
        where = f"{path}>{name}" if path else name
        if kind in METRICS:
            if sub:
                raise parsing_error(f"Aggregator [{name}] of type [{kind}] cannot accept "
                                    "sub-aggregations")
            out[name] = _metric(kind, name, body, ctx, refs)
        elif kind == "terms":
            out[name] = _terms(body, sub, ctx, refs, where)
        elif kind == "composite":
            if path:
                raise ESError(400, {
                    "type": "illegal_argument_exception",
                    "reason": f"[composite] aggregation cannot be used with a parent "
                    f"aggregation of type: [{path.split('>')[-1]}]"})
            out[name] = _composite(name, body, sub, ctx, refs)
        else:
            raise parsing_error(f"Unknown aggregation type [{kind}] (not supported by the "
                                "test server)")
        if "meta" in spec:
            out[name]["meta"] = spec["meta"]
    return out


def _values(cols: list[Any], refs: Sequence[int]) -> list[Any]:
    out: list[Any] = []
    for ref in refs:
        v = cols[ref >> 32][ref & MASK]
        if v is None:
            continue
        if type(v) is tuple:
            out.extend(v)
        else:
            out.append(v)
    return out


# ============================================================================ metrics
def _metric(kind: str, name: str, body: dict[str, Any], ctx: AggContext,
            refs: Sequence[int]) -> dict[str, Any]:
    path = body.get("field")
    if not isinstance(path, str):
        raise parsing_error(f"Required one of fields [field, script], but none were specified. "
                            f"in [{name}]")
    field, cols = ctx.field(path)
    if field.kind in ("unmapped", "object"):
        return {"value": 0 if kind in ("value_count", "cardinality") else
                (0.0 if kind == "sum" else None)}
    values = [field.millis(v) for v in _values(cols, refs)]
    if kind == "value_count":
        return {"value": len(values)}
    if kind == "cardinality":
        return {"value": len(set(values))}
    if field.kind not in _NUMERIC_KINDS:
        raise shard_failure(f"Field [{path}] of type [{field.type}] is not supported for "
                            f"aggregation [{kind}]")
    nums = [int(v) if isinstance(v, bool) else v for v in values]
    if kind == "sum":
        return {"value": float(sum(nums))}
    if not nums:
        return {"value": None}
    value = float(min(nums) if kind == "min" else max(nums) if kind == "max"
                  else sum(nums) / len(nums))
    out: dict[str, Any] = {"value": value}
    if field.kind == "date":
        out["value_as_string"] = format_date(int(value), body.get("format"), None)
    return out


# ============================================================================ terms
def _terms(body: dict[str, Any], sub: dict[str, Any] | None, ctx: AggContext,
           refs: Sequence[int], path: str) -> dict[str, Any]:
    field, cols = ctx.field(body.get("field", ""))
    size = int(body.get("size", 10))
    groups: dict[Any, list[int]] = {}
    for ref in refs:
        v = cols[ref >> 32][ref & MASK]
        if v is None:
            continue
        for key in (set(v) if type(v) is tuple else (v,)):
            groups.setdefault(field.millis(key), []).append(ref)
    order = body.get("order") or {"_count": "desc"}
    if isinstance(order, list):
        order = order[0] if order else {"_count": "desc"}
    (what, direction), = order.items()
    desc = str(direction).lower() == "desc"
    if what == "_key":
        ordered = sorted(groups.items(), key=lambda kv: _sortable(kv[0]), reverse=desc)
    else:
        ordered = sorted(groups.items(), key=lambda kv: _sortable(kv[0]))
        ordered.sort(key=lambda kv: len(kv[1]), reverse=desc)
    min_count = int(body.get("min_doc_count", 1))
    ordered = [kv for kv in ordered if len(kv[1]) >= min_count]
    buckets = []
    for key, members in ordered[:size]:
        bucket: dict[str, Any] = {"key": _bucket_key(field, key)}
        if field.kind in ("date", "boolean"):
            bucket["key_as_string"] = (format_date(key, body.get("format"), None)
                                       if field.kind == "date" else ("true" if key else "false"))
        bucket["doc_count"] = len(members)
        if sub:
            bucket.update(run_aggs(sub, ctx, members, path))
        buckets.append(bucket)
    return {"doc_count_error_upper_bound": 0,
            "sum_other_doc_count": sum(len(m) for _, m in ordered[size:]),
            "buckets": buckets}


def _sortable(v: Any) -> Any:
    return str(v) if not isinstance(v, (int, float)) else v


def _bucket_key(field: Field, key: Any) -> Any:
    if field.kind == "boolean":
        return 1 if key else 0
    if field.kind == "ip":
        return str(key)
    return key


# ============================================================================ composite
class _Source:
    """One composite value source: how it turns column values into keys."""

    def __init__(self, name: str, kind: str, body: dict[str, Any], ctx: AggContext) -> None:
        self.name = name
        self.kind = kind
        self.field, self.cols = ctx.field(body.get("field", ""))
        self.desc = str(body.get("order", "asc")).lower() == "desc"
        self.missing_bucket = bool(body.get("missing_bucket", False))
        missing_order = str(body.get("missing_order", "default")).lower()
        if missing_order not in ("first", "last", "default"):
            raise parsing_error(f"Unknown MissingOrder value [{missing_order}]")
        if missing_order != "default" and not self.missing_bucket:
            raise ESError(400, {"type": "illegal_argument_exception",
                                "reason": f"missing_order can only be set if missing_bucket "
                                f"is true for source [{name}]"})
        self.missing_first = (missing_order == "first" or
                              (missing_order == "default" and not self.desc))
        self.format = body.get("format")
        self.zone = _zone(body.get("time_zone"))
        self.round: Callable[[int], int] | None = None
        if kind == "date_histogram":
            if self.field.kind != "date":
                raise shard_failure(f"Field [{self.field.path}] of type [{self.field.type}] is "
                                    "not supported for aggregation [date_histogram]")
            self.round = _rounding(body, self.zone)
        elif kind != "terms":
            raise parsing_error(f"Unknown value source type [{kind}] (test server: terms, "
                                "date_histogram)")
        self.key_of = self._key_function()

    def _key_function(self) -> Callable[[Any], Any]:
        """A column value to its bucket key (millis for dates, rounded by the interval)."""
        nanos = self.field.nanos
        rnd = self.round
        if rnd is None:
            return (lambda v: v // NANOS_PER_MILLI) if nanos else _identity
        if nanos:
            return lambda v: rnd(v // NANOS_PER_MILLI)
        return rnd

    def keys(self, entry: Any) -> tuple[Any, ...]:
        values = entry if type(entry) is tuple else (entry,)
        return tuple(dict.fromkeys(self.key_of(v) for v in values))

    def render(self, key: Any) -> Any:
        if key is None:
            return None
        if self.round is not None or self.field.kind == "date":
            return format_date(key, self.format, self.zone) if self.format else key
        if self.field.kind == "ip":
            return str(key)
        return key

    def parse_after(self, value: Any) -> Any:
        if value is None:
            if not self.missing_bucket:
                raise ESError(400, {"type": "illegal_argument_exception",
                                    "reason": f"Cannot set after key in the composite "
                                    f"aggregation [{self.name}] - missing value"})
            return None
        if self.field.kind == "date":
            millis = date_math(value) if isinstance(value, str) else int(value)
            if millis is None:
                raise ESError(400, {"type": "illegal_argument_exception",
                                    "reason": f"failed to parse date field [{value}]"})
            return millis
        return self.field.millis(self.field.norm(value)) if self.field.kind != "keyword" \
            else str(value)


def _composite(name: str, body: dict[str, Any], sub: dict[str, Any] | None, ctx: AggContext,
               refs: Sequence[int]) -> dict[str, Any]:
    raw_sources = body.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise parsing_error(f"Required [sources] in [{name}]")
    sources: list[_Source] = []
    for entry in raw_sources:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise parsing_error("[sources] expects an array of single-key objects")
        (src_name, spec), = entry.items()
        if any(s.name == src_name for s in sources):
            raise ESError(400, {"type": "illegal_argument_exception",
                                "reason": f"Composite source names must be unique, found "
                                f"duplicates: [{src_name}]"})
        (kind, src_body), = spec.items()
        sources.append(_Source(src_name, kind, src_body or {}, ctx))
    size = int(body.get("size", 10))
    grouping = _grouping(name, body, sources, ctx, refs)
    keys, comps, groups, ranks = grouping
    start = 0
    after = body.get("after")
    if after is not None:
        if not isinstance(after, dict) or len(after) != len(sources):
            raise ESError(400, {"type": "illegal_argument_exception",
                                "reason": f"[after] has {len(after or {})} value(s) but "
                                f"[sources] has {len(sources)}"})
        for s in sources:
            if s.name not in after:
                raise ESError(400, {"type": "illegal_argument_exception",
                                    "reason": f"Missing value for [after.{s.name}]"})
        after_comp = tuple(_component(s, s.parse_after(after[s.name]), r)
                           for s, r in zip(sources, ranks))
        start = bisect_right(comps, after_comp)
    page = keys[start : start + size]
    buckets = []
    for key in page:
        bucket: dict[str, Any] = {
            "key": {s.name: s.render(k) for s, k in zip(sources, key)},
            "doc_count": len(groups[key])}
        if sub:
            bucket.update(run_aggs(sub, ctx, groups[key], name))
        buckets.append(bucket)
    out: dict[str, Any] = {}
    if buckets:
        out["after_key"] = dict(buckets[-1]["key"])
    out["buckets"] = buckets
    return out


def _grouping(name: str, body: dict[str, Any], sources: list[_Source], ctx: AggContext,
              refs: Sequence[int]) -> Any:
    """(sorted keys, their sort components, key -> refs, per-source sorted values)."""
    spec = {k: v for k, v in body.items() if k not in ("after", "size")}
    cache_key = (ctx.identity, name, orjson.dumps(spec, option=orjson.OPT_SORT_KEYS))
    cached = ctx.cache.get(cache_key)
    if cached is not None:
        return cached
    groups: dict[tuple[Any, ...], list[int]] = {}
    plan = [(s.cols, s.key_of, s.missing_bucket) for s in sources]
    for ref in refs:
        shard, slot = ref >> 32, ref & MASK
        key: list[Any] = []
        multi = False
        for cols, key_of, missing_ok in plan:
            entry = cols[shard][slot]
            if entry is None:
                if not missing_ok:
                    break
                key.append(None)
            elif type(entry) is tuple:
                multi = True
                break
            else:
                key.append(key_of(entry))
        else:
            members = groups.get(k := tuple(key))
            if members is None:
                groups[k] = [ref]
            else:
                members.append(ref)
            continue
        if multi:
            _group_multi(sources, shard, slot, ref, groups)
    ranks = [sorted({k[i] for k in groups if k[i] is not None}, key=_sortable)
             for i in range(len(sources))]
    rank_maps = [{v: r for r, v in enumerate(vals)} for vals in ranks]

    def comp(key: tuple[Any, ...]) -> tuple[float, ...]:
        return tuple(_component(s, k, vals, rm) for s, k, vals, rm
                     in zip(sources, key, ranks, rank_maps))

    ordered = sorted(groups, key=comp)
    result = (ordered, [comp(k) for k in ordered], groups, ranks)
    ctx.cache.put(cache_key, result)
    return result


def _group_multi(sources: list[_Source], shard: int, slot: int, ref: int,
                 groups: dict[tuple[Any, ...], list[int]]) -> None:
    """A document with several values in a source is in every combination's bucket."""
    parts: list[tuple[Any, ...]] = []
    for s in sources:
        entry = s.cols[shard][slot]
        if entry is None:
            if not s.missing_bucket:
                return
            parts.append((None,))
        else:
            parts.append(s.keys(entry))
    for combo in itertools.product(*parts):
        groups.setdefault(combo, []).append(ref)


def _identity(value: Any) -> Any:
    return value


def _component(source: _Source, value: Any, sorted_values: list[Any],
               rank_map: dict[Any, int] | None = None) -> float:
    """A key's position for one source: its rank among the values, signed by the order;
    missing values first or last; a value not among them falls between its neighbours."""
    if value is None:
        return float("-inf") if source.missing_first else float("inf")
    rank: float
    if rank_map is not None and value in rank_map:
        rank = rank_map[value]
    else:
        keyed = [_sortable(v) for v in sorted_values]
        pos = bisect_right(keyed, _sortable(value))
        exact = pos > 0 and keyed[pos - 1] == _sortable(value)
        rank = pos - 1 if exact else pos - 0.5
    return -rank if source.desc else rank


# ============================================================================ dates
def _zone(spec: Any) -> datetime.tzinfo | None:
    if spec is None or spec in ("UTC", "Z", "+00:00"):
        return None
    text = str(spec)
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", text)
    if m:
        delta = datetime.timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        return datetime.timezone(delta if m.group(1) == "+" else -delta)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ESError(400, {"type": "illegal_argument_exception",
                            "reason": f"Unknown time-zone ID: {text}"}) from None


def _rounding(body: dict[str, Any], zone: datetime.tzinfo | None) -> Callable[[int], int]:
    calendar_spec = body.get("calendar_interval")
    fixed_spec = body.get("fixed_interval")
    if (calendar_spec is None) == (fixed_spec is None):
        if body.get("interval") is not None:
            raise ESError(400, {"type": "illegal_argument_exception",
                                "reason": "[interval] on [date_histogram] is deprecated, use "
                                "[fixed_interval] or [calendar_interval] in the future."})
        raise ESError(400, {"type": "illegal_argument_exception",
                            "reason": "Invalid interval specified, must be non-null and "
                            "non-empty"})
    offset = _offset_ms(body.get("offset"))
    if fixed_spec is not None:
        m = _FIXED_RE.fullmatch(str(fixed_spec))
        if m is None or int(m.group(1)) == 0:
            raise ESError(400, {"type": "illegal_argument_exception",
                                "reason": f"failed to parse setting [date_histogram.fixedInterval]"
                                f" with value [{fixed_spec}] as a time value: unit is missing "
                                "or unrecognized"})
        step = int(m.group(1)) * _FIXED_MS[m.group(2)]
        return _in_zone(lambda local: local - local % step, zone, offset)
    unit = _CALENDAR.get(str(calendar_spec))
    if unit is None:
        raise ESError(400, {"type": "illegal_argument_exception",
                            "reason": f"The supplied interval [{calendar_spec}] could not be "
                            "parsed as a calendar interval."})
    if unit in ("s", "m", "h", "d"):
        step = _FIXED_MS[unit]
        return _in_zone(lambda local: local - local % step, zone, offset)
    if unit == "w":
        week = 7 * 86400000
        monday = 4 * 86400000  # 1970-01-01 was a Thursday; 1970-01-05 a Monday
        return _in_zone(lambda local: local - (local - monday) % week, zone, offset)
    return _in_zone(lambda local: _calendar_floor(local // 86400000, unit) * 86400000, zone,
                    offset)


def _in_zone(floor: Callable[[int], int], zone: datetime.tzinfo | None,
             offset: int) -> Callable[[int], int]:
    """Rounding of UTC millis by ``floor`` applied in local time (zone, then offset)."""
    if zone is None:
        return floor if not offset else (lambda ms: floor(ms - offset) + offset)
    return lambda ms: _local_floor(ms, zone, offset, floor)


def _local_floor(ms: int, zone: datetime.tzinfo | None, offset: int,
                 floor: Callable[[int], int]) -> int:
    """Round in local time (time_zone, then offset), back to UTC millis."""
    shift = 0
    if zone is not None:
        utcoff = datetime.datetime.fromtimestamp(ms / 1000, tz=zone).utcoffset()
        shift = int(utcoff.total_seconds() * 1000) if utcoff else 0
    return floor(ms + shift - offset) + offset - shift


@lru_cache(maxsize=100000)
def _calendar_floor(day: int, unit: str) -> int:
    """Day number of the start of the month/quarter/year holding ``day``."""
    d = datetime.date(1970, 1, 1) + datetime.timedelta(days=day)
    if unit == "M":
        start = d.replace(day=1)
    elif unit == "q":
        start = d.replace(month=(d.month - 1) // 3 * 3 + 1, day=1)
    else:
        start = d.replace(month=1, day=1)
    return (start - datetime.date(1970, 1, 1)).days


def _offset_ms(spec: Any) -> int:
    if spec is None:
        return 0
    m = re.fullmatch(r"([+-]?)(\d+)(ms|s|m|h|d)", str(spec))
    if m is None:
        raise ESError(400, {"type": "illegal_argument_exception",
                            "reason": f"failed to parse setting [date_histogram.offset] with "
                            f"value [{spec}] as a time value: unit is missing or unrecognized"})
    value = int(m.group(2)) * _FIXED_MS[m.group(3)]
    return -value if m.group(1) == "-" else value


def format_date(millis: int, fmt: str | None, zone: datetime.tzinfo | None) -> Any:
    """A date the way a ``format`` prints it (default: strict_date_optional_time in UTC)."""
    if fmt in ("epoch_millis",):
        return str(millis)
    dt = datetime.datetime.fromtimestamp(millis / 1000, tz=zone or datetime.timezone.utc)
    if fmt in (None, "strict_date_optional_time", "date_optional_time", "iso8601",
               "strict_date_optional_time_nanos"):
        return _iso(dt, millis)
    out = []
    for tok in _JAVA_TOKENS.findall(fmt):
        out.append(_java_token(tok, dt, millis))
    return "".join(out)


def _iso(dt: datetime.datetime, millis: int) -> str:
    zone = "Z" if not dt.utcoffset() else dt.strftime("%z")[:3] + ":" + dt.strftime("%z")[3:]
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}" + zone


def _java_token(tok: str, dt: datetime.datetime, millis: int) -> str:
    if tok.startswith("'"):
        return tok[1:-1] if len(tok) > 2 else "'"
    table = {"yyyy": "%Y", "uuuu": "%Y", "yy": "%y", "MM": "%m", "dd": "%d", "HH": "%H",
             "mm": "%M", "ss": "%S"}
    if tok in table:
        return dt.strftime(table[tok])
    if tok == "SSS":
        return f"{millis % 1000:03d}"
    if tok in ("XXX", "XX", "X", "Z"):
        off = dt.strftime("%z")
        if tok == "Z":
            return off
        if off in ("+0000", ""):
            return "Z"
        return off[:3] + ":" + off[3:] if tok == "XXX" else off
    return tok

