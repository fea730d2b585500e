"""External scanners through Harbor's pluggable scanner adapter API (v1.1/v1.2), configured per registry.

    policies.externalScanner = {"status": "enabled", "url": "https://trivy-adapter.example:8080",
                                "registryUrl": "https://myregistry.azurecr.io"}   (registryUrl optional)

After our own scan of an image, the adapter is asked to scan it too:

    GET  {url}/api/v1/metadata                      the adapter's name, vendor, version, capabilities
    POST {url}/api/v1/scan                          {registry: {url, authorization}, artifact: {repository,
                                                     digest, tag?, mime_type}, enabled_capabilities?}
                                                     -> 202 {id}
    GET  {url}/api/v1/scan/{id}/report              Accept: application/vnd.security.vulnerability.report;
                                                     version=1.1 -> 200 the report, or 302 with Refresh-After
                                                     (seconds) while the scan runs

The adapter pulls the image itself from `registryUrl` (default: the login server over https) with the
`authorization` we give it: a short-lived bearer token for pull (and quarantine read) of that one
repository. Its findings join ours in the image's report (each marked with the adapter's name), so the
counts, the quarantine decision and the vulnerability policy see both.

The adapter's address is chosen by the registry's owner, so the request must not become a way into the
service's network: every address it resolves to is checked as webhook targets are (private, loopback and
link-local refused unless `external_scanner_allow_private_targets`), redirects are never followed (a 302
is only ever read as "not ready"), and answers are read up to a size limit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from services.scanning.advisories import Finding
from services.scanning.inventory import Package
from services.webhooks import rules
from services.webhooks.delivery import CheckedResolver, TargetRefused

EXTERNAL_SCANNER = "externalScanner"
VULNERABILITY_REPORT = "application/vnd.security.vulnerability.report; version=1.1"
SCANNER_ADAPTER_API = "application/vnd.scanner.adapter.scan.request+json; version=1.0"
MAX_ANSWER_BYTES = 32 * 1024 * 1024
MAX_REFRESH_SECONDS = 30.0
HARBOR_SEVERITIES = {
    "critical": "CRITICAL",
    "high": "HIGH",
    "medium": "MEDIUM",
    "low": "LOW",
    "negligible": "LOW",
    "unknown": "UNKNOWN",
    "none": "UNKNOWN",
}


class ExternalScannerError(Exception):
    """The adapter could not be reached, refused, or answered something that is not the API's."""


@dataclass(frozen=True, slots=True)
class ExternalScanner:
    url: str
    registry_url: str | None = None


def external_scanner(policies: dict[str, Any]) -> ExternalScanner | None:
    policy = policies.get(EXTERNAL_SCANNER) or {}
    if policy.get("status") != "enabled" or not isinstance(policy.get("url"), str):
        return None
    registry_url = policy.get("registryUrl")
    return ExternalScanner(policy["url"].rstrip("/"), registry_url if isinstance(registry_url, str) else None)


def check_external_scanner_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """Validate the policy as the control plane stores it (ValueError naming the field)."""
    for field in ("url", "registryUrl"):
        value = policy.get(field)
        if value is None and field == "registryUrl":
            continue
        if not isinstance(value, str):
            raise ValueError(f"{field} must be an http(s) URL without credentials")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            raise ValueError(f"{field} must be an http(s) URL without credentials")
        if len(value) > 2048 or parts.query or parts.fragment:
            raise ValueError(f"{field} must be a plain URL (no query or fragment, at most 2048 characters)")
    return policy


