"""``_search`` and ``_count``: over what the indices' last refresh made searchable, or over a
point in time.

Hits are *refs* ``shard << 32 | slot``; shards are the target indices in name order (the
``_shard_doc`` of a hit is its ref).  A sorted search sorts all matching refs by a key built
from doc values: numbers as they are (negated when descending), strings by their rank among
the matching values, missing values first or last, the ref as the final tie-break.  The
sorted order of one searcher, query and sort is cached, so paging with ``search_after``
costs a bisection per page instead of a sort.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from .aggs import MASK, AggContext, run_aggs
from .docvalues import Field, parse_nanos
from .errors import ESError, illegal_argument
from .mapping import kind_of
from .pit import keep_alive_seconds
from .query import (
    QueryCompiler,
    date_math,
    filter_source,
    match_all,
    parsing_error,
    shard_failure,
    source_filter,
)
from .store import bisect_right_by

if TYPE_CHECKING:
    from .cluster import Cluster
    from .store import Index

LONG_MAX = 9223372036854775807
LONG_MIN = -9223372036854775808
INF = float("inf")
_TEXT_SORT = (
    "Text fields are not optimised for operations that require per-document field data like "
    "aggregations and sorting, so these operations are disabled by default. Please use a "
    "keyword field instead. Alternatively, set fielddata=true on [{}] in order to load field "
    "data by uninverting the inverted index. Note that this can use significant memory.")
_SPECIAL = ("_doc", "_shard_doc", "_score")
_LEAF_QUERIES = frozenset({"term", "terms", "range", "match", "match_phrase", "prefix",
                           "wildcard"})


def query_fields(query: Any) -> set[str]:
    """Fields a query reads (so their doc values are built in one pass)."""
    return _fields_in(query, _query_field_names, set())


def agg_fields(aggs: Any) -> set[str]:
    return _fields_in(aggs, _agg_field_names, set())


def _query_field_names(key: str, value: Any) -> list[str] | None:
    if key in _LEAF_QUERIES and isinstance(value, dict):
        return [f for f in value if f not in ("boost", "_name")]
    if key == "exists" and isinstance(value, dict) and isinstance(value.get("field"), str):
        return [value["field"]]
    return None


def _agg_field_names(key: str, value: Any) -> list[str] | None:
    return [value] if key == "field" and isinstance(value, str) else None


def _fields_in(node: Any, names: Any, out: set[str]) -> set[str]:
    """Walk a request body; ``names(key, value)`` gives the fields a node names (None:
    look inside it)."""
    if isinstance(node, dict):
        for key, value in node.items():
            found = names(key, value)
            if found is None:
                _fields_in(value, names, out)
            else:
                out.update(found)
    elif isinstance(node, list):
        for item in node:
            _fields_in(item, names, out)
    return out


def shards_header(n: int) -> dict[str, int]:
    return {"total": n, "successful": n, "skipped": 0, "failed": 0}


# ============================================================================ sort
class SortKey:
    __slots__ = ("desc", "missing", "mode", "name", "unmapped_type")

    def __init__(self, name: str, desc: bool, missing: Any = "_last", mode: str | None = None,
                 unmapped_type: str | None = None) -> None:
        self.name = name
        self.desc = desc
        self.missing = missing
        self.mode = mode
        self.unmapped_type = unmapped_type

    def describe(self) -> list[Any]:
        return [self.name, self.desc, self.missing, self.mode]


def parse_sort(sort: Any) -> list[SortKey]:
    if sort is None:
        return []
    if not isinstance(sort, list):
        sort = [sort]
    keys: list[SortKey] = []
    for item in sort:
        if isinstance(item, str):
            name, _, order = item.partition(":")
            keys.append(SortKey(name, order == "desc" or (not order and name == "_score")))
            continue
        if not isinstance(item, dict) or len(item) != 1:
            raise parsing_error("malformed sort")
        name, spec = next(iter(item.items()))
        if isinstance(spec, str):
            spec = {"order": spec}
        order = str(spec.get("order", "desc" if name == "_score" else "asc")).lower()
        keys.append(SortKey(name, order == "desc", spec.get("missing", "_last"),
                            spec.get("mode"), spec.get("unmapped_type")))
    return keys


class _SortField:
    """How one sort key turns a ref into a hit's sort value and into a sort component."""

    def __init__(self, key: SortKey, fields: list[Field | None], cols: list[Any]) -> None:
        self.key = key
        self.fields = fields
        self.cols = cols
        main = next((f for f in fields if f is not None and f.kind not in
                     ("unmapped", "object")), None)
        if main is not None:
            self.kind = main.kind
        else:
            self.kind = kind_of(key.unmapped_type) if key.unmapped_type else "keyword"
        self.numeric = self.kind in ("long", "double", "date", "boolean")
        self.main = main
        self.ranks: dict[Any, int] = {}
        self.keyed: list[str] = []  # the sorted values as strings, for bisection

    def raw(self, ref: int) -> Any:
        """The field's value for a ref (mode applied), None when missing."""
        entry = self.cols[ref >> 32][ref & MASK]
        if entry is None:
            return None
        if type(entry) is not tuple:
            return entry
        mode = self.key.mode or ("max" if self.key.desc else "min")
        if mode == "max":
            return max(entry)
        if mode in ("sum", "avg") and self.numeric:
            total = sum(entry)
            return total / len(entry) if mode == "avg" else total
        return min(entry)

    def prepare(self, refs: Sequence[int]) -> None:
        if self.numeric:
            return
        values = {self.raw(r) for r in refs}
        values.discard(None)
        ordered = sorted(values, key=str)
        self.ranks = {v: i for i, v in enumerate(ordered)}
        self.keyed = [str(v) for v in ordered]

    def component(self, value: Any) -> float:
        if value is None:
            missing = self.key.missing
            if missing == "_first":
                return -INF
            if missing == "_last":
                return INF
            value = self.coerce(missing)
        if self.numeric:
            number = float(value)
        else:
            rank = self.ranks.get(value)
            number = rank if rank is not None else bisect_right(self.keyed, str(value)) - 0.5
        return -number if self.key.desc else number

    def hit_value(self, value: Any) -> Any:
        if value is None:
            if not self.numeric:
                return None
            first = self.key.missing == "_first"
            if self.kind == "double":
                return (-INF if first else INF) if not self.key.desc else \
                    (INF if first else -INF)
            if self.key.desc:
                return LONG_MAX if first else LONG_MIN
            return LONG_MIN if first else LONG_MAX
        if self.kind == "boolean":
            return 1 if value else 0
        if self.kind == "ip":
            return str(value)
        return value

    def coerce(self, value: Any) -> Any:
        """A ``search_after`` (or ``missing``) value in this key's terms."""
        if value is None:
            return None
        if self.kind == "date" and isinstance(value, str):
            if self.main is not None and self.main.nanos and not value.lstrip("-").isdigit():
                return parse_nanos(value)
            parsed = date_math(value) if not value.lstrip("-").isdigit() else int(value)
            return parsed
        if self.kind in ("long", "date"):
            return int(value)
        if self.kind == "double":
            return float(value)
        if self.kind == "boolean":
            return bool(value) if not isinstance(value, str) else value == "true"
        return value


