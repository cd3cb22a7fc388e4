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
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "NORMAL"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    apcd_layout: str = "3.0.1"
    apcd_delimiter: str = Field(default="|", min_length=1, max_length=1)
    apcd_batch_lines: int = Field(default=2000, ge=1, le=100_000)
    apcd_link_identifiers: str = ""
    apcd_validation_workers: int = Field(default=0, ge=0, le=16)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("DXF_BASE_URL must be an absolute http(s) URL")
        return value.rstrip("/")

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

    @property
    def fhir_base_url(self) -> str:
        """The FHIR base: also the `aud` every access token must carry."""
        return f"{self.base_url}/fhir"

    @property
    def issuer(self) -> str:
        return (self.token_issuer or self.base_url).rstrip("/")

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
