"""The APCD-CDL importer: files in, FHIR resources out, through the repository.

Guarantees (issue 5; reliability notes §1.5):

- A file whose header or trailer is unusable is rejected before anything is written.
- A bad line is reported (file, line, element id, reason) and skipped; the rest loads.
- Work is committed in batches of whole records (a claim's lines never straddle two batches).
  Each batch's resources, index rows, line errors and the journal checkpoint (`apcd_import`,
  keyed by the file's SHA-256) commit in one transaction. A killed import therefore resumes
  after the last committed line, and nothing is stored twice.
- Re-importing changes nothing: a completed file is recognised by its hash; and even a forced
  re-run writes no new version: a claim whose version and lines are unchanged is skipped whole,
  and a resource whose content is unchanged is not written again.
- Ids. Members, coverage and providers have deterministic ids (app/apcd/mapping.py). A claim's
  resources get time-ordered ids (app/ids.py) the first time the claim is seen, so that a large
  file's rows land at the right-hand end of the id-keyed indexes instead of at random pages
  (200,000 claim lines: 623 lines/s with deterministic ids, about 1,070 with these); the map
  from each resource's deterministic key to its id is kept with the claim (`apcd_claim.resources`)
  in the same transaction, so a later version of the claim updates the same resources. A claim
  whose state row is missing but whose ExplanationOfBenefit is stored (the table restored from
  an older backup) is reported, not stored again.
- Claim versions (reference notes §3): the lines of a claim in a file are grouped by claim id;
  the group's highest version number is the claim's picture. A later version replaces the stored
  one (the resources it no longer produces are deleted; history keeps every version); an
  older version than the stored one is ignored; a void (claim line type V/B, claim status 22,
  type-of-bill frequency 8) marks the claim's resources `entered-in-error`.
- Members (ME061, MC161, PC068, DC034) map to one Patient per submitter + payer + member id,
  across files and eligibility spans. With link rules configured (`DXF_APCD_LINK_IDENTIFIERS`),
  a member whose record carries a linking identifier (for example the Medi-Cal CIN) that
  matches exactly one existing Patient is mapped to that Patient instead; the import then
  leaves that Patient's own content alone. Names and birth dates never link.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import orjson
from sqlalchemy import bindparam, insert, select, update

from app.apcd.layout import Layout, load_layout
from app.apcd.links import LinkRule, parse_link_rules
from app.apcd.mapping import Mapper, Namespace, Res, Row
from app.apcd.reader import Envelope, FileRejected, LineError, lines, scan
from app.db import Prepared
from app.errors import Conflict, Gone, NotFound, Unprocessable
from app.fhir.models import check_resource
from app.fhir.search.criteria import parse_criteria
from app.store.base import StoredResource, new_id, utc_now_ms
from app.store.repository import FhirRepository, WriteSession
from app.store.tables import (
    apcd_claim,
    apcd_import,
    apcd_import_error,
    apcd_member,
    spidx_token,
)
from app.store.writes import BulkConflict

__all__ = ["ApcdImporter", "FileResult", "ImportOptions", "LinkRule", "parse_link_rules"]

CLAIM_TYPES = ("MC", "PC", "DC")
_MEMBER_FIELD = {"ME": "CDLME061", "MC": "CDLMC161", "PC": "CDLPC068", "DC": "CDLDC034"}
_MEMBER_CACHE_MAX = 200_000
MAX_ERRORS_KEPT = 10_000
BULK_MAX = 500  # new resources held for one multi-row insert
MAX_CLAIM_LINES = 9_999  # the line counter has 4 digits
_GC_THRESHOLD = 50_000  # allocations between young-generation collections while importing
_STATE_READ_CHUNK = 500  # claim or member ids per state query
_INSERT_CLAIM = Prepared(insert(apcd_claim))
_INSERT_MEMBER = Prepared(insert(apcd_member))
_UPDATE_CLAIM = Prepared(
    update(apcd_claim)
    .where(
        apcd_claim.c.namespace == bindparam("ns"),
        apcd_claim.c.claim_id == bindparam("claim"),
    )
    .values(
        version=bindparam("new_version"),
        digest=bindparam("new_digest"),
        voided=bindparam("new_voided"),
        resources=bindparam("new_resources"),
    )
)
# ExplanationOfBenefit.type codes of each claim file type (app/apcd/mapping.py)
_EOB_TYPES = {
    "MC": {"institutional", "professional"},
    "PC": {"pharmacy"},
    "DC": {"oral"},
}
_COUNTERS = ("loaded", "rejected", "created", "updated", "unchanged", "deleted", "superseded")

Progress = Callable[[str, int, int], None]  # (file name, lines handled, lines in file)


@dataclass(frozen=True, slots=True)
class ImportOptions:
    layout: str = "3.0.1"
    delimiter: str = "|"
    batch_lines: int = 2000
    dry_run: bool = False
    link_rules: tuple[LinkRule, ...] = ()
    # New resources are validated in this many worker processes while the importer goes on
    # (0: in the importer's own process), for files of at least worker_min_lines lines.
    validation_workers: int = 0
    worker_min_lines: int = 5000


@dataclass(slots=True)
class FileResult:
    file: str
    status: str  # imported | already-imported | rejected | dry-run
    file_type: str = ""
    reason: str = ""
    lines_read: int = 0
    loaded: int = 0
    rejected: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    superseded: int = 0
    seconds: float = 0.0
    # the first MAX_ERRORS_KEPT line errors; all of them: ApcdImporter.all_errors
    errors: list[LineError] = field(default_factory=list)
    import_id: str = ""


@dataclass(slots=True)
class _Unit:
    """One record (ME, PV) or one claim's lines in a row (MC, PC, DC)."""

    first_line: int
    rows: list[list[str]]


