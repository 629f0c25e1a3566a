"""The Elasticsearch REST API the product and its tests call, as a route table.

Only what is called is here (collector: info, bulk, search, ILM policy, index template,
data stream, put mapping; tests: single-document APIs, count, refresh, index and cluster
settings).  Every handler
takes a :class:`Call` and returns ``(status, payload)``: a dict (JSON), a str (text/plain),
or None (no body).
"""

from __future__ import annotations

import gc
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .cluster import WriteContext, refresh_mode
from .errors import es_error
from .faults import Fault
from .httpcore import Request, RequestRecord, Route, Router, route_table
from .security import Principal

if TYPE_CHECKING:
    from .server import ESTestServer


@dataclass
class Call:
    """One API call: the request with its decompressed body and matched path parameters."""

    request: Request
    body: bytes
    path: dict[str, str]
    record: RequestRecord
    principal: Principal | None = None
    item_faults: list[Fault] = field(default_factory=list)

    @property
    def params(self) -> dict[str, str]:
        return self.request.params

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        obj = orjson.loads(self.body)
        if not isinstance(obj, dict):
            raise es_error(400, "parsing_exception", "request body must be an object")
        return obj

    def required_json(self) -> dict[str, Any]:
        if not self.body:
            raise es_error(400, "parse_exception", "request body is required")
        return self.json()

    def flag(self, name: str) -> bool:
        return self.params.get(name) in ("", "true")


Result = tuple[int, Any]


