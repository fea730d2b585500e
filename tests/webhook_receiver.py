"""A real HTTP webhook receiver for tests: records every request, answers what the test says.

with WebhookReceiver() as receiver:
    receiver.answers = [500, 500]      # then 200 for everything after
    ... receiver.wait_for(lambda r: len(r.requests) >= 3)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.answers: list[int] = []  # answered in order, then `default_status`
        self.default_status = 200
        self.retry_after: str | None = None
        self.redirects: dict[str, str] = {}  # path -> Location: answered 307, with a body and header to leak
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    location = receiver.redirects.get(self.path)
                    status = receiver.answers.pop(0) if receiver.answers else receiver.default_status
                    status = 307 if location else status
                    receiver.requests.append(ReceivedRequest(self.path, dict(self.headers), body, status))
                if location:
                    payload = b"internal: the private service's banner"
                    self.send_response(307)
                    self.send_header("Location", location)
                    self.send_header("X-Internal", "topsecret")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                payload = b'{"ok": true}' if status < 300 else b'{"error": "not now"}'
                self.send_response(status)
                if status == 429 and receiver.retry_after is not None:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def events(self, path: str | None = None) -> list[dict[str, Any]]:
        """Bodies of the requests answered 2xx (on `path`, when given)."""
        with self._lock:
            return [r.json() for r in self.requests if 200 <= r.status < 300 and (path is None or r.path == path)]

    def on(self, path: str) -> list[ReceivedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, condition: Callable[[WebhookReceiver], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self):
                return
            time.sleep(0.02)
        raise AssertionError(f"the receiver did not see what was expected; it got {len(self.requests)} requests")

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