def harbor_findings(report: Any, scanner_name: str) -> list[Finding]:
    """The findings of a Harbor vulnerability report (version 1.1), marked with the adapter's name."""
    if not isinstance(report, dict) or not isinstance(report.get("vulnerabilities"), list):
        raise ExternalScannerError("the adapter's report has no vulnerabilities list")
    findings = []
    for item in report["vulnerabilities"][:100_000]:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        package = Package(
            f"external:{scanner_name}", str(item.get("package", "")), str(item.get("version", "")), "generic"
        )
        severity = HARBOR_SEVERITIES.get(str(item.get("severity", "unknown")).lower(), "UNKNOWN")
        fixed = item.get("fix_version")
        summary = str(item.get("description") or "")[:300]
        findings.append(Finding(item["id"][:200], package, severity, str(fixed) if fixed else None, (), summary))
    return findings


class HarborAdapterClient:
    """One adapter's API, over a connection whose every address is checked."""

    def __init__(self, base_url: str, allow_private: bool, timeout_seconds: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._allow_private = allow_private
        self._timeout = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HarborAdapterClient:
        host = urlsplit(self.base_url).hostname or ""
        try:  # a literal address never reaches the resolver: check it here
            if not self._allow_private and rules.address_refused(str(ipaddress.ip_address(host))):
                raise ExternalScannerError(f"the adapter's address {host} is private or local (refused)")
        except ValueError:
            pass
        resolver = CheckedResolver(aiohttp.ThreadedResolver(), self._allow_private)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            trust_env=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
        assert self._session is not None
        try:
            async with self._session.request(method, self.base_url + path, allow_redirects=False, **kwargs) as response:
                data = await response.content.read(MAX_ANSWER_BYTES + 1)
                if len(data) > MAX_ANSWER_BYTES:
                    raise ExternalScannerError(f"the adapter's answer to {path} is larger than {MAX_ANSWER_BYTES}")
                body: Any = None
                if data and "json" in response.headers.get("Content-Type", ""):
                    try:
                        body = json.loads(data)
                    except ValueError:
                        raise ExternalScannerError(f"the adapter's answer to {path} is not JSON") from None
                return response.status, dict(response.headers), body
        except (aiohttp.ClientError, TimeoutError, TargetRefused) as exc:
            raise ExternalScannerError(f"the adapter did not answer {method} {path}: {exc}") from None

    async def metadata(self) -> dict[str, Any]:
        status, _, body = await self._request("GET", "/api/v1/metadata", headers={"Accept": "application/json"})
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("scanner"), dict):
            raise ExternalScannerError(f"GET /api/v1/metadata answered {status}")
        return body

    async def scan(self, registry_url: str, authorization: str, repository: str, digest: str, mime_type: str) -> str:
        request = {
            "registry": {"url": registry_url, "authorization": authorization},
            "artifact": {"repository": repository, "digest": digest, "mime_type": mime_type},
            "enabled_capabilities": [{"type": "vulnerability", "produces_mime_types": [VULNERABILITY_REPORT]}],
        }
        headers = {"Content-Type": SCANNER_ADAPTER_API, "Accept": "application/json"}
        status, _, body = await self._request("POST", "/api/v1/scan", json=request, headers=headers)
        if status != 202 or not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise ExternalScannerError(f"POST /api/v1/scan answered {status}")
        return str(body["id"])

    async def report(self, scan_id: str, deadline: float) -> Any:
        """The report, polling while the adapter answers 302 with Refresh-After (until `deadline`)."""
        path = f"/api/v1/scan/{scan_id}/report"
        if not scan_id.replace("-", "").isalnum() or len(scan_id) > 200:
            raise ExternalScannerError("the adapter's scan id is not a plain identifier")
        while True:
            status, headers, body = await self._request("GET", path, headers={"Accept": VULNERABILITY_REPORT})
            if status == 200:
                return body
            if status != 302:
                raise ExternalScannerError(f"GET {path} answered {status}")
            try:
                wait = float(headers.get("Refresh-After", "1"))
            except ValueError:
                wait = 1.0
            wait = min(max(wait, 0.1), MAX_REFRESH_SECONDS)
            if time.monotonic() + wait > deadline:
                raise ExternalScannerError("the adapter's scan did not finish in time")
            await asyncio.sleep(wait)
