"""Network rules and request-rate limits against devhosts sharing one store.

Two devhost processes serve the same emulators (as two Function instances would), with small limits
(`RATE_LIMIT_SCALE`) and 127.0.0.1 as a trusted proxy, so `X-Forwarded-For` decides the client address.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from services.management.access import AccessError, enable_admin_user, regenerate_admin_password, update_registry
from services.management.registries import create_registry
from tests.conftest import Devhost, running_devhost
from tests.integration.conftest import Stores, basic, unique_registry_name

SCALE = 0.005  # Basic: write 10/min per registry, 5/min per identity; read 50 / 25


@pytest.fixture(scope="module")
def limited(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devhost, Devhost]]:
    env = stack | {"RATE_LIMIT_SCALE": str(SCALE), "TRUSTED_PROXIES": "127.0.0.1"}
    folder = tmp_path_factory.mktemp("limited")
    with running_devhost(env, folder) as first, running_devhost(env, folder) as second:
        yield first, second


async def _registry(stores: Stores, sku: str) -> tuple[str, str]:
    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name, sku)  # type: ignore[arg-type]
    admin = await enable_admin_user(stores.metadata, name)
    return name, admin[0].value


def _client(devhost: Devhost, name: str) -> httpx.Client:
    port = devhost.host.rsplit(":", 1)[1]
    return httpx.Client(base_url=devhost.url, headers={"Host": f"{name}.azurecr.localhost:{port}"}, timeout=30)


async def test_network_rules_deny_before_authentication(limited: tuple[Devhost, Devhost], stores: Stores) -> None:
    name, password = await _registry(stores, "Premium")
    await update_registry(stores.metadata, name, default_action="Deny", allow_ips=["10.0.0.0/8", "2001:db8::/32"])
    with _client(limited[0], name) as http:
        refused = http.get("/v2/", headers=basic(name, password) | {"X-Forwarded-For": "192.0.2.7"})
        assert refused.status_code == 403
        assert refused.json()["errors"][0] == {
            "code": "DENIED",
            "message": "client with IP '192.0.2.7' is not allowed access",
        }
        # Before authentication: no challenge, and wrong credentials learn nothing more.
        assert "WWW-Authenticate" not in refused.headers
        assert http.get("/v2/", headers={"X-Forwarded-For": "192.0.2.7"}).status_code == 403
        assert (
            http.get("/oauth2/token", headers=basic(name, password) | {"X-Forwarded-For": "192.0.2.7"}).status_code
            == 403
        )
        assert http.get("/v2/", headers=basic(name, password) | {"X-Forwarded-For": "10.1.2.3"}).status_code == 200
        assert http.get("/v2/", headers=basic(name, password) | {"X-Forwarded-For": "2001:db8::42"}).status_code == 200
        # A forged hop left of the proxy's own entry is not believed.
        forged = http.get("/v2/", headers=basic(name, password) | {"X-Forwarded-For": "10.1.2.3, 192.0.2.7"})
        assert forged.status_code == 403
        # The direct peer (127.0.0.1, no X-Forwarded-For) is not in the allow list either.
        assert http.get("/v2/", headers=basic(name, password)).status_code == 403


async def test_network_rules_are_premium_only(stores: Stores) -> None:
    name, _ = await _registry(stores, "Standard")
    with pytest.raises(AccessError, match="Premium"):
        await update_registry(stores.metadata, name, default_action="Deny")
    premium, _ = await _registry(stores, "Premium")
    with pytest.raises(AccessError):
        await update_registry(stores.metadata, premium, allow_ips=["not-an-ip"])


async def test_rate_limit_is_shared_by_instances_and_by_admin_callers(
    limited: tuple[Devhost, Devhost], stores: Stores
) -> None:
    name, password1 = await _registry(stores, "Basic")
    password2 = (await regenerate_admin_password(stores.metadata, name, "password2")).value
    admitted, refusals = 0, []
    with _client(limited[0], name) as one, _client(limited[1], name) as two:
        # Writes of the admin user (one identity bucket: 5/min), alternating instances and passwords.
        for i in range(12):
            http, password = (one, password1) if i % 2 == 0 else (two, password2)
            reply = http.post("/v2/limits/blobs/uploads/", headers=basic(name, password))
            if reply.status_code == 202:
                admitted += 1
            else:
                assert reply.status_code == 429, reply.text
                assert reply.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
                refusals.append(int(reply.headers["Retry-After"]))
        assert admitted == 5  # never more than the limit, across both instances
        assert refusals and all(1 <= r <= 13 for r in refusals)  # a token comes back every 12 s
        # Reads are another bucket: still fine.
        assert one.get("/v2/limits/tags/list", headers=basic(name, password1)).status_code == 404


async def test_anonymous_callers_share_one_bucket(limited: tuple[Devhost, Devhost], stores: Stores) -> None:
    name, _ = await _registry(stores, "Standard")
    await update_registry(stores.metadata, name, anonymous_pull=True)
    statuses = []
    with _client(limited[0], name) as one, _client(limited[1], name) as two:
        for i in range(30):  # 25/min per identity for reads at this scale
            http = one if i % 2 == 0 else two
            statuses.append(
                http.get(f"/v2/anon{i % 3}/tags/list", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
            )
    assert statuses.count(404) == 25 and statuses.count(429) == 5
