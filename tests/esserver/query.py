"""Query DSL evaluation, sorting, ``search_after`` and ``_source`` filtering.

Queries are compiled per index (field types come from that index's mapping) into plain
Python predicates ``(doc_id, source) -> bool``.  Scoring is not implemented: every hit has
``_score`` 1.0 (``null`` when sorting, like Elasticsearch).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import time
from collections.abc import Callable
from functools import cmp_to_key
from typing import Any

from .errors import ESError
from .mapping import FieldMapper, Mapping, ObjectMapper, parse_iso_millis, to_millis

Predicate = Callable[[str, dict[str, Any]], bool]

LONG_MAX = 9223372036854775807
LONG_MIN = -9223372036854775808
_TOKEN_RE = re.compile(r"\w+", re.UNICODE)
_DATE_MATH_RE = re.compile(r"now(?:([+-])(\d+)([yMwdhHms]))?(?:/([yMwdhHms]))?")
_UNIT_MS = {"s": 1000, "m": 60000, "h": 3600000, "H": 3600000, "d": 86400000,
            "w": 604800000, "M": 2592000000, "y": 31536000000}


def parsing_error(reason: str) -> ESError:
    return ESError(400, {"type": "parsing_exception", "reason": reason, "line": 1, "col": 1})


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


def date_math(value: Any, now_ms: int | None = None) -> int | None:
    if isinstance(value, str):
        m = _DATE_MATH_RE.fullmatch(value)
        if m:
            now = now_ms if now_ms is not None else int(time.time() * 1000)
            if m.group(1):
                delta = int(m.group(2)) * _UNIT_MS[m.group(3)]
                now = now + delta if m.group(1) == "+" else now - delta
            if m.group(4):
                unit = _UNIT_MS[m.group(4)]
                now -= now % unit
            return now
        if "||" in value:
            value = value.split("||", 1)[0]
    return to_millis(value)


class Field:
    """A resolved field: where its value lives in _source and how it is indexed."""

    __slots__ = ("ignore_above", "kind", "path", "source_path", "type")

    def __init__(self, path: str, mapping: Mapping) -> None:
        self.path = path
        mapper = mapping.resolve(path)
        self.source_path = path
        self.ignore_above: int | None = None
        if isinstance(mapper, FieldMapper):
            self.kind = mapper.kind
            self.type = mapper.type
            self.ignore_above = mapper.ignore_above
            self.source_path = mapping.source_path(path)
        elif isinstance(mapper, ObjectMapper):
            self.kind = "object"
            self.type = mapper.type
        else:
            self.kind = "unmapped"
            self.type = ""

    def terms(self, source: dict[str, Any]) -> list[Any]:
        """Indexed terms of this field for one document."""
        values = get_values(source, self.source_path)
        if not values:
            return values
        return [t for t in (self.norm(v) for v in values) if t is not None] if self.kind != \
            "text" else [tok for v in values for tok in analyze(v)]

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
                return date_math(v)
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

    def sort_value(self, v: Any) -> Any:
        if self.kind == "boolean":
            return 1 if v else 0
        if self.kind == "ip":
            return str(v)
        return v


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


class QueryCompiler:
    """Compiles a query body against one index mapping."""

    def __init__(self, mapping: Mapping, now_ms: int | None = None) -> None:
        self.mapping = mapping
        self.now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        self._fields: dict[str, Field] = {}

    def field(self, path: str) -> Field:
        f = self._fields.get(path)
        if f is None:
            f = self._fields[path] = Field(path, self.mapping)
        return f

    def compile(self, query: Any) -> Predicate:
        if query is None:
            return _match_all
        if not isinstance(query, dict) or len(query) != 1:
            raise parsing_error("request does not support multiple queries" if isinstance(
                query, dict) and query else "query malformed, empty clause found")
        qname, body = next(iter(query.items()))
        method = getattr(self, "_q_" + qname, None)
        if method is None:
            raise ESError(400, {"type": "parsing_exception", "reason": f"unknown query [{qname}]",
                                "line": 1, "col": 1},
                          root_cause=[{"type": "parsing_exception",
                                       "reason": f"unknown query [{qname}]", "line": 1,
                                       "col": 1}])
        pred: Predicate = method(body)
        return pred

    # ----------------------------------------------------------------- leaf queries
    def _q_match_all(self, body: Any) -> Predicate:
        return _match_all

    def _q_match_none(self, body: Any) -> Predicate:
        return lambda _id, _src: False

    def _q_ids(self, body: Any) -> Predicate:
        ids = {str(v) for v in (body or {}).get("values", [])}
        return lambda doc_id, _src: doc_id in ids

    def _q_exists(self, body: Any) -> Predicate:
        path = (body or {}).get("field")
        if not path:
            raise parsing_error("[exists] must be provided with a [field]")
        f = self.field(path)
        if f.kind == "unmapped":
            return lambda _id, _src: False
        if f.kind == "object":
            prefix = path + "."
            leaves = [p for p, _ in self.mapping.leaf_fields() if p.startswith(prefix)]
            subs = [self.field(p) for p in leaves]
            return lambda _id, src: any(s.terms(src) for s in subs)
        return lambda _id, src: bool(f.terms(src))

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
            return lambda _id, _src: False
        if f.kind == "text":
            wanted = {str(v) for v in values}
        elif f.kind == "date":
            wanted = {date_math(v, self.now_ms) for v in values}
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
        if ci:
            wanted = {str(w).lower() for w in wanted}
            return lambda _id, src: any(str(t).lower() in wanted for t in f.terms(src))
        return lambda _id, src: any(t in wanted for t in f.terms(src))

    def _q_prefix(self, body: Any) -> Predicate:
        path, value, spec = _field_and_value(body, "prefix", "value")
        f = self.field(path)
        pfx = str(value)
        if spec.get("case_insensitive"):
            pfx = pfx.lower()
            return lambda _id, src: any(str(t).lower().startswith(pfx) for t in f.terms(src))
        return lambda _id, src: any(str(t).startswith(pfx) for t in f.terms(src))

    def _q_wildcard(self, body: Any) -> Predicate:
        path, value, spec = _field_and_value(body, "wildcard", "value")
        if value is None and isinstance(body.get(path), dict):
            value = body[path].get("wildcard")
        f = self.field(path)
        pat = str(value)
        if spec.get("case_insensitive"):
            pat = pat.lower()
            return lambda _id, src: any(fnmatch.fnmatchcase(str(t).lower(), pat)
                                        for t in f.terms(src))
        return lambda _id, src: any(fnmatch.fnmatchcase(str(t), pat) for t in f.terms(src))

    def _q_range(self, body: Any) -> Predicate:
        items = [(k, v) for k, v in (body or {}).items() if k not in ("boost", "_name")]
        if len(items) != 1 or not isinstance(items[0][1], dict):
            raise parsing_error("[range] query malformed, no start_object after query name")
        path, spec = items[0]
        f = self.field(path)
        if f.kind in ("unmapped", "object"):
            return lambda _id, _src: False
        bounds: list[tuple[str, Any]] = []
        for op in ("gt", "gte", "lt", "lte", "from", "to"):
            if op in spec and spec[op] is not None:
                raw = spec[op]
                if f.kind == "date":
                    b = date_math(raw, self.now_ms)
                    if b is None:
                        raise ESError(400, {
                            "type": "parse_exception",
                            "reason": f"failed to parse date field [{raw}] with format "
                            "[strict_date_optional_time||epoch_millis]"})
                elif f.kind in ("long", "double"):
                    try:
                        b = float(raw)
                    except (TypeError, ValueError):
                        raise _bad_number(raw) from None
                elif f.kind == "text":
                    b = str(raw).lower()
                else:
                    b = f.norm(raw)
                if op == "from":
                    op = "gte" if spec.get("include_lower", True) else "gt"
                elif op == "to":
                    op = "lte" if spec.get("include_upper", True) else "lt"
                bounds.append((op, b))

        def check(t: Any) -> bool:
            try:
                for op, b in bounds:
                    if op == "gt" and not t > b:
                        return False
                    if op == "gte" and not t >= b:
                        return False
                    if op == "lt" and not t < b:
                        return False
                    if op == "lte" and not t <= b:
                        return False
            except TypeError:
                return False
            return True

        return lambda _id, src: any(check(t) for t in f.terms(src))

    def _q_match(self, body: Any) -> Predicate:
        path, value, spec = _field_and_value(body, "match", "query")
        f = self.field(path)
        if f.kind in ("unmapped", "object"):
            return lambda _id, _src: False
        if f.kind != "text":
            if f.kind == "keyword":
                return self._terms_pred(path, [value], False)
            if f.kind == "long" and f.norm(value) is None:
                raise _bad_number(value)
            return self._terms_pred(path, [value], False)
        tokens = set(analyze(value))
        if not tokens:
            return lambda _id, _src: False
        if str(spec.get("operator", "or")).lower() == "and":
            return lambda _id, src: tokens.issubset(f.terms(src))
        msm = spec.get("minimum_should_match")
        need = _msm(msm, len(tokens)) if msm is not None else 1
        return lambda _id, src: len(tokens.intersection(f.terms(src))) >= need

    def _q_match_phrase(self, body: Any) -> Predicate:
        path, value, _spec = _field_and_value(body, "match_phrase", "query")
        f = self.field(path)
        if f.kind != "text":
            return self._q_match({"match": {path: value}}["match"])
        want = analyze(value)
        n = len(want)

        def pred(_id: str, src: dict[str, Any]) -> bool:
            for v in get_values(src, f.source_path):
                toks = analyze(v)
                for i in range(len(toks) - n + 1):
                    if toks[i : i + n] == want:
                        return True
            return False

        return pred

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

        must = clauses("must") + clauses("filter")
        should = clauses("should")
        must_not = clauses("must_not")
        msm = body.get("minimum_should_match")
        need = (0 if must else 1 if should else 0) if msm is None else _msm(msm, len(should))

        def pred(doc_id: str, src: dict[str, Any]) -> bool:
            for p in must:
                if not p(doc_id, src):
                    return False
            for p in must_not:
                if p(doc_id, src):
                    return False
            if need:
                hit = 0
                for p in should:
                    if p(doc_id, src):
                        hit += 1
                        if hit >= need:
                            return True
                return False
            return True

        return pred


def _match_all(_id: str, _src: dict[str, Any]) -> bool:
    return True


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
                  root: tuple[str, str] | None = None) -> ESError:
    """A search that failed on its (only) shard; root: the root cause when it differs."""
    root_type, root_reason = root or (type_, reason)
    return ESError(
        400,
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


# --------------------------------------------------------------------------- sorting
class SortKey:
    __slots__ = ("desc", "field", "kind", "missing_first", "mode", "name")

    def __init__(self, name: str, desc: bool, missing_first: bool, mode: str | None) -> None:
        self.name = name
        self.desc = desc
        self.missing_first = missing_first
        self.mode = mode
        self.field: Field | None = None
        self.kind = ""


def parse_sort(sort: Any) -> list[SortKey]:
    if sort is None:
        return []
    if not isinstance(sort, list):
        sort = [sort]
    keys: list[SortKey] = []
    for item in sort:
        if isinstance(item, str):
            name, _, order = item.partition(":")
            keys.append(SortKey(name, order == "desc" or (not order and name == "_score"),
                                False, None))
            continue
        if not isinstance(item, dict) or len(item) != 1:
            raise parsing_error("malformed sort")
        name, spec = next(iter(item.items()))
        if isinstance(spec, str):
            spec = {"order": spec}
        order = str(spec.get("order", "desc" if name == "_score" else "asc")).lower()
        missing = spec.get("missing", "_last")
        keys.append(SortKey(name, order == "desc", missing == "_first", spec.get("mode")))
        keys[-1].kind = "unmapped_type:" + spec["unmapped_type"] if "unmapped_type" in spec \
            else ""
    return keys


def sort_values(keys: list[SortKey], fields: list[Field | None], doc_id: str,
                src: dict[str, Any], order: int) -> list[Any]:
    out: list[Any] = []
    for key, f in zip(keys, fields, strict=True):
        if key.name in ("_doc", "_shard_doc"):
            out.append(order)
            continue
        if key.name == "_score":
            out.append(1.0)
            continue
        if f is None:
            out.append(_missing(key, "keyword"))
            continue
        terms = f.terms(src)
        if not terms:
            out.append(_missing(key, f.kind))
            continue
        mode = key.mode or ("max" if key.desc else "min")
        if mode == "max":
            v = max(terms)
        elif mode in ("sum", "avg") and f.kind in ("long", "double"):
            v = sum(terms) / (len(terms) if mode == "avg" else 1)
        else:
            v = min(terms)
        out.append(f.sort_value(v))
    return out


def _missing(key: SortKey, kind: str) -> Any:
    if kind in ("long", "date", "double", "boolean"):
        big = (LONG_MAX if kind != "double" else float("inf"))
        small = (LONG_MIN if kind != "double" else float("-inf"))
        if key.desc:
            return big if key.missing_first else small
        return small if key.missing_first else big
    return None


def compare_sort(keys: list[SortKey], a: list[Any], b: list[Any]) -> int:
    for key, x, y in zip(keys, a, b, strict=False):
        if x == y:
            continue
        if x is None:
            return -1 if key.missing_first else 1
        if y is None:
            return 1 if key.missing_first else -1
        try:
            c = -1 if x < y else 1
        except TypeError:
            c = -1 if str(x) < str(y) else 1
        return -c if key.desc else c
    return 0


def sort_hits(keys: list[SortKey], hits: list[tuple[list[Any], Any]]) -> None:
    hits.sort(key=cmp_to_key(lambda a, b: compare_sort(keys, a[0], b[0])))


def normalize_after(keys: list[SortKey], fields: list[Field | None], after: list[Any]) -> list[Any]:
    if len(after) != len(keys):
        raise ESError(400, {
            "type": "illegal_argument_exception",
            "reason": f"search_after has {len(after)} value(s) but sort has {len(keys)}.",
        })
    out: list[Any] = []
    for key, f, v in zip(keys, fields, after, strict=True):
        if f is not None and f.kind == "date" and isinstance(v, str):
            m = parse_iso_millis(v)
            out.append(m if m is not None else int(v))
        elif (f is not None and f.kind in ("long", "date") and isinstance(v, str)) or (
            key.name in ("_doc", "_shard_doc") and v is not None
        ):
            out.append(int(v))
        else:
            out.append(v)
    return out


# --------------------------------------------------------------------------- _source
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


# --------------------------------------------------------------------------- aggregations
def run_aggs(aggs: dict[str, Any], docs: list[tuple[QueryCompiler, str, dict[str, Any]]]
             ) -> dict[str, Any]:
    """A small subset: terms, min, max, sum, avg, value_count, cardinality."""
    out: dict[str, Any] = {}
    for name, spec in aggs.items():
        kind = next((k for k in spec if k not in ("aggs", "aggregations", "meta")), None)
        if kind is None:
            raise parsing_error(f"Missing definition for aggregation [{name}]")
        body = spec[kind]
        path = body.get("field")
        values: list[tuple[Any, tuple[QueryCompiler, str, dict[str, Any]]]] = []
        for entry in docs:
            comp, _doc_id, src = entry
            f = comp.field(path)
            if f.kind == "text":
                raise shard_failure(
                    "Text fields are not optimised for operations that require per-document "
                    "field data like aggregations and sorting, so these operations are disabled "
                    "by default. Please use a keyword field instead. Alternatively, set "
                    f"fielddata=true on [{path}] in order to load field data by uninverting the "
                    "inverted index. Note that this can use significant memory.")
            for t in f.terms(src):
                values.append((f.sort_value(t), entry))
        nums = [v for v, _ in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if kind == "value_count":
            out[name] = {"value": len(values)}
        elif kind == "cardinality":
            out[name] = {"value": len({v for v, _ in values})}
        elif kind in ("min", "max"):
            out[name] = {"value": float((min if kind == "min" else max)(nums)) if nums else None}
        elif kind == "sum":
            out[name] = {"value": float(sum(nums))}
        elif kind == "avg":
            out[name] = {"value": float(sum(nums)) / len(nums) if nums else None}
        elif kind == "terms":
            counts: dict[Any, list[tuple[QueryCompiler, str, dict[str, Any]]]] = {}
            for v, entry in values:
                bucket = counts.setdefault(v, [])
                if not bucket or bucket[-1] is not entry:
                    bucket.append(entry)
            ordered = sorted(counts.items(), key=lambda kv: (-len(kv[1]), str(kv[0])))
            size = int(body.get("size", 10))
            buckets = []
            for key, entries in ordered[:size]:
                b: dict[str, Any] = {"key": key, "doc_count": len(entries)}
                sub = spec.get("aggs") or spec.get("aggregations")
                if sub:
                    b.update(run_aggs(sub, entries))
                buckets.append(b)
            out[name] = {
                "doc_count_error_upper_bound": 0,
                "sum_other_doc_count": sum(len(e) for _, e in ordered[size:]),
                "buckets": buckets,
            }
        else:
            raise parsing_error(f"Unknown aggregation type [{kind}] (not supported by the "
                                "test server)")
    return out
