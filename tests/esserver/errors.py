"""Elasticsearch-shaped error objects and exceptions."""

from __future__ import annotations

from typing import Any


class ESError(Exception):
    """An error that is rendered as a real Elasticsearch error response.

    ``err`` is the inner error object (``type``, ``reason``, optional ``caused_by`` and extra
    keys such as ``index``); ``root_cause`` defaults to ``err`` without ``caused_by``.
    """

    def __init__(
        self,
        status: int,
        err: dict[str, Any],
        root_cause: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(err.get("reason"))
        self.status = status
        self.err = err
        self.root_cause = root_cause

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.err, self.root_cause)


def error_body(
    status: int, err: dict[str, Any], root_cause: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    if root_cause is None:
        root_cause = [{k: v for k, v in err.items() if k != "caused_by"}]
    return {"error": {"root_cause": root_cause, **err}, "status": status}


def es_error(status: int, type_: str, reason: str, **extra: Any) -> ESError:
    return ESError(status, {"type": type_, "reason": reason, **extra})


def index_not_found(name: str) -> ESError:
    return ESError(
        404,
        {
            "type": "index_not_found_exception",
            "reason": f"no such index [{name}]",
            "resource.type": "index_or_alias",
            "resource.id": name,
            "index_uuid": "_na_",
            "index": name,
        },
    )


def illegal_argument(reason: str, status: int = 400) -> ESError:
    return es_error(status, "illegal_argument_exception", reason)


def auto_create_refused(index: str, why: str) -> ESError:
    """``IndexNotFoundException(why, index)`` of ``AutoCreateIndex``."""
    return ESError(404, {"type": "index_not_found_exception",
                         "reason": f"no such index [{index}] and {why}",
                         "index_uuid": "_na_", "index": index})


def template_forbids_auto_create(patterns: list[str]) -> ESError:
    """``IndexNotFoundException("composable template [..] forbids index auto creation")``: ES
    passes the message where the index name goes, so it reads ``no such index [...]``."""
    what = f"composable template [{', '.join(patterns)}] forbids index auto creation"
    return ESError(404, {"type": "index_not_found_exception", "reason": f"no such index [{what}]",
                         "index_uuid": "_na_", "index": what})


def circuit_breaking(durability: str = "TRANSIENT", wanted: int = 1_073_741_900,
                     limit: int = 1_020_054_732) -> dict[str, Any]:
    """The parent breaker tripping on a request (``[<http_request>]``)."""
    return {"type": "circuit_breaking_exception",
            "reason": f"[parent] Data too large, data for [<http_request>] would be "
            f"[{wanted}/{_human_bytes(wanted)}], which is larger than the limit of "
            f"[{limit}/{_human_bytes(limit)}], real usage: [{wanted - 1024}/"
            f"{_human_bytes(wanted - 1024)}], new bytes reserved: [1024/1kb], usages "
            "[model_inference=0/0b, inflight_requests=1024/1kb, request=0/0b, "
            "fielddata=0/0b, eql_sequence=0/0b]",
            "bytes_wanted": wanted, "bytes_limit": limit, "durability": durability}


def _human_bytes(n: int) -> str:
    for unit, size in (("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}b"
