"""Report formats: table (aligned text), csv, ndjson and a self-contained html page.

Rows are written as they come (the table waits for its first rows to choose column widths);
the header cites the requirements the report answers, the totals and notes (what could not
be established) come last.
"""

from __future__ import annotations

import csv
import html
import itertools
from collections.abc import Iterable
from typing import Any, TextIO

import orjson

from collector.report.model import Report

FORMATS = ("table", "csv", "ndjson", "html")
TABLE_SAMPLE = 500
TABLE_MAX_WIDTH = 60


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def header_lines(report: Report, header: list[tuple[str, str]]) -> list[str]:
    lines = [report.title]
    lines += [f"{label}: {value}" for label, value in [*header, *report.header]]
    lines.append("requirements:")
    lines += [f"  {text}" for text in report.requirements]
    return lines


def footer_lines(report: Report) -> list[str]:
    lines = ["totals: " + ", ".join(f"{k} {_text(v)}" for k, v in report.totals.items())]
    lines += [f"not established: {note}" for note in report.notes]
    return lines


def write(report: Report, fmt: str, out: TextIO, header: list[tuple[str, str]]) -> None:
    if fmt == "csv":
        _csv(report, out, header)
    elif fmt == "ndjson":
        _ndjson(report, out, header)
    elif fmt == "html":
        page = HtmlPage(report.title, header_lines(report, header))
        page.table(report.columns, report.rows, out, before=page.start())
        out.write(page.end(report))
    else:
        _table(report, out, header)


def _table(report: Report, out: TextIO, header: list[tuple[str, str]]) -> None:
    for line in header_lines(report, header):
        out.write(line + "\n")
    out.write("\n")
    sample = list(itertools.islice(report.rows, TABLE_SAMPLE))
    widths = [min(TABLE_MAX_WIDTH, max([len(c)] + [len(_text(r.get(c))) for r in sample]))
              for c in report.columns]
    out.write("  ".join(c.ljust(w) for c, w in zip(report.columns, widths)).rstrip() + "\n")
    for row in itertools.chain(sample, report.rows):
        out.write("  ".join(_text(row.get(c)).ljust(w) for c, w
                            in zip(report.columns, widths)).rstrip() + "\n")
    out.write("\n")
    for line in footer_lines(report):
        out.write(line + "\n")


def _csv(report: Report, out: TextIO, header: list[tuple[str, str]]) -> None:
    for line in header_lines(report, header):
        out.write(f"# {line}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow([_text(row.get(c)) for c in report.columns])
    for line in footer_lines(report):
        out.write(f"# {line}\n")


def _ndjson(report: Report, out: TextIO, header: list[tuple[str, str]]) -> None:
    meta = {"report": report.name, "title": report.title,
            **{label: value for label, value in [*header, *report.header]},
            "requirements": report.requirements}
    out.write(orjson.dumps({"header": meta}).decode() + "\n")
    for row in report.rows:
        record = {c: row.get(c) for c in report.columns}
        if row.get("_details"):
            record["details"] = row["_details"]
        out.write(orjson.dumps(record).decode() + "\n")
    out.write(orjson.dumps({"totals": report.totals, "not_established": report.notes}
                           ).decode() + "\n")


# --------------------------------------------------------------------------- html

STYLE = """
body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;color:#1d2330;font-size:14px}
h1{font-size:22px;margin:0 0 8px} h2{font-size:17px;margin:22px 0 8px}
.meta{color:#4a5468;margin:0 0 2px} .req{margin:2px 0 0 18px;color:#4a5468}
table{border-collapse:collapse;margin:6px 0} td,th{border:1px solid #c9cfdb;padding:3px 7px;
text-align:left;vertical-align:top} th{background:#eef1f6}
table.grid td{text-align:center;min-width:76px;font-weight:bold}
table.grid th.host{text-align:right}
td.ok{background:#cdeccf;color:#1d5e24} td.gap{background:#e3545b;color:#fff}
td.loss{background:#f4c04f;color:#4b3400} td.nodata{background:#8a93a6;color:#fff}
td.FAILED{background:#e3545b;color:#fff}
.legend span{display:inline-block;padding:2px 8px;margin-right:8px;border-radius:3px}
.totals td:first-child{font-weight:bold} .note{color:#a0262c}
td.cmd{font-family:DejaVu Sans Mono,monospace;white-space:pre-wrap;max-width:620px}
"""


class HtmlPage:
    """One self-contained page (inline CSS, no script, nothing fetched)."""

    def __init__(self, title: str, lines: list[str]) -> None:
        self.title = title
        self.lines = lines

    def start(self) -> str:
        parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
                 "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                 "style-src 'unsafe-inline'\">",
                 f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>",
                 f"<h1>{html.escape(self.title)}</h1>"]
        for line in self.lines[1:]:
            css = "req" if line.startswith("  ") else "meta"
            parts.append(f"<p class=\"{css}\">{html.escape(line.strip())}</p>")
        return "".join(parts)

    @staticmethod
    def table(columns: list[str], rows: Iterable[dict[str, Any]], out: TextIO,
              before: str = "", heading: str = "") -> int:
        out.write(before)
        if heading:
            out.write(f"<h2>{html.escape(heading)}</h2>")
        out.write("<table class=\"rows\"><thead><tr>"
                  + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
                  + "</tr></thead><tbody>")
        count = 0
        for row in rows:
            count += 1
            cells = []
            for c in columns:
                css = " class=\"cmd\"" if c == "command" else (
                    f" class=\"{html.escape(str(row.get(c)))}\"" if c == "status" else "")
                cells.append(f"<td{css}>{html.escape(_text(row.get(c)))}</td>")
            out.write("<tr>" + "".join(cells) + "</tr>\n")
        out.write("</tbody></table>")
        return count

    @staticmethod
    def totals(report: Report) -> str:
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_text(v))}"
                       "</td></tr>" for k, v in report.totals.items())
        notes = "".join(f"<p class=\"note\">Not established: {html.escape(n)}</p>"
                        for n in report.notes)
        return f"<h2>Totals</h2><table class=\"totals\">{rows}</table>{notes}"

    def end(self, *reports: Report) -> str:
        return "".join(self.totals(r) for r in reports) + "</body></html>\n"


def grid_html(hosts: list[str], days: list[str], cells: dict[tuple[str, str], tuple[str, str,
              str]]) -> str:
    """A host x day grid; cells[(host, day)] = (css status, text, tooltip)."""
    head = "".join(f"<th>{html.escape(d)}</th>" for d in days)
    rows = []
    for host in hosts:
        tds = []
        for day in days:
            status, text, tip = cells.get((host, day), ("nodata", "no data", "no documents"))
            tds.append(f"<td class=\"{status}\" data-host=\"{html.escape(host)}\" "
                       f"data-day=\"{day}\" data-status=\"{status}\" "
                       f"title=\"{html.escape(tip)}\">{html.escape(text)}</td>")
        rows.append(f"<tr><th class=\"host\">{html.escape(host)}</th>{''.join(tds)}</tr>")
    legend = ("<p class=\"legend\"><span class=\"ok\" style=\"background:#cdeccf\">ok</span>"
              "<span style=\"background:#e3545b;color:#fff\">gap: outage or missing "
              "sequences</span><span style=\"background:#f4c04f\">loss reported</span>"
              "<span style=\"background:#8a93a6;color:#fff\">no data</span></p>")
    return (f"<h2>Coverage: host x day</h2>{legend}<table class=\"grid\"><thead><tr><th>host"
            f"</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")

