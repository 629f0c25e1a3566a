"""Helpers shared by the test server's own tests."""

from __future__ import annotations

import http.client
from typing import Any

from tests.esserver import ESTestServer

TS = "2024-05-01T12:00:00.000Z"


def raw(srv: ESTestServer, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def ops(n: int, index: str = "audit", op: str = "create", start: int = 0) -> list[dict[str, Any]]:
    return [{"_op_type": op, "_index": index, "_id": f"id-{i}",
             "_source": {"@timestamp": TS, "seq": i, "host": {"name": f"h{i % 3}"}}}
            for i in range(start, start + n)]


def ids(resp: Any) -> list[str]:
    return [h["_id"] for h in resp["hits"]["hits"]]
