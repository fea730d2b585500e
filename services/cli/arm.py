"""The management API as `acr` calls it: ARM's paths, `api-version`, `nextLink` paging and long-running
operations (`Azure-AsyncOperation` polled until Succeeded, Failed or Canceled).

Only HTTP: the same requests `az` or the management SDK make, with the Entra token of the profile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from services.cli.config import TokenSource
from services.cli.errors import CliError, ExitCode
from services.cli.progress import Report
from services.cli.transport import api_error, json_of, send

API_VERSION = "2025-11-01"  # the one azure-mgmt-containerregistry 15.0.0 speaks, as the service does
PROVIDER = "Microsoft.ContainerRegistry"
TERMINAL = frozenset({"Succeeded", "Failed", "Canceled"})
LRO_SECONDS = 30 * 60
MAX_PAGES = 1000  # a nextLink loop would otherwise never end


@dataclass(frozen=True)
class RegistryRef:
    """A registry found through ARM: its resource group (from its id) and its resource."""

    name: str
    resource_group: str
    resource: dict[str, Any]

    @property
    def login_server(self) -> str:
        return str(self.resource.get("properties", {}).get("loginServer", ""))

    @property
    def location(self) -> str:
        return str(self.resource.get("location", ""))


def resource_group_of(resource_id: str) -> str:
    parts = resource_id.split("/")
    lowered = [part.lower() for part in parts]
    return parts[lowered.index("resourcegroups") + 1] if "resourcegroups" in lowered else ""


class ArmClient:
    def __init__(self, http: httpx.Client, endpoint: str, subscription: str, token: TokenSource) -> None:
        self.http, self.endpoint, self.subscription, self.token = http, endpoint.rstrip("/"), subscription, token

    # --- paths -------------------------------------------------------------------------------------------
    def provider_path(self) -> str:
        return f"/subscriptions/{quote(self.subscription, safe='')}/providers/{PROVIDER}"

    def registries_path(self, resource_group: str) -> str:
        subscription, group = quote(self.subscription, safe=""), quote(resource_group, safe="")
        return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{PROVIDER}/registries"

    def registry_path(self, resource_group: str, name: str, *child: str) -> str:
        parts = [self.registries_path(resource_group), name, *child]
        return "/".join(quote(part, safe="") if i else part for i, part in enumerate(parts))

    # --- calls -------------------------------------------------------------------------------------------
    def call(self, method: str, path_or_url: str, body: Any = None) -> httpx.Response:
        """One request; an error answer raises (its ARM code and message, the status's exit code)."""
        url = path_or_url if "://" in path_or_url else self.endpoint + path_or_url
        if "api-version=" not in url:
            url += ("&" if "?" in url else "?") + f"api-version={API_VERSION}"
        headers = {"Authorization": f"Bearer {self.token.get()}"}
        response = send(self.http, method, url, headers=headers, json=body)
        if response.status_code >= 400:
            raise api_error(response)
        return response

    def json(self, method: str, path: str, body: Any = None) -> Any:
        return json_of(self.call(method, path, body))

    def list(self, path: str, method: str = "GET") -> list[Any]:
        """Every item of a list, following `nextLink` page after page (a POST list, such as a webhook's
        listEvents, is POSTed first; its next pages are read with GET, as the SDK does)."""
        items: list[Any] = []
        url: str | None = path
        for _ in range(MAX_PAGES):
            if url is None:
                return items
            page = json_of(self.call(method, url)) or {}
            method = "GET"
            items.extend(page.get("value", []))
            next_link = page.get("nextLink")
            url = next_link if isinstance(next_link, str) and next_link else None
        return items

    def long_running(self, method: str, path: str, body: Any, report: Report, *, wait: bool = True) -> Any:
        """A PUT, PATCH or DELETE that ARM may finish later: its final resource (None for a delete).

        The status URL is polled while the operation runs, at the pace its Retry-After asks, and each
        status's `properties.progress` (what a registry delete has removed so far) goes to `report`.
        """
        response = self.call(method, path, body)
        if response.status_code == 204:
            return None  # ARM's answer to deleting what is not there: nothing to wait for
        resource = json_of(response)
        state = (resource or {}).get("properties", {}).get("provisioningState") if isinstance(resource, dict) else None
        status_url = response.headers.get("Azure-AsyncOperation") or response.headers.get("Location")
        if wait and status_url and state not in TERMINAL:
            self._poll(status_url, _retry_after(response), report)
            if method != "DELETE":
                resource = self.json("GET", path)
        return None if method == "DELETE" else resource

    def _poll(self, url: str, delay: float, report: Report) -> None:
        deadline = time.monotonic() + LRO_SECONDS
        while time.monotonic() < deadline:
            time.sleep(delay)
            response = self.call("GET", url)
            delay = _retry_after(response)
            status = json_of(response) if response.status_code == 200 and response.content else None
            if not isinstance(status, dict):  # the Location style: 202 while it runs, 200 once done
                if response.status_code == 202:
                    continue
                return
            report(_progress_text(status.get("properties", {}).get("progress")))
            state = status.get("status")
            if state == "Succeeded":
                return
            if state in TERMINAL:
                error = status.get("error") or {}
                raise CliError(
                    ExitCode.UNAVAILABLE,
                    str(error.get("message") or f"the operation ended {state}"),
                    str(error.get("code") or f"Operation{state}"),
                )
        raise CliError(ExitCode.UNAVAILABLE, f"the operation is still running after {LRO_SECONDS // 60} minutes: {url}")

    # --- registries --------------------------------------------------------------------------------------
    def find_registry(self, name: str, resource_group: str | None, default_group: str | None) -> RegistryRef:
        """The registry called `name`: in the resource group given, else the configured default group, else
        wherever it is in the subscription (as `az acr` finds a registry by name alone)."""
        name = name.lower()
        for group in (resource_group, default_group):
            if not group:
                continue
            try:
                return RegistryRef(name, group, self.json("GET", self.registry_path(group, name)))
            except CliError as error:
                # Only a group the user named is final: the configured default may simply be the wrong
                # group (404) or one they have no role in (403), and the search below settles it.
                if resource_group or error.exit_code not in (ExitCode.NOT_FOUND, ExitCode.AUTH):
                    raise
        for resource in self.list(f"{self.provider_path()}/registries"):
            if isinstance(resource, dict) and str(resource.get("name", "")).lower() == name:
                return RegistryRef(name, resource_group_of(str(resource.get("id", ""))), resource)
        raise CliError(
            ExitCode.NOT_FOUND,
            f"The registry '{name}' was not found in subscription '{self.subscription}'.",
            "ResourceNotFound",
        )


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("Retry-After", "")
    seconds = float(value) if value.replace(".", "", 1).isdigit() else 1.0
    return min(max(seconds, 0.2), 10.0)  # neither hammer the service nor sit idle on a large hint


def _progress_text(progress: Any) -> str:
    if not isinstance(progress, dict) or not progress:
        return ""
    return "(" + ", ".join(f"{value} {key}" for key, value in progress.items()) + " removed)"
