"""What the auth layer adds to the manifest HEAD hot path (issue 3): requests per second, same run.

    .venv/bin/python -m bench.auth_overhead [--seconds 5] [--rounds 3] [--concurrency 16]

One emulator stack, one devhost process (our API), two registries on it holding the same image:
`open` (authDisabled: no authentication, no rate limits) and `auth` (admin user). HEAD of the manifest by
tag is measured, alternating, for: open; auth with a bearer access token (what docker/skopeo/podman send);
auth with Basic credentials directly on /v2/. The devhost runs with RATE_LIMIT_SCALE=1000 (limits on, but
never reached), so the rate limiter's local fast path and its leases are part of the auth figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import statistics
import tempfile
from pathlib import Path

import httpx

from bench.loadgen import run_load
from services.devhost.stack import LocalStack
from services.management.access import enable_admin_user, update_registry
from services.management.registries import create_registry
from services.platform.blobs import BlobStore
from services.platform.metadata import MetadataStore
from tests.conftest import running_devhost
from tests.integration.conftest import settings_from_env

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


async def _registries(env: dict[str, str]) -> str:
    settings = settings_from_env(env)
    metadata, blobs = MetadataStore(settings), BlobStore(settings)
    await metadata.open()
    await blobs.open()
    try:
        for name in ("benchopen", "benchauth"):
            await create_registry(metadata, blobs, settings, name, "Premium")
        await update_registry(metadata, "benchopen", auth_disabled=True)
        return (await enable_admin_user(metadata, "benchauth"))[0].value
    finally:
        await metadata.close()
        await blobs.close()


def _push(http: httpx.Client, host: str, auth: dict[str, str]) -> None:
    config = b'{"architecture":"amd64","os":"linux"}'
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    headers = {"Host": host} | auth
    assert (
        http.post(
            "/v2/bench/app/blobs/uploads/", params={"digest": digest}, content=config, headers=headers
        ).status_code
        == 201
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": len(config)},
        "layers": [],
    }
    body = json.dumps(manifest).encode()
    reply = http.put("/v2/bench/app/manifests/v1", content=body, headers=headers | {"Content-Type": OCI_MANIFEST})
    assert reply.status_code == 201, reply.text


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.auth_overhead")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalStack.on_free_ports(Path(tmp) / "stack") as stack:
        env = stack.env()
        password = asyncio.run(_registries(env))
        with running_devhost(env | {"RATE_LIMIT_SCALE": "1000"}, Path(tmp)) as devhost:
            port = devhost.host.rsplit(":", 1)[1]
            open_host, auth_host = f"benchopen.azurecr.localhost:{port}", f"benchauth.azurecr.localhost:{port}"
            basic = {"Authorization": "Basic " + base64.b64encode(f"benchauth:{password}".encode()).decode()}
            with httpx.Client(base_url=devhost.url, timeout=30) as http:
                _push(http, open_host, {})
                _push(http, auth_host, basic)
                token = http.get(
                    "/oauth2/token",
                    params={"service": "benchauth.azurecr.localhost", "scope": "repository:bench/app:pull"},
                    headers={"Host": auth_host} | basic,
                ).json()["access_token"]
            cases = {
                "no auth (authDisabled)": {"Host": open_host},
                "bearer access token": {"Host": auth_host, "Authorization": f"Bearer {token}"},
                "Basic on /v2/": {"Host": auth_host} | basic,
            }
            results: dict[str, list[float]] = {name: [] for name in cases}
            url = f"{devhost.url}/v2/bench/app/manifests/v1"
            for _ in range(args.rounds):
                for name, headers in cases.items():
                    load = asyncio.run(
                        run_load(
                            "HEAD",
                            url,
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
