"""Query DSL evaluation and ``_source`` filtering.

A query is compiled per index (field types come from that index's mapping) into a predicate
over the index's slots that reads doc values (:mod:`.docvalues`), so evaluating it touches
only the fields it names.  Scoring is not implemented: every hit scores 1.0 (``null`` when
sorting, like Elasticsearch).
"""

from __future__ import annotations

import calendar
import datetime
import fnmatch
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .docvalues import NANOS_PER_MILLI, Field, analyze, each, get_values, parse_nanos
from .errors import ESError
from .mapping import to_millis

if TYPE_CHECKING:
    from .store import Index

Predicate = Callable[[int], bool]

_DATE_MATH_RE = re.compile(
    r"(?P<anchor>now|.+?\|\|)(?P<ops>(?:[+-]\d+[yMwdhHms])*)(?:/(?P<round>[yMwdhHms]))?")
_OP_RE = re.compile(r"([+-])(\d+)([yMwdhHms])")
_QUERY_STRING_RESERVED = frozenset('+-=&|><!(){}[]^"~:/ \t\r\n')
_UNIT_MS = {"s": 1000, "m": 60000, "h": 3600000, "H": 3600000, "d": 86400000,
            "w": 604800000}


def parsing_error(reason: str) -> ESError:
    return ESError(400, {"type": "parsing_exception", "reason": reason, "line": 1, "col": 1})


# ============================================================================ date math
def date_math(value: Any, now_ms: int | None = None, round_up: bool = False) -> int | None:
    """Epoch millis of a date or date-math expression (``now-1d/d``, ``2024-05-01||+1M``);
    ``round_up`` rounds to the last millisecond of the unit (gt/lte bounds)."""
    if not isinstance(value, str):
        return to_millis(value)
    m = _DATE_MATH_RE.fullmatch(value)
    if m is None:
        return to_millis(value)
    anchor = m.group("anchor")
    if anchor == "now":
        base = now_ms if now_ms is not None else int(time.time() * 1000)
    else:
        parsed = to_millis(anchor[:-2])
        if parsed is None:
            return None
        base = parsed
    dt = datetime.datetime.fromtimestamp(base / 1000, tz=datetime.timezone.utc)
    for sign, amount, unit in _OP_RE.findall(m.group("ops") or ""):
        dt = _shift(dt, int(amount) * (1 if sign == "+" else -1), unit)
    if m.group("round"):
        start = floor_date(dt, m.group("round"))
        if round_up:
            return _millis(_shift(start, 1, m.group("round"))) - 1
        return _millis(start)
    return _millis(dt)


def _millis(dt: datetime.datetime) -> int:
    return calendar.timegm(dt.utctimetuple()) * 1000 + dt.microsecond // 1000


def _shift(dt: datetime.datetime, n: int, unit: str) -> datetime.datetime:
    if unit in ("y", "M"):
        months = dt.month - 1 + n * (12 if unit == "y" else 1)
        year, month = dt.year + months // 12, months % 12 + 1
        day = min(dt.day, calendar.monthrange(year, month)[1])
        return dt.replace(year=year, month=month, day=day)
    return dt + datetime.timedelta(milliseconds=n * _UNIT_MS[unit])


def floor_date(dt: datetime.datetime, unit: str) -> datetime.datetime:
    """Start of the calendar unit (weeks start on Monday, as in Elasticsearch)."""
    if unit == "y":
        return dt.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "M":
        return dt.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "w":
        day = dt.replace(hour=0, minute=0, second=0, microsecond=0)
        return day - datetime.timedelta(days=day.weekday())
    if unit == "d":
        return dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit in ("h", "H"):
        return dt.replace(minute=0, second=0, microsecond=0)
    if unit == "m":
        return dt.replace(second=0, microsecond=0)
    return dt.replace(microsecond=0)


