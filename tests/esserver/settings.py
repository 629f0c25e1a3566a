"""Index and cluster settings: flat/nested forms, time values, blocks, auto-create rules.

Blocks and their texts are Elasticsearch's ``IndexMetadata``/``Metadata`` cluster blocks;
``index.blocks.read_only_allow_delete`` is the block the disk allocator sets at the
flood-stage watermark (429, retryable by a client), ``write``/``read_only`` are 403.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ESError, illegal_argument


@dataclass(frozen=True)
class Block:
    setting: str
    id: int
    description: str
    status: int
    write: bool  # blocks document writes
    metadata_write: bool  # blocks mapping/settings changes (other than blocks themselves)

    @property
    def text(self) -> str:
        name = {403: "FORBIDDEN", 429: "TOO_MANY_REQUESTS"}[self.status]
        return f"[{name}/{self.id}/{self.description}]"


INDEX_BLOCKS = (
    Block("index.blocks.read_only", 5, "index read-only (api)", 403, True, True),
    Block("index.blocks.write", 8, "index write (api)", 403, True, False),
    Block("index.blocks.read_only_allow_delete", 12, "disk usage exceeded flood-stage watermark, "
          "index has read-only-allow-delete block", 429, True, True),
)
CLUSTER_BLOCKS = (
    Block("cluster.blocks.read_only", 6, "cluster read-only (api)", 403, True, True),
    Block("cluster.blocks.read_only_allow_delete", 13, "cluster read-only / allow delete (api)",
          403, True, True),
)

# Index settings that PUT /<index>/_settings may change on an open index.
DYNAMIC_INDEX_SETTINGS = frozenset({
    "index.number_of_replicas", "index.refresh_interval", "index.max_result_window",
    "index.lifecycle.name", "index.search.idle.after", "index.mapping.total_fields.limit",
    "index.hidden", "index.blocks.read", "index.blocks.metadata",
    *(b.setting for b in INDEX_BLOCKS),
})
STATIC_INDEX_SETTINGS = frozenset({
    "index.number_of_shards", "index.mode", "index.mapping.source.mode",
    "index.mapping.synthetic_source_keep", "index.codec", "index.sort.field", "index.sort.order",
})
CLUSTER_SETTINGS = frozenset({
    "action.auto_create_index", "cluster.logsdb.enabled",
    "cluster.routing.allocation.disk.watermark.low",
    "cluster.routing.allocation.disk.watermark.high",
    "cluster.routing.allocation.disk.watermark.flood_stage",
    *(b.setting for b in CLUSTER_BLOCKS),
})

_TIME_RE = re.compile(r"(-?\d+(?:\.\d+)?)(nanos|micros|ms|s|m|h|d)")
_TIME_UNITS = {"nanos": 1e-9, "micros": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
               "d": 86400.0}


def flatten_settings(settings: dict[str, Any] | None, prefix: str = "",
                     index_prefix: bool = True) -> dict[str, Any]:
    """Flat ``{"index.x.y": "value"}`` (strings, lists of strings, or None to reset)."""
    out: dict[str, Any] = {}
    for k, v in (settings or {}).items():
        key = prefix + k
        if isinstance(v, dict):
            out.update(flatten_settings(v, key + ".", index_prefix))
            continue
        if index_prefix and not key.startswith("index."):
            key = "index." + key
        out[key] = _setting_str(v)
    return out


def _setting_str(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return [_setting_str(x) for x in v]
    return str(v)


def nest_settings(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sorted(flat.items()):
        put_path(out, key.split("."), value)
    return out


def put_path(out: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """``out[a][b][c] = value`` for path (a, b, c), creating the objects on the way."""
    cur = out
    for part in path[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = cur[part] = {}
        cur = nxt
    cur[path[-1]] = value


def parse_time(value: str, setting: str) -> float | None:
    """Seconds of a time value; None for ``-1`` (disabled)."""
    if value.strip() == "-1":
        return None
    m = _TIME_RE.fullmatch(value.strip())
    if m is None:
        raise illegal_argument(f"failed to parse setting [{setting}] with value [{value}] as a "
                               "time value: unit is missing or unrecognized")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def is_true(settings: dict[str, Any], key: str) -> bool:
    return str(settings.get(key, "false")).lower() == "true"


def active_blocks(settings: dict[str, Any], blocks: tuple[Block, ...]) -> list[Block]:
    return [b for b in blocks if is_true(settings, b.setting)]


def block_error(blocks: list[Block], index: str | None) -> ESError:
    """The cluster_block_exception of blocks; its status is the highest of theirs, as in
    ``ClusterBlockException.status()`` (so the flood-stage block makes it a 429)."""
    texts = "".join(b.text + ";" for b in sorted(blocks, key=lambda b: b.id))
    reason = f"index [{index}] blocked by: {texts}" if index else f"blocked by: {texts}"
    return ESError(max(b.status for b in blocks),
                   {"type": "cluster_block_exception", "reason": reason})


def check_index_settings_update(flat: dict[str, Any], index: str, uuid: str) -> None:
    unknown = [k for k in flat if k not in DYNAMIC_INDEX_SETTINGS | STATIC_INDEX_SETTINGS]
    if unknown:
        raise illegal_argument(f"unknown setting [{unknown[0]}] please check that any required "
                               "plugins are installed, or check the breaking changes "
                               "documentation for removed settings")
    static = sorted(k for k in flat if k in STATIC_INDEX_SETTINGS)
    if static:
        raise illegal_argument(f"Can't update non dynamic settings [[{', '.join(static)}]] for "
                               f"open indices [[{index}/{uuid}]]")


def check_cluster_settings(flat: dict[str, Any], scope: str) -> None:
    for key, value in flat.items():
        if key not in CLUSTER_SETTINGS:
            raise illegal_argument(f"{scope} setting [{key}], not recognized")
        if key == "action.auto_create_index" and value is not None:
            AutoCreate(value)  # validates


class AutoCreate:
    """``action.auto_create_index``: true, false, or ``+pattern,-pattern,...``."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.enabled = True
        self.expressions: list[tuple[str, bool]] = []
        low = value.strip().lower()
        if low in ("true", "false"):
            self.enabled = low == "true"
            return
        for raw in value.split(","):
            pattern = raw.strip()
            if not pattern:
                raise illegal_argument(
                    f"Can't parse [{value}] for setting [action.auto_create_index] must be "
                    "either [true, false, or a comma separated list of index patterns]")
            include = not pattern.startswith("-")
            if pattern[0] in "+-":
                pattern = pattern[1:]
                if not pattern:
                    raise illegal_argument(
                        f"Can't parse [{value}] for setting [action.auto_create_index] must "
                        f"contain an index name after [{raw.strip()[0]}]")
            self.expressions.append((pattern, include))

    def refusal(self, index: str) -> str | None:
        """Why ``index`` may not be auto-created (None: it may)."""
        key = "[action.auto_create_index]"
        if not self.enabled:
            return f"{key} is [false]"
        if not self.expressions:
            return None
        for pattern, include in self.expressions:
            if fnmatch.fnmatchcase(index, pattern):
                return None if include else (
                    f"{key} contains [-{pattern}] which forbids automatic creation of the index")
        return f"{key} ([{self.value}]) doesn't match"
