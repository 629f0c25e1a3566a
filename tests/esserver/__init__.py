"""An Elasticsearch-API test server (pure stdlib + orjson) with scriptable fault injection.

Usage::

    from tests.esserver import ESTestServer

    with ESTestServer(major=8) as srv:
        es = Elasticsearch(srv.url)
        srv.fail_requests(429, requests=2)          # next two bulk requests → 429
        srv.reset_connections("after")              # next bulk: applied, then TCP RST
        ...
        assert srv.get_doc("audit-events", "id-1") == {...}
        assert srv.counter("bulk.items.created") == 1000

Standalone: ``python -m tests.esserver --host 127.0.0.1 --port 9200 --major 8``.

Routes (``api.py``, one table; anything else is answered like Elasticsearch answers a path it
does not know: 400 ``no handler found``, or 405 for a known path with another method)::

    GET|HEAD /                            POST|PUT /_bulk, /{index}/_bulk
    GET|POST /_search, /{index}/_search   GET|POST /_count, /{index}/_count
    GET|POST /_refresh, /{index}/_refresh
    GET|PUT  /_index_template/{name}      GET /_data_stream[/{name}], PUT /_data_stream/{name}
    GET|PUT  /_ilm/policy/{name}          GET|PUT /{index}/_mapping
    GET|PUT|POST|DELETE /{index}/_doc/{id}, POST /{index}/_doc, PUT /{index}/_create/{id},
    POST /{index}/_update/{id}

Counter keys (``srv.stats()`` / ``GET /_test/stats``):
``requests``, ``requests.<endpoint>`` (endpoints: info, bulk, search, count, refresh, doc,
update, mapping, index_template, data_stream, ilm, other), ``responses.<status>``,
``connections``,
``bulk.requests.applied``, ``bulk.items``, ``bulk.items.<outcome>`` (created, updated,
deleted, not_found, noop, conflict, mapping_error, rejected, unavailable, error),
``bulk.items.status.<code>``, ``faults.<kind>`` (status, items, mapping, delay, reset, down),
``faults.reset.before`` / ``faults.reset.after``, ``server.down`` / ``server.up``.
"""

from .cluster import Cluster
from .errors import ESError
from .faults import BulkItem, Fault, FaultPlan
from .server import ESTestServer, RequestRecord

__all__ = ["BulkItem", "Cluster", "ESError", "ESTestServer", "Fault", "FaultPlan",
           "RequestRecord"]
