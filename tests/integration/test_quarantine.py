"""ACR's quarantine flow and the vulnerability policy, end to end through a devhost of this module's own
(its own bus topic; webhooks delivered to a real receiver; identities from Entra ID tokens exchanged for
registry tokens). The scanner runs in-process at the moment the test chooses, against the same storage and
bus, so each step of the flow can be observed before the next."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from services.management.access import assign_role, enable_admin_user
from services.management.registries import RegistryChanges, create_registry
from services.scanning.worker import ImageScanner
from services.webhooks.resources import WebhookChanges, put_webhook
from tests.conftest import Devhost, running_devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, settings_from_env, unique_registry_name
from tests.scan_images import OCI_MANIFEST, debian_layers, push_image, symlink, tar_layer
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "osv"


@pytest.fixture(scope="module")
def quarantine_devhost(
    stack: dict[str, str], entra_issuer: TestIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Devhost]:
    env = stack | {
        "BUS_TOPIC": "qt" + uuid.uuid4().hex[:10],
        "SCANNER_ENABLED": "false",  # the test scans in-process, when it chooses
        "ADVISORY_DB": str(FIXTURE),
        "ENTRA_ISSUERS": entra_issuer.setting(),
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
        "OUTBOX_RELAY_AFTER_SECONDS": "1",
    }
    with running_devhost(env, tmp_path_factory.mktemp("quarantine-devhost")) as host:
        yield host


class Registry:
    """A registry with the admin user (who pushes) and Entra identities in ACR's roles."""

    def __init__(self, devhost: Devhost, name: str, admin_password: str, issuer: TestIssuer, stores: Stores) -> None:
        self.devhost, self.name, self.issuer, self.stores = devhost, name, issuer, stores
        port = devhost.host.rsplit(":", 1)[1]
        self.host = f"{name}.azurecr.localhost:{port}"
        basic = base64.b64encode(f"{name}:{admin_password}".encode()).decode()
        self.admin = httpx.Client(
            base_url=devhost.url, headers={"Host": self.host, "Authorization": f"Basic {basic}"}, timeout=60
        )
        self.scanner = ImageScanner(settings_from_env(devhost.env), stores.metadata, stores.blobs)

    async def identity(self, role: str) -> str:
        principal = str(uuid.uuid4())
        await assign_role(self.stores.metadata, self.name, principal, role, tenant=self.issuer.tenant)
        return self.issuer.token(principal)

    def as_identity(self, entra_token: str, scope: str) -> httpx.Client:
        """A client holding a registry access token for `scope`, got as ACR's clients get one."""
        http = httpx.Client(base_url=self.devhost.url, headers={"Host": self.host}, timeout=60)
        service = self.host.split(":")[0]
        exchanged = http.post(
            "/oauth2/exchange",
            data={"grant_type": "access_token", "service": service, "access_token": entra_token},
        )
        assert exchanged.status_code == 200, exchanged.text
        token = http.post(
            "/oauth2/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": exchanged.json()["refresh_token"],
                "service": service,
                "scope": scope,
            },
        )
        assert token.status_code == 200, token.text
        http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        return http


async def make_registry(devhost: Devhost, stores: Stores, issuer: TestIssuer, policies: dict[str, object]) -> Registry:
    name = unique_registry_name()
    changes = RegistryChanges(policies=policies)
    await create_registry(stores.metadata, stores.blobs, stores.settings, name, "Premium", changes=changes)
    passwords = await enable_admin_user(stores.metadata, name)
    return Registry(devhost, name, passwords[0].value, issuer, stores)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as instance:
        yield instance


@pytest.fixture
async def quarantined(
    quarantine_devhost: Devhost, stores: Stores, entra_issuer: TestIssuer, receiver: WebhookReceiver
) -> AsyncIterator[Registry]:
    registry = await make_registry(
        quarantine_devhost, stores, entra_issuer, {"quarantinePolicy": {"status": "enabled"}}
    )
    changes = WebhookChanges(service_uri=receiver.url + "/hook", actions=["push", "quarantine"])
    await put_webhook(stores.metadata, registry.name, "scanhook", changes)
    yield registry
    registry.admin.close()
    await registry.scanner.close()


def actions_for(receiver: WebhookReceiver, digest: str) -> list[str]:
    return [e["action"] for e in receiver.events("/hook") if e["target"]["digest"] == digest]


def wait_for_actions(receiver: WebhookReceiver, digest: str, wanted: list[str]) -> None:
    receiver.wait_for(lambda r: actions_for(r, digest) == wanted, timeout=30)


