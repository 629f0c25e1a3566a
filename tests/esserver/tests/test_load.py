"""The Python bulk-load path and what holding many documents costs."""

from __future__ import annotations

import pytest
from elasticsearch import Elasticsearch

from tests.esserver import ESError, ESTestServer
from tests.esserver.scale import documents, measure, rss_mib
from tests.esserver.tests.helpers import TS


def test_load_docs_with_and_without_ids(srv: ESTestServer, es: Elasticsearch) -> None:
    n = srv.load_docs("loaded", [("a", {"k": "x", "n": 1}), ("b", {"k": "y", "n": 2})])
    assert n == 2
    assert srv.load_docs("loaded", [{"k": "z"}]) == 1  # a generated id
    assert es.count(index="loaded")["count"] == 3  # searchable at once
    assert es.get(index="loaded", id="a")["_source"] == {"k": "x", "n": 1}
    assert srv.mapping("loaded")["properties"]["n"] == {"type": "long"}  # dynamic mapping
    with pytest.raises(ValueError, match=r"document \[a\] already exists in \[loaded\]"):
        srv.load_docs("loaded", [("a", {"k": "again"})])
    with pytest.raises(ESError) as ei:
        srv.load_docs("loaded", [("c", {"n": "not a number"})])
    assert ei.value.err["type"] == "document_parsing_exception"
    # into a data stream, held back until a refresh when asked
    srv.load_docs("logs-x-default", [{"@timestamp": TS}], refresh=False)
    assert es.count(index="logs-x-default")["count"] == 0
    srv.refresh()
    assert es.count(index="logs-x-default")["count"] == 1
    with pytest.raises(ESError, match="timestamp"):
        srv.load_docs("logs-x-default", [{"no": "timestamp"}])


def test_sources_are_stored_compactly(srv: ESTestServer) -> None:
    docs = list(documents(20_000, hosts=100, days=3))
    before = rss_mib()
    srv.load_docs("compact", docs)
    grown = (rss_mib() - before) * 2**20 / len(docs)
    # a ~650-byte ECS-like document: its JSON, id, version record and index entry; as
    # parsed dicts it would be ~4 KiB
    assert grown < 1600, f"{grown:.0f} bytes per document"


def test_scale_measurement_runs() -> None:
    result = measure(30_000, hosts=50, days=3, pit_pages=5)
    assert result["composite_buckets"] == 150  # 50 hosts x 3 days
    assert result["pit_rows"] == 5000 and result["pit_pages"] == 5
    assert result["bytes_per_doc"] > 0 and result["load_s_per_million"] > 0