def date_bound(field: Field, raw: Any, now_ms: int, round_up: bool) -> int:
    """A range bound in the field's resolution (millis, or nanos for date_nanos)."""
    if field.nanos and isinstance(raw, str) and "||" not in raw and not raw.startswith("now"):
        nanos = parse_nanos(raw)
        if nanos is not None:
            return nanos
    millis = date_math(raw, now_ms, round_up)
    if millis is None:
        raise ESError(400, {
            "type": "parse_exception",
            "reason": f"failed to parse date field [{raw}] with format "
            "[strict_date_optional_time||epoch_millis]"})
    if field.nanos:
        return millis * NANOS_PER_MILLI + (NANOS_PER_MILLI - 1 if round_up else 0)
    return millis


# ============================================================================ compiler
def _field_and_value(body: Any, qname: str, value_key: str) -> tuple[str, Any, dict[str, Any]]:
    if not isinstance(body, dict):
        raise parsing_error(f"[{qname}] query malformed, no start_object after query name")
    items = [(k, v) for k, v in body.items() if k not in ("boost", "_name")]
    if len(items) != 1:
        raise parsing_error(
            f"[{qname}] query doesn't support multiple fields, found [{items[0][0]}] and "
            f"[{items[1][0]}]" if len(items) > 1 else f"[{qname}] query malformed, no field"
        )
    field, spec = items[0]
    if isinstance(spec, dict):
        if value_key not in spec:
            raise parsing_error(f"[{qname}] query does not support [{next(iter(spec), '')}]")
        return field, spec[value_key], spec
    return field, spec, {}


def match_all(_slot: int) -> bool:
    return True


def match_none(_slot: int) -> bool:
    return False


def _test_column(col: list[Any], test: Callable[[Any], bool]) -> Predicate:
    def pred(slot: int) -> bool:
        v = col[slot]
        if v is None:
            return False
        if type(v) is tuple:
            return any(test(x) for x in v)
        return test(v)

    return pred


