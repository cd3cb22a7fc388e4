"""Validated settings from `DXF_`-prefixed environment variables.

Every field here is documented in docs/configuration.md; add it there when you add it here.
Nothing reads the environment outside this module, and nothing here does I/O.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.apcd.links import parse_link_rules

__all__ = ["Settings", "async_database_url"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DXF_", extra="ignore")

    database_url: str = "sqlite:///./data/dxf-bridge.db"
    base_url: str = "http://127.0.0.1:8080"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    signing_key_file: Path = Path("./data/signing-key.json")
    token_issuer: str | None = None
    token_leeway_seconds: int = Field(default=30, ge=0, le=300)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_bundle_entries: int = Field(default=500, ge=1)
    default_page_size: int = Field(default=50, ge=1)
    max_page_size: int = Field(default=1000, ge=1)
    db_pool_size: int = Field(default=10, ge=1)
    workers: int = Field(default=1, ge=1, le=64)
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "NORMAL"
    sqlite_wal_limit_mb: int = Field(default=64, ge=0)
    sqlite_cache_mb: int = Field(default=0, ge=0, le=65536)
    sqlite_writer_cache_mb: int = Field(default=0, ge=0, le=65536)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # SMART authorization server (app/auth/): lifetimes, client JWKS caching, revocation
    backend_token_ttl_seconds: int = Field(default=300, ge=30, le=3600)
    app_token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)
    refresh_token_ttl_seconds: int = Field(default=90 * 86400, ge=3600)
    auth_code_ttl_seconds: int = Field(default=60, ge=10, le=600)
    jwks_cache_seconds: int = Field(default=300, ge=0, le=86400)
    jwks_refetch_interval_seconds: int = Field(default=60, ge=1, le=3600)
    revocation_poll_seconds: float = Field(default=2.0, ge=0, le=300)
    audit_wait_for_flush: bool = True
    external_issuer: str | None = None
    external_jwks_url: str | None = None

    # HL7v2 ingestion (app/hl7): the MLLP listener, POST /hl7v2 and `dxf-bridge ingest-hl7`
    mllp_enabled: bool = False
    mllp_host: str = "127.0.0.1"
    mllp_port: int = Field(default=2575, ge=0, le=65535)
    mllp_max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    mllp_idle_timeout_seconds: float = Field(default=300.0, gt=0)
    mllp_max_connections: int = Field(default=100, ge=1)
    mllp_tls_cert_file: Path | None = None
    mllp_tls_key_file: Path | None = None
    mllp_tls_client_ca_file: Path | None = None
    hl7_default_charset: str = "utf-8"
    hl7_default_timezone: str = "America/Los_Angeles"
    hl7_identifier_systems: dict[str, str] = Field(default_factory=dict)
    hl7_identifier_system_prefix: str = "urn:dxf-bridge:v2:assigning-authority:"
    hl7_application: str = "DXF-BRIDGE"
    hl7_facility: str = "DXF"
    # ADT event notifications (app/events): outbox dispatcher, retries, dead letter
    events_enabled: bool = True
    events_poll_seconds: float = Field(default=1.0, gt=0, le=300)
    events_max_attempts: int = Field(default=10, ge=1, le=100)
    events_backoff_base_seconds: float = Field(default=2.0, gt=0, le=3600)
    events_backoff_max_seconds: float = Field(default=900.0, gt=0, le=86400)
    events_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    events_concurrency: int = Field(default=16, ge=1, le=256)
    events_allow_http: bool = False
    apcd_layout: str = "3.0.1"
    apcd_delimiter: str = Field(default="|", min_length=1, max_length=1)
    apcd_batch_lines: int = Field(default=2000, ge=1, le=100_000)
    apcd_link_identifiers: str = ""
    apcd_validation_workers: int = Field(default=0, ge=0, le=16)
    # intermediary registry and adapters (app/adapters): scheduled checks, HTTP timeout
    intermediary_check_interval: float = Field(default=21600, ge=0)  # seconds; 0 = off
    intermediary_timeout_seconds: float = Field(default=30.0, gt=0, le=600)

    # Federated reads (app/federation): intermediaries asked during $everything and searches
    federate_default: bool = True
    federation_deadline_seconds: float = Field(default=3.0, gt=0, le=60)
    federation_breaker_failures: int = Field(default=5, ge=1, le=1000)
    federation_breaker_cooldown_seconds: float = Field(default=30.0, ge=0, le=86400)
    federation_min_match_score: float = Field(default=0.9, ge=0, le=1)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("DXF_BASE_URL must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("hl7_default_charset")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"DXF_HL7_DEFAULT_CHARSET: unknown character set {value!r}") from None
        return value

    @field_validator("hl7_default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"DXF_HL7_DEFAULT_TIMEZONE: unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.mllp_tls_cert_file is None) != (self.mllp_tls_key_file is None):
            raise ValueError("DXF_MLLP_TLS_CERT_FILE and DXF_MLLP_TLS_KEY_FILE go together")
        if self.mllp_tls_client_ca_file is not None and self.mllp_tls_cert_file is None:
            raise ValueError("DXF_MLLP_TLS_CLIENT_CA_FILE needs DXF_MLLP_TLS_CERT_FILE")
        return self

    @field_validator("apcd_link_identifiers")
    @classmethod
    def _link_rules(cls, value: str) -> str:
        parse_link_rules(value)
        return value

    @model_validator(mode="after")
    def _page_sizes(self) -> Settings:
        if self.default_page_size > self.max_page_size:
            raise ValueError("DXF_DEFAULT_PAGE_SIZE may not exceed DXF_MAX_PAGE_SIZE")
        return self

    @model_validator(mode="after")
    def _external_issuer(self) -> Settings:
        if bool(self.external_issuer) != bool(self.external_jwks_url):
            raise ValueError("DXF_EXTERNAL_ISSUER and DXF_EXTERNAL_JWKS_URL go together")
        if self.external_jwks_url and not self.external_jwks_url.startswith("https://"):
            raise ValueError("DXF_EXTERNAL_JWKS_URL must be an https URL")
        if self.external_issuer and self.external_issuer.rstrip("/") == self.issuer:
            raise ValueError("DXF_EXTERNAL_ISSUER must differ from this server's own issuer")
        return self

    @property
    def fhir_base_url(self) -> str:
        """The FHIR base: also the `aud` every access token must carry."""
        return f"{self.base_url}/fhir"

    @property
    def issuer(self) -> str:
        return (self.token_issuer or self.base_url).rstrip("/")

    def endpoint(self, name: str) -> str:
        """An authorization-server endpoint: `token`, `authorize`, `introspect`, `revoke`."""
        return f"{self.base_url}/auth/{name}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def async_database_url(url: str) -> str:
    """Map a plain database URL to the async driver the server uses.

    `sqlite:///path` becomes `sqlite+pysqlite:///path` (the standard library driver, used on the
    event loop; see app.db); `postgresql://` (or `postgres://`) becomes `postgresql+asyncpg://`.
    A URL that already names a driver is kept.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    if "+" in scheme:
        return url
    if scheme == "sqlite":
        return f"sqlite+pysqlite://{rest}"
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    raise ValueError(f"unsupported database scheme {scheme!r}: use sqlite or postgresql")
