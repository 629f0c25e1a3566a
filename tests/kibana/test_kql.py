"""KQL as Kibana translates it: the exact query DSL for each construct, the refusals, and
the translated queries run against the Elasticsearch test server over the collector's own
documents (checked against an independent reading of the same documents)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from elasticsearch import BadRequestError, Elasticsearch

from collector.kibana import kql
from tests.kibana.support import TYPES, corpus, get, hits, index_corpus


def should(*clauses: dict[str, Any]) -> dict[str, Any]:
    return {"bool": {"should": list(clauses), "minimum_should_match": 1}}


@pytest.mark.parametrize(("text", "dsl"), [
    ("", {"match_all": {}}),
    ("event.action: exec", should({"match": {"event.action": "exec"}})),
    ('event.action: "exec"', should({"match_phrase": {"event.action": "exec"}})),
    ("audit_collector.session_id: 3", should({"match": {"audit_collector.session_id": 3}})),
    ("user.id: 007", should({"match": {"user.id": "007"}})),
    ("process.interactive: true", should({"match": {"process.interactive": True}})),
    ("container.id: *", should({"exists": {"field": "container.id"}})),
    ("process.executable: /tmp/*",
     should({"query_string": {"fields": ["process.executable"], "query": "\\/tmp\\/*"}})),
    ("process.command_line: *curl\\ -k*",
     should({"query_string": {"fields": ["process.command_line"], "query": "*curl\\ \\-k*"}})),
    ("process.args_count >= 100", should({"range": {"process.args_count": {"gte": 100}}})),
    ('@timestamp: "2024-11-20"',
     should({"range": {"@timestamp": {"gte": "2024-11-20", "lte": "2024-11-20"}}})),
    ("event.action: exec and not event.outcome: success", {"bool": {"filter": [
        should({"match": {"event.action": "exec"}}),
        {"bool": {"must_not": should({"match": {"event.outcome": "success"}})}}]}}),
    ("event.action: (setns or unshare)", should(
        should({"match": {"event.action": "setns"}}),
        should({"match": {"event.action": "unshare"}}))),
    ("(user.id: 0 OR user.effective.id: 0) AND host.name: a", {"bool": {"filter": [
        should(should({"match": {"user.id": 0}}), should({"match": {"user.effective.id": 0}})),
        should({"match": {"host.name": "a"}})]}}),
])
def test_translation_is_kibanas(text: str, dsl: dict[str, Any]) -> None:
    assert kql.to_dsl(text, TYPES) == dsl


def test_uses_name_every_field_and_how() -> None:
    node = kql.parse('event.action: ("exec" or bash_command) and process.executable: /tmp/* '
                     "and not container.id: * and process.args_count > 3")
    assert [(u.field, u.kind) for u in node.uses()] == [
        ("event.action", "phrase"), ("event.action", "match"),
        ("process.executable", "wildcard"), ("container.id", "exists"),
        ("process.args_count", "range")]


@pytest.mark.parametrize(("text", "why"), [
    ("curl", "free text"),
    ("process.*: curl", "field name without wildcards"),
    ("process.parent: { pid: 1 }", "nested"),
    ('host.name: "unterminated', "unterminated"),
    ("host.name: a )", "unexpected text"),
    ("host.name:", "a value is needed"),
    ("process.pid > 1*", "range bound"),
])
def test_unsupported_kql_is_refused(text: str, why: str) -> None:
    with pytest.raises(kql.KqlError, match=why):
        kql.parse(text)


def _by_user(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda d: get(d, "user.name") == name


CASES: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
    ('event.action: "exec" and event.outcome: "failure" and user.name: "bob"',
     lambda d: get(d, "event.action") == "exec" and get(d, "event.outcome") == "failure"
     and get(d, "user.name") == "bob"),
    ("process.executable: /usr/sbin/*",
     lambda d: str(get(d, "process.executable") or "").startswith("/usr/sbin/")),
    ("process.command_line: *daemon\\ off*",
     lambda d: "daemon off" in str(get(d, "process.command_line") or "")),
    ("container.id: * and not host.name: db-1",
     lambda d: get(d, "container.id") is not None and get(d, "host.name") != "db-1"),
    ("user.effective.id: 0 and not user.id: 0",
     lambda d: get(d, "user.effective.id") == "0" and get(d, "user.id") != "0"),
    ("process.args_count >= 3 and event.action: exec",
     lambda d: (get(d, "process.args_count") or 0) >= 3 and get(d, "event.action") == "exec"),
    ("audit_collector.session_id: 3 and host.name: golden-host",
     lambda d: get(d, "audit_collector.session_id") == 3 and get(d, "host.name") == "golden-host"),
    ("message: lost", lambda d: "lost" in str(get(d, "message") or "").lower().split()),
]


@pytest.mark.parametrize(("text", "oracle"), CASES, ids=[c[0] for c in CASES])
def test_translated_queries_find_what_they_mean(es_client: Elasticsearch, text: str,
                                                oracle: Callable[[dict[str, Any]], bool]
                                                ) -> None:
    docs = corpus()
    index_corpus(es_client, docs)
    expected = {name for name, doc in docs.items() if oracle(doc)}
    assert expected, "the case must match something"
    assert expected != set(docs), "the case must leave something out"
    assert hits(es_client, kql.to_dsl(text, TYPES)) == expected


def test_the_test_server_refuses_query_strings_it_cannot_evaluate(
        es_client: Elasticsearch) -> None:
    index_corpus(es_client, {"one": corpus()["exec_success"]})
    with pytest.raises(BadRequestError, match="one term"):
        hits(es_client, {"query_string": {"fields": ["host.name"], "query": "a OR b"}})
    with pytest.raises(BadRequestError, match="only use wildcard queries on keyword"):
        hits(es_client, {"query_string": {"fields": ["process.pid"], "query": "1*"}})
