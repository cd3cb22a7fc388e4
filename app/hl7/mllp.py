"""The MLLP listener (HL7 v3 Transport Specification: MLLP Release 2, block format; python-hl7's
framing bytes; ../shared/reference/requirements.md V2-01..V2-03).

A frame is <VT> message <FS><CR>. Per connection the listener reads frames one after another
(several frames in one TCP segment, or one frame split over many, are both fine), hands each to
Hl7Service, and writes the ACK only after the service returns, i.e. after the commit. Bytes
outside a frame are skipped up to the next <VT>. A frame cut short by the next <VT> is answered
AE (CE in enhanced mode) and not stored: a cut message may still parse, and must not be taken for
the whole. A frame larger than the size limit is answered
AR and the connection closed (its end cannot be trusted); an idle connection is closed after the
idle timeout. TLS is on when a certificate and key are configured (client certificates required
when a client CA is given).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from datetime import UTC, datetime

from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK

from app.hl7.ack import build_ack, plan_ack
from app.hl7.parse import Hl7Error, parse_message
from app.hl7.service import Hl7Service
from app.settings import Settings

__all__ = ["MllpServer", "tls_context"]

log = logging.getLogger("dxf.hl7")
_TRAILER = END_BLOCK + CARRIAGE_RETURN


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.mllp_tls_cert_file is None or settings.mllp_tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.mllp_tls_cert_file, settings.mllp_tls_key_file)
    if settings.mllp_tls_client_ca_file is not None:
        context.load_verify_locations(settings.mllp_tls_client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class MllpServer:
    def __init__(self, service: Hl7Service, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(settings.mllp_max_connections)

    async def start(self, host: str | None = None, port: int | None = None) -> asyncio.Server:
        self.server = await asyncio.start_server(
            self._connection,
            host or self.settings.mllp_host,
            self.settings.mllp_port if port is None else port,
            ssl=tls_context(self.settings),
            limit=2**16,
        )
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self._connections):
                task.cancel()
            for task in list(self._connections):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.service.idle()  # messages already handed in are still answered
            await self.server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        try:
            if self._slots.locked():
                log.warning("mllp connection refused: too many", extra={"peer": peer_text})
                return
            async with self._slots:
                await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one connection's failure never stops the listener
            log.error(
                "mllp connection failed", extra={"error": type(exc).__name__, "peer": peer_text}
            )
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limit = self.settings.mllp_max_message_bytes
        buffer = bytearray()
        while True:
            try:
                chunk = await asyncio.wait_for(
                    reader.read(65536), self.settings.mllp_idle_timeout_seconds
                )
            except TimeoutError:
                return
            if not chunk:
                return
            buffer += chunk
            while True:
                start = buffer.find(START_BLOCK)
                if start < 0:
                    buffer.clear()  # stray bytes outside any frame
                    break
                if start:
                    del buffer[:start]
                end = buffer.find(_TRAILER, 1)
                restart = buffer.find(START_BLOCK, 1)
                if restart > 0 and (end < 0 or restart < end):
                    # a new frame began before this one ended: this one is truncated. Answer
                    # it without storing anything (a cut message may still parse) and go on.
                    await self._truncated(writer, bytes(buffer[1:restart]))
                    del buffer[:restart]
                    continue
                if end < 0:
                    if len(buffer) > limit + 1:
                        await self._too_large(writer, limit)
                        return
                    break
                payload = bytes(buffer[1:end])
                del buffer[: end + len(_TRAILER)]
                if len(payload) > limit:
                    await self._too_large(writer, limit)
                    return
                result = await self.service.handle(payload, "mllp")
                if result.send:
                    writer.write(START_BLOCK + result.ack_bytes + _TRAILER)
                    await writer.drain()

    async def _truncated(self, writer: asyncio.StreamWriter, partial: bytes) -> None:
        try:
            msg = parse_message(partial, default_codec=self.settings.hl7_default_charset)
        except Hl7Error:
            msg = None
        problem = Hl7Error(
            "the frame is truncated: a new start block arrived before its end block; "
            "nothing was stored, resend the whole message",
            code="100",
        )
        ack = build_ack(
            msg,
            plan_ack(msg, "error").code,
            now=datetime.now(UTC),
            application=self.settings.hl7_application,
            facility=self.settings.hl7_facility,
            error=problem,
        )
        writer.write(START_BLOCK + ack.encode() + _TRAILER)
        await writer.drain()
        log.warning("mllp frame truncated", extra={"error": "truncated"})

    async def _too_large(self, writer: asyncio.StreamWriter, limit: int) -> None:
        problem = Hl7Error(
            f"the message exceeds the receiver's size limit of {limit} bytes",
            code="207",
            reject=True,
        )
        ack = build_ack(
            None,
            "AR",
            now=datetime.now(UTC),
            application=self.settings.hl7_application,
            facility=self.settings.hl7_facility,
            error=problem,
        )
        writer.write(START_BLOCK + ack.encode() + _TRAILER)
        await writer.drain()
        log.warning("mllp frame over the size limit", extra={"error": "too_large"})


async def run_listener(settings: Settings, host: str | None, port: int | None) -> int:
    """`dxf-bridge mllp`: serve until SIGINT/SIGTERM."""
    import signal

    from app.db import Database

    db = Database.from_settings(settings)
    service = Hl7Service(db, settings)
    server = MllpServer(service, settings)
    await server.start(host, port)
    dispatcher = None
    intermediaries = None
    if settings.events_enabled:
        # deliver this listener's events at once (a server sharing the database would find
        # them too, at its next poll; both may run: deliveries are claimed, not shared)
        from app.adapters.service import Intermediaries
        from app.events.dispatcher import Dispatcher

        intermediaries = Intermediaries.build(db, settings)
        dispatcher = Dispatcher(db, settings, directory=intermediaries.directory)
        if service.events is not None:
            service.events.listeners.append(dispatcher.wake)
        dispatcher.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    tls = " (TLS)" if tls_context(settings) else ""
    print(
        f"dxf-bridge MLLP listener on {host or settings.mllp_host}:{server.port}{tls}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.close()
        if dispatcher is not None:
            await dispatcher.stop()
        if intermediaries is not None:
            await intermediaries.aclose()
        await db.dispose()
    return 0
