"""Signed checkpoints: every `every_docs` sealed documents or `every_s` seconds, a document
that signs the chain head (host.id, boot id, sequence, chain hash) with the host's key.

The checkpoint document is sealed into the chain right after the position it signs, so it
is itself covered by the next one. `verify --keys` checks each signature against the
collected public keys and the signed hash against the stored document at that sequence: a
rewritten and re-hashed index no longer matches what the host signed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collector.delivery.chain import ChainPoint, HostIdentity
from collector.delivery.settings import CheckpointConfig
from collector.delivery.signing import (
    KEY_FILE,
    SigningKey,
    SigningKeyError,
    checkpoint_payload,
    host_key,
)

log = logging.getLogger(__name__)

# Builds the checkpoint document from its `audit_collector.checkpoint` object.
CheckpointBuilder = Callable[[dict[str, Any]], dict[str, Any]]


def key_path(cfg: CheckpointConfig, state_dir: str) -> Path:
    return Path(cfg.key_file) if cfg.key_file else Path(state_dir) / KEY_FILE


class Checkpointer:
    """Decides when a checkpoint is due and builds it; the pipeline seals and writes it."""

    def __init__(self, cfg: CheckpointConfig, state_dir: str, host: HostIdentity,
                 build: CheckpointBuilder, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._cfg = cfg
        self._host = host
        self._build = build
        self._clock = clock
        self.key: SigningKey | None = None
        self.problem: str | None = None  # why nothing is signed, when it is not
        self._own_seq: int | None = None  # the last checkpoint document's sequence
        self._sealed_since = 0
        self._last_at = clock()
        path = key_path(cfg, state_dir)
        try:
            self.key, created = host_key(path)
        except SigningKeyError as exc:
            self.problem = str(exc)
            log.error("checkpoints are not signed: %s", exc)
            return
        if created:
            log.info("created the checkpoint key %s (key id %s)", path, self.key.id)

    @property
    def signing(self) -> str:
        """What the start document says about signing."""
        return "on" if self.key is not None else f"off: {self.problem}"

    def sealed(self) -> bool:
        """One more document sealed; True when that makes a checkpoint due by count."""
        self._sealed_since += 1
        return self.key is not None and self._sealed_since >= self._cfg.every_docs

    def due_by_time(self, head: ChainPoint) -> bool:
        return self.moved(head) and self._clock() - self._last_at >= self._cfg.every_s

    def moved(self, head: ChainPoint) -> bool:
        """Something was sealed since the last checkpoint (besides that checkpoint)."""
        return self.key is not None and head.seq != self._own_seq

    def document(self, head: ChainPoint) -> dict[str, Any]:
        """The checkpoint document signing head (call only when a key is loaded)."""
        assert self.key is not None
        payload = checkpoint_payload(self._host.id, self._host.boot_id, head.seq, head.hash)
        return self._build({
            "sequence": head.seq, "hash": head.hash, "boot_id": self._host.boot_id,
            "signature": self.key.sign(payload), "key_id": self.key.id,
            "every_s": int(self._cfg.every_s),
        })

    def written(self, own_seq: int) -> None:
        """The checkpoint document was sealed (at own_seq) and written."""
        self._own_seq = own_seq
        self._sealed_since = 0
        self._last_at = self._clock()
