"""The shipper thread: spool -> `_bulk` create requests -> acknowledged spool records.

Every record is sent as ``create`` with its deterministic ``_id`` into the data stream, and
each item's outcome is handled here (not by helpers.bulk):

* 2xx: stored. 409 (version_conflict_engine_exception): stored by an earlier attempt, a
  duplicate is counted and nothing more happens.
* errors about the document itself (mapping and parsing, see `outcomes`): written to the
  dead-letter NDJSON file with the server's reason and status, counted, and handed to the
  loss ledger (`on_reject`) so that an ``events_lost`` document explains the missing
  sequence. A record is settled only once its dead letter is on disk.
* every other item error (cluster blocks, security, index_not_found, index_closed, circuit
  breakers, 429, 5xx, and types this collector does not know): held and retried with
  backoff, up to ``retry.item_attempts`` rounds; then the batch is released and read again
  from the spool after a pause. Never dead-lettered; each type is logged at most once a
  minute and counted (``audit_collector_bulk_item_errors_total``).
* whole-request failures (connection errors, timeouts, any HTTP error status, 401 and 403
  included) are retried by tenacity with exponential backoff, jitter and a cap, for as long
  as the process lives; the waits end at once when the shipper is stopped. The log says so
  once per change of error class, never with a credential. After a 401 the configured key
  (or password) is read again, at most every `CREDENTIALS_RECHECK_S`: a key rotated on disk
  is used without a restart.
* 413 (a body over ``http.max_content_length`` or a proxy's limit): a small control request
  tells whether the server takes smaller bodies. If it does not, the limit is in flux (a
  proxy) and the batch waits with backoff; if it does, the batch is split in halves. A
  document is dead-lettered as too large only when, alone, it was answered 413
  ``retry.item_attempts`` times while smaller bodies were accepted and no body as large as
  it was accepted within the last `LARGEST_ACCEPTED_TTL_S`.

Before shipping, and every `GUARD_INTERVAL_S`, the data stream is checked
(`index.stream_guard`): a stream not built from the collector's template, or not in
index.mode standard, is refused (documents stay in the spool; `/health` says
``blocked: <reason>``) and checked again every `GUARD_BLOCKED_INTERVAL_S`, so that `setup`
takes effect at once; the first bulk into a stream that did not exist is followed by a
check of the stream it created.

`/health` and the metrics report shipping (`DeliveryMetrics.shipping`): last success,
consecutive failures, last error class. The spool is acknowledged only when every item of
the batch is settled, so a crash at any point replays records, which the server then
answers with 409.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import Counter
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
from collector.delivery.elasticsearch.credentials import auth_options
from collector.delivery.elasticsearch.index import GuardResult, stream_guard
from collector.delivery.elasticsearch.outcomes import (
    ItemVerdict,
    classify_item,
    describe,
    request_error_class,
)
from collector.delivery.elasticsearch.settings import dead_letter_path
from collector.delivery.metrics import DeliveryMetrics, error_type_label
from collector.delivery.settings import DeliverySettings
from collector.delivery.spool import Record, Spool

log = logging.getLogger(__name__)

# Told the (sequence, document) of records Elasticsearch rejected, once they are
# dead-lettered.
RejectCallback = Callable[[list[tuple[int, bytes]]], None]
TOO_LARGE = 413
GUARD_INTERVAL_S = 60.0  # re-check of the data stream's template and index.mode
GUARD_BLOCKED_INTERVAL_S = 5.0  # while refused: `setup` takes effect within seconds
ITEM_LOG_INTERVAL_S = 60.0  # one line per held item error type per interval
CONTROL_FRESH_S = 2.0  # an accepted body this recent proves the server takes small bodies
LARGEST_ACCEPTED_TTL_S = 600.0  # how long an accepted body size counts as evidence
CONTROL_BODY = b"\n"  # a bulk body without an action: answered 400, stores nothing
CREDENTIALS_RECHECK_S = 10.0  # after a 401, re-read the key file at most this often

MESSAGES = {
    "unauthorized": "Elasticsearch rejects the collector's credentials ({detail}); shipping "
                    "is retried with backoff until they are accepted: check "
                    "elasticsearch.api_key_file / api_key_env (or username and password)",
    "forbidden": "Elasticsearch refuses the collector's bulk requests ({detail}): its API "
                 "key or user lacks a privilege (create_doc and auto_configure on the data "
                 "stream); retried with backoff",
    "too_large": "Elasticsearch or a proxy answers 413 Request Entity Too Large ({detail}); "
                 "batches are split and retried with backoff",
}
DEFAULT_MESSAGE = ("shipping to Elasticsearch fails ({error_class}: {detail}); retried with "
                   "backoff, documents stay in the spool")


class _Stopping(Exception):
    """The shipper is stopping: abandon the batch (it stays in the spool)."""


class _TooLarge(Exception):
    """413: the bulk body is over the server's (or a proxy's) limit."""

    def __init__(self, body_bytes: int) -> None:
        super().__init__(f"HTTP 413 for a body of {body_bytes} bytes")
        self.body_bytes = body_bytes


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


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, (TransportError, ApiError, _BadResponse))


def _fingerprint(es: Any) -> bytes | None:
    """A digest of the configured credentials (None: none, or unreadable now)."""
    try:
        options = auth_options(es)
    except (OSError, ValueError):
        return None
    if not options:
        return None
    return hashlib.sha256(repr(sorted(options.items())).encode()).digest()


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
                self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                # Rejected documents hold typed bash lines: owner-only, whatever the umask.
                fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                             0o600)
                with os.fdopen(fd, "ab") as handle:
                    handle.write(line)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                log.error("cannot write dead letter %s to %s: %s; the document stays in the "
                          "spool", rec.id, self._path, exc.strerror)
                return False
        return True


class AcceptedBodies:
    """What the server took lately: evidence for judging a 413."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last_at: float | None = None
        self._largest = 0
        self._largest_at = 0.0

    def accepted(self, body_bytes: int) -> None:
        now = self._clock()
        self._last_at = now
        if body_bytes >= self._largest or now - self._largest_at > LARGEST_ACCEPTED_TTL_S:
            self._largest, self._largest_at = body_bytes, now

    def recent(self) -> bool:
        """A body was accepted within CONTROL_FRESH_S."""
        return self._last_at is not None and self._clock() - self._last_at <= CONTROL_FRESH_S

    def largest(self) -> int:
        """The largest body accepted within LARGEST_ACCEPTED_TTL_S (0: none)."""
        if self._clock() - self._largest_at > LARGEST_ACCEPTED_TTL_S:
            return 0
        return self._largest


