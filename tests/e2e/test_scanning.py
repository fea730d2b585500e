"""A real image, built here from real packages (Debian .debs from `apt-get download`, wheels from the package
index, assembled with umoci), pushed with skopeo to a devhost that scans pushes: its SBOM lists those
packages with their versions, its report names the fixture's advisories for them with their fixed versions,
and both are found through `GET /v2/<name>/referrers/<digest>` and pulled with oras (the oras-py client:
the oras CLI cannot be installed here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.scanning.documents import REPORT_MEDIA_TYPE, SBOM_MEDIA_TYPE
from tests.conftest import Devhost, running_devhost
from tests.e2e.clients import OrasArtifactClient, Skopeo

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "osv"
DEBS = ("libexpat1", "zlib1g")
WHEELS = ("Jinja2==2.10", "urllib3==1.26.4")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def scan_devhost(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    env = stack | {"BUS_TOPIC": "se" + uuid.uuid4().hex[:10], "SCANNER_ENABLED": "true", "ADVISORY_DB": str(FIXTURE)}
    with running_devhost(env, tmp_path_factory.mktemp("scan-e2e-devhost")) as host:
        yield host


def run(*argv: str, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr[-2000:]}"
    return done.stdout


def control_fields(deb: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in run("dpkg-deb", "-f", str(deb)).splitlines():
        if line and not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def build_image(work: Path) -> tuple[Path, dict[str, str]]:
    """An OCI layout (tag v1) of a root file system holding real packages; returns it and what it holds."""
    debs, wheels, rootfs = work / "debs", work / "wheels", work / "rootfs"
    for directory in (debs, wheels, rootfs):
        directory.mkdir(parents=True)
    run("apt-get", "download", *DEBS, cwd=debs)
    run(
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(wheels),
        *WHEELS,
    )
    expected: dict[str, str] = {}
    paragraphs = []
    for deb in sorted(debs.glob("*.deb")):
        run("dpkg-deb", "-x", str(deb), str(rootfs))
        fields = control_fields(deb)
        expected[fields["Package"]] = fields["Version"]
        control = run("dpkg-deb", "-f", str(deb)).rstrip("\n").splitlines()
        paragraphs.append("\n".join([control[0], "Status: install ok installed", *control[1:]]))
    status = rootfs / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True, exist_ok=True)
    status.write_text("\n\n".join(paragraphs) + "\n")
    (rootfs / "etc").mkdir(exist_ok=True)
    (rootfs / "etc/os-release").write_text(Path("/etc/os-release").read_text())
    site = rootfs / "usr/local/lib/python3.11/site-packages"
    site.mkdir(parents=True)
    for wheel in sorted(wheels.glob("*.whl")):
        shutil.unpack_archive(str(wheel), str(site), "zip")
    for spec in WHEELS:
        name, _, version = spec.partition("==")
        expected[name] = version
    layout, bundle = work / "layout", work / "bundle"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:v1")
    run("umoci", "unpack", "--rootless", "--image", f"{layout}:v1", str(bundle))
    shutil.copytree(rootfs, bundle / "rootfs", symlinks=True, dirs_exist_ok=True)
    run("umoci", "repack", "--image", f"{layout}:v1", str(bundle))
    return layout, expected


def wait_for_scan(http: httpx.Client, repository: str, digest: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    scan: dict[str, Any] = {}
    while time.monotonic() < deadline:
        scan = http.get(f"/acr/v1/{repository}/_manifests/{digest}").json()["manifest"].get("scan") or {}
        if scan.get("state") in ("done", "failed"):
            return scan
        time.sleep(0.25)
    raise AssertionError(f"the scan of {repository}@{digest} did not finish: {scan}")


def pulled_document(oras: OrasArtifactClient, reference: str, out: Path) -> Any:
    files = oras.pull(target=reference, outdir=str(out))
    assert len(files) == 1, files
    return json.loads(Path(files[0]).read_text())


def test_a_real_image_is_scanned_and_its_documents_pulled_with_oras(
    scan_devhost: Devhost, skopeo: Skopeo, tmp_path: Path
) -> None:
    layout, expected = build_image(tmp_path / "image")
    host, repository = scan_devhost.host, f"scan/real{uuid.uuid4().hex[:8]}"
    skopeo.copy(f"oci:{layout}:v1", f"docker://{host}/{repository}:v1")
    http = httpx.Client(base_url=scan_devhost.url, timeout=60)
    head = http.head(f"/v2/{repository}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    digest = head.headers["Docker-Content-Digest"]

    scan = wait_for_scan(http, repository, digest)
    assert scan["state"] == "done", scan
    assert scan["counts"]["high"] >= 2 and scan["worst"]["severity"] == "HIGH"

    referrers = http.get(f"/v2/{repository}/referrers/{digest}").json()["manifests"]
    by_type = {r["artifactType"]: r["digest"] for r in referrers}
    assert by_type == {SBOM_MEDIA_TYPE: scan["sbomDigest"], REPORT_MEDIA_TYPE: scan["reportDigest"]}

    oras = OrasArtifactClient(host)
    sbom = pulled_document(oras, f"{host}/{repository}@{scan['sbomDigest']}", tmp_path / "sbom")
    listed = {p["name"]: p["versionInfo"] for p in sbom["packages"]}
    for name, version in expected.items():
        assert listed.get(name) == version, (name, version, sorted(listed))
    purls = {ref["referenceLocator"] for p in sbom["packages"] for ref in p.get("externalRefs", [])}
    assert "pkg:pypi/jinja2@2.10?ecosystem=PyPI" in purls

    report = pulled_document(oras, f"{host}/{repository}@{scan['reportDigest']}", tmp_path / "report")
    findings = {(f["id"], f["package"]["name"], f["package"]["version"], f["fixedVersion"]) for f in report["findings"]}
    assert ("GHSA-462w-v97r-4m45", "Jinja2", "2.10", "2.10.1") in findings
    assert ("GHSA-q2q7-5pp4-w6pg", "urllib3", "1.26.4", "1.26.5") in findings
    assert report["subject"]["digest"] == digest and report["os"].startswith("Debian GNU/Linux")
