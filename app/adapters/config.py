"""What an adapter is built from: the registered endpoint's settings and, apart, its credentials.

`RegisteredEndpoint` holds what is safe to show: the name, the address, the adapter kind, the
capabilities and the limits (deadline, retries, paging, size caps). `EndpointCredentials` holds
how to authenticate (auth method, client id, token URL, key file, scopes, mutual-TLS files); it
is never rendered by the API, written to the audit log or logged, and its repr hides every
value. Both are filled from the registry (app/adapters/registry.py); the QHIO profiles
(app/adapters/qhios.toml) give the defaults per kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.adapters.base import AdapterCapabilities

__all__ = ["AUTH_METHODS", "EndpointCredentials", "RegisteredEndpoint"]

MIB = 1024 * 1024

# none: no Authorization header; smart-backend: client_credentials + private_key_jwt;
# mtls: client certificate only (may be combined with smart-backend by giving both)
AUTH_METHODS = ("none", "smart-backend", "mtls")


@dataclass(frozen=True, slots=True)
class RegisteredEndpoint:
    name: str
    address: str  # FHIR base URL, or mllp://host:port
    kind: str = "fhir"
    capabilities: AdapterCapabilities = field(default_factory=AdapterCapabilities)
    deadline_seconds: float = 20.0  # one locate/fetch/deliver call, retries included
    max_attempts: int = 3  # per request, the first included
    backoff_seconds: float = 0.5  # first retry delay; doubles, with full jitter
    max_backoff_seconds: float = 8.0
    max_retry_after_seconds: float = 30.0  # a longer Retry-After is not waited for
    max_pages: int = 20  # `next` links followed per record
    page_size: int | None = None  # `_count` on searches; None: the server's default
    max_response_bytes: int = 10 * MIB  # one response body
    max_record_bytes: int = 50 * MIB  # all pages (and Binaries) of one record
    match_count: int = 5  # `count` on Patient/$match
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request (not secrets)


@dataclass(frozen=True, slots=True)
class EndpointCredentials:
    auth_method: str = "none"
    client_id: str | None = field(default=None, repr=False)
    token_url: str | None = field(default=None, repr=False)
    key_file: str | None = field(default=None, repr=False)
    scope: str | None = field(default=None, repr=False)
    cert_file: str | None = field(default=None, repr=False)
    cert_key_file: str | None = field(default=None, repr=False)
    ca_file: str | None = field(default=None, repr=False)

    @property
    def uses_smart(self) -> bool:
        return self.auth_method == "smart-backend"

    @property
    def uses_client_cert(self) -> bool:
        return self.cert_file is not None

    def problems(self) -> list[str]:
        """What is missing or contradictory (names of fields only, never their values)."""
        out = []
        if self.auth_method not in AUTH_METHODS:
            out.append(f"auth method must be one of {', '.join(AUTH_METHODS)}")
        if self.uses_smart:
            for name in ("client_id", "token_url", "key_file"):
                if not getattr(self, name):
                    out.append(f"smart-backend needs {name.replace('_', '-')}")
            if self.token_url and not self.token_url.startswith(("https://", "http://")):
                out.append("token-url must be an http(s) URL")
        if self.auth_method == "mtls" and not self.cert_file:
            out.append("mtls needs cert (and cert-key unless the cert file holds the key)")
        if self.cert_key_file and not self.cert_file:
            out.append("cert-key needs cert")
        return out
