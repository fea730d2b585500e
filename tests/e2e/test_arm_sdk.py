"""Registries through the official management SDK (`azure-mgmt-containerregistry` 15.0.0) against the
devhost's ARM-shaped API: create, read, list, update the tier and policies, usages, name checks, admin
credentials, a webhook on the new registry, delete; signed in as a subscription Owner with an Entra token
from the test's issuer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry import models as m

from tests.conftest import Devhost
from tests.entra_issuer import IssuerCredential, TestIssuer
from tests.integration.conftest import make_subscription_owner

HTTP = {"enforce_https": False, "polling_interval": 0}
CALL = {"enforce_https": False}


@pytest.fixture
def arm(registry_url: str, devhost: Devhost, entra_issuer: TestIssuer) -> Iterator[ContainerRegistryManagementClient]:
    subscription, owner = str(uuid.uuid4()), str(uuid.uuid4())
    asyncio.run(make_subscription_owner(devhost.env, subscription, owner, entra_issuer.tenant))
    client = ContainerRegistryManagementClient(
        IssuerCredential(entra_issuer, owner),  # type: ignore[arg-type]
        subscription,
        base_url=registry_url,
    )
    with client:
        yield client


def test_the_management_sdk_drives_a_registry_from_creation_to_deletion(
    arm: ContainerRegistryManagementClient, registry_url: str
) -> None:
    group, name = "sdk-rg", "sdk" + uuid.uuid4().hex[:12]
    created = arm.registries.begin_create(
        group,
        name,
        m.Registry(location="westeurope", sku=m.Sku(name="Standard"), admin_user_enabled=True, tags={"env": "e2e"}),
        **HTTP,
    ).result()
    assert created.name == name and created.provisioning_state == "Succeeded"
    assert created.sku.name == "Standard" and created.login_server == f"{name}.azurecr.localhost"
    group_id = f"/subscriptions/{arm._config.subscription_id}/resourceGroups/{group}"
    assert created.id == f"{group_id}/providers/Microsoft.ContainerRegistry/registries/{name}"

    assert arm.registries.get(group, name, **CALL).admin_user_enabled is True
    assert name in {r.name for r in arm.registries.list_by_resource_group(group, **CALL)}
    assert name in {r.name for r in arm.registries.list(**CALL)}

    taken = arm.registries.check_name_availability(m.RegistryNameCheckRequest(name=name), **CALL)
    assert taken.name_available is False and taken.reason == "AlreadyExists"

    updated = arm.registries.begin_update(
        group,
        name,
        m.RegistryUpdateParameters(
            sku=m.Sku(name="Premium"),
            tags={"env": "e2e", "tier": "premium"},
            policies=m.Policies(retention_policy=m.RetentionPolicy(days=30, status="enabled")),
        ),
        **HTTP,
    ).result()
    assert updated.sku.name == "Premium" and updated.tags["tier"] == "premium"
    assert updated.policies.retention_policy.days == 30 and updated.policies.retention_policy.status == "enabled"

    usages = {u.name: u for u in arm.registries.list_usages(group, name, **CALL).value}
    assert usages["Webhooks"].limit == 500 and usages["Webhooks"].current_value == 0

    credentials = arm.registries.regenerate_credential(
        group, name, m.RegenerateCredentialParameters(name="password2"), **CALL
    )
    assert credentials.username == name
    assert [p.name for p in credentials.passwords] == ["password", "password2"]
    assert credentials.passwords[1].value and credentials.passwords[0].value is None  # hashed: shown once

    hook = arm.webhooks.begin_create(
        group,
        name,
        "sdkhook1",
        {"location": "westeurope", "properties": {"serviceUri": "https://hooks.example/acr", "actions": ["push"]}},
        **HTTP,
    ).result()
    assert hook.name == "sdkhook1"
    with pytest.raises(HttpResponseError) as too_small:  # 1 webhook fits Basic; a retention policy does not
        arm.registries.begin_update(group, name, m.RegistryUpdateParameters(sku=m.Sku(name="Basic")), **HTTP).result()
    assert too_small.value.status_code == 400

    # repository-scoped permissions: a scope map, a token on it, a password made for it, used on /v2/
    scope_map = arm.scope_maps.begin_create(
        group, name, "cimap", m.ScopeMap(actions=["repositories/samples/content/read"], description="ci"), **HTTP
    ).result()
    assert scope_map.properties.type == "UserDefined" and scope_map.actions == ["repositories/samples/content/read"]
    assert {"_repositories_pull", "cimap"} <= {s.name for s in arm.scope_maps.list(group, name, **CALL)}
    token = arm.tokens.begin_create(group, name, "cibot", m.Token(scope_map_id=scope_map.id), **HTTP).result()
    assert token.status == "enabled" and token.scope_map_id == scope_map.id and not token.credentials.passwords
    generated = arm.registries.begin_generate_credentials(
        group, name, m.GenerateCredentialsParameters(token_id=token.id, name="password1"), **HTTP
    ).result()
    assert generated.username == "cibot" and generated.passwords[0].value
    port = registry_url.rsplit(":", 1)[1]
    reply = httpx.get(
        f"{registry_url}/oauth2/token",
        params={"service": f"{name}.azurecr.localhost", "scope": "repository:samples:pull"},
        headers={"Host": f"{name}.azurecr.localhost:{port}"},
        auth=("cibot", generated.passwords[0].value),
    )
    assert reply.status_code == 200, reply.text
    disabled = arm.tokens.begin_update(
        group, name, "cibot", m.TokenUpdateParameters(status="disabled"), **HTTP
    ).result()
    assert disabled.status == "disabled"
    arm.tokens.begin_delete(group, name, "cibot", **HTTP).result()
    arm.scope_maps.begin_delete(group, name, "cimap", **HTTP).result()
    assert "cibot" not in {t.name for t in arm.tokens.list(group, name, **CALL)}

    arm.registries.begin_delete(group, name, **HTTP).result()
    with pytest.raises(ResourceNotFoundError):
        arm.registries.get(group, name, **CALL)
    assert arm.registries.check_name_availability(m.RegistryNameCheckRequest(name=name), **CALL).name_available
