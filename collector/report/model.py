"""What every report is made of: a header (title, requirements, period), columns, rows
streamed one at a time, totals and notes (what could not be established)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# The requirements, worded as the issue lists them; each report cites those it answers.
REQUIREMENTS = {
    "10.2.1.2": "PCI DSS v4.0 10.2.1.2: all actions by administrative accounts, including "
                "interactive use",
    "10.2.2": "PCI DSS v4.0 10.2.2: who, what, when, outcome, origin, object in every record",
    "10.3.2-4": "PCI DSS v4.0 10.3.2-10.3.4: logs protected; changes detected",
    "10.4.1": "PCI DSS v4.0 10.4.1: daily review",
    "10.5.1": "PCI DSS v4.0 10.5.1: 12 months retained, 3 immediately available",
    "10.7.2-3": "PCI DSS v4.0 10.7.2-10.7.3: failures of logging detected, with the duration "
                "of each outage",
    "AU-3(1)": "NIST SP 800-53 AU-3(1): full text of privileged commands",
    "AU-5": "NIST SP 800-53 AU-5: response to logging failures",
    "AU-9(3)": "NIST SP 800-53 AU-9(3): cryptographic protection of audit information",
    "AU-10": "NIST SP 800-53 AU-10: non-repudiation",
    "CC7.2": "SOC 2 CC7.2: monitoring ran through the whole period",
}
CITED = {
    "coverage": ("10.4.1", "10.5.1", "10.7.2-3", "AU-5", "CC7.2"),
    "gaps": ("10.7.2-3", "AU-5", "CC7.2", "10.4.1"),
    "commands": ("10.2.1.2", "10.2.2", "AU-3(1)"),
    "integrity": ("10.3.2-4", "AU-9(3)", "AU-10"),
}


@dataclass
class Report:
    name: str
    title: str
    columns: list[str]
    rows: Iterator[dict[str, Any]]
    header: list[tuple[str, str]] = field(default_factory=list)  # (label, value)
    notes: list[str] = field(default_factory=list)  # what could not be established
    totals: dict[str, Any] = field(default_factory=dict)  # filled while rows are read
    findings: int = 0  # rows that show a problem (exit status 1 when > 0)

    def no_documents(self, period_text: str, what: str) -> None:
        """Nothing to read in the period: a finding, and a note that `what` (coverage,
        gaps, integrity) cannot be established for any host."""
        self.notes.append(f"no documents in {period_text}: {what} cannot be established "
                          "for any host")
        self.findings += 1

    @property
    def requirements(self) -> list[str]:
        return [REQUIREMENTS[key] for key in CITED[self.name]]
