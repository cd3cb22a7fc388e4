"""The MLLP client against real loopback receivers: our own listener (AA after commit), and
small asyncio servers that answer AE, AR, a wrong MSA-2, garbage, nothing, or hang up."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from app.adapters.base import AdapterError, FailureKind
from app.db import Database
from app.hl7.mllp import MllpServer
from app.hl7.mllp_client import MllpClient, parse_mllp_url, send_message
from app.hl7.service import Hl7Service
from app.settings import Settings
from tests.hl7_messages import adt

FS_CR = b"\x1c\r"
Handler = Callable[[bytes], Awaitable[bytes | None]]


async def fake_receiver(answer: Handler) -> tuple[asyncio.Server, int]:
    """A loopback MLLP receiver: reads one frame, answers with what `answer` returns (raw
    bytes, framing included), or closes the connection when it returns None."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await reader.readuntil(FS_CR)
            reply = await answer(data[1:-2])
            if reply is not None:
                writer.write(reply)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def ack(code: str, control: str, err: str = "") -> bytes:
    segments = [
        "MSH|^~\\&|RCV|RCVFAC|DXF|DXF|20260301101600||ACK^A01^ACK|ACK1|P|2.5.1",
        f"MSA|{code}|{control}",
    ]
    if err:
        segments.append(f"ERR||PID^1^3|{err}^Required field missing^HL70357|E")
    return b"\x0b" + "\r".join(segments).encode() + b"\r" + FS_CR


@pytest.fixture
async def closed_port() -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    yield port


async def test_delivers_to_our_own_listener_after_commit(db: Database, settings: Settings):
    server = MllpServer(Hl7Service(db, settings), settings)
    await server.start("127.0.0.1", 0)
    try:
        client = MllpClient(f"mllp://127.0.0.1:{server.port}")
        receipt = await client.deliver(adt("A01", "FWD1", "20260301101500-0800"))
        assert receipt.accepted and receipt.detail == "AA" and receipt.remote_id == "FWD1"
    finally:
        await server.close()


async def test_error_codes_become_adapter_errors():
    async def answer_ae(message: bytes) -> bytes:
        return ack("AE", "FWD2", err="101")

    server, port = await fake_receiver(answer_ae)
    async with server:
        client = MllpClient(f"mllp://127.0.0.1:{port}")
        with pytest.raises(AdapterError) as caught:
            await client.deliver(adt("A01", "FWD2", "20260301101500-0800"))
    assert caught.value.kind is FailureKind.OUTCOME
    assert not caught.value.retryable  # AE: the content is wrong, resending will not help
    assert "AE" in str(caught.value) and "101" in str(caught.value)
    assert "NGUYEN" not in str(caught.value)

    async def answer_ar(message: bytes) -> bytes:
        return ack("AR", "FWD3", err="207")

    server, port = await fake_receiver(answer_ar)
    async with server:
        with pytest.raises(AdapterError) as caught:
            await MllpClient(f"mllp://127.0.0.1:{port}").deliver(
                adt("A01", "FWD3", "20260301101500-0800")
            )
    assert caught.value.kind is FailureKind.OUTCOME and caught.value.retryable


async def test_accepts_enhanced_mode_commit_accept():
    async def answer(message: bytes) -> bytes:
        return ack("CA", "FWD4")

    server, port = await fake_receiver(answer)
    async with server:
        receipt = await MllpClient(f"mllp://127.0.0.1:{port}").deliver(
            adt("A01", "FWD4", "20260301101500-0800")
        )
    assert receipt.accepted and receipt.detail == "CA"


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (ack("AA", "SOMETHING-ELSE"), FailureKind.MALFORMED),  # MSA-2 must echo our MSH-10
        (b"\x0bnot hl7 at all\r" + FS_CR, FailureKind.MALFORMED),
        (b"\x0bMSH|^~\\&|R|R|D|D|2026||ACK|1|P|2.5.1\r" + FS_CR, FailureKind.MALFORMED),
        (None, FailureKind.UNREACHABLE),  # hung up without an answer
    ],
)
async def test_bad_answers_are_retryable_failures(reply: bytes | None, kind: FailureKind):
    async def answer(message: bytes) -> bytes | None:
        return reply

    server, port = await fake_receiver(answer)
    async with server:
        with pytest.raises(AdapterError) as caught:
            await send_message("127.0.0.1", port, adt("A01", "FWD5", "20260301101500-0800"))
    assert caught.value.kind is kind and caught.value.retryable


async def test_no_answer_times_out():
    release = asyncio.Event()

    async def answer(message: bytes) -> bytes | None:
        await release.wait()
        return None

    server, port = await fake_receiver(answer)
    async with server:
        with pytest.raises(AdapterError) as caught:
            await send_message(
                "127.0.0.1", port, adt("A01", "FWD6", "20260301101500-0800"), ack_timeout=0.2
            )
        release.set()
    assert caught.value.kind is FailureKind.TIMEOUT and caught.value.retryable


async def test_refused_connection_is_unreachable(closed_port: int):
    with pytest.raises(AdapterError) as caught:
        await MllpClient(f"mllp://127.0.0.1:{closed_port}").deliver(
            adt("A01", "FWD7", "20260301101500-0800")
        )
    assert caught.value.kind is FailureKind.UNREACHABLE and caught.value.retryable
    assert caught.value.endpoint == f"mllp://127.0.0.1:{closed_port}"


def test_urls():
    assert parse_mllp_url("mllp://adt.example.org:2575") == ("adt.example.org", 2575, False)
    assert parse_mllp_url("mllps://adt.example.org:6661") == ("adt.example.org", 6661, True)
    for bad in ("http://x:1", "mllp://x", "mllp://:2575"):
        with pytest.raises(ValueError):
            parse_mllp_url(bad)


async def test_not_hl7_to_send_is_refused_without_connecting(closed_port: int):
    with pytest.raises(AdapterError) as caught:
        await send_message("127.0.0.1", closed_port, b"hello")
    assert caught.value.kind is FailureKind.MALFORMED and not caught.value.retryable
