"""Resolving the key a client signed its assertion with (SMART client-confidential-asymmetric,
"Signature Verification": https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html).

A client registers its public keys inline (a JWKS) or by URL. URL key sets are fetched with
httpx, cached for `DXF_JWKS_CACHE_SECONDS` (shorter when the response's Cache-Control max-age
says so), and fetched again early only when an assertion names an unknown `kid`, and then at
most once per `DXF_JWKS_REFETCH_INTERVAL_SECONDS` per URL: a stream of assertions with random
kids cannot make the server hammer the client's host.

Key selection: exactly one key whose `kid` matches and whose type fits the algorithm (RSA for
RS384, EC P-384 for ES384); none or several is a failure. A `jku` header is honoured only when it
equals the registered URL; the server never fetches a URL the assertion names.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc.jwk import ECKey, KeySet, RSAKey

from app.auth.oauth_errors import OAuthError
from app.auth.registry import Client, check_jwks

__all__ = ["ALGORITHM_KEY_TYPES", "JwksCache"]

ALGORITHM_KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "RS384": ("RSA", None),
    "ES384": ("EC", "P-384"),
}
_MAX_JWKS_BYTES = 64 * 1024
_MAX_AGE = re.compile(r"max-age\s*=\s*(\d+)")


@dataclass(slots=True)
class _Entry:
    keys: dict[str, Any]
    fetched_at: float
    expires_at: float


def _fail(description: str) -> OAuthError:
    return OAuthError("invalid_client", description)


def select_key(jwks: dict[str, Any], kid: str, alg: str) -> RSAKey | ECKey:
    kty, crv = ALGORITHM_KEY_TYPES[alg]
    matches = [
        k
        for k in jwks.get("keys", [])
        if isinstance(k, dict)
        and k.get("kid") == kid
        and k.get("kty") == kty
        and (crv is None or k.get("crv") == crv)
    ]
    if len(matches) != 1:
        raise _fail(
            "no single registered key matches the assertion's kid and algorithm"
            if not matches
            else "the client's key set holds several keys with this kid"
        )
    key = KeySet.import_key_set({"keys": matches}).keys[0]
    assert isinstance(key, (RSAKey, ECKey))
    return key


def _has(jwks: dict[str, Any], kid: str) -> bool:
    return any(isinstance(k, dict) and k.get("kid") == kid for k in jwks.get("keys", []))


class JwksCache:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        cache_seconds: int,
        refetch_interval_seconds: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._ttl = cache_seconds
        self._refetch = refetch_interval_seconds
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def key_for(self, client: Client, *, kid: str, alg: str, jku: str | None) -> Any:
        if alg not in ALGORITHM_KEY_TYPES:
            raise _fail(f"assertion algorithm {alg!r} is not accepted (RS384, ES384)")
        if jku is not None and jku != client.jwks_url:
            raise _fail("the assertion's jku is not the client's registered JWKS URL")
        if client.jwks is not None:
            return select_key(client.jwks, kid, alg)
        if client.jwks_url is None:
            raise _fail("the client has no registered keys")
        return select_key(await self.keyset(client.jwks_url, kid), kid, alg)

    async def keyset(self, url: str, kid: str | None = None) -> dict[str, Any]:
        """The cached key set at `url`; fetched when absent or stale, or when `kid` is unknown
        and the last fetch is at least the refetch interval old."""
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            now = self._clock()
            entry = self._entries.get(url)
            if entry is not None and now < entry.expires_at:
                if kid is None or _has(entry.keys, kid):
                    return entry.keys
                if now - entry.fetched_at < self._refetch:
                    return entry.keys  # unknown kid, but fetched too recently to ask again
            try:
                keys, max_age = await self._fetch(url)
            except OAuthError:
                if entry is not None and now < entry.expires_at:
                    return entry.keys
                raise
            ttl = self._ttl if max_age is None else min(self._ttl, max_age)
            self._entries[url] = _Entry(keys, now, now + ttl)
            return keys

    async def _fetch(self, url: str) -> tuple[dict[str, Any], int | None]:
        try:
            async with self._http.stream(
                "GET", url, headers={"Accept": "application/json"}, follow_redirects=False
            ) as response:
                if response.status_code != 200:
                    raise _fail(f"the client's JWKS URL answered {response.status_code}")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_JWKS_BYTES:
                        raise _fail("the client's JWKS is too large")
                cache_control = response.headers.get("cache-control", "")
        except httpx.HTTPError as exc:
            raise _fail(
                f"the client's JWKS URL could not be fetched ({type(exc).__name__})"
            ) from None
        try:
            keys = check_jwks(json.loads(body))
        except ValueError as exc:
            raise _fail(f"the client's JWKS is not valid: {exc}") from None
        max_age = None
        if "no-store" in cache_control or "no-cache" in cache_control:
            max_age = 0
        elif match := _MAX_AGE.search(cache_control):
            max_age = int(match.group(1))
        return keys, max_age
