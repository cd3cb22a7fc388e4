"""The token endpoint's grants, introspection and revocation.

- `client_credentials` (SMART Backend Services, https://hl7.org/fhir/smart-app-launch/backend-services.html):
  a confidential client authenticates with `private_key_jwt` (app.auth.assertions) and gets a
  short-lived access token for the `system/` scopes (and the registry's admin scope,
  app.auth.scopes.ADMIN_SCOPE) it asked for and is registered for.
- `authorization_code` with PKCE S256 (RFC 6749 4.1, RFC 7636; SMART App Launch
  https://hl7.org/fhir/smart-app-launch/app-launch.html): the code made by the authorize endpoint
  (app.auth.launch), single use; returns launch context, an `id_token` for `openid`, and a refresh
  token for `offline_access`/`online_access`.
- `refresh_token` (RFC 6749 6): refresh tokens are opaque, stored hashed, bound to their client,
  and rotated on every use. Presenting a refresh token that was already rotated (or a code that
  was already exchanged) revokes everything issued from that grant: one of the two holders is
  an attacker.
- Introspection (RFC 7662, SMART token-introspection) and revocation (RFC 7009).

Access tokens are RS256 JWTs signed with the server key (app.auth.tokens.issue_token). Tokens
from an app launch carry `dxf_grant`, the id of their grant, so revoking the refresh token (or
replaying the code) also revokes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from joserfc import jwt
from sqlalchemy import delete, insert, select, update

from app.auth.assertions import AssertionVerifier
from app.auth.keys import SIGNING_ALGORITHMS, SigningKeys
from app.auth.oauth_errors import OAuthError
from app.auth.registry import Client, ClientRegistry
from app.auth.revocation import GRANT_CLAIM, RevocationList
from app.auth.scopes import ADMIN_SCOPE, mediate
from app.auth.tokens import TokenValidator, issue_token
from app.db import Database
from app.errors import Unauthenticated
from app.settings import Settings
from app.store.tables import oauth_code, oauth_refresh

__all__ = ["GRANT_CLAIM", "Grant", "TokenService", "pkce_challenge"]

_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_MAX_TOKEN_PARAM = 8192
_PURGE_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class Grant:
    """What a user approved at launch; carried by an authorization code and its refresh tokens."""

    scopes: tuple[str, ...]
    username: str | None = None
    fhir_user: str | None = None
    patient: str | None = None
    encounter: str | None = None
    redirect_uri: str | None = None
    code_challenge: str | None = None
    nonce: str | None = None
    family: str = ""

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str) -> Grant:
        data = json.loads(text)
        data["scopes"] = tuple(data["scopes"])
        return cls(**data)


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _grant_error(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


class TokenService:
    def __init__(
        self,
        *,
        settings: Settings,
        keys: SigningKeys,
        db: Database,
        clients: ClientRegistry,
        verifier: AssertionVerifier,
        validator: TokenValidator,
        revocations: RevocationList,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._db = db
        self._clients = clients
        self._verifier = verifier
        self._validator = validator
        self._revocations = revocations
        self._clock = clock
        self._last_purge = float("-inf")

    # ---- client authentication -------------------------------------------------------------

    async def authenticate_client(self, form: dict[str, str]) -> Client:
        """A confidential client by its assertion, or a public client by its `client_id`."""
        if "client_assertion" in form or "client_assertion_type" in form:
            return await self._verifier.verify(form)
        client_id = form.get("client_id", "")
        client = await self._clients.get(client_id) if client_id else None
        if client is None or client.disabled:
            raise OAuthError("invalid_client", "unknown or disabled client")
        if not client.public:
            raise OAuthError("invalid_client", "this client must authenticate with private_key_jwt")
        return client

    # ---- the token endpoint ----------------------------------------------------------------

    async def token(self, form: dict[str, str]) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        if grant_type == "client_credentials":
            return await self._client_credentials(form)
        if grant_type == "authorization_code":
            return await self._authorization_code(form)
        if grant_type == "refresh_token":
            return await self._refresh(form)
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")

    async def _client_credentials(self, form: dict[str, str]) -> dict[str, Any]:
        client = await self._verifier.verify(form)
        requested = form.get("scope", "").split()
        if not requested:
            raise OAuthError("invalid_scope", "scope is required (for example system/*.rs)")
        system_scopes = [s for s in requested if s.startswith("system/") or s == ADMIN_SCOPE]
        granted = mediate(system_scopes, client.scopes)
        if not granted:
            raise OAuthError(
                "invalid_scope", "none of the requested system scopes is registered for this client"
            )
        ttl = self._settings.backend_token_ttl_seconds
        access = issue_token(
            self._keys,
            issuer=self._settings.issuer,
            audience=self._settings.fhir_base_url,
            scope=" ".join(granted),
            subject=client.client_id,
            client_id=client.client_id,
            ttl_seconds=ttl,
            now=int(self._clock()),
        )
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": " ".join(granted),
        }

    async def create_code(self, client_id: str, grant: Grant) -> str:
        code = secrets.token_urlsafe(32)
        grant = replace(grant, family=secrets.token_hex(16))
        now = self._clock()
        expires = now + self._settings.auth_code_ttl_seconds
        async with self._db.write() as conn:
            if now - self._last_purge >= _PURGE_EVERY:
                # codes and refresh tokens an hour past expiry are of no use, even for replay
                # detection (an expired code is refused either way)
                self._last_purge = now
                cutoff = _ts(now - 3600)
                await conn.execute(delete(oauth_code).where(oauth_code.c.expires_at < cutoff))
                await conn.execute(delete(oauth_refresh).where(oauth_refresh.c.expires_at < cutoff))
            await conn.execute(
                insert(oauth_code).values(
                    code_hash=_hash(code),
                    client_id=client_id,
                    grant=grant.dumps(),
                    expires_at=_ts(expires),
                    used=False,
                )
            )
        return code

    async def _authorization_code(self, form: dict[str, str]) -> dict[str, Any]:
        client = await self.authenticate_client(form)
        code = form.get("code", "")
        if not code or len(code) > 256:
            raise _grant_error("code is missing or not valid")
        replayed: Grant | None = None
        grant: Grant | None = None
        async with self._db.write() as conn:
            row = (
                await conn.execute(select(oauth_code).where(oauth_code.c.code_hash == _hash(code)))
            ).first()
            if row is not None and row.client_id == client.client_id:
                stored = Grant.loads(row.grant)
                if row.used:
                    replayed = stored
                elif _epoch(row.expires_at) >= self._clock():
                    marked = await conn.execute(
                        update(oauth_code)
                        .where(
                            oauth_code.c.code_hash == row.code_hash, oauth_code.c.used.is_(False)
                        )
                        .values(used=True)
                    )
                    grant = stored if marked.rowcount == 1 else None
        if replayed is not None:
            await self._revoke_family(replayed.family)
            raise _grant_error("the code has already been used; its tokens are revoked")
        if grant is None:
            raise _grant_error("the code is unknown, expired, or was issued to another client")
        if form.get("redirect_uri") != grant.redirect_uri:
            raise _grant_error("redirect_uri does not match the authorization request")
        verifier = form.get("code_verifier", "")
        if not _VERIFIER.match(verifier) or not secrets.compare_digest(
            pkce_challenge(verifier), grant.code_challenge or ""
        ):
            raise _grant_error("code_verifier does not match the code_challenge (PKCE S256)")
        return await self._issue_launch_tokens(client, grant, grant.scopes, new_refresh=True)

    async def _refresh(self, form: dict[str, str]) -> dict[str, Any]:
        client = await self.authenticate_client(form)
        token = form.get("refresh_token", "")
        if not token or len(token) > 256:
            raise _grant_error("refresh_token is missing or not valid")
        requested = tuple(form["scope"].split()) if form.get("scope") else None
        reused: str | None = None
        grant: Grant | None = None
        async with self._db.write() as conn:
            row = (
                await conn.execute(
                    select(oauth_refresh).where(oauth_refresh.c.token_hash == _hash(token))
                )
            ).first()
            if row is not None and row.client_id == client.client_id:
                stored = Grant.loads(row.grant)
                if row.revoked:
                    reused = row.family
                elif requested is not None and not set(requested) <= set(stored.scopes):
                    raise OAuthError(
                        "invalid_scope", "a refresh may only narrow the granted scopes"
                    )
                elif _epoch(row.expires_at) >= self._clock():
                    marked = await conn.execute(
                        update(oauth_refresh)
                        .where(
                            oauth_refresh.c.token_hash == row.token_hash,
                            oauth_refresh.c.revoked.is_(False),
                        )
                        .values(revoked=True)
                    )
                    grant = stored if marked.rowcount == 1 else None
        if reused is not None:
            await self._revoke_family(reused)
            raise _grant_error("the refresh token was already used; its grant is revoked")
        if grant is None:
            raise _grant_error("the refresh token is unknown, expired, or not this client's")
        scopes = requested or grant.scopes
        return await self._issue_launch_tokens(client, grant, scopes, new_refresh=True)

    async def _issue_launch_tokens(
        self, client: Client, grant: Grant, scopes: tuple[str, ...], *, new_refresh: bool
    ) -> dict[str, Any]:
        now = int(self._clock())
        ttl = self._settings.app_token_ttl_seconds
        extra: dict[str, Any] = {GRANT_CLAIM: grant.family}
        if grant.encounter:
            extra["encounter"] = grant.encounter
        if grant.fhir_user and "fhirUser" in scopes:
            extra["fhirUser"] = f"{self._settings.fhir_base_url}/{grant.fhir_user}"
        scope = " ".join(scopes)
        body: dict[str, Any] = {
            "access_token": issue_token(
                self._keys,
                issuer=self._settings.issuer,
                audience=self._settings.fhir_base_url,
                scope=scope,
                subject=grant.username or client.client_id,
                client_id=client.client_id,
                patient=grant.patient,
                ttl_seconds=ttl,
                now=now,
                extra_claims=extra,
            ),
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": scope,
        }
        if grant.patient:
            body["patient"] = grant.patient
            body["need_patient_banner"] = True
        if grant.encounter:
            body["encounter"] = grant.encounter
        if "openid" in scopes and grant.username:
            body["id_token"] = self._id_token(client, grant, scopes, now)
        if new_refresh and ({"offline_access", "online_access"} & set(grant.scopes)):
            body["refresh_token"] = await self._new_refresh(client, grant)
        return body

    def _id_token(self, client: Client, grant: Grant, scopes: tuple[str, ...], now: int) -> str:
        claims: dict[str, Any] = {
            "iss": self._settings.issuer,
            "sub": grant.username,
            "aud": client.client_id,
            "iat": now,
            "exp": now + self._settings.app_token_ttl_seconds,
        }
        if grant.nonce:
            claims["nonce"] = grant.nonce
        if grant.fhir_user and "fhirUser" in scopes:
            claims["fhirUser"] = f"{self._settings.fhir_base_url}/{grant.fhir_user}"
        header = {"alg": SIGNING_ALGORITHMS[0], "kid": self._keys.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self._keys.current, algorithms=list(SIGNING_ALGORITHMS))

    async def _new_refresh(self, client: Client, grant: Grant) -> str:
        token = secrets.token_urlsafe(32)
        expires = self._clock() + self._settings.refresh_token_ttl_seconds
        async with self._db.write() as conn:
            await conn.execute(
                insert(oauth_refresh).values(
                    token_hash=_hash(token),
                    family=grant.family,
                    client_id=client.client_id,
                    grant=grant.dumps(),
                    expires_at=_ts(expires),
                    revoked=False,
                )
            )
        return token

    async def _revoke_family(self, family: str) -> None:
        """Revoke every refresh token of a grant, and (through the revocation list) every
        access token issued from it."""
        async with self._db.write() as conn:
            await conn.execute(
                update(oauth_refresh).where(oauth_refresh.c.family == family).values(revoked=True)
            )
        until = int(self._clock()) + self._settings.app_token_ttl_seconds + 60
        await self._revocations.revoke(f"{GRANT_CLAIM}:{family}", until)

    # ---- introspection and revocation ------------------------------------------------------

    async def _access_claims(self, token: str) -> dict[str, Any] | None:
        try:
            principal = self._validator.authenticate(f"Bearer {token}")
        except Unauthenticated:
            return None
        claims = principal.claims
        if self._revocations.revoked(claims):
            return None
        return claims

    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 answer for any token this server issued; `{"active": false}` otherwise."""
        if not token or len(token) > _MAX_TOKEN_PARAM:
            return {"active": False}
        await self._revocations.refresh()
        claims = await self._access_claims(token)
        if claims is not None:
            out: dict[str, Any] = {"active": True, "token_type": "Bearer"}
            for name in ("scope", "client_id", "exp", "iat", "sub", "iss", "aud", "patient"):
                if name in claims:
                    out[name] = claims[name]
            for name in ("encounter", "fhirUser"):
                if name in claims:
                    out[name] = claims[name]
            return out
        row = await self._refresh_row(token)
        if row is None or row.revoked or _epoch(row.expires_at) < self._clock():
            return {"active": False}
        grant = Grant.loads(row.grant)
        out = {
            "active": True,
            "token_type": "refresh_token",
            "client_id": row.client_id,
            "scope": " ".join(grant.scopes),
            "exp": int(_epoch(row.expires_at)),
        }
        if grant.username:
            out["sub"] = grant.username
        if grant.patient:
            out["patient"] = grant.patient
        if grant.encounter:
            out["encounter"] = grant.encounter
        return out

    async def _refresh_row(self, token: str) -> Any:
        if len(token) > 256:
            return None
        async with self._db.read() as conn:
            return (
                await conn.execute(
                    select(oauth_refresh).where(oauth_refresh.c.token_hash == _hash(token))
                )
            ).first()

    async def revoke(self, client: Client, token: str) -> None:
        """RFC 7009: revoke an access or refresh token issued to `client`. Unknown or invalid
        tokens are ignored (the answer is 200 either way); another client's token is refused."""
        if not token or len(token) > _MAX_TOKEN_PARAM:
            return
        claims = await self._access_claims(token)
        if claims is not None:
            if claims.get("client_id") != client.client_id:
                raise OAuthError("unauthorized_client", "the token was issued to another client")
            await self._revocations.revoke(str(claims["jti"]), int(claims["exp"]))
            return
        row = await self._refresh_row(token)
        if row is None:
            return
        if row.client_id != client.client_id:
            raise OAuthError("unauthorized_client", "the token was issued to another client")
        await self._revoke_family(row.family)
