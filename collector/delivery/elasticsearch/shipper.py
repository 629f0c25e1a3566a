"""The shipper thread: spool -> `_bulk` create requests -> acknowledged spool records.

Every record is sent as ``create`` with its deterministic ``_id`` into the data stream, and
each item's outcome is handled here (not by helpers.bulk):

* 2xx: stored. 409 (version_conflict_engine_exception): stored by an earlier attempt, a
  duplicate is counted and nothing more happens.
* 429 and 5xx per item, and item errors about the cluster rather than the document
  (index_not_found, cluster_block, security...): retried with backoff, up to
  ``retry.item_attempts`` rounds; then the batch is released and read again from the spool
  after a pause. Never dropped.
* other 4xx per item (mapping and parsing errors): written to the dead-letter NDJSON file
  with the server's reason and status, counted, and handed to the loss ledger (`on_reject`)
  so that an ``events_lost`` document explains the missing sequence. A record is settled
  only once its dead letter is on disk; until then it stays in the spool.
* whole-request failures (connection errors, timeouts, any HTTP error status) are retried by
  tenacity with exponential backoff, jitter and a cap, for as long as the process lives; the
  waits end at once when the shipper is stopped. A 413 splits the batch in halves.

The spool is acknowledged only when every item of the batch is settled, so a crash at any
point replays records, which the server then answers with 409.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_when_event_set,
    wait_exponential,
    wait_random,
)

from collector.delivery.elasticsearch.batching import BatchWindow
from collector.delivery.metrics import DeliveryMetrics
from collector.delivery.settings import DeliverySettings
from collector.delivery.spool import Record, Spool

log = logging.getLogger(__name__)

# Told the (sequence, document) of records Elasticsearch rejected, once they are
# dead-lettered.
RejectCallback = Callable[[list[tuple[int, bytes]]], None]
RETRY_ITEM_STATUSES = frozenset({429})
# Item errors about the cluster, not the document: retried like 429, never dead-lettered.
RETRY_ITEM_ERRORS = frozenset({
    "index_not_found_exception", "cluster_block_exception", "unavailable_shards_exception",
    "es_rejected_execution_exception", "security_exception", "circuit_breaking_exception",
})
TOO_LARGE = 413


class _Stopping(Exception):
    """The shipper is stopping: abandon the batch (it stays in the spool)."""


class _TooLarge(Exception):
    """413: the bulk body is over the server's limit."""


class _BadResponse(Exception):
    """A bulk response that does not answer each item; retried like a server error."""


def bulk_body(records: list[Record]) -> bytes:
    parts: list[bytes] = []
    for rec in records:
        parts.append(orjson.dumps({"create": {"_id": rec.id}}))
        parts.append(b"\n")
        parts.append(rec.data)
        parts.append(b"\n")
    return b"".join(parts)


def _item_retriable(status: int, error: Any) -> bool:
    if status in RETRY_ITEM_STATUSES or status >= 500 or status == 0:
        return True
    return isinstance(error, dict) and error.get("type") in RETRY_ITEM_ERRORS


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, TransportError | ApiError | _BadResponse)


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, ApiError):
        return f"HTTP {exc.meta.status} {exc.message}"
    return f"{type(exc).__name__}: {exc}" if exc else "unknown error"


