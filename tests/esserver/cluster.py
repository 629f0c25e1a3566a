"""In-memory cluster state and the Elasticsearch operations on it.

Everything that touches state runs under ``Cluster.lock`` (one re-entrant lock: a bulk is
applied atomically with respect to other requests, which is simpler than and compatible
with Elasticsearch's per-shard ordering).  A stored version is never changed (an update
stores a new one), and ``Doc.source`` parses a fresh copy, so responses can be built and
serialized outside the lock.

Refresh: writes become searchable when their index refreshes (see :mod:`.store`): every
``index.refresh_interval`` (default 1 s; ``-1`` never) by :meth:`Cluster.tick`, skipped for
a search-idle index (no search for ``index.search.idle.after``, default 30 s, while the
interval is not set explicitly) until a search arrives; on ``POST _refresh``; on
``?refresh=true``; ``?refresh=wait_for`` waits for the next one.
"""

from __future__ import annotations

import base64
import fnmatch
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson

from .aggs import AggCache
from .docvalues import get_values
from .errors import (
    ESError,
    auto_create_refused,
    es_error,
    illegal_argument,
    index_not_found,
    template_forbids_auto_create,
)
from .faults import BulkItem, Fault, item_error, outcome_of
from .mapping import Mapping, format_millis
from .pit import PitRegistry, keep_alive_seconds
from .query import filter_source, source_filter
from .search import run_search, shards_header
from .security import Principal
from .settings import (
    CLUSTER_BLOCKS,
    INDEX_BLOCKS,
    AutoCreate,
    active_blocks,
    block_error,
    check_cluster_settings,
    check_index_settings_update,
    flatten_settings,
    nest_settings,
    parse_time,
)
from .store import DataStream, Doc, Index, exact_bytes, new_uuid
from .synthetic import synthesize
from .templates import builtin_templates, glob_overlap

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
LOGS_PATTERN = "logs-*-*"  # data streams that cluster.logsdb.enabled puts in logsdb mode
BULK_ACTION = "indices:data/write/bulk[s]"


def new_doc_id() -> str:
    return base64.urlsafe_b64encode(os.urandom(15)).decode()


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


class WriteContext:
    """What a bulk or single-document write request carries into each item."""

    def __init__(self, refresh: str, item_faults: list[Fault] | None = None,
                 principal: Principal | None = None, require_data_stream: bool = False
                 ) -> None:
        self.refresh = refresh  # "false", "true" or "wait_for"
        self.item_faults = item_faults or []
        self.principal = principal
        self.require_data_stream = require_data_stream
        self.touched: dict[Index, int] = {}  # index -> highest sequence number written

    def wrote(self, idx: Index, seq_no: int) -> None:
        self.touched[idx] = max(seq_no, self.touched.get(idx, -1))


