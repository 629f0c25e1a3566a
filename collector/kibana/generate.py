"""Writes kibana/audit-collector.ndjson from `collector.kibana.content` (``make kibana``),
after validating it; ``--check`` only compares the committed file with a fresh one.

    python -m collector.kibana.generate [--check] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from collector.kibana.content import PENDING, build_objects
from collector.kibana.validate import validate

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "kibana" / "audit-collector.ndjson"


def to_ndjson(objects: list[dict[str, Any]]) -> str:
    """One object per line, as Kibana's export writes them (without its summary line)."""
    return "".join(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
                   for obj in objects)


def generated() -> str:
    """The NDJSON of the current content; ValueError listing the problems if it is not
    valid (a field missing from collector/fields.py, a broken reference...)."""
    text = to_ndjson(build_objects())
    report = validate(text)
    if not report.ok:
        raise ValueError("the Kibana content is not valid:\n  " + "\n  ".join(report.problems))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m collector.kibana.generate")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the file differs from what the content generates")
    args = parser.parse_args(argv)
    try:
        text = generated()
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is not what collector/kibana/content.py generates: run "
                  "`make kibana`", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}: {text.count(chr(10))} saved objects")
    if PENDING:
        print(f"left out while pending (collector/kibana/content.py PENDING): "
              f"{', '.join(sorted(PENDING))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