class DeadLetterFile:
    """Rejected documents, one JSON object per line: time, status, error, _id, document."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def write(self, rec: Record, status: int, error: Any) -> bool:
        """Append one rejected document durably; False when it could not be written."""
        line = orjson.dumps({
            "@timestamp": datetime.now(timezone.utc).isoformat(),
            "status": status,
            "error": error,
            "_id": rec.id,
            "sequence": rec.seq,
            "document": orjson.Fragment(rec.data),
        }) + b"\n"
        with self._lock:
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                with open(self._path, "ab") as handle:
                    handle.write(line)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                log.error("cannot write dead letter %s to %s: %s; the document stays in the "
                          "spool", rec.id, self._path, exc.strerror)
                return False
        return True


class Shipper:
    """Ships the spool to Elasticsearch from a daemon thread."""

    def __init__(self, cfg: DeliverySettings, spool: Spool, client: Elasticsearch,
                 on_reject: RejectCallback | None = None,
                 metrics: DeliveryMetrics | None = None) -> None:
        es = cfg.elasticsearch
        self._on_reject = on_reject or (lambda records: None)
        self._metrics = metrics or DeliveryMetrics()
        self._spool = spool
        self._client = client
        self._index = es.data_stream
        self._retry = es.retry
        self._window = BatchWindow(cfg.batch)
        dead_letter = es.dead_letter_file or str(Path(cfg.state_dir) / "dead-letter.ndjson")
        self.dead_letters = DeadLetterFile(Path(dead_letter))
        self._stop = threading.Event()
        self._draining = threading.Event()
        # Ids already settled in a batch that had to be released: not sent again.
        self._settled: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="shipper", daemon=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread.start()

    def drain(self, deadline: float) -> bool:
        """Ship without waiting for full batches until the spool is empty or the monotonic
        deadline passes; True when everything was acknowledged."""
        self._draining.set()
        self._spool.wake()
        while self._spool.pending()[0] > 0 and self._thread.is_alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return self._spool.pending()[0] == 0

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop the thread; a batch in flight stays unacknowledged in the spool."""
        self._stop.set()
        self._spool.wake()
        self._thread.join(timeout_s)

    # ------------------------------------------------------------------ main loop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._ship_next_batch()
            except Exception:  # the thread must outlive any surprise; the spool keeps data
                log.exception("shipper: unexpected error; retrying in %.1fs", self._retry.max_s)
                self._spool.release()
                self._stop.wait(self._retry.max_s)

    def _ship_next_batch(self) -> None:
        if not self._batch_due():
            return
        batch = self._spool.read_batch(self._window.max_docs, self._window.max_bytes)
        self._window.cut()
        if not batch:
            return
        if self._deliver(batch):
            self._spool.ack(batch)
            self._settled.clear()
        else:
            self._spool.release()

    def _batch_due(self) -> bool:
        docs, nbytes = self._spool.pending()
        if nbytes <= 0:
            self._window.due(0, 0)
            self._spool.wait_for_data(0.2)
            return False
        if self._draining.is_set() or self._window.due(docs, nbytes):
            return True
        self._stop.wait(min(self._window.remaining_s(), 0.05))
        return False

    # ------------------------------------------------------------------ one batch

    def _deliver(self, batch: list[Record]) -> bool:
        """Settle every record of the batch; False when it must be retried later."""
        pending = [rec for rec in batch if rec.id not in self._settled]
        rounds = 0
        while pending:
            try:
                items = self._send(pending)
            except _TooLarge:
                return self._deliver_halves(pending)
            except _Stopping:
                return False
            pending = self._settle(pending, items)
            if not pending:
                return True
            rounds += 1
            self._metrics.retries.labels(kind="item").inc(len(pending))
            if rounds >= self._retry.item_attempts:
                log.warning("shipper: %d documents still rejected after %d rounds; the batch "
                            "will be retried", len(pending), rounds)
                self._stop.wait(self._retry.max_s)
                return False
            if self._stop.wait(self._backoff_s(rounds)):
                return False
        return True

    def _deliver_halves(self, records: list[Record]) -> bool:
        if len(records) == 1:
            return not self._reject([(records[0], TOO_LARGE, {
                "type": "request_too_large", "reason": "document over the bulk limit"})])
        middle = len(records) // 2
        return self._deliver(records[:middle]) and self._deliver(records[middle:])

    def _backoff_s(self, attempt: int) -> float:
        return min(self._retry.max_s, self._retry.initial_s * (2 ** (attempt - 1)))

    def _send(self, records: list[Record]) -> list[dict[str, Any]]:
        body = bulk_body(records)
        retrying = Retrying(
            retry=retry_if_exception(_retriable),
            # Exponential from initial_s, capped at max_s, plus up to initial_s of jitter.
            wait=wait_exponential(multiplier=self._retry.initial_s, max=self._retry.max_s)
            + wait_random(0, self._retry.initial_s),
            stop=stop_when_event_set(self._stop),
            sleep=self._sleep,
            before_sleep=self._note_request_retry,
            reraise=True,
        )
        try:
            return retrying(self._bulk_once, body, len(records))
        except (TransportError, ApiError, _BadResponse) as exc:
            raise _Stopping from exc  # only reached once stop is set

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _note_request_retry(self, state: RetryCallState) -> None:
        self._metrics.retries.labels(kind="request").inc()
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("bulk request failed (%s); attempt %d, retrying in %.2fs",
                    _describe(exc), state.attempt_number, wait)

    def _bulk_once(self, body: bytes, count: int) -> list[dict[str, Any]]:
        if self._stop.is_set():
            raise _Stopping
        started = time.monotonic()
        try:
            response = self._client.bulk(index=self._index, operations=body)
        except ApiError as exc:
            self._metrics.set_reachable(True)
            if exc.meta.status == TOO_LARGE:
                raise _TooLarge from exc
            raise
        except TransportError:
            self._metrics.set_reachable(False)
            raise
        self._metrics.bulk_latency.observe(time.monotonic() - started)
        self._metrics.set_reachable(True)
        items = response.body.get("items") if isinstance(response.body, dict) else None
        if not isinstance(items, list) or len(items) != count:
            raise _BadResponse("bulk response does not list every item")
        return items

    # ------------------------------------------------------------------ item outcomes

    def _settle(self, records: list[Record], items: list[dict[str, Any]]) -> list[Record]:
        """Count and settle each item; the records to retry."""
        retry: list[Record] = []
        rejected: list[tuple[Record, int, Any]] = []
        stored = duplicates = 0
        for rec, entry in zip(records, items, strict=True):
            result = entry.get("create") or next(iter(entry.values()), {})
            status = int(result.get("status", 0))
            if 200 <= status < 300:
                stored += 1
            elif status == 409:
                duplicates += 1
            elif _item_retriable(status, result.get("error")):
                retry.append(rec)
                continue
            else:
                rejected.append((rec, status, result.get("error")))
                continue
            self._settled.add(rec.id)
        self._metrics.shipped.inc(stored)
        self._metrics.documents.labels(output="elasticsearch").inc(stored)
        self._metrics.duplicates.inc(duplicates)
        return retry + self._reject(rejected)

    def _reject(self, rejected: list[tuple[Record, int, Any]]) -> list[Record]:
        """Dead-letter rejected records; those whose dead letter could not be written are
        returned, unsettled (they stay in the spool and are tried again)."""
        written: list[Record] = []
        unwritten: list[Record] = []
        for rec, status, error in rejected:
            if self.dead_letters.write(rec, status, error):
                self._settled.add(rec.id)
                written.append(rec)
            else:
                unwritten.append(rec)
        if written:
            self._metrics.dead_letters.inc(len(written))
            self._on_reject([(rec.seq, rec.data) for rec in written])
        return unwritten