class QueryCompiler:
    """Compiles a query body against one index."""

    def __init__(self, index: Index, now_ms: int | None = None) -> None:
        self.index = index
        self.mapping = index.mapping
        self.now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        self._fields: dict[str, Field] = {}

    def field(self, path: str) -> Field:
        f = self._fields.get(path)
        if f is None:
            f = self._fields[path] = Field(path, self.mapping)
        return f

    def column(self, field: Field) -> list[Any]:
        return self.index.columns.column(field)

    def compile(self, query: Any) -> Predicate:
        if query is None:
            return match_all
        if not isinstance(query, dict) or len(query) != 1:
            raise parsing_error("request does not support multiple queries" if isinstance(
                query, dict) and query else "query malformed, empty clause found")
        qname, body = next(iter(query.items()))
        method = getattr(self, "_q_" + qname, None)
        if method is None:
            raise parsing_error(f"unknown query [{qname}]")
        pred: Predicate = method(body)
        return pred

    # ----------------------------------------------------------------- leaf queries
    def _q_match_all(self, body: Any) -> Predicate:
        return match_all

    def _q_match_none(self, body: Any) -> Predicate:
        return match_none

    def _q_ids(self, body: Any) -> Predicate:
        ids = {str(v) for v in (body or {}).get("values", [])}
        slots = self.index.slots
        return lambda slot: slots[slot].id in ids

    def _q_exists(self, body: Any) -> Predicate:
        path = (body or {}).get("field")
        if not path:
            raise parsing_error("[exists] must be provided with a [field]")
        f = self.field(path)
        if f.kind == "unmapped":
            return match_none
        if f.kind == "object":
            prefix = path + "."
            leaves = [self.field(p) for p, _ in self.mapping.leaf_fields()
                      if p.startswith(prefix)]
            cols = self.index.columns.get(leaves)
            return lambda slot: any(c[slot] is not None for c in cols)
        col = self.column(f)
        return lambda slot: col[slot] is not None

    def _q_term(self, body: Any) -> Predicate:
        path, value, spec = _field_and_value(body, "term", "value")
        return self._terms_pred(path, [value], bool(spec.get("case_insensitive")))

    def _q_terms(self, body: Any) -> Predicate:
        items = [(k, v) for k, v in (body or {}).items() if k not in ("boost", "_name")]
        if len(items) != 1 or not isinstance(items[0][1], list):
            raise parsing_error("[terms] query requires a field with an array of values")
        return self._terms_pred(items[0][0], items[0][1], False)

    def _terms_pred(self, path: str, values: list[Any], ci: bool) -> Predicate:
        f = self.field(path)
        if f.kind in ("unmapped", "object"):
            return match_none
        if f.kind == "text":
            wanted = {str(v) for v in values}
        elif f.kind == "date":
            wanted = {date_bound(f, v, self.now_ms, False) for v in values}
        elif f.kind == "long":
            wanted = set()
            for v in values:
                n = f.norm(v)
                if n is None:
                    raise _bad_number(v)
                if isinstance(v, float) and v != int(v):
                    continue
                wanted.add(n)
        else:
            wanted = {f.norm(v) for v in values}
        wanted.discard(None)
        col = self.column(f)
        if ci:
            lowered = {str(w).lower() for w in wanted}
            return _test_column(col, lambda t: str(t).lower() in lowered)
        if len(wanted) == 1:
            (one,) = wanted

            def single(slot: int) -> bool:
                v = col[slot]
                if type(v) is tuple:
                    return one in v
                return v == one and v is not None

            return single
        return _test_column(col, wanted.__contains__)

    def _q_prefix(self, body: Any) -> Predicate:
        path, value, spec = _field_and_value(body, "prefix", "value")
        col = self.column(self.field(path))
        pfx = str(value)
        if spec.get("case_insensitive"):
            pfx = pfx.lower()
            return _test_column(col, lambda t: str(t).lower().startswith(pfx))
        return _test_column(col, lambda t: str(t).startswith(pfx))

    def _q_wildcard(self, body: Any) -> Predicate:
        path, value, spec = _field_and_value(body, "wildcard", "value")
        if value is None and isinstance(body.get(path), dict):
            value = body[path].get("wildcard")
        col = self.column(self.field(path))
        pat = str(value)
        if spec.get("case_insensitive"):
            pat = pat.lower()
            return _test_column(col, lambda t: fnmatch.fnmatchcase(str(t).lower(), pat))
        return _test_column(col, lambda t: fnmatch.fnmatchcase(str(t), pat))

    def _q_range(self, body: Any) -> Predicate:
        items = [(k, v) for k, v in (body or {}).items() if k not in ("boost", "_name")]
        if len(items) != 1 or not isinstance(items[0][1], dict):
            raise parsing_error("[range] query malformed, no start_object after query name")
        path, spec = items[0]
        f = self.field(path)
        if f.kind in ("unmapped", "object"):
            return match_none
        lo: Any = None
        hi: Any = None
        lo_inc = hi_inc = True
        for op in ("gt", "gte", "lt", "lte", "from", "to"):
            raw = spec.get(op)
            if raw is None:
                continue
            if op == "from":
                op = "gte" if spec.get("include_lower", True) else "gt"
            elif op == "to":
                op = "lte" if spec.get("include_upper", True) else "lt"
            bound = self._bound(f, raw, op in ("gt", "lte"))
            if op in ("gt", "gte"):
                lo, lo_inc = bound, op == "gte"
            else:
                hi, hi_inc = bound, op == "lte"

        def check(t: Any) -> bool:
            try:
                if lo is not None and (t < lo or (t == lo and not lo_inc)):
                    return False
                return not (hi is not None and (t > hi or (t == hi and not hi_inc)))
            except TypeError:
                return False

        return _test_column(self.column(f), check)

    def _bound(self, f: Field, raw: Any, round_up: bool) -> Any:
        if f.kind == "date":
            return date_bound(f, raw, self.now_ms, round_up)
        if f.kind in ("long", "double"):
            try:
                return float(raw)
            except (TypeError, ValueError):
                raise _bad_number(raw) from None
        if f.kind == "text":
            return str(raw).lower()
        return f.norm(raw)

    def _q_match(self, body: Any) -> Predicate:
        path, value, spec = _field_and_value(body, "match", "query")
        f = self.field(path)
        if f.kind in ("unmapped", "object"):
            return match_none
        if f.kind != "text":
            if f.kind == "long" and f.norm(value) is None:
                raise _bad_number(value)
            return self._terms_pred(path, [value], False)
        tokens = set(analyze(value))
        if not tokens:
            return match_none
        col = self.column(f)
        if str(spec.get("operator", "or")).lower() == "and":
            return lambda slot: tokens.issubset(each(col[slot]))
        msm = spec.get("minimum_should_match")
        need = _msm(msm, len(tokens)) if msm is not None else 1
        return lambda slot: len(tokens.intersection(each(col[slot]))) >= need

    def _q_match_phrase(self, body: Any) -> Predicate:
        path, value, _spec = _field_and_value(body, "match_phrase", "query")
        f = self.field(path)
        if f.kind != "text":
            return self._q_match({path: value})
        want = analyze(value)
        n = len(want)
        slots = self.index.slots
        col = self.column(f)

        def pred(slot: int) -> bool:
            if not set(want).issubset(each(col[slot])):
                return False
            for v in get_values(slots[slot].source, f.source_path):
                toks = analyze(v)
                for i in range(len(toks) - n + 1):
                    if toks[i : i + n] == want:
                        return True
            return False

        return pred

    def _q_query_string(self, body: Any) -> Predicate:
        """One term (``*``/``?`` wildcards, ``\\`` escapes) on the listed ``fields``: what
        Kibana sends for a KQL wildcard value. Whole query-string expressions (operators,
        several terms, ranges) are refused with a 400 rather than answered wrongly."""
        body = body or {}
        fields = body.get("fields") or ([body["default_field"]] if body.get("default_field")
                                        else None)
        if not isinstance(fields, list) or not fields:
            raise parsing_error("[query_string] this test server needs [fields] (a list)")
        pattern = query_string_term(str(body.get("query", "")))
        preds = [self._query_string_field(path, pattern) for path in fields]
        return lambda slot: any(p(slot) for p in preds)

    def _query_string_field(self, path: str, pattern: re.Pattern[str]) -> Predicate:
        f = self.field(path)
        if f.kind in ("unmapped", "object"):
            return match_none
        col = self.column(f)
        if f.kind == "keyword":
            return _test_column(col, lambda t: pattern.fullmatch(str(t)) is not None)
        if f.kind == "text":  # the pattern meets the lowercased tokens
            lowered = re.compile(pattern.pattern.lower(), re.S)
            return _test_column(col, lambda t: lowered.fullmatch(str(t)) is not None)
        raise shard_failure(
            f"Can only use wildcard queries on keyword and text fields - not on [{path}] "
            f"which is of type [{f.type}]",
            "query_shard_exception")

    def _q_constant_score(self, body: Any) -> Predicate:
        return self.compile((body or {}).get("filter"))

    # ----------------------------------------------------------------- bool
    def _q_bool(self, body: Any) -> Predicate:
        body = body or {}

        def clauses(key: str) -> list[Predicate]:
            v = body.get(key)
            if v is None:
                return []
            if isinstance(v, dict):
                v = [v]
            return [self.compile(c) for c in v]

        must = [p for p in clauses("must") + clauses("filter") if p is not match_all]
        should = clauses("should")
        must_not = clauses("must_not")
        msm = body.get("minimum_should_match")
        need = (0 if must or body.get("filter") or body.get("must") else 1 if should else 0) \
            if msm is None else _msm(msm, len(should))
        if not must_not and not need:
            if not must:
                return match_all
            if len(must) == 1:
                return must[0]

        def pred(slot: int) -> bool:
            for p in must:
                if not p(slot):
                    return False
            for p in must_not:
                if p(slot):
                    return False
            if need:
                hit = 0
                for p in should:
                    if p(slot):
                        hit += 1
                        if hit >= need:
                            return True
                return False
            return True

        return pred


