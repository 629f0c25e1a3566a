"""In-memory cluster state and the Elasticsearch operations on it.

Everything that touches state runs under ``Cluster.lock`` (one re-entrant lock: a bulk is
applied atomically with respect to other requests, which is simpler than and compatible
with Elasticsearch's per-shard ordering).  Stored ``_source`` dicts are never mutated after
they are stored (updates build new dicts), so responses can be serialized outside the lock.

Refresh semantics: documents are visible to search/count immediately after the write is
acknowledged (as if every write used ``refresh=true``); ``_refresh`` is accepted and a no-op.
"""

from __future__ import annotations

import base64
import fnmatch
import os
import threading
import time
from collections import Counter
from typing import Any

import orjson

from .errors import ESError, es_error, illegal_argument, index_not_found
from .faults import BulkItem, Fault
from .mapping import Mapping, format_millis, java_str
from .query import (
    Field,
    QueryCompiler,
    compare_sort,
    filter_source,
    get_values,
    normalize_after,
    parse_sort,
    run_aggs,
    shard_failure,
    sort_hits,
    sort_values,
    source_filter,
)

VERSIONS: dict[int, dict[str, str]] = {
    7: {"number": "7.17.25", "lucene_version": "8.11.3",
        "minimum_wire_compatibility_version": "6.8.0",
        "minimum_index_compatibility_version": "6.0.0-beta1",
        "build_hash": "f9b6b57d1d0f76e2d14291c04fb50abeb642cfbf",
        "build_date": "2024-10-16T22:06:36.904732810Z"},
    8: {"number": "8.17.0", "lucene_version": "9.12.0",
        "minimum_wire_compatibility_version": "7.17.0",
        "minimum_index_compatibility_version": "7.0.0",
        "build_hash": "2b6a7fed44faa321997703718f07ee0420804b41",
        "build_date": "2024-12-11T12:08:05.663969764Z"},
    9: {"number": "9.1.0", "lucene_version": "10.2.2",
        "minimum_wire_compatibility_version": "8.19.0",
        "minimum_index_compatibility_version": "8.0.0",
        "build_hash": "5a8f4a8b2e5f5fa0f17a6e7e4c0ab1b8a0e1e6a1",
        "build_date": "2025-07-22T10:13:32.117428823Z"},
}

_INVALID_NAME_CHARS = set('\\/*?"<>| ,#:')
_BULK_META_KEYS = frozenset({
    "_index", "_id", "routing", "version", "version_type", "if_seq_no", "if_primary_term",
    "pipeline", "require_alias", "retry_on_conflict", "_source", "dynamic_templates",
    "require_data_stream", "op_type", "list_executed_pipelines", "_type",
})


def _uuid() -> str:
    return base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


def new_doc_id() -> str:
    return base64.urlsafe_b64encode(os.urandom(15)).decode()


def flatten_settings(settings: dict[str, Any] | None, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (settings or {}).items():
        key = prefix + k
        if isinstance(v, dict):
            out.update(flatten_settings(v, key + "."))
        else:
            if not key.startswith("index."):
                key = "index." + key
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, list):
                v = [str(x) for x in v]
            out[key] = v if isinstance(v, list) else str(v)
    return out


