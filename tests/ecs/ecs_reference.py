"""The ECS project's own field definitions, and a check of documents against them.

The definitions are the generated flat file of the npm package @elastic/ecs, pinned to the
ecs.version our documents declare, fetched and verified by scripts/fetch-ecs.sh (`make
setup` runs it) into .cache/ecs/<version>/. Without them a test fails: an ECS check that
quietly skips would let the documents drift.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from collector.fields import CUSTOM_ROOT, FIELDS

ECS_PACKAGE_VERSION = "8.11.5"
ECS_DIR = Path(__file__).resolve().parents[2] / ".cache" / "ecs" / ECS_PACKAGE_VERSION
TEXT_TYPES = {"keyword", "constant_keyword", "wildcard", "match_only_text", "text"}


@functools.lru_cache(maxsize=1)
def ecs_flat() -> dict[str, Any]:
    path = ECS_DIR / "ecs_flat.json"
    if not path.is_file():
        pytest.fail(f"ECS {ECS_PACKAGE_VERSION} field definitions missing at {path}: "
                    "run scripts/fetch-ecs.sh (make setup does)")
    return json.loads(path.read_text())


def allowed(field: str) -> dict[str, Any]:
    """A field's allowed values: name -> definition (expected_event_types for categories)."""
    return {v["name"]: v for v in ecs_flat()[field].get("allowed_values", [])}


@functools.lru_cache(maxsize=1)
def entry_meta_types() -> frozenset[str]:
    """ECS lists them in the description ("Values include: init(e.g systemd), sshd, ...")."""
    text = ecs_flat()["process.entry_leader.entry_meta.type"]["description"]
    listed = text.split("Values include:", 1)[1].split("\n", 1)[0]
    return frozenset(re.sub(r"\(.*?\)", "", v).strip() for v in listed.split(","))


def leaves(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value for every non-object value (arrays are values)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(leaves(value, f"{path}."))
        else:
            out[path] = value
    return out


def _is_date(value: Any) -> bool:
    if not isinstance(value, str) or not value.endswith("Z"):
        return False
    try:
        datetime.datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return False
    return re.fullmatch(r"\.\d{1,9}", value[19:-1]) is not None or value[19:-1] == ""


def _fits(mapping_type: str, value: Any) -> bool:
    if mapping_type in TEXT_TYPES:
        return isinstance(value, str)
    if mapping_type == "long":
        return isinstance(value, int) and not isinstance(value, bool)
    if mapping_type == "boolean":
        return isinstance(value, bool)
    if mapping_type in ("date", "date_nanos"):
        return _is_date(value)
    return False


def _value_problems(path: str, mapping_type: str, value: Any, arrays: bool) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not arrays:
        return [f"{path}: an array where ECS expects one value"]
    bad = [v for v in values if not _fits(mapping_type, v)]
    return [f"{path}: {bad[0]!r} is not a {mapping_type}"] if bad else []


def field_problems(path: str, value: Any) -> list[str]:
    """One field of a document against ECS (or, under audit_collector, our own table)."""
    if path not in FIELDS:
        return [f"{path}: not in collector/fields.py"]
    declared = FIELDS[path][0]
    if path == CUSTOM_ROOT or path.startswith(CUSTOM_ROOT + "."):
        return _value_problems(path, declared, value, arrays=True)
    ecs = ecs_flat().get(path)
    if ecs is None:
        return [f"{path}: not an ECS {ECS_PACKAGE_VERSION} field (and not under "
                f"{CUSTOM_ROOT}.*)"]
    problems = []
    if declared != ecs["type"]:
        problems.append(f"{path}: declared {declared}, ECS says {ecs['type']}")
    arrays = "array" in ecs.get("normalize", [])
    return problems + _value_problems(path, ecs["type"], value, arrays)


def classification_problems(event: dict[str, Any]) -> list[str]:
    problems = []
    if event.get("kind") not in allowed("event.kind"):
        problems.append(f"event.kind {event.get('kind')!r} is not an ECS value")
    categories = allowed("event.category")
    for category in event.get("category", []):
        if category not in categories:
            problems.append(f"event.category {category!r} is not an ECS value")
            continue
        expected = categories[category].get("expected_event_types", [])
        for etype in event.get("type", []):
            if etype not in expected:
                problems.append(f"event.type {etype!r} is not expected with category "
                                f"{category!r} (ECS: {expected})")
    for etype in event.get("type", []):
        if etype not in allowed("event.type"):
            problems.append(f"event.type {etype!r} is not an ECS value")
    if event.get("outcome") not in allowed("event.outcome"):
        problems.append(f"event.outcome {event.get('outcome')!r} is not an ECS value")
    return problems


def document_problems(doc: dict[str, Any]) -> list[str]:
    """Everything in a document that is not ECS 8.11 (or our declared audit_collector.*)."""
    problems: list[str] = []
    flat = leaves(doc)
    for path, value in flat.items():
        problems += field_problems(path, value)
    problems += classification_problems(doc.get("event", {}))
    if flat.get("event.dataset") != flat.get("data_stream.dataset"):
        problems.append("event.dataset differs from data_stream.dataset")
    if "process.args" in flat and flat.get("process.args_count") != len(flat["process.args"]):
        problems.append("process.args_count is not the length of process.args")
    for path, value in flat.items():
        if path.endswith("entry_meta.type") and value not in entry_meta_types():
            problems.append(f"{path}: {value!r} is not one ECS lists "
                            f"({sorted(entry_meta_types())})")
    return problems
