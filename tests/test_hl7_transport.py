"""Transports: the MLLP listener over real loopback sockets (framing, split and coalesced
frames, stray bytes, size limit, idle timeout, TLS), POST /hl7v2 (token and write scope), and
the `dxf-bridge ingest-hl7` / `hl7 list` / `hl7 reprocess` commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.db import Database
from app.hl7.mllp import MllpServer
from app.hl7.service import Hl7Service
from app.settings import Settings
from app.store.tables import hl7_message, resource
from tests.conftest import bearer
from tests.hl7_messages import adt

VT, FS_CR = b"\x0b", b"\x1c\r"
REPO = Path(__file__).resolve().parent.parent


def frame(message: bytes) -> bytes:
    return VT + message + FS_CR


async def read_ack(reader: asyncio.StreamReader) -> str:
    data = await asyncio.wait_for(reader.readuntil(FS_CR), 10)
    assert data.startswith(VT)
    return data[1:-2].decode()


def msa(ack: str) -> list[str]:
    return next(s for s in ack.split("\r") if s.startswith("MSA")).split("|")


async def listener(db: Database, settings: Settings, **overrides) -> MllpServer:
    tuned = settings.model_copy(update=overrides) if overrides else settings
    server = MllpServer(Hl7Service(db, tuned), tuned)
    await server.start("127.0.0.1", 0)
    return server


@pytest.fixture
async def mllp(db: Database, settings: Settings) -> AsyncIterator[MllpServer]:
    server = await listener(db, settings)
    yield server
    await server.close()


async def count(db: Database, table, *where) -> int:
    async with db.read() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table).where(*where)))


async def test_one_frame_one_ack_after_commit(mllp: MllpServer, db: Database):
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp.port)
    writer.write(frame(adt("A01", "T1", "20260301101500-0800")))
    await writer.drain()
    ack = await read_ack(reader)
    assert msa(ack)[1:3] == ["AA", "T1"]
    assert await count(db, resource, resource.c.res_type == "Patient") == 1  # committed first
    writer.close()
    await writer.wait_closed()


async def test_split_and_coalesced_frames_and_stray_bytes(mllp: MllpServer, db: Database):
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp.port)
    data = frame(adt("A01", "S1", "20260301101500-0800"))
    for i in range(0, len(data), 7):  # one frame dribbled in 7-byte writes
        writer.write(data[i : i + 7])
        await writer.drain()
    assert msa(await read_ack(reader))[2] == "S1"
    three = b"noise" + b"".join(
        frame(adt("A08", f"S{n}", f"2026030111{n}000-0800")) for n in (2, 3, 4)
    )
    writer.write(three)  # three frames in one write, after stray bytes
    await writer.drain()
    assert [msa(await read_ack(reader))[2] for _ in range(3)] == ["S2", "S3", "S4"]
    writer.close()
    await writer.wait_closed()
    assert await count(db, hl7_message) == 4


@pytest.mark.parametrize("sep", [b"\n", b"\r\n"])
async def test_lf_and_crlf_messages_over_mllp(mllp: MllpServer, sep: bytes):
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp.port)
    message = adt("A01", "N1", "20260301101500-0800").replace(b"\r", sep)
    writer.write(frame(b"\xef\xbb\xbf" + message))
    await writer.drain()
    assert msa(await read_ack(reader))[1] == "AA"
    writer.close()
    await writer.wait_closed()


async def test_a_bad_message_is_answered_and_the_connection_stays_usable(mllp: MllpServer):
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp.port)
    writer.write(frame(b"this is not hl7"))
    await writer.drain()
    assert msa(await read_ack(reader))[1] == "AE"
    writer.write(frame(adt("A01", "G1", "20260301101500-0800")))
    await writer.drain()
    assert msa(await read_ack(reader))[1:3] == ["AA", "G1"]
    writer.close()
    await writer.wait_closed()


async def test_oversized_frame_gets_ar_and_is_not_stored(db: Database, settings: Settings):
    server = await listener(db, settings, mllp_max_message_bytes=2048)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(VT + adt("A01", "BIG", "20260301101500-0800") + b"X" * 4096)
        await writer.drain()
        ack = await read_ack(reader)
        assert msa(ack)[1] == "AR" and "size limit" in ack
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the listener
        writer.close()
        assert await count(db, hl7_message) == 0
    finally:
        await server.close()


async def test_idle_connections_are_closed(db: Database, settings: Settings):
    server = await listener(db, settings, mllp_idle_timeout_seconds=0.2)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        await server.close()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_tls(db: Database, settings: Settings, tmp_path: Path):
    cert, key = _self_signed(tmp_path)
    server = await listener(db, settings, mllp_tls_cert_file=cert, mllp_tls_key_file=key)
    try:
        client = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=client, server_hostname="localhost"
        )
        writer.write(frame(adt("A01", "TLS1", "20260301101500-0800")))
        await writer.drain()
        assert msa(await read_ack(reader))[1:3] == ["AA", "TLS1"]
        writer.close()
        # plain MLLP against the TLS port gets nothing stored
        plain_reader, plain = await asyncio.open_connection("127.0.0.1", server.port)
        plain.write(frame(adt("A01", "PLAIN", "20260301101500-0800")))
        await plain.drain()
        assert await asyncio.wait_for(plain_reader.read(), 10) == b""
        plain.close()
        assert await count(db, hl7_message) == 1
    finally:
        await server.close()


# ---- POST /hl7v2 ---------------------------------------------------------------------------------


async def _post(client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await client.post("http://testserver/hl7v2", content=body, headers=headers)


async def test_http_endpoint_needs_a_token_with_write_scope(
    client: httpx.AsyncClient, make_token, db: Database
):
    message = adt("A01", "H1", "20260301101500-0800")
    assert (await _post(client, message, {})).status_code == 401
    read_only = bearer(make_token("system/*.rs"))
    assert (await _post(client, message, read_only)).status_code == 403
    confined = bearer(make_token("patient/*.cruds", patient="p1"))
    assert (await _post(client, message, confined)).status_code == 403
    assert await count(db, hl7_message) == 0
    ok = await _post(client, message, bearer(make_token("system/*.cruds")))
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("x-application/hl7-v2+er7")
    assert msa(ok.text)[1:3] == ["AA", "H1"]
    again = await _post(client, message, bearer(make_token("system/*.cruds")))
    assert again.text == ok.text
    bad = await _post(client, b"garbage", bearer(make_token("system/*.cruds")))
    assert bad.status_code == 200 and msa(bad.text)[1] == "AE"


# ---- command line --------------------------------------------------------------------------------


async def _cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "DXF_DATABASE_URL": settings.database_url,
        "DXF_SIGNING_KEY_FILE": str(settings.signing_key_file),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_ingest_list_and_reprocess_commands(settings: Settings, db: Database, tmp_path: Path):
    batch = tmp_path / "feed.hl7"
    batch.write_bytes(
        b"FHS|^~\\&|EPIC\rBHS|^~\\&|EPIC\r"
        + adt("A01", "F1", "20260301101500-0800").replace(b"\r", b"\n")
        + adt(
            "A08", "F2", "20260301111500-0800", patient="PID|1||MRN1001^^^GOODHOSP^MR||X||197509XX"
        )
        + b"BTS|2\rFTS|1\r"
    )
    code, out, _ = await _cli(settings, "ingest-hl7", str(batch))
    assert code == 1  # one message failed
    lines = out.strip().splitlines()
    assert "AA control_id=F1" in lines[0] and "AE control_id=F2" in lines[1]
    code, out, _ = await _cli(settings, "hl7", "list", "--status", "error")
    rows = out.strip().splitlines()[1:]
    assert len(rows) == 1 and "\tF2\tAE\t102 " in rows[0]
    assert "X" not in rows[0].split("\t")[7]  # reasons name fields, never values
    failed_id = rows[0].split("\t")[0]
    code, out, _ = await _cli(settings, "hl7", "reprocess", failed_id)
    assert code == 1 and "error" in out  # still failing: the data is wrong, not the mapping
    code, out, _ = await _cli(settings, "hl7", "reprocess", "--all-failed")
    assert "reprocessed 1 message(s), 1 still failing" in out
    code, out, _ = await _cli(settings, "hl7", "list")
    assert len(out.strip().splitlines()) == 3


async def test_serve_with_mllp_runs_the_listener_in_the_api_lifespan(
    container, db: Database, settings: Settings
):
    from app.main import create_app

    tuned = settings.model_copy(update={"mllp_enabled": True, "mllp_port": 0})
    container.settings = tuned
    app = create_app(tuned, container=container)
    async with app.api.router.lifespan_context(app.api):
        port = app.state.mllp.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(adt("A01", "L1", "20260301101500-0800")))
        await writer.drain()
        assert msa(await read_ack(reader))[1:3] == ["AA", "L1"]
        writer.close()
        await writer.wait_closed()
    with pytest.raises(OSError):  # stopped with the API
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_truncated_frame_is_answered_and_not_stored(mllp: MllpServer, db: Database):
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp.port)
    whole = adt("A01", "TR1", "20260301101500-0800")
    cut = whole[: whole.index(b"PV1")]  # ends cleanly after PID: it would parse
    writer.write(VT + cut + frame(adt("A01", "TR2", "20260301101600-0800")))
    await writer.drain()
    first = await read_ack(reader)
    assert msa(first)[1:3] == ["AE", "TR1"] and "truncated" in first
    assert msa(await read_ack(reader))[1:3] == ["AA", "TR2"]
    writer.close()
    await writer.wait_closed()
    async with db.read() as conn:
        ids = [r.control_id for r in await conn.execute(select(hl7_message.c.control_id))]
    assert ids == ["TR2"]


async def test_msh18_charset_over_mllp(mllp: MllpServer, db: Database):
    from app.store.tables import resource as res

    text = adt("A01", "CS1", "20260301101500-0800").decode()
    text = text.replace("|P|2.5.1|||", "|P|2.5.1||||||8859/1", 1).replace("NGUYEN", "MUÑOZ")
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp.port)
    writer.write(frame(text.encode("latin-1")))
    await writer.drain()
    assert msa(await read_ack(reader))[1:3] == ["AA", "CS1"]
    writer.close()
    await writer.wait_closed()
    async with db.read() as conn:
        content = await conn.scalar(select(res.c.content).where(res.c.res_type == "Patient"))
    assert "MUÑOZ" in (content if isinstance(content, str) else content.decode())


async def test_mutual_tls_requires_a_client_certificate(
    db: Database, settings: Settings, tmp_path: Path
):
    cert, key = _self_signed(tmp_path)  # serves as server certificate, CA and client certificate
    server = await listener(
        db,
        settings,
        mllp_tls_cert_file=cert,
        mllp_tls_key_file=key,
        mllp_tls_client_ca_file=cert,
    )
    try:
        anonymous = ssl.create_default_context(cafile=str(cert))
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=anonymous, server_hostname="localhost"
            )
            try:
                writer.write(frame(adt("A01", "ANON", "20260301101500-0800")))
                await writer.drain()
                await read_ack(reader)
            finally:
                writer.close()
        known = ssl.create_default_context(cafile=str(cert))
        known.load_cert_chain(cert, key)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=known, server_hostname="localhost"
        )
        writer.write(frame(adt("A01", "MTLS", "20260301101500-0800")))
        await writer.drain()
        assert msa(await read_ack(reader))[1:3] == ["AA", "MTLS"]
        writer.close()
        assert await count(db, hl7_message) == 1
    finally:
        await server.close()


async def test_reprocess_all_failed_picks_up_messages_a_crash_left_received(
    settings: Settings, db: Database
):
    import hashlib
    from datetime import UTC, datetime, timedelta

    from app.hl7 import journal

    message = adt("A01", "CR1", "20260301101500-0800")
    async with db.write() as conn:
        await journal.insert_entry(
            conn,
            received_at=datetime.now(UTC) - timedelta(minutes=10),
            transport="mllp",
            sender="EPIC|GOODHOSP",
            control_id="CR1",
            sha256=hashlib.sha256(message).hexdigest(),
            message_type="ADT^A01",
            version="2.5.1",
            status="received",
            raw=message,
        )
    code, out, _ = await _cli(settings, "hl7", "reprocess", "--all-failed")
    assert code == 0 and "reprocessed 1 message(s), 0 still failing" in out
    assert await count(db, hl7_message, hl7_message.c.status == "processed") == 1
    assert await count(db, resource, resource.c.res_type == "Patient") == 1
