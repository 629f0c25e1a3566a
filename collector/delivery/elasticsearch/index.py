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

The guard (`stream_guard`, used by the shipper and by `check` through `check_stream`): the
shipper refuses a data stream that was not built from this template or whose write index
is not in ``index.mode: standard`` (e.g. created by Elasticsearch 9's built-in ``logs``
template before `setup` ran), and, while the stream does not exist yet, refuses to let the
first bulk request create it unless this template is installed. Reading the stream needs
``view_index_metadata`` on it; without that privilege the verdict is "unverified".
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elasticsearch import ApiError, AuthorizationException, Elasticsearch, NotFoundError

from collector import __version__
from collector.delivery.elasticsearch.client import build_client, display_urls
from collector.delivery.elasticsearch.outcomes import describe, transport_reason
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
        found = client.indices.get_data_stream(name=name).body.get("data_streams") or []
    except NotFoundError:
        client.indices.create_data_stream(name=name)
        return "created"
    stream = found[0] if found else {}
    foreign, mode = stream.get("template"), stream.get("index_mode")
    if foreign is not None and foreign != template_name(cfg):
        # Built from another template (e.g. Elasticsearch's own logs-*-*, when an older
        # collector shipped before any setup): only a new write index takes ours.
        return _roll_over(client, name, f"it was built from index template {foreign!r}")
    if mode not in (None, "standard"):
        return _roll_over(client, name, f"its write index is in index.mode {mode}")
    if not template_changed:
        return "already exists"
    properties = mappings_body()["properties"]
    backing = (stream.get("indices") or [{}])[-1].get("index_name")
    changed = _changed_types(client, backing or name, properties)
    if changed:
        # A field's type cannot change in place (an upgrade from a collector that mapped
        # @timestamp as date_nanos): the new write index gets the template's mappings.
        return _roll_over(client, name, f"the type of {', '.join(changed[:3])} changed")
    # New fields reach the existing write index at once.
    client.indices.put_mapping(index=name, properties=properties, dynamic=False)
    return "already exists; mappings updated"


def _roll_over(client: Elasticsearch, name: str, why: str) -> str:
    done = client.indices.rollover(alias=name).body
    return (f"already exists; {why}: rolled over to {done.get('new_index')} (earlier "
            "backing indices keep their mappings)")


def _changed_types(client: Elasticsearch, write_index: str,
                   properties: dict[str, Any]) -> list[str]:
    """Fields whose type in the stream's write index differs from the template's."""
    found = client.indices.get_mapping(index=write_index).body
    if not found:
        return []
    mappings = next(iter(found.values())).get("mappings") or {}
    existing = _leaf_types(mappings.get("properties") or {})
    wanted = _leaf_types(properties)
    return sorted(path for path, type_ in wanted.items()
                  if path in existing and existing[path] != type_)


