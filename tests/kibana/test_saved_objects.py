"""The committed saved objects: generated from collector/kibana/content.py, valid the way
Kibana's import reads them, every field in collector/fields.py with a fitting type; and
each check of the validation shown to fail on an object that breaks it."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collector.fields import FIELDS
from collector.kibana import content, generate
from collector.kibana.validate import LATEST_8_14, validate

NDJSON = Path(__file__).resolve().parents[2] / "kibana" / "audit-collector.ndjson"
PROCESS_MODEL_FIELDS = {"process.parent.executable", "process.entry_leader.entity_id",
                        "process.entry_leader.same_as_process",
                        "process.entry_leader.entry_meta.type",
                        "process.entry_leader.executable"}


def committed() -> list[dict[str, Any]]:
    return [json.loads(line) for line in NDJSON.read_text().splitlines()]


def test_the_committed_file_is_what_the_content_generates() -> None:
    assert NDJSON.read_text() == generate.generated(), "run `make kibana`"
    assert generate.main(["--check", "--out", str(NDJSON)]) == 0


def test_the_committed_file_is_valid_and_holds_the_whole_set() -> None:
    report = validate(NDJSON.read_text())
    assert report.problems == []
    assert [(o["type"], o["id"]) for o in report.objects] == [
        ("index-pattern", "audit-collector"),
        ("search", "audit-collector-executions"),
        ("search", "audit-collector-failed-executions"),
        ("search", "audit-collector-privileged-commands"),
        ("search", "audit-collector-namespace-entries"),
        ("search", "audit-collector-bash-commands"),
        ("search", "audit-collector-health"),
        ("search", "audit-collector-sessions"),
        ("lens", "audit-collector-lens-executions-over-time"),
        ("lens", "audit-collector-lens-top-users"),
        ("lens", "audit-collector-lens-top-executables"),
        ("lens", "audit-collector-lens-losses"),
        ("dashboard", "audit-collector-overview"),
    ]
    assert all(o["typeMigrationVersion"] == LATEST_8_14[o["type"]] for o in report.objects)
    dashboard = report.objects[-1]
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    assert [p["type"] for p in panels] == ["lens", "lens", "lens", "search", "search",
                                           "search", "lens"]
    view = report.objects[0]["attributes"]
    assert view["title"] == "logs-audit_collector-*" and view["timeFieldName"] == "@timestamp"
    formats = json.loads(view["fieldFormatMap"])
    assert formats["audit_collector.namespaces.mnt"] == {"id": "number",
                                                         "params": {"pattern": "0"}}
    assert formats["audit_collector.bash.line_bytes"] == {"id": "bytes"}
    assert "@timestamp" not in formats  # a date: Kibana's default format
    assert formats["audit_collector.timestamp"] == {"id": "date_nanos"}


def test_a_renamed_field_fails_validation_everywhere_it_is_used() -> None:
    renamed = {("host.hostname_of_event" if k == "host.name" else k): v
               for k, v in FIELDS.items()}
    problems = validate(NDJSON.read_text(), renamed).problems
    users = {p.split("(")[1].split(")")[0] for p in problems}
    assert all("host.name is not in collector/fields.py" in p for p in problems)
    assert users == {
        "index-pattern audit-collector", "search audit-collector-executions",
        "search audit-collector-failed-executions",
        "search audit-collector-privileged-commands",
        "search audit-collector-namespace-entries", "search audit-collector-bash-commands",
        "search audit-collector-health", "search audit-collector-sessions",
        "lens audit-collector-lens-executions-over-time",
        "lens audit-collector-lens-losses"}


def test_a_field_with_another_type_fails_where_the_type_matters() -> None:
    retyped = {**FIELDS, "process.executable": ("wildcard", "")}
    assert validate(NDJSON.read_text(), retyped).problems == [
        "line 11 (lens audit-collector-lens-top-executables): Lens column 'Executable': field "
        "process.executable is wildcard, which does not fit terms (needs boolean/byte/double/"
        "float/integer/ip/keyword/long/scaled_float/short/unsigned_long)"]


def test_the_process_model_parts_use_fields_the_collector_writes() -> None:
    assert "process_model" not in content.PENDING
    assert set(FIELDS) >= PROCESS_MODEL_FIELDS
    everything = content.build_objects(pending=frozenset())
    assert validate(generate.to_ndjson(everything)).problems == []


def test_the_lifecycle_parts_are_ready_for_heartbeat_documents() -> None:
    objects = content.build_objects(pending=frozenset())
    assert validate(generate.to_ndjson(objects)).problems == []
    by_id = {o["id"]: o for o in objects}
    heartbeat = by_id["audit-collector-lens-heartbeat-silence"]["attributes"]["state"]
    assert heartbeat["query"]["query"] == 'event.action: "heartbeat"'
    health = json.loads(by_id["audit-collector-health"]["attributes"][
        "kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert health["query"]["query"] == \
        'event.action: ("events_lost" or "start" or "stop" or "heartbeat")'
    panels = json.loads(by_id["audit-collector-overview"]["attributes"]["panelsJSON"])
    assert [p["gridData"]["w"] for p in panels[-2:]] == [24, 24]


def test_a_custom_dataset_changes_only_the_data_view_title_and_the_content_hash() -> None:
    default = content.build_objects()
    custom = content.build_objects(index_pattern="logs-audit_prod-*")
    assert custom[0]["attributes"]["title"] == "logs-audit_prod-*"
    assert validate(generate.to_ndjson(custom)).problems == []
    assert [o["attributes"].get("description", "")[:-14] for o in default] == \
        [o["attributes"].get("description", "")[:-14] for o in custom]
    assert default[1]["attributes"]["description"] != custom[1]["attributes"]["description"]


# --------------------------------------------------------------------------- each check


def by_id(objects: list[dict[str, Any]], object_id: str) -> dict[str, Any]:
    return next(o for o in objects if o["id"] == object_id)


def edit_embedded(obj: dict[str, Any], path: str, change: Callable[[Any], Any]) -> None:
    *parents, leaf = path.split(".")
    node = obj["attributes"]
    for part in parents:
        node = node[part]
    node[leaf] = json.dumps(change(json.loads(node[leaf])))


def set_search_query(objects: list[dict[str, Any]], query: str) -> None:
    def change(source: dict[str, Any]) -> dict[str, Any]:
        source["query"]["query"] = query
        return source
    edit_embedded(by_id(objects, "audit-collector-executions"),
                  "kibanaSavedObjectMeta.searchSourceJSON", change)


def lens_column(objects: list[dict[str, Any]], lens: str, label: str) -> dict[str, Any]:
    state = by_id(objects, f"audit-collector-lens-{lens}")["attributes"]["state"]
    (layer,) = state["datasourceStates"]["formBased"]["layers"].values()
    return next(c for c in layer["columns"].values() if c["label"] == label)


def dashboard_panels(objects: list[dict[str, Any]], change: Callable[[list[Any]], Any]
                     ) -> None:
    edit_embedded(by_id(objects, "audit-collector-overview"), "panelsJSON", change)


def _first_panel_moved(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    panels[1]["gridData"]["y"] = 0
    return panels


def _panel_ref_renamed(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    panels[0]["panelRefName"] = "panel_x"
    return panels


BREAKAGES: dict[str, tuple[Callable[[list[dict[str, Any]]], Any], str]] = {
    "duplicate": (lambda objs: objs.append(copy.deepcopy(objs[1])),
                  "search:audit-collector-executions appears twice"),
    "dangling reference": (
        lambda objs: objs[1]["references"][0].update(id="nope"),
        "reference kibanaSavedObjectMeta.searchSourceJSON.index -> index-pattern:nope is "
        "not in the file"),
    "not semver": (lambda objs: objs[1].update(typeMigrationVersion="8.0"),
                   "typeMigrationVersion '8.0' is not a semver version"),
    "type version of 9.x": (
        lambda objs: objs[1].update(typeMigrationVersion="10.5.0"),
        "typeMigrationVersion 10.5.0 is newer than Kibana 8.14.0's search (8.0.0)"),
    "core version too new": (lambda objs: objs[0].update(coreMigrationVersion="8.15.0"),
                             "coreMigrationVersion 8.15.0 is newer than Kibana 8.14.0"),
    "type not importable": (lambda objs: objs[1].update(type="config"),
                            "type 'config' is not one this file may hold"),
    "searchSourceJSON broken": (
        lambda objs: objs[1]["attributes"]["kibanaSavedObjectMeta"].update(
            searchSourceJSON="{"), "searchSourceJSON does not parse"),
    "index ref name": (
        lambda objs: objs[1]["references"][0].update(name="other"),
        "searchSourceJSON.indexRefName names no index-pattern reference"),
    "query not KQL we know": (lambda objs: set_search_query(objs, "curl"),
                              "free text is not supported"),
    "query on a missing field": (
        lambda objs: set_search_query(objs, "process.nam: x"),
        "searchSourceJSON query: field process.nam is not in collector/fields.py"),
    "wildcard on a long": (lambda objs: set_search_query(objs, "process.pid: 1*"),
                           "process.pid is long, which does not fit kql wildcard"),
    "range on a keyword": (lambda objs: set_search_query(objs, "host.name > a"),
                           "host.name is keyword, which does not fit kql range"),
    "text value for a number": (lambda objs: set_search_query(objs, "process.pid: init"),
                                "process.pid is long; 'init' is not a number"),
    "column missing": (lambda objs: objs[1]["attributes"]["columns"].append("proc.name"),
                       "columns: field proc.name is not in collector/fields.py"),
    "sort on text": (lambda objs: objs[1]["attributes"].update(sort=[["message", "desc"]]),
                     "field message is match_only_text, which does not fit sort"),
    "terms on text": (lambda objs: lens_column(objs, "top-users", "User").update(
        sourceField="message"), "field message is match_only_text, which does not fit terms"),
    "histogram on keyword": (
        lambda objs: lens_column(objs, "executions-over-time", "@timestamp").update(
            sourceField="host.name"), "host.name is keyword, which does not fit date_histogram"),
    "sum on keyword": (lambda objs: lens_column(objs, "losses", "Exec").update(
        sourceField="audit_collector.lost.source"), "does not fit sum"),
    "order by a missing column": (
        lambda objs: lens_column(objs, "top-users", "User")["params"]["orderBy"].update(
            columnId="x"), "orders by a column the layer does not have"),
    "layer without reference": (
        lambda objs: by_id(objs, "audit-collector-lens-top-users")["references"].clear(),
        "has no index-pattern reference"),
    "accessor without column": (
        lambda objs: by_id(objs, "audit-collector-lens-top-users")["attributes"]["state"][
            "visualization"]["layers"][0].update(xAccessor="x"),
        "the visualization shows column 'x', which no layer has"),
    "format on the wrong type": (
        lambda objs: edit_embedded(objs[0], "fieldFormatMap",
                                   lambda m: {**m, "host.name": {"id": "bytes"}}),
        "host.name is keyword, which does not fit format bytes"),
    "time field not a date": (lambda objs: objs[0]["attributes"].update(
        timeFieldName="host.name"), "host.name is keyword, which does not fit time field"),
    "panel reference": (lambda objs: dashboard_panels(objs, _panel_ref_renamed),
                        "panelRefName 'panel_x' has no lens reference"),
    "overlapping panels": (lambda objs: dashboard_panels(objs, _first_panel_moved),
                           "overlaps another panel"),
    "panelsJSON broken": (
        lambda objs: by_id(objs, "audit-collector-overview")["attributes"].update(
            panelsJSON="[{"), "panelsJSON does not parse"),
}


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_each_check_finds_what_breaks_it(name: str) -> None:
    objects = committed()
    breakage, expected = BREAKAGES[name]
    breakage(objects)
    problems = validate(generate.to_ndjson(objects)).problems
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(("text", "expected"), [
    ('{"type": "search"\n', "line 1: not JSON"),
    ("[1]\n", "line 1: not a JSON object"),
    ('{"type": "search", "id": "a", "attributes": {}}\n',
     "line 1: missing or empty: references"),
    ('{"type": "", "id": "a", "attributes": {}, "references": []}\n',
     "line 1: missing or empty: type/id"),
])
def test_lines_kibana_could_not_read_are_found(text: str, expected: str) -> None:
    problems = validate(text).problems
    assert any(p.startswith(expected) for p in problems), problems


def test_the_export_summary_line_and_blank_lines_are_skipped() -> None:
    count = len(NDJSON.read_text().splitlines())
    summary = json.dumps({"exportedCount": count, "missingRefCount": 0,
                          "missingReferences": []})
    report = validate("\n" + NDJSON.read_text() + "\n" + summary + "\n")
    assert report.problems == [] and len(report.objects) == count