@dataclass(frozen=True, slots=True)
class _ClaimState:
    version: int
    digest: str
    # JSON object: each resource's key (Mapper.claim) -> "Type/id"; from imports before ids
    # were minted, a JSON list of "Type/id" whose ids are their keys
    resources: str


class _StateMissing(Unprocessable):
    """A claim seen for the first time whose ExplanationOfBenefit is already stored."""


@dataclass(slots=True)
class _Context:
    env: Envelope
    layout: Layout
    mapper: Mapper
    ns: Namespace
    claim_ns: str
    import_id: str
    pending_members: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)
    journaled: tuple[int, int, int, int] = (0, 0, 0, 0)  # counters already in the journal
    # resources of first-seen claims, created together at the end of the batch
    bulk: list[Res] | None = None
    bulk_claims: set[str] = field(default_factory=set)
    # the stored state of the batch's claims (read once per batch, then kept up to date here)
    claims: dict[str, _ClaimState] = field(default_factory=dict)
    absent_members: set[str] = field(default_factory=set)  # not in apcd_member at batch start
    # claims of the batch with no state row whose ExplanationOfBenefit is stored all the same
    orphans: set[str] = field(default_factory=set)
    bulk_keys: set[str] = field(default_factory=set)
    pool: ProcessPoolExecutor | None = None
    # bulk chunks sent to the pool for validation, inserted once validated, in order
    pending: list[tuple[list[Res], asyncio.Future[tuple[int, str] | None]]] = field(
        default_factory=list
    )


