"""FHIR date, dateTime and instant values as half-open UTC ranges [low, high).

A FHIR date is as precise as it is written: `2024` is the whole year, `2024-03-05` the whole
day, `2024-03-05T10:00:00Z` one second (https://hl7.org/fhir/R4/search.html#date). Periods run
from their start to their end; a missing end is open to the future, a missing start to the past.
Values without a time zone are taken as UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["MAX_TIME", "MIN_TIME", "date_range", "value_ranges"]

MIN_TIME = datetime(1, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def date_range(text: str) -> tuple[datetime, datetime] | None:
    """`2024-03` -> (2024-03-01T00:00Z, 2024-04-01T00:00Z); None when not a FHIR date."""
    match = _DATE.match(text.strip())
    if not match:
        return None
    try:
        return _range(*match.groups())
    except (ValueError, OverflowError):
        return None  # an impossible date (2024-02-30) or one past the calendar's end


def _range(
    year: str,
    month: str | None,
    day: str | None,
    hour: str | None,
    minute: str | None,
    second: str | None,
    fraction: str | None,
    zone: str | None,
) -> tuple[datetime, datetime]:
    if month is None:
        low = datetime(int(year), 1, 1, tzinfo=UTC)
        return low, _add_months(low, 12)
    if day is None:
        low = datetime(int(year), int(month), 1, tzinfo=UTC)
        return low, _add_months(low, 1)
    if hour is None or minute is None:
        low = datetime(int(year), int(month), int(day), tzinfo=UTC)
        return low, low + timedelta(days=1)
    tz = UTC if zone in (None, "Z") else _offset(zone)
    micro = int((fraction or ".0")[1:7].ljust(6, "0"))
    moment = datetime(
        int(year),
        int(month),
        int(day),
        int(hour),
        int(minute),
        int(second or 0),
        micro,
        tzinfo=tz,
    ).astimezone(UTC)
    if second is None:
        return moment, moment + timedelta(minutes=1)
    if fraction:
        return moment, moment + timedelta(microseconds=1)
    return moment, moment + timedelta(seconds=1)


def value_ranges(value: Any) -> list[tuple[datetime, datetime]]:
    """The ranges a date-typed element covers: a date/dateTime/instant string, a Period, or a
    Timing's events."""
    if isinstance(value, str):
        found = date_range(value)
        return [found] if found else []
    if not isinstance(value, dict):
        return []
    if "start" in value or "end" in value:  # Period
        start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
        return [(start[0] if start else MIN_TIME, end[1] if end else MAX_TIME)]
    events = value.get("event")
    if isinstance(events, list):  # Timing
        return [r for e in events if isinstance(e, str) and (r := date_range(e))]
    return []


def _add_months(moment: datetime, months: int) -> datetime:
    total = moment.month - 1 + months
    return moment.replace(year=moment.year + total // 12, month=total % 12 + 1)


def _offset(zone: str) -> Any:
    from datetime import timezone

    sign = 1 if zone[0] == "+" else -1
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))
