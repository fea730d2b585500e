"""The scan worker against the real emulators: a devhost of this module's own (its own bus topic, pushes
scanned, the fixture advisory database) scans what is pushed over /v2, attaches the SBOM and the report as
referrers, fails hostile layers with a reason and stays healthy; rescans and re-matching run in-process
against the same storage."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.management.access import update_registry
from services.management.registries import create_registry
from services.registry.store import repo_key
from services.scanning.documents import REPORT_MEDIA_TYPE, SBOM_MEDIA_TYPE
from services.scanning.store import ScanDoc, ScanStore
from services.scanning.worker import ImageScanner
from tests.conftest import Devhost, running_devhost
from tests.integration.conftest import Stores, registry_client, settings_from_env, unique_registry_name
from tests.scan_images import debian_layers, gzip_bomb, push_image, push_index, symlink, tar_layer

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "osv"


@pytest.fixture(scope="module")
def advisory_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the fixture database the module's devhost reads (the re-match test changes it)."""
    database = tmp_path_factory.mktemp("osv") / "osv"
    shutil.copytree(FIXTURE, database)
    return database


@pytest.fixture(scope="module")
def scan_devhost(
    stack: dict[str, str], advisory_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Devhost]:
    env = stack | {
        "BUS_TOPIC": "sc" + uuid.uuid4().hex[:10],
        "SCANNER_ENABLED": "true",
        "ADVISORY_DB": str(advisory_dir),
    }
    with running_devhost(env, tmp_path_factory.mktemp("scan-devhost")) as host:
        yield host


