"""A webhook receiver for benchmarks: answers every POST 204 at once and notes when each event arrived.

Each bench says what identifies an event (`key`: the event body to a key, or None for events it does not
time); the receiver keeps the first arrival of each key with its body, and counts every delivery.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Hashable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Event = dict[str, Any]


class Receiver:
    def __init__(self, key: Callable[[Event], Hashable | None]) -> None:
        self.arrivals: dict[Hashable, tuple[float, Event]] = {}
        self.count = 0
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                now = time.perf_counter()
                event_key = key(body)
                with receiver.lock:
                    if event_key is not None:
                        receiver.arrivals.setdefault(event_key, (now, body))
                    receiver.count += 1
                    receiver.arrived.notify_all()
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, keys: list[Hashable], timeout: float) -> list[tuple[float, Event]]:
        """The arrivals of `keys`, in order, once all have arrived."""
        with self.lock:
            if not self.arrived.wait_for(lambda: all(k in self.arrivals for k in keys), timeout):
                missing = [k for k in keys if k not in self.arrivals]
                raise TimeoutError(f"events {missing} did not arrive in {timeout} s")
            return [self.arrivals[k] for k in keys]

    def wait_count(self, count: int, timeout: float) -> None:
        with self.lock:
            if not self.arrived.wait_for(lambda: self.count >= count, timeout):
                raise TimeoutError(f"only {self.count} of {count} deliveries arrived in {timeout} s")