class ApcdImporter:
    """Imports CDL files through a FhirRepository whose policy may write every type."""

    def __init__(
        self,
        repo: FhirRepository,
        options: ImportOptions,
        *,
        progress: Progress | None = None,
    ) -> None:
        self.repo = repo
        self.options = options
        self.progress = progress
        self._members: dict[tuple[str, str], tuple[str, bool]] = {}

    async def import_files(self, paths: Iterable[Any]) -> list[FileResult]:
        return [await self.import_file(p) for p in paths]

    async def import_file(self, path: Any) -> FileResult:
        from pathlib import Path

        path = Path(path)
        started = time.perf_counter()
        layout = load_layout(self.options.layout)
        try:
            env = scan(path, layout, self.options.delimiter)
        except FileRejected as exc:
            return FileResult(path.name, "rejected", reason=str(exc))
        except OSError as exc:
            reason = f"cannot read the file ({exc.strerror})"
            return FileResult(path.name, "rejected", reason=reason)
        result = FileResult(path.name, "dry-run" if self.options.dry_run else "imported")
        result.file_type = env.file_type
        result.import_id = "" if self.options.dry_run else env.sha256
        rl = layout.record(env.file_type)
        ns = Namespace(env.submitter, env.payer)
        ctx = _Context(
            env,
            layout,
            Mapper(ns, rl),
            ns,
            f"{env.submitter}|{env.payer}|{env.file_type}",
            env.sha256,
        )
        start_after = 0
        if not self.options.dry_run:
            journal = await self._open_journal(ctx)
            if journal.status == "complete":
                result.status = "already-imported"
                result.seconds = time.perf_counter() - started
                return result
            start_after = journal.lines_done
            workers = self.options.validation_workers
            if workers > 0 and env.record_count - start_after >= self.options.worker_min_lines:
                ctx.pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
        try:
            with _fewer_collections():
                await self._run(ctx, result, start_after)
        finally:
            if ctx.pool is not None:
                ctx.pool.shutdown(wait=True, cancel_futures=True)
        if not self.options.dry_run:
            kept = await self._stored_errors(ctx.import_id, path.name, limit=MAX_ERRORS_KEPT)
            result.errors = [err for _row_id, err in kept]
        result.seconds = time.perf_counter() - started
        return result

    # ---- the loop ----------------------------------------------------------------------------

    async def _run(self, ctx: _Context, result: FileResult, start_after: int) -> None:
        env = ctx.env
        rl = ctx.layout.record(env.file_type)
        claims = env.file_type in CLAIM_TYPES
        claim_pos = rl.pos(f"CDL{env.file_type}005") if claims else -1  # claim control number
        batch = self.options.batch_lines
        units: list[_Unit] = []
        errors: list[LineError] = []
        group: _Unit | None = None
        group_key = ""
        in_batch = 0
        for pl in lines(env, ctx.layout, self.options.delimiter, after_line=start_after):
            result.lines_read += 1
            if pl.values is None:
                errors.extend(pl.errors)
                result.rejected += 1
                in_batch += 1
                continue
            if claims:
                key = pl.values[claim_pos]
                if group is not None and key != group_key:
                    units.append(group)
                    group = None
                    if in_batch >= batch:
                        await self._commit(ctx, result, units, errors, pl.line - 1, final=False)
                        units, errors, in_batch = [], [], 0
                if group is None:
                    group, group_key = _Unit(pl.line, []), key
                in_batch += 1
                if len(group.rows) >= MAX_CLAIM_LINES:  # bounded memory, whatever the file
                    reason = f"the claim has more than {MAX_CLAIM_LINES} lines in a row"
                    errors.append(
                        LineError(env.path.name, pl.line, f"CDL{env.file_type}006", reason)
                    )
                    result.rejected += 1
                    continue
                group.rows.append(pl.values)
            else:
                units.append(_Unit(pl.line, [pl.values]))
                in_batch += 1
                if in_batch >= batch:
                    await self._commit(ctx, result, units, errors, pl.line, final=False)
                    units, errors, in_batch = [], [], 0
        if group is not None:
            units.append(group)
        await self._commit(ctx, result, units, errors, env.trailer_line, final=True)

    async def _commit(
        self,
        ctx: _Context,
        result: FileResult,
        units: list[_Unit],
        errors: list[LineError],
        checkpoint: int,
        *,
        final: bool,
    ) -> None:
        if self.options.dry_run:
            self._dry_run(ctx, result, units, errors)
        else:
            # Fast path: the batch in one transaction without a savepoint per record. A record
            # whose mapping fails validation (or a bulk create that finds an id taken) rolls
            # the batch back, and the batch is redone with a savepoint around each record and
            # no bulk creates, so that only the failing record is skipped.
            snapshot = {k: getattr(result, k) for k in _COUNTERS}
            try:
                await self._write_batch(
                    ctx, result, units, list(errors), checkpoint, final, careful=False
                )
            except (Unprocessable, BulkConflict):
                for k, v in snapshot.items():
                    setattr(result, k, v)
                ctx.pending_members.clear()
                await self._write_batch(ctx, result, units, errors, checkpoint, final, careful=True)
            self._members.update(ctx.pending_members)
            if len(self._members) > _MEMBER_CACHE_MAX:
                self._members.clear()
        ctx.pending_members.clear()
        if self.progress is not None:
            self.progress(ctx.env.path.name, checkpoint, ctx.env.trailer_line)

    async def _write_batch(
        self,
        ctx: _Context,
        result: FileResult,
        units: list[_Unit],
        errors: list[LineError],
        checkpoint: int,
        final: bool,
        *,
        careful: bool,
    ) -> None:
        ctx.bulk = None if careful else []
        ctx.bulk_claims.clear()
        ctx.bulk_keys.clear()
        ctx.pending = []
        async with self.repo.transaction() as tx:
            tx.validated = True  # every body is checked here first (check_resource)
            await self._put(tx, ctx, result, *ctx.mapper.payer_organization())
            await self._read_states(tx, ctx, units)
            for unit in units:
                if careful:
                    try:
                        async with tx.conn.begin_nested():
                            await self._apply(tx, ctx, result, unit)
                    except Unprocessable as exc:
                        errors.append(_mapping_error(ctx, unit, exc))
                        result.rejected += len(unit.rows)
                        continue
                else:
                    await self._apply(tx, ctx, result, unit)
                    if ctx.bulk is not None and len(ctx.bulk) >= BULK_MAX:
                        # bounds memory per batch; with a pool, validation runs meanwhile
                        await self._flush_bulk(tx, ctx, result, wait=False)
                result.loaded += len(unit.rows)
            await self._flush_bulk(tx, ctx, result)
            if errors:
                await tx.conn.execute(
                    insert(apcd_import_error),
                    [
                        {
                            "import_id": ctx.import_id,
                            "line": e.line,
                            "field_id": e.field_id[:16],
                            "reason": e.reason,
                        }
                        for e in errors
                    ],
                )
            now = (result.loaded, result.rejected, result.created, result.updated)
            loaded, rejected, created, updated = (
                a - b for a, b in zip(now, ctx.journaled, strict=True)
            )
            j = apcd_import.c
            await tx.conn.execute(
                update(apcd_import)
                .where(j.import_id == ctx.import_id)
                .values(
                    lines_done=checkpoint,
                    lines_read=j.lines_read + loaded + rejected,
                    loaded=j.loaded + loaded,
                    rejected=j.rejected + rejected,
                    created=j.created + created,
                    updated=j.updated + updated,
                    status="complete" if final else "running",
                    finished_at=utc_now_ms() if final else None,
                )
            )
        ctx.journaled = now

    def _dry_run(
        self, ctx: _Context, result: FileResult, units: list[_Unit], errors: list[LineError]
    ) -> None:
        for unit in units:
            try:
                for _type, _id, body in self._resources_offline(ctx, unit):
                    check_resource(body)
            except Unprocessable as exc:
                errors.append(_mapping_error(ctx, unit, exc))
                result.rejected += len(unit.rows)
                continue
            result.loaded += len(unit.rows)
        result.errors.extend(errors[: max(0, MAX_ERRORS_KEPT - len(result.errors))])

    def _resources_offline(self, ctx: _Context, unit: _Unit) -> list[Res]:
        mapper = ctx.mapper
        rows = [mapper.row(v) for v in unit.rows]
        kind = ctx.env.file_type
        if kind == "PV":
            return mapper.provider(rows[0])
        member = rows[0][_MEMBER_FIELD[kind][-3:]]
        patient_id = ctx.ns.id("patient", member)
        if kind == "ME":
            return list(mapper.member(rows[0], patient_id, []))
        return mapper.claim(rows, patient_id).resources

    # ---- one record or claim -----------------------------------------------------------------

    async def _apply(
        self, tx: WriteSession, ctx: _Context, result: FileResult, unit: _Unit
    ) -> None:
        mapper = ctx.mapper
        kind = ctx.env.file_type
        if kind == "PV":
            for res in mapper.provider(mapper.row(unit.rows[0])):
                await self._put(tx, ctx, result, *res)
            return
        if kind == "ME":
            r = mapper.row(unit.rows[0])
            links = [
                (rule.system, r[rule.field_id[-3:]])
                for rule in self.options.link_rules
                if r[rule.field_id[-3:]]
            ]
            patient_id, linked, new = await self._member(tx, ctx, result, r["061"], links, None)
            patient, coverage = mapper.member(
                r, patient_id, [{"system": s, "value": v} for s, v in links]
            )
            if new and ctx.bulk is not None:  # a new member: its Patient and Coverage are new
                if not linked:
                    _bulk_add(ctx, patient)
                _bulk_add(ctx, coverage)
                return
            if not linked:
                await self._put(tx, ctx, result, *patient)
            await self._put(tx, ctx, result, *coverage)
            return
        await self._claim(tx, ctx, result, unit)

    async def _read_states(self, tx: WriteSession, ctx: _Context, units: list[_Unit]) -> None:
        """The stored state of every claim and member of the batch, in a few statements
        (one per 500 ids) instead of one per record."""
        kind = ctx.env.file_type
        rl = ctx.layout.record(kind)
        ctx.claims = {}
        ctx.absent_members = set()
        if kind in CLAIM_TYPES:
            pos = rl.pos(f"CDL{kind}005")
            ids = sorted({row[pos] for unit in units for row in unit.rows})
            cl = apcd_claim.c
            for start in range(0, len(ids), _STATE_READ_CHUNK):
                rows = await tx.conn.execute(
                    select(cl.claim_id, cl.version, cl.digest, cl.resources).where(
                        cl.namespace == ctx.claim_ns,
                        cl.claim_id.in_(ids[start : start + _STATE_READ_CHUNK]),
                    )
                )
                for r in rows:
                    ctx.claims[r.claim_id] = _ClaimState(r.version, r.digest, r.resources)
            ctx.orphans = await self._stored_without_state(
                tx, ctx, [i for i in ids if i not in ctx.claims]
            )
        if kind not in _MEMBER_FIELD:
            return
        pos = rl.pos(_MEMBER_FIELD[kind])
        namespace = ctx.ns.key
        ids = {row[pos] for unit in units for row in unit.rows}
        unknown = sorted(i for i in ids if (namespace, i) not in self._members)
        m = apcd_member.c
        for start in range(0, len(unknown), _STATE_READ_CHUNK):
            chunk = unknown[start : start + _STATE_READ_CHUNK]
            rows = await tx.conn.execute(
                select(m.member_id, m.patient_id, m.linked).where(
                    m.namespace == namespace, m.member_id.in_(chunk)
                )
            )
            found = {r.member_id: (r.patient_id, bool(r.linked)) for r in rows}
            for member_id in chunk:
                if member_id in found:  # committed already: safe to keep across batches
                    self._members[(namespace, member_id)] = found[member_id]
                else:
                    ctx.absent_members.add(member_id)

    async def _stored_without_state(
        self, tx: WriteSession, ctx: _Context, claim_ids: list[str]
    ) -> set[str]:
        """Which of these claims, none of which has a state row, have an ExplanationOfBenefit
        of this file's claim type stored: one index lookup per 500 claims (by the claim
        identifier), and a read of the rare hits (MC, PC and DC claim numbers may coincide)."""
        t = spidx_token.c
        system = ctx.ns.system("claim")
        hits: dict[str, str] = {}
        for start in range(0, len(claim_ids), _STATE_READ_CHUNK):
            rows = await tx.conn.execute(
                select(t.value, t.res_id).where(
                    t.res_type == "ExplanationOfBenefit",
                    t.param == "identifier",
                    t.value.in_(claim_ids[start : start + _STATE_READ_CHUNK]),
                    t.system == system,
                )
            )
            hits.update((r.value, r.res_id) for r in rows)
        if not hits:
            return set()
        stored = await tx.read_many([("ExplanationOfBenefit", i) for i in hits.values()])
        kinds = _EOB_TYPES[ctx.env.file_type]
        found = set()
        for claim_id, eob_id in hits.items():
            eob = stored.get(("ExplanationOfBenefit", eob_id))
            if eob is not None and eob.content:
                codes = {c.get("code") for c in orjson.loads(eob.content)["type"]["coding"]}
                if codes & kinds:
                    found.add(claim_id)
        return found

    async def _claim(
        self, tx: WriteSession, ctx: _Context, result: FileResult, unit: _Unit
    ) -> None:
        mapper = ctx.mapper
        rows = [mapper.row(v) for v in unit.rows]
        version, latest = Mapper.latest(rows)
        claim_id = rows[0]["005"]
        digest = hashlib.sha256(
            b"\n".join(
                "|".join(v).encode() for v, r in zip(unit.rows, rows, strict=True) if r in latest
            )
        ).hexdigest()
        if claim_id in ctx.bulk_claims:
            await self._flush_bulk(tx, ctx, result)  # the claim is back: store it first
        state = ctx.claims.get(claim_id)
        if state is not None and state.version > version:
            result.superseded += 1
            return
        if state is not None and state.version == version and state.digest == digest:
            return
        if state is None and claim_id in ctx.orphans:
            raise _StateMissing(
                "the claim is stored but its import state (apcd_claim) is missing; restore "
                "that table, or delete the claim's resources, and import again"
            )
        member_id = latest[0][_MEMBER_FIELD[ctx.env.file_type][-3:]]
        patient_id, _, _ = await self._member(tx, ctx, result, member_id, [], latest[0])
        known = _id_map(state)
        assigned: dict[str, str] = {}

        def assign(key: str) -> str:
            got = assigned.get(key)
            if got is None:
                ref = known.get(key)
                got = assigned[key] = ref.partition("/")[2] if ref is not None else new_id()
            return got

        picture = mapper.claim(rows, patient_id, assign)
        if state is None and ctx.bulk is not None:
            # a claim seen for the first time: none of its resources can exist yet
            for res in picture.resources:
                _bulk_add(ctx, res)
            ctx.bulk_claims.add(claim_id)
        elif state is None:  # record by record (the batch is being redone)
            for res in picture.resources:
                await self._put(tx, ctx, result, *res, fresh=True)
        else:  # a new version of a stored claim: compare with what is stored
            keys = [(t, i) for t, i, _ in picture.resources]
            if any(f"{t}/{i}" in ctx.bulk_keys for t, i in keys):
                await self._flush_bulk(tx, ctx, result)
            stored = await tx.read_many(keys)
            for res in picture.resources:
                await self._put(tx, ctx, result, *res, stored=stored)
        key_of = {i: k for k, i in assigned.items()}
        produced = {key_of.get(i, i): f"{t}/{i}" for t, i, _ in picture.resources}
        if state is not None:
            for ref in sorted(set(known.values()) - set(produced.values())):
                if ref in ctx.bulk_keys:
                    await self._flush_bulk(tx, ctx, result)
                rtype, _, rid = ref.partition("/")
                try:
                    if await tx.delete(rtype, rid) is not None:
                        result.deleted += 1
                except NotFound:
                    pass
        new_state = _ClaimState(
            version, digest, orjson.dumps(produced, option=orjson.OPT_SORT_KEYS).decode()
        )
        values = {
            "namespace": ctx.claim_ns,
            "claim_id": claim_id,
            "version": version,
            "digest": digest,
            "voided": picture.void,
            "resources": new_state.resources,
        }
        if state is None:
            tx.conn.defer(_INSERT_CLAIM, [values])  # written with the batch's next statement
        else:
            await tx.conn.execute(
                _UPDATE_CLAIM,
                {"ns": ctx.claim_ns, "claim": claim_id}
                | {f"new_{k}": v for k, v in values.items() if k not in ("namespace", "claim_id")},
            )
        ctx.claims[claim_id] = new_state

    async def _flush_bulk(
        self, tx: WriteSession, ctx: _Context, result: FileResult, *, wait: bool = True
    ) -> None:
        """Store the resources waiting for a bulk insert. With a validation pool the chunk is
        sent there and inserted once validated; `wait` inserts every pending chunk now (the
        caller is about to touch one of them, or the batch is ending)."""
        if ctx.bulk:
            items, ctx.bulk = ctx.bulk, []
            if ctx.pool is not None:
                blobs = [orjson.dumps(body) for _t, _i, body in items]
                future = asyncio.get_running_loop().run_in_executor(
                    ctx.pool, validate_bodies, blobs
                )
                ctx.pending.append((items, future))
            else:
                await self._insert_bulk(tx, ctx, result, items, validated=False)
        while ctx.pending and (wait or len(ctx.pending) > 2):
            items, future = ctx.pending.pop(0)
            problem = await future
            if problem is not None:  # the batch is redone with a savepoint per record
                raise Unprocessable(f"{items[problem[0]][0]} failed validation: {problem[1]}")
            await self._insert_bulk(tx, ctx, result, items, validated=True)
        if wait:
            ctx.bulk_claims.clear()
            ctx.bulk_keys.clear()

    async def _insert_bulk(
        self,
        tx: WriteSession,
        ctx: _Context,
        result: FileResult,
        items: list[Res],
        *,
        validated: bool,
    ) -> None:
        """Create resources that cannot exist yet. The rows are written while the import goes
        on (create_many(detached=True)); should an id be taken after all (the claim tables
        lost or restored from an older backup), BulkConflict ends the batch and it is redone
        record by record, comparing with what is stored."""
        if not validated:
            for _type, _id, body in items:
                check_resource(body)
        await tx.create_many(items, validated=True, detached=True)
        result.created += len(items)

    async def _member(
        self,
        tx: WriteSession,
        ctx: _Context,
        result: FileResult,
        member_id: str,
        links: list[tuple[str, str]],
        claim_row: Row | None,
    ) -> tuple[str, bool, bool]:
        """The Patient a member maps to, whether it is another source's Patient (linked) and
        whether the member is new; a new member's Patient is created from a claim's fields."""
        key = (ctx.ns.key, member_id)
        hit = ctx.pending_members.get(key) or self._members.get(key)
        if hit is not None:
            return (*hit, False)
        m = apcd_member.c
        row = None
        if member_id not in ctx.absent_members:  # not read with the batch's states
            row = (
                await tx.conn.execute(
                    select(m.patient_id, m.linked).where(
                        m.namespace == ctx.ns.key, m.member_id == member_id
                    )
                )
            ).first()
        if row is not None:
            found = (row.patient_id, bool(row.linked))
        else:
            found = (ctx.ns.id("patient", member_id), False)
            for system, value in links:
                token = f"{_esc(system)}|{_esc(value)}"
                criteria = parse_criteria("Patient", [("identifier", token)])
                ids = [i for i in await tx.match(criteria) if i != found[0]]
                if len(ids) == 1:
                    found = (ids[0], True)
                    break
            tx.conn.defer(
                _INSERT_MEMBER,
                [
                    {
                        "namespace": ctx.ns.key,
                        "member_id": member_id,
                        "patient_id": found[0],
                        "linked": found[1],
                    }
                ],
            )
            if claim_row is not None and not found[1]:
                # a claim for a member no eligibility file has described yet
                patient = ctx.mapper.claim_patient(found[0], claim_row)
                if ctx.bulk is not None:
                    _bulk_add(ctx, patient)
                else:
                    await self._put(tx, ctx, result, *patient)
        ctx.pending_members[key] = found
        return (*found, row is None)

    async def _put(
        self,
        tx: WriteSession,
        ctx: _Context,
        result: FileResult,
        rtype: str,
        rid: str,
        body: dict[str, Any],
        *,
        fresh: bool = False,
        stored: dict[tuple[str, str], StoredResource] | None = None,
    ) -> None:
        """Create or update `rtype/rid` unless its stored content is already `body`.
        `stored`: the current versions read beforehand (WriteSession.read_many), if any."""
        if f"{rtype}/{rid}" in ctx.bulk_keys:
            await self._flush_bulk(tx, ctx, result)  # written again in the batch: store it first
        if fresh:
            check_resource(body)
            try:
                await tx.create(rtype, body, resource_id=rid)
            except Conflict:
                pass  # it exists after all: compare and update below
            else:
                result.created += 1
                return
        current: StoredResource | None
        if stored is not None:
            current = stored.get((rtype, rid))
        else:
            try:
                current = await tx.read(rtype, rid)
            except (NotFound, Gone):
                current = None
        if current is not None and current.content is not None:
            content = orjson.loads(current.content)
            meta = content.get("meta") or {}
            meta.pop("versionId", None)
            meta.pop("lastUpdated", None)
            content.pop("id", None)
            if not meta:
                content.pop("meta", None)
            if content == orjson.loads(orjson.dumps(body)):
                result.unchanged += 1
                return
        check_resource(body)
        written = await tx.update(
            rtype,
            rid,
            {**body, "id": rid},
            known_version=current.version if current is not None else None,
        )
        if written.created:
            result.created += 1
        else:
            result.updated += 1

    # ---- journal -----------------------------------------------------------------------------

    async def _open_journal(self, ctx: _Context) -> Any:
        env = ctx.env
        j = apcd_import.c
        async with self.repo.db.write() as conn:
            row = (
                await conn.execute(
                    select(j.status, j.lines_done).where(j.import_id == ctx.import_id)
                )
            ).first()
            if row is not None:
                return row
            await conn.execute(
                insert(apcd_import).values(
                    import_id=ctx.import_id,
                    file_name=env.path.name[:200],
                    file_type=env.file_type,
                    layout=ctx.layout.version[:32],
                    submitter=env.submitter,
                    payer=env.payer,
                    period=f"{env.period_start:%Y%m}-{env.period_end:%Y%m}",
                    record_count=env.record_count,
                    status="running",
                    lines_done=0,
                    lines_read=0,
                    loaded=0,
                    rejected=0,
                    created=0,
                    updated=0,
                    started_at=utc_now_ms(),
                )
            )
        return _Journal("running", 0)

    async def _stored_errors(
        self, import_id: str, file_name: str, *, after: tuple[int, int] = (0, 0), limit: int
    ) -> list[tuple[int, LineError]]:
        """A page of an import's stored line errors, in line order, after (line, row_id)."""
        e = apcd_import_error.c
        line, row_id = after
        async with self.repo.db.read() as conn:
            rows = (
                await conn.execute(
                    select(e.row_id, e.line, e.field_id, e.reason)
                    .where(
                        e.import_id == import_id,
                        (e.line > line) | ((e.line == line) & (e.row_id > row_id)),
                    )
                    .order_by(e.line, e.row_id)
                    .limit(limit)
                )
            ).all()
        return [(r.row_id, LineError(file_name, r.line, r.field_id, r.reason)) for r in rows]

    async def all_errors(self, result: FileResult) -> AsyncIterator[LineError]:
        """Every line error of a file: from the journal (all runs of an import), or for a dry
        run the ones kept in memory. Paged, so a file of bad lines needs no memory for them."""
        if not result.import_id:
            for err in result.errors:
                yield err
            return
        after = (0, 0)
        while True:
            page = await self._stored_errors(result.import_id, result.file, after=after, limit=5000)
            for _row_id, err in page:
                yield err
            if len(page) < 5000:
                return
            after = (page[-1][1].line, page[-1][0])