def refresh_mode(params: dict[str, str]) -> str:
    value = params.get("refresh", "false")
    if value in ("", "true"):
        return "true"
    if value in ("false", "wait_for"):
        return value
    raise illegal_argument(f"Unknown value for refresh: [{value}].")


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
        self.cluster_uuid = new_uuid()
        self.error_type = "document_parsing_exception" if major >= 8 else \
            "mapper_parsing_exception"
        self.lock = threading.RLock()
        self.refreshed = threading.Condition(self.lock)
        self._refresher: threading.Thread | None = None
        self._stop_refresher = threading.Event()
        self.pits = PitRegistry()
        self.agg_cache = AggCache(4)  # composite groupings, for paging
        self.result_cache = AggCache(4)  # matching and sorted refs, for paging
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.indices: dict[str, Index] = {}
            self.data_streams: dict[str, DataStream] = {}
            templates, components = builtin_templates()
            self.templates: dict[str, dict[str, Any]] = templates
            self.component_templates: dict[str, dict[str, Any]] = components
            self.ilm: dict[str, dict[str, Any]] = {}
            self.persistent: dict[str, Any] = {}
            self.transient: dict[str, Any] = {}
            self.pits.clear()
            self.agg_cache.clear()
            self.result_cache.clear()

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

    # ================================================================== cluster settings
    def setting(self, key: str) -> Any:
        """Effective cluster setting: transient over persistent over the default."""
        with self.lock:
            for scope in (self.transient, self.persistent):
                if key in scope:
                    return scope[key]
        return {"action.auto_create_index": "true",
                "cluster.logsdb.enabled": "true" if self.major >= 9 else "false"}.get(key)

    def put_cluster_settings(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = [k for k in body if k not in ("persistent", "transient")]
        if unknown:
            raise es_error(400, "x_content_parse_exception",
                           f"[1:2] [cluster_update_settings_request] unknown field [{unknown[0]}]")
        updates = {scope: flatten_settings(body.get(scope), index_prefix=False)
                   for scope in ("persistent", "transient")}
        for scope, flat in updates.items():
            check_cluster_settings(flat, scope)
        with self.lock:
            for scope, flat in updates.items():
                target = self.persistent if scope == "persistent" else self.transient
                for key, value in flat.items():
                    if value is None:
                        target.pop(key, None)
                    else:
                        target[key] = value
        return {"acknowledged": True,
                "persistent": nest_settings({k: v for k, v in updates["persistent"].items()
                                             if v is not None}),
                "transient": nest_settings({k: v for k, v in updates["transient"].items()
                                            if v is not None})}

    def get_cluster_settings(self, flat: bool = False) -> dict[str, Any]:
        with self.lock:
            shape = dict if flat else nest_settings
            return {"persistent": shape(self.persistent), "transient": shape(self.transient)}

    def _global_write_blocks(self) -> None:
        blocks = [b for b in CLUSTER_BLOCKS if str(self.setting(b.setting)).lower() == "true"]
        if blocks:
            raise block_error(blocks, None)

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
                   data_stream: str | None = None) -> Index:
        settings: dict[str, Any] = {}
        mapping = Mapping(error_type=self.error_type)
        if tpl is not None:
            tsettings, tmappings = self._compose(tpl[1])
            settings.update(tsettings)
            for m in tmappings:
                mapping.merge(m)
        if data_stream is not None:
            mapping.merge({"_data_stream_timestamp": {"enabled": True}})
            if mapping.resolve("@timestamp") is None:
                mapping.merge({"properties": {"@timestamp": {"type": "date"}}})
            if ("index.mode" not in settings and fnmatch.fnmatchcase(data_stream, LOGS_PATTERN)
                    and str(self.setting("cluster.logsdb.enabled")).lower() == "true"):
                settings["index.mode"] = "logsdb"
        mapping.ignore_malformed = settings.get("index.mapping.ignore_malformed") == "true"
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
        idx = self._new_index(backing, (ds.template, ds.tpl_body), data_stream=ds.name)
        ds.indices.append(idx)
        return idx

    def _auto_create(self, name: str) -> tuple[Index, DataStream | None]:
        """The write target of ``name``, created (index or data stream) when allowed."""
        ds = self.data_streams.get(name)
        if ds is not None:
            return ds.write_index, ds
        idx = self.indices.get(name)
        if idx is not None:
            return idx, None
        self.validate_index_name(name)
        tpl = self.find_template(name)
        self._check_auto_create(name, tpl)
        if tpl is not None and tpl[1].get("data_stream") is not None:
            ds = self._create_data_stream(name, tpl)
            return ds.write_index, ds
        return self._new_index(name, tpl), None

    def _check_auto_create(self, name: str, tpl: tuple[str, dict[str, Any]] | None) -> None:
        """``AutoCreateIndex``: the template's ``allow_auto_create`` decides when it sets it,
        else the ``action.auto_create_index`` cluster setting."""
        if tpl is not None and tpl[1].get("allow_auto_create") is not None:
            if tpl[1]["allow_auto_create"] is True:
                return
            raise template_forbids_auto_create(list(tpl[1]["index_patterns"]))
        why = AutoCreate(str(self.setting("action.auto_create_index"))).refusal(name)
        if why is not None:
            raise auto_create_refused(name, why)

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

    # ================================================================== refresh
    def start_refresher(self) -> None:
        if self._refresher is not None:
            return
        self._stop_refresher.clear()
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True,
                                           name="esserver-refresh")
        self._refresher.start()

    def stop_refresher(self) -> None:
        thread, self._refresher = self._refresher, None
        self._stop_refresher.set()
        if thread is not None:
            thread.join(timeout=5)

    def _refresh_loop(self) -> None:
        while not self._stop_refresher.wait(0.05):
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        """Scheduled refreshes: each index every ``index.refresh_interval``; expired PITs."""
        with self.lock:
            self.pits.expire(now)
            done = False
            for idx in self.indices.values():
                try:
                    interval = idx.refresh_interval
                except ESError:
                    continue
                if interval is None or now - idx.last_tick < interval:
                    continue
                idx.last_tick = now
                if idx.pending and not idx.search_idle(now):
                    idx.refresh()
                    done = True
            if done:
                self.refreshed.notify_all()

    def refresh(self, target: str | None) -> dict[str, Any]:
        with self.lock:
            indices = self.resolve(target)
            for idx in indices:
                idx.refresh()
            self.refreshed.notify_all()
        n = len(indices)
        return {"_shards": {"total": sum(i.shards_total for i in indices), "successful": n,
                            "failed": 0}}

    def searcher_indices(self, indices: Iterable[Index]) -> None:
        """A search reaches these indices: a search-idle one refreshes first."""
        now = time.monotonic()
        for idx in indices:
            if idx.pending and idx.search_idle(now):
                idx.refresh()
                self.refreshed.notify_all()
            idx.last_search = now

    def _after_write(self, ctx: WriteContext) -> None:
        """?refresh=true refreshes what was written (under the lock); wait_for waits for it."""
        if ctx.refresh == "true":
            with self.lock:
                for idx in ctx.touched:
                    idx.refresh()
                self.refreshed.notify_all()
        elif ctx.refresh == "wait_for":
            with self.lock:
                now = time.monotonic()
                for idx in ctx.touched:
                    if self._refresher is None or idx.search_idle(now):
                        idx.refresh()  # nothing else would refresh it
                while not self._stop_refresher.is_set() and any(
                        idx.refreshed_seq < seq for idx, seq in ctx.touched.items()):
                    self.refreshed.wait(0.1)

    # ================================================================== bulk
    def bulk(self, body: bytes, default_index: str | None, ctx: WriteContext,
             counts: Counter[str]) -> dict[str, Any]:
        t0 = time.perf_counter()
        ops = self._parse_bulk(body, default_index)
        items: list[dict[str, Any]] = []
        errors = False
        with self.lock:
            self._global_write_blocks()
            for pos, (op, meta, name, raw) in enumerate(ops):
                item, outcome = self._exec(pos, op, meta, name, raw, ctx)
                counts["bulk.items"] += 1
                counts["bulk.items." + outcome] += 1
                inner = item[op]
                counts[f"bulk.items.status.{inner['status']}"] += 1
                if "error" in inner:
                    errors = True
                items.append(item)
        self._after_write(ctx)
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
              ctx: WriteContext) -> tuple[dict[str, Any], str]:
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
        for fault in ctx.item_faults:
            src_for_pred = source.get("doc") if op == "update" and source else source
            if fault.selects(BulkItem(pos, op, name, doc_id, src_for_pred)):
                return self._fault_item(fault, op, name, doc_id, src_for_pred)
        if doc_id is not None and doc_id == "":
            return self._item_error(op, name, None, 400, {
                "type": "action_request_validation_exception",
                "reason": "Validation Failed: 1: if _id is specified it must not be empty;"}), \
                "error"
        if ctx.principal is not None and not ctx.principal.may_write(name):
            err = ctx.principal.unauthorized(BULK_ACTION, name)
            return self._item_error(op, name, doc_id, 403, err), "forbidden"
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
            return self._item_error(op, name, doc_id, e.status, e.err), outcome_of(
                str(e.err.get("type")))
        if (ctx.require_data_stream or meta.get("require_data_stream")) and ds is None:
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
        blocks = [b for b in active_blocks(idx.settings, INDEX_BLOCKS) if b.write]
        if blocks:
            err = block_error(blocks, idx.name)
            return self._item_error(op, idx.name, doc_id, err.status, err.err), "blocked"
        if op == "delete":
            return self._delete(idx, doc_id, ctx)
        if op == "update":
            return self._update(idx, doc_id, source, ctx)
        return self._index(op, idx, ds, doc_id, source, raw, meta, ctx)

    def _ok(self, op: str, idx: Index, doc_id: str, doc_version: int, result: str,
            seq_no: int, status: int, ctx: WriteContext, noop: bool = False) -> dict[str, Any]:
        inner: dict[str, Any] = {
            "_index": idx.name,
            "_id": doc_id,
            "_version": doc_version,
            "result": result,
        }
        if ctx.refresh == "true" and not noop:
            inner["forced_refresh"] = True
        inner["_shards"] = ({"total": 0, "successful": 0, "failed": 0} if noop else
                            {"total": idx.shards_total, "successful": 1, "failed": 0})
        inner["_seq_no"] = seq_no
        inner["_primary_term"] = 1
        inner["status"] = status
        if not noop:
            ctx.wrote(idx, seq_no)
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
        status, err = item_error(fault, index, doc_id, source, self.error_type)
        return self._item_error(op, index, doc_id, status, err), outcome_of(err["type"])

    def _index(self, op: str, idx: Index, ds: DataStream | None, doc_id: str | None,
               source: dict[str, Any], raw: bytes | None, meta: dict[str, Any],
               ctx: WriteContext) -> tuple[dict[str, Any], str]:
        existing = idx.current(doc_id) if doc_id is not None else None
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
        idx.put(Doc(doc_id, raw if raw is not None else exact_bytes(orjson.dumps(source)),
                    version, seq))
        if existing is None:
            return self._ok(op, idx, doc_id, version, "created", seq, 201, ctx), "created"
        return self._ok(op, idx, doc_id, version, "updated", seq, 200, ctx), "updated"

    def _update(self, idx: Index, doc_id: str | None, body: dict[str, Any],
                ctx: WriteContext) -> tuple[dict[str, Any], str]:
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
        existing = idx.current(doc_id)
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
            idx.put(Doc(doc_id, exact_bytes(orjson.dumps(new_src)), version, seq))
            return self._ok(op, idx, doc_id, version, "created", seq, 201, ctx), "created"
        if not isinstance(doc, dict):
            return self._item_error(op, idx.name, doc_id, 400, {
                "type": "action_request_validation_exception",
                "reason": "Validation Failed: 1: script or doc is missing;"}), "error"
        merged, changed = merge_doc(existing.source, doc)
        if not changed and body.get("detect_noop", True):
            return self._ok(op, idx, doc_id, existing.version, "noop", existing.seq_no, 200,
                            ctx, noop=True), "noop"
        try:
            idx.mapping.index_document(merged, doc_id, orjson.dumps(doc))
        except ESError as e:
            return self._item_error(op, idx.name, doc_id, e.status, e.err), "mapping_error"
        version = existing.version + 1
        seq = idx.next_seq()
        idx.put(Doc(doc_id, exact_bytes(orjson.dumps(merged)), version, seq))
        return self._ok(op, idx, doc_id, version, "updated", seq, 200, ctx), "updated"

    def _delete(self, idx: Index, doc_id: str | None, ctx: WriteContext
                ) -> tuple[dict[str, Any], str]:
        if doc_id is None:
            return self._item_error("delete", idx.name, None, 400, {
                "type": "action_request_validation_exception",
                "reason": "Validation Failed: 1: id is missing;"}), "error"
        seq = idx.next_seq()
        existing = idx.remove(doc_id, seq)
        if existing is not None:
            version = existing.version + 1
            idx.tombstones[doc_id] = version
            return self._ok("delete", idx, doc_id, version, "deleted", seq, 200, ctx), \
                "deleted"
        version = idx.tombstones.get(doc_id, 0) + 1
        idx.tombstones[doc_id] = version
        return self._ok("delete", idx, doc_id, version, "not_found", seq, 404, ctx), \
            "not_found"

    # ================================================================== single-document APIs
    def write_one(self, op: str, target: str, doc_id: str | None, body: bytes,
                  params: dict[str, str], principal: Principal | None = None
                  ) -> tuple[int, dict[str, Any]]:
        meta: dict[str, Any] = {}
        if doc_id is not None:
            meta["_id"] = doc_id
        for p in ("if_seq_no", "if_primary_term"):
            if p in params:
                meta[p] = int(params[p])
        op_type = params.get("op_type")
        if op == "index" and (op_type == "create" or (doc_id is None and op_type is None)):
            op = "create"  # RestIndexAction: an auto-generated id defaults to op_type create
        raw: bytes | None = body if op != "delete" else None
        if op != "delete" and not body:
            raise es_error(400, "action_request_validation_exception",
                           "Validation Failed: 1: source is missing;2: content type is missing;")
        ctx = WriteContext(refresh_mode(params), principal=principal)
        with self.lock:
            self._global_write_blocks()
            if op in ("update", "delete") and target in self.data_streams:
                raise illegal_argument(
                    "only write ops with an op_type of create are allowed in data streams")
            item, _ = self._exec(0, op, meta, target, raw, ctx)
        self._after_write(ctx)
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
                doc = idx.current(doc_id)
                if doc is not None:
                    out: dict[str, Any] = {"_index": idx.name, "_id": doc_id,
                                           "_version": doc.version, "_seq_no": doc.seq_no,
                                           "_primary_term": 1, "found": True}
                    enabled, inc, exc = source_filter(source)
                    if enabled:
                        src = self.source_of(idx, doc)
                        out["_source"] = (filter_source(src, inc, exc)
                                          if inc is not None or exc else src)
                    return 200, out
            return 404, {"_index": candidates[-1].name if candidates else target, "_id": doc_id,
                         "found": False}

    def source_of(self, idx: Index, doc: Doc) -> dict[str, Any]:
        """The ``_source`` Elasticsearch returns: synthetic in a logsdb index."""
        if idx.mode != "logsdb" or idx.settings.get("index.mapping.source.mode") == "stored":
            return doc.source
        keep = idx.settings.get("index.mapping.synthetic_source_keep", "arrays")
        return synthesize(doc.source, idx.mapping, keep)

    # ================================================================== search
    def search(self, target: str | None, body: dict[str, Any], params: dict[str, str],
               count_only: bool = False) -> dict[str, Any]:
        return run_search(self, target, body, params, count_only)

    def open_pit(self, target: str, keep_alive: str | None) -> dict[str, Any]:
        seconds = keep_alive_seconds(keep_alive)
        with self.lock:
            indices = sorted(self.resolve(target), key=lambda i: i.name)
            self.searcher_indices(indices)
            pit = self.pits.open([(idx, idx.refreshed_seq) for idx in indices], seconds)
        out: dict[str, Any] = {"id": pit.id}
        if self.major >= 8:
            out["_shards"] = shards_header(len(indices))
        return out

    def close_pit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        pit_id = body.get("id")
        if not isinstance(pit_id, str):
            raise es_error(400, "action_request_validation_exception",
                           "Validation Failed: 1: point-in-time id must not be empty;")
        with self.lock:
            freed = self.pits.close(pit_id)
        return (200 if freed else 404), {"succeeded": True, "num_freed": 1 if freed else 0}

    # ================================================================== fixtures
    def load(self, target: str, docs: Iterable[Any], refresh: bool = True) -> int:
        """Store documents without HTTP or per-request work: ``docs`` yields sources, or
        ``(id, source)`` pairs. Mapping rules apply (a failing document raises ESError);
        an existing id raises ValueError. Returns the number stored."""
        n = 0
        dumps = orjson.dumps
        with self.lock:
            idx, ds = self._auto_create(target)
            for item in docs:
                doc_id, source = item if isinstance(item, tuple) else (None, item)
                doc_id = new_doc_id() if doc_id is None else str(doc_id)
                if doc_id in idx.live:
                    raise ValueError(f"document [{doc_id}] already exists in [{idx.name}]")
                raw = exact_bytes(dumps(source))
                if ds is not None and not get_values(source, "@timestamp"):
                    raise es_error(400, self.error_type, "data stream timestamp field "
                                   "[@timestamp] is missing")
                idx.mapping.index_document(source, doc_id, raw)
                version = idx.tombstones.pop(doc_id, 0) + 1
                idx.put(Doc(doc_id, raw, version, idx.next_seq()))
                n += 1
            if refresh:
                idx.refresh()
                self.refreshed.notify_all()
        return n

    # ================================================================== indices
    def get_mapping(self, target: str | None) -> dict[str, Any]:
        with self.lock:
            return {idx.name: {"mappings": idx.mapping.to_dict()}
                    for idx in self.resolve(target)}

    def put_mapping(self, target: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            indices = self.resolve(target, allow_no_indices=False)
            for idx in indices:
                blocks = [b for b in active_blocks(idx.settings, INDEX_BLOCKS)
                          if b.metadata_write]
                if blocks:
                    raise block_error(blocks, idx.name)
            for idx in indices:
                idx.mapping.merge(body)
        return {"acknowledged": True}

    def get_settings(self, target: str | None, flat: bool = False) -> dict[str, Any]:
        with self.lock:
            out = {}
            for idx in self.resolve(target):
                nested = idx.settings_body(self.major)
                out[idx.name] = {"settings": _flat_index(nested) if flat else nested}
            return out

    def put_settings(self, target: str, body: dict[str, Any]) -> dict[str, Any]:
        if set(body) == {"settings"} and isinstance(body["settings"], dict):
            body = body["settings"]
        flat = flatten_settings(body)
        with self.lock:
            indices = self.resolve(target, allow_no_indices=False)
            only_blocks = all(k.startswith("index.blocks.") for k in flat)
            for idx in indices:
                check_index_settings_update(flat, idx.name, idx.uuid)
                blocks = [b for b in active_blocks(idx.settings, INDEX_BLOCKS)
                          if b.metadata_write]
                if blocks and not only_blocks:
                    raise block_error(blocks, idx.name)
            for key in ("index.refresh_interval", "index.search.idle.after"):
                if flat.get(key) is not None:
                    parse_time(flat[key], key)
            for idx in indices:
                for key, value in flat.items():
                    if value is None:
                        idx.settings.pop(key, None)
                    else:
                        idx.settings[key] = value
        return {"acknowledged": True}

    def set_blocks(self, setting: str, on: bool, target: str = "*") -> None:
        """Set or clear one ``index.blocks.*`` setting on every index ``target`` names."""
        with self.lock:
            for idx in self.resolve(target):
                if on:
                    idx.settings[setting] = "true"
                else:
                    idx.settings.pop(setting, None)

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
                flat = flatten_settings(tpl_part["settings"])
                for key in ("index.refresh_interval", "index.search.idle.after"):
                    if flat.get(key) is not None:
                        parse_time(flat[key], key)
                tpl_part["settings"] = nest_settings(flat)
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

    def rollover(self, target: str, dry_run: bool) -> dict[str, Any]:
        """POST /<data stream>/_rollover without conditions: a new write index, made from the
        index template that matches the stream *now* (as in Elasticsearch: a changed or new
        template reaches a stream at its next rollover). Aliases are not implemented."""
        with self.lock:
            ds = self.data_streams.get(target)
            if ds is None:
                raise index_not_found(target)
            tpl = self.find_template(ds.name)
            if tpl is None or tpl[1].get("data_stream") is None:
                raise illegal_argument(f"no matching index template found for data stream "
                                       f"[{ds.name}]")
            old = ds.write_index.name
            if not dry_run:
                ds.template, ds.tpl_body = tpl
                new = self._rollover(ds).name
            else:
                new = f"{old[:-6]}{ds.generation + 1:06d}"
        return {"acknowledged": not dry_run, "shards_acknowledged": not dry_run,
                "old_index": old, "new_index": new, "rolled_over": not dry_run,
                "dry_run": dry_run, "lazy": False, "conditions": {}}

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
        with_mode = self.major >= 8

        def backing(i: Index) -> dict[str, Any]:
            entry: dict[str, Any] = {"index_name": i.name, "index_uuid": i.uuid,
                                     "prefer_ilm": True}
            if policy:
                entry["ilm_policy"] = policy
            entry["managed_by"] = managed
            if with_mode:
                entry["index_mode"] = i.mode
            return entry

        out: dict[str, Any] = {
            "name": ds.name,
            "timestamp_field": {"name": "@timestamp"},
            "indices": [backing(i) for i in ds.indices],
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
        if with_mode:
            out["index_mode"] = ds.write_index.mode
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
        """``{_id: _source}`` (fresh copies) of the latest versions."""
        with self.lock:
            out: dict[str, dict[str, Any]] = {}
            for idx in self.resolve(target):
                for doc in idx.live_docs():
                    out[doc.id] = doc.source
            return out


def _flat_index(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in nested.items():
        if isinstance(v, dict):
            out.update(_flat_index(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


__all__ = ["Cluster", "WriteContext", "refresh_mode"]
