"""The kit's HTTP side: one httpx.AsyncClient against a FHIR base, recording every exchange.

Works against any server over the network, or in process through an httpx transport (the
test suite hands it an ASGI transport). Authorization headers are masked in the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from conformance.model import Evidence

__all__ = ["FHIR_JSON", "FhirClient", "Reply"]

FHIR_JSON = "application/fhir+json"
_SHOWN_HEADERS = ("content-type", "etag", "location", "last-modified", "www-authenticate")


@dataclass(slots=True)
class Reply:
    status: int
    headers: httpx.Headers
    body: Any  # parsed JSON, or None
    text: str
    evidence: Evidence

    @property
    def resource_type(self) -> str | None:
        return self.body.get("resourceType") if isinstance(self.body, dict) else None

    def is_outcome(self) -> bool:
        return self.resource_type == "OperationOutcome"

    def entries(self, mode: str | None = None) -> list[dict[str, Any]]:
        if not isinstance(self.body, dict):
            return []
        out = []
        for e in self.body.get("entry") or []:
            if mode is None or (e.get("search") or {}).get("mode", "match") == mode:
                out.append(e.get("resource") or {})
        return out

    def ids(self, mode: str | None = "match") -> set[str]:
        return {f"{r.get('resourceType')}/{r.get('id')}" for r in self.entries(mode)}

    def link(self, relation: str) -> str | None:
        if not isinstance(self.body, dict):
            return None
        for link in self.body.get("link") or []:
            if link.get("relation") == relation:
                return link.get("url")
        return None


class FhirClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.transport = transport
        self.transport = transport
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}" if path else self.base_url

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | list[tuple[str, str]] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        authorize: bool = True,
    ) -> Reply:
        sent = {"Accept": FHIR_JSON}
        if json is not None:
            content = orjson.dumps(json)
            sent["Content-Type"] = FHIR_JSON
        sent.update(headers or {})
        if authorize and self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        response = await self._http.request(
            method, self.url(path), params=params, content=content, headers=sent
        )
        text = response.text
        try:
            body = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError:
            body = None
        shown = {k: ("Bearer ***" if k == "Authorization" else v) for k, v in sent.items()}
        evidence = Evidence(
            method=method,
            url=str(response.request.url),
            status=response.status_code,
            request_headers=shown,
            request_body=Evidence.excerpt(content.decode("utf-8", "replace")) if content else "",
            response_headers={k: v for k, v in response.headers.items() if k in _SHOWN_HEADERS},
            response_excerpt=Evidence.excerpt(text),
        )
        return Reply(response.status_code, response.headers, body, text, evidence)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)
