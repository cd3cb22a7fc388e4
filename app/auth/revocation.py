"""Revoked access tokens (RFC 7009), checked on every FHIR request without a database query.

Access tokens are JWTs: nothing needs to be stored to validate one, so revoking one means
remembering its `jti` until it would have expired anyway. Revocations are written to the
`oauth_revoked` table (so every process sees them) and kept in memory as a dict jti -> exp.
`refresh()` reads only rows newer than the last one it saw, at most once per
`DXF_REVOCATION_POLL_SECONDS`; revocations made through this process apply at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from app.db import Database
from app.store.tables import oauth_revoked

__all__ = ["GRANT_CLAIM", "RevocationList"]

# The claim naming the launch grant an access token came from (see app.auth.grants).
GRANT_CLAIM = "dxf_grant"


class RevocationList:
    def __init__(
        self,
        db: Database,
        *,
        poll_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._poll = poll_seconds
        self._clock = clock
        self._revoked: dict[str, int] = {}
        self._last_seq = 0
        self._last_poll = float("-inf")

    def is_revoked(self, jti: str) -> bool:
        return jti in self._revoked

    def revoked(self, claims: dict[str, object]) -> bool:
        """Whether a validated access token was revoked, itself or through its grant."""
        jti, grant = claims.get("jti"), claims.get(GRANT_CLAIM)
        if isinstance(jti, str) and jti in self._revoked:
            return True
        return isinstance(grant, str) and f"{GRANT_CLAIM}:{grant}" in self._revoked

    async def revoke(self, jti: str, expires_at: int) -> None:
        self._revoked[jti] = expires_at
        try:
            async with self._db.write() as conn:
                await conn.execute(
                    insert(oauth_revoked).values(
                        jti=jti, expires_at=datetime.fromtimestamp(expires_at, UTC)
                    )
                )
        except IntegrityError:
            pass  # already revoked

    async def refresh(self) -> None:
        """Pick up revocations made by other processes; cheap, and rate-limited."""
        now = self._clock()
        if now - self._last_poll < self._poll:
            return
        self._last_poll = now
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    select(oauth_revoked.c.seq, oauth_revoked.c.jti, oauth_revoked.c.expires_at)
                    .where(oauth_revoked.c.seq > self._last_seq)
                    .order_by(oauth_revoked.c.seq)
                )
            ).all()
        for row in rows:
            self._revoked[row.jti] = _epoch(row.expires_at)
            self._last_seq = max(self._last_seq, int(row.seq))
        expired = [jti for jti, exp in self._revoked.items() if exp < now - 300]
        for jti in expired:
            del self._revoked[jti]
        if expired:
            cutoff = datetime.fromtimestamp(now - 300, UTC)
            async with self._db.write() as conn:
                await conn.execute(delete(oauth_revoked).where(oauth_revoked.c.expires_at < cutoff))


def _epoch(value: datetime) -> int:
    """SQLite hands back naive UTC datetimes; PostgreSQL aware ones."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())
