"""`audit-collector setup` and the cluster part of `audit-collector check`.

setup installs, idempotently:

1. the ILM policy ``logs-<dataset>-policy``: hot phase rollover at ``ilm.rollover_max_age`` or
   ``ilm.rollover_max_primary_shard_size``, delete ``ilm.delete_after`` after rollover;
2. the index template ``logs-<dataset>`` for ``logs-<dataset>-*`` with ``data_stream: {}`` at
   priority 200 (above the built-in ``logs`` template, 100 on ``logs-*-*``). It is named
   per dataset, not per namespace: two templates with overlapping patterns and equal
   priority are refused by Elasticsearch, so every namespace shares this one;
3. the data stream ``logs-<dataset>-<namespace>``.

Mappings are generated from `collector.fields.FIELDS` (types and multi-fields as ECS 8.11 defines
them: ``@timestamp`` is ``date``, its nanoseconds are in ``audit_collector.timestamp``)
with ``dynamic: false``: a field the table does not know stays in ``_source`` (so `verify`
can hash it and nobody loses the event) but is not indexed. ``strict`` would reject the
whole document, i.e. turn a collector/template version skew into lost audit events.

``index.mode: standard`` is explicit because on recent Elasticsearch versions ``logs-*-*``
data streams default to the ``logsdb`` mode, whose synthetic ``_source`` reorders and
de-duplicates arrays (argv!) and would make every chain hash unverifiable.

Each installed object carries ``_meta.content_hash`` of the body it was installed from;
"already up to date" means the hash matches, otherwise it is replaced ("updated").
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any, TextIO

import orjson
from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch, NotFoundError

from collector import __version__
from collector.delivery.elasticsearch.client import build_client
from collector.delivery.elasticsearch.settings import ClusterConfigError, ClusterSettings
from collector.fields import FIELDS, multi_fields

TEMPLATE_PRIORITY = 200
KEYWORD_IGNORE_ABOVE = 1024


# --------------------------------------------------------------------------- bodies


def template_name(cfg: ClusterSettings) -> str:
    return f"logs-{cfg.elasticsearch.dataset}"


def policy_name(cfg: ClusterSettings) -> str:
    return f"logs-{cfg.elasticsearch.dataset}-policy"


def field_properties(fields: dict[str, tuple[str, str]] = FIELDS) -> dict[str, Any]:
    """Nested ``properties`` from dotted paths."""
    root: dict[str, Any] = {}
    for path, (mapping_type, _) in sorted(fields.items()):
        *parents, leaf = path.split(".")
        node = root
        for name in parents:
            entry = node.setdefault(name, {"properties": {}})
            if "properties" not in entry:
                raise ValueError(f"fields: {path} nests under the leaf field {name}")
            node = entry["properties"]
        if leaf in node:
            raise ValueError(f"fields: {path} is both an object and a leaf")
        node[leaf] = _leaf_mapping(path, mapping_type)
    return root


def _leaf_mapping(path: str, mapping_type: str) -> dict[str, Any]:
    mapping: dict[str, Any] = {"type": mapping_type}
    if mapping_type == "keyword":
        mapping["ignore_above"] = KEYWORD_IGNORE_ABOVE
    subs = multi_fields(path)
    if subs:
        mapping["fields"] = {name: {"type": sub_type} for name, sub_type in subs}
    return mapping


def _content_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _with_meta(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "_meta": {"managed_by": "audit-collector", "version": __version__,
                              "content_hash": _content_hash(body)}}


def mappings_body() -> dict[str, Any]:
    return {"dynamic": False, "date_detection": False, "properties": field_properties()}


def template_body(cfg: ClusterSettings) -> dict[str, Any]:
    return _with_meta({
        "index_patterns": [f"logs-{cfg.elasticsearch.dataset}-*"],
        "data_stream": {},
        "priority": TEMPLATE_PRIORITY,
        "template": {
            "settings": {"index.lifecycle.name": policy_name(cfg), "index.mode": "standard"},
            "mappings": mappings_body(),
        },
    })


def policy_body(cfg: ClusterSettings) -> dict[str, Any]:
    ilm = cfg.elasticsearch.ilm
    return _with_meta({
        "phases": {
            "hot": {"actions": {"rollover": {
                "max_age": ilm.rollover_max_age,
                "max_primary_shard_size": ilm.rollover_max_primary_shard_size,
            }}},
            "delete": {"min_age": ilm.delete_after, "actions": {"delete": {}}},
        },
    })


# --------------------------------------------------------------------------- setup


def _installed_hash(found: dict[str, Any]) -> str | None:
    meta = found.get("_meta") or {}
    return meta.get("content_hash") if isinstance(meta, dict) else None


def _get_policy(client: Elasticsearch, name: str) -> dict[str, Any] | None:
    try:
        found = client.ilm.get_lifecycle(name=name).body
    except NotFoundError:
        return None
    return found.get(name, {}).get("policy")


def _get_template(client: Elasticsearch, name: str) -> dict[str, Any] | None:
    try:
        found = client.indices.get_index_template(name=name).body
    except NotFoundError:
        return None
    templates = found.get("index_templates") or []
    return templates[0].get("index_template") if templates else None


def _ensure_policy(client: Elasticsearch, cfg: ClusterSettings) -> str:
    name, body = policy_name(cfg), policy_body(cfg)
    found = _get_policy(client, name)
    if found is not None and _installed_hash(found) == body["_meta"]["content_hash"]:
        return "already up to date"
    client.ilm.put_lifecycle(name=name, policy=body)
    return "created" if found is None else "updated"


def _ensure_template(client: Elasticsearch, cfg: ClusterSettings) -> str:
    name, body = template_name(cfg), template_body(cfg)
    found = _get_template(client, name)
    if found is not None and _installed_hash(found) == body["_meta"]["content_hash"]:
        return "already up to date"
    client.indices.put_index_template(name=name, **body)
    return "created" if found is None else "updated"


def _ensure_data_stream(client: Elasticsearch, cfg: ClusterSettings, template_changed: bool) -> str:
    name = cfg.elasticsearch.data_stream
    try:
        client.indices.get_data_stream(name=name)
    except NotFoundError:
        client.indices.create_data_stream(name=name)
        return "created"
    if not template_changed:
        return "already exists"
    # New fields reach the existing backing indices at once; other changes at rollover.
    mappings = mappings_body()
    client.indices.put_mapping(index=name, properties=mappings["properties"], dynamic=False)
    return "already exists; mappings updated"


def setup_cluster(cfg: ClusterSettings, out: TextIO | None = None) -> int:
    """Install policy, template and data stream; one line per step. 0 on success."""
    out = out or sys.stdout
    try:
        client = build_client(cfg)
    except ClusterConfigError as exc:
        print(f"setup: {exc}", file=out)
        return 1
    steps = [
        ("ILM policy", policy_name(cfg), lambda: _ensure_policy(client, cfg)),
        ("index template", template_name(cfg), lambda: _ensure_template(client, cfg)),
    ]
    results: list[str] = []
    try:
        for what, name, step in steps:
            results.append(step())
            print(f"{what} {name}: {results[-1]}", file=out)
        template_changed = results[-1] != "already up to date"
        status = _ensure_data_stream(client, cfg, template_changed)
        print(f"data stream {cfg.elasticsearch.data_stream}: {status}", file=out)
    except (ApiError, TransportError) as exc:
        print(f"setup failed: {error_text(exc)}", file=out)
        return 1
    finally:
        client.close()
    return 0


# --------------------------------------------------------------------------- check


def cluster_version(client: Elasticsearch) -> str:
    info = client.info().body
    return str((info.get("version") or {}).get("number", "unknown"))


def template_state(client: Elasticsearch, cfg: ClusterSettings) -> str:
    """"current", "outdated" (not this collector's) or "missing"."""
    found = _get_template(client, template_name(cfg))
    if found is None:
        return "missing"
    if _installed_hash(found) != template_body(cfg)["_meta"]["content_hash"]:
        return "outdated"
    return "current"


def error_text(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return f"HTTP {exc.meta.status}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