@dataclass(frozen=True, slots=True)
class _Journal:
    status: str
    lines_done: int


def validate_bodies(blobs: list[bytes]) -> tuple[int, str] | None:
    """In a worker process: the first body that fails validation, (index, diagnostics)."""
    for i, blob in enumerate(blobs):
        try:
            check_resource(orjson.loads(blob))
        except Unprocessable as exc:
            return i, exc.issues[0].diagnostics if exc.issues else exc.diagnostics
    return None


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while importing. An import allocates
    millions of short-lived dicts and lists (mapped resources, index rows) that reference
    counting frees; with the default threshold (700 allocations) the collector runs every few
    resources and takes 15-20% of the import's CPU for nothing. Cycles still get collected,
    every 50,000 allocations."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], _GC_THRESHOLD), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _bulk_add(ctx: _Context, res: Res) -> None:
    assert ctx.bulk is not None
    ctx.bulk.append(res)
    ctx.bulk_keys.add(f"{res[0]}/{res[1]}")


def _esc(text: str) -> str:
    """Escape a token part for search syntax (`\\`, `|`, `,`, `$`)."""
    for ch in "\\|,$":
        text = text.replace(ch, "\\" + ch)
    return text


def _mapping_error(ctx: _Context, unit: _Unit, exc: Unprocessable) -> LineError:
    detail = exc.issues[0].diagnostics if exc.issues else exc.diagnostics
    if not isinstance(exc, _StateMissing):
        detail = f"mapped resource failed validation: {detail}"
    return LineError(ctx.env.path.name, unit.first_line, "-", detail)


def _id_map(state: _ClaimState | None) -> dict[str, str]:
    """A stored claim's resources: each one's key -> "Type/id"."""
    if state is None:
        return {}
    stored = orjson.loads(state.resources)
    if isinstance(stored, list):  # imported before ids were minted: each id is its key
        return {ref.partition("/")[2]: ref for ref in stored}
    return dict(stored)