async def test_push_is_quarantined_until_the_scan_passes(quarantined: Registry, receiver: WebhookReceiver) -> None:
    digest, _ = push_image(quarantined.admin, "app", "v1", debian_layers())
    wait_for_actions(receiver, digest, ["quarantine"])
    event = next(e for e in receiver.events("/hook") if e["target"]["digest"] == digest)
    assert event["target"]["tag"] == "v1" and event["target"]["repository"] == "app"

    puller = quarantined.as_identity(await quarantined.identity("AcrPull"), "repository:app:pull")
    reader = quarantined.as_identity(await quarantined.identity("AcrQuarantineReader"), "repository:app:pull")
    refused = puller.get(f"/v2/app/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
    assert refused.status_code == 403 and refused.json()["errors"][0]["code"] == "DENIED"
    assert "The operation is disallowed." in refused.json()["errors"][0]["message"]
    assert puller.get("/v2/app/manifests/v1", headers={"Accept": OCI_MANIFEST}).status_code == 404
    assert reader.get("/v2/app/manifests/v1", headers={"Accept": OCI_MANIFEST}).status_code == 404  # by digest only
    assert reader.get(f"/v2/app/manifests/{digest}", headers={"Accept": OCI_MANIFEST}).status_code == 200
    assert reader.head(f"/v2/app/manifests/{digest}").status_code == 200
    attributes = quarantined.admin.get(f"/acr/v1/app/_manifests/{digest}").json()["manifest"]["changeableAttributes"]
    assert attributes["quarantineState"] == "Pending"

    scan = await quarantined.scanner.scan(quarantined.name, "app", digest)
    assert scan is not None and scan.state == "done"
    wait_for_actions(receiver, digest, ["quarantine", "push"])
    assert puller.get("/v2/app/manifests/v1", headers={"Accept": OCI_MANIFEST}).status_code == 200
    attributes = quarantined.admin.get(f"/acr/v1/app/_manifests/{digest}").json()["manifest"]["changeableAttributes"]
    details = json.loads(attributes["quarantineDetails"])
    assert attributes["quarantineState"] == "Passed" and details["report"] == scan.reportDigest

    # a rescan (or a second scanner) releases nothing twice
    await quarantined.scanner.scan(quarantined.name, "app", digest, force=True)
    await asyncio.sleep(2.0)
    assert actions_for(receiver, digest) == ["quarantine", "push"]


async def test_a_failing_scan_stays_blocked(quarantined: Registry, receiver: WebhookReceiver) -> None:
    digest, _ = push_image(quarantined.admin, "bad", "v1", [tar_layer(symlink("etc/x", "../../../etc/shadow"))])
    wait_for_actions(receiver, digest, ["quarantine"])
    scan = await quarantined.scanner.scan(quarantined.name, "bad", digest)
    assert scan is not None and scan.state == "failed"
    attributes = quarantined.admin.get(f"/acr/v1/bad/_manifests/{digest}").json()["manifest"]["changeableAttributes"]
    assert attributes["quarantineState"] == "Failed" and "symlink escape" in attributes["quarantineDetails"]
    puller = quarantined.as_identity(await quarantined.identity("AcrPull"), "repository:bad:pull")
    assert puller.get(f"/v2/bad/manifests/{digest}").status_code == 403
    assert puller.get("/v2/bad/manifests/v1").status_code == 404
    await asyncio.sleep(2.0)
    assert actions_for(receiver, digest) == ["quarantine"]


async def test_quarantine_writers_set_the_state_and_others_may_not(
    quarantined: Registry, receiver: WebhookReceiver
) -> None:
    digest, _ = push_image(quarantined.admin, "manual", "v1", debian_layers())
    wait_for_actions(receiver, digest, ["quarantine"])
    body = {"quarantineState": "Passed", "quarantineDetails": '{"scanner": "external"}'}
    pusher = quarantined.as_identity(await quarantined.identity("AcrPush"), "repository:manual:metadata_write")
    refused = pusher.patch(f"/acr/v1/manual/_manifests/{digest}", json=body)
    assert refused.status_code == 403 and refused.json()["errors"][0]["code"] == "DENIED"
    writer = quarantined.as_identity(
        await quarantined.identity("AcrQuarantineWriter"), "repository:manual:pull,metadata_read,metadata_write"
    )
    assert writer.get(f"/v2/manual/manifests/{digest}").status_code == 200  # a writer reads quarantined images
    released = writer.patch(f"/acr/v1/manual/_manifests/{digest}", json=body)
    assert released.status_code == 200, released.text
    assert released.json()["manifest"]["changeableAttributes"]["quarantineState"] == "Passed"
    assert writer.patch(f"/acr/v1/manual/_manifests/{digest}", json=body).status_code == 200  # again: no event
    wait_for_actions(receiver, digest, ["quarantine", "push"])
    await asyncio.sleep(2.0)
    assert actions_for(receiver, digest) == ["quarantine", "push"]


async def test_the_vulnerability_policy_blocks_images_with_findings_at_or_above_its_severity(
    quarantine_devhost: Devhost, stores: Stores, entra_issuer: TestIssuer
) -> None:
    policy = {"status": "enabled", "severity": "High", "exemptRepositories": ["tools/*"]}
    registry = await make_registry(quarantine_devhost, stores, entra_issuer, {"vulnerabilityPolicy": policy})
    vulnerable, _ = push_image(registry.admin, "web", "v1", debian_layers())
    exempt, _ = push_image(registry.admin, "tools/lint", "v1", debian_layers())
    clean, _ = push_image(registry.admin, "web", "clean", debian_layers()[:1])  # only an UNKNOWN finding
    puller = registry.as_identity(await registry.identity("AcrPull"), "repository:web:pull")
    assert puller.get("/v2/web/manifests/v1").status_code == 200  # not scanned yet: not refused by this policy
    for repository, digest in (("web", vulnerable), ("tools/lint", exempt), ("web", clean)):
        assert (await registry.scanner.scan(registry.name, repository, digest)) is not None
    refused = puller.get("/v2/web/manifests/v1")
    assert refused.status_code == 403
    error = refused.json()["errors"][0]
    assert error["code"] == "DENIED" and "GHSA-" in error["message"] and "HIGH" in error["message"]
    scan = await registry.scanner.scans.get(f"{registry.name}/web", vulnerable)
    assert scan is not None and scan.reportDigest in error["message"]
    assert puller.get("/v2/web/manifests/clean").status_code == 200
    tools = registry.as_identity(await registry.identity("AcrPull"), "repository:tools/lint:pull")
    assert tools.get("/v2/tools/lint/manifests/v1").status_code == 200
    # the policy's setting is checked where it is set
    await registry.scanner.close()
    bad = RegistryChanges(policies={"vulnerabilityPolicy": {"status": "enabled", "severity": "Catastrophic"}})
    with pytest.raises(ValueError, match="severity"):
        await create_registry(stores.metadata, stores.blobs, stores.settings, unique_registry_name(), changes=bad)
