"""The MLLP client: send one HL7v2 message to a receiver and read its acknowledgement.

Implements the sending side of the HL7 v3 Transport Specification, MLLP Release 2 (block format
<VT> message <FS><CR>; python-hl7's framing bytes) and the original/enhanced acknowledgement
rules of HL7 v2.5.1 section 2.9 (MSA-1 from table 0008, MSA-2 echoing our MSH-10):

- connect (optionally over TLS) within the connect timeout, write one framed message, read one
  framed answer within the answer timeout; bytes before the start block are skipped;
- the answer must be an ACK whose MSA-2 is the control id we sent; MSA-1 AA/CA is accepted;
- every failure is an `AdapterError` (app/adapters/base.py): unreachable (refused, DNS, TLS),
  timeout, oversized or malformed answer (retryable: the receiver may simply not have stored
  it), AR/CR (rejected; retryable, since HL7 uses AR for "the receiver could not process it
  now" too), AE/CE (the receiver says the content is wrong; not retryable).

One connection per message: a kept-open connection that the receiver closed while idle would
turn every first send into an ambiguous failure. Nothing here logs, and error texts name the
endpoint and the acknowledgement code, never field values.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK

from app.adapters.base import AdapterError, DeliveryReceipt, FailureKind
from app.hl7.parse import Hl7Error, parse_message

__all__ = [
    "MllpAck",
    "MllpClient",
    "client_tls_context",
    "parse_mllp_url",
    "send_message",
]

_TRAILER = END_BLOCK + CARRIAGE_RETURN
_ACCEPT = frozenset({"AA", "CA"})
_REJECT = frozenset({"AR", "CR"})
_ERROR = frozenset({"AE", "CE"})


@dataclass(frozen=True, slots=True)
class MllpAck:
    code: str  # MSA-1: AA AE AR CA CE CR
    control_id: str  # MSA-2: the MSH-10 it acknowledges
    text: str  # MSA-3 (the receiver's reason, as it wrote it)
    error_code: str  # ERR-3.1 (v2.5+) or ERR-1.4.1 (earlier), "" without ERR
    raw: bytes  # the whole acknowledgement as received

    @property
    def accepted(self) -> bool:
        return self.code in _ACCEPT


def parse_mllp_url(url: str) -> tuple[str, int, bool]:
    """`mllp://host:port` (plain) or `mllps://host:port` (TLS) -> (host, port, tls)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mllp", "mllps") or not parts.hostname or parts.port is None:
        raise ValueError("an MLLP endpoint is mllp://host:port or mllps://host:port")
    return parts.hostname, parts.port, parts.scheme == "mllps"


