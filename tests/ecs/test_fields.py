"""The field list is the contract: README documents it, documents use only it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collector.fields import FIELDS


def leaf_paths(doc: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            paths |= leaf_paths(value, f"{path}.")
        else:
            paths.add(path)
    return paths


def test_readme_documents_every_field() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name in FIELDS if f"`{name}`" not in readme]
    assert missing == []


def test_every_field_has_a_type_and_a_description() -> None:
    allowed = {"keyword", "constant_keyword", "long", "boolean", "date", "date_nanos",
               "wildcard", "match_only_text"}
    assert {t for t, _ in FIELDS.values()} <= allowed
    assert all(d for _, d in FIELDS.values())
