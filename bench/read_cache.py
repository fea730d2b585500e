"""How stale another instance's reads can be: the read cache's bound across instances, measured.

    .venv/bin/python -m bench.read_cache [--rounds 50] [--read-cache-seconds 1.0]

One emulator stack, two devhosts that share no change marks (each its own READ_CACHE_MARKS_FILE: two
instances, as in Azure), each with two worker processes. Every round moves a tag through instance A (a
manifest PUT), then polls `HEAD` of the tag through instance B on new connections every 5 ms until B
answers the new digest; the lag is from A's `201` to B's first new answer. Before each round B is made to
cache the old digest (it is read through B first), so every round measures the worst case. Within instance
A, the next request after the `201` must already see the new digest (checked every round; the tests
check it too: tests/integration/test_worker_processes.py).
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

from bench.processes import prepare_our_registries
from services.devhost.stack import LocalStack
from tests.conftest import running_devhost

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _manifest(http: httpx.Client, label: str) -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"round": label}}}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    assert http.post("/v2/bench/stale/blobs/uploads/", params={"digest": digest}, content=config).status_code == 201
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": len(config)},
            "layers": [],
        }
    ).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.read_cache")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--read-cache-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    lags: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, LocalStack.on_free_ports(Path(tmp) / "stack") as stack:
        env = stack.env()
        asyncio.run(prepare_our_registries(env))  # the open registry `benchopen` takes anonymous callers
        common = env | {"FUNCTIONS_WORKER_PROCESS_COUNT": "2", "READ_CACHE_SECONDS": str(args.read_cache_seconds)}
        with (
            running_devhost(common | {"READ_CACHE_MARKS_FILE": f"{tmp}/marks-a"}, Path(tmp)) as a,
            running_devhost(common | {"READ_CACHE_MARKS_FILE": f"{tmp}/marks-b"}, Path(tmp)) as b,
        ):
            clients = []
            for host in (a, b):
                port = host.host.rsplit(":", 1)[1]
                headers = {"Host": f"benchopen.azurecr.localhost:{port}", "Connection": "close"}
                clients.append(httpx.Client(base_url=host.url, headers=headers, timeout=30))
            here, there = clients
            accept = {"Accept": OCI_MANIFEST, "Content-Type": OCI_MANIFEST}
            assert here.put("/v2/bench/stale/manifests/t", content=_manifest(here, "start"), headers=accept).status_code
            for round_ in range(args.rounds):
                old = there.head("/v2/bench/stale/manifests/t", headers=accept).headers["Docker-Content-Digest"]
                body = _manifest(here, str(round_))
                put = here.put("/v2/bench/stale/manifests/t", content=body, headers=accept)
                written = time.perf_counter()
                new = put.headers["Docker-Content-Digest"]
                assert new != old
                assert here.head("/v2/bench/stale/manifests/t", headers=accept).headers["Docker-Content-Digest"] == new
                while there.head("/v2/bench/stale/manifests/t", headers=accept).headers["Docker-Content-Digest"] != new:
                    time.sleep(0.005)
                lags.append(time.perf_counter() - written)
            for client in clients:
                client.close()
    ordered = sorted(lags)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]
    print(
        f"READ_CACHE_SECONDS={args.read_cache_seconds}: another instance saw a tag move after "
        f"median {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms "
        f"over {len(ordered)} rounds; the instance that served the write saw it on the next request every round"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