class _Plan:
    """The sort of one search: its fields, the key of a ref, and the sorted refs."""

    def __init__(self, keys: list[SortKey], compilers: list[QueryCompiler]) -> None:
        self.keys = keys
        self.fields: list[_SortField | None] = []
        for key in keys:
            if key.name in _SPECIAL:
                self.fields.append(None)
                continue
            fields = [c.field(key.name) for c in compilers]
            cols = [c.column(f) if f.kind not in ("unmapped", "object") else _NONE_COL
                    for c, f in zip(compilers, fields)]
            self.fields.append(_SortField(key, list(fields), cols))

    def prepare(self, refs: Sequence[int]) -> None:
        for f in self.fields:
            if f is not None:
                f.prepare(refs)

    def key(self, ref: int) -> tuple[Any, ...]:
        out: list[Any] = []
        for key, f in zip(self.keys, self.fields):
            if f is None:
                out.append(_special(key, ref))
            else:
                out.append(f.component(f.raw(ref)))
        out.append(ref)
        return tuple(out)

    def visible_key(self, ref: int) -> tuple[Any, ...]:
        return self.key(ref)[:-1]

    def hit_values(self, ref: int) -> list[Any]:
        out: list[Any] = []
        for key, f in zip(self.keys, self.fields):
            if f is None:
                out.append(1.0 if key.name == "_score" else
                           ref if key.name == "_shard_doc" else ref & MASK)
            else:
                out.append(f.hit_value(f.raw(ref)))
        return out

    def after_key(self, after: list[Any]) -> tuple[Any, ...]:
        out: list[Any] = []
        for key, f, value in zip(self.keys, self.fields, after):
            if f is None:
                number = float(value) if key.name == "_score" else int(value)
                out.append(-number if key.desc else number)
            else:
                coerced = f.coerce(value)
                if coerced is None and value is not None:
                    raise illegal_argument(f"Failed to parse search_after value for field "
                                           f"[{key.name}].")
                out.append(f.component(coerced))
        return tuple(out)


