"""Devhost RSS before, during and after rounds of N concurrent 64 MiB uploads (issue 8, item 9).

    .venv/bin/python -m bench.attacks.upload_rss N ROUNDS

Starts its own emulator stack and devhost (anonymous default registry, RATE_LIMITS_ENABLED=false), makes N
random 64 MiB blobs, pushes a small warm-up blob and then, ROUNDS times, uploads the N blobs at once as
monolithic `POST /v2/rssI/blobs/uploads/?digest=...` bodies streamed in 1 MiB chunks (each round appends the
round number, so every round is new data). An upload answered 503 (the instance's upload slots are full) is
retried after its Retry-After. The devhost's VmRSS is polled every 50 ms while a round runs. Prints

    RSS before: ... MiB
    round 1: N x 64 MiB uploads, peak RSS ... MiB, after ... MiB

The client holds the N blobs in memory (and a copy of each per round): about 2 x N x 64 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from bench.attacks import rss_mib
from bench.processes import ours, sigterm_unwinds
from services.devhost.stack import LocalStack

SIZE = 64 * 1024 * 1024
CHUNK = 1024 * 1024
SAMPLE_INTERVAL = 0.05
MAX_ATTEMPTS = 100


class UploadError(RuntimeError):
    """An upload was not accepted (not 201 after MAX_ATTEMPTS tries)."""


async def upload(client: httpx.AsyncClient, data: bytes, i: int) -> None:
    """`data` as one monolithic upload to repository rss<i>, retried while the devhost answers 503."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    async def body() -> AsyncIterator[bytes]:
        for offset in range(0, len(data), CHUNK):
            yield data[offset : offset + CHUNK]

    reply: httpx.Response | None = None
    for _ in range(MAX_ATTEMPTS):
        reply = await client.post(
            f"/v2/rss{i}/blobs/uploads/",
            params={"digest": digest},
            content=body(),
            headers={"Content-Length": str(len(data))},
        )
        if reply.status_code != 503:
            break
        await asyncio.sleep(float(reply.headers.get("Retry-After", 1)))
    if reply is None or reply.status_code != 201:
        status = reply.status_code if reply is not None else None
        text = reply.text[:200] if reply is not None else ""
        raise UploadError(f"upload to rss{i}: {status} {text}")


async def measure(base_url: str, pid: int, n: int, rounds: int) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        datas = [os.urandom(SIZE) for _ in range(n)]
        await upload(client, b"warm-up" * 1000, 999)
        print(f"RSS before: {rss_mib(pid)} MiB", flush=True)
        for r in range(rounds):
            peak = 0
            task = asyncio.gather(*(upload(client, data + bytes([r % 256]), i) for i, data in enumerate(datas)))
            try:
                while not task.done():
                    peak = max(peak, rss_mib(pid))
                    await asyncio.sleep(SAMPLE_INTERVAL)
                await task
            finally:
                if not task.done():  # interrupted while sampling: do not leave the uploads running
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await asyncio.sleep(1)
            print(f"round {r + 1}: {n} x 64 MiB uploads, peak RSS {peak} MiB, after {rss_mib(pid)} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.attacks.upload_rss", description="Devhost RSS around N concurrent 64 MiB uploads."
    )
    parser.add_argument("n", metavar="N", type=int, help="concurrent uploads per round")
    parser.add_argument("rounds", metavar="ROUNDS", type=int, help="rounds")
    args = parser.parse_args()
    if args.n < 1 or args.rounds < 1:
        parser.error("N and ROUNDS are at least 1")

    with (
        sigterm_unwinds(),
        tempfile.TemporaryDirectory(prefix="bench-attacks-") as tmp,
        LocalStack.on_free_ports(Path(tmp) / "stack") as stack,
        ours(stack.env(), Path(tmp) / "logs", {"RATE_LIMITS_ENABLED": "false"}) as devhost,
    ):
        asyncio.run(measure(devhost.url, devhost.pid, args.n, args.rounds))


if __name__ == "__main__":
    main()
