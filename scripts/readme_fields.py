"""Rewrite the README's field table from collector/fields.py (run after changing fields)."""

from __future__ import annotations

import re
from pathlib import Path

from collector.fields import FIELDS

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- fields:start -->", "<!-- fields:end -->"


def table() -> str:
    rows = ["| field | type | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{name}` | {kind} | {text} |" for name, (kind, text) in FIELDS.items()]
    return "\n".join(rows)


def main() -> None:
    text = README.read_text()
    block = f"{START}\n{table()}\n{END}"
    text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _m: block, text,
                  flags=re.S)
    README.write_text(text)


if __name__ == "__main__":
    main()
