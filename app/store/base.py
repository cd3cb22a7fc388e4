"""Storage value types: what the repository hands back (no SQL, no policy)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from app.ids import time_ordered_uuid

__all__ = [
    "HistoryEntry",
    "HistoryPage",
    "StoredResource",
    "WriteResult",
    "aware",
    "format_instant",
    "new_id",
    "utc_now_ms",
]


def utc_now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_instant(moment: datetime) -> str:
    moment = aware(moment)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class StoredResource:
    resource_type: str
    id: str
    version: int
    last_updated: datetime
    content: bytes | None  # None for a deleted version

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def location(self) -> str:
        return f"{self.resource_type}/{self.id}/_history/{self.version}"


@dataclass(frozen=True, slots=True)
class WriteResult:
    resource: StoredResource
    created: bool


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    resource: StoredResource
    method: str  # POST, PUT or DELETE


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: list[HistoryEntry]
    next_cursor: int | None


def new_id() -> str:
    """A server-assigned resource id: a time-ordered UUID (see app/ids.py)."""
    return str(time_ordered_uuid())