class Registry:
    def __init__(self, name: str, http: httpx.Client, stores: Stores) -> None:
        self.name, self.http, self.stores = name, http, stores

    async def scan_state(self, repository: str, digest: str, seconds: float = 90.0) -> ScanDoc:
        """The scan document once it is finished (done or failed)."""
        store = ScanStore(self.stores.metadata)
        doc = None
        for _ in range(int(seconds / 0.1)):
            doc = await store.get(repo_key(self.name, repository), digest)
            if doc is not None and doc.state in ("done", "failed"):
                return doc
            await asyncio.sleep(0.1)
        raise AssertionError(f"the scan of {repository}@{digest} did not finish: {doc}")

    def referrers(self, repository: str, digest: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/v2/{repository}/referrers/{digest}")
        assert response.status_code == 200, response.text
        manifests: list[dict[str, Any]] = response.json()["manifests"]
        return manifests

    def document(self, repository: str, manifest_digest: str) -> Any:
        """The one layer of an artifact manifest, pulled as a client would (manifest, then blob)."""
        manifest = self.http.get(
            f"/v2/{repository}/manifests/{manifest_digest}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        ).json()
        blob = self.http.get(f"/v2/{repository}/blobs/{manifest['layers'][0]['digest']}")
        if blob.status_code == 307:
            blob = httpx.get(blob.headers["Location"])
        assert blob.status_code == 200
        return json.loads(blob.content)


@pytest.fixture
async def registry(scan_devhost: Devhost, stores: Stores) -> AsyncIterator[Registry]:
    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name, "Premium")
    await update_registry(stores.metadata, name, auth_disabled=True)
    with registry_client(scan_devhost, name) as http:
        yield Registry(name, http, stores)


async def test_a_pushed_image_gets_an_sbom_and_a_report_as_referrers(registry: Registry) -> None:
    digest, _ = push_image(registry.http, "app/web", "v1", debian_layers())
    scan = await registry.scan_state("app/web", digest)
    assert scan.state == "done", scan.reason
    assert scan.packages == 4
    assert scan.counts == {"critical": 0, "high": 2, "medium": 0, "low": 0, "unknown": 1}
    assert scan.worst is not None and scan.worst["severity"] == "HIGH"

    referrers = {r["artifactType"]: r for r in registry.referrers("app/web", digest)}
    assert set(referrers) == {SBOM_MEDIA_TYPE, REPORT_MEDIA_TYPE}
    assert referrers[SBOM_MEDIA_TYPE]["digest"] == scan.sbomDigest
    assert referrers[REPORT_MEDIA_TYPE]["digest"] == scan.reportDigest

    sbom = registry.document("app/web", scan.sbomDigest or "")
    assert sbom["spdxVersion"] == "SPDX-2.3"
    versions = {p["name"]: p["versionInfo"] for p in sbom["packages"]}
    assert versions["libexpat1"] == "2.5.0-1" and versions["zlib1g"] == "1:1.2.13.dfsg-1"
    assert versions["Jinja2"] == "2.10" and versions["lodash"] == "4.17.20"

    report = registry.document("app/web", scan.reportDigest or "")
    found = {(f["id"], f["package"]["name"], f["fixedVersion"]) for f in report["findings"]}
    assert found == {
        ("GHSA-462w-v97r-4m45", "Jinja2", "2.10.1"),
        ("GHSA-35jh-r3h4-6jhm", "lodash", "4.17.21"),
        ("DEBIAN-CVE-2024-45490", "libexpat1", "2.5.0-1+deb12u1"),
    }
    assert report["subject"]["digest"] == digest and report["summary"]["total"] == 3

    # the event delivered again (at least once) scans nothing twice
    pushed = registry.http.put(
        "/v2/app/web/manifests/v1-again",
        content=registry.http.get(f"/v2/app/web/manifests/{digest}").content,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert pushed.status_code == 201
    await asyncio.sleep(1.0)
    assert (await registry.scan_state("app/web", digest)).reportDigest == scan.reportDigest


@pytest.mark.parametrize(
    ("layer", "reason"),
    [
        (tar_layer(("../../../etc/cron.d/evil", b"* * * * * root sh")), "path traversal"),
        (tar_layer(symlink("etc/evil", "../../../../etc/shadow")), "symlink escape"),
        (gzip_bomb(), "decompression bomb"),
        (
            tar_layer(("var/lib/dpkg/status", b"Package: a\n" * 400), ("x", bytes(20000)), compress=False)[:-8000],
            "cut short",
        ),
    ],
)
async def test_hostile_layers_fail_the_scan_with_a_reason_and_the_worker_carries_on(
    registry: Registry, layer: bytes, reason: str
) -> None:
    bad, _ = push_image(registry.http, "hostile", "bad", [debian_layers()[0], layer])
    failed = await registry.scan_state("hostile", bad)
    assert failed.state == "failed" and reason in (failed.reason or ""), failed.reason
    assert registry.referrers("hostile", bad) == []
    good, _ = push_image(registry.http, "hostile", "good", debian_layers())
    assert (await registry.scan_state("hostile", good)).state == "done"


async def test_each_image_of_an_index_is_scanned_and_the_index_sums_them(registry: Registry) -> None:
    first, _ = push_image(registry.http, "multi", "a", debian_layers())
    second, _ = push_image(registry.http, "multi", "b", debian_layers()[:1])
    sizes = [len(registry.http.get(f"/v2/multi/manifests/{d}").content) for d in (first, second)]
    index = push_index(registry.http, "multi", "v1", list(zip([first, second], sizes, strict=True)))
    scan = await registry.scan_state("multi", index)
    assert scan.state == "done" and scan.children == {first: "done", second: "done"}
    assert scan.counts is not None and scan.counts["high"] == 2 and scan.counts["unknown"] == 2


async def test_rescans_and_rematching_against_an_updated_database(
    registry: Registry, stores: Stores, scan_devhost: Devhost, advisory_dir: Path
) -> None:
    digest, _ = push_image(registry.http, "rematch", "v1", debian_layers())
    first = await registry.scan_state("rematch", digest)
    assert first.counts is not None and first.counts["high"] == 2

    # the database loses the lodash advisory: one finding fewer, a new report replaces the old one (the
    # devhost's timer may do it first: both read the same database)
    record = advisory_dir / "GHSA-35jh-r3h4-6jhm.json"
    saved = record.read_bytes()
    record.unlink()
    try:
        await _rematch_and_rescan(registry, stores, scan_devhost, digest, first)
    finally:
        record.write_bytes(saved)


async def _rematch_and_rescan(
    registry: Registry, stores: Stores, scan_devhost: Devhost, digest: str, first: ScanDoc
) -> None:
    scanner = ImageScanner(settings_from_env(scan_devhost.env), stores.metadata, stores.blobs)
    try:
        await _rematch_then_rescan(scanner, registry, digest, first)
    finally:
        await scanner.close()


async def _rematch_then_rescan(scanner: ImageScanner, registry: Registry, digest: str, first: ScanDoc) -> None:
    await scanner.rematch()
    rematched = await scanner.scans.get(repo_key(registry.name, "rematch"), digest)
    assert rematched is not None and rematched.counts is not None and rematched.counts["high"] == 1
    assert rematched.reportDigest != first.reportDigest and rematched.sbomDigest == first.sbomDigest
    reports = [r for r in registry.referrers("rematch", digest) if r["artifactType"] == REPORT_MEDIA_TYPE]
    assert [r["digest"] for r in reports] == [rematched.reportDigest]
    assert (await scanner.rematch()).processed == 0  # nothing changed since

    # a rescan asked for reads the layers again
    manifest = await scanner.artifacts.get_manifest(repo_key(registry.name, "rematch"), digest)
    assert manifest is not None
    queued = await scanner.request_rescan(registry.name, "rematch", manifest)
    assert queued["state"] == "queued"
    assert await scanner.run_requested() >= 1
    rescanned = await registry.scan_state("rematch", digest)
    assert rescanned.state == "done" and rescanned.counts == rematched.counts


async def test_scan_state_in_acr_v1_and_rescans_asked_for_over_http(registry: Registry) -> None:
    digest, _ = push_image(registry.http, "state", "v1", debian_layers())
    scan = await registry.scan_state("state", digest)
    body = registry.http.get(f"/acr/v1/state/_manifests/{digest}").json()["manifest"]
    assert body["scan"]["state"] == "done" and body["scan"]["counts"] == scan.counts
    assert body["scan"]["reportDigest"] == scan.reportDigest
    # the scanner's own artifacts are not scanned and carry no scan state
    assert "scan" not in registry.http.get(f"/acr/v1/state/_manifests/{scan.sbomDigest}").json()["manifest"]

    rescan = registry.http.post(f"/acr/v1/state/_manifests/{digest}/_scan")
    assert rescan.status_code == 202 and rescan.json()["scan"]["state"] in ("queued", "scanning")
    done = await registry.scan_state("state", digest)  # the devhost's timer takes it (every 10 s)
    assert done.state == "done" and done.updated > scan.updated

    def error(response: httpx.Response) -> tuple[int, str]:
        return response.status_code, response.json()["errors"][0]["code"]

    assert error(registry.http.post(f"/acr/v1/state/_manifests/{done.sbomDigest}/_scan")) == (400, "UNSUPPORTED")
    assert error(registry.http.post("/acr/v1/state/_manifests/sha256:" + "0" * 64 + "/_scan")) == (
        404,
        "MANIFEST_UNKNOWN",
    )
    for bad in ("latest", "sha256:xyz", "sha256:" + "A" * 64, "..", "%2e%2e"):
        response = registry.http.post(f"/acr/v1/state/_manifests/{bad}/_scan")
        assert 400 <= response.status_code < 500, (bad, response.status_code)
    assert registry.http.get(f"/acr/v1/state/_manifests/{digest}/_scan").status_code == 405
    assert registry.http.post(f"/acr/v1/nosuchrepo/_manifests/{digest}/_scan").status_code == 404
