"""The schema, as SQLAlchemy Core tables. Migrations in migrations/versions/ create exactly this.

    resource              current version of every resource, keyed (type, id); logical deletes
    resource_history      append-only: one row per version, ordered by a global sequence (hid)
    spidx_token           token search index rows, written in the resource's transaction
    spidx_reference       reference search index rows (target type, id, or absolute URL)
    spidx_string          string search index rows (case- and accent-folded, and exact)
    spidx_date            date search index rows: the half-open UTC range [low, high) a value covers
    spidx_quantity        quantity and number search index rows (value, and unit system/code)
    resource_compartment  Patient compartment membership (who may see a resource)
    conditional_key       unique (type, criteria hash): makes conditional create race-free
    hl7_message           the HL7v2 journal: raw bytes, sender, control id, hash, status, ACK
    oauth_client          SMART clients registered with the authorization server
    oauth_user            people who log in at app launch (password hashed with scrypt)
    oauth_assertion_jti   client-assertion ids already used (replay defence), until they expire
    oauth_code            authorization codes (hashed), single use
    oauth_refresh         refresh tokens (hashed), rotated on every use
    oauth_revoked         ids (jti) of revoked access tokens, until they expire
    audit_event           one row per FHIR access or denial, served as AuditEvent
    apcd_import           APCD-CDL import journal: one row per file (by SHA-256), checkpointed
    apcd_import_error     the line-level errors of an import (file line, element id, reason)
    apcd_member           which Patient a payer's member id maps to (own, or linked)
    apcd_claim            the current version of each imported claim and the resources it made
    intermediary          registered intermediaries: adapter kind, settings, credentials, status
    intermediary_check    the outcome of each registry check run (failed check ids and reasons)
    event_outbox          ADT events, committed with the message's resources (idempotency key)
    event_delivery        one row per (event, target): status, attempts, next attempt, delay
    event_receiver        MLLP and FHIR-message receivers that take every (or some) ADT event
    event_subscription_counter  events notified per Subscription (events-since-subscription-start)

The small key-only tables and the index tables are WITHOUT ROWID on SQLite: the row lives in
the key's b-tree, so a write touches one structure fewer. (Not `resource`: its rows are large,
which SQLite advises against for WITHOUT ROWID.)

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
    Double,
    Index,
    Integer,
    LargeBinary,
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
    "audit_event",
    "apcd_claim",
    "apcd_import",
    "apcd_import_error",
    "apcd_member",
    "conditional_key",
    "event_delivery",
    "event_outbox",
    "event_receiver",
    "event_subscription_counter",
    "hl7_message",
    "intermediary",
    "intermediary_check",
    "metadata",
    "oauth_assertion_jti",
    "oauth_client",
    "oauth_code",
    "oauth_refresh",
    "oauth_revoked",
    "oauth_user",
    "resource",
    "resource_compartment",
    "resource_history",
    "spidx_date",
    "spidx_quantity",
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
# Text ordered by code point on both backends (PostgreSQL's "C" collation; SQLite's BINARY is
# already that), so a string prefix is a range the index answers whatever the locale.
_Binary = Text().with_variant(Text(collation="C"), "postgresql")


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

# The index tables are keyed by the resource they belong to: (type, id, param, seq), where seq
# numbers a resource's rows in each table. On SQLite they are WITHOUT ROWID, so the rows live
# in that key's b-tree (which answers a search's correlated checks on a candidate resource and
# an update's "drop the old rows") and a write touches two b-trees per row, the key and the
# value index, instead of three; on PostgreSQL the key replaces a serial row id and its index.
spidx_token = Table(
    "spidx_token",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("param", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("system", Text, nullable=True),
    Column("value", Text, nullable=True),
    Index(None, "res_type", "param", "value", "res_id", "system"),
    sqlite_with_rowid=False,
)

spidx_date = Table(
    "spidx_date",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("param", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("low", DateTime(timezone=True), nullable=False),
    Column("high", DateTime(timezone=True), nullable=False),
    Index(None, "res_type", "param", "low", "high"),
    sqlite_with_rowid=False,
)

spidx_quantity = Table(
    "spidx_quantity",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("param", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("value", Double, nullable=False),
    Index(None, "res_type", "param", "code", "value"),
    sqlite_with_rowid=False,
)

spidx_string = Table(
    "spidx_string",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("param", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("value_normalized", _Binary, nullable=False),
    Column("value_exact", Text, nullable=False),
    Index(None, "res_type", "param", "value_normalized"),
    sqlite_with_rowid=False,
)

spidx_reference = Table(
    "spidx_reference",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("param", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("target_url", Text, nullable=True),
    Index(None, "res_type", "param", "target_id", "res_id", "target_type"),
    Index(None, "target_type", "target_id"),
    sqlite_with_rowid=False,
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


# ---- HL7v2 ingestion journal (app/hl7/journal.py) ----------------------------------------------
# One row per received message, committed before anything else happens to it. `status`:
# received (journaled, not yet mapped), processed, error (mapping failed; reprocessable),
# rejected (not a message we take), conflict (same sender and MSH-10, different bytes).
# Unique on (sender, control id, hash): an identical resend finds the row and its ACK.

hl7_message = Table(
    "hl7_message",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("transport", String(8), nullable=False),
    Column("sender", String(512), nullable=False),
    Column("control_id", String(200), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("message_type", String(40), nullable=False),
    Column("version", String(20), nullable=False),
    Column("status", String(12), nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("ack", Text, nullable=True),
    Column("ack_code", String(2), nullable=True),
    Column("error_code", String(3), nullable=True),
    Column("error", Text, nullable=True),
    Column("resources", Text, nullable=True),
    Column("processed_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("sender", "control_id", "sha256"),
    Index(None, "status", "id"),
)


# ---- SMART authorization server (app/auth/) and audit (app/audit/) ---------------------------
# Secrets (codes, refresh tokens) are stored as SHA-256 hashes, never as issued.

oauth_client = Table(
    "oauth_client",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("scope", Text, nullable=False),
    Column("jwks", Text, nullable=True),
    Column("jwks_url", Text, nullable=True),
    Column("redirect_uris", Text, nullable=False),
    Column("public", Boolean, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)

oauth_user = Table(
    "oauth_user",
    metadata,
    Column("username", String(128), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("fhir_user", String(200), nullable=True),
    Column("disabled", Boolean, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)

oauth_assertion_jti = Table(
    "oauth_assertion_jti",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index(None, "expires_at"),
    sqlite_with_rowid=False,
)

oauth_code = Table(
    "oauth_code",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(128), nullable=False),
    Column("grant", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used", Boolean, nullable=False),
    Index(None, "expires_at"),
)

oauth_refresh = Table(
    "oauth_refresh",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("family", String(64), nullable=False),
    Column("client_id", String(128), nullable=False),
    Column("grant", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked", Boolean, nullable=False),
    Index(None, "family"),
    Index(None, "expires_at"),
)

oauth_revoked = Table(
    "oauth_revoked",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),
    Column("jti", String(256), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("jti"),
    Index(None, "expires_at"),
)

audit_event = Table(
    "audit_event",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("recorded", DateTime(timezone=True), nullable=False),
    Column("action", String(1), nullable=False),
    Column("outcome", String(2), nullable=False),
    Column("status", Integer, nullable=False),
    Column("interaction", String(32), nullable=False),
    Column("client_id", String(128), nullable=True),
    Column("subject", String(200), nullable=True),
    Column("patient", String(64), nullable=True),
    Column("res_type", String(64), nullable=True),
    Column("res_id", String(64), nullable=True),
    Column("search_params", Text, nullable=True),
    Column("purpose", String(200), nullable=True),
    Column("request_id", String(32), nullable=True),
    UniqueConstraint("event_id"),
    Index(None, "recorded"),
    Index(None, "patient", "seq"),
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


# ---- intermediary registry (app/adapters/registry.py) ---------------------------------------
# The Organization and Endpoint are FHIR resources in `resource`; these rows hold what must not
# be a FHIR resource: the credentials for calling the endpoint (never returned by any API,
# never logged), the adapter kind and settings, and the checks' outcomes.

intermediary = Table(
    "intermediary",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("endpoint_id", String(64), nullable=False),
    Column("organization_id", String(64), nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("status", String(16), nullable=False),  # unchecked | active | error | off
    Column("settings", Text, nullable=False),  # JSON object: capability and limit overrides
    Column("auth_method", String(32), nullable=False),
    Column("client_id", Text, nullable=True),
    Column("token_url", Text, nullable=True),
    Column("key_file", Text, nullable=True),
    Column("scope", Text, nullable=True),
    Column("cert_file", Text, nullable=True),
    Column("cert_key_file", Text, nullable=True),
    Column("ca_file", Text, nullable=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
    UniqueConstraint("endpoint_id"),
)

intermediary_check = Table(
    "intermediary_check",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),  # active | error
    Column("passed", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("failures", Text, nullable=False),  # JSON list of {"id", "reason"}
    Index(None, "name", "seq"),
)


# ---- ADT event notifications (app/events) ----------------------------------------------------
# event_outbox rows are written in the same transaction as the ADT message's resources; the
# dispatcher fans each out into event_delivery rows (one per target) and delivers those.

event_outbox = Table(
    "event_outbox",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("event_key", String(36), nullable=False, unique=True),  # idempotency key (UUID)
    Column("journal_id", _Id, nullable=True),  # hl7_message.id it came from
    Column("trigger", String(8), nullable=False),  # A01, A03, ...
    Column("kind", String(16), nullable=False),  # admit, discharge, transfer, ...
    Column("patient_id", String(64), nullable=False),
    Column("patient_version", Integer, nullable=False),
    Column("encounter_id", String(64), nullable=True),
    Column("encounter_version", Integer, nullable=True),
    Column("other_patient_id", String(64), nullable=True),  # A40: the retired Patient
    Column("sender", String(512), nullable=False),  # MSH-3|MSH-4
    Column("occurred_at", DateTime(timezone=True), nullable=True),  # EVN-2 (else MSH-7)
    Column("received_at", DateTime(timezone=True), nullable=False),  # the message's arrival
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("routed", Boolean, nullable=False),  # fanned out into event_delivery rows
    Column("routed_at", DateTime(timezone=True), nullable=True),
    Index(None, "routed", "id"),
    Index(None, "journal_id"),
)

event_delivery = Table(
    "event_delivery",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("event_id", _Id, nullable=False),  # event_outbox.id
    Column("target_kind", String(16), nullable=False),  # subscription | receiver | adapter
    Column("target_id", String(200), nullable=False),
    Column(
        "channel", String(16), nullable=False
    ),  # rest-hook | hl7v2-mllp | fhir-message | adapter
    Column("endpoint", Text, nullable=False),  # where it goes (no credentials), for operators
    Column("idempotency_key", String(36), nullable=False),
    Column("event_number", BigInteger, nullable=True),  # per subscription, from 1
    Column("status", String(12), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),  # also the claim lease
    Column("last_error", Text, nullable=True),  # safe text: endpoint, status, kind; no PHI
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("delay_ms", Integer, nullable=True),  # delivered_at - the message's received_at
    UniqueConstraint("event_id", "target_kind", "target_id"),
    Index(None, "status", "next_attempt_at"),
)

event_receiver = Table(
    "event_receiver",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("channel", String(16), nullable=False),  # hl7v2-mllp | fhir-message
    Column("endpoint", Text, nullable=False),  # mllp(s)://host:port or the $process-message URL
    Column("kinds", Text, nullable=False),  # comma-separated event kinds; "" = all
    Column("panel", String(64), nullable=True),  # a Group id: only its members' events
    Column("headers", Text, nullable=False),  # JSON list of "Name: value" (FHIR message only)
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

event_subscription_counter = Table(
    "event_subscription_counter",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("events_since_start", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)
