"""Builders of Kibana saved objects in the shape Kibana 8.14 exports them.

Shapes followed (read, not copied):

* a saved-objects export of Kibana 8.14.0 (June 2024) with a by-reference Lens dashboard:
  ``coreMigrationVersion`` 8.8.0 on every object, ``typeMigrationVersion`` 10.2.0 for the
  dashboard, 8.9.0 for Lens, 8.0.0 for the data view; Lens ``state`` with ``formBased``
  layers, ``indexpattern-datasource-layer-<layer>`` references, dashboard panels with
  ``panelRefName`` ``panel_<i>`` and references ``<i>:panel_<i>``; data view attributes
  (``fieldAttrs``, ``fieldFormatMap``, ``runtimeFieldMap``, ``sourceFilters``, ``fields``
  as JSON strings, ``allowHidden``);
* Kibana's own sample data (``src/plugins/home/.../flights/saved_objects.ts``): the saved
  search (``searchSourceJSON`` with ``indexRefName``, ``sort`` as ``[[field, dir]]``) and a
  saved-search panel on a dashboard;
* Kibana's saved-search schema for 8.8.0 (``saved_search/server/saved_objects/search.ts``):
  the attributes a search may have; its legacy migrations end at 8.0.0, the version the
  searches here declare (Kibana runs every later migration on import);
* Lens columns (``terms``, ``date_histogram``, ``count`` of ``___records___``, ``sum``,
  ``max``) as Kibana's sample dashboards and Elastic's integration packages write them.

Ids of Lens layers and columns are UUIDs derived from the object id and a readable key, so
generating twice gives the same bytes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.fields import FIELDS
from collector.kibana.kql import DATE_TYPES

CORE_MIGRATION_VERSION = "8.8.0"
TYPE_MIGRATION_VERSION = {
    "index-pattern": "8.0.0",
    "search": "8.0.0",
    "lens": "8.9.0",
    "dashboard": "10.2.0",
}
INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
RECORDS = "___records___"  # Lens's pseudo field of the count operation
GRID_COLUMNS = 48  # a dashboard row is 48 units wide
_NAMESPACE = uuid.UUID("5b6f1c1e-7d0a-4c55-9a59-6a1f3e0f2a11")


def compact(value: Any) -> str:
    """JSON as Kibana embeds it in attributes (``searchSourceJSON``, ``panelsJSON``)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def derived_id(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def saved_object(type_: str, object_id: str, attributes: dict[str, Any],
                 references: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    return {"id": object_id, "type": type_, "managed": False,
            "coreMigrationVersion": CORE_MIGRATION_VERSION,
            "typeMigrationVersion": TYPE_MIGRATION_VERSION[type_],
            "attributes": attributes, "references": list(references)}


def kuery(text: str) -> dict[str, str]:
    return {"query": text, "language": "kuery"}


# --------------------------------------------------------------------------- data view


def data_view(object_id: str, title: str, name: str, time_field: str,
              formats: dict[str, dict[str, Any]], attrs: dict[str, dict[str, Any]]
              ) -> dict[str, Any]:
    return saved_object("index-pattern", object_id, {
        "title": title, "name": name, "timeFieldName": time_field,
        "fieldFormatMap": compact(formats), "fieldAttrs": compact(attrs),
        "runtimeFieldMap": "{}", "sourceFilters": "[]", "fields": "[]", "allowHidden": False,
    })


# --------------------------------------------------------------------------- saved search


def saved_search(object_id: str, data_view_id: str, title: str, description: str,
                 query: str, columns: Sequence[str],
                 sort: Sequence[tuple[str, str]] = (("@timestamp", "desc"),)) -> dict[str, Any]:
    source = {"highlightAll": True, "version": True, "query": kuery(query), "filter": [],
              "indexRefName": INDEX_REF}
    return saved_object("search", object_id, {
        "title": title, "description": description, "columns": list(columns),
        "sort": [list(s) for s in sort], "grid": {}, "hideChart": False,
        "isTextBasedQuery": False, "timeRestore": False,
        "kibanaSavedObjectMeta": {"searchSourceJSON": compact(source)},
    }, [{"id": data_view_id, "name": INDEX_REF, "type": "index-pattern"}])


# --------------------------------------------------------------------------- Lens


@dataclass(frozen=True)
class Column:
    """One Lens column: ``key`` names it inside its visualization."""

    key: str
    operation: str  # count, terms, date_histogram, sum, max
    field: str = RECORDS
    label: str = ""
    size: int = 10  # terms: how many buckets
    order_by: str = ""  # terms: key of the metric column to order by
    descending: bool = True
    other_bucket: bool = True

    @property
    def bucketed(self) -> bool:
        return self.operation in ("terms", "date_histogram")


def count(label: str = "Events") -> Column:
    return Column("count", "count", label=label)


def terms(field: str, size: int = 10, order_by: str = "count", label: str = "",
          descending: bool = True, other_bucket: bool = True) -> Column:
    return Column(f"terms:{field}", "terms", field, label or f"Top {size} values of {field}",
                  size=size, order_by=order_by, descending=descending,
                  other_bucket=other_bucket)


def date_histogram(field: str = "@timestamp") -> Column:
    return Column(f"date:{field}", "date_histogram", field, field)


def metric(operation: str, field: str, label: str) -> Column:
    return Column(f"{operation}:{field}", operation, field, label)


def _column_state(col: Column, ids: dict[str, str]) -> dict[str, Any]:
    base: dict[str, Any] = {"label": col.label, "customLabel": True,
                            "operationType": col.operation, "sourceField": col.field,
                            "isBucketed": col.bucketed}
    if col.operation == "date_histogram":
        return {**base, "dataType": "date", "scale": "interval", "customLabel": False,
                "params": {"interval": "auto", "includeEmptyRows": True,
                           "dropPartials": False}}
    if col.operation == "terms":
        return {**base, "dataType": "string", "scale": "ordinal", "params": {
            "size": col.size, "orderBy": {"type": "column", "columnId": ids[col.order_by]},
            "orderDirection": "desc" if col.descending else "asc",
            "otherBucket": col.other_bucket, "missingBucket": False,
            "parentFormat": {"id": "terms"}, "include": [], "exclude": [],
            "includeIsRegex": False, "excludeIsRegex": False}}
    dates = col.operation in ("max", "min") and FIELDS.get(col.field, ("",))[0] in DATE_TYPES
    data_type = "date" if dates else "number"
    return {**base, "dataType": data_type, "scale": "ratio", "params": {"emptyAsNull": True}}


@dataclass(frozen=True)
class Layer:
    """One form-based Lens layer: its id and column ids derived from the object id."""

    object_id: str
    columns: tuple[Column, ...]
    layer_id: str = field(init=False)
    ids: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_id", derived_id(self.object_id, "layer"))
        object.__setattr__(self, "ids", {c.key: derived_id(self.object_id, c.key)
                                         for c in self.columns})

    def state(self) -> dict[str, Any]:
        ordered = [c for c in self.columns if c.bucketed] + \
            [c for c in self.columns if not c.bucketed]
        return {"columns": {self.ids[c.key]: _column_state(c, self.ids) for c in ordered},
                "columnOrder": [self.ids[c.key] for c in ordered], "sampling": 1,
                "ignoreGlobalFilters": False, "incompleteColumns": {}}

    def reference(self, data_view_id: str) -> dict[str, str]:
        return {"type": "index-pattern", "id": data_view_id,
                "name": f"indexpattern-datasource-layer-{self.layer_id}"}


def _lens(object_id: str, data_view_id: str, title: str, description: str, query: str,
          vis_type: str, layer: Layer, visualization: dict[str, Any]) -> dict[str, Any]:
    state = {"visualization": visualization, "query": kuery(query), "filters": [],
             "datasourceStates": {"formBased": {"layers": {layer.layer_id: layer.state()}},
                                  "indexpattern": {"layers": {}},
                                  "textBased": {"layers": {}}},
             "internalReferences": [], "adHocDataViews": {}}
    return saved_object("lens", object_id, {
        "title": title, "description": description, "visualizationType": vis_type,
        "state": state}, [layer.reference(data_view_id)])


def lens_xy(object_id: str, data_view_id: str, title: str, description: str, query: str,
            series: str, x: Column, y: Sequence[Column], split: Column | None = None
            ) -> dict[str, Any]:
    """A bar/line chart: ``series`` is Lens's seriesType (bar_stacked, bar_horizontal...)."""
    layer = Layer(object_id, (x, *y, *([split] if split else [])))
    vis_layer: dict[str, Any] = {
        "layerId": layer.layer_id, "layerType": "data", "seriesType": series,
        "xAccessor": layer.ids[x.key], "accessors": [layer.ids[c.key] for c in y],
        "position": "top", "showGridlines": False}
    if split is not None:
        vis_layer["splitAccessor"] = layer.ids[split.key]
    visualization = {
        "legend": {"isVisible": split is not None, "position": "right"},
        "valueLabels": "hide", "fittingFunction": "None", "preferredSeriesType": series,
        "axisTitlesVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
        "tickLabelsVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
        "gridlinesVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
        "labelsOrientation": {"x": 0, "yLeft": 0, "yRight": 0},
        "layers": [vis_layer]}
    return _lens(object_id, data_view_id, title, description, query, "lnsXY", layer,
                 visualization)


def lens_table(object_id: str, data_view_id: str, title: str, description: str, query: str,
               rows: Sequence[Column], metrics: Sequence[Column],
               sort_by: str, descending: bool = True) -> dict[str, Any]:
    """A data table: one row per bucket of ``rows``, sorted by the column ``sort_by``."""
    layer = Layer(object_id, (*rows, *metrics))
    visualization = {
        "layerId": layer.layer_id, "layerType": "data",
        "columns": [{"columnId": layer.ids[c.key], "isTransposed": False}
                    for c in (*rows, *metrics)],
        "sorting": {"columnId": layer.ids[sort_by],
                    "direction": "desc" if descending else "asc"}}
    return _lens(object_id, data_view_id, title, description, query, "lnsDatatable", layer,
                 visualization)


# --------------------------------------------------------------------------- dashboard


@dataclass(frozen=True)
class Panel:
    """A by-reference panel: the saved object it shows and its size in grid units."""

    type: str  # lens or search
    id: str
    width: int
    height: int


def dashboard(object_id: str, title: str, description: str, rows: Sequence[Sequence[Panel]],
              time_from: str = "now-24h") -> dict[str, Any]:
    """Panels laid out row by row, left to right."""
    panels, references, y = [], [], 0
    for row in rows:
        x = 0
        for panel in row:
            index = str(len(panels) + 1)
            panels.append({"type": panel.type, "panelIndex": index,
                           "gridData": {"x": x, "y": y, "w": panel.width, "h": panel.height,
                                        "i": index},
                           "embeddableConfig": {"enhancements": {}},
                           "panelRefName": f"panel_{index}"})
            references.append({"name": f"{index}:panel_{index}", "type": panel.type,
                               "id": panel.id})
            x += panel.width
        y += max((p.height for p in row), default=0)
    options = {"useMargins": True, "syncColors": False, "syncCursor": True,
               "syncTooltips": False, "hidePanelTitles": False}
    return saved_object("dashboard", object_id, {
        "title": title, "description": description, "version": 1,
        "timeRestore": True, "timeFrom": time_from, "timeTo": "now",
        "refreshInterval": {"pause": True, "value": 60000},
        "optionsJSON": compact(options), "panelsJSON": compact(panels),
        "kibanaSavedObjectMeta": {"searchSourceJSON": compact(
            {"query": kuery(""), "filter": []})},
    }, references)
