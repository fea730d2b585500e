"""The cloud metadata document, `GET /metadata/endpoints?api-version=...`, as Azure Resource Manager serves it.

`az cloud register --name N --endpoint-resource-manager URL` GETs `URL/metadata/endpoints?api-version=
2022-09-01` and maps it field by field (azure-cli's `azure/cli/core/cloud.py` `_arm_to_cli_mapper`): it
requires `name`, `authentication.loginEndpoint` and `authentication.audiences[0]`; every other field is read
only if present. `az acr` then builds login servers as `<registry><suffixes.acrLoginServer>` and refuses any
other suffix, so that suffix is ours: the registry domain, with the port the caller reached us on when it is
not the scheme's default (the devhost serves the registries on the same address as this API, and a login
server without the port would point at 443). Like ARM's, the suffixes carry no leading dot (az adds it).

From api-version 2022-09-01 on ARM answers with the one cloud it belongs to (an object); older versions
answer with a list of clouds (what azure-cli's `ARM_CLOUD_METADATA_URL` reads), so both shapes are served.
Public and anonymous, as in Azure: it holds only public addresses.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from services.platform.settings import Settings

CLOUD_NAME = "AcrServerless"
# The api-version from which ARM answers with one object rather than a list (what az 2.x asks for).
SINGLE_CLOUD_API_VERSION = "2022-09-01"
# Management tokens still come from Microsoft Entra ID: the management API accepts these audiences
# (services/management/authorization.py MANAGEMENT_AUDIENCES), the first being what az asks tokens for.
LOGIN_ENDPOINT = "https://login.microsoftonline.com"
AUDIENCES = ["https://management.core.windows.net/", "https://management.azure.com/"]
DEFAULT_PORTS = {"http": 80, "https": 443}


def acr_login_server_suffix(settings: Settings, base_url: str) -> str:
    """`<registry_domain>[:port]`: the port of `base_url` when it is not its scheme's default, unless the
    configured domain names a port itself."""
    domain = settings.registry_domain
    parts = urlsplit(base_url)
    if ":" in domain or parts.port is None or parts.port == DEFAULT_PORTS.get(parts.scheme):
        return domain
    return f"{domain}:{parts.port}"


def cloud_metadata(settings: Settings, base_url: str) -> dict[str, Any]:
    """The metadata of this cloud, for a caller that reached the API at `base_url` (scheme://host[:port])."""
    resource_manager = base_url.rstrip("/") + "/"
    return {
        "name": CLOUD_NAME,
        "resourceManager": resource_manager,
        "authentication": {
            "loginEndpoint": LOGIN_ENDPOINT,
            "audiences": list(AUDIENCES),
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "suffixes": {"acrLoginServer": acr_login_server_suffix(settings, base_url)},
    }


def metadata_response(settings: Settings, base_url: str, api_version: str | None) -> dict[str, Any] | list[Any]:
    """The document for `api_version`: one cloud from 2022-09-01 on (and when none is given), else a list.

    api-versions are dates (YYYY-MM-DD, maybe with a `-preview` suffix), so comparing the strings compares
    the dates."""
    cloud = cloud_metadata(settings, base_url)
    if api_version and api_version[:10] < SINGLE_CLOUD_API_VERSION:
        return [cloud]
    return cloud
