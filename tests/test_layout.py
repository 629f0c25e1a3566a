"""The architecture, checked: three wings along the data path, nothing imports upward.

capture/  (kernel side)      may import: capture
ecs/      (documents)        may import: capture, ecs, fields
delivery/ (seal, spool, ES)  may import: delivery, fields
kibana/   (saved objects)    may import: kibana, fields, and of delivery only the URL
                             check and the credential reading it shares with Elasticsearch
report/   (reads ES back)    may import: report, delivery, fields
top (cli, agent, config, metrics, preflight, lifecycle) may import anything.
`collector/fields.py` is the field table (no collector imports); `collector/__init__.py`
holds only the version.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "collector"
ALLOWED = {
    "capture": ("collector.capture",),
    "ecs": ("collector.capture", "collector.ecs", "collector.fields"),
    "delivery": ("collector.delivery", "collector.fields"),
    "kibana": ("collector.kibana", "collector.fields", "collector.delivery.settings",
               "collector.delivery.elasticsearch.credentials",
               "collector.delivery.elasticsearch.settings"),
    "report": ("collector.report", "collector.delivery", "collector.fields"),
}
LEAVES = ("fields.py", "__init__.py")


def collector_imports(path: Path) -> list[str]:
    """Every collector module a file imports (at any depth: lazy imports count too)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{alias.name}" if node.module == "collector"
                      else node.module for alias in node.names]
    return [n for n in names if n == "collector" or n.startswith("collector.")]


def allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return name == "collector.__version__" or any(
        name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("wing", sorted(ALLOWED))
def test_wings_import_only_themselves_and_what_lies_before_them(wing: str) -> None:
    wrong = [f"{path.relative_to(PACKAGE)} imports {name}"
             for path in sorted((PACKAGE / wing).rglob("*.py"))
             for name in collector_imports(path) if not allowed(name, ALLOWED[wing])]
    assert wrong == []


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_no_collector_code(leaf: str) -> None:
    assert collector_imports(PACKAGE / leaf) == []


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from collector.config import Config\n"
                   "from collector import agent\n")
    assert sorted(collector_imports(bad)) == ["collector.agent", "collector.config"]
    assert not allowed("collector.config", ALLOWED["delivery"])
