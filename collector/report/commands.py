"""`report commands`: every exec and bash line run as root (uid or euid 0) or by the given
login users, with setuid transitions (euid != uid) marked, and namespace entries by humans
(a login uid is set): who, what, when, outcome, origin and object of each.

Streamed through a point in time with search_after, sorted by time: one page in memory,
whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from collector.report.coverage import base_query
from collector.report.model import Report
from collector.report.period import Period
from collector.report.source import Source
from collector.report.source import field as get

COMMAND_ACTIONS = ("exec", "bash_command")
NAMESPACE_ACTIONS = ("setns", "unshare", "clone")
COLUMNS = ["time", "host", "login_user", "user", "effective_user", "setuid", "action",
           "outcome", "command", "executable", "tty", "session", "pid", "parent_pid",
           "container", "sequence"]
FIELDS = ["@timestamp", "host.name", "event.action", "event.outcome", "event.sequence",
          "user", "process.pid", "process.parent.pid", "process.command_line",
          "process.executable", "message", "container.id", "audit_collector.bash.line",
          "audit_collector.tty", "audit_collector.session_id", "audit_collector.ns.kinds",
          "audit_collector.ns.target"]
# Who logged in (auid), whatever uid the command ran as.
LOGIN_USER = "audit_collector.login_user"
SORT = [{"@timestamp": "asc"}, {"host.id": "asc"}, {"event.sequence": "asc"}]


def commands_query(period: Period, host: str | None, privileged: bool,
                   users: list[str]) -> dict[str, Any]:
    wanted: list[dict[str, Any]] = []
    commands = {"terms": {"event.action": list(COMMAND_ACTIONS)}}
    if privileged:
        wanted.append({"bool": {"filter": [commands], "should": [
            {"term": {"user.id": "0"}}, {"term": {"user.effective.id": "0"}}],
            "minimum_should_match": 1}})
    if users:
        wanted.append({"bool": {"filter": [commands], "should": [
            {"terms": {f"{LOGIN_USER}.name": users}}, {"terms": {f"{LOGIN_USER}.id": users}}],
            "minimum_should_match": 1}})
    wanted.append({"bool": {"filter": [{"terms": {"event.action": list(NAMESPACE_ACTIONS)}},
                                       {"exists": {"field": f"{LOGIN_USER}.id"}}]}})
    return base_query(period, host, {"bool": {"should": wanted, "minimum_should_match": 1}})


def _name(user: dict[str, Any] | None) -> str | None:
    if not isinstance(user, dict):
        return None
    return user.get("name") or (f"uid {user['id']}" if user.get("id") is not None else None)


def command_row(src: dict[str, Any]) -> dict[str, Any]:
    user = src.get("user") or {}
    effective = user.get("effective") or {}
    action = get(src, "event.action")
    if action == "bash_command":
        command = get(src, "audit_collector.bash.line")
    elif action == "exec":
        command = get(src, "process.command_line")
    else:
        command = src.get("message")
    tty = get(src, "audit_collector.tty.name")
    target = get(src, "audit_collector.ns.target") or {}
    return {
        "time": src.get("@timestamp"), "host": get(src, "host.name"),
        "login_user": _name(get(src, LOGIN_USER)), "user": _name(user),
        "effective_user": _name(effective),
        "setuid": bool(effective) and effective.get("id") != user.get("id"),
        "action": action, "outcome": get(src, "event.outcome"), "command": command,
        "executable": get(src, "process.executable"), "tty": tty,
        "session": get(src, "audit_collector.session_id"), "pid": get(src, "process.pid"),
        "parent_pid": get(src, "process.parent.pid"),
        "container": get(src, "container.id") or target.get("container_id"),
        "sequence": get(src, "event.sequence"),
    }


def commands_report(source: Source, period: Period, host: str | None, privileged: bool,
                    users: list[str]) -> Report:
    report = Report("commands", "Privileged and attributed commands", COLUMNS, iter(()))
    who = []
    if privileged:
        who.append("uid or euid 0")
    if users:
        who.append("login user " + ", ".join(users))
    report.header.append(("selection", f"exec and bash lines by {' or '.join(who)}; "
                          "namespace entries with a login user; setuid = euid differs "
                          "from uid"))
    report.rows = _rows(source, commands_query(period, host, privileged, users), report)
    return report


def _rows(source: Source, query: dict[str, Any], report: Report
          ) -> Iterator[dict[str, Any]]:
    totals = report.totals
    totals.update(rows=0, setuid=0, failed=0, hosts=0)
    hosts: set[str] = set()
    for hit in source.stream(query, SORT, FIELDS):
        row = command_row(hit["_source"])
        totals["rows"] += 1
        totals["setuid"] += 1 if row["setuid"] else 0
        totals["failed"] += 1 if row["outcome"] == "failure" else 0
        if len(hosts) < 100_000:  # a count, not a list kept for the output
            hosts.add(str(row["host"]))
        totals["hosts"] = len(hosts)
        yield row
    if totals["rows"] == 0:
        report.notes.append("no matching command in the period (either none was run, or "
                            "nothing was captured: see `report coverage` for the hosts)")
