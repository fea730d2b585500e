"""The devhost as a front end: what an attacker on the network can do to it (issue 8).

The session's `devhost` serves the client-address test; `limited` is a devhost of this module's own with
short timeouts and one upload at a time, so the limits can be reached quickly. Connections are raw
sockets where the attack needs bytes no HTTP client would send.
"""

from __future__ import annotations

import httpx

from services.management.access import enable_admin_user, update_registry
from services.management.registries import create_registry
from tests.conftest import Devhost
from tests.integration.conftest import Stores, unique_registry_name


async def test_x_forwarded_for_from_loopback_does_not_pass_ip_rules(devhost: Devhost, stores: Stores) -> None:
    """uvicorn's proxy_headers would take 127.0.0.1 as a proxy and make X-Forwarded-For the client address;
    only TRUSTED_PROXIES (empty on this devhost) may make the app believe that header."""
    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name, "Premium")
    password = (await enable_admin_user(stores.metadata, name))[0].value
    await update_registry(stores.metadata, name, default_action="Deny", allow_ips=["10.0.0.0/8"])
    port = devhost.host.rsplit(":", 1)[1]
    async with httpx.AsyncClient(base_url=devhost.url, headers={"Host": f"{name}.azurecr.localhost:{port}"}) as http:
        forged = await http.get("/v2/", auth=(name, password), headers={"X-Forwarded-For": "10.1.2.3"})
        assert forged.status_code == 403
        assert forged.json()["errors"][0]["message"] == "client with IP '127.0.0.1' is not allowed access"
        real_ip = await http.get("/v2/", auth=(name, password), headers={"X-Real-IP": "10.1.2.3"})
        assert real_ip.status_code == 403