def query_string_term(query: str) -> re.Pattern[str]:
    """The regular expression of a single query_string term: ``*`` and ``?`` are wildcards,
    a backslash escapes the next character; an unescaped operator, space or other reserved
    character means a query this test server does not evaluate (400)."""
    out, i = [], 0
    while i < len(query):
        ch = query[i]
        if ch == "\\" and i + 1 < len(query):
            out.append(re.escape(query[i + 1]))
            i += 2
            continue
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch in _QUERY_STRING_RESERVED:
            raise parsing_error(f"[query_string] this test server evaluates one term with * "
                                f"and ? wildcards; unescaped {ch!r} in {query!r}")
        else:
            out.append(re.escape(ch))
        i += 1
    if not out:
        raise parsing_error("[query_string] an empty query")
    return re.compile("".join(out), re.S)


def _msm(spec: Any, n: int) -> int:
    s = str(spec).strip()
    if s.endswith("%"):
        pct = int(s[:-1])
        v = int(n * abs(pct) / 100)
        return v if pct >= 0 else n - v
    v = int(s)
    return v if v >= 0 else max(n + v, 0)


def _bad_number(value: Any) -> ESError:
    return shard_failure(f'For input string: "{value}"', "number_format_exception",
                         root=("query_shard_exception",
                               f'failed to create query: For input string: "{value}"'))