class _NoneColumn:
    def __getitem__(self, slot: int) -> None:
        return None


_NONE_COL = _NoneColumn()


def _special(key: SortKey, ref: int) -> float:
    if key.name == "_score":
        return 0.0
    value = ref if key.name == "_shard_doc" else ref & MASK
    return -value if key.desc else value


# ============================================================================ search
class _Search:
    """One search request against its shards."""

    def __init__(self, cluster: Cluster, body: dict[str, Any], params: dict[str, str],
                 shards: list[tuple[Index, int]], pit_id: str | None) -> None:
        self.cluster = cluster
        self.body = body
        self.params = params
        self.shards = shards
        self.pit_id = pit_id
        now = int(time.time() * 1000)
        self.compilers = [QueryCompiler(idx, now) for idx, _w in shards]
        self.query = body.get("query")
        if self.query is None and params.get("q"):
            self.query = _q_param(params["q"])
        self.identity = (tuple((idx.uuid, idx.generation, w) for idx, w in shards),
                         orjson.dumps(self.query, option=orjson.OPT_SORT_KEYS))

    def prefetch(self, paths: set[str]) -> None:
        """Build the doc values of every field this search reads, parsing each document once."""
        for comp in self.compilers:
            fields = [comp.field(p) for p in sorted(paths)]
            comp.index.columns.get([f for f in fields if f.kind not in ("unmapped", "object")])

    def matches(self) -> Sequence[int]:
        """Refs of the matching documents, in shard then slot order."""
        cached = self.cluster.result_cache.get(("match", self.identity))
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        refs: list[int] | Sequence[int] = []
        parts: list[Sequence[int]] = []
        for i, ((idx, w), comp) in enumerate(zip(self.shards, self.compilers)):
            pred = comp.compile(self.query)
            visible = idx.visible(w)
            chosen = visible if pred is match_all else [s for s in visible if pred(s)]
            if i == 0:
                parts.append(chosen)
            else:
                base = i << 32
                parts.append([base | s for s in chosen])
        refs = parts[0] if len(parts) == 1 else [r for p in parts for r in p]
        if not parts:
            refs = []
        self.cluster.result_cache.put(("match", self.identity), refs)
        return refs

    def sorted_refs(self, keys: list[SortKey], refs: Sequence[int]) -> tuple[_Plan, list[int]]:
        """The sort plan and the refs in its order (cached per searcher, query and sort)."""
        cache_key = ("sort", self.identity, orjson.dumps([k.describe() for k in keys]))
        cached = self.cluster.result_cache.get(cache_key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        plan = _Plan(keys, self.compilers)
        plan.prepare(refs)
        result = (plan, sorted(refs, key=plan.key))
        self.cluster.result_cache.put(cache_key, result)
        return result


def run_search(cluster: Cluster, target: str | None, body: dict[str, Any],
               params: dict[str, str], count_only: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    pit_spec = body.get("pit")
    with cluster.lock:
        pit_id: str | None = None
        if pit_spec is not None:
            if count_only:
                raise parsing_error("request does not support [pit]")
            shards, pit_id = _pit_shards(cluster, target, pit_spec, params)
        else:
            indices = cluster.resolve(target, ignore_unavailable=params.get(
                "ignore_unavailable") == "true", allow_no_indices=params.get(
                "allow_no_indices", "true") != "false")
            cluster.searcher_indices(indices)
            shards = [(idx, idx.refreshed_seq) for idx in sorted(indices, key=_name)]
        search = _Search(cluster, body, params, shards, pit_id)
        if count_only:
            search.prefetch(query_fields(search.query))
            return {"count": len(search.matches()), "_shards": shards_header(len(shards))}
        out = _respond(search, t0)
    return out


def _name(idx: Index) -> str:
    return idx.name


def _pit_shards(cluster: Cluster, target: str | None, pit_spec: Any, params: dict[str, str]
                ) -> tuple[list[tuple[Index, int]], str]:
    if target:
        raise ESError(400, {"type": "action_request_validation_exception",
                            "reason": "Validation Failed: 1: [indices] cannot be used with point "
                            "in time. Do not specify any index with point in time.;"})
    if not isinstance(pit_spec, dict) or not isinstance(pit_spec.get("id"), str):
        raise parsing_error("[pit] requires [id]")
    keep = pit_spec.get("keep_alive")
    pit = cluster.pits.use(pit_spec["id"], keep_alive_seconds(keep) if keep else None)
    return list(pit.shards), pit.id


def _respond(search: _Search, t0: float) -> dict[str, Any]:
    body, params = search.body, search.params
    size = int(body.get("size", params.get("size", 10)))
    from_ = int(body.get("from", params.get("from", 0)))
    sort_spec = body.get("sort")
    if sort_spec is None and params.get("sort"):
        sort_spec = params["sort"].split(",")
    keys = parse_sort(sort_spec)
    aggs = body.get("aggs") or body.get("aggregations")
    search.prefetch(query_fields(search.query) | agg_fields(aggs)
                    | {k.name for k in keys if k.name not in _SPECIAL})
    after = body.get("search_after")
    if search.pit_id is not None and keys and (after is None or len(after) == len(keys) + 1) \
            and keys[-1].name != "_shard_doc":
        keys.append(SortKey("_shard_doc", False))  # the implicit PIT tie-breaker
    _check_sort(search, keys)
    window = min((idx.max_result_window for idx, _w in search.shards), default=10000)
    if from_ + size > window:
        raise shard_failure(
            f"Result window is too large, from + size must be less than or equal to: "
            f"[{window}] but was [{from_ + size}]. See the scroll api for a more "
            "efficient way to request large data sets. This limit can be set by "
            "changing the [index.max_result_window] index level setting.")
    if after is not None:
        if not keys:
            raise shard_failure("Sort must contain at least one field.")
        if from_ not in (0, -1):
            raise ESError(400, {"type": "action_request_validation_exception",
                                "reason": "Validation Failed: 1: `from` parameter must be set "
                                "to 0 when `search_after` is used.;"})
        if not isinstance(after, list) or len(after) != len(keys):
            given = len(after) if isinstance(after, list) else 0
            raise illegal_argument(f"search_after has {given} value(s) but sort has "
                                   f"{len(keys)}.")
    refs = search.matches()
    total = len(refs)
    plan: _Plan | None = None
    if keys:
        plan, ordered = search.sorted_refs(keys, refs)
        start = from_
        if after is not None:
            start = bisect_right_by(ordered, plan.after_key(after), plan.visible_key)
        page = ordered[start : start + size] if size > 0 else []
    else:
        page = list(refs[from_ : from_ + size]) if size > 0 else []
    hits = _hits(search, page, plan)
    out: dict[str, Any] = {}
    if search.pit_id is not None:
        out["pit_id"] = search.pit_id
    out.update({"took": 0, "timed_out": False,
                "_shards": shards_header(len(search.shards)),
                "hits": _hits_header(body, params, total, hits, plan is not None)})
    if aggs:
        ctx = AggContext(search.compilers, search.cluster.agg_cache, search.identity)
        out["aggregations"] = run_aggs(aggs, ctx, refs)
    out["took"] = int((time.perf_counter() - t0) * 1000)
    return out


def _check_sort(search: _Search, keys: list[SortKey]) -> None:
    for key in keys:
        if key.name == "_shard_doc" and search.pit_id is None:
            raise shard_failure("[_shard_doc] sort field cannot be used without [point in time]",
                                "illegal_argument_exception")
        if key.name in _SPECIAL:
            continue
        if key.name == "_id":
            raise shard_failure("Fielddata access on the _id field is disallowed, you can "
                                "re-enable it by updating the dynamic cluster setting: "
                                "indices.id_field_data.enabled")
        kinds = {c.field(key.name).kind for c in search.compilers}
        if "text" in kinds:
            raise shard_failure(_TEXT_SORT.format(key.name))
        if search.compilers and kinds <= {"unmapped", "object"} and not key.unmapped_type:
            raise shard_failure(f"No mapping found for [{key.name}] in order to sort on",
                                "query_shard_exception")


def _hits(search: _Search, page: Sequence[int], plan: _Plan | None) -> list[dict[str, Any]]:
    body, params = search.body, search.params
    enabled, inc, exc = source_filter(body.get("_source", _source_param(params)))
    out = []
    for ref in page:
        idx = search.shards[ref >> 32][0]
        doc = idx.slots[ref & MASK]
        hit: dict[str, Any] = {"_index": idx.name, "_id": doc.id,
                               "_score": None if plan is not None else 1.0}
        if body.get("seq_no_primary_term"):
            hit["_seq_no"] = doc.seq_no
            hit["_primary_term"] = 1
        if body.get("version"):
            hit["_version"] = doc.version
        if enabled:
            src = search.cluster.source_of(idx, doc)
            hit["_source"] = filter_source(src, inc, exc) if inc is not None or exc else src
        if plan is not None:
            hit["sort"] = plan.hit_values(ref)
        out.append(hit)
    return out


def _hits_header(body: dict[str, Any], params: dict[str, str], total: int,
                 hits: list[dict[str, Any]], sorted_: bool) -> dict[str, Any]:
    tth = body.get("track_total_hits", params.get("track_total_hits", 10000))
    out: dict[str, Any] = {}
    if tth is True or tth == "true":
        out["total"] = {"value": total, "relation": "eq"}
    elif tth is not False and tth != "false":
        try:
            limit = int(tth)
        except (TypeError, ValueError):
            raise parsing_error(f"[track_total_hits] must be a boolean or an integer, got "
                                f"[{tth}]") from None
        if limit < 0:
            raise ESError(400, {"type": "action_request_validation_exception",
                                "reason": "Validation Failed: 1: [track_total_hits] parameter "
                                "must be positive or equals to -1, got " + str(limit) + ";"})
        out["total"] = ({"value": total, "relation": "eq"} if total <= limit else
                        {"value": limit, "relation": "gte"})
    out["max_score"] = None if sorted_ or not hits else 1.0
    out["hits"] = hits
    return out


def _source_param(params: dict[str, str]) -> Any:
    if "_source" in params:
        v = params["_source"]
        if v in ("true", "false"):
            return v == "true"
        return v.split(",")
    inc = params.get("_source_includes")
    exc = params.get("_source_excludes")
    if inc or exc:
        return {"includes": inc.split(",") if inc else [], "excludes":
                exc.split(",") if exc else []}
    return None


def _q_param(q: str) -> dict[str, Any]:
    """A tiny subset of query_string: ``*``, ``field:value`` joined by AND."""
    q = q.strip()
    if q in ("*", "*:*"):
        return {"match_all": {}}
    must = []
    for part in q.split(" AND "):
        field, sep, value = part.strip().partition(":")
        if not sep:
            raise illegal_argument(f"unsupported q parameter [{q}] (test server supports "
                                   "field:value [AND field:value])")
        must.append({"match": {field: value.strip('"')}})
    return {"bool": {"must": must}}

