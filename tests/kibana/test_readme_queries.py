"""The ten KQL queries of README.md's "In Kibana" section, as written there: translated to
the query DSL as Kibana translates them, run against the Elasticsearch test server over the
collector's golden documents (two hosts, two users), and compared with an independent
reading of the same documents. Each must find something and leave something out."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from collector.kibana import kql
from tests.kibana.support import TYPES, corpus, get, hits, index_corpus

README = Path(__file__).resolve().parents[2] / "README.md"
Doc = dict[str, Any]


def readme_queries() -> list[str]:
    text = README.read_text()
    section = text.split("\n## In Kibana\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```kql\n(.*?)```", section, re.S)]


def action(doc: Doc, *actions: str) -> bool:
    return get(doc, "event.action") in actions


def starts(doc: Doc, field: str, *prefixes: str) -> bool:
    return str(get(doc, field) or "").startswith(prefixes)


# What each question means, read off the documents directly (in README order).
MEANINGS: list[Callable[[Doc], bool]] = [
    lambda d: action(d, "exec") and get(d, "process.executable") == "/usr/sbin/nginx"
    and get(d, "host.name") == "db-1",
    lambda d: get(d, "host.name") == "golden-host" and get(d, "audit_collector.session_id") == 3
    and action(d, "exec", "bash_command"),
    lambda d: action(d, "setns")
    and starts(d, "audit_collector.ns.target.container_id", "3f5a0c9e8d7b"),
    lambda d: action(d, "exec") and get(d, "event.outcome") == "failure"
    and get(d, "user.name") == "bob",
    lambda d: get(d, "audit_collector.login_user.name") == "alice"
    and get(d, "user.name") != "alice",
    lambda d: action(d, "exec") and get(d, "user.effective.id") == "0"
    and get(d, "user.id") != "0",
    lambda d: action(d, "exec")
    and starts(d, "process.executable", "/tmp/", "/var/tmp/", "/dev/shm/"),
    lambda d: action(d, "bash_command") and "/etc" in str(get(d, "audit_collector.bash.line")),
    lambda d: action(d, "setns", "unshare", "clone") and get(d, "event.outcome") == "failure",
    lambda d: action(d, "events_lost") and (get(d, "audit_collector.lost.exec") or 0) > 0,
]


def test_the_readme_has_ten_questions() -> None:
    assert len(readme_queries()) == len(MEANINGS) == 10


@pytest.mark.parametrize("number", range(1, 11))
def test_readme_query_finds_what_its_question_asks(es_client: Elasticsearch,
                                                   number: int) -> None:
    query = readme_queries()[number - 1]
    docs = corpus()
    index_corpus(es_client, docs)
    expected = {name for name, doc in docs.items() if MEANINGS[number - 1](doc)}
    assert expected, "the golden documents must hold an answer"
    assert expected != set(docs)
    for use in kql.parse(query).uses():
        assert use.field in TYPES, use
    assert hits(es_client, kql.to_dsl(query, TYPES)) == expected
