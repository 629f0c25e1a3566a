"""An Elasticsearch-API test server (pure stdlib + orjson) with scriptable fault injection.

The official ``elasticsearch`` client works against it unmodified; it follows Elasticsearch's
documented behaviour for what the collector and its tests call, nothing more.

Usage::

    from tests.esserver import ESTestServer

    with ESTestServer(major=8) as srv:
        es = Elasticsearch(srv.url)
        srv.fail_requests(429, requests=2)          # next two bulk requests -> 429
        srv.reset_connections("after")              # next bulk: applied, then TCP RST
        srv.fail_items(error_type="circuit_breaking_exception", every=3)
        srv.flood_stage(True)                       # per-item 429 cluster_block_exception
        ...
        srv.refresh()                               # or wait: search sees writes ~1 s later
        assert srv.get_doc("audit-events", "id-1") == {...}
        assert srv.counter("bulk.items.created") == 1000

Standalone: ``python -m tests.esserver --host 127.0.0.1 --port 9200 --major 8
[--api-key ID:KEY] [--user NAME:PASSWORD] [--max-content-length BYTES]``.

Kibana: :class:`KibanaTestServer` (``kibana.py``; ``python -m tests.esserver.kibana``) answers
saved-object import (``/api/saved_objects/_import``, also under ``/s/<space>``) with Kibana's
result shape and per-object errors, ``kbn-xsrf``, spaces, credentials and ``/api/status``;
see its module docstring.

Layout: ``httpcore`` (HTTP plumbing, router, lifecycle; shared with the Kibana stand-in),
``server`` (the ES front end: auth, body limits, media types, faults, Python accessors),
``api`` (the route table), ``cluster`` (operations), ``store`` (documents as raw JSON,
versions, refresh visibility), ``docvalues`` (per-field columns), ``query`` (query DSL),
``search`` (search, sort, ``search_after``, totals), ``aggs``, ``pit``, ``mapping``,
``settings`` (index and cluster settings, blocks, auto-create), ``security``, ``synthetic``
(logsdb ``_source``), ``faults``, ``templates``, ``errors``; ``scale`` measures capacity
(``python -m tests.esserver.scale --docs 2000000``).

Routes (``api.py``, one table; anything else is answered like Elasticsearch answers a path it
does not know: 400 ``no handler found``, or 405 for a known path with another method)::

    GET|HEAD /                            POST|PUT /_bulk, /{index}/_bulk
    GET|POST /_search, /{index}/_search   GET|POST /_count, /{index}/_count
    GET|POST /_refresh, /{index}/_refresh
    GET|PUT  /_index_template/{name}      GET /_data_stream[/{name}], PUT /_data_stream/{name}
    GET|PUT  /_ilm/policy/{name}          GET|PUT /{index}/_mapping, GET|PUT /{index}/_settings
    GET|PUT  /_cluster/settings           POST /{index}/_pit?keep_alive=, DELETE /_pit
    GET|PUT|POST|DELETE /{index}/_doc/{id}, POST /{index}/_doc (op_type create),
    PUT /{index}/_create/{id}, POST /{index}/_update/{id}

Behaviour that matters to a client:

* Refresh: a write is searchable after its index's next refresh, every
  ``index.refresh_interval`` (default 1 s, ``-1`` never); an index without an explicit
  interval and no search for ``index.search.idle.after`` (30 s) skips them until searched.
  ``?refresh=true|wait_for`` and ``POST _refresh`` as in ES.  GET by id is realtime, and the
  Python accessors (``docs``, ``get_doc``, ``doc_count``) see every write at once.
* Index blocks (``index.blocks.write``/``read_only`` 403, ``read_only_allow_delete`` 429
  ``TOO_MANY_REQUESTS/12``, set with PUT ``_settings`` or :meth:`ESTestServer.flood_stage`)
  fail bulk items with ``cluster_block_exception``; ``cluster.blocks.read_only`` fails
  whole write requests.
* Auto-create: ``action.auto_create_index`` (true/false/``+a*,-b*``) and a template's
  ``allow_auto_create`` decide, with ES's 404 ``index_not_found_exception`` texts.
* Security: off until ``add_user``/``add_api_key``; then 401 ``security_exception`` with
  ``WWW-Authenticate`` for missing or wrong credentials, and per-item 403 for writes outside
  a principal's index patterns.
* ``http.max_content_length`` (``max_content_length=``, default 100 MiB): a larger body,
  after decompression, gets an empty 413 and the connection is closed.
* Search: term(s), range (date math), match, match_phrase, prefix, wildcard, exists, ids,
  bool, constant_score; sort by fields, ``_doc``, ``_shard_doc``; ``search_after``;
  ``track_total_hits`` (true/false/N, ``relation``).  Point in time: ``pit`` in the body and
  no index in the path, frozen at opening, ``keep_alive`` extended per use and expiring,
  the implicit ``_shard_doc`` tie-breaker (``shard << 32 | doc``) on sorted searches.
* Aggregations: ``composite`` (``terms``, ``date_histogram`` with ``calendar_interval`` /
  ``fixed_interval``, ``time_zone``, ``offset``, ``format``; ``order``, ``missing_bucket``,
  ``missing_order``, ``size``, ``after``/``after_key``), ``terms``, and the metrics ``min``,
  ``max``, ``sum``, ``avg``, ``value_count``, ``cardinality`` at the top or in buckets.
* Many documents: ``srv.load_docs(index, iterable)`` stores without HTTP; sources are kept
  as their JSON bytes and fields are read through lazily built columns; the grouping of a
  composite aggregation and the sorted order of a search are cached per searcher, so
  paging costs little after the first page.
* Elasticsearch 9 puts ``logs-*-*`` data streams whose template sets no ``index.mode`` in
  ``logsdb`` mode (``cluster.logsdb.enabled``; 8: off); their ``_source`` is synthetic
  (see :mod:`.synthetic`).

Counter keys (``srv.stats()`` / ``GET /_test/stats``):
``requests``, ``requests.<endpoint>`` (endpoints: info, bulk, search, count, refresh, doc,
update, mapping, settings, cluster, index_template, data_stream, ilm, pit, other),
``responses.<status>``, ``connections``, ``bulk.requests.applied``, ``bulk.items``,
``bulk.items.<outcome>`` (created, updated, deleted, not_found, noop, conflict,
mapping_error, rejected, unavailable, blocked, circuit_breaking, forbidden, index_not_found,
index_closed, error), ``bulk.items.status.<code>``, ``faults.<kind>`` (status, items,
mapping, delay, reset, down), ``faults.reset.before`` / ``faults.reset.after``,
``server.down`` / ``server.up``.
"""

from .cluster import Cluster
from .errors import ESError
from .faults import BulkItem, Fault, FaultPlan
from .kibana import KibanaTestServer
from .server import ESTestServer, RequestRecord

__all__ = ["BulkItem", "Cluster", "ESError", "ESTestServer", "Fault", "FaultPlan",
           "KibanaTestServer", "RequestRecord"]
