"""Registries as Azure resources, over HTTP against the devhost: the ARM shapes, long-running operations,
subscription and resource group scoping, tiers, bad input and who may do what (issue 9, part 2)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.management.access import assign_role, assign_scope_role, create_token, update_registry
from services.management.registries import begin_delete, resume_deletions
from services.management.store import RegistryStore
from services.registry.store import ArtifactStore
from services.webhooks.resources import WebhookChanges, put_webhook
from tests.conftest import Devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, unique_registry_name

pytestmark = pytest.mark.integration

API = {"api-version": "2025-11-01"}


@dataclass(frozen=True)
class Arm:
    devhost: Devhost
    subscription: str
    group: str
    owner: str  # Owner of the subscription
    group_contributor: str  # Contributor of `group` only
    stranger: str  # no role anywhere
    issuer: TestIssuer

    def headers(self, principal: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.token(principal)}"}

    def group_path(self, group: str | None = None) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{group or self.group}"
            "/providers/Microsoft.ContainerRegistry/registries"
        )

    def path(self, name: str, group: str | None = None) -> str:
        return f"{self.group_path(group)}/{name}"

    async def call(
        self, method: str, path: str, principal: str | None = None, body: Any = None, **params: str
    ) -> httpx.Response:
        headers = self.headers(principal or self.owner)
        async with httpx.AsyncClient(timeout=60) as http:
            if path.startswith("http"):  # a nextLink: its query is complete (httpx would replace it)
                return await http.request(method, path, json=body, headers=headers)
            return await http.request(method, self.devhost.url + path, json=body, headers=headers, params=API | params)

    async def wait(self, reply: httpx.Response, principal: str | None = None) -> dict[str, Any]:
        """Follow Azure-AsyncOperation until the operation ends, as the SDK's poller does."""
        url = reply.headers["Azure-AsyncOperation"]
        for _ in range(200):
            async with httpx.AsyncClient(timeout=60) as http:
                status = await http.get(url, headers=self.headers(principal or self.owner))
            assert status.status_code == 200, status.text
            if status.json()["status"] != "InProgress":
                result: dict[str, Any] = status.json()
                return result
            await asyncio.sleep(0.1)
        raise AssertionError("the operation never ended")


@pytest.fixture(scope="module")
async def arm(devhost: Devhost, stores: Stores, entra_issuer: TestIssuer) -> AsyncIterator[Arm]:
    subscription, group = str(uuid.uuid4()), "rg-" + uuid.uuid4().hex[:8]
    owner, contributor, stranger = (str(uuid.uuid4()) for _ in range(3))
    tenant = entra_issuer.tenant
    await assign_scope_role(stores.metadata, f"/subscriptions/{subscription}", owner, "Owner", tenant=tenant)
    scope = f"/subscriptions/{subscription}/resourceGroups/{group}"
    await assign_scope_role(stores.metadata, scope, contributor, "Contributor", tenant=tenant)
    yield Arm(devhost, subscription, group, owner, contributor, stranger, entra_issuer)


def _create_body(sku: str = "Standard", **properties: Any) -> dict[str, Any]:
    return {"location": "westeurope", "sku": {"name": sku}, "tags": {"team": "it"}, "properties": properties}


async def test_create_is_a_long_running_operation_and_the_registry_serves_at_once(arm: Arm) -> None:
    name = unique_registry_name()
    reply = await arm.call("PUT", arm.path(name), body=_create_body("Premium", adminUserEnabled=True))
    assert reply.status_code == 201, reply.text
    assert (await arm.wait(reply))["status"] == "Succeeded"
    made = reply.json()
    assert made["id"] == f"{arm.group_path()}/{name}" and made["type"] == "Microsoft.ContainerRegistry/registries"
    assert made["sku"] == {"name": "Premium", "tier": "Premium"} and made["tags"] == {"team": "it"}
    assert made["properties"]["provisioningState"] == "Succeeded"
    assert made["properties"]["loginServer"] == f"{name}.azurecr.localhost"
    assert made["properties"]["adminUserEnabled"] is True
    got = await arm.call("GET", arm.path(name))
    assert got.status_code == 200 and got.json()["properties"]["creationDate"] == made["properties"]["creationDate"]
    # the data plane knows it: a challenge naming it (an unknown registry would challenge too, so push)
    port = arm.devhost.host.rsplit(":", 1)[1]
    async with httpx.AsyncClient(timeout=30) as http:
        v2 = await http.get(f"{arm.devhost.url}/v2/", headers={"Host": f"{name}.azurecr.localhost:{port}"})
    assert v2.status_code == 401 and f'service="{name}.azurecr.localhost"' in v2.headers["WWW-Authenticate"]
    # PUT again is an update (200), through another resource group it does not exist
    again = await arm.call("PUT", arm.path(name), body=_create_body("Premium", anonymousPullEnabled=True))
    assert again.status_code == 200 and again.json()["properties"]["anonymousPullEnabled"] is True
    assert (await arm.call("GET", arm.path(name, "another-rg"))).status_code == 404


