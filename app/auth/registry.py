"""The client and user registries of the authorization server, in the database.

Clients (SMART App Launch "client-confidential-asymmetric" and "client-public",
https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html) are registered by an
operator with `dxf-bridge clients add`: a client id, the scopes it may ever be granted, and for a
confidential client its public keys, inline (a JWKS) or by URL (preferred: the client can rotate).
Users log in at app launch (`dxf-bridge users add`); their `fhirUser` is a FHIR reference.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from app.auth.cors import origin_of
from app.auth.passwords import DUMMY_HASH, hash_password, verify_password
from app.db import Database
from app.store.tables import oauth_client, oauth_user

__all__ = ["Client", "ClientRegistry", "User", "UserRegistry", "check_jwks", "check_jwks_url"]

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._~:/@-]{1,128}$")
_USERNAME = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")
_FHIR_USER = re.compile(r"^(Practitioner|Patient|RelatedPerson|Person)/[A-Za-z0-9\-.]{1,64}$")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    scopes: tuple[str, ...]
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    redirect_uris: tuple[str, ...] = ()
    public: bool = False
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class User:
    username: str
    fhir_user: str | None


def check_jwks(jwks: Any) -> dict[str, Any]:
    """A client's public JWKS: every key has a `kid`, is RSA or EC, and holds no private part."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ValueError("the JWKS must be an object with a non-empty 'keys' list")
    for key in jwks["keys"]:
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str) or not key["kid"]:
            raise ValueError("every key in the JWKS needs a 'kid'")
        if key.get("kty") not in ("RSA", "EC"):
            raise ValueError("JWKS keys must be RSA or EC")
        if "d" in key:
            raise ValueError("the JWKS holds a private key; register the public keys only")
    try:
        KeySet.import_key_set(jwks)
    except (JoseError, ValueError, TypeError) as exc:
        raise ValueError(f"the JWKS does not parse: {exc}") from None
    return jwks


def check_jwks_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return url
    raise ValueError("the JWKS URL must be https (http only on the loopback interface)")


def _check_redirect(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.fragment or not parts.scheme:
        raise ValueError(f"not an absolute redirect URI without fragment: {uri!r}")
    if parts.scheme in ("http", "https") and not parts.hostname:
        raise ValueError(f"the redirect URI has no host: {uri!r}")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ValueError("http redirect URIs are allowed on the loopback interface only")
    return uri


def _now() -> datetime:
    return datetime.now(UTC)


def _client(row: Any) -> Client:
    return Client(
        client_id=row.client_id,
        scopes=tuple(row.scope.split()),
        jwks=json.loads(row.jwks) if row.jwks else None,
        jwks_url=row.jwks_url,
        redirect_uris=tuple(json.loads(row.redirect_uris)),
        public=bool(row.public),
        disabled=bool(row.disabled),
    )


class ClientRegistry:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, client: Client) -> None:
        """Register a client; ValueError when the registration is incomplete or the id is taken."""
        if not _CLIENT_ID.match(client.client_id):
            raise ValueError("client ids are 1-128 characters of [A-Za-z0-9._~:/@-]")
        if not client.scopes:
            raise ValueError("a client needs at least one scope")
        for uri in client.redirect_uris:
            _check_redirect(uri)
        if client.public:
            if client.jwks or client.jwks_url:
                raise ValueError("a public client has no keys")
            if not client.redirect_uris:
                raise ValueError("a public client needs a redirect URI")
        elif bool(client.jwks) == bool(client.jwks_url):
            raise ValueError("a confidential client needs exactly one of a JWKS or a JWKS URL")
        if client.jwks:
            check_jwks(client.jwks)
        if client.jwks_url:
            check_jwks_url(client.jwks_url)
        try:
            async with self._db.write() as conn:
                await conn.execute(
                    insert(oauth_client).values(
                        client_id=client.client_id,
                        scope=" ".join(client.scopes),
                        jwks=json.dumps(client.jwks) if client.jwks else None,
                        jwks_url=client.jwks_url,
                        redirect_uris=json.dumps(list(client.redirect_uris)),
                        public=client.public,
                        disabled=False,
                        created=_now(),
                    )
                )
        except IntegrityError:
            raise ValueError(f"client {client.client_id!r} is already registered") from None

    async def get(self, client_id: str) -> Client | None:
        if not _CLIENT_ID.match(client_id):
            return None
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    select(oauth_client).where(oauth_client.c.client_id == client_id)
                )
            ).first()
        return _client(row) if row is not None else None

    async def list(self) -> list[Client]:
        async with self._db.read() as conn:
            rows = (
                await conn.execute(select(oauth_client).order_by(oauth_client.c.client_id))
            ).all()
        return [_client(r) for r in rows]

    async def origins(self) -> frozenset[str]:
        """The web origins of enabled clients' redirect URIs (for CORS)."""
        origins = set()
        for client in await self.list():
            if not client.disabled:
                origins.update(o for o in map(origin_of, client.redirect_uris) if o)
        return frozenset(origins)

    async def set_disabled(self, client_id: str, disabled: bool = True) -> bool:
        async with self._db.write() as conn:
            result = await conn.execute(
                update(oauth_client)
                .where(oauth_client.c.client_id == client_id)
                .values(disabled=disabled)
            )
        return bool(result.rowcount)


class UserRegistry:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, username: str, password: str, fhir_user: str | None = None) -> None:
        if not _USERNAME.match(username):
            raise ValueError("usernames are 1-128 characters of [A-Za-z0-9._@-]")
        if len(password) < 12:
            raise ValueError("passwords must be at least 12 characters")
        if fhir_user is not None and not _FHIR_USER.match(fhir_user):
            raise ValueError("--fhir-user must be a reference such as Practitioner/123")
        hashed = await asyncio.to_thread(hash_password, password)
        try:
            async with self._db.write() as conn:
                await conn.execute(
                    insert(oauth_user).values(
                        username=username,
                        password_hash=hashed,
                        fhir_user=fhir_user,
                        disabled=False,
                        created=_now(),
                    )
                )
        except IntegrityError:
            raise ValueError(f"user {username!r} already exists") from None

    async def authenticate(self, username: str, password: str) -> User | None:
        """The user when the password matches and the account is enabled, else None. Unknown
        names cost one hash too, so timing does not reveal which usernames exist."""
        row = None
        if _USERNAME.match(username) and len(password) <= 1024:
            async with self._db.read() as conn:
                row = (
                    await conn.execute(select(oauth_user).where(oauth_user.c.username == username))
                ).first()
        stored = row.password_hash if row is not None else DUMMY_HASH
        ok = await asyncio.to_thread(verify_password, password[:1024], stored)
        if row is None or not ok or row.disabled:
            return None
        return User(username=row.username, fhir_user=row.fhir_user)
