"""Checks a saved-objects NDJSON file the way Kibana's import reads it, before migrations,
plus what would leave a broken panel: no Kibana needed.

Kibana's import (``importSavedObjectsFromStream``): one JSON object per line (blank lines
and the export summary skipped); each with ``type``, ``id``, ``attributes``,
``references``; ``type:id`` unique in the file; an importable type; every reference found
(here: inside the file, since the file must stand alone); migration versions Kibana can
read: valid semver, ``coreMigrationVersion`` not above the Kibana version and
``typeMigrationVersion`` not above the type's latest version, or Kibana refuses the object
as one from a newer Kibana. We hold these against Kibana 8.14, the oldest supported.

Beyond the import: every embedded JSON string parses (``searchSourceJSON``,
``panelsJSON``, ``optionsJSON``, the data view's maps); names inside them resolve
(``indexRefName``, ``panelRefName``, Lens layers and column ids); every KQL query is
understood; and every field any object names exists in `collector.fields` with a type that
fits its use: terms on aggregatable fields, date histograms and the time field on dates,
sums on numbers, wildcards on keyword or text, sorting on sortable fields, formats on the
types they format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.fields import FIELDS
from collector.kibana import kql
from collector.kibana.savedobjects import GRID_COLUMNS, RECORDS

KIBANA_VERSION = "8.14.0"
# The latest typeMigrationVersion of each type Kibana 8.14 knows, as far as we could
# establish it: dashboard, lens and index-pattern from a Kibana 8.14.0 export; search from
# Kibana's saved-search migrations (its legacy migrations end at 8.0.0; 8.14 itself is at
# a later model version, which we neither use nor claim).
LATEST_8_14 = {"index-pattern": "8.0.0", "search": "8.0.0", "lens": "8.9.0",
               "dashboard": "10.2.0"}
_SEMVER_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")

NUMERIC = frozenset({"long", "integer", "short", "byte", "double", "float", "scaled_float",
                     "unsigned_long"})
DATES = kql.DATE_TYPES
AGGREGATABLE = frozenset({"keyword", "boolean", "ip", *NUMERIC, *DATES})
STRINGS = frozenset({"keyword", "wildcard", "text", "match_only_text"})
# Which field types each use accepts.
FITS: dict[str, frozenset[str]] = {
    "time field": DATES,
    "sort": AGGREGATABLE,
    "terms": AGGREGATABLE - DATES,
    "date_histogram": DATES,
    "sum": NUMERIC, "average": NUMERIC, "median": NUMERIC,
    "min": NUMERIC | DATES, "max": NUMERIC | DATES,
    "unique_count": AGGREGATABLE,
    "kql wildcard": STRINGS,
    "kql range": NUMERIC | DATES,
    "format number": NUMERIC, "format bytes": NUMERIC, "format percent": NUMERIC,
    "format date": DATES, "format date_nanos": frozenset({"date_nanos"}),
    "format string": STRINGS, "format url": STRINGS,
}


@dataclass
class Report:
    """Problems found, each naming its line, object and what is wrong."""

    problems: list[str] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list)
    # (type:id, field) for every field an object uses: the closing list of the issue.
    uses: dict[str, set[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate(text: str, fields: Mapping[str, tuple[str, str]] = FIELDS) -> Report:
    report = Report()
    types = {name: mapping_type for name, (mapping_type, _) in fields.items()}
    located = list(_objects(text, report))
    report.objects = [obj for _, obj in located]
    keys = {(obj["type"], obj["id"]) for obj in report.objects}
    seen: set[tuple[str, str]] = set()
    for line, obj in located:
        where = f"line {line} ({obj['type']} {obj['id']})"
        key = (obj["type"], obj["id"])
        if key in seen:
            report.problems.append(f"{where}: {obj['type']}:{obj['id']} appears twice")
        seen.add(key)
        checker = _Checker(obj, where, types, keys, report)
        checker.run()
    return report


def _objects(text: str, report: Report) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            report.problems.append(f"line {number}: not JSON: {exc.msg}")
            continue
        if not isinstance(obj, dict):
            report.problems.append(f"line {number}: not a JSON object")
            continue
        if "exportedCount" in obj and "type" not in obj:
            continue  # an export's summary line
        missing = [k for k, t in (("type", str), ("id", str), ("attributes", dict),
                                  ("references", list)) if not isinstance(obj.get(k), t)]
        if missing or not obj["type"] or not obj["id"]:
            report.problems.append(f"line {number}: missing or empty: "
                                   f"{', '.join(missing) or 'type/id'}")
            continue
        yield number, obj


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


class _Checker:
    """The checks of one object; problems go to the report."""

    def __init__(self, obj: dict[str, Any], where: str, types: Mapping[str, str],
                 keys: set[tuple[str, str]], report: Report) -> None:
        self.obj = obj
        self.attributes: dict[str, Any] = obj["attributes"]
        self.where = where
        self.types = types
        self.keys = keys
        self.report = report
        self.ref_names = {r.get("name"): r for r in obj["references"] if isinstance(r, dict)}

    def problem(self, text: str) -> None:
        self.report.problems.append(f"{self.where}: {text}")

    def run(self) -> None:
        self.check_versions()
        self.check_references()
        handler = {"index-pattern": self.check_data_view, "search": self.check_search,
                   "lens": self.check_lens, "dashboard": self.check_dashboard}.get(
            self.obj["type"])
        if handler is None:
            self.problem(f"type {self.obj['type']!r} is not one this file may hold "
                         f"({', '.join(sorted(LATEST_8_14))})")
            return
        if not isinstance(self.attributes.get("title"), str) or not self.attributes["title"]:
            self.problem("attributes.title is missing")
        handler()

    # ---------------------------------------------------------------- import rules
    def check_versions(self) -> None:
        core = self.obj.get("coreMigrationVersion")
        typ = self.obj.get("typeMigrationVersion")
        for name, value in (("coreMigrationVersion", core), ("typeMigrationVersion", typ)):
            if not isinstance(value, str) or not _SEMVER_RE.match(value):
                self.problem(f"{name} {value!r} is not a semver version")
                return
        if version_tuple(core) > version_tuple(KIBANA_VERSION):
            self.problem(f"coreMigrationVersion {core} is newer than Kibana {KIBANA_VERSION}")
        latest = LATEST_8_14.get(self.obj["type"])
        if latest and version_tuple(typ) > version_tuple(latest):
            self.problem(f"typeMigrationVersion {typ} is newer than Kibana "
                         f"{KIBANA_VERSION}'s {self.obj['type']} ({latest})")

    def check_references(self) -> None:
        names = [r.get("name") for r in self.obj["references"] if isinstance(r, dict)]
        for ref in self.obj["references"]:
            if not isinstance(ref, dict) or not all(
                    isinstance(ref.get(k), str) and ref[k] for k in ("name", "type", "id")):
                self.problem(f"reference {ref!r} needs name, type and id")
            elif (ref["type"], ref["id"]) not in self.keys:
                self.problem(f"reference {ref['name']} -> {ref['type']}:{ref['id']} is not "
                             "in the file")
        if len(names) != len(set(names)):
            self.problem("two references have the same name")

    def embedded(self, path: str, expected: type) -> Any:
        """The JSON a string attribute holds (``a.b`` paths), or None with a problem."""
        node: Any = self.attributes
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, str):
            self.problem(f"attributes.{path} is not a JSON string")
            return None
        try:
            value = json.loads(node)
        except json.JSONDecodeError as exc:
            self.problem(f"attributes.{path} does not parse: {exc.msg}")
            return None
        if not isinstance(value, expected):
            self.problem(f"attributes.{path} is not a JSON {expected.__name__}")
            return None
        return value

    # ---------------------------------------------------------------- fields
    def use(self, name: Any, how: str, context: str) -> None:
        """The object uses field ``name`` as ``how`` (a key of FITS, or "show"/"kql")."""
        if not isinstance(name, str):
            self.problem(f"{context}: field {name!r} is not a name")
            return
        self.report.uses.setdefault(f"{self.obj['type']}:{self.obj['id']}", set()).add(name)
        field_type = self.types.get(name)
        if field_type is None:
            self.problem(f"{context}: field {name} is not in collector/fields.py")
        elif how in FITS and field_type not in FITS[how]:
            self.problem(f"{context}: field {name} is {field_type}, which does not fit "
                         f"{how} (needs {'/'.join(sorted(FITS[how]))})")

    def use_query(self, query: Any, context: str) -> None:
        if not isinstance(query, dict) or query.get("language") != "kuery" \
                or not isinstance(query.get("query"), str):
            self.problem(f"{context}: the query must be KQL text ({query!r})")
            return
        try:
            uses = kql.parse(query["query"]).uses()
        except kql.KqlError as exc:
            self.problem(f"{context}: {exc}")
            return
        for use in uses:
            self.use_kql(use, context)

    def use_kql(self, use: kql.Use, context: str) -> None:
        how = {"wildcard": "kql wildcard", "range": "kql range"}.get(use.kind, "kql")
        self.use(use.field, how, f"{context} query")
        field_type = self.types.get(use.field)
        if use.kind in ("match", "phrase") and field_type in NUMERIC and not _numeric(use.value):
            self.problem(f"{context} query: {use.field} is {field_type}; {use.value!r} is "
                         "not a number")
        if use.kind in ("match", "phrase") and field_type == "boolean" \
                and use.value not in (True, False, "true", "false"):
            self.problem(f"{context} query: {use.field} is boolean; {use.value!r} is not")

    # ---------------------------------------------------------------- data view
    def check_data_view(self) -> None:
        self.use(self.attributes.get("timeFieldName"), "time field", "timeFieldName")
        formats = self.embedded("fieldFormatMap", dict) or {}
        for name, fmt in formats.items():
            fmt_id = fmt.get("id") if isinstance(fmt, dict) else None
            self.use(name, f"format {fmt_id}", f"fieldFormatMap[{name}]")
            if f"format {fmt_id}" not in FITS:
                self.problem(f"fieldFormatMap[{name}]: unknown format {fmt_id!r}")
        for name in self.embedded("fieldAttrs", dict) or {}:
            self.use(name, "show", f"fieldAttrs[{name}]")
        for path, kind in (("runtimeFieldMap", dict), ("sourceFilters", list),
                           ("fields", list)):
            self.embedded(path, kind)

    # ---------------------------------------------------------------- saved search
    def check_search(self) -> None:
        source = self.embedded("kibanaSavedObjectMeta.searchSourceJSON", dict)
        if source is not None:
            ref = self.ref_names.get(source.get("indexRefName"))
            if ref is None or ref.get("type") != "index-pattern":
                self.problem("searchSourceJSON.indexRefName names no index-pattern reference")
            self.use_query(source.get("query"), "searchSourceJSON")
        columns = self.attributes.get("columns")
        if not isinstance(columns, list) or not columns:
            self.problem("attributes.columns must list the columns")
        for name in columns or []:
            self.use(name, "show", "columns")
        for entry in self.attributes.get("sort") or []:
            if not (isinstance(entry, list) and len(entry) == 2 and entry[1] in ("asc", "desc")):
                self.problem(f"sort entry {entry!r} is not [field, asc|desc]")
                continue
            self.use(entry[0], "sort", "sort")

    # ---------------------------------------------------------------- Lens
    def check_lens(self) -> None:
        state = self.attributes.get("state")
        if not isinstance(state, dict):
            self.problem("attributes.state (the Lens state) is not an object")
            return
        self.use_query(state.get("query"), "Lens")
        layers = ((state.get("datasourceStates") or {}).get("formBased") or {}).get("layers")
        if not isinstance(layers, dict) or not layers:
            self.problem("Lens state has no formBased layers")
            return
        column_ids: set[str] = set()
        for layer_id, layer in layers.items():
            ref = self.ref_names.get(f"indexpattern-datasource-layer-{layer_id}")
            if ref is None or ref.get("type") != "index-pattern":
                self.problem(f"Lens layer {layer_id} has no index-pattern reference")
            column_ids |= self.check_layer(layer_id, layer)
        for accessor in _accessors(state.get("visualization"), self.attributes.get(
                "visualizationType")):
            if accessor not in column_ids:
                self.problem(f"the visualization shows column {accessor!r}, which no layer "
                             "has")

    def check_layer(self, layer_id: str, layer: Any) -> set[str]:
        columns = layer.get("columns") if isinstance(layer, dict) else None
        if not isinstance(columns, dict) or not columns:
            self.problem(f"Lens layer {layer_id} has no columns")
            return set()
        if sorted(layer.get("columnOrder") or []) != sorted(columns):
            self.problem(f"Lens layer {layer_id}: columnOrder does not list its columns")
        for column_id, column in columns.items():
            operation = column.get("operationType")
            source = column.get("sourceField")
            context = f"Lens column {column.get('label', column_id)!r}"
            if operation == "count":
                if source != RECORDS:
                    self.use(source, "show", context)
            elif operation in FITS:
                self.use(source, operation, context)
            else:
                self.problem(f"{context}: operation {operation!r} is not one this file uses")
            order = ((column.get("params") or {}).get("orderBy") or {})
            if order.get("type") == "column" and order.get("columnId") not in columns:
                self.problem(f"{context}: orders by a column the layer does not have")
        return set(columns)

    # ---------------------------------------------------------------- dashboard
    def check_dashboard(self) -> None:
        self.embedded("optionsJSON", dict)
        source = self.embedded("kibanaSavedObjectMeta.searchSourceJSON", dict)
        if source is not None:
            self.use_query(source.get("query"), "searchSourceJSON")
        panels = self.embedded("panelsJSON", list)
        if panels is None:
            return
        taken: set[tuple[int, int]] = set()
        for panel in panels:
            self.check_panel(panel, taken)

    def check_panel(self, panel: Any, taken: set[tuple[int, int]]) -> None:
        if not isinstance(panel, dict):
            self.problem("a panel is not an object")
            return
        index = panel.get("panelIndex")
        ref = self.ref_names.get(f"{index}:{panel.get('panelRefName')}")
        if ref is None or ref.get("type") != panel.get("type"):
            self.problem(f"panel {index}: panelRefName {panel.get('panelRefName')!r} has no "
                         f"{panel.get('type')} reference named '{index}:...'")
        grid = panel.get("gridData") or {}
        x, y, w, h = (grid.get(k) for k in ("x", "y", "w", "h"))
        if not all(isinstance(v, int) and v >= 0 for v in (x, y, w, h)) or not w or not h \
                or x + w > GRID_COLUMNS or grid.get("i") != index:
            self.problem(f"panel {index}: gridData {grid!r} is not a place on the "
                         f"{GRID_COLUMNS}-column grid")
            return
        cells = {(cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)}
        if cells & taken:
            self.problem(f"panel {index} overlaps another panel")
        taken |= cells


def _accessors(visualization: Any, vis_type: Any) -> Iterable[str]:
    if not isinstance(visualization, dict):
        return []
    if vis_type == "lnsDatatable":
        sorting = visualization.get("sorting") or {}
        return [c.get("columnId") for c in visualization.get("columns") or []] + \
            ([sorting["columnId"]] if "columnId" in sorting else [])
    found = []
    for layer in visualization.get("layers") or []:
        found += [layer.get("xAccessor"), *(layer.get("accessors") or [])]
        if layer.get("splitAccessor"):
            found.append(layer["splitAccessor"])
    return found


def _numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True
