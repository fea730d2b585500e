"""The devhost's HTTP/1.1 connections: uvicorn's httptools protocol with the limits of a production front end.

In Azure, requests reach the Functions host through a front end that bounds what one client can hold open;
uvicorn alone does not. httptools buffers a header of any size (a 50 MiB header was read whole), and a
connection that sends nothing, or its headers a byte at a time, stays open for as long as the client likes.
This protocol adds what nginx or Azure's front end would:

- request line and headers of at most `max_header_bytes` (431 Request Header Fields Too Large; counted
  from the bytes received, before httptools buffers them),
- `idle_timeout`: a connection with no request in progress is closed (uvicorn only times out the gap
  *between* requests, not a connection that never sends one),
- `header_timeout`: a request's headers must be complete this long after its first byte (408),
- `body_timeout`: the longest silence while a request body is being read. Time the server itself is not
  reading (flow control paused it because the app is busy, or the client awaits `100 Continue`) does not
  count: only a client that stops sending is cut off. The app then sees the client disconnect.

Refusals are written, then the connection is closed after a short linger with input discarded: closing a
socket with unread input makes the kernel send RST, which can destroy the answer before the client reads it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

LINGER_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class FrontEndLimits:
    max_header_bytes: int
    idle_timeout: float
    header_timeout: float
    body_timeout: float


class _WatchedFlow(FlowControl):
    """uvicorn's flow control, telling the protocol when it stops and starts reading."""

    def __init__(self, transport: asyncio.Transport, protocol: LimitedHttpToolsProtocol) -> None:
        super().__init__(transport)
        self._protocol = protocol

    def pause_reading(self) -> None:
        if not self.read_paused:
            super().pause_reading()
            self._protocol.reading_paused()

    def resume_reading(self) -> None:
        if self.read_paused:  # the app asks for more body on every read: only a real change counts
            super().resume_reading()
            self._protocol.reading_resumed()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[FrontEndLimits]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._awaiting_headers = True  # no request yet, or the last one's message is complete
        self._header_bytes = 0
        self._in_body = False
        self._refused = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    # --- connection ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _WatchedFlow(transport, self)
        # uvicorn arms its keep-alive timeout only after a response; a connection that never sends a
        # request would otherwise stay open for good.
        self.timeout_keep_alive_task = self.loop.call_later(self.limits.idle_timeout, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._header_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: the rest of the request is not read
        while data and not self.transport.is_closing():
            if not self._awaiting_headers:
                super().data_received(data)
                break
            room = self.limits.max_header_bytes - self._header_bytes
            head, data = data[:room], data[room:]
            self._header_bytes += len(head)
            super().data_received(head)
            if self._awaiting_headers and data and self._header_bytes >= self.limits.max_header_bytes:
                self._refuse(431, f"request line and headers exceed {self.limits.max_header_bytes} bytes")
                return
        if self._refused or self.transport.is_closing():
            return
        # Timers only for what is left waiting: most requests arrive whole in one read and need none.
        if self._awaiting_headers and self._header_bytes and self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._header_timed_out)
        if self._in_body:
            self._arm_body_timer()

    # --- parser callbacks --------------------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._in_body = True
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_body = False
        self._cancel_body_timer()
        self._awaiting_headers = True
        self._header_bytes = 0
        if self.cycle is not None and self.cycle.response_complete and not self.pipeline:
            # Answered before its body was all in (a refusal): uvicorn armed the idle timeout at the response
            # and the body's bytes cancelled it; nothing else would arm it again.
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.limits.idle_timeout, self.timeout_keep_alive_handler
            )

    # --- flow control -----------------------------------------------------------------------------------
    def reading_paused(self) -> None:
        self._cancel_body_timer()  # the server is not reading: the client cannot be late

    def reading_resumed(self) -> None:
        if self._in_body:
            self._arm_body_timer()

    # --- timeouts and refusals ----------------------------------------------------------------------------
    def _arm_body_timer(self) -> None:
        self._cancel_body_timer()
        if self._in_body and not self.flow.read_paused:
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self._in_body or self.flow.read_paused or self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.waiting_for_100_continue:
            self._arm_body_timer()  # the client waits for us, not we for it
            return
        self.logger.info("closing a connection whose request body stalled for %.0f s", self.limits.body_timeout)
        self.transport.close()  # the app's next read of the body reports the client gone

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            self._refuse(408, f"request headers not complete within {self.limits.header_timeout:.0f} s")

    def _refuse(self, status: int, message: str) -> None:
        self._refused = True
        self._cancel_header_timer()
        self._cancel_body_timer()
        self._unset_keepalive_if_required()
        if self.cycle is not None and not self.cycle.response_complete:
            # A response of an earlier (pipelined) request is under way: no answer can be put in between.
            self.transport.close()
            return
        body = message.encode()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: " + str(len(body)).encode() + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self._close)

    def _close(self) -> None:
        self._linger_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def limited_protocol(limits: FrontEndLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to hand uvicorn (`Config(http=...)`) for these limits: uvicorn makes one per
    connection with its own arguments, so the limits travel on the class."""

    class Limited(LimitedHttpToolsProtocol):
        pass

    Limited.limits = limits
    return Limited
