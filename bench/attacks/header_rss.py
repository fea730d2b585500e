"""Devhost RSS while connections each send a huge request header (issue 8, item 9).

    .venv/bin/python -m bench.attacks.header_rss [--connections 20] [--mib 20]

Starts its own emulator stack and devhost (anonymous default registry), then opens CONNECTIONS raw TCP
connections at once; each sends `GET /v2/ HTTP/1.1`, a Host header and a header `X-Big:` whose value is
MIB MiB of `a`, 1 MiB per send, and never ends the header block. The devhost's VmRSS is polled every 20 ms
until every sender is done (all sent, or the connection was refused, reset or timed out after 60 s). Prints

    RSS before: ... MiB
    20 connections x 20 MiB header: peak RSS ... MiB, after ... MiB; ['ConnectionResetError', ...]

the last list being the distinct outcomes of the senders ("sent all 20 MiB" or the error's type).
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path

from bench.attacks import rss_mib
from bench.processes import ours, sigterm_unwinds
from services.devhost.stack import HOST, LocalStack

CHUNK = b"a" * (1024 * 1024)
SAMPLE_INTERVAL = 0.02
SOCKET_TIMEOUT = 60


def send_big_header(port: int, mib: int, results: list[str]) -> None:
    """One connection: a request line, then a header of `mib` MiB that never ends; the outcome goes to results."""
    try:
        sock = socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT)
    except OSError as error:
        results.append(type(error).__name__)
        return
    try:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(mib):
            sock.sendall(CHUNK)
        results.append(f"sent all {mib} MiB")
    except OSError as error:
        results.append(type(error).__name__)
    finally:
        sock.close()


def measure(port: int, pid: int, connections: int, mib: int) -> None:
    print(f"RSS before: {rss_mib(pid)} MiB", flush=True)
    results: list[str] = []  # list.append is atomic: the senders share it
    threads = [
        threading.Thread(target=send_big_header, args=(port, mib, results), name=f"sender-{n}", daemon=True)
        for n in range(connections)
    ]
    peak = 0
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, rss_mib(pid))
        time.sleep(SAMPLE_INTERVAL)
    time.sleep(1)
    print(
        f"{connections} connections x {mib} MiB header: peak RSS {peak} MiB, after {rss_mib(pid)} MiB; "
        f"{sorted(set(results))}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.attacks.header_rss", description="Devhost RSS while connections send huge headers."
    )
    parser.add_argument("--connections", type=int, default=20, help="concurrent connections (default 20)")
    parser.add_argument("--mib", type=int, default=20, help="MiB of header each sends (default 20)")
    args = parser.parse_args()
    if args.connections < 1 or args.mib < 1:
        parser.error("--connections and --mib are at least 1")

    with (
        sigterm_unwinds(),
        tempfile.TemporaryDirectory(prefix="bench-attacks-") as tmp,
        LocalStack.on_free_ports(Path(tmp) / "stack") as stack,
        ours(stack.env(), Path(tmp) / "logs") as devhost,
    ):
        measure(devhost.port, devhost.pid, args.connections, args.mib)


if __name__ == "__main__":
    main()
