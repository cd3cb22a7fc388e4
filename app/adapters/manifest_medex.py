"""Manifest MedEx: the California ADT Network takes ADT events as HL7v2 over MLLP; no query.

What is public (../shared/reference/requirements.md §1.3-1.4, confidence S):
- DXF-20: hospitals, EDs and SNFs meet the DxF ADT requirement by sending "a single ADT feed"
  per facility to the network (Manifest MedEx "California ADT Network", launched Jan 2024);
  receivers submit patient panels and the network routes matched ADTs to panel owners.
  Source: manifestmedex.org/solutions/ca-adt-network.
- §1.4: "v2 ADT feed out; panel submission; inbound routed ADTs"; no public query interface
  (no FHIR search or $everything), so locate() and fetch_record() are UNSUPPORTED.

So this adapter only delivers: it forwards the original ER7 message of an ADT event
(`AdtEvent.message`) over MLLP (HL7 v3 Transport Specification, MLLP Release 2: a frame is
<VT> message <FS><CR>; the receiver answers one ACK frame) and reads MSA-1 of the ACK: AA or CA
is accepted; AE, AR, CE, CR are not (the code is the receipt's detail). The host and port come
from the registered address `mllp://host:port`; TLS is used for `mllps://` or when a client
certificate is registered (mutual TLS). Panel submission (patient rosters) is not implemented:
its format is not public. Nothing of the message is logged or put in an error.
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

__all__ = ["ManifestMedexAdapter", "MllpClient", "ack_code", "parse_mllp_address"]

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
_MAX_ACK = 1024 * 1024
_ACCEPTED = frozenset({"AA", "CA"})


def parse_mllp_address(address: str) -> tuple[str, int, bool]:
    """`mllp://host:port` or `mllps://host:port` -> (host, port, tls). ValueError otherwise."""
    parts = urlsplit(address)
    if parts.scheme not in ("mllp", "mllps") or not parts.hostname or parts.port is None:
        raise ValueError("an MLLP address is mllp://host:port (or mllps:// for TLS)")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError("an MLLP address has no path or query")
    return parts.hostname, parts.port, parts.scheme == "mllps"


def ack_code(ack: bytes) -> str | None:
    """MSA-1 of an ACK message, or None when there is no MSA segment."""
    text = ack.decode("latin-1")
    segments = [s for s in text.replace("\n", "\r").split("\r") if s]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 4:
        return None
    sep = segments[0][3]
    for segment in segments:
        fields = segment.split(sep)
        if fields[0] == "MSA" and len(fields) > 1:
            return fields[1].strip() or None
    return None


class MllpClient:
    """One message, one ACK, over a fresh connection (ADT volumes are low; no pooling)."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl_context

    async def send(self, message: bytes, *, timeout: float) -> bytes:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
            )
            try:
                writer.write(VT + message + FS + CR)
                await writer.drain()
                await reader.readuntil(VT)
                frame = await reader.readuntil(FS + CR)
                if len(frame) > _MAX_ACK:
                    raise ValueError("ACK too large")
                return frame[: -len(FS + CR)]
            finally:
                await _close(writer)

    async def probe(self, *, timeout: float) -> None:
        """Open and close a connection (TLS handshake included): the registry's check."""
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
            )
            await _close(writer)


class ManifestMedexAdapter:
    def __init__(self, config: RegisteredEndpoint, ssl_context: ssl.SSLContext | None = None):
        host, port, tls = parse_mllp_address(config.address)
        if tls and ssl_context is None:
            ssl_context = ssl.create_default_context()
        self.config = config
        self.client = MllpClient(host, port, ssl_context)

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
        try:
            ack = await self.client.send(event.message, timeout=left)
        except TimeoutError:
            raise self._error(FailureKind.TIMEOUT, "no ACK within the deadline") from None
        except asyncio.IncompleteReadError:
            detail = "the connection closed before an ACK"
            raise self._error(FailureKind.MALFORMED, detail) from None
        except (asyncio.LimitOverrunError, ValueError):
            raise self._error(FailureKind.OVERSIZED, "the ACK is too large") from None
        except (OSError, ssl.SSLError) as exc:
            raise self._error(
                FailureKind.UNREACHABLE, f"cannot connect ({type(exc).__name__})"
            ) from None
        code = ack_code(ack)
        if code is None:
            raise self._error(FailureKind.MALFORMED, "the answer is not an HL7v2 ACK")
        return DeliveryReceipt(accepted=code in _ACCEPTED, detail=code[:2])

    async def aclose(self) -> None:
        return None

    def _error(self, kind: FailureKind, detail: str) -> AdapterError:
        return AdapterError(kind, detail, endpoint=self.name)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()
