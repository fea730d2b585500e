"""An external scanner through Harbor's pluggable scanner adapter API: the test adapter (tests/harbor_adapter.py)
is configured on a registry, pulls the image with the short-lived token the scanner gives it, answers 302
with Refresh-After while it "scans", and its findings join the image's report. A broken or private adapter
fails the scan with a reason."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.management.access import enable_admin_user
from services.management.registries import RegistryChanges, RegistryInvalid, create_registry
from services.scanning.worker import ImageScanner
from tests.conftest import Devhost, running_devhost
from tests.harbor_adapter import HarborTestAdapter
from tests.integration.conftest import Stores, settings_from_env, unique_registry_name
from tests.scan_images import debian_layers, push_image

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "osv"


@pytest.fixture(scope="module")
def external_devhost(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    env = stack | {"BUS_TOPIC": "ex" + uuid.uuid4().hex[:10], "SCANNER_ENABLED": "false", "ADVISORY_DB": str(FIXTURE)}
    with running_devhost(env, tmp_path_factory.mktemp("external-devhost")) as host:
        yield host


async def registry_with_adapter(devhost: Devhost, stores: Stores, adapter_url: str) -> tuple[str, httpx.Client]:
    name = unique_registry_name()
    port = devhost.host.rsplit(":", 1)[1]
    policy = {"status": "enabled", "url": adapter_url, "registryUrl": f"http://{name}.azurecr.localhost:{port}"}
    changes = RegistryChanges(policies={"externalScanner": policy})
    await create_registry(stores.metadata, stores.blobs, stores.settings, name, "Premium", changes=changes)
    password = (await enable_admin_user(stores.metadata, name))[0].value
    basic = base64.b64encode(f"{name}:{password}".encode()).decode()
    headers = {"Host": f"{name}.azurecr.localhost:{port}", "Authorization": f"Basic {basic}"}
    return name, httpx.Client(base_url=devhost.url, headers=headers, timeout=60)


def scanner_for(devhost: Devhost, stores: Stores, allow_private: bool) -> ImageScanner:
    settings = settings_from_env(devhost.env).model_copy(
        update={"external_scanner_allow_private_targets": allow_private, "external_scanner_timeout_seconds": 20.0}
    )
    return ImageScanner(settings, stores.metadata, stores.blobs)


async def test_an_external_scanners_findings_join_the_report(external_devhost: Devhost, stores: Stores) -> None:
    with HarborTestAdapter(external_devhost.url) as adapter:
        name, http = await registry_with_adapter(external_devhost, stores, adapter.url)
        digest, _ = push_image(http, "app", "v1", debian_layers())
        scanner = scanner_for(external_devhost, stores, allow_private=True)
        try:
            scan = await scanner.scan(name, "app", digest)
        finally:
            await scanner.close()
        assert scan is not None and scan.state == "done", scan and scan.reason
        (job,) = adapter.jobs.values()
        assert job.pulled == 200 and job.polls == 2  # pulled with our token; polled through the 302
        assert job.request["artifact"] == {
            "repository": "app",
            "digest": digest,
            "mime_type": "application/vnd.oci.image.manifest.v1+json",
        }
        assert job.request["registry"]["authorization"].startswith("Bearer ")
        # the token pulls that repository only
        token = {"Host": http.headers["Host"], "Authorization": job.request["registry"]["authorization"]}
        async with httpx.AsyncClient(timeout=60) as plain:
            other = await plain.get(f"{external_devhost.url}/v2/other/manifests/{digest}", headers=token)
        assert other.status_code in (401, 403)

        assert scan.counts is not None and scan.counts["critical"] == 1 and scan.counts["high"] == 2
        assert scan.worst is not None and scan.worst["id"] == "CVE-2099-0001"
        manifest = http.get(f"/v2/app/manifests/{scan.reportDigest}").json()
        blob = http.get(f"/v2/app/blobs/{manifest['layers'][0]['digest']}")
        async with httpx.AsyncClient(timeout=60) as plain:
            data = (await plain.get(blob.headers["Location"])).content if blob.status_code == 307 else blob.content
        report = json.loads(data)
        external = [f for f in report["findings"] if f["package"]["ecosystem"] == "external:test-adapter"]
        assert {(f["id"], f["severity"], f["fixedVersion"]) for f in external} == {
            ("CVE-2099-0001", "CRITICAL", "1.1"),
            ("CVE-2099-0002", "LOW", None),
        }


@pytest.mark.parametrize(("broken", "allow_private", "reason"), [(500, True, "answered 500"), (None, False, "private")])
async def test_a_broken_or_private_adapter_fails_the_scan_with_a_reason(
    external_devhost: Devhost, stores: Stores, broken: int | None, allow_private: bool, reason: str
) -> None:
    with HarborTestAdapter(external_devhost.url, fail_with=broken) as adapter:
        name, http = await registry_with_adapter(external_devhost, stores, adapter.url)
        digest, _ = push_image(http, "app", "v1", debian_layers())
        scanner = scanner_for(external_devhost, stores, allow_private=allow_private)
        try:
            scan = await scanner.scan(name, "app", digest)
        finally:
            await scanner.close()
        assert scan is not None and scan.state == "failed" and reason in (scan.reason or ""), scan
        assert not adapter.jobs or broken is not None


@pytest.mark.parametrize(
    "policy",
    [
        {"status": "enabled", "url": "ftp://adapter"},
        {"status": "enabled", "url": "http://user:secret@adapter"},
        {"status": "enabled", "url": "http://adapter", "registryUrl": 7},
        {"status": "enabled"},
    ],
)
async def test_the_external_scanner_setting_is_checked(stores: Stores, policy: dict[str, object]) -> None:
    changes = RegistryChanges(policies={"externalScanner": policy})
    with pytest.raises(RegistryInvalid, match="externalScanner"):
        await create_registry(stores.metadata, stores.blobs, stores.settings, unique_registry_name(), changes=changes)
