"""The devhost's connection limits (services/devhost/protocol.py) on a transport in memory: where the header
limit falls when the bytes come in pieces or several requests come in one read. The attacks themselves are
driven over sockets in tests/integration/test_devhost_limits.py."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from services.devhost.protocol import FrontEndLimits, limited_protocol

LIMITS = FrontEndLimits(max_header_bytes=1024, idle_timeout=30, header_timeout=30, body_timeout=30)


class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()
        self.closed = False
        self.eof = False

    def write(self, data: Any) -> None:
        self.sent += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 5000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True


async def echo_length(scope: Any, receive: Any, send: Any) -> None:
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def connection() -> tuple[Any, MemoryTransport]:
    config = Config(app=echo_length, lifespan="off", log_level="warning")
    protocol = limited_protocol(LIMITS)(config, ServerState(), {})
    transport = MemoryTransport()
    protocol.connection_made(transport)
    return protocol, transport


def request(header_bytes: int, body: bytes = b"") -> bytes:
    """A POST whose request line and headers are exactly `header_bytes` long."""
    start = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: " + str(len(body)).encode() + b"\r\nX-Pad: "
    return start + b"a" * (header_bytes - len(start) - 4) + b"\r\n\r\n" + body


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_headers_up_to_the_limit_pass_in_any_pieces() -> None:
    protocol, transport = connection()
    data = request(1024, b"body")
    for piece in (data[:10], data[10:1023], data[1023:1030], data[1030:]):
        protocol.data_received(piece)
    await settle()
    assert transport.sent.startswith(b"HTTP/1.1 200 ") and transport.sent.endswith(b"\r\n\r\n4")
    assert not transport.closed


async def test_one_byte_over_is_431_without_reaching_the_app() -> None:
    protocol, transport = connection()
    data = request(1025)
    protocol.data_received(data[:1024])
    assert transport.sent == b""
    protocol.data_received(data[1024:])
    await settle()
    assert transport.sent.startswith(b"HTTP/1.1 431 ")
    assert transport.eof  # answered, then half-closed while the rest is discarded
    protocol.data_received(b"more of the same header")
    assert transport.sent.count(b"HTTP/1.1") == 1
    protocol.connection_lost(None)


async def test_each_pipelined_request_gets_its_own_header_budget() -> None:
    protocol, transport = connection()
    protocol.data_received(request(1000, b"12") + request(1000, b"345"))
    await settle()
    protocol.data_received(request(1000))
    await settle()
    assert transport.sent.count(b"HTTP/1.1 200 ") == 3
    assert b"431" not in transport.sent
    protocol.connection_lost(None)


async def test_body_timer_runs_only_while_a_body_is_awaited() -> None:
    protocol, transport = connection()
    assert protocol._body_timer is None
    protocol.data_received(request(200, b"0123456789")[:-5])  # half the body
    assert protocol._body_timer is not None
    protocol.flow.pause_reading()  # the app is busy: the client cannot be late
    assert protocol._body_timer is None
    protocol.flow.resume_reading()
    assert protocol._body_timer is not None
    protocol.data_received(b"56789")
    assert protocol._body_timer is None
    await settle()
    assert transport.sent.endswith(b"\r\n\r\n10")
    protocol.connection_lost(None)
