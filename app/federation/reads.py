"""The federated side of `$everything` and Patient search, around the local read.

The remote calls start before the local page is read (so they overlap it) and are collected
after it; the caller's repository reads the local Patient, so its AccessPolicy decides first
whether there is anything to federate at all. What comes back goes through merge.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from app.adapters.base import PersonQuery
from app.federation.admission import RecordFilter
from app.federation.federator import Federator, SourceResult
from app.federation.merge import FederatedPart, fingerprint, patient_entries, record_entries
from app.store.base import StoredResource, utc_now_ms

if TYPE_CHECKING:
    from app.store.repository import FhirRepository

__all__ = ["Pending", "start_locate", "start_locate_patient", "start_record"]


@dataclass(slots=True)
class Pending:
    """Remote reads under way for one request."""

    task: asyncio.Task[list[SourceResult]]
    subject: str | None  # the local Patient the reads are about (None: search parameters)
    filters: RecordFilter | None  # set for $everything, None for a Patient search

    def cancel(self) -> None:
        self.task.cancel()

    async def finish(self, repo: FhirRepository, local: list[StoredResource]) -> FederatedPart:
        """The remote entries, deduplicated against the local ones in `local`."""
        results = await self.task
        subjects = {self.subject} if self.subject else set()
        seen = {
            fingerprint(orjson.loads(s.content), subjects, repo.base_url)
            for s in local
            if s.content
        }
        if self.filters is None:
            return patient_entries(results, policy=repo.policy, seen=seen, now=utc_now_ms())
        return record_entries(
            results, policy=repo.policy, filters=self.filters, seen=seen, now=utc_now_ms()
        )


async def _person(repo: FhirRepository, patient_id: str) -> PersonQuery:
    """The local Patient as a PersonQuery (404 when the caller may not read it)."""
    stored = await repo.read("Patient", patient_id)
    return PersonQuery.from_patient(orjson.loads(stored.content or b"{}"))


async def start_record(
    federator: Federator, repo: FhirRepository, patient_id: str, filters: RecordFilter
) -> Pending:
    """Start fetching the local Patient's record from every intermediary."""
    person = await _person(repo, patient_id)
    task = asyncio.create_task(federator.record(person, types=filters.types, since=filters.since))
    return Pending(task, patient_id, filters)


def start_locate(federator: Federator, person: PersonQuery, subject: str | None) -> Pending:
    """Start locating the person at every intermediary."""
    return Pending(asyncio.create_task(federator.locate(person)), subject, None)


async def start_locate_patient(
    federator: Federator, repo: FhirRepository, patient_id: str
) -> Pending:
    """Start locating the local Patient at every intermediary."""
    return start_locate(federator, await _person(repo, patient_id), patient_id)
