"""Scanner figures on the local stack: scan time and peak memory for a large image, and re-matching stored
SBOMs after an advisory-database update.

    .venv/bin/python -m bench.scanning [--image-mib 200] [--layers 4] [--sboms 1000]

Starts Azurite and the Cosmos DB emulator on free ports (state in a temporary folder) and a devhost against
them (its scanner off: the figures are taken in processes of their own). The image: `--layers` gzip layers
of incompressible files, `--image-mib` MiB compressed in all, the first also holding a Debian package database
(400 packages), 300 npm packages and 100 Python distributions. It is pushed over HTTP, then scanned by a
fresh process (`python -m bench.scanning scan-once ...`) that reports the scan's wall time and its peak RSS
(VmHWM) before and after the scan, so the scan's own memory is the difference. Re-match: `--sboms` images
with an SBOM each (60 packages, stored as referrers as the scanner stores them) and a finished scan matched
against an older database version, then `rematch()` against the fixture database, timed; then once more
after the database's files change without changing what matches (no report is replaced), timed too.
Not a test: no assertions on times, just the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "osv"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MiB = 1024 * 1024


def _vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# --- the image -------------------------------------------------------------------------------------------
def package_files() -> list[tuple[str, bytes]]:
    status = "".join(
        f"Package: pkg{i}\nStatus: install ok installed\nSource: src{i % 50}\nVersion: 1.{i}.0-1\n"
        f"Description: package {i}\n\n"
        for i in range(400)
    )
    files = [
        ("etc/os-release", b'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'),
        ("var/lib/dpkg/status", status.encode()),
    ]
    files += [
        (f"app/node_modules/npm{i}/package.json", json.dumps({"name": f"npm{i}", "version": f"1.0.{i}"}).encode())
        for i in range(300)
    ]
    files += [
        (f"usr/lib/python3/dist-packages/py{i}-2.{i}.dist-info/METADATA", f"Name: py{i}\nVersion: 2.{i}\n".encode())
        for i in range(100)
    ]
    return files


def layer(target_bytes: int, index: int, with_packages: bool) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in package_files() if with_packages else []:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        written, n = 0, 0
        while written < target_bytes:
            size = min(4 * MiB, target_bytes - written)
            info = tarfile.TarInfo(f"data/layer{index}/file{n}.bin")
            info.size = size
            tar.addfile(info, io.BytesIO(os.urandom(size)))
            written, n = written + size, n + 1
    return gzip.compress(raw.getvalue(), compresslevel=1)


def push_blob(http: httpx.Client, repository: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = http.post(f"/v2/{repository}/blobs/uploads/", params={"digest": digest}, content=data)
    response.raise_for_status()
    return digest


def push_image(http: httpx.Client, repository: str, total_mib: int, layers: int) -> tuple[str, int]:
    per_layer = total_mib * MiB // layers
    descriptors, total = [], 0
    for index in range(layers):
        data = layer(per_layer, index, index == 0)
        descriptors.append({"mediaType": OCI_LAYER, "digest": push_blob(http, repository, data), "size": len(data)})
        total += len(data)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": push_blob(http, repository, config), "size": len(config)},
        "layers": descriptors,
    }
    response = http.put(
        f"/v2/{repository}/manifests/v1", content=json.dumps(manifest), headers={"Content-Type": OCI_MANIFEST}
    )
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"], total


# --- one scan in a fresh process ------------------------------------------------------------------------
async def scan_once(registry: str, repository: str, digest: str) -> dict[str, Any]:
    from services.platform.settings import Settings
    from services.scanning.worker import ImageScanner

    scanner = ImageScanner(Settings())
    await scanner.open()
    await scanner.advisories.current()
    before = _vm_hwm_kib()
    started = time.perf_counter()
    scan = await scanner.scan(registry, repository, digest, force=True)
    elapsed = time.perf_counter() - started
    after = _vm_hwm_kib()
    await scanner.close()
    assert scan is not None
    return {
        "seconds": round(elapsed, 2),
        "state": scan.state,
        "reason": scan.reason,
        "packages": scan.packages,
        "peak_rss_before_mib": round(before / 1024, 1),
        "peak_rss_after_mib": round(after / 1024, 1),
    }


# --- stored SBOMs ----------------------------------------------------------------------------------------
async def store_sboms(count: int) -> str:
    """`count` images with an SBOM and a finished scan matched against an old database; returns the registry."""
    from services.management.registries import create_registry
    from services.platform.settings import Settings
    from services.registry.store import ManifestDoc, repo_key
    from services.scanning.documents import SBOM_MEDIA_TYPE, spdx_document
    from services.scanning.inventory import Inventory, Package
    from services.scanning.store import ScanDoc, scan_id
    from services.scanning.worker import ImageScanner

    settings = Settings()
    scanner = ImageScanner(settings)
    await scanner.open()
    registry = "benchsboms"
    await create_registry(scanner.metadata, scanner.blobs, settings, registry, "Premium")
    slots = asyncio.Semaphore(4)  # the registry's storage-usage document takes one writer at a time

    async def one(i: int) -> None:
        async with slots:
            repository = f"app{i % 20}"
            repo = repo_key(registry, repository)
            digest = "sha256:" + hashlib.sha256(f"image-{i}-{uuid.uuid4()}".encode()).hexdigest()
            image = ManifestDoc(
                id=f"manifest:{digest}",
                repo=repo,
                digest=digest,
                mediaType=OCI_MANIFEST,
                size=500,
                configMediaType=OCI_CONFIG,
            )
            await scanner.artifacts.commit_manifest(image, [])
            packages = [Package("Debian:12", f"lib{j}", f"1.{j}-1", "deb", f"src{j}") for j in range(50)]
            packages += [Package("PyPI", "jinja2", "2.10", "pypi"), Package("npm", "lodash", f"4.17.{i % 25}", "npm")]
            packages += [Package("PyPI", f"py{j}", f"1.{j}", "pypi") for j in range(8)]
            sbom = spdx_document(digest, repository, Inventory(None, tuple(packages)))
            sbom_digest = await scanner.referrers.attach(registry, repo, image, SBOM_MEDIA_TYPE, sbom, "sbom.spdx.json")
            await scanner.scans.create(
                ScanDoc(
                    id=scan_id(digest),
                    repo=repo,
                    registry=registry,
                    repository=repository,
                    digest=digest,
                    state="done",
                    sbomDigest=sbom_digest,
                    advisoryDb="osv-old",
                    packages=len(packages),
                )
            )

    await asyncio.gather(*(one(i) for i in range(count)))
    await scanner.close()
    return registry


async def rematch_all(count: int) -> tuple[float, int, int]:
    from services.platform.settings import Settings
    from services.scanning.worker import ImageScanner

    scanner = ImageScanner(Settings())
    await scanner.open()
    await scanner.advisories.current()  # loading the database is not the re-match
    started = time.perf_counter()
    processed = replaced = 0
    while processed < count:  # one timer run takes up to REMATCH_BATCH; the next run continues
        result = await scanner.rematch(limit=count)
        processed, replaced = processed + result.processed, replaced + result.replaced
        if result.processed == 0:
            break
    elapsed = time.perf_counter() - started
    await scanner.close()
    return elapsed, processed, replaced


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-mib", type=int, default=200)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--sboms", type=int, default=1000)
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)  # scan-once <registry> <repo> <digest>
    args = parser.parse_args(argv)
    if args.command[:1] == ["scan-once"]:
        print(json.dumps(asyncio.run(scan_once(*args.command[1:4]))))
        return 0

    from bench.processes import ours
    from services.devhost.stack import LocalStack

    with tempfile.TemporaryDirectory() as state, LocalStack.on_free_ports(Path(state) / "stack") as stack:
        database = Path(state) / "osv"
        database.mkdir()
        for record in FIXTURE.glob("*.json"):
            (database / record.name).write_bytes(record.read_bytes())
        env = dict(os.environ) | stack.env() | {"SCANNER_ENABLED": "true", "ADVISORY_DB": str(database)}
        os.environ.update(env)
        with ours(stack.env(), Path(state), {"SCANNER_ENABLED": "false"}) as server:
            http = httpx.Client(base_url=server.url, timeout=600)
            started = time.perf_counter()
            digest, compressed = push_image(http, "bench/big", args.image_mib, args.layers)
            print(f"pushed {compressed / MiB:.0f} MiB in {args.layers} layers in {time.perf_counter() - started:.1f} s")
            registry = os.environ.get("DEFAULT_REGISTRY", "local")
            done = subprocess.run(
                [sys.executable, "-m", "bench.scanning", "scan-once", registry, "bench/big", digest],
                cwd=ROOT, env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            scan = json.loads(done.stdout.strip().splitlines()[-1])
            grown = scan["peak_rss_after_mib"] - scan["peak_rss_before_mib"]
            print(
                f"scan of a {compressed / MiB:.0f} MiB image ({args.layers} layers, {scan['packages']} packages): "
                f"{scan['seconds']} s, state {scan['state']}; peak RSS {scan['peak_rss_before_mib']} MiB before "
                f"the scan, {scan['peak_rss_after_mib']} MiB after (+{grown:.1f} MiB)"
            )
            started = time.perf_counter()
            asyncio.run(store_sboms(args.sboms))
            print(f"stored {args.sboms} SBOMs in {time.perf_counter() - started:.1f} s")
            seconds, processed, replaced = asyncio.run(rematch_all(args.sboms))
            print(
                f"re-match after a database update: {processed} SBOMs in {seconds:.1f} s, {replaced} reports replaced"
            )
            (database / "extra.json").write_text(json.dumps({"id": "BENCH-1", "affected": []}))
            seconds, processed, replaced = asyncio.run(rematch_all(args.sboms))
            print(
                f"re-match after an update that changes no finding: {processed} SBOMs in {seconds:.1f} s, "
                f"{replaced} reports replaced"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
