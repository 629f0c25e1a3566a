"""``_search`` and ``_count`` over what the indices' last refresh made searchable."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .errors import illegal_argument
from .query import (
    Field,
    QueryCompiler,
    compare_sort,
    filter_source,
    normalize_after,
    parse_sort,
    run_aggs,
    shard_failure,
    sort_hits,
    sort_values,
    source_filter,
)

if TYPE_CHECKING:
    from .cluster import Cluster

_TEXT_SORT = (
    "Text fields are not optimised for operations that require per-document field data like "
    "aggregations and sorting, so these operations are disabled by default. Please use a "
    "keyword field instead. Alternatively, set fielddata=true on [{}] in order to load field "
    "data by uninverting the inverted index. Note that this can use significant memory.")


def shards(n: int) -> dict[str, int]:
    return {"total": n, "successful": n, "skipped": 0, "failed": 0}


def run_search(cluster: Cluster, target: str | None, body: dict[str, Any],
               params: dict[str, str], count_only: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    ignore_unavailable = params.get("ignore_unavailable") == "true"
    allow_no = params.get("allow_no_indices", "true") != "false"
    query = body.get("query")
    if query is None and params.get("q"):
        query = _q_param(params["q"])
    with cluster.lock:
        indices = cluster.resolve(target, allow_no_indices=allow_no,
                                  ignore_unavailable=ignore_unavailable)
        cluster.searcher_indices(indices)
        now = int(time.time() * 1000)
        compiled = [(idx, QueryCompiler(idx.mapping, now)) for idx in indices]
        preds = [(idx, comp, comp.compile(query)) for idx, comp in compiled]
        if count_only:
            n = 0
            for idx, _comp, pred in preds:
                for doc in idx.searchable():
                    if pred(doc.id, doc.source):
                        n += 1
            return {"count": n, "_shards": shards(len(indices))}
        size = int(body.get("size", params.get("size", 10)))
        from_ = int(body.get("from", params.get("from", 0)))
        sort_spec = body.get("sort")
        if sort_spec is None and params.get("sort"):
            sort_spec = params["sort"].split(",")
        keys = parse_sort(sort_spec)
        window = min((idx.max_result_window for idx in indices), default=10000)
        if from_ + size > window:
            raise shard_failure(
                f"Result window is too large, from + size must be less than or equal to: "
                f"[{window}] but was [{from_ + size}]. See the scroll api for a more "
                "efficient way to request large data sets. This limit can be set by "
                "changing the [index.max_result_window] index level setting.")
        sort_fields_per_idx: list[list[Field | None]] = []
        if keys:
            for key in keys:
                if key.name in ("_doc", "_shard_doc", "_score"):
                    continue
                if key.name == "_id":
                    raise shard_failure(
                        "Fielddata access on the _id field is disallowed, you can re-enable "
                        "it by updating the dynamic cluster setting: "
                        "indices.id_field_data.enabled")
                kinds = {comp.field(key.name).kind for _i, comp in compiled}
                if "text" in kinds:
                    raise shard_failure(_TEXT_SORT.format(key.name))
                if compiled and kinds <= {"unmapped", "object"} and not key.kind:
                    raise shard_failure(f"No mapping found for [{key.name}] in order to "
                                        "sort on", "query_shard_exception")
            for _idx, comp in compiled:
                sort_fields_per_idx.append([
                    None if k.name in ("_doc", "_shard_doc", "_score") else
                    comp.field(k.name) for k in keys])
        matched: list[tuple[list[Any], Any]] = []
        agg_docs: list[tuple[QueryCompiler, str, dict[str, Any]]] = []
        aggs = body.get("aggs") or body.get("aggregations")
        order = 0
        for n_idx, (idx, comp, pred) in enumerate(preds):
            sfields = sort_fields_per_idx[n_idx] if keys else []
            for doc in idx.searchable():
                order += 1
                if pred(doc.id, doc.source):
                    sv = sort_values(keys, sfields, doc.id, doc.source, order) if keys else []
                    matched.append((sv, (idx, doc)))
                    if aggs:
                        agg_docs.append((comp, doc.id, doc.source))
        total = len(matched)
        if keys:
            sort_hits(keys, matched)
            after = body.get("search_after")
            if after is not None:
                norm = normalize_after(keys, sort_fields_per_idx[0] if sort_fields_per_idx
                                       else [None] * len(keys), after)
                matched = [m for m in matched if compare_sort(keys, m[0], norm) > 0]
        elif body.get("search_after") is not None:
            raise shard_failure("Sort must contain at least one field.")
        page = matched[from_ : from_ + size] if size > 0 else []
        enabled, inc, exc = source_filter(body.get("_source", _source_param(params)))
        hits = []
        for sv, (idx, doc) in page:
            hit: dict[str, Any] = {"_index": idx.name, "_id": doc.id,
                                   "_score": None if keys else 1.0}
            if body.get("seq_no_primary_term"):
                hit["_seq_no"] = doc.seq_no
                hit["_primary_term"] = 1
            if body.get("version"):
                hit["_version"] = doc.version
            if enabled:
                src = cluster.source_of(idx, doc)
                hit["_source"] = (filter_source(src, inc, exc)
                                  if inc is not None or exc else src)
            if keys:
                hit["sort"] = sv
            hits.append(hit)
        agg_out = run_aggs(aggs, agg_docs) if aggs else None
    tth = body.get("track_total_hits", params.get("track_total_hits", 10000))
    hits_obj: dict[str, Any] = {}
    if tth is True or tth == "true":
        hits_obj["total"] = {"value": total, "relation": "eq"}
    elif tth is False or tth == "false":
        pass
    else:
        limit = int(tth)
        hits_obj["total"] = ({"value": total, "relation": "eq"} if total <= limit else
                             {"value": limit, "relation": "gte"})
    hits_obj["max_score"] = None if keys or not hits else 1.0
    hits_obj["hits"] = hits
    out: dict[str, Any] = {
        "took": int((time.perf_counter() - t0) * 1000),
        "timed_out": False,
        "_shards": shards(len(indices)),
        "hits": hits_obj,
    }
    if agg_out is not None:
        out["aggregations"] = agg_out
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
