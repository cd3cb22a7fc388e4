"""CORS for browser apps (SMART App Launch, "CORS": discovery and metadata open to any origin;
the token endpoint and the FHIR API open to the origins of registered clients).

An origin is allowed when it is the origin (scheme, host, port) of a redirect URI of an enabled
registered client; the set is read from the database at most every 30 seconds. For an allowed
origin, answers carry `Access-Control-Allow-Origin: <origin>` and preflight requests (`OPTIONS`
with `Access-Control-Request-Method`) are answered 204 with the methods and headers the API
uses. Other origins get no CORS headers (the browser then refuses the answer) and a 403 to
preflight. Credentials (cookies) are never allowed: the API uses Bearer tokens.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CorsMiddleware", "origin_of"]

_PUBLIC = ("/.well-known/", "/fhir/.well-known/", "/fhir/metadata")
_PROTECTED = ("/fhir", "/auth/token", "/auth/revoke", "/auth/introspect")
_METHODS = "GET, POST, PUT, DELETE"
_HEADERS = (
    "Authorization, Content-Type, Accept, If-Match, If-None-Match, If-None-Exist, Prefer, "
    "X-Purpose-Of-Use"
)
_EXPOSE = "Location, Content-Location, ETag, Last-Modified, X-Request-Id, WWW-Authenticate"
_REFRESH_SECONDS = 30.0


def origin_of(uri: str) -> str | None:
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


class CorsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        origins: Callable[[], Awaitable[frozenset[str]]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self._load = origins
        self._clock = clock
        self._origins: frozenset[str] = frozenset()
        self._loaded_at = float("-inf")

    async def _allowed(self, origin: str) -> bool:
        if self._clock() - self._loaded_at >= _REFRESH_SECONDS:
            self._origins = await self._load()
            self._loaded_at = self._clock()
        return origin.lower() in self._origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        path: str = scope.get("path", "")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if path.startswith(_PUBLIC):
            allow: str | None = "*"
        elif path.startswith(_PROTECTED) and await self._allowed(origin):
            allow = origin
        else:
            allow = None
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(allow, scope, receive, send)
            return
        if allow is None:
            await self.app(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            present = {k.lower() for k, _ in message.get("headers", [])}
            if message["type"] == "http.response.start" and (
                b"access-control-allow-origin" not in present
            ):
                extra = [
                    (b"access-control-allow-origin", allow.encode()),
                    (b"access-control-expose-headers", _EXPOSE.encode()),
                    (b"vary", b"Origin"),
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_cors)

    async def _preflight(
        self, allow: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if allow is None:
            response = Response(status_code=403, headers={"Vary": "Origin"})
        else:
            response = Response(
                status_code=204,
                headers={
                    "Access-Control-Allow-Origin": allow,
                    "Access-Control-Allow-Methods": _METHODS,
                    "Access-Control-Allow-Headers": _HEADERS,
                    "Access-Control-Max-Age": "600",
                    "Vary": "Origin",
                },
            )
        await response(scope, receive, send)
