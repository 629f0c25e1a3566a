"""What audit-collector installs in Kibana: the source of truth of kibana/*.ndjson.

Every field named here must exist in `collector.fields.FIELDS` with a type fitting its use;
`collector.kibana.validate` checks it when the file is generated and in the tests, so a
renamed field fails the build instead of leaving a broken panel.

Objects (ids are stable: `setup --kibana` overwrites them on every install):

* data view ``audit-collector`` on ``logs-audit_collector-*`` (time field ``@timestamp``),
  with formats: identifiers (pids, inodes, sequences) without thousands separators, byte
  counts as bytes, ``date_nanos`` fields with nanoseconds; labels and popularity for the
  fields an analyst starts from;
* saved searches: executions, failed executions, privileged commands, namespace entries,
  interactive bash commands, losses and collector health, sessions (entry leaders);
* Lens: executions over time per host, top users, top executables, losses per host,
  heartbeat silence per host;
* the dashboard ``audit-collector-overview`` with those and three saved-search tables.

Parts that need fields or documents the collector does not write yet are written below
behind a feature name in `PENDING`; while a feature is pending its parts are left out of
the file (and `make kibana` says so). When the fields land, delete the name from
`PENDING` and run `make kibana`: the validation then checks the new parts like the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from collector.fields import FIELDS
from collector.kibana import savedobjects as so

PENDING: frozenset[str] = frozenset()
# The collector's own documents (collector.ecs.lifecycle, which this wing may not import;
# tests/kibana/test_saved_objects.py keeps the two in step).
LIFECYCLE_ACTIONS = ("collector_start", "collector_stop", "heartbeat", "probe_attach_failed",
                     "probe_detached")

DATA_VIEW_ID = "audit-collector"
DEFAULT_INDEX_PATTERN = "logs-audit_collector-*"
DASHBOARD_ID = "audit-collector-overview"

# Long fields shown as identifiers ("4026531836", not "4,026,531,836").
_ID_SUFFIXES = ("pid", ".id", "sequence", ".fd", ".major", ".minor", "session_id")
_ID_PREFIXES = ("audit_collector.namespaces.", "audit_collector.ns.before.",
                "audit_collector.ns.after.")
# Labels and popularity (Discover lists popular fields first) of the fields to start from.
FIELD_LABELS = {
    "host.name": "Host",
    "user.name": "User",
    "user.effective.name": "Effective user",
    "audit_collector.login_user.name": "Login user",
    "process.command_line": "Command line",
    "process.executable": "Executable",
    "audit_collector.bash.line": "Typed line (bash)",
    "audit_collector.session_id": "Audit session",
    "audit_collector.tty.name": "TTY",
    "audit_collector.ns.target.container_id": "Entered container",
    "event.action": "Action",
    "event.outcome": "Outcome",
}


def field_formats() -> dict[str, dict[str, Any]]:
    """Kibana field formats derived from the field types in `collector.fields`."""
    formats: dict[str, dict[str, Any]] = {}
    for name, (mapping_type, _) in FIELDS.items():
        if mapping_type == "date_nanos":
            formats[name] = {"id": "date_nanos"}
        elif mapping_type == "long" and name.endswith("bytes"):
            formats[name] = {"id": "bytes"}
        elif mapping_type == "long" and (name.endswith(_ID_SUFFIXES)
                                         or name.startswith(_ID_PREFIXES)):
            formats[name] = {"id": "number", "params": {"pattern": "0"}}
    return formats


def field_attrs() -> dict[str, dict[str, Any]]:
    popularity = len(FIELD_LABELS)
    return {name: {"customLabel": label, "count": popularity - i}
            for i, (name, label) in enumerate(FIELD_LABELS.items())}


# --------------------------------------------------------------------------- saved searches


def searches(on: frozenset[str]) -> list[dict[str, Any]]:
    def search(key: str, title: str, description: str, query: str,
               columns: Iterable[str]) -> dict[str, Any]:
        return so.saved_search(f"audit-collector-{key}", DATA_VIEW_ID, title, description,
                               query, list(columns))

    process_model = "process_model" in on
    health_actions = ("events_lost", *(LIFECYCLE_ACTIONS if "lifecycle" in on else ()))
    found = [
        search("executions", "Executions by user and host",
               "Every exec (failed ones too): who ran what, where, from which parent.",
               'event.action: "exec"',
               ["host.name", "user.name", "user.effective.name", "process.command_line",
                *(["process.parent.executable"] if process_model else []),
                "process.parent.pid", "event.outcome", "container.id"]),
        search("failed-executions", "Failed executions",
               "execve/execveat calls that failed: what was tried and the errno.",
               'event.action: "exec" and event.outcome: "failure"',
               ["host.name", "user.name", "audit_collector.exec.filename", "error.code",
                "error.message", "process.command_line", "process.parent.pid"]),
        search("privileged-commands", "Privileged commands",
               "Commands run or typed as root, real or effective (setuid transitions: "
               "effective root without real root), with the login user behind them.",
               'event.action: ("exec" or "bash_command") and '
               '(user.id: "0" or user.effective.id: "0")',
               ["host.name", "audit_collector.login_user.name", "user.name", "user.effective.name",
                "process.command_line", "audit_collector.bash.line",
                "audit_collector.tty.name"]),
        search("namespace-entries", "Namespace entries",
               "setns(2): docker exec, nsenter, runc entering a container's namespaces.",
               'event.action: "setns"',
               ["host.name", "audit_collector.login_user.name", "user.name", "process.name",
                "audit_collector.ns.target.container_id", "audit_collector.ns.kinds",
                "audit_collector.ns.changed", "event.outcome", "error.code"]),
        search("bash-commands", "Interactive bash commands",
               "Lines typed into bash, with the login user, audit session and terminal.",
               'event.action: "bash_command"',
               ["host.name", "audit_collector.login_user.name", "user.name",
                "audit_collector.session_id", "audit_collector.tty.name",
                *(["process.entry_leader.entity_id"] if process_model else []),
                "audit_collector.bash.line", "container.id"]),
        search("health", "Losses and collector health",
               "Events the collector could not deliver (ring buffer full, spool policy, "
               "rejected documents) and, with lifecycle documents, its starts, stops and "
               "heartbeats.",
               "event.action: (" + " or ".join(f'"{a}"' for a in health_actions) + ")",
               ["host.name", "event.action", "audit_collector.lost.source",
                "audit_collector.lost.reason", "audit_collector.lost.exec",
                "audit_collector.lost.namespace", "audit_collector.lost.bash",
                "audit_collector.lost.fork", "audit_collector.lost.exit",
                "audit_collector.lost.documents", "audit_collector.lost.first_sequence",
                "audit_collector.lost.last_sequence"]),
    ]
    if process_model:
        found.append(search(
            "sessions", "Sessions (entry leaders)",
            "One row per session: its entry leader (sshd, terminal, container...). Open "
            "Session View on process.entry_leader.entity_id.",
            'event.action: "exec" and process.entry_leader.same_as_process: true',
            ["host.name", "process.entry_leader.entry_meta.type", "user.name",
             "process.entry_leader.executable", "audit_collector.tty.name",
             "process.entry_leader.entity_id"]))
    return found


# --------------------------------------------------------------------------- Lens


def visualizations(on: frozenset[str]) -> list[dict[str, Any]]:
    def lens_id(key: str) -> str:
        return f"audit-collector-lens-{key}"

    found = [
        so.lens_xy(lens_id("executions-over-time"), DATA_VIEW_ID,
                   "Executions over time per host", "Execs per interval, by host.",
                   'event.action: "exec"', "bar_stacked", so.date_histogram(),
                   [so.count("Executions")], so.terms("host.name", label="Host")),
        so.lens_xy(lens_id("top-users"), DATA_VIEW_ID, "Top users",
                   "Users with the most executions.", 'event.action: "exec"',
                   "bar_horizontal", so.terms("user.name", label="User", other_bucket=False),
                   [so.count("Executions")]),
        so.lens_xy(lens_id("top-executables"), DATA_VIEW_ID, "Top executables",
                   "Programs executed most often.",
                   'event.action: "exec" and event.outcome: "success"', "bar_horizontal",
                   so.terms("process.executable", size=15, label="Executable",
                            other_bucket=False),
                   [so.count("Executions")]),
        so.lens_table(lens_id("losses"), DATA_VIEW_ID, "Losses per host",
                      "Events lost per host and cause (each events_lost document counts "
                      "what was lost since the previous one).",
                      'event.action: "events_lost"',
                      [so.terms("host.name", size=100, label="Host", other_bucket=False),
                       so.terms("audit_collector.lost.source", size=5, label="Where",
                                other_bucket=False)],
                      [so.metric("sum", "audit_collector.lost.exec", "Exec"),
                       so.metric("sum", "audit_collector.lost.namespace", "Namespace"),
                       so.metric("sum", "audit_collector.lost.bash", "Bash"),
                       so.metric("sum", "audit_collector.lost.fork", "Fork"),
                       so.metric("sum", "audit_collector.lost.exit", "End"),
                       so.metric("sum", "audit_collector.lost.documents", "Documents"),
                       so.count("Reports")],
                      sort_by="count"),
    ]
    if "lifecycle" in on:
        last_seen = so.metric("max", "@timestamp", "Last heartbeat")
        found.append(so.lens_table(
            lens_id("heartbeat-silence"), DATA_VIEW_ID, "Heartbeat silence per host",
            "Hosts by their last heartbeat, the longest silent first: a collector that "
            "stopped sending (down, or cut off) is at the top.",
            'event.action: "heartbeat"',
            [so.terms("host.name", size=500, order_by=last_seen.key, descending=False,
                      label="Host", other_bucket=False)],
            [last_seen, so.count("Heartbeats")], sort_by=last_seen.key, descending=False))
    return found


def overview(on: frozenset[str]) -> dict[str, Any]:
    def lens(key: str, width: int, height: int = 12) -> so.Panel:
        return so.Panel("lens", f"audit-collector-lens-{key}", width, height)

    def table(key: str, width: int, height: int = 15) -> so.Panel:
        return so.Panel("search", f"audit-collector-{key}", width, height)

    health_row = [lens("losses", 24), lens("heartbeat-silence", 24)] \
        if "lifecycle" in on else [lens("losses", 48)]
    return so.dashboard(DASHBOARD_ID, "Audit collector: overview",
                        "Executions, users, programs, failures, namespace entries, bash "
                        "commands and losses across the fleet.",
                        [[lens("executions-over-time", 48)],
                         [lens("top-users", 24), lens("top-executables", 24)],
                         [table("failed-executions", 24), table("namespace-entries", 24)],
                         [table("bash-commands", 48)],
                         health_row])


# --------------------------------------------------------------------------- all of it


def build_objects(pending: frozenset[str] = PENDING,
                  index_pattern: str = DEFAULT_INDEX_PATTERN) -> list[dict[str, Any]]:
    """The saved objects, referenced ones before those referring to them; each description
    ends with the content hash `setup --kibana` uses to tell an installed set is current."""
    on = frozenset({"process_model", "lifecycle"}) - pending
    view = so.data_view(DATA_VIEW_ID, index_pattern, "audit-collector", "@timestamp",
                        field_formats(), field_attrs())
    objects = [view, *searches(on), *visualizations(on), overview(on)]
    return with_content_hash(objects)


def content_hash(objects: list[dict[str, Any]]) -> str:
    return hashlib.sha256(so.compact(objects).encode()).hexdigest()[:12]


def with_content_hash(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    digest = content_hash(objects)
    for obj in objects:
        attributes = obj["attributes"]
        if "description" in attributes:
            attributes["description"] = f"{attributes['description']} " \
                                        f"[audit-collector content {digest}]"
    return objects
