"""Real loopback receivers for the event tests: a minimal HTTP/1.1 server (rest-hook and FHIR
message endpoints) and an MLLP receiver that acknowledges what it gets. Both record every
request, can be told to fail, and can be started late on a port chosen in advance (a receiver
that "was down for a while")."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

VT, FS_CR = b"\x0b", b"\x1c\r"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpReceiver:
    port: int = 0
    status: int = 200
    answer: bytes = b""
    requests: list[HttpRequest] = field(default_factory=list)
    server: asyncio.Server | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    connections: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> HttpReceiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        """Stop listening and drop open (keep-alive) connections: the receiver is down."""
        if self.server is not None:
            self.server.close()
            for writer in list(self.connections):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(HttpRequest(method, path, headers, body))
                self.changed.set()
                reason = "OK" if self.status < 400 else "Error"
                writer.write(
                    f"HTTP/1.1 {self.status} {reason}\r\nContent-Length: {len(self.answer)}\r\n"
                    "Content-Type: application/fhir+json\r\n\r\n".encode()
                    + self.answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.connections.discard(writer)
            writer.close()


@dataclass
class MllpReceiver:
    port: int = 0
    code: str = "AA"
    messages: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"mllp://127.0.0.1:{self.port}"

    async def start(self) -> MllpReceiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.readuntil(FS_CR)
                message = data[data.index(VT) + 1 : -2]
                self.messages.append(message)
                msh = message.split(b"\r", 1)[0].decode().split("|")
                control = msh[9] if len(msh) > 9 else ""
                ack = (
                    f"MSH|^~\\&|RCV|RCV|{msh[2]}|{msh[3]}|20260301||ACK|R{len(self.messages)}"
                    f"|P|2.5.1\rMSA|{self.code}|{control}\r"
                )
                writer.write(VT + ack.encode() + FS_CR)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
