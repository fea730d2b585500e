"""What the auth layer adds to the manifest HEAD hot path (issue 3): requests per second, same run.

    .venv/bin/python -m bench.auth_overhead [--seconds 5] [--rounds 3] [--concurrency 16]

One emulator stack, two registries holding the same image, each the default registry of its own devhost
process: `benchopen` (authDisabled: no authentication, no rate limits) and `benchauth` (admin user).
HEAD of the manifest by tag is measured, alternating, for: open; auth with a bearer access token (what
docker, skopeo and podman send); auth with Basic credentials directly on /v2/. The devhosts run with
RATE_LIMIT_SCALE=1000 (limits on, never reached), so the rate limiter's local fast path and its leases
are part of the auth figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import tempfile
from pathlib import Path

import httpx

from bench.loadgen import run_load
from bench.processes import create_registries
from bench.workloads import config_only_manifest
from services.devhost.stack import LocalStack
from tests.conftest import running_devhost

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _push(http: httpx.Client, base: str, auth: dict[str, str]) -> None:
    body = config_only_manifest(http, base, "bench/app", auth)
    reply = http.put(f"{base}/v2/bench/app/manifests/v1", content=body, headers=auth | {"Content-Type": OCI_MANIFEST})
    assert reply.status_code == 201, reply.text


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.auth_overhead")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalStack.on_free_ports(Path(tmp) / "stack") as stack:
        env = stack.env()
        password = asyncio.run(create_registries(env, admin="benchauth", anonymous=["benchopen"]))
        # One devhost per registry, each serving it as its default registry on the bare address (the load
        # generator sets Host itself); the two processes are alike in everything else.
        common = env | {"RATE_LIMIT_SCALE": "1000", "DEFAULT_REGISTRY_AUTH_DISABLED": "false"}
        with (
            running_devhost(common | {"DEFAULT_REGISTRY": "benchopen"}, Path(tmp)) as open_host,
            running_devhost(common | {"DEFAULT_REGISTRY": "benchauth"}, Path(tmp)) as auth_host,
        ):
            basic = {"Authorization": "Basic " + base64.b64encode(f"benchauth:{password}".encode()).decode()}
            with httpx.Client(timeout=30) as http:
                _push(http, open_host.url, {})
                _push(http, auth_host.url, basic)
                token = http.get(
                    f"{auth_host.url}/oauth2/token",
                    params={"service": "benchauth.azurecr.localhost", "scope": "repository:bench/app:pull"},
                    headers=basic,
                ).json()["access_token"]
            cases = {
                "no auth (authDisabled)": (open_host, {}),
                "bearer access token": (auth_host, {"Authorization": f"Bearer {token}"}),
                "Basic on /v2/": (auth_host, basic),
            }
            results: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.rounds):
                for name, (devhost, headers) in cases.items():
                    load = asyncio.run(
                        run_load(
                            "HEAD",
                            f"{devhost.url}/v2/bench/app/manifests/v1",
                            concurrency=args.concurrency,
                            duration=args.seconds,
                            headers=headers | {"Accept": OCI_MANIFEST},
                        )
                    )
                    assert set(load.statuses) == {200}, (name, load.statuses)
                    results[name].append(load.rps)
    base = statistics.median(results["no auth (authDisabled)"])
    print(f"manifest HEAD by tag, c={args.concurrency}, {args.rounds} x {args.seconds:.0f} s, median rps (min-max):")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"  {name:24} {median:8.0f}  ({min(values):.0f}-{max(values):.0f})  {median / base:6.1%} of no-auth")


if __name__ == "__main__":
    main()
