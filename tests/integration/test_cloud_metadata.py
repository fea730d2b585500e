"""The cloud metadata document (`GET /metadata/endpoints`) over HTTP against the devhost: the fields
`az cloud register --endpoint-resource-manager` reads (azure-cli's `_arm_to_cli_mapper`), both shapes ARM
serves (one cloud from api-version 2022-09-01 on, a list before), and that the ACR login-server suffix it
announces reaches this devhost's registries. The real az CLI against it is tests/e2e/test_az_cli.py.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Devhost
from tests.integration.conftest import RegistryClient

pytestmark = pytest.mark.integration


def _port(devhost: Devhost) -> int:
    return int(devhost.host.rsplit(":", 1)[1])


def test_metadata_for_az_cloud_register_is_public_and_complete(devhost: Devhost) -> None:
    # What az sends: no credentials, api-version 2022-09-01, an object back.
    answer = httpx.get(f"{devhost.url}/metadata/endpoints", params={"api-version": "2022-09-01"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    cloud = answer.json()
    assert isinstance(cloud, dict)
    # The fields az requires (a KeyError in az otherwise) ...
    assert cloud["name"]
    assert cloud["authentication"]["loginEndpoint"] == "https://login.microsoftonline.com"
    # ... the first audience becomes az's management token resource: one the management API accepts.
    assert cloud["authentication"]["audiences"][0] == "https://management.core.windows.net/"
    assert "https://management.azure.com/" in cloud["authentication"]["audiences"]
    # ... and the ones it reads if present: ARM is where the caller reached us; login servers are
    # `<name>.<registry domain>:<port>` (az prepends the dot and refuses any other suffix).
    assert cloud["resourceManager"] == f"{devhost.url}/"
    assert cloud["suffixes"]["acrLoginServer"] == f"azurecr.localhost:{_port(devhost)}"


def test_older_api_versions_get_a_list_of_clouds(devhost: Devhost) -> None:
    for version in ("2019-05-01", "2018-01-01", "2020-06-01-preview"):
        answer = httpx.get(f"{devhost.url}/metadata/endpoints", params={"api-version": version}, timeout=30)
        assert answer.status_code == 200, (version, answer.text)
        clouds = answer.json()
        assert isinstance(clouds, list) and len(clouds) == 1, version
        assert clouds[0]["suffixes"]["acrLoginServer"] == f"azurecr.localhost:{_port(devhost)}"
    for newer in ("2022-09-01", "2024-01-01", ""):
        params = {"api-version": newer} if newer else {}
        answer = httpx.get(f"{devhost.url}/metadata/endpoints", params=params, timeout=30)
        assert isinstance(answer.json(), dict), newer


def test_the_announced_login_server_reaches_the_registry(devhost: Devhost, registry: RegistryClient) -> None:
    cloud = httpx.get(f"{devhost.url}/metadata/endpoints?api-version=2022-09-01", timeout=30).json()
    login_server = f"{registry.name}.{cloud['suffixes']['acrLoginServer']}"
    assert login_server == registry.login_server
    # az's first data-plane request: GET https://<login server>/v2/ (here by Host header over http).
    answer = httpx.get(f"{devhost.url}/v2/", headers={"Host": login_server}, timeout=30)
    assert answer.status_code == 200, answer.text
