"""The schema, as SQLAlchemy Core tables. Migrations in migrations/versions/ create exactly this.

    resource              current version of every resource, keyed (type, id); logical deletes
    resource_history      append-only: one row per version, ordered by a global sequence (hid)
    spidx_token           token search index rows, written in the resource's transaction
    spidx_reference       reference search index rows (target type, id, or absolute URL)
    spidx_string          string search index rows (case- and accent-folded, and exact)
    spidx_date            date search index rows: the half-open UTC range [low, high) a value covers
    resource_compartment  Patient compartment membership (who may see a resource)
    conditional_key       unique (type, criteria hash): makes conditional create race-free
    apcd_import           APCD-CDL import journal: one row per file (by SHA-256), checkpointed
    apcd_import_error     the line-level errors of an import (file line, element id, reason)
    apcd_member           which Patient a payer's member id maps to (own, or linked)
    apcd_claim            the current version of each imported claim and the resources it made

The small key-only tables are WITHOUT ROWID on SQLite: the row lives in the key's b-tree, so a
write touches one structure fewer. (Not `resource`: its rows are large, which SQLite advises
against for WITHOUT ROWID.)

Content is FHIR JSON: JSONB on PostgreSQL, JSON text on SQLite. The column type passes text
through untouched in both directions so the read path serves stored bytes without parsing them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = [
    "RawJson",
    "apcd_claim",
    "apcd_import",
    "apcd_import_error",
    "apcd_member",
    "conditional_key",
    "metadata",
    "resource",
    "resource_compartment",
    "resource_history",
    "spidx_date",
    "spidx_reference",
    "spidx_string",
    "spidx_token",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_Id = BigInteger().with_variant(Integer(), "sqlite")


class RawJson(TypeDecorator[str]):
    """JSONB on PostgreSQL, JSON on SQLite; values are JSON text in and JSON text out."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())

    def bind_processor(self, dialect: Dialect) -> None:  # type: ignore[override]
        return None

    def result_processor(self, dialect: Dialect, coltype: object) -> None:  # type: ignore[override]
        return None


resource = Table(
    "resource",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("content", RawJson, nullable=True),
    Index(None, "res_type", "last_updated"),
)

resource_history = Table(
    "resource_history",
    metadata,
    Column("hid", _Id, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("method", String(8), nullable=False),
    Column("content", RawJson, nullable=True),
    UniqueConstraint("res_type", "res_id", "version"),
    Index(None, "res_type", "hid"),
    Index(None, "last_updated"),
)

spidx_token = Table(
    "spidx_token",
    metadata,
    Column("row_id", _Id, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("system", Text, nullable=True),
    Column("value", Text, nullable=True),
    Index(None, "res_type", "param", "value", "system"),
    Index(None, "res_type", "res_id"),
)

spidx_date = Table(
    "spidx_date",
    metadata,
    Column("row_id", _Id, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("low", DateTime(timezone=True), nullable=False),
    Column("high", DateTime(timezone=True), nullable=False),
    Index(None, "res_type", "param", "low", "high"),
    Index(None, "res_type", "res_id"),
)

spidx_string = Table(
    "spidx_string",
    metadata,
    Column("row_id", _Id, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("value_normalized", Text, nullable=False),
    Column("value_exact", Text, nullable=False),
    Index(None, "res_type", "param", "value_normalized"),
    Index(None, "res_type", "res_id"),
)

spidx_reference = Table(
    "spidx_reference",
    metadata,
    Column("row_id", _Id, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("target_url", Text, nullable=True),
    Index(None, "res_type", "param", "target_id", "target_type"),
    Index(None, "res_type", "res_id"),
    Index(None, "target_type", "target_id"),
)

resource_compartment = Table(
    "resource_compartment",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Index(None, "res_type", "res_id"),
    sqlite_with_rowid=False,
)

conditional_key = Table(
    "conditional_key",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("key_hash", String(64), primary_key=True),
    Column("res_id", String(64), nullable=False),
    Index(None, "res_type", "res_id"),
    sqlite_with_rowid=False,
)


# ---- APCD-CDL import (app/apcd) ------------------------------------------------------------
# Written in the same transaction as the resources of each batch, so a checkpoint never runs
# ahead of (or behind) what is stored.

apcd_import = Table(
    "apcd_import",
    metadata,
    Column("import_id", String(64), primary_key=True),  # the file's SHA-256, hex
    Column("file_name", Text, nullable=False),
    Column("file_type", String(2), nullable=False),
    Column("layout", String(32), nullable=False),
    Column("submitter", String(16), nullable=False),
    Column("payer", String(16), nullable=False),
    Column("period", String(16), nullable=False),
    Column("record_count", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # running | complete
    Column("lines_done", Integer, nullable=False),  # every line up to here is handled
    Column("lines_read", Integer, nullable=False),
    Column("loaded", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("created", Integer, nullable=False),
    Column("updated", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)

apcd_import_error = Table(
    "apcd_import_error",
    metadata,
    Column("row_id", _Id, primary_key=True, autoincrement=True),
    Column("import_id", String(64), nullable=False),
    Column("line", Integer, nullable=False),
    Column("field_id", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Index(None, "import_id", "line"),
)

apcd_member = Table(
    "apcd_member",
    metadata,
    Column("namespace", String(64), primary_key=True),  # submitter|payer
    Column("member_id", String(64), primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("linked", Boolean, nullable=False),  # True: a Patient from another source
    sqlite_with_rowid=False,
)

apcd_claim = Table(
    "apcd_claim",
    metadata,
    Column("namespace", String(64), primary_key=True),  # submitter|payer|file type
    Column("claim_id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("digest", String(64), nullable=False),  # SHA-256 of the version's lines
    Column("voided", Boolean, nullable=False),
    Column("resources", Text, nullable=False),  # JSON list of "Type/id"
)
