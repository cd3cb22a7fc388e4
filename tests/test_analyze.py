"""`analyze` (dxf-bridge analyze, run after bulk loads) refreshes the planner's statistics, and
on PostgreSQL vacuums too, so index-only scans of fresh index rows skip the table."""

from __future__ import annotations

from sqlalchemy import text

from app.db import Database
from app.migrate import analyze


async def test_analyze_refreshes_statistics_and_vacuums_postgresql(db: Database) -> None:
    async with db.write() as conn:
        await conn.execute(
            text(
                "INSERT INTO spidx_token (res_type, res_id, param, seq, system, value) "
                "VALUES ('Observation', 'o1', 'code', 0, 'http://loinc.org', '4548-4')"
            )
        )
    await analyze(db)
    async with db.read() as conn:
        if db.is_sqlite:
            rows = (await conn.execute(text("SELECT tbl FROM sqlite_stat1"))).all()
            assert "spidx_token" in {r[0] for r in rows}
        else:
            row = (
                await conn.execute(
                    text(
                        "SELECT last_vacuum, last_analyze FROM pg_stat_user_tables "
                        "WHERE relname = 'spidx_token'"
                    )
                )
            ).one()
            assert row.last_vacuum is not None and row.last_analyze is not None