async def test_names_are_global_and_check_name_availability_says_why(arm: Arm) -> None:
    name = unique_registry_name()
    assert (await arm.call("PUT", arm.path(name), body=_create_body())).status_code == 201
    check = f"/subscriptions/{arm.subscription}/providers/Microsoft.ContainerRegistry/checkNameAvailability"
    body = {"name": name, "type": "Microsoft.ContainerRegistry/registries"}
    taken = await arm.call("POST", check, body=body)
    assert taken.json() == {
        "nameAvailable": False,
        "reason": "AlreadyExists",
        "message": f"The registry {name} is already in use.",
    }
    free = await arm.call("POST", check, body=body | {"name": unique_registry_name()})
    assert free.json() == {"nameAvailable": True}
    bad = await arm.call("POST", check, body=body | {"name": "ab"})
    assert bad.json()["nameAvailable"] is False and bad.json()["reason"] == "Invalid"
    elsewhere = await arm.call("PUT", arm.path(name, "another-rg"), body=_create_body())
    assert elsewhere.status_code == 409 and elsewhere.json()["error"]["code"] == "AlreadyInUse"


async def test_list_by_group_and_subscription_pages_with_next_link(arm: Arm) -> None:
    names = sorted(unique_registry_name() for _ in range(3))
    for name in names:
        assert (await arm.call("PUT", arm.path(name, arm.group + "x"), body=_create_body())).status_code == 201
    seen: list[str] = []
    url: str | None = arm.group_path(arm.group + "x")
    params = {"$top": "2"}
    while url:
        page = await arm.call("GET", url, **params)
        assert page.status_code == 200, page.text
        seen += [r["name"] for r in page.json()["value"]]
        url, params = page.json().get("nextLink"), {}
    assert seen == names
    everything = await arm.call(
        "GET", f"/subscriptions/{arm.subscription}/providers/Microsoft.ContainerRegistry/registries"
    )
    assert set(names) <= {r["name"] for r in everything.json()["value"]}
    # a principal with a role on one resource group sees only its registries
    theirs = await arm.call(
        "GET",
        f"/subscriptions/{arm.subscription}/providers/Microsoft.ContainerRegistry/registries",
        arm.group_contributor,
    )
    assert not set(names) & {r["name"] for r in theirs.json()["value"]}


async def test_tiers_are_enforced_and_a_downgrade_must_fit(arm: Arm, stores: Stores) -> None:
    name = unique_registry_name()
    basic_rules = _create_body("Basic", networkRuleSet={"defaultAction": "Deny", "ipRules": []})
    refused = await arm.call("PUT", arm.path(name), body=basic_rules)
    assert refused.status_code == 400 and refused.json()["error"]["target"] == "properties.networkRuleSet"
    assert (await RegistryStore(stores.metadata).get_registry(name)) is None  # nothing half-made
    assert (await arm.call("PUT", arm.path(name), body=_create_body("Premium"))).status_code == 201
    for hook in range(3):  # Basic allows 2
        changes = WebhookChanges(service_uri="https://hooks.example/x", actions=["push"])
        await put_webhook(stores.metadata, name, f"hook{hook:04d}", changes)
    down = await arm.call("PATCH", arm.path(name), body={"sku": {"name": "Basic"}})
    assert down.status_code == 400 and "Webhooks (3 > 2)" in down.json()["error"]["message"]
    assert down.json()["error"]["target"] == "sku.name"
    standard = await arm.call("PATCH", arm.path(name), body={"sku": {"name": "Standard"}})
    assert standard.status_code == 200 and standard.json()["sku"]["name"] == "Standard"
    policies = {"retentionPolicy": {"status": "enabled", "days": 30}}
    premium_only = await arm.call("PATCH", arm.path(name), body={"properties": {"policies": policies}})
    assert premium_only.status_code == 400 and "Premium" in premium_only.json()["error"]["message"]
    usages = await arm.call("GET", arm.path(name) + "/listUsages")
    rows = {u["name"]: u for u in usages.json()["value"]}
    assert rows["Webhooks"] == {"name": "Webhooks", "limit": 10, "currentValue": 3, "unit": "Count"}


