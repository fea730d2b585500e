"""What telemetry costs on the push and pull paths (issue 15): off must cost nothing measurable.

    .venv/bin/python -m bench.telemetry_overhead [--seconds 5] [--rounds 3] [--pushes 100]
                                                 [--baseline /path/to/a/checkout/before/telemetry]

One emulator stack, one registry (authDisabled), one devhost process per case, alternating within each
round: telemetry off (the default); metrics on (METRICS_ENDPOINT, what `make run` sets); traces and metrics on
with the console exporter (spans written to the devhost's log file); and, with --baseline, the same code
before telemetry existed (its devhost imports that checkout). Per case: manifest GET by tag (a pull) at
concurrency 16, requests per second; and a sequential loop of manifest PUTs to new tags (a push), ms each.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

import tests.conftest as harness
from bench.loadgen import run_load
from services.devhost.stack import LocalStack
from services.management.access import update_registry
from services.management.registries import create_registry
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from tests.conftest import Devhost, running_devhost
from tests.integration.conftest import settings_from_env

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REGISTRY = "benchtelemetry"


async def _registry(env: dict[str, str]) -> None:
    settings = settings_from_env(env)
    metadata, blobs = Cosmos(settings), BlobStore(settings)
    await metadata.open()
    await blobs.open()
    try:
        await create_registry(metadata, blobs, settings, REGISTRY, "Premium")
        await update_registry(metadata, REGISTRY, auth_disabled=True)
    finally:
        await metadata.close()
        await blobs.close()


def _manifest(http: httpx.Client, base: str) -> bytes:
    config = b'{"architecture":"amd64","os":"linux"}'
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    upload = http.post(f"{base}/v2/bench/app/blobs/uploads/", params={"digest": digest}, content=config)
    assert upload.status_code == 201, upload.text
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": len(config)},
        "layers": [],
    }
    return json.dumps(manifest).encode()


def _push_loop(http: httpx.Client, base: str, body: bytes, pushes: int, label: str) -> float:
    """Milliseconds per manifest PUT, median of `pushes` sequential pushes to new tags."""
    times: list[float] = []
    for index in range(pushes):
        started = time.perf_counter()
        reply = http.put(
            f"{base}/v2/bench/app/manifests/{label}-{index}-{time.monotonic_ns()}",
            content=body,
            headers={"Content-Type": OCI_MANIFEST},
        )
        times.append((time.perf_counter() - started) * 1000)
        assert reply.status_code == 201, reply.text
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.telemetry_overhead")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pushes", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--baseline", type=Path, default=None, help="a checkout of the code before telemetry")
    args = parser.parse_args()
    cases: dict[str, dict[str, str]] = {
        "telemetry off": {},
        "metrics on (/metrics)": {"METRICS_ENDPOINT": "true"},
        "traces+metrics (console)": {"TELEMETRY_CONSOLE": "true", "METRICS_ENDPOINT": "true"},
    }
    if args.baseline is not None:
        cases = {"baseline (no telemetry code)": {"PYTHONPATH": str(args.baseline.resolve())}, **cases}
    own_root = harness.ROOT
    with tempfile.TemporaryDirectory() as tmp, LocalStack.on_free_ports(Path(tmp) / "stack") as stack:
        env = stack.env() | {"DEFAULT_REGISTRY": REGISTRY, "DEFAULT_REGISTRY_AUTH_DISABLED": "true"}
        asyncio.run(_registry(env))
        hosts: dict[str, Devhost] = {}
        contexts = []
        try:
            for name, extra in cases.items():
                # The baseline's devhost runs in its checkout (`python -m` puts the working directory first).
                harness.ROOT = Path(extra["PYTHONPATH"]) if "PYTHONPATH" in extra else own_root
                context = running_devhost(env | extra, Path(tmp))
                hosts[name] = context.__enter__()
                contexts.append(context)
            harness.ROOT = own_root
            with httpx.Client(timeout=30) as http:
                first = next(iter(hosts.values()))
                body = _manifest(http, first.url)
                assert (
                    http.put(
                        f"{first.url}/v2/bench/app/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST}
                    ).status_code
                    == 201
                )
                pulls: dict[str, list[float]] = {name: [] for name in cases}
                pushes: dict[str, list[float]] = {name: [] for name in cases}
                for round_index in range(args.rounds):
                    order = list(hosts.items())
                    if round_index % 2:
                        order.reverse()
                    for name, devhost in order:
                        load = asyncio.run(
                            run_load(
                                "GET",
                                f"{devhost.url}/v2/bench/app/manifests/v1",
                                concurrency=args.concurrency,
                                duration=args.seconds,
                                headers={"Accept": OCI_MANIFEST},
                            )
                        )
                        assert set(load.statuses) == {200}, (name, load.statuses)
                        pulls[name].append(load.rps)
                        pushes[name].append(_push_loop(http, devhost.url, body, args.pushes, f"r{round_index}"))
        finally:
            for context in reversed(contexts):
                context.__exit__(None, None, None)
    reference = next(iter(cases))
    base_pull, base_push = statistics.median(pulls[reference]), statistics.median(pushes[reference])
    print(
        f"manifest GET by tag at c={args.concurrency} ({args.rounds} x {args.seconds:.0f} s) and "
        f"{args.pushes} sequential manifest PUTs per round; medians (min-max)"
    )
    for name in cases:
        pull, push = statistics.median(pulls[name]), statistics.median(pushes[name])
        print(
            f"  {name:30} pull {pull:7.0f} rps ({min(pulls[name]):.0f}-{max(pulls[name]):.0f}) {pull / base_pull:6.1%}"
            f"   push {push:6.2f} ms ({min(pushes[name]):.2f}-{max(pushes[name]):.2f}) {push / base_push:6.1%}"
        )


if __name__ == "__main__":
    main()
