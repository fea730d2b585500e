"""Webhook figures on the local stack: push-to-webhook latency and delivery throughput.

    .venv/bin/python -m bench.webhooks [--pushes 200] [--events 2000]

Starts Azurite and the Cosmos DB emulator on free ports (state in a temporary folder), a devhost against them,
and a fast HTTP receiver. Latency: `--pushes` small manifest pushes over HTTP, one after another, each timed
from the start of its `PUT /v2/<name>/manifests/<tag>` to the receiver getting the `push` event. Throughput:
`--events` push events published straight onto the bus (the webhooks subscription's queue), timed from the
first publish to the last delivery received. Not a test: no assertions on times, just the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.processes import CpuMeter
from bench.receiver import Event, Receiver

ROOT = Path(__file__).resolve().parents[1]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def tag_or_id(event: Event) -> str:
    """An event's key: the tag it pushed, else its id."""
    return str(event.get("target", {}).get("tag") or event["id"])


async def prepare(env: dict[str, str], registry: str, hook_uri: str) -> None:
    from services.management.access import update_registry
    from services.management.registries import create_registry
    from services.platform.blobs import BlobStore
    from services.platform.cosmos import Cosmos
    from services.platform.settings import Settings
    from services.webhooks.resources import WebhookChanges, put_webhook

    settings = Settings()  # from the environment main() set
    metadata, blobs = Cosmos(settings), BlobStore(settings)
    await metadata.open()
    await blobs.open()
    try:
        await create_registry(metadata, blobs, settings, registry, "Premium")
        await update_registry(metadata, registry, auth_disabled=True)
        await put_webhook(metadata, registry, "benchhook", WebhookChanges(service_uri=hook_uri, actions=["push"]))
    finally:
        await metadata.close()
        await blobs.close()


async def publish_events(env: dict[str, str], registry: str, count: int) -> float:
    """Publish `count` push events onto the bus; returns when publishing started (perf_counter)."""
    from services.events.actions import ManifestFacts, push_events, request_info
    from services.events.outbox import bus_message
    from services.platform.bus import open_bus
    from services.platform.settings import Settings

    bus = open_bus(Settings())  # from the environment main() set
    await bus.open()
    request = request_info({"host": "bench", "user-agent": "bench"}, "PUT")
    facts = ManifestFacts("bench/throughput", "sha256:" + "0" * 64, OCI_MANIFEST, 100)
    started = time.perf_counter()
    try:
        pending = [
            bus_message(registry, event) for i in range(count) for event in push_events(facts, [f"t{i}"], request)
        ]
        for start in range(0, len(pending), 50):
            await asyncio.gather(*(bus.publish(m) for m in pending[start : start + 50]))
    finally:
        await bus.close()
    return started


def main(argv: list[str] | None = None) -> int:
    from services.devhost.stack import LocalStack, free_port

    parser = argparse.ArgumentParser(prog="python -m bench.webhooks")
    parser.add_argument("--pushes", type=int, default=200)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--profile", type=Path, help="record a py-spy profile of the devhost during the throughput run")
    args = parser.parse_args(argv)
    receiver = Receiver(tag_or_id)
    registry = "benchhooks"
    with tempfile.TemporaryDirectory() as state, LocalStack.on_free_ports(Path(state) / "stack") as stack:
        port = free_port()
        env = (
            os.environ
            | stack.env()
            | {"API_PORT": str(port), "LOG_LEVEL": "warning", "BUS_SUBSCRIPTIONS": '["webhooks"]'}
            | {"FUNCTIONS_WORKER_PROCESS_COUNT": str(os.cpu_count() or 1)}  # as make run serves
        )
        os.environ.update(env)
        asyncio.run(prepare(env, registry, receiver.url))
        log = Path(state) / "devhost.log"
        with log.open("wb") as out:
            devhost = subprocess.Popen(
                [sys.executable, "-m", "services.devhost", "serve", "--port", str(port)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            headers = {"Host": f"{registry}.azurecr.localhost:{port}"}
            with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
                for _ in range(300):
                    try:
                        if http.get("/v2/").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.1)
                latencies = push_latencies(http, receiver, args.pushes)
            delivered_before = receiver.count
            profiler = None
            if args.profile:
                spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(devhost.pid)]
                spy += ["--format", "raw", "-o", str(args.profile), "--rate", "100", "--subprocesses"]
                profiler = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with CpuMeter({"devhost": devhost.pid, **stack.pids}) as cpu:
                started = asyncio.run(publish_events(env, registry, args.events))
                receiver.wait_count(delivered_before + args.events, timeout=600)
                elapsed = time.perf_counter() - started
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
                profiler.wait(30)
        finally:
            devhost.terminate()
            devhost.wait(30)
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]
    print(f"push-to-webhook latency over {len(ordered)} pushes: median {statistics.median(ordered) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms")  # fmt: skip
    print(f"delivery throughput: {args.events} events in {elapsed:.2f} s = {args.events / elapsed:.0f} events/s")
    per_event = ", ".join(f"{name} {1e3 * seconds / args.events:.2f}" for name, seconds in cpu.seconds.items())
    print(f"CPU per event delivered, ms (client = this harness: publisher and receiver): {per_event}")
    return 0


def push_latencies(http: httpx.Client, receiver: Receiver, pushes: int) -> list[float]:
    config = b'{"architecture":"amd64","os":"linux"}'
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    assert http.post("/v2/bench/latency/blobs/uploads/", params={"digest": digest}, content=config).status_code == 201
    latencies: list[float] = []
    for i in range(pushes):
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": digest,
                    "size": len(config),
                },
                "layers": [],
                "annotations": {"n": str(i)},
            }
        ).encode()
        tag = f"p{i}"
        started = time.perf_counter()
        response = http.put(
            f"/v2/bench/latency/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
        assert response.status_code == 201, response.text
        latencies.append(receiver.wait_for([tag], timeout=60)[0][0] - started)
    return latencies


if __name__ == "__main__":
    sys.exit(main())