def shard_failure(reason: str, type_: str = "illegal_argument_exception",
                  root: tuple[str, str] | None = None, status: int = 400) -> ESError:
    """A search that failed on its (only) shard; root: the root cause when it differs."""
    root_type, root_reason = root or (type_, reason)
    return ESError(
        status,
        {
            "type": "search_phase_execution_exception",
            "reason": "all shards failed",
            "phase": "query",
            "grouped": True,
            "failed_shards": [],
            "caused_by": {"type": type_, "reason": reason},
        },
        root_cause=[{"type": root_type, "reason": root_reason}],
    )


# ============================================================================ _source
def source_filter(spec: Any) -> tuple[bool, list[str] | None, list[str]]:
    """(enabled, includes, excludes) from a ``_source`` search option."""
    if spec is None or spec is True:
        return True, None, []
    if spec is False:
        return False, None, []
    if isinstance(spec, str):
        return True, [spec], []
    if isinstance(spec, list):
        return True, [str(s) for s in spec] or None, []
    if isinstance(spec, dict):
        inc = spec.get("includes", spec.get("include"))
        exc = spec.get("excludes", spec.get("exclude")) or []
        if isinstance(inc, str):
            inc = [inc]
        if isinstance(exc, str):
            exc = [exc]
        return True, (list(inc) or None) if inc is not None else None, list(exc)
    return True, None, []


def filter_source(obj: dict[str, Any], includes: list[str] | None, excludes: list[str],
                  prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        p = prefix + k
        if excludes and any(fnmatch.fnmatchcase(p, e) for e in excludes):
            continue
        if includes is None or any(fnmatch.fnmatchcase(p, i) for i in includes):
            if isinstance(v, dict) and excludes:
                out[k] = filter_source(v, None, excludes, p + ".")
            else:
                out[k] = v
        elif isinstance(v, dict):
            sub = filter_source(v, includes, excludes, p + ".")
            if sub:
                out[k] = sub
        elif isinstance(v, list) and any(isinstance(x, dict) for x in v):
            subs = [filter_source(x, includes, excludes, p + ".") for x in v
                    if isinstance(x, dict)]
            subs = [s for s in subs if s]
            if subs:
                out[k] = subs
    return out