class _RateLimitedLog:
    """At most one line per key per interval."""

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._last: dict[str, float] = {}

    def due(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -self._interval) < self._interval:
            return False
        self._last[key] = now
        return True


class Shipper:
    """Ships the spool to Elasticsearch from a daemon thread."""

    def __init__(self, cfg: DeliverySettings, spool: Spool, client: Elasticsearch,
                 on_reject: RejectCallback | None = None,
                 metrics: DeliveryMetrics | None = None) -> None:
        es = cfg.elasticsearch
        self._cfg = cfg
        self._on_reject = on_reject or (lambda records: None)
        self._metrics = metrics or DeliveryMetrics()
        self._health = self._metrics.shipping
        self._health.activate()
        self._spool = spool
        self._client = client
        self._index = es.data_stream
        self._retry = es.retry
        self._window = BatchWindow(cfg.batch)
        self.dead_letters = DeadLetterFile(dead_letter_path(cfg))
        self._stop = threading.Event()
        self._draining = threading.Event()
        # Ids already settled in a batch that had to be released: not sent again.
        self._settled: set[str] = set()
        self._accepted = AcceptedBodies()
        self._too_large_strikes: dict[str, int] = {}
        self._item_log = _RateLimitedLog(ITEM_LOG_INTERVAL_S)
        self._credentials_checked_at = -CREDENTIALS_RECHECK_S
        self._credentials = _fingerprint(es)
        self._guard: GuardResult | None = None
        self._guard_due = 0.0
        self._thread = threading.Thread(target=self._run, name="shipper", daemon=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread.start()

    def drain(self, deadline: float) -> bool:
        """Ship without waiting for full batches until the spool is empty or the monotonic
        deadline passes; True when everything was acknowledged. Returns at once while the
        data stream is refused."""
        self._draining.set()
        self._spool.wake()
        while self._spool.pending()[0] > 0 and self._thread.is_alive():
            if time.monotonic() >= deadline or self._health.blocked_reason:
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
        if not self._batch_due() or not self._stream_allowed():
            return
        batch = self._spool.read_batch(self._window.max_docs, self._window.max_bytes)
        self._window.cut()
        if not batch:
            return
        if self._deliver(batch):
            self._spool.ack(batch)
            self._settled.clear()
            self._too_large_strikes.clear()
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

    # ------------------------------------------------------------------ the guard

    def _stream_allowed(self) -> bool:
        """Check the data stream when due; False (after a pause) while it is refused or
        cannot be checked."""
        now = time.monotonic()
        if now >= self._guard_due:
            try:
                result = stream_guard(self._client, self._cfg)
            except (ApiError, TransportError) as exc:
                self._metrics.set_reachable(isinstance(exc, ApiError))
                self._request_failed(exc)
                self._pause()
                return False
            self._metrics.set_reachable(True)
            self._apply_guard(result)
            self._guard_due = now + (GUARD_INTERVAL_S if result.ok else GUARD_BLOCKED_INTERVAL_S)
        if self._guard is not None and not self._guard.ok:
            self._stop.wait(min(1.0, max(0.0, self._guard_due - time.monotonic())))
            return False
        return True

    def _apply_guard(self, result: GuardResult) -> None:
        previous, self._guard = self._guard, result
        self._health.set_guard(result.label, None if result.ok else result.reason)
        if previous is not None and previous.label == result.label:
            return
        if not result.ok:
            log.error("refusing to ship into Elasticsearch: %s; documents stay in the spool, "
                      "checked again every %g s", result.reason, GUARD_BLOCKED_INTERVAL_S)
        elif result.unverified:
            log.warning("shipping without checking the data stream: %s", result.reason)
        elif previous is not None and not previous.ok:
            log.info("data stream check passed (%s); shipping", result.reason)

    def _guard_after_success(self) -> None:
        """The first bulk into a stream that did not exist created it: check it now."""
        if self._guard is not None and not self._guard.stream_exists:
            self._guard_due = 0.0

    # ------------------------------------------------------------------ one batch

    def _deliver(self, records: list[Record]) -> bool:
        """Settle every record; False when the rest must be retried later."""
        pending = [rec for rec in records if rec.id not in self._settled]
        rounds = 0
        while pending:
            try:
                items = self._send(pending)
            except _TooLarge as exc:
                return self._deliver_too_large(pending, exc.body_bytes)
            except _Stopping:
                return False
            pending = self._settle(pending, items)
            if not pending:
                self._note_success()
                return True
            rounds += 1
            self._metrics.retries.labels(kind="item").inc(len(pending))
            if rounds >= self._retry.item_attempts:
                log.debug("shipper: %d documents still held after %d rounds; the batch will "
                          "be retried", len(pending), rounds)
                self._stop.wait(self._retry.max_s)
                return False
            if self._stop.wait(self._backoff_s(rounds)):
                return False
        return True

    def _backoff_s(self, attempt: int) -> float:
        return min(self._retry.max_s, self._retry.initial_s * (2 ** max(0, attempt - 1)))

    def _pause(self) -> bool:
        """Back off after a failure (longer with each consecutive one); True if stopping."""
        return self._stop.wait(self._backoff_s(self._health.consecutive))

    # ------------------------------------------------------------------ 413

    def _deliver_too_large(self, records: list[Record], body_bytes: int) -> bool:
        self._metrics.retries.labels(kind="request").inc()
        self._note_failure("too_large", f"HTTP 413 for {len(records)} documents in "
                           f"{body_bytes} bytes")
        if not self._server_takes_smaller_bodies():
            self._pause()  # everything is refused: a limit in flux; splitting cannot help
            return False
        if len(records) > 1:
            middle = len(records) // 2
            return self._deliver(records[:middle]) and self._deliver(records[middle:])
        return self._deliver_alone_too_large(records[0], body_bytes)

    def _server_takes_smaller_bodies(self) -> bool:
        """True when a body was accepted just now, or a one-byte control request is not
        answered 413."""
        if self._accepted.recent():
            return True
        try:
            self._client.bulk(index=self._index, operations=CONTROL_BODY)
        except ApiError as exc:
            return exc.meta.status != TOO_LARGE
        except TransportError:
            return False
        return True

    def _deliver_alone_too_large(self, rec: Record, body_bytes: int) -> bool:
        """One document answered 413 while smaller bodies get through."""
        largest = self._accepted.largest()
        if body_bytes <= largest:
            self._pause()  # a body at least this large was taken lately: not its size
            return False
        strikes = self._too_large_strikes.get(rec.id, 0) + 1
        self._too_large_strikes[rec.id] = strikes
        if strikes < self._retry.item_attempts:
            self._pause()
            return False
        error = {"type": "request_too_large", "document_bytes": body_bytes,
                 "largest_accepted_bytes": largest, "attempts": strikes,
                 "reason": f"the document alone ({body_bytes} bytes in its bulk request) was "
                           f"answered 413 Request Entity Too Large {strikes} times while "
                           f"smaller requests were accepted (largest accepted lately: "
                           f"{largest} bytes)"}
        return not self._reject([(rec, TOO_LARGE, error)])

    # ------------------------------------------------------------------ requests

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
        if exc is None:
            return
        self._request_failed(exc)
        wait = state.next_action.sleep if state.next_action else 0.0
        log.debug("bulk request failed (%s); attempt %d, retrying in %.2fs", describe(exc),
                  state.attempt_number, wait)

    def _request_failed(self, exc: BaseException) -> None:
        error_class = request_error_class(exc)
        self._note_failure(error_class, describe(exc))
        if error_class == "unauthorized":
            self._reload_credentials()

    def _bulk_once(self, body: bytes, count: int) -> list[dict[str, Any]]:
        if self._stop.is_set():
            raise _Stopping
        started = time.monotonic()
        try:
            response = self._client.bulk(index=self._index, operations=body)
        except ApiError as exc:
            self._metrics.set_reachable(True)
            if exc.meta.status == TOO_LARGE:
                raise _TooLarge(len(body)) from exc
            raise
        except TransportError:
            self._metrics.set_reachable(False)
            raise
        self._metrics.bulk_latency.observe(time.monotonic() - started)
        self._metrics.set_reachable(True)
        items = response.body.get("items") if isinstance(response.body, dict) else None
        if not isinstance(items, list) or len(items) != count:
            raise _BadResponse("bulk response does not list every item")
        self._accepted.accepted(len(body))
        return items

    def _reload_credentials(self) -> None:
        """Use the credentials the configuration names now, if they changed since."""
        now = time.monotonic()
        if now - self._credentials_checked_at < CREDENTIALS_RECHECK_S:
            return
        self._credentials_checked_at = now
        fingerprint = _fingerprint(self._cfg.elasticsearch)
        if fingerprint is None or fingerprint == self._credentials:
            return
        self._credentials = fingerprint
        self._client = self._client.options(**auth_options(self._cfg.elasticsearch))
        log.warning("the Elasticsearch credentials changed since they were read; using the "
                    "new ones")

    # ------------------------------------------------------------------ health and log

    def _note_failure(self, error_class: str, detail: str, log_change: bool = True) -> None:
        if self._health.failed(error_class, detail) and log_change:
            template = MESSAGES.get(error_class, DEFAULT_MESSAGE)
            level = logging.ERROR if error_class in ("unauthorized", "forbidden") \
                else logging.WARNING
            log.log(level, template.format(error_class=error_class, detail=detail))

    def _note_success(self) -> None:
        failures, last_class = self._health.succeeded()
        self._guard_after_success()
        if failures:
            log.info("shipping resumed after %d failed attempts (last: %s)", failures,
                     last_class)

    # ------------------------------------------------------------------ item outcomes

    def _settle(self, records: list[Record], items: list[dict[str, Any]]) -> list[Record]:
        """Count and settle each item; the records to retry."""
        retry: list[Record] = []
        held: dict[str, tuple[ItemVerdict, int]] = {}
        held_count: Counter[str] = Counter()
        rejected: list[tuple[Record, int, Any]] = []
        stored = duplicates = 0
        for rec, entry in zip(records, items):
            result = entry.get("create") or next(iter(entry.values()), {})
            status = int(result.get("status", 0))
            if 200 <= status < 300:
                stored += 1
            elif status == 409:
                duplicates += 1
            else:
                verdict = classify_item(status, result.get("error"))
                if verdict.document:
                    rejected.append((rec, status, result.get("error")))
                else:
                    retry.append(rec)
                    held.setdefault(verdict.error_type, (verdict, status))
                    held_count[verdict.error_type] += 1
                continue
            self._settled.add(rec.id)
            self._too_large_strikes.pop(rec.id, None)
        self._metrics.shipped.inc(stored)
        self._metrics.documents.labels(output="elasticsearch").inc(stored)
        self._metrics.duplicates.inc(duplicates)
        if held:
            self._note_held(held, held_count)
        return retry + self._reject(rejected)

    def _note_held(self, held: dict[str, tuple[ItemVerdict, int]],
                   counts: Counter[str]) -> None:
        """Count held item errors, log each type at most once per interval, and record one
        failed attempt (of the most frequent type's class)."""
        for error_type, (verdict, status) in held.items():
            self._metrics.item_errors.labels(type=error_type_label(error_type),
                                             outcome="retried").inc(counts[error_type])
            if not self._item_log.due(error_type):
                continue
            what = ("a cluster condition" if verdict.known
                    else "an error type the collector does not know")
            log.warning("Elasticsearch held back %d documents with %s (HTTP %d): %s; %s, not "
                        "an error about the documents: retried, they stay in the spool",
                        counts[error_type], error_type or "an untyped error", status,
                        verdict.reason, what)
        top, _ = counts.most_common(1)[0]
        verdict, status = held[top]
        self._note_failure(verdict.error_class, f"HTTP {status} {top} for {counts[top]} "
                           f"documents: {verdict.reason}", log_change=False)

    def _reject(self, rejected: list[tuple[Record, int, Any]]) -> list[Record]:
        """Dead-letter rejected records; those whose dead letter could not be written are
        returned, unsettled (they stay in the spool and are tried again)."""
        written: list[Record] = []
        unwritten: list[Record] = []
        for rec, status, error in rejected:
            if self.dead_letters.write(rec, status, error):
                self._settled.add(rec.id)
                self._too_large_strikes.pop(rec.id, None)
                written.append(rec)
                error_type = error.get("type") if isinstance(error, dict) else None
                self._metrics.item_errors.labels(type=error_type_label(error_type),
                                                 outcome="dead_lettered").inc()
            else:
                unwritten.append(rec)
        if written:
            self._metrics.dead_letters.inc(len(written))
            self._on_reject([(rec.seq, rec.data) for rec in written])
        return unwritten