class ElasticsearchApi:
    def __init__(self, server: ESTestServer) -> None:
        self.server = server
        self.cluster = server.cluster
        self.router = Router(self._routes())

    def _routes(self) -> list[Route]:
        return route_table([
            ("GET,HEAD", "/", "info", self.info),
            ("POST,PUT", "/_bulk", "bulk", self.bulk),
            ("POST,PUT", "/{index}/_bulk", "bulk", self.bulk),
            ("GET,POST", "/_search", "search", self.search),
            ("GET,POST", "/{index}/_search", "search", self.search),
            ("GET,POST", "/_count", "count", self.count),
            ("GET,POST", "/{index}/_count", "count", self.count),
            ("POST", "/{index}/_pit", "pit", self.open_pit),
            ("DELETE", "/_pit", "pit", self.close_pit),
            ("GET,POST", "/_refresh", "refresh", self.refresh),
            ("GET,POST", "/{index}/_refresh", "refresh", self.refresh),
            ("GET", "/_index_template/{name}", "index_template", self.get_index_template),
            ("PUT,POST", "/_index_template/{name}", "index_template", self.put_index_template),
            ("GET", "/_data_stream", "data_stream", self.get_data_streams),
            ("GET", "/_data_stream/{name}", "data_stream", self.get_data_streams),
            ("PUT", "/_data_stream/{name}", "data_stream", self.put_data_stream),
            ("POST", "/{index}/_rollover", "rollover", self.rollover),
            ("GET", "/_ilm/policy/{name}", "ilm", self.get_ilm_policy),
            ("PUT", "/_ilm/policy/{name}", "ilm", self.put_ilm_policy),
            ("GET", "/{index}/_mapping", "mapping", self.get_mapping),
            ("PUT,POST", "/{index}/_mapping", "mapping", self.put_mapping),
            ("GET", "/{index}/_settings", "settings", self.get_settings),
            ("PUT", "/{index}/_settings", "settings", self.put_settings),
            ("GET", "/_cluster/settings", "cluster", self.get_cluster_settings),
            ("PUT", "/_cluster/settings", "cluster", self.put_cluster_settings),
            ("GET", "/{index}/_doc/{id}", "doc", self.get_doc),
            ("PUT,POST", "/{index}/_doc/{id}", "doc", self.index_doc),
            ("POST", "/{index}/_doc", "doc", self.index_doc),
            ("DELETE", "/{index}/_doc/{id}", "doc", self.delete_doc),
            ("PUT,POST", "/{index}/_create/{id}", "doc", self.create_doc),
            ("POST", "/{index}/_update/{id}", "update", self.update_doc),
        ])

    # ------------------------------------------------------------------ cluster
    def info(self, call: Call) -> Result:
        return 200, self.cluster.info()

    # ------------------------------------------------------------------ documents
    def bulk(self, call: Call) -> Result:
        counts: Counter[str] = Counter()
        ctx = WriteContext(refresh_mode(call.params), call.item_faults, call.principal,
                           call.flag("require_data_stream"))
        resp = self.cluster.bulk(call.body, call.path.get("index"), ctx, counts)
        call.record.items = len(resp["items"])
        self.server._merge_counts(counts)
        self.server._count("bulk.requests.applied")
        if self.server.gc_freeze:
            gc.freeze()
        return 200, resp

    def get_doc(self, call: Call) -> Result:
        return self.cluster.get_doc(call.path["index"], call.path["id"], _source_arg(call.params))

    def index_doc(self, call: Call) -> Result:
        return self._write("index", call, call.path.get("id"), call.body)

    def create_doc(self, call: Call) -> Result:
        return self._write("create", call, call.path["id"], call.body)

    def update_doc(self, call: Call) -> Result:
        return self._write("update", call, call.path["id"], call.body)

    def delete_doc(self, call: Call) -> Result:
        return self._write("delete", call, call.path["id"], b"")

    def _write(self, op: str, call: Call, doc_id: str | None, body: bytes) -> Result:
        return self.cluster.write_one(op, call.path["index"], doc_id, body, call.params,
                                      call.principal)

    # ------------------------------------------------------------------ search
    def search(self, call: Call) -> Result:
        return 200, self.cluster.search(call.path.get("index"), call.json(), call.params)

    def count(self, call: Call) -> Result:
        return 200, self.cluster.search(call.path.get("index"), call.json(), call.params,
                                        count_only=True)

    def open_pit(self, call: Call) -> Result:
        return 200, self.cluster.open_pit(call.path["index"], call.params.get("keep_alive"))

    def close_pit(self, call: Call) -> Result:
        return self.cluster.close_pit(call.required_json())

    def refresh(self, call: Call) -> Result:
        return 200, self.cluster.refresh(call.path.get("index"))

    # ------------------------------------------------------------------ indices
    def get_mapping(self, call: Call) -> Result:
        return 200, self.cluster.get_mapping(call.path["index"])

    def put_mapping(self, call: Call) -> Result:
        return 200, self.cluster.put_mapping(call.path["index"], call.required_json())

    def get_settings(self, call: Call) -> Result:
        return 200, self.cluster.get_settings(call.path["index"], call.flag("flat_settings"))

    def put_settings(self, call: Call) -> Result:
        return 200, self.cluster.put_settings(call.path["index"], call.required_json())

    def get_cluster_settings(self, call: Call) -> Result:
        return 200, self.cluster.get_cluster_settings(call.flag("flat_settings"))

    def put_cluster_settings(self, call: Call) -> Result:
        return 200, self.cluster.put_cluster_settings(call.required_json())

    def get_index_template(self, call: Call) -> Result:
        return 200, self.cluster.get_templates(call.path["name"])

    def put_index_template(self, call: Call) -> Result:
        return 200, self.cluster.put_template(call.path["name"], call.required_json(),
                                              call.params.get("create") == "true")

    def get_data_streams(self, call: Call) -> Result:
        return 200, self.cluster.get_data_streams(call.path.get("name"))

    def put_data_stream(self, call: Call) -> Result:
        return 200, self.cluster.put_data_stream(call.path["name"])

    def rollover(self, call: Call) -> Result:
        if call.json().get("conditions"):
            raise es_error(400, "illegal_argument_exception", "rollover conditions are not "
                           "implemented by this test server (an unconditional rollover is)")
        return 200, self.cluster.rollover(call.path["index"], call.flag("dry_run"))

    def get_ilm_policy(self, call: Call) -> Result:
        return 200, self.cluster.get_ilm(call.path["name"])

    def put_ilm_policy(self, call: Call) -> Result:
        return 200, self.cluster.put_ilm(call.path["name"], call.required_json())


def _source_arg(params: dict[str, str]) -> Any:
    if "_source" in params:
        v = params["_source"]
        return v == "true" if v in ("true", "false") else v.split(",")
    if "_source_includes" in params or "_source_excludes" in params:
        return {"includes": [s for s in params.get("_source_includes", "").split(",") if s],
                "excludes": [s for s in params.get("_source_excludes", "").split(",") if s]}
    return True
