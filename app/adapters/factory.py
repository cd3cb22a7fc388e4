"""Adapters from registrations: the profile's adapter code, an HTTP client, a token source.

kind -> profile (app/adapters/qhios.toml) -> adapter class:

    fhir            FhirAdapter (app/adapters/fhir.py): every FHIR kind without its own code
    health-gorilla  HealthGorillaAdapter (app/adapters/health_gorilla.py)
    manifest-medex  ManifestMedexAdapter (app/adapters/manifest_medex.py)

One `httpx.AsyncClient` serves every endpoint without TLS material of its own; an endpoint with
a client certificate or a CA file gets its own client (mutual TLS). The factory owns these
clients and closes them in `aclose()`.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from app.adapters.base import IntermediaryAdapter
from app.adapters.config import EndpointCredentials, RegisteredEndpoint
from app.adapters.fhir import FhirAdapter, MessageBuilder
from app.adapters.health_gorilla import HealthGorillaAdapter
from app.adapters.manifest_medex import ManifestMedexAdapter
from app.adapters.profiles import load_profiles
from app.adapters.registry import client_ssl_context
from app.adapters.smart_client import SmartBackendTokens, TokenSource, load_private_key

__all__ = ["AdapterFactory"]

_DEFAULT_SCOPE = "system/*.rs"


class AdapterFactory:
    def __init__(
        self,
        *,
        timeout_seconds: float = 30.0,
        message_builder: MessageBuilder | None = None,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: an in-process app
    ) -> None:
        self._timeout = timeout_seconds
        self._builder = message_builder
        self._transport = transport
        self._clients: dict[tuple[Any, ...], httpx.AsyncClient] = {}

    def http_client(self, credentials: EndpointCredentials) -> httpx.AsyncClient:
        key = (credentials.cert_file, credentials.cert_key_file, credentials.ca_file)
        client = self._clients.get(key)
        if client is None:
            context = client_ssl_context(credentials)
            options: dict[str, Any] = {
                "timeout": httpx.Timeout(self._timeout),
                "follow_redirects": False,
            }
            if self._transport is not None:
                options["transport"] = self._transport
            elif context is not None:
                options["verify"] = context
            client = httpx.AsyncClient(**options)
            self._clients[key] = client
        return client

    def token_source(
        self, config: RegisteredEndpoint, credentials: EndpointCredentials
    ) -> TokenSource | None:
        if not credentials.uses_smart:
            return None
        assert credentials.token_url and credentials.client_id and credentials.key_file
        return SmartBackendTokens(
            self.http_client(credentials),
            token_url=credentials.token_url,
            client_id=credentials.client_id,
            key=load_private_key(credentials.key_file),
            scope=credentials.scope or _DEFAULT_SCOPE,
            endpoint=config.name,
        )

    def build(
        self, config: RegisteredEndpoint, credentials: EndpointCredentials
    ) -> IntermediaryAdapter:
        """ValueError or OSError when the credentials' files do not load."""
        profile = load_profiles()[config.kind]
        if profile.adapter == "manifest-medex":
            context: ssl.SSLContext | None = client_ssl_context(credentials)
            return ManifestMedexAdapter(config, context)
        cls = HealthGorillaAdapter if profile.adapter == "health-gorilla" else FhirAdapter
        return cls(
            config,
            self.http_client(credentials),
            self.token_source(config, credentials),
            message_builder=self._builder,
        )

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
