"""A small index of the collector's real documents for query tests: the golden documents
(tests/ecs/golden, built by the collector's own document builder) on two hosts and two
users, in an index with the mappings `audit-collector setup` installs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
from elasticsearch import Elasticsearch, helpers

from collector.config import Config
from collector.delivery.elasticsearch.index import template_body
from collector.fields import FIELDS

GOLDEN = Path(__file__).resolve().parents[1] / "ecs" / "golden"
INDEX = "logs-audit_collector-test"
TYPES = {name: mapping_type for name, (mapping_type, _) in FIELDS.items()}


def golden_documents() -> dict[str, dict[str, Any]]:
    """Every golden document by ``<case>`` (``<case>#<n>`` for the later ones of a case)."""
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(GOLDEN.glob("*.json")):
        for n, doc in enumerate(orjson.loads(path.read_bytes())):
            docs[path.stem if n == 0 else f"{path.stem}#{n}"] = doc
    return docs


def on_host(doc: dict[str, Any], host: str, user: str | None = None) -> dict[str, Any]:
    """The document as if it came from another host (and, given, typed by another user)."""
    moved = copy.deepcopy(doc)
    moved["host"].update(name=host, hostname=host)
    moved["agent"]["name"] = host
    if user is not None:
        for where in (moved.get("user"), (moved.get("user") or {}).get("audit")):
            if where and where.get("name") == "alice":
                where["name"] = user
    return moved


def corpus() -> dict[str, dict[str, Any]]:
    """The golden documents on ``golden-host`` by alice, and again on ``db-1`` with alice's
    documents typed by ``bob``: host and user filters have something to tell apart."""
    golden = golden_documents()
    docs = dict(golden)
    docs.update({f"db-1/{name}": on_host(doc, "db-1", "bob") for name, doc in golden.items()})
    return docs


def get(doc: dict[str, Any], dotted: str) -> Any:
    """A field's value in a document (None when absent)."""
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def index_corpus(es: Elasticsearch, docs: dict[str, dict[str, Any]]) -> None:
    """The documents in the data stream `setup`'s own index template makes."""
    es.indices.put_index_template(name="logs-audit_collector", **template_body(Config()))
    helpers.bulk(es, ({"_op_type": "create", "_index": INDEX, "_id": name, "_source": doc}
                      for name, doc in docs.items()), refresh=True)


def hits(es: Elasticsearch, query: dict[str, Any]) -> set[str]:
    result = es.search(index=INDEX, query=query, size=1000)
    return {hit["_id"] for hit in result["hits"]["hits"]}
