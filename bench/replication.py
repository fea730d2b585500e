"""Geo-replication figures on the local stack: replication lag and pull throughput during replication.

    .venv/bin/python -m bench.replication [--images 10] [--mib 50] [--pull-seconds 10]

Starts Azurite with three regional accounts (westeurope, eastus, japaneast) and the Cosmos DB emulator on
free ports (state in a temporary folder), a devhost serving westeurope with the other two as replica
regions, a Premium registry replicated to both, and a receiver for its `replicated` webhook events.

- Lag: `--images` images of one `--mib` MiB random layer each, pushed one after another (monolithic
  upload, then the manifest); for each, the `lagMs` of its two `replicated` events (from the push being
  accepted to the copy being complete in that region, measured by the worker) and, as a cross-check, the
  client's time from the manifest PUT's answer to the event's arrival. p50 and p99 over all of them.
- Pull throughput: one `--mib` MiB blob pulled through the eastus regional endpoint (GET, 307 to the eastus
  account, download) in a loop by 4 pullers for `--pull-seconds`, first with nothing else running, then
  while a second series of images is pushed and replicated.

Not a test: no assertions on times, just the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.receiver import Event, Receiver

ROOT = Path(__file__).resolve().parents[1]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
REGIONS = ("westeurope", "eastus", "japaneast")
REGISTRY = "benchgeo"


def replicated(event: Event) -> tuple[str, str] | None:
    """A `replicated` event's key: (digest, region)."""
    return (event["target"]["digest"], event["region"]) if event.get("action") == "replicated" else None


async def prepare(hook_uri: str) -> None:
    from services.management.access import update_registry
    from services.management.registries import RegistryChanges, create_registry
    from services.management.store import RegistryStore
    from services.platform.blobs import BlobStore
    from services.platform.cosmos import Cosmos
    from services.platform.settings import Settings
    from services.replication.resources import ReplicationChanges, put_replication
    from services.webhooks.resources import WebhookChanges, put_webhook

    settings = Settings()  # from the environment main() set
    metadata, blobs = Cosmos(settings), BlobStore(settings)
    await metadata.open()
    await blobs.open()
    try:
        changes = RegistryChanges(location=REGIONS[0])
        await create_registry(metadata, blobs, settings, REGISTRY, "Premium", changes=changes)
        await update_registry(metadata, REGISTRY, auth_disabled=True)
        doc = await RegistryStore(metadata).get_registry(REGISTRY)
        assert doc is not None
        for region in REGIONS[1:]:
            await put_replication(metadata, doc, region, ReplicationChanges(location=region))
        hook = WebhookChanges(service_uri=hook_uri, actions=["replicated"], location=REGIONS[0])
        await put_webhook(metadata, REGISTRY, "benchgeo", hook)
    finally:
        await metadata.close()
        await blobs.close()


def push_image(http: httpx.Client, repository: str, tag: str, mib: int) -> tuple[str, str, float]:
    """(manifest digest, layer digest, when the manifest PUT was answered)."""
    layer = os.urandom(mib * 1024 * 1024)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    reply = http.post(f"/v2/{repository}/blobs/uploads/", params={"digest": layer_digest}, content=layer)
    assert reply.status_code == 201, reply.text
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    reply = http.post(f"/v2/{repository}/blobs/uploads/", params={"digest": config_digest}, content=config)
    assert reply.status_code == 201, reply.text
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": len(layer)}],
        }
    ).encode()
    reply = http.put(f"/v2/{repository}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert reply.status_code == 201, reply.text
    return reply.headers["Docker-Content-Digest"], layer_digest, time.perf_counter()


def pull_throughput(base: str, host: str, path: str, seconds: float, pullers: int = 4) -> float:
    """MiB/s of `pullers` loops pulling one blob through `host` (the registry's 307, then the account)."""
    pulled = [0] * pullers
    deadline = time.perf_counter() + seconds

    def loop(index: int) -> None:
        with (
            httpx.Client(base_url=base, headers={"Host": host}, timeout=120, trust_env=False) as api,
            httpx.Client(timeout=120, trust_env=False) as storage,
        ):
            while time.perf_counter() < deadline:
                reply = api.get(path)
                assert reply.status_code == 307, reply.text
                with storage.stream("GET", reply.headers["Location"]) as body:
                    for chunk in body.iter_bytes(1 << 20):
                        pulled[index] += len(chunk)

    started = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(pullers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(pulled) / (1 << 20) / (time.perf_counter() - started)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main(argv: list[str] | None = None) -> int:
    from services.devhost.stack import LocalStack, free_port

    parser = argparse.ArgumentParser(prog="python -m bench.replication")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--pull-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    receiver = Receiver(replicated)
    with tempfile.TemporaryDirectory() as state:
        stack = LocalStack.on_free_ports(Path(state) / "stack")
        stack.regions = REGIONS
        with stack:
            port = free_port()
            env = os.environ | stack.env() | stack.region_env() | {"API_PORT": str(port), "LOG_LEVEL": "warning"}
            env |= {"OUTBOX_RELAY_AFTER_SECONDS": "1"}
            os.environ.update(env)
            asyncio.run(prepare(receiver.url))
            log = Path(state) / "devhost.log"
            with log.open("wb") as out:
                devhost = subprocess.Popen(
                    [sys.executable, "-m", "services.devhost", "serve", "--port", str(port)],
                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            try:
                base = f"http://127.0.0.1:{port}"
                global_host = f"{REGISTRY}.azurecr.localhost:{port}"
                with httpx.Client(base_url=base, headers={"Host": global_host}, timeout=300, trust_env=False) as http:
                    for _ in range(300):
                        try:
                            if http.get("/v2/").status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        time.sleep(0.1)
                    lags, client_lags = [], []
                    for i in range(args.images):
                        digest, layer, answered = push_image(http, "bench/lag", f"v{i}", args.mib)
                        for arrived, event in receiver.wait_for([(digest, r) for r in REGIONS[1:]], timeout=600):
                            lags.append(float(event["lagMs"]))
                            client_lags.append((arrived - answered) * 1000)
                    east_host = f"{REGISTRY}.eastus.geo.azurecr.localhost:{port}"
                    path = f"/v2/bench/lag/blobs/{layer}"
                    idle = pull_throughput(base, east_host, path, args.pull_seconds)
                    pushing = threading.Thread(
                        target=lambda: [push_image(http, "bench/busy", f"b{i}", args.mib) for i in range(args.images)]
                    )
                    pushing.start()
                    busy = pull_throughput(base, east_host, path, args.pull_seconds)
                    pushing.join()
            finally:
                devhost.terminate()
                devhost.wait(30)
    print(f"replication lag, push accepted -> replicated ({args.images} images of {args.mib} MiB, 2 replica regions, "
          f"{len(lags)} copies): p50 {percentile(lags, 0.5):.0f} ms, p99 {percentile(lags, 0.99):.0f} ms, "
          f"max {max(lags):.0f} ms")  # fmt: skip
    print(f"  client side, manifest PUT answered -> replicated event received: "
          f"p50 {percentile(client_lags, 0.5):.0f} ms, p99 {percentile(client_lags, 0.99):.0f} ms")  # fmt: skip
    print(f"pull throughput through the eastus endpoint ({args.mib} MiB blob, 4 pullers, {args.pull_seconds:.0f} s): "
          f"idle {idle:.0f} MiB/s, during replication {busy:.0f} MiB/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