def nest_settings(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sorted(flat.items()):
        cur = out
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = cur.get(p)
            if not isinstance(nxt, dict):
                nxt = cur[p] = {}
            cur = nxt
        cur[parts[-1]] = value
    return out


def glob_overlap(p: str, q: str) -> bool:
    """Whether two ``*``-glob patterns can match a common string."""
    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(p) and j == len(q):
            r = True
        elif i < len(p) and p[i] == "*":
            r = go(i + 1, j) or (j < len(q) and go(i, j + 1))
        elif j < len(q) and q[j] == "*":
            r = go(i, j + 1) or (i < len(p) and go(i + 1, j))
        elif i < len(p) and j < len(q):
            r = p[i] == q[j] and go(i + 1, j + 1)
        else:
            r = False
        memo[key] = r
        return r

    return go(0, 0)


def merge_doc(old: dict[str, Any], changes: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Elasticsearch's partial-update merge (recursive for objects); copy-on-write."""
    out = dict(old)
    changed = False
    for k, v in changes.items():
        cur = out.get(k, _ABSENT)
        if isinstance(cur, dict) and isinstance(v, dict):
            merged, c = merge_doc(cur, v)
            if c:
                out[k] = merged
                changed = True
        elif cur is _ABSENT or cur != v or type(cur) is not type(v):
            out[k] = v
            changed = True
    return out, changed


_ABSENT = object()


class Doc:
    __slots__ = ("seq_no", "source", "version")

    def __init__(self, source: dict[str, Any], version: int, seq_no: int) -> None:
        self.source = source
        self.version = version
        self.seq_no = seq_no


class Index:
    def __init__(self, name: str, mapping: Mapping, settings: dict[str, Any],
                 data_stream: str | None = None, template: str | None = None) -> None:
        self.name = name
        self.uuid = _uuid()
        self.mapping = mapping
        self.creation_date = int(time.time() * 1000)
        self.settings = settings
        self.data_stream = data_stream
        self.template = template
        self.hidden = data_stream is not None or settings.get("index.hidden") == "true"
        self.docs: dict[str, Doc] = {}
        self.tombstones: dict[str, int] = {}
        self.seq_no = -1
        try:
            replicas = int(settings.get("index.number_of_replicas", "1"))
        except ValueError:
            replicas = 1
        self.shards_total = 1 + replicas
        self.max_result_window = int(settings.get("index.max_result_window", "10000"))

    def next_seq(self) -> int:
        self.seq_no += 1
        return self.seq_no

    def settings_body(self, major: int) -> dict[str, Any]:
        flat: dict[str, Any] = {
            "index.number_of_shards": "1",
            "index.number_of_replicas": "1",
            "index.routing.allocation.include._tier_preference": "data_content",
            **self.settings,
            "index.uuid": self.uuid,
            "index.creation_date": str(self.creation_date),
            "index.provided_name": self.name,
            "index.version.created": {7: "7172599", 8: "8521000", 9: "9033000"}.get(major, "0"),
        }
        if self.data_stream is not None:
            flat["index.hidden"] = "true"
            flat["index.routing.allocation.include._tier_preference"] = "data_hot"
        return nest_settings(flat)


class DataStream:
    def __init__(self, name: str, template: str, tpl_body: dict[str, Any]) -> None:
        self.name = name
        self.template = template
        self.tpl_body = tpl_body
        self.indices: list[Index] = []
        self.generation = 0
        self.created = time.time()

    @property
    def write_index(self) -> Index:
        return self.indices[-1]


def _builtin_templates() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    strings_as_keyword = {
        "match_mapping_type": "string",
        "mapping": {"type": "keyword", "ignore_above": 1024},
    }
    components: dict[str, dict[str, Any]] = {}
    templates: dict[str, dict[str, Any]] = {}
    for kind in ("logs", "metrics", "synthetics"):
        components[f"{kind}@mappings"] = {
            "template": {
                "mappings": {
                    "date_detection": False,
                    "dynamic_templates": [{"ecs_strings_as_keyword": strings_as_keyword}],
                    "properties": {
                        "@timestamp": {"type": "date"},
                        "data_stream": {"properties": {
                            "type": {"type": "constant_keyword", "value": kind},
                            "dataset": {"type": "constant_keyword"},
                            "namespace": {"type": "constant_keyword"},
                        }},
                    },
                }
            },
            "version": 14,
            "_meta": {"description": f"default mappings for the {kind} index template installed "
                      "by x-pack", "managed": True},
        }
        settings: dict[str, Any] = {"index": {"lifecycle": {"name": kind}}}
        if kind == "logs":
            settings["index"]["mapping"] = {"ignore_malformed": True}
        components[f"{kind}@settings"] = {
            "template": {"settings": settings},
            "version": 14,
            "_meta": {"description": f"default settings for the {kind} index template installed "
                      "by x-pack", "managed": True},
        }
        templates[kind] = {
            "index_patterns": [f"{kind}-*-*"],
            "composed_of": [f"{kind}@mappings", f"{kind}@settings", f"{kind}@custom"],
            "priority": 100,
            "version": 14,
            "_meta": {"description": f"default {kind} template installed by x-pack",
                      "managed": True},
            "data_stream": {"hidden": False, "allow_custom_routing": False},
            "allow_auto_create": True,
            "ignore_missing_component_templates": [f"{kind}@custom"],
        }
    return templates, components


class Cluster:
    def __init__(self, major: int = 8, version: str | None = None,
                 cluster_name: str = "es-test-cluster", node_name: str = "es-test-node") -> None:
        if major not in VERSIONS:
            raise ValueError(f"unsupported major {major}; choose one of {sorted(VERSIONS)}")
        self.major = major
        self.version = dict(VERSIONS[major])
        if version:
            self.version["number"] = version
        self.cluster_name = cluster_name
        self.node_name = node_name
        self.cluster_uuid = _uuid()
        self.error_type = "document_parsing_exception" if major >= 8 else \
            "mapper_parsing_exception"
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.indices: dict[str, Index] = {}
            self.data_streams: dict[str, DataStream] = {}
            templates, components = _builtin_templates()
            self.templates: dict[str, dict[str, Any]] = templates
            self.component_templates: dict[str, dict[str, Any]] = components
            self.ilm: dict[str, dict[str, Any]] = {}

    # ================================================================== info
    def info(self) -> dict[str, Any]:
        v = self.version
        return {
            "name": self.node_name,
            "cluster_name": self.cluster_name,
            "cluster_uuid": self.cluster_uuid,
            "version": {
                "number": v["number"],
                "build_flavor": "default",
                "build_type": "docker",
                "build_hash": v["build_hash"],
                "build_date": v["build_date"],
                "build_snapshot": False,
                "lucene_version": v["lucene_version"],
                "minimum_wire_compatibility_version": v["minimum_wire_compatibility_version"],
                "minimum_index_compatibility_version": v["minimum_index_compatibility_version"],
            },
            "tagline": "You Know, for Search",
        }

    # ================================================================== names & templates
    @staticmethod
    def validate_index_name(name: str) -> None:
        def bad(why: str) -> ESError:
            return ESError(400, {"type": "invalid_index_name_exception",
                                 "reason": f"Invalid index name [{name}], {why}",
                                 "index_uuid": "_na_", "index": name})

        if name != name.lower():
            raise bad("must be lowercase")
        if any(c in _INVALID_NAME_CHARS for c in name):
            raise bad('must not contain the following characters [\'\\\', \'/\', \'*\', \'?\', '
                      '\'"\', \'<\', \'>\', \'|\', \' \', \',\', \'#\', \':\']')
        if name[:1] in ("_", "-", "+"):
            raise bad("must not start with '_', '-', or '+'")
        if name in (".", ".."):
            raise bad("must not be '.' or '..'")
        if len(name.encode()) > 255:
            raise bad("index name is too long, (" + str(len(name.encode())) + " > 255)")

    def find_template(self, name: str) -> tuple[str, dict[str, Any]] | None:
        best: tuple[int, str, dict[str, Any]] | None = None
        for tname, tpl in self.templates.items():
            if any(fnmatch.fnmatchcase(name, p) for p in tpl["index_patterns"]):
                prio = int(tpl.get("priority") or 0)
                if best is None or prio > best[0]:
                    best = (prio, tname, tpl)
        return (best[1], best[2]) if best else None

    def _compose(self, tpl: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        settings: dict[str, Any] = {}
        mappings: list[dict[str, Any]] = []
        parts = [self.component_templates.get(c, {}).get("template", {})
                 for c in tpl.get("composed_of") or []]
        parts.append(tpl.get("template") or {})
        for part in parts:
            settings.update(flatten_settings(part.get("settings")))
            if part.get("mappings"):
                mappings.append(part["mappings"])
        return settings, mappings

    def _new_index(self, name: str, tpl: tuple[str, dict[str, Any]] | None,
                   body: dict[str, Any] | None = None, data_stream: str | None = None) -> Index:
        settings: dict[str, Any] = {}
        mapping = Mapping(error_type=self.error_type)
        if tpl is not None:
            tsettings, tmappings = self._compose(tpl[1])
            settings.update(tsettings)
            for m in tmappings:
                mapping.merge(m)
        if body:
            settings.update(flatten_settings(body.get("settings")))
            if body.get("mappings"):
                mapping.merge(body["mappings"])
        if data_stream is not None:
            mapping.merge({"_data_stream_timestamp": {"enabled": True}})
            if mapping.resolve("@timestamp") is None:
                mapping.merge({"properties": {"@timestamp": {"type": "date"}}})
        mapping.ignore_malformed = settings.get("index.mapping.ignore_malformed") == "true"
        if "index.mapping.total_fields.limit" in settings:
            pass
        idx = Index(name, mapping, settings, data_stream, tpl[0] if tpl else None)
        self.indices[name] = idx
        return idx

    def _create_data_stream(self, name: str, tpl: tuple[str, dict[str, Any]]) -> DataStream:
        self.validate_index_name(name)
        ds = DataStream(name, tpl[0], tpl[1])
        self.data_streams[name] = ds
        self._rollover(ds)
        return ds

    def _rollover(self, ds: DataStream) -> Index:
        ds.generation += 1
        day = time.strftime("%Y.%m.%d", time.gmtime())
        backing = f".ds-{ds.name}-{day}-{ds.generation:06d}"
        tpl = (ds.template, ds.tpl_body)
        return_idx = self._new_index(backing, tpl, data_stream=ds.name)
        ds.indices.append(return_idx)
        return return_idx

    def _auto_create(self, name: str, allow_ds: bool = True) -> tuple[Index | None,
                                                                       DataStream | None]:
        ds = self.data_streams.get(name)
        if ds is not None:
            return ds.write_index, ds
        idx = self.indices.get(name)
        if idx is not None:
            return idx, None
        self.validate_index_name(name)
        tpl = self.find_template(name)
        if tpl is not None and tpl[1].get("data_stream") is not None and allow_ds:
            ds = self._create_data_stream(name, tpl)
            return ds.write_index, ds
        return self._new_index(name, tpl), None

    # ================================================================== resolution
    def resolve(self, target: str | None, *, allow_no_indices: bool = True,
                ignore_unavailable: bool = False) -> list[Index]:
        out: dict[str, Index] = {}
        exprs = [t for t in (target or "_all").split(",") if t]
        for expr in exprs:
            if expr.startswith("-") and out:
                pat = expr[1:]
                for n in [n for n in out if fnmatch.fnmatchcase(n, pat)]:
                    del out[n]
                for ds in self.data_streams.values():
                    if fnmatch.fnmatchcase(ds.name, pat):
                        for bi in ds.indices:
                            out.pop(bi.name, None)
                continue
            if expr in ("_all", "*") or "*" in expr:
                pat = "*" if expr == "_all" else expr
                for name, idx in self.indices.items():
                    if fnmatch.fnmatchcase(name, pat) and (not idx.hidden or pat.startswith(".")):
                        out[name] = idx
                for ds in self.data_streams.values():
                    if fnmatch.fnmatchcase(ds.name, pat):
                        for bi in ds.indices:
                            out[bi.name] = bi
                continue
            ds = self.data_streams.get(expr)
            if ds is not None:
                for bi in ds.indices:
                    out[bi.name] = bi
                continue
            idx = self.indices.get(expr)
            if idx is not None:
                out[expr] = idx
            elif not ignore_unavailable:
                raise index_not_found(expr)
        if not out and not allow_no_indices:
            raise index_not_found(target or "_all")
        return list(out.values())

    # ================================================================== bulk
    def bulk(self, body: bytes, default_index: str | None, refresh: bool,
             item_faults: list[Fault], counts: Counter[str],
             require_data_stream: bool = False) -> dict[str, Any]:
        t0 = time.perf_counter()
        ops = self._parse_bulk(body, default_index)
        items: list[dict[str, Any]] = []
        errors = False
        with self.lock:
            for pos, (op, meta, name, raw) in enumerate(ops):
                item, outcome = self._exec(pos, op, meta, name, raw, item_faults, refresh,
                                           require_data_stream)
                counts["bulk.items"] += 1
                counts["bulk.items." + outcome] += 1
                inner = item[op]
                counts[f"bulk.items.status.{inner['status']}"] += 1
                if "error" in inner:
                    errors = True
                items.append(item)
        took = int((time.perf_counter() - t0) * 1000)
        return {"errors": errors, "took": took, "items": items}

    def _parse_bulk(self, body: bytes, default_index: str | None
                    ) -> list[tuple[str, dict[str, Any], str, bytes | None]]:
        if not body:
            raise es_error(400, "parse_exception", "request body is required")
        if not body.endswith(b"\n"):
            raise illegal_argument("The bulk request must be terminated by a newline [\\n]")
        lines = body.split(b"\n")
        n = len(lines) - 1
        ops: list[tuple[str, dict[str, Any], str, bytes | None]] = []
        i = 0
        while i < n:
            line = lines[i]
            if not line.strip():
                i += 1
                continue
            try:
                action = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                raise es_error(400, "x_content_parse_exception",
                               f"[{i + 1}:1] Unexpected character: {e}") from None
            if not isinstance(action, dict) or len(action) != 1:
                raise illegal_argument(
                    f"Malformed action/metadata line [{i + 1}], expected START_OBJECT or "
                    "END_OBJECT but found "
                    f"[{'START_ARRAY' if isinstance(action, list) else 'VALUE'}]"
                    if not isinstance(action, dict) else
                    f"Malformed action/metadata line [{i + 1}], expected a simple value for field "
                    f"[{list(action)[1] if len(action) > 1 else ''}] but found [START_OBJECT]")
            op, meta = next(iter(action.items()))
            if op not in ("index", "create", "update", "delete"):
                raise illegal_argument(
                    f"Malformed action/metadata line [{i + 1}], expected field [create], "
                    f"[delete], [index] or [update] but found [{op}]")
            if not isinstance(meta, dict):
                raise illegal_argument(
                    f"Malformed action/metadata line [{i + 1}], expected START_OBJECT but found "
                    f"[VALUE_STRING]")
            for key in meta:
                if key not in _BULK_META_KEYS:
                    raise illegal_argument(
                        f"Action/metadata line [{i + 1}] contains an unknown parameter [{key}]")
            name = meta.get("_index", default_index)
            if name is None:
                raise es_error(400, "action_request_validation_exception",
                               "Validation Failed: 1: index is missing;")
            if op == "delete":
                ops.append((op, meta, str(name), None))
                i += 1
                continue
            if i + 1 >= n:
                raise illegal_argument("The bulk request must be terminated by a newline [\\n]")
            ops.append((op, meta, str(name), lines[i + 1]))
            i += 2
        if not ops:
            raise es_error(400, "action_request_validation_exception",
                           "Validation Failed: 1: no requests added;")
        return ops

    # ----------------------------------------------------------------- per item
    def _exec(self, pos: int, op: str, meta: dict[str, Any], name: str, raw: bytes | None,
              item_faults: list[Fault], refresh: bool, require_data_stream: bool = False
              ) -> tuple[dict[str, Any], str]:
        doc_id = meta.get("_id")
        if doc_id is not None:
            doc_id = str(doc_id)
        source: Any = None
        if raw is not None:
            try:
                source = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                return self._item_error(op, name, doc_id, 400, {
                    "type": self.error_type, "reason": "[1:1] failed to parse",
                    "caused_by": {"type": "x_content_parse_exception", "reason": str(e)}},
                ), "mapping_error"
            if not isinstance(source, dict):
                return self._item_error(op, name, doc_id, 400, {
                    "type": self.error_type,
                    "reason": "[1:1] failed to parse",
                    "caused_by": {"type": "not_x_content_exception",
                                  "reason": "Compressor detection can only be called on some "
                                  "xcontent bytes or compressed xcontent bytes"}}), "mapping_error"
        for fault in item_faults:
            src_for_pred = source.get("doc") if op == "update" and source else source
            if fault.selects(BulkItem(pos, op, name, doc_id, src_for_pred)):
                return self._fault_item(fault, op, name, doc_id, src_for_pred)
        if doc_id is not None and doc_id == "":
            return self._item_error(op, name, None, 400, {
                "type": "action_request_validation_exception",
                "reason": "Validation Failed: 1: if _id is specified it must not be empty;"}), \
                "error"
        # --- resolve target
        try:
            if op == "delete":
                ds = self.data_streams.get(name)
                idx = ds.write_index if ds else self.indices.get(name)
                if idx is None:
                    raise index_not_found(name)
            else:
                idx, ds = self._auto_create(name)
        except ESError as e:
            return self._item_error(op, name, doc_id, e.status, e.err), "error"
        assert idx is not None
        if (require_data_stream or meta.get("require_data_stream")) and ds is None:
            return self._item_error(op, name, doc_id, 400, {
                "type": "index_not_found_exception",
                "reason": f"no such index [{name}] and [require_data_stream] request flag "
                "is [true] and [" + name + "] is not a data stream",
                "index_uuid": "_na_", "index": name}), "error"
        if ds is not None and op != "create":
            return self._item_error(op, name, doc_id, 400, {
                "type": "illegal_argument_exception",
                "reason": "only write ops with an op_type of create are allowed in data streams",
            }), "error"
        if ds is None and idx.data_stream is not None and op == "create":
            return self._item_error(op, idx.name, doc_id, 400, {
                "type": "illegal_argument_exception",
                "reason": "index request with op_type=create targeting backing indices is "
                f"disallowed, target corresponding data stream [{idx.data_stream}] instead",
            }), "error"
        if op == "delete":
            return self._delete(idx, doc_id, meta, refresh)
        if op == "update":
            return self._update(idx, doc_id, source, raw, refresh)
        return self._index(op, idx, ds, doc_id, source, raw, meta, refresh)

    def _ok(self, op: str, idx: Index, doc_id: str, doc_version: int, result: str,
            seq_no: int, status: int, refresh: bool, noop: bool = False) -> dict[str, Any]:
        inner: dict[str, Any] = {
            "_index": idx.name,
            "_id": doc_id,
            "_version": doc_version,
            "result": result,
        }
        if refresh and not noop:
            inner["forced_refresh"] = True
        inner["_shards"] = ({"total": 0, "successful": 0, "failed": 0} if noop else
                            {"total": idx.shards_total, "successful": 1, "failed": 0})
        inner["_seq_no"] = seq_no
        inner["_primary_term"] = 1
        inner["status"] = status
        return {op: inner}

    def _item_error(self, op: str, index: str, doc_id: str | None, status: int,
                    err: dict[str, Any]) -> dict[str, Any]:
        return {op: {"_index": index, "_id": doc_id, "status": status, "error": err}}

    def _shard_err(self, idx: Index, type_: str, reason: str) -> dict[str, Any]:
        return {"type": type_, "reason": reason, "index_uuid": idx.uuid, "shard": "0",
                "index": idx.name}

    def _fault_item(self, fault: Fault, op: str, name: str, doc_id: str | None,
                    source: Any) -> tuple[dict[str, Any], str]:
        ds = self.data_streams.get(name)
        index = ds.write_index.name if ds else name
        status = fault.status
        if fault.kind == "mapping":
            field = fault.match_field
            if fault.reason:
                reason = fault.reason
            elif field:
                vals = get_values(source, field) if isinstance(source, dict) else []
                preview = java_str(vals[0]) if vals else ""
                reason = (f"[1:1] failed to parse field [{field}] of type [keyword] in document "
                          f"with id '{doc_id}'. Preview of field's value: '{preview}'")
            else:
                reason = "[1:1] failed to parse"
            err: dict[str, Any] = {"type": self.error_type, "reason": reason,
                                   "caused_by": {"type": "illegal_argument_exception",
                                                 "reason": "injected mapping error"}}
            return self._item_error(op, index, doc_id, status, err), "mapping_error"
        if status == 429:
            err = {"type": "es_rejected_execution_exception",
                   "reason": fault.reason or (
                       "rejected execution of primary operation [coordinating_and_primary_bytes="
                       "104857600, replica_bytes=0, all_bytes=104857600, "
                       "primary_operation_bytes=2048, max_coordinating_and_primary_bytes="
                       "107374182]")}
            outcome = "rejected"
        elif status == 503:
            err = {"type": "unavailable_shards_exception",
                   "reason": fault.reason or (
                       f"[{index}][0] primary shard is not active Timeout: [1m], request: "
                       f"[BulkShardRequest [[{index}][0]] containing [1] requests]")}
            outcome = "unavailable"
        elif status == 409:
            err = {"type": "version_conflict_engine_exception",
                   "reason": fault.reason or f"[{doc_id}]: version conflict, document already "
                   "exists (current version [1])", "index_uuid": "_na_", "shard": "0",
                   "index": index}
            outcome = "conflict"
        else:
            err = {"type": "exception" if status >= 500 else "illegal_argument_exception",
                   "reason": fault.reason or f"injected item failure with status [{status}]"}
            outcome = "error"
        return self._item_error(op, index, doc_id, status, err), outcome

    def _index(self, op: str, idx: Index, ds: DataStream | None, doc_id: str | None,
               source: dict[str, Any], raw: bytes | None, meta: dict[str, Any],
               refresh: bool) -> tuple[dict[str, Any], str]:
        existing = idx.docs.get(doc_id) if doc_id is not None else None
        if op == "create" and existing is not None:
            return self._item_error(op, idx.name, doc_id, 409, self._shard_err(
                idx, "version_conflict_engine_exception",
                f"[{doc_id}]: version conflict, document already exists (current version "
                f"[{existing.version}])")), "conflict"
        if "if_seq_no" in meta or "if_primary_term" in meta:
            req_seq = meta.get("if_seq_no")
            req_term = meta.get("if_primary_term")
            if existing is None:
                return self._item_error(op, idx.name, doc_id, 409, self._shard_err(
                    idx, "version_conflict_engine_exception",
                    f"[{doc_id}]: version conflict, required seqNo [{req_seq}], primary term "
                    f"[{req_term}]. but no document was found")), "conflict"
            if existing.seq_no != req_seq or req_term != 1:
                return self._item_error(op, idx.name, doc_id, 409, self._shard_err(
                    idx, "version_conflict_engine_exception",
                    f"[{doc_id}]: version conflict, required seqNo [{req_seq}], primary term "
                    f"[{req_term}]. current document has seqNo [{existing.seq_no}] and primary "
                    "term [1]")), "conflict"
        if doc_id is None:
            doc_id = new_doc_id()
        if ds is not None and "@timestamp" not in source and not get_values(source, "@timestamp"):
            return self._item_error(op, idx.name, doc_id, 400, {
                "type": self.error_type,
                "reason": "[1:1] failed to parse: data stream timestamp field [@timestamp] is "
                "missing",
                "caused_by": {"type": "illegal_argument_exception",
                              "reason": "data stream timestamp field [@timestamp] is missing"},
            }), "mapping_error"
        try:
            idx.mapping.index_document(source, doc_id, raw)
        except ESError as e:
            return self._item_error(op, idx.name, doc_id, e.status, e.err), (
                "mapping_error" if e.status == 400 else "error")
        if existing is not None:
            version = existing.version + 1
        else:
            version = idx.tombstones.pop(doc_id, 0) + 1
        seq = idx.next_seq()
        idx.docs[doc_id] = Doc(source, version, seq)
        if existing is None:
            return self._ok(op, idx, doc_id, version, "created", seq, 201, refresh), "created"
        return self._ok(op, idx, doc_id, version, "updated", seq, 200, refresh), "updated"

    def _update(self, idx: Index, doc_id: str | None, body: dict[str, Any],
                raw: bytes | None, refresh: bool) -> tuple[dict[str, Any], str]:
        op = "update"
        if doc_id is None:
            return self._item_error(op, idx.name, None, 400, {
                "type": "action_request_validation_exception",
                "reason": "Validation Failed: 1: id is missing;"}), "error"
        if "script" in body:
            return self._item_error(op, idx.name, doc_id, 400, {
                "type": "illegal_argument_exception",
                "reason": "scripted updates are not supported by the test server"}), "error"
        doc = body.get("doc")
        existing = idx.docs.get(doc_id)
        if existing is None:
            if body.get("doc_as_upsert") and isinstance(doc, dict):
                new_src = doc
            elif isinstance(body.get("upsert"), dict):
                new_src = body["upsert"]
            else:
                return self._item_error(op, idx.name, doc_id, 404, self._shard_err(
                    idx, "document_missing_exception", f"[{doc_id}]: document missing")), \
                    "not_found"
            try:
                idx.mapping.index_document(new_src, doc_id, orjson.dumps(new_src))
            except ESError as e:
                return self._item_error(op, idx.name, doc_id, e.status, e.err), "mapping_error"
            version = idx.tombstones.pop(doc_id, 0) + 1
            seq = idx.next_seq()
            idx.docs[doc_id] = Doc(new_src, version, seq)
            return self._ok(op, idx, doc_id, version, "created", seq, 201, refresh), "created"
        if not isinstance(doc, dict):
            return self._item_error(op, idx.name, doc_id, 400, {
                "type": "action_request_validation_exception",
                "reason": "Validation Failed: 1: script or doc is missing;"}), "error"
        merged, changed = merge_doc(existing.source, doc)
        if not changed and body.get("detect_noop", True):
            return self._ok(op, idx, doc_id, existing.version, "noop", existing.seq_no, 200,
                            refresh, noop=True), "noop"
        try:
            idx.mapping.index_document(merged, doc_id, orjson.dumps(doc))
        except ESError as e:
            return self._item_error(op, idx.name, doc_id, e.status, e.err), "mapping_error"
        version = existing.version + 1
        seq = idx.next_seq()
        idx.docs[doc_id] = Doc(merged, version, seq)
        return self._ok(op, idx, doc_id, version, "updated", seq, 200, refresh), "updated"

    def _delete(self, idx: Index, doc_id: str | None, meta: dict[str, Any],
                refresh: bool) -> tuple[dict[str, Any], str]:
        if doc_id is None:
            return self._item_error("delete", idx.name, None, 400, {
                "type": "action_request_validation_exception",
                "reason": "Validation Failed: 1: id is missing;"}), "error"
        existing = idx.docs.pop(doc_id, None)
        seq = idx.next_seq()
        if existing is not None:
            version = existing.version + 1
            idx.tombstones[doc_id] = version
            return self._ok("delete", idx, doc_id, version, "deleted", seq, 200, refresh), \
                "deleted"
        version = idx.tombstones.get(doc_id, 0) + 1
        idx.tombstones[doc_id] = version
        return self._ok("delete", idx, doc_id, version, "not_found", seq, 404, refresh), \
            "not_found"

    # ================================================================== single-document APIs
    def write_one(self, op: str, target: str, doc_id: str | None, body: bytes,
                  refresh: bool, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        meta: dict[str, Any] = {}
        if doc_id is not None:
            meta["_id"] = doc_id
        for p in ("if_seq_no", "if_primary_term"):
            if p in params:
                meta[p] = int(params[p])
        if op == "index" and params.get("op_type") == "create":
            op = "create"
        raw: bytes | None = body if op != "delete" else None
        if op != "delete" and not body:
            raise es_error(400, "action_request_validation_exception",
                           "Validation Failed: 1: source is missing;2: content type is missing;")
        with self.lock:
            if op == "update":
                idx_name = target
                if target in self.data_streams:
                    raise illegal_argument(
                        "only write ops with an op_type of create are allowed in data streams")
                if target not in self.indices:
                    try:
                        self._auto_create(target)
                    except ESError:
                        raise
                idx_name = target
                item, _ = self._exec(0, "update", meta, idx_name, raw, [], refresh)
            else:
                if op == "delete" and target in self.data_streams:
                    raise illegal_argument(
                        "only write ops with an op_type of create are allowed in data streams")
                item, _ = self._exec(0, op, meta, target, raw, [], refresh)
        inner = item[op if op in item else next(iter(item))]
        status = inner.pop("status")
        if "error" in inner:
            raise ESError(status, inner["error"])
        return status, inner

    def get_doc(self, target: str, doc_id: str, source: Any = True) -> tuple[int, dict[str, Any]]:
        with self.lock:
            ds = self.data_streams.get(target)
            candidates = ds.indices if ds else None
            if candidates is None:
                idx = self.indices.get(target)
                if idx is None:
                    raise index_not_found(target)
                candidates = [idx]
            for idx in reversed(candidates):
                doc = idx.docs.get(doc_id)
                if doc is not None:
                    out: dict[str, Any] = {"_index": idx.name, "_id": doc_id,
                                           "_version": doc.version, "_seq_no": doc.seq_no,
                                           "_primary_term": 1, "found": True}
                    enabled, inc, exc = source_filter(source)
                    if enabled:
                        out["_source"] = (filter_source(doc.source, inc, exc)
                                          if inc is not None or exc else doc.source)
                    return 200, out
            return 404, {"_index": candidates[-1].name if candidates else target, "_id": doc_id,
                         "found": False}

    # ================================================================== search
    def search(self, target: str | None, body: dict[str, Any], params: dict[str, str],
               count_only: bool = False) -> dict[str, Any]:
        t0 = time.perf_counter()
        ignore_unavailable = params.get("ignore_unavailable") == "true"
        allow_no = params.get("allow_no_indices", "true") != "false"
        query = body.get("query")
        if query is None and params.get("q"):
            query = _q_param(params["q"])
        with self.lock:
            indices = self.resolve(target, allow_no_indices=allow_no,
                                   ignore_unavailable=ignore_unavailable)
            now = int(time.time() * 1000)
            compiled = [(idx, QueryCompiler(idx.mapping, now)) for idx in indices]
            preds = [(idx, comp, comp.compile(query)) for idx, comp in compiled]
            if count_only:
                n = 0
                for idx, _comp, pred in preds:
                    for doc_id, doc in idx.docs.items():
                        if pred(doc_id, doc.source):
                            n += 1
                return {"count": n, "_shards": _shards(len(indices))}
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
                        raise shard_failure(
                            "Text fields are not optimised for operations that require "
                            "per-document field data like aggregations and sorting, so these "
                            "operations are disabled by default. Please use a keyword field "
                            "instead. Alternatively, set fielddata=true on "
                            f"[{key.name}] in order to load field data by uninverting the "
                            "inverted index. Note that this can use significant memory.")
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
                for doc_id, doc in idx.docs.items():
                    order += 1
                    if pred(doc_id, doc.source):
                        sv = sort_values(keys, sfields, doc_id, doc.source, order) if keys else []
                        matched.append((sv, (idx, doc_id, doc)))
                        if aggs:
                            agg_docs.append((comp, doc_id, doc.source))
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
            for sv, (idx, doc_id, doc) in page:
                hit: dict[str, Any] = {"_index": idx.name, "_id": doc_id,
                                       "_score": None if keys else 1.0}
                if body.get("seq_no_primary_term"):
                    hit["_seq_no"] = doc.seq_no
                    hit["_primary_term"] = 1
                if body.get("version"):
                    hit["_version"] = doc.version
                if enabled:
                    hit["_source"] = (filter_source(doc.source, inc, exc)
                                      if inc is not None or exc else doc.source)
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
            "_shards": _shards(len(indices)),
            "hits": hits_obj,
        }
        if agg_out is not None:
            out["aggregations"] = agg_out
        return out

    # ================================================================== indices
    def get_mapping(self, target: str | None) -> dict[str, Any]:
        with self.lock:
            return {idx.name: {"mappings": idx.mapping.to_dict()}
                    for idx in self.resolve(target)}

    def put_mapping(self, target: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            for idx in self.resolve(target, allow_no_indices=False):
                idx.mapping.merge(body)
        return {"acknowledged": True}

    def refresh(self, target: str | None) -> dict[str, Any]:
        with self.lock:
            n = len(self.resolve(target))
        return {"_shards": {"total": n * 2, "successful": n, "failed": 0}}

    # ================================================================== index templates
    def put_template(self, name: str, body: dict[str, Any], create: bool = False
                     ) -> dict[str, Any]:
        patterns = body.get("index_patterns")
        if isinstance(patterns, str):
            patterns = [patterns]
        if not patterns:
            raise es_error(400, "action_request_validation_exception",
                           "Validation Failed: 1: index patterns are missing;")
        known = {"index_patterns", "template", "composed_of", "priority", "version", "_meta",
                 "data_stream", "allow_auto_create", "ignore_missing_component_templates",
                 "deprecated"}
        for key in body:
            if key not in known:
                raise es_error(400, "x_content_parse_exception",
                               f"[1:2] [index_template] unknown field [{key}]")
        priority = body.get("priority")
        with self.lock:
            if create and name in self.templates:
                raise illegal_argument(f"index template [{name}] already exists")
            prio = int(priority or 0)
            conflicts: dict[str, list[str]] = {}
            for other_name, other in self.templates.items():
                if other_name == name or int(other.get("priority") or 0) != prio:
                    continue
                if any(glob_overlap(p, q) for p in patterns for q in other["index_patterns"]):
                    conflicts[other_name] = other["index_patterns"]
            if conflicts:
                names = ",".join(sorted(conflicts))
                detail = ", ".join(f"{n} => [{', '.join(conflicts[n])}]"
                                   for n in sorted(conflicts))
                raise illegal_argument(
                    f"index template [{name}] has index patterns [{', '.join(patterns)}] "
                    f"matching patterns from existing templates [{names}] with patterns "
                    f"({detail}) that have the same priority [{prio}], multiple index "
                    "templates may not match during index creation, please use a different "
                    "priority")
            stored: dict[str, Any] = {"index_patterns": list(patterns)}
            tpl_part = dict(body.get("template") or {})
            if "settings" in tpl_part:
                tpl_part["settings"] = nest_settings(flatten_settings(tpl_part["settings"]))
            # validate the composed mappings
            probe = {"template": tpl_part, "composed_of": body.get("composed_of") or []}
            _settings, mappings = self._compose(probe)
            try:
                m = Mapping(error_type=self.error_type)
                for part in mappings:
                    m.merge(part)
            except ESError as e:
                raise ESError(400, {"type": "mapper_parsing_exception",
                                    "reason": "Failed to parse mapping: " + str(e.err["reason"]),
                                    "caused_by": e.err}) from None
            if tpl_part:
                stored["template"] = tpl_part
            stored["composed_of"] = list(body.get("composed_of") or [])
            for key in ("priority", "version", "_meta", "allow_auto_create",
                        "ignore_missing_component_templates", "deprecated"):
                if key in body:
                    stored[key] = body[key]
            if body.get("data_stream") is not None:
                stored["data_stream"] = {"hidden": False, "allow_custom_routing": False,
                                         **body["data_stream"]}
            self.templates[name] = stored
        return {"acknowledged": True}

    def get_templates(self, name: str | None) -> dict[str, Any]:
        with self.lock:
            if not name:
                sel = list(self.templates.items())
            else:
                sel = []
                for expr in name.split(","):
                    if "*" in expr:
                        sel += [(n, t) for n, t in self.templates.items()
                                if fnmatch.fnmatchcase(n, expr)]
                    elif expr in self.templates:
                        sel.append((expr, self.templates[expr]))
                    else:
                        raise es_error(404, "resource_not_found_exception",
                                       f"index template matching [{expr}] not found")
            return {"index_templates": [{"name": n, "index_template": t} for n, t in sel]}

    # ================================================================== data streams
    def put_data_stream(self, name: str) -> dict[str, Any]:
        with self.lock:
            if name in self.data_streams:
                raise ESError(400, {"type": "resource_already_exists_exception",
                                    "reason": f"data_stream [{name}] already exists",
                                    "index_uuid": "_na_", "index": name})
            if name in self.indices:
                raise ESError(400, {"type": "resource_already_exists_exception",
                                    "reason": f"index [{name}/{self.indices[name].uuid}] "
                                    "already exists",
                                    "index_uuid": self.indices[name].uuid, "index": name})
            self.validate_index_name(name)
            tpl = self.find_template(name)
            if tpl is None or tpl[1].get("data_stream") is None:
                raise illegal_argument(f"no matching index template found for data stream "
                                       f"[{name}]")
            self._create_data_stream(name, tpl)
        return {"acknowledged": True}

    def get_data_streams(self, name: str | None) -> dict[str, Any]:
        with self.lock:
            sel: list[DataStream] = []
            for expr in (name or "*").split(","):
                if "*" in expr or expr == "_all":
                    pat = "*" if expr == "_all" else expr
                    sel += [ds for n, ds in sorted(self.data_streams.items())
                            if fnmatch.fnmatchcase(n, pat)]
                elif expr in self.data_streams:
                    sel.append(self.data_streams[expr])
                else:
                    raise index_not_found(expr)
            return {"data_streams": [self._ds_body(ds) for ds in sel]}

    def _ds_body(self, ds: DataStream) -> dict[str, Any]:
        policy = ds.write_index.settings.get("index.lifecycle.name")
        managed = "Index Lifecycle Management" if policy else "Unmanaged"
        out: dict[str, Any] = {
            "name": ds.name,
            "timestamp_field": {"name": "@timestamp"},
            "indices": [{"index_name": i.name, "index_uuid": i.uuid, "prefer_ilm": True,
                         **({"ilm_policy": policy} if policy else {}),
                         "managed_by": managed} for i in ds.indices],
            "generation": ds.generation,
            "status": "GREEN",
            "template": ds.template,
            "next_generation_managed_by": managed,
            "prefer_ilm": True,
            "hidden": bool(ds.tpl_body.get("data_stream", {}).get("hidden", False)),
            "system": False,
            "allow_custom_routing": False,
            "replicated": False,
            "rollover_on_write": False,
        }
        if policy:
            out["ilm_policy"] = policy
        return out

    # ================================================================== ILM
    def put_ilm(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        policy = body.get("policy")
        if not isinstance(policy, dict):
            raise es_error(400, "x_content_parse_exception", "[1:2] Required [policy]")
        with self.lock:
            prev = self.ilm.get(name)
            self.ilm[name] = {
                "version": (prev["version"] + 1) if prev else 1,
                "modified_date": format_millis(int(time.time() * 1000)),
                "policy": policy,
            }
        return {"acknowledged": True}

    def get_ilm(self, name: str | None) -> dict[str, Any]:
        with self.lock:
            if name:
                out = {}
                for n in name.split(","):
                    if n not in self.ilm:
                        raise es_error(404, "resource_not_found_exception",
                                       f"Lifecycle policy not found: {n}")
                    out[n] = self.ilm[n]
            else:
                out = dict(self.ilm)
            res: dict[str, Any] = {}
            for n, p in out.items():
                in_use = [i.name for i in self.indices.values()
                          if i.settings.get("index.lifecycle.name") == n]
                dss = sorted({i.data_stream for i in self.indices.values()
                              if i.data_stream and i.settings.get("index.lifecycle.name") == n})
                res[n] = {**p, "in_use_by": {"indices": in_use, "data_streams": dss,
                                             "composable_templates": []}}
            return res

    # ================================================================== test accessors
    def find_docs(self, target: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            out: dict[str, dict[str, Any]] = {}
            for idx in self.resolve(target):
                for doc_id, doc in idx.docs.items():
                    out[doc_id] = doc.source
            return out



def _shards(n: int) -> dict[str, int]:
    return {"total": n, "successful": n, "skipped": 0, "failed": 0}


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