def _leaf_types(properties: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            out.update(_leaf_types(spec["properties"], f"{path}."))
        else:
            out[path] = str(spec.get("type", "object"))
    return out


def setup_cluster(cfg: ClusterSettings, out: TextIO | None = None,
                  err: TextIO | None = None) -> int:
    """Install policy, template and data stream; one line per step on `out`, a failure in
    one line on `err` (stderr). 0 on success."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        client = build_client(cfg)
    except ClusterConfigError as exc:
        print(f"setup: {exc}", file=err)
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
        # A stream made before setup (e.g. logsdb by Elasticsearch 9's built-in template)
        # takes the new mappings but stays unusable: say so here, not first in the agent.
        guard = stream_guard(client, cfg)
        if not guard.ok:
            print(f"setup incomplete: {guard.reason}", file=err)
            return 1
    except (ApiError, TransportError) as exc:
        print(f"setup failed: {error_text(exc, cfg)}", file=err)
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


def error_text(exc: Exception, cfg: ClusterSettings | None = None) -> str:
    """One line: the HTTP status and error, or which URL could not be reached and why (the
    URLs without credentials)."""
    if isinstance(exc, ApiError):
        return describe(exc)
    where = ", ".join(display_urls(cfg)) if cfg is not None else "Elasticsearch"
    if isinstance(exc, ConnectionTimeout):
        return f"no answer from {where} in time ({transport_reason(exc)})"
    if isinstance(exc, TransportConnectionError):
        return f"cannot connect to {where}: {transport_reason(exc)}"
    return describe(exc)


# --------------------------------------------------------------------------- guard


@dataclass(frozen=True)
class GuardResult:
    ok: bool  # documents may be shipped
    reason: str  # what was found, or why shipping is refused
    unverified: bool = False  # could not look (no privilege): shipping goes on, blind
    stream_exists: bool = True

    @property
    def label(self) -> str:
        """For /health: "ok", "unverified: ..." or "blocked: ..."."""
        if not self.ok:
            return f"blocked: {self.reason}"
        return f"unverified: {self.reason}" if self.unverified else "ok"


LOGSDB_HARM = "whose synthetic _source reorders arrays and breaks the hash chain"


def stream_guard(client: Elasticsearch, cfg: ClusterSettings) -> GuardResult:
    """May documents be shipped into the configured data stream? Raises ApiError (other
    than 403/404) and TransportError: the caller retries."""
    name, ours = cfg.elasticsearch.data_stream, template_name(cfg)
    try:
        streams = client.indices.get_data_stream(name=name).body.get("data_streams") or []
    except NotFoundError:
        streams = []
    except AuthorizationException as exc:
        return _unverified(f"cannot read data stream {name} ({describe(exc)[:60]})", cfg)
    if streams:
        return _judge_stream(streams[0], name, ours)
    try:
        template = _get_template(client, ours)
    except AuthorizationException as exc:
        return _unverified(f"data stream {name} does not exist and index template {ours} "
                           f"cannot be read ({describe(exc)[:60]})", cfg)
    if template is None:
        return GuardResult(False, f"index template {ours} is not installed, so the data "
                           f"stream {name} would be created from another template (on "
                           f"Elasticsearch 9 in logsdb mode, {LOGSDB_HARM}); run "
                           "audit-collector setup", stream_exists=False)
    mode = _template_mode(template)
    if mode != "standard":
        return GuardResult(False, f"index template {ours} sets index.mode {mode}, "
                           f"{LOGSDB_HARM}; run audit-collector setup", stream_exists=False)
    return GuardResult(True, f"data stream {name} does not exist yet; index template {ours} "
                       "(index.mode standard) will create it", stream_exists=False)


def _judge_stream(stream: dict[str, Any], name: str, ours: str) -> GuardResult:
    template = stream.get("template")
    mode = stream.get("index_mode")  # Elasticsearch 8.16+; older ones: the template decides
    problems = []
    if template != ours:
        problems.append(f"uses index template {template!r}, not the collector's {ours}")
    if mode not in (None, "standard"):
        problems.append(f"is in index.mode {mode}, {LOGSDB_HARM}")
    if problems:
        return GuardResult(False, f"data stream {name} {' and '.join(problems)} (run "
                           f"audit-collector setup, then roll the stream over: POST "
                           f"{name}/_rollover)")
    return GuardResult(True, f"data stream {name}: index template {ours}, index.mode "
                       f"{mode or 'standard'}")


def _template_mode(template: dict[str, Any]) -> str:
    settings = (template.get("template") or {}).get("settings") or {}
    mode = settings.get("index.mode") or (settings.get("index") or {}).get("mode")
    return str(mode or "unset (the cluster's default)")


def _unverified(what: str, cfg: ClusterSettings) -> GuardResult:
    return GuardResult(True, f"{what}: grant the collector's API key view_index_metadata on "
                       f"logs-{cfg.elasticsearch.dataset}-* so that it can check the stream's "
                       "template and index.mode", unverified=True)


def check_stream(client: Elasticsearch, cfg: ClusterSettings) -> tuple[bool, str]:
    """For `check`: (ok, detail) of the guard; unverified counts as not ok."""
    try:
        result = stream_guard(client, cfg)
    except (ApiError, TransportError) as exc:
        return False, error_text(exc, cfg)
    if result.unverified:
        return False, f"unverified: {result.reason}"
    return result.ok, result.reason
