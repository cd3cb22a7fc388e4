"""Manifest MedEx: the California ADT Network takes ADT events as HL7v2 over MLLP; no query.

What is public (../shared/reference/requirements.md §1.3-1.4, confidence S):
- DXF-20: hospitals, EDs and SNFs meet the DxF ADT requirement by sending "a single ADT feed"
  per facility to the network (Manifest MedEx "California ADT Network", launched Jan 2024);
  receivers submit patient panels and the network routes matched ADTs to panel owners.
  Source: manifestmedex.org/solutions/ca-adt-network.
- §1.4: "v2 ADT feed out; panel submission; inbound routed ADTs"; no public query interface
  (no FHIR search or $everything), so locate() and fetch_record() are UNSUPPORTED.

So this adapter only delivers: it forwards the original ER7 message of an ADT event
(`AdtEvent.message`) with the MLLP client of app/hl7/mllp_client.py (HL7 v3 Transport
Specification, MLLP Release 2; the ACK must echo our MSH-10): AA or CA is a receipt; AE, CE,
AR, CR are AdapterError `operation-outcome` (AR/CR retryable). The host and port come from the
registered address `mllp://host:port`; TLS is used for `mllps://` or when TLS files are
registered (a client certificate: mutual TLS). The registry's check opens a connection (and
the TLS handshake) and closes it. Panel submission (patient rosters) is not implemented: its
format is not public. Nothing of the message is logged or put in an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlsplit

from app.adapters.base import (
    AdapterCapabilities,
    AdapterError,
    AdtEvent,
    DeliveryReceipt,
    FailureKind,
    PersonQuery,
    RemotePatient,
    RemoteRecord,
)
from app.adapters.config import RegisteredEndpoint
from app.adapters.deadline import remaining
from app.hl7.mllp_client import MllpClient, parse_mllp_url

__all__ = ["ManifestMedexAdapter", "parse_mllp_address", "probe"]

_CONNECT_TIMEOUT = 5.0


def parse_mllp_address(address: str) -> tuple[str, int, bool]:
    """`mllp://host:port` or `mllps://host:port` -> (host, port, tls). ValueError otherwise."""
    parts = urlsplit(address)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("an MLLP address is mllp://host:port (or mllps:// for TLS), no path")
    return parse_mllp_url(address)


async def probe(host: str, port: int, tls: ssl.SSLContext | None, *, timeout: float) -> None:
    """Open and close a connection (the TLS handshake included): the registry's check."""
    async with asyncio.timeout(timeout):
        _, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=host if tls else None
        )
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


class ManifestMedexAdapter:
    def __init__(self, config: RegisteredEndpoint, ssl_context: ssl.SSLContext | None = None):
        parse_mllp_address(config.address)
        self.config = config
        self._tls = ssl_context

    def __repr__(self) -> str:
        return f"ManifestMedexAdapter(name={self.name!r})"

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def endpoint(self) -> str:
        return self.config.address

    def capabilities(self) -> AdapterCapabilities:
        return AdapterCapabilities(
            identifier_search=False,
            patient_match=False,
            everything=False,
            event_channels=frozenset({"hl7v2-mllp"}),
        )

    async def locate(self, person: PersonQuery) -> list[RemotePatient]:
        raise self._error(FailureKind.UNSUPPORTED, "the ADT network offers no patient query")

    async def fetch_record(
        self,
        patient: RemotePatient,
        *,
        types: Sequence[str] = (),
        since: datetime | None = None,
    ) -> RemoteRecord:
        raise self._error(FailureKind.UNSUPPORTED, "the ADT network offers no record query")

    async def deliver(self, event: AdtEvent) -> DeliveryReceipt:
        if not event.message:
            raise self._error(FailureKind.UNSUPPORTED, "the event has no HL7v2 message to forward")
        left = remaining(self.config.deadline_seconds)
        if left <= 0:
            raise self._error(FailureKind.TIMEOUT, "no time left before the deadline")
        client = MllpClient(
            self.config.address,
            tls=self._tls,
            connect_timeout=min(left, _CONNECT_TIMEOUT),
            ack_timeout=left,
        )
        return await client.deliver(event.message)

    async def aclose(self) -> None:
        return None

    def _error(self, kind: FailureKind, detail: str) -> AdapterError:
        return AdapterError(kind, detail, endpoint=self.name)
