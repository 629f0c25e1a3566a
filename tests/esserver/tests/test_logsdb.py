"""logsdb on Elasticsearch 9: logs-*-* data streams without an explicit index.mode, and
the synthetic _source they return."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from tests.esserver import ESTestServer

TS = "2024-05-01T12:00:00.123456789Z"
DOC = {
    "@timestamp": TS,
    "process": {"args": ["sh", "-c", "b", "a", "b"], "pid": "42"},
    "host.name": "web-1",
    "tags": ["z", "a"],
    "files": [{"path": "/b"}, {"path": "/a"}],
    "message": "hello",
}


@pytest.fixture
def es9() -> Iterator[tuple[ESTestServer, Elasticsearch]]:
    with ESTestServer(major=9) as srv:
        client = Elasticsearch(srv.url, max_retries=0)
        yield srv, client
        client.close()


def _stream(es: Elasticsearch, name: str) -> dict[str, Any]:
    return dict(es.indices.get_data_stream(name=name)["data_streams"][0])


def _write(es: Elasticsearch, index: str, doc: dict[str, Any]) -> dict[str, Any]:
    es.index(index=index, id="1", op_type="create", document=doc, refresh=True)
    return dict(es.search(index=index)["hits"]["hits"][0]["_source"])


def test_builtin_logs_template_gives_logsdb_on_9(es9: tuple[ESTestServer, Elasticsearch]
                                                ) -> None:
    srv, es = es9
    es.index(index="logs-app-default", document={"@timestamp": TS})
    ds = _stream(es, "logs-app-default")
    assert ds["template"] == "logs" and ds["index_mode"] == "logsdb"
    assert [i["index_mode"] for i in ds["indices"]] == ["logsdb"]
    [backing] = srv.backing_indices("logs-app-default")
    settings = es.indices.get_settings(index="logs-app-default")[backing]["settings"]
    assert settings["index"]["mode"] == "logsdb"
    # a template that says index.mode standard (as the collector's does) keeps it standard
    es.indices.put_index_template(name="mine", index_patterns=["logs-mine-*"], priority=200,
                                  data_stream={},
                                  template={"settings": {"index.mode": "standard"}})
    es.index(index="logs-mine-default", document={"@timestamp": TS})
    assert _stream(es, "logs-mine-default")["index_mode"] == "standard"
    # other names are not logs data streams
    es.indices.put_index_template(name="other", index_patterns=["audit-*"], data_stream={})
    es.index(index="audit-x", document={"@timestamp": TS})
    assert _stream(es, "audit-x")["index_mode"] == "standard"


def test_synthetic_source_keeps_arrays_by_default(es9: tuple[ESTestServer, Elasticsearch]
                                                  ) -> None:
    srv, es = es9
    got = _write(es, "logs-app-default", DOC)
    # logsdb's default index.mapping.synthetic_source_keep is "arrays": order and duplicates
    # survive; keys are sorted, dotted names become objects, values take their mapped type
    assert got == {
        "@timestamp": "2024-05-01T12:00:00.123Z",  # a date (millis) mapping prints millis
        "files": [{"path": "/b"}, {"path": "/a"}],
        "host": {"name": "web-1"},
        "message": "hello",
        "process": {"args": ["sh", "-c", "b", "a", "b"], "pid": "42"},
        "tags": ["z", "a"],
    }
    assert list(got) == sorted(got)
    assert es.get(index="logs-app-default", id="1")["_source"] == got
    assert srv.get_doc("logs-app-default", "1") == DOC  # the Python side sees what was sent


def test_synthetic_source_keep_none_sorts_and_dedupes(es9: tuple[ESTestServer, Elasticsearch]
                                                      ) -> None:
    _srv, es = es9
    es.indices.put_index_template(
        name="syn", index_patterns=["logs-syn-*"], priority=200, data_stream={},
        template={"settings": {"index.mode": "logsdb",
                               "index.mapping.synthetic_source_keep": "none"},
                  "mappings": {"properties": {
                      "@timestamp": {"type": "date_nanos"},
                      "process": {"properties": {"args": {"type": "keyword"},
                                                 "pid": {"type": "long"}}},
                      "tags": {"type": "keyword"}, "files": {"properties": {
                          "path": {"type": "keyword"}}},
                      "message": {"type": "text"}}}})
    got = _write(es, "logs-syn-default", DOC)
    assert got == {
        "@timestamp": TS,
        "files": {"path": ["/a", "/b"]},  # the array of objects moved to the leaf
        "host": {"name": "web-1"},
        "message": "hello",
        "process": {"args": ["-c", "a", "b", "sh"], "pid": 42},  # sorted, de-duplicated
        "tags": ["a", "z"],
    }


def test_stored_source_mode_and_major_8(es9: tuple[ESTestServer, Elasticsearch]) -> None:
    _srv, es = es9
    es.indices.put_index_template(name="st", index_patterns=["logs-st-*"], priority=200,
                                  data_stream={}, template={"settings": {
                                      "index.mode": "logsdb",
                                      "index.mapping.source.mode": "stored"}})
    assert _write(es, "logs-st-default", DOC) == DOC
    # Elasticsearch 8 does not turn logsdb on by default, unless cluster.logsdb.enabled
    with ESTestServer(major=8) as s8:
        es8 = Elasticsearch(s8.url, max_retries=0)
        es8.index(index="logs-a-default", document={"@timestamp": TS})
        assert _stream(es8, "logs-a-default")["index_mode"] == "standard"
        es8.cluster.put_settings(persistent={"cluster.logsdb.enabled": True})
        es8.index(index="logs-b-default", document={"@timestamp": TS})
        assert _stream(es8, "logs-b-default")["index_mode"] == "logsdb"
        es8.close()
    es.cluster.put_settings(persistent={"cluster.logsdb.enabled": False})
    es.index(index="logs-c-default", document={"@timestamp": TS})
    assert _stream(es, "logs-c-default")["index_mode"] == "standard"
