"""Shared fixtures: every storage and HTTP test runs on SQLite and, when DXF_TEST_DATABASE_URL
is set (as .ci/run does), on PostgreSQL too."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from app.auth.keys import load_or_create_signing_keys
from app.auth.tokens import issue_token
from app.container import Container, build_container
from app.db import Database
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from app.store.tables import metadata

BASE_URL = "http://testserver"
FHIR_BASE = f"{BASE_URL}/fhir"
PG_URL = os.environ.get("DXF_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
_TABLES = [t.name for t in reversed(metadata.sorted_tables)]


def make_settings(database_url: str, key_file: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "base_url": BASE_URL,
        "signing_key_file": key_file,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys") / "signing-key.json"


async def _fresh_database(backend: str, tmp: Path) -> Database:
    if backend == "sqlite":
        db = Database(f"sqlite:///{tmp / 'test.db'}")
    else:
        assert PG_URL
        db = Database(PG_URL, pool_size=10)
        async with db.write() as conn:
            for name in [*_TABLES, "alembic_version"]:
                await conn.execute(text(f"DROP TABLE IF EXISTS {name} CASCADE"))
    await upgrade(db)
    return db


@pytest.fixture(scope="session", params=BACKENDS)
async def session_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    db = await _fresh_database(request.param, tmp_path_factory.mktemp(request.param))
    yield db
    await db.dispose()


@pytest.fixture
async def db(session_db: Database) -> Database:
    """The backend's database, emptied before each test."""
    async with session_db.write() as conn:
        if session_db.is_sqlite:
            for name in _TABLES:
                await conn.execute(text(f"DELETE FROM {name}"))
        else:
            await conn.execute(text(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY"))
    return session_db


@pytest.fixture
def settings(db: Database, key_file: Path) -> Settings:
    return make_settings(db.url, key_file)


@pytest.fixture
async def container(settings: Settings, db: Database) -> AsyncIterator[Container]:
    built = build_container(settings, db=db)  # share the session's engines (and event loop)
    yield built
    await built.http.aclose()


@pytest.fixture
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(container.settings, container=container)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=FHIR_BASE) as c:
        yield c


TokenFactory = Callable[..., str]


@pytest.fixture
def make_token(key_file: Path) -> TokenFactory:
    keys, _ = load_or_create_signing_keys(key_file)

    def _make(scope: str = "system/*.cruds", patient: str | None = None, **kw: object) -> str:
        return issue_token(
            keys,
            issuer=BASE_URL,
            audience=FHIR_BASE,
            scope=scope,
            patient=patient,
            **kw,  # type: ignore[arg-type]
        )

    return _make


@pytest.fixture
def auth(make_token: TokenFactory) -> dict[str, str]:
    """Headers for a system/*.cruds token."""
    return {"Authorization": f"Bearer {make_token()}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


FHIR_JSON = {"Content-Type": "application/fhir+json"}
