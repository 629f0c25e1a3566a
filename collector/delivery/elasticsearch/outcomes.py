"""What an Elasticsearch error means for the shipper: a document to dead-letter, or a
condition of the cluster (or of the way to it) to wait out.

Per item, the error's ``type`` decides (with its ``caused_by`` chain), not the status: a
400 ``index_closed_exception`` is about the index, a 403 ``cluster_block_exception`` about
the disk. Only an allow-list of errors about the document itself (mapping and parsing) is
dead-lettered; every other type, including types this collector does not know, is held and
retried, so a new cluster condition delays documents instead of losing them.

Whole requests are put into a few classes (unauthorized, forbidden, too_large, rejected,
unavailable, connection, timeout...) for `/health`, the metrics and the log; their detail is
one short line (a proxy's HTML error page is reduced to its title).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TlsError, TransportError
from elasticsearch import ApiError

# Errors about the document's content: retrying the same bytes cannot succeed.
DOCUMENT_ERRORS = frozenset({
    "mapper_parsing_exception",  # up to 8.7
    "document_parsing_exception",  # 8.8 and later
    "strict_dynamic_mapping_exception",
    "mapper_exception",
    "x_content_parse_exception",
    "json_parse_exception",
    "parse_exception",
})
# Only about the document when the reason names a field (an immense term, a value that
# does not fit the mapping); otherwise (e.g. a request the index refuses) it is held.
FIELD_ERRORS = frozenset({"illegal_argument_exception"})
_FIELD_RE = re.compile(r"\bfield", re.IGNORECASE)
# Conditions of the cluster known to pass (or to be fixed by an operator): held, retried.
ERROR_CLASSES = {
    "cluster_block_exception": "index_blocked",  # flood stage (429), write block (403)
    "security_exception": "forbidden",
    "index_not_found_exception": "index_not_found",  # auto-create off
    "index_closed_exception": "index_closed",
    "es_rejected_execution_exception": "rejected",
    "circuit_breaking_exception": "rejected",
    "unavailable_shards_exception": "unavailable",
    "no_shard_available_action_exception": "unavailable",
    "primary_missing_action_exception": "unavailable",
    "node_not_connected_exception": "unavailable",
    "node_disconnected_exception": "unavailable",
    "connect_transport_exception": "unavailable",
    "receive_timeout_transport_exception": "unavailable",
    "process_cluster_event_timeout_exception": "unavailable",
    "master_not_discovered_exception": "unavailable",
    "not_master_exception": "unavailable",
    "shard_not_found_exception": "unavailable",
    "illegal_index_shard_state_exception": "unavailable",
    "elasticsearch_timeout_exception": "unavailable",
    "timeout_exception": "unavailable",
    "resource_already_exists_exception": "unavailable",  # a racing auto-create
}
UNKNOWN_ITEM_CLASS = "item_error"
DETAIL_CHARS = 240


@dataclass(frozen=True)
class ItemVerdict:
    document: bool  # True: dead-letter it; False: hold and retry
    error_type: str
    error_class: str  # for /health: index_blocked, forbidden, rejected, ...
    known: bool  # False: a type this collector does not know (logged as such)
    reason: str


def _type_chain(error: dict[str, Any]) -> list[str]:
    """The error's type, its caused_by types, and its root_cause types."""
    types: list[str] = []
    node: Any = error
    while isinstance(node, dict) and len(types) < 16:
        types.append(str(node.get("type", "")))
        node = node.get("caused_by")
    for root in error.get("root_cause") or []:
        if isinstance(root, dict):
            types.append(str(root.get("type", "")))
    return types


def _reasons(error: dict[str, Any]) -> str:
    parts: list[str] = []
    node: Any = error
    while isinstance(node, dict) and len(parts) < 16:
        parts.append(str(node.get("reason") or ""))
        node = node.get("caused_by")
    return " / ".join(p for p in parts if p)


def classify_item(status: int, error: Any) -> ItemVerdict:
    """What to do with a bulk item that failed with this status and error object."""
    if not isinstance(error, dict):
        error = {"type": "", "reason": str(error or "")}
    error_type = str(error.get("type") or "")
    reason = one_line(_reasons(error))
    chain = _type_chain(error)
    cluster = next((t for t in chain if t in ERROR_CLASSES), None)
    if cluster is not None:
        return ItemVerdict(False, error_type, ERROR_CLASSES[cluster], True, reason)
    if status == 429 or status >= 500 or status == 0:
        return ItemVerdict(False, error_type, "rejected" if status == 429 else "unavailable",
                           True, reason)
    if error_type in DOCUMENT_ERRORS or (error_type in FIELD_ERRORS
                                         and _FIELD_RE.search(reason)):
        return ItemVerdict(True, error_type, "document", True, reason)
    return ItemVerdict(False, error_type, UNKNOWN_ITEM_CLASS, False, reason)


# --------------------------------------------------------------------------- requests


def request_error_class(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return status_class(exc.meta.status)
    if isinstance(exc, ConnectionTimeout):
        return "timeout"
    if isinstance(exc, TlsError):
        return "tls"
    if isinstance(exc, TransportConnectionError):
        return "connection"
    if isinstance(exc, TransportError):
        return "transport"
    return "bad_response"


def status_class(status: int) -> str:
    return {401: "unauthorized", 403: "forbidden", 413: "too_large", 429: "rejected",
            502: "unavailable", 503: "unavailable", 504: "unavailable"}.get(
        status, "server_error" if status >= 500 else f"http_{status}")


def describe(exc: BaseException) -> str:
    """One short line about a failed request (status, error type and reason); never a
    header or a credential (the client's errors hold neither)."""
    if isinstance(exc, ApiError):
        return one_line(f"HTTP {exc.meta.status} {_api_summary(exc.body)}".rstrip())
    if isinstance(exc, TransportError):
        return one_line(f"{type(exc).__name__}: {_transport_cause(exc)}")
    return one_line(f"{type(exc).__name__}: {exc}")


def _api_summary(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return f"{error.get('type', '')}: {error.get('reason', '')}"
        return str(error or "")
    if isinstance(body, (bytes, str)):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        if title:
            return html.unescape(title.group(1))
        return html.unescape(re.sub(r"<[^>]+>", " ", text))
    return ""


def _transport_cause(exc: TransportError) -> str:
    """The innermost OS error's text ("connection refused") or the transport's message."""
    cause: BaseException | None = exc
    seen = 0
    while cause is not None and seen < 16:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[0].lower() + cause.strerror[1:]
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return str(exc.message) if hasattr(exc, "message") else str(exc)


def transport_reason(exc: TransportError) -> str:
    return one_line(_transport_cause(exc))


def one_line(text: str, limit: int = DETAIL_CHARS) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
