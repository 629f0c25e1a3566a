"""Documents, the field table and the index mappings against ECS's own definitions.

Every emitted field outside audit_collector.* must be an ECS 8.11 field with the ECS type;
event.kind/category/type must be ECS values and allowed pairs; the mappings must carry the
ECS types and multi-fields. The definitions come from the ECS project (tests/ecs/
ecs_reference.py); the real-BPF documents get the same check in tests/capture.
"""

from __future__ import annotations

from typing import Any

import pytest

from collector.delivery.elasticsearch.index import KEYWORD_IGNORE_ABOVE, mappings_body
from collector.ecs.documents import ACTIONS
from collector.fields import CUSTOM_ROOT, FIELDS, multi_fields
from tests.ecs.ecs_reference import (
    ECS_DIR,
    classification_problems,
    document_problems,
    ecs_flat,
    entry_meta_types,
)
from tests.ecs.golden_cases import CASES
from tests.ecs.test_golden import _document, golden_builder


def ecs_paths() -> list[str]:
    return [p for p in FIELDS if not p.startswith(CUSTOM_ROOT + ".")]


def test_the_definitions_are_the_pinned_package_with_its_licence() -> None:
    assert len(ecs_flat()) == 1659
    source = (ECS_DIR / "SOURCE").read_text().split()
    assert source[0] == "@elastic/ecs@8.11.5"
    assert source[1].startswith("sha512-S7qkIaRrKHyiU6ww0r5qt8mOh8wK8w3LpNdMb0qxuj6wxQm")
    assert "Apache License" in (ECS_DIR / "LICENSE").read_text()
    assert (ECS_DIR / "NOTICE.txt").read_text().strip()
    assert {"init", "sshd", "terminal", "console"} <= entry_meta_types()


@pytest.mark.parametrize("path", ecs_paths())
def test_field_table_has_the_ecs_type_and_multi_fields(path: str) -> None:
    ecs = ecs_flat().get(path)
    assert ecs is not None, f"{path} is not an ECS field: move it under {CUSTOM_ROOT}.*"
    assert FIELDS[path][0] == ecs["type"]
    expected = tuple((m["name"], m["type"]) for m in ecs.get("multi_fields", []))
    assert multi_fields(path) == expected


def _mapped(properties: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, mapping in properties.items():
        if "properties" in mapping:
            out.update(_mapped(mapping["properties"], f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = mapping
    return out


def test_index_mappings_follow_the_ecs_definitions() -> None:
    mapped = _mapped(mappings_body()["properties"])
    assert set(mapped) == set(FIELDS)
    for path in ecs_paths():
        ecs, mapping = ecs_flat()[path], mapped[path]
        assert mapping["type"] == ecs["type"], path
        subs = {m["name"]: {"type": m["type"]} for m in ecs.get("multi_fields", [])}
        assert mapping.get("fields", {}) == subs, path
        if "ignore_above" in ecs:
            assert mapping["ignore_above"] == ecs["ignore_above"] == KEYWORD_IGNORE_ABOVE
    assert mapped["@timestamp"] == {"type": "date"}
    assert mapped["audit_collector.timestamp"] == {"type": "date_nanos"}


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_action_is_classified_with_ecs_values_and_pairs(action: str) -> None:
    what = ACTIONS[action]
    event = {"kind": what.kind, "category": list(what.category), "type": list(what.type),
             "outcome": "success"}
    assert classification_problems(event) == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_documents_are_ecs(name: str) -> None:
    builder = golden_builder()
    for item in CASES[name]:
        assert document_problems(_document(builder, item)) == []


def test_the_check_catches_what_is_not_ecs() -> None:
    doc = _document(golden_builder(), CASES["exec_success"][0])
    doc["user"]["audit"] = {"id": "1000"}  # Auditbeat's, not ECS
    doc["process"]["exit_code"] = "0"  # a long in ECS
    doc["process"]["args_count"] = 7
    doc["event"]["type"] = ["creation"]  # not expected with category process
    doc["data_stream"]["dataset"] = "other"
    doc["process"]["entry_leader"] = {"entry_meta": {"type": "cron"}}
    problems = "\n".join(document_problems(doc))
    assert "user.audit.id: not in collector/fields.py" in problems
    assert "process.exit_code: '0' is not a long" in problems
    assert "args_count is not the length" in problems
    assert "event.type 'creation' is not expected with category 'process'" in problems
    assert "event.dataset differs from data_stream.dataset" in problems
    assert "process.entry_leader.entry_meta.type" in problems
