"""A password flood against the admin user (issue 8, item 3): what it gets, and what it costs everyone else.

    .venv/bin/python -m bench.attacks.password_flood [--limits on|off] [--seconds 10] [--clients 32]

Starts its own emulator stack and devhost, creates a Premium registry with the admin user enabled, and
for SECONDS runs CLIENTS attackers that send `GET /v2/` with the admin username and a wrong password, as
fast as they get answers, each from its own address: the devhost trusts X-Forwarded-For from 127.0.0.1
(TRUSTED_PROXIES) and attacker n claims 10.9.n.1. Meanwhile a prober times `GET /v2/` without credentials
(the cheap 401 path) every 50 ms. `--limits off` sets AUTH_FAILURES_PER_ADDRESS_PER_MINUTE and
AUTH_FAILURES_PER_USERNAME_PER_MINUTE to 0 (no lockout; the default, as in the original measurement);
`--limits on` keeps the settings' defaults. Prints

    LIMITS=on statuses={401: ..., 429: ...} attempts/s=... probe n=... p50=...ms p95=...ms max=...ms
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.processes import ours, sigterm_unwinds
from services.devhost.stack import LocalStack
from services.management.access import enable_admin_user
from services.management.registries import create_registry
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from tests.integration.conftest import settings_from_env

REGISTRY = "benchflood"
PROBE_INTERVAL = 0.05


@dataclass
class Flood:
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # the prober's, in seconds, sorted at the end


async def _create_registry(env: dict[str, str], name: str) -> None:
    """A Premium registry with its admin user enabled, written straight to the stack's stores."""
    settings = settings_from_env(env)
    metadata, blobs = Cosmos(settings), BlobStore(settings)
    await metadata.open()
    await blobs.open()
    try:
        await create_registry(metadata, blobs, settings, name, "Premium")
        await enable_admin_user(metadata, name)
    finally:
        await metadata.close()
        await blobs.close()


async def _flood(base_url: str, host: str, username: str, seconds: float, clients: int) -> Flood:
    wrong = "Basic " + base64.b64encode(f"{username}:wrong".encode()).decode()
    result = Flood()
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:
        await http.get("/v2/", headers={"Host": host})  # warm-up, outside the measured time
        stop = time.monotonic() + seconds

        async def attacker(n: int) -> None:
            headers = {"Host": host, "Authorization": wrong, "X-Forwarded-For": f"10.9.{n}.1"}
            while time.monotonic() < stop:
                reply = await http.get("/v2/", headers=headers)
                result.statuses[reply.status_code] = result.statuses.get(reply.status_code, 0) + 1

        async def prober() -> None:
            while time.monotonic() < stop:
                start = time.perf_counter()
                await http.get("/v2/", headers={"Host": host})
                result.latencies.append(time.perf_counter() - start)
                await asyncio.sleep(PROBE_INTERVAL)

        await asyncio.gather(prober(), *(attacker(n) for n in range(clients)))
    result.latencies.sort()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.attacks.password_flood", description="A password flood against the admin user."
    )
    parser.add_argument("--limits", choices=["on", "off"], default="off", help="the auth-failure limits (default off)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the flood lasts (default 10)")
    parser.add_argument("--clients", type=int, default=32, help="attackers, one address each (default 32)")
    args = parser.parse_args()
    if args.clients > 255:
        parser.error("--clients: at most 255 (attacker n claims 10.9.n.1)")

    extra = {"TRUSTED_PROXIES": "127.0.0.1"}
    if args.limits == "off":
        extra |= {"AUTH_FAILURES_PER_ADDRESS_PER_MINUTE": "0", "AUTH_FAILURES_PER_USERNAME_PER_MINUTE": "0"}
    with (
        sigterm_unwinds(),
        tempfile.TemporaryDirectory(prefix="bench-attacks-") as tmp,
        LocalStack.on_free_ports(Path(tmp) / "stack") as stack,
    ):
        env = stack.env()
        asyncio.run(_create_registry(env, REGISTRY))
        with ours(env, Path(tmp) / "logs", extra) as devhost:
            host = f"{REGISTRY}.azurecr.localhost:{devhost.port}"
            flood = asyncio.run(_flood(devhost.url, host, REGISTRY, args.seconds, args.clients))
    latencies = flood.latencies
    print(
        f"LIMITS={args.limits} statuses={flood.statuses} "
        f"attempts/s={sum(flood.statuses.values()) / args.seconds:.1f} "
        f"probe n={len(latencies)} p50={statistics.median(latencies) * 1000:.0f}ms "
        f"p95={latencies[int(len(latencies) * 0.95)] * 1000:.0f}ms max={latencies[-1] * 1000:.0f}ms",
        flush=True,
    )


if __name__ == "__main__":
    main()
