"""The reporting period: --from/--to in UTC, by default the last full day."""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass

DAY_S = 86_400
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_STAMP_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.\d+)?"
                       r"(Z|[+-]00:?00)?$")


class PeriodError(ValueError):
    """A --from/--to the report cannot use; one line."""


@dataclass(frozen=True)
class Period:
    start: int  # unix seconds, inclusive
    end: int  # unix seconds, exclusive

    @property
    def gte(self) -> str:
        return iso(self.start)

    @property
    def lt(self) -> str:
        return iso(self.end)

    def days(self) -> list[str]:
        """Every UTC day (YYYY-MM-DD) the period touches."""
        first = self.start - self.start % DAY_S
        return [day_of(t) for t in range(first, self.end, DAY_S)]

    def seconds_in(self, day: str) -> int:
        start = parse_point(day, "day")
        return max(0, min(self.end, start + DAY_S) - max(self.start, start))

    def range_query(self) -> dict[str, object]:
        return {"range": {"@timestamp": {"gte": self.gte, "lt": self.lt}}}

    def text(self) -> str:
        return f"{self.gte} to {self.lt} (UTC, end excluded)"


def iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def day_of(seconds: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def parse_point(text: str, flag: str) -> int:
    """YYYY-MM-DD (midnight UTC) or an RFC 3339 UTC time, to unix seconds."""
    try:
        if _DATE_RE.match(text):
            return calendar.timegm(time.strptime(text, "%Y-%m-%d"))
        match = _STAMP_RE.match(text)
        if match:
            clock = match.group(2) if match.group(2).count(":") == 2 else match.group(2) + ":00"
            return calendar.timegm(time.strptime(f"{match.group(1)}T{clock}",
                                                 "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        pass
    raise PeriodError(f"{flag}: {text!r} is not a date (YYYY-MM-DD) or a UTC time "
                      "(YYYY-MM-DDTHH:MM:SSZ)")


def period_of(start: str | None, end: str | None, now: float | None = None) -> Period:
    """From the flags; both missing: the last full UTC day before now."""
    now = time.time() if now is None else now
    today = int(now) - int(now) % DAY_S
    begin = parse_point(start, "--from") if start else None
    finish = parse_point(end, "--to") if end else None
    if begin is None and finish is None:
        begin, finish = today - DAY_S, today
    elif begin is None:
        assert finish is not None
        begin = finish - DAY_S
    elif finish is None:
        finish = begin + DAY_S
    if finish <= begin:
        raise PeriodError(f"empty period: --to {iso(finish)} is not after --from {iso(begin)}")
    return Period(begin, finish)