@pytest.mark.parametrize(
    ("body", "code", "target"),
    [
        ({"location": "westeurope", "sku": {"name": "Classic"}}, "InvalidRequestContent", "sku.name"),
        ({"sku": {"name": "Basic"}}, "InvalidRequestContent", "location"),
        ({"location": "westeurope"}, "InvalidRequestContent", "sku"),
        (
            _create_body("Premium", policies={"retentionPolicy": {"status": "enabled", "days": 400}}),
            "InvalidRequest",
            "policies.retentionPolicy.days",
        ),
        (_create_body(policies={"nosuchPolicy": {}}), "InvalidRequest", "policies.nosuchPolicy"),
        (
            _create_body("Premium", networkRuleSet={"defaultAction": "Deny", "ipRules": [{"value": "x/99"}]}),
            "InvalidRequest",
            "properties.networkRuleSet",
        ),
    ],
)
async def test_bad_input_is_an_arm_400_naming_the_field(arm: Arm, body: Any, code: str, target: str) -> None:
    reply = await arm.call("PUT", arm.path(unique_registry_name()), body=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == code and reply.json()["error"]["target"] == target


async def test_malformed_requests_never_500(arm: Arm) -> None:
    name = unique_registry_name()
    async with httpx.AsyncClient(timeout=30) as http:
        raw = await http.put(
            arm.devhost.url + arm.path(name), params=API, headers=arm.headers(arm.owner), content=b"{not json"
        )
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "InvalidRequestContent"
    bad_version = await arm.call("GET", arm.path(name), **{"api-version": "1999-01-01"})
    assert bad_version.status_code == 400 and bad_version.json()["error"]["code"] == "InvalidApiVersionParameter"
    short = await arm.call("PUT", arm.path("ab"), body=_create_body())
    assert short.status_code == 400 and short.json()["error"]["code"] == "InvalidResourceName"
    assert (await arm.call("PUT", arm.path("ab"), arm.stranger, body=_create_body())).status_code == 403
    assert (await arm.call("GET", arm.path("x" * 3000))).status_code == 403  # no such scope, not echoed
    huge = await arm.call("PUT", arm.path(name), body=_create_body() | {"tags": {f"t{i}": "v" for i in range(51)}})
    assert huge.status_code == 400 and huge.json()["error"]["target"] == "tags"
    assert (await arm.call("GET", arm.path(name) + "/listUsages")).status_code == 404


async def test_who_may_create_read_and_delete(arm: Arm, stores: Stores) -> None:
    name = unique_registry_name()
    stranger = await arm.call("PUT", arm.path(name), arm.stranger, body=_create_body())
    assert stranger.status_code == 403 and stranger.json()["error"]["code"] == "AuthorizationFailed"
    other_group = await arm.call("PUT", arm.path(name, "someone-elses-rg"), arm.group_contributor, body=_create_body())
    assert other_group.status_code == 403
    made = await arm.call("PUT", arm.path(name), arm.group_contributor, body=_create_body())
    assert made.status_code == 201, made.text
    # a registry-level Reader reads it, and cannot change it
    reader = str(uuid.uuid4())
    await assign_role(stores.metadata, name, reader, "Reader", tenant=arm.issuer.tenant)
    assert (await arm.call("GET", arm.path(name), reader)).status_code == 200
    assert (await arm.call("PATCH", arm.path(name), reader, body={"tags": {}})).status_code == 403
    assert (await arm.call("DELETE", arm.path(name), reader)).status_code == 403
    async with httpx.AsyncClient(timeout=30) as http:
        anonymous = await http.get(arm.devhost.url + arm.path(name), params=API)
    assert anonymous.status_code == 401


async def test_delete_is_accepted_then_everything_of_the_registry_goes(arm: Arm, stores: Stores) -> None:
    name = unique_registry_name()
    assert (await arm.call("PUT", arm.path(name), body=_create_body("Premium"))).status_code == 201
    await ArtifactStore(stores.metadata).ensure_repository(name, "team/app")
    await create_token(stores.metadata, name, "ci-bot", "_repositories_pull")
    await put_webhook(
        stores.metadata, name, "hookgone1", WebhookChanges(service_uri="https://x.example/", actions=["push"])
    )
    reply = await arm.call("DELETE", arm.path(name))
    assert reply.status_code == 202 and reply.headers["Location"] and reply.headers["Retry-After"]
    result = await arm.wait(reply)
    assert result["status"] == "Succeeded" and result["properties"]["progress"]["repositories"] == 1
    assert (await arm.call("GET", arm.path(name))).status_code == 404
    left = [
        item
        async for item in stores.metadata.query(
            "registries", "SELECT c.id FROM c WHERE c.registry = @r", {"@r": name}, name
        )
    ]
    assert left == []
    assert not await ArtifactStore(stores.metadata).repository_exists(name, "team/app")
    async with httpx.AsyncClient(timeout=30) as http:
        done = await http.get(reply.headers["Location"], headers=arm.headers(arm.owner))
    assert done.status_code == 200
    assert (await arm.call("DELETE", arm.path(name))).status_code == 204  # deleting what is gone
    again = await arm.call("PUT", arm.path(name), body=_create_body())  # the name is free again
    assert again.status_code == 201


async def test_a_deletion_whose_worker_died_is_finished_by_the_timer(arm: Arm, stores: Stores) -> None:
    name = unique_registry_name()
    assert (await arm.call("PUT", arm.path(name), body=_create_body())).status_code == 201
    store = RegistryStore(stores.metadata)
    doc = await store.get_registry(name)
    assert doc is not None
    await begin_delete(stores.metadata, doc)  # marked, then "the worker died": nothing emptied it
    assert (await arm.call("GET", arm.path(name))).status_code == 404  # not served while Deleting
    assert await resume_deletions(stores.metadata, stores.blobs) >= 1
    assert await store.get_registry(name) is None


async def test_scope_maps_and_tokens_refuse_bad_input_and_strangers(arm: Arm, stores: Stores) -> None:
    name = unique_registry_name()
    assert (await arm.call("PUT", arm.path(name), body=_create_body())).status_code == 201
    base = arm.path(name)
    bad_action = await arm.call(
        "PUT", f"{base}/scopeMaps/badmap", body={"properties": {"actions": ["repositories/x/nuke"]}}
    )
    assert bad_action.status_code == 400 and bad_action.json()["error"]["code"] == "InvalidRequest"
    system = await arm.call(
        "PUT",
        f"{base}/scopeMaps/_repositories_pull",
        body={"properties": {"actions": ["repositories/*/content/write"]}},
    )
    assert system.status_code == 400 and system.json()["error"]["code"] == "SystemDefinedScopeMap"
    made = await arm.call(
        "PUT", f"{base}/scopeMaps/readmap", body={"properties": {"actions": ["repositories/a/content/read"]}}
    )
    assert made.status_code == 201
    no_map = await arm.call("PUT", f"{base}/tokens/bot01", body={"properties": {}})
    assert no_map.status_code == 400 and no_map.json()["error"]["target"] == "properties.scopeMapId"
    missing_map = await arm.call(
        "PUT", f"{base}/tokens/bot01", body={"properties": {"scopeMapId": f"{base}/scopeMaps/nosuchmap"}}
    )
    assert missing_map.status_code == 400
    token = await arm.call("PUT", f"{base}/tokens/bot01", body={"properties": {"scopeMapId": made.json()["id"]}})
    assert token.status_code == 201 and token.json()["properties"]["credentials"]["passwords"] == []
    generate = f"{base}/generateCredentials"
    unknown = await arm.call("POST", generate, body={"tokenId": f"{base}/tokens/nosuchbot"})
    assert unknown.status_code == 404
    past = await arm.call("POST", generate, body={"tokenId": token.json()["id"], "expiry": "2001-01-01T00:00:00Z"})
    assert past.status_code == 400 and past.json()["error"]["target"] == "expiry"
    both = await arm.call("POST", generate, body={"tokenId": token.json()["id"]})
    assert both.status_code == 200 and [p["name"] for p in both.json()["passwords"]] == ["password1", "password2"]
    listed = await arm.call("GET", f"{base}/tokens/bot01")
    assert "value" not in str(listed.json()["properties"]["credentials"])  # never shown again
    in_use = await arm.call("DELETE", f"{base}/scopeMaps/readmap")
    assert in_use.status_code == 400 and "bot01" in in_use.json()["error"]["message"]
    # the resource group's Contributor may; a stranger may not
    assert (await arm.call("GET", f"{base}/tokens", arm.group_contributor)).status_code == 200
    assert (await arm.call("GET", f"{base}/tokens", arm.stranger)).status_code == 403
    assert (await arm.call("POST", generate, arm.stranger, body={"tokenId": token.json()["id"]})).status_code == 403
    async with httpx.AsyncClient(timeout=30) as http:
        anonymous = await http.post(arm.devhost.url + generate, params=API, json={"tokenId": token.json()["id"]})
    assert anonymous.status_code == 401


async def test_roles_at_the_subscription_reach_the_data_plane_of_its_registries(arm: Arm) -> None:
    """Azure role assignments are inherited: the subscription's Owner may push to a registry made there,
    through ACR's Entra exchange; a stranger may not, and a role elsewhere reaches nothing."""
    name = unique_registry_name()
    assert (await arm.call("PUT", arm.path(name), body=_create_body())).status_code == 201
    port = arm.devhost.host.rsplit(":", 1)[1]
    host = {"Host": f"{name}.azurecr.localhost:{port}"}
    service = f"{name}.azurecr.localhost"

    async def push_scope_granted(principal: str) -> list[str]:
        async with httpx.AsyncClient(base_url=arm.devhost.url, timeout=30) as http:
            exchange = await http.post(
                "/oauth2/exchange",
                headers=host,
                data={"grant_type": "access_token", "service": service, "access_token": arm.issuer.token(principal)},
            )
            if exchange.status_code != 200:
                return []
            token = await http.post(
                "/oauth2/token",
                headers=host,
                data={
                    "grant_type": "refresh_token",
                    "service": service,
                    "refresh_token": exchange.json()["refresh_token"],
                    "scope": "repository:team/app:pull,push",
                },
            )
            assert token.status_code == 200, token.text
            import jwt

            claims = jwt.decode(token.json()["access_token"], options={"verify_signature": False})
            return sorted(action for grant in claims["access"] for action in grant["actions"])

    assert await push_scope_granted(arm.owner) == ["pull", "push"]
    assert await push_scope_granted(arm.group_contributor) == ["pull", "push"]
    assert await push_scope_granted(arm.stranger) == []


async def test_list_usages_counts_the_bytes_stored_once_however_many_repositories_link_them(
    arm: Arm, stores: Stores
) -> None:
    name = unique_registry_name()
    assert (await arm.call("PUT", arm.path(name), body=_create_body("Basic"))).status_code == 201
    await update_registry(stores.metadata, name, auth_disabled=True)  # the pushes below need no credentials
    port = arm.devhost.host.rsplit(":", 1)[1]
    layer, config = os.urandom(300_000), os.urandom(1_000)
    async with httpx.AsyncClient(
        base_url=arm.devhost.url, headers={"Host": f"{name}.azurecr.localhost:{port}"}, timeout=60
    ) as http:
        for repository, data in (("team/a", layer), ("team/b", layer), ("team/b", config)):
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            reply = await http.post(f"/v2/{repository}/blobs/uploads/", params={"digest": digest}, content=data)
            assert reply.status_code == 201, reply.text
        chunked = os.urandom(2_500_000)  # a session upload in two chunks, and its bytes counted once too
        start = await http.post("/v2/team/c/blobs/uploads/")
        location = start.headers["Location"]
        first = await http.patch(location, content=chunked[:1_500_000], headers={"Content-Range": "0-1499999"})
        digest = "sha256:" + hashlib.sha256(chunked).hexdigest()
        done = await http.put(
            first.headers["Location"],
            params={"digest": digest},
            content=chunked[1_500_000:],
            headers={"Content-Range": f"1500000-{len(chunked) - 1}"},
        )
        assert done.status_code == 201, done.text
    usages = {u["name"]: u for u in (await arm.call("GET", arm.path(name) + "/listUsages")).json()["value"]}
    assert usages["Size"] == {
        "name": "Size",
        "limit": 10 * 2**30,
        "currentValue": len(layer) + len(config) + len(chunked),
        "unit": "Bytes",
    }
