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