def client_tls_context(
    *,
    ca_file: Path | str | None = None,
    cert_file: Path | str | None = None,
    key_file: Path | str | None = None,
) -> ssl.SSLContext:
    """TLS 1.2+ with server certificate verification (system roots, or `ca_file`), and a client
    certificate when the receiver requires one."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


def _read_ack(raw: bytes, sent_control_id: str, where: str) -> MllpAck:
    try:
        msg = parse_message(raw)
    except Hl7Error:
        raise AdapterError(
            FailureKind.MALFORMED,
            "the answer is not an HL7v2 message",
            endpoint=where,
            retryable=True,
        ) from None
    msa = msg.first("MSA")
    if msa is None:
        raise AdapterError(
            FailureKind.MALFORMED, "the answer has no MSA segment", endpoint=where, retryable=True
        )
    code = msa.c(1).upper()
    if code not in _ACCEPT | _REJECT | _ERROR:
        raise AdapterError(
            FailureKind.MALFORMED,
            "MSA-1 is not an acknowledgement code",
            endpoint=where,
            retryable=True,
        )
    control_id = msa.c(2)
    if sent_control_id and control_id != sent_control_id:
        raise AdapterError(
            FailureKind.MALFORMED,
            "MSA-2 does not echo the MSH-10 that was sent",
            endpoint=where,
            retryable=True,
        )
    err = msg.first("ERR")
    error_code = ""
    if err is not None:
        error_code = err.c(3) or err.rep(1).comp(4).c(1)
    return MllpAck(code, control_id, msa.text(3)[:200], error_code[:20], raw)


async def send_message(
    host: str,
    port: int,
    message: bytes,
    *,
    connect_timeout: float = 5.0,
    ack_timeout: float = 30.0,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    max_ack_bytes: int = 1024 * 1024,
    endpoint: str = "",
) -> MllpAck:
    """Send one message and return the receiver's acknowledgement (whatever its code).

    Raises AdapterError for anything that is not a well-formed ACK of this message."""
    where = endpoint or f"mllp://{host}:{port}"
    try:
        control_id = parse_message(message).control_id
    except Hl7Error:
        raise AdapterError(
            FailureKind.MALFORMED,
            "the message to send is not HL7v2",
            endpoint=where,
            retryable=False,
        ) from None
    try:
        # asyncio.timeout rather than wait_for: a cancel in the same loop turn as completion
        # is not swallowed (Python 3.11), so a dispatcher can always be stopped
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=tls,
                server_hostname=(server_hostname or host) if tls is not None else None,
                limit=max_ack_bytes + 16,
            )
    except TimeoutError:
        raise AdapterError(FailureKind.TIMEOUT, "connect timed out", endpoint=where) from None
    except ssl.SSLError:
        raise AdapterError(
            FailureKind.UNREACHABLE, "TLS handshake failed", endpoint=where
        ) from None
    except OSError as exc:
        raise AdapterError(
            FailureKind.UNREACHABLE, f"connection failed ({type(exc).__name__})", endpoint=where
        ) from None
    try:
        try:
            async with asyncio.timeout(ack_timeout):
                writer.write(START_BLOCK + message + _TRAILER)
                await writer.drain()
                data = await reader.readuntil(_TRAILER)
        except TimeoutError:
            raise AdapterError(
                FailureKind.TIMEOUT, "no acknowledgement in time", endpoint=where
            ) from None
        except asyncio.LimitOverrunError:
            raise AdapterError(
                FailureKind.OVERSIZED, "the acknowledgement is too large", endpoint=where
            ) from None
        except asyncio.IncompleteReadError:
            raise AdapterError(
                FailureKind.UNREACHABLE,
                "the receiver closed the connection without an acknowledgement",
                endpoint=where,
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise AdapterError(
                FailureKind.UNREACHABLE, f"connection lost ({type(exc).__name__})", endpoint=where
            ) from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    start = data.find(START_BLOCK)
    if start < 0:
        raise AdapterError(
            FailureKind.MALFORMED,
            "the answer has no MLLP start block",
            endpoint=where,
            retryable=True,
        )
    return _read_ack(data[start + 1 : -len(_TRAILER)], control_id, where)


class MllpClient:
    """A configured MLLP receiver (`mllp://` or `mllps://`): `deliver()` sends one message and
    turns the acknowledgement into a DeliveryReceipt, or raises AdapterError."""

    def __init__(
        self,
        url: str,
        *,
        tls: ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
        ack_timeout: float = 30.0,
        server_hostname: str | None = None,
    ) -> None:
        self.url = url
        self.host, self.port, wants_tls = parse_mllp_url(url)
        self.tls = tls if tls is not None else (client_tls_context() if wants_tls else None)
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self.server_hostname = server_hostname

    async def send(self, message: bytes) -> MllpAck:
        return await send_message(
            self.host,
            self.port,
            message,
            connect_timeout=self.connect_timeout,
            ack_timeout=self.ack_timeout,
            tls=self.tls,
            server_hostname=self.server_hostname,
            endpoint=self.url,
        )

    async def deliver(self, message: bytes) -> DeliveryReceipt:
        ack = await self.send(message)
        if ack.accepted:
            return DeliveryReceipt(True, ack.code, ack.control_id or None)
        suffix = f" (ERR {ack.error_code})" if ack.error_code else ""
        raise AdapterError(
            FailureKind.OUTCOME,
            f"the receiver answered {ack.code}{suffix}",
            endpoint=self.url,
            retryable=ack.code in _REJECT,
        )
