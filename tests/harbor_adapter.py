"""A scanner adapter following Harbor's pluggable scanner API v1.1/v1.2, for the external-scanner tests.

It answers `GET /api/v1/metadata`, accepts `POST /api/v1/scan` (202 with an id) and then pulls the image's
manifest from the registry the request names, with the authorization it carries, as a real adapter does;
`GET /api/v1/scan/{id}/report` answers `302` with `Refresh-After` the first time (still scanning) and the
report (`application/vnd.security.vulnerability.report; version=1.1`) after. `registry_address` is where
it connects for any registry URL (the tests' registries have names that do not resolve here), sending the
URL's host as `Host`.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx

REPORT_TYPE = "application/vnd.security.vulnerability.report; version=1.1"
VULNERABILITIES = [
    {
        "id": "CVE-2099-0001",
        "package": "libdemo",
        "version": "1.0",
        "fix_version": "1.1",
        "severity": "Critical",
        "description": "a vulnerability only the external scanner knows",
        "links": ["https://example.invalid/CVE-2099-0001"],
    },
    {"id": "CVE-2099-0002", "package": "libother", "version": "2.0", "severity": "Negligible"},
]


@dataclass
class Job:
    request: dict[str, Any]
    pulled: int | None = None  # the status of the adapter's own pull of the manifest
    polls: int = 0


@dataclass
class HarborTestAdapter:
    registry_address: str
    fail_with: int | None = None  # answer every request with this status (a broken adapter)
    jobs: dict[str, Job] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _pull(self, job: Job) -> None:
        registry, artifact = job.request["registry"], job.request["artifact"]
        target = urlsplit(registry["url"])
        response = httpx.get(
            f"{self.registry_address}/v2/{artifact['repository']}/manifests/{artifact['digest']}",
            headers={
                "Host": target.netloc,
                "Authorization": registry["authorization"],
                "Accept": artifact["mime_type"],
            },
            timeout=30,
        )
        job.pulled = response.status_code

    def __enter__(self) -> HarborTestAdapter:
        adapter = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if adapter.fail_with:
                    return self._send(adapter.fail_with, {"error": {"message": "broken"}})
                if self.path == "/api/v1/metadata":
                    return self._send(
                        200,
                        {
                            "scanner": {"name": "test-adapter", "vendor": "tests", "version": "1.0"},
                            "capabilities": [
                                {
                                    "type": "vulnerability",
                                    "consumes_mime_types": [
                                        "application/vnd.oci.image.manifest.v1+json",
                                        "application/vnd.docker.distribution.manifest.v2+json",
                                    ],
                                    "produces_mime_types": [REPORT_TYPE],
                                }
                            ],
                            "properties": {"harbor.scanner-adapter/scanner-type": "os-package-vulnerability"},
                        },
                    )
                parts = self.path.split("/")
                if len(parts) == 6 and parts[1:4] == ["api", "v1", "scan"] and parts[5] == "report":
                    job = adapter.jobs.get(parts[4])
                    if job is None:
                        return self._send(404, {"error": {"message": "unknown scan"}})
                    job.polls += 1
                    if job.polls == 1:
                        return self._send(302, None, {"Refresh-After": "1", "Location": self.path})
                    return self._send(
                        200,
                        {
                            "generated_at": "2026-12-01T00:00:00Z",
                            "artifact": job.request["artifact"],
                            "scanner": {"name": "test-adapter", "vendor": "tests", "version": "1.0"},
                            "severity": "Critical",
                            "vulnerabilities": VULNERABILITIES,
                        },
                    )
                return self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if adapter.fail_with:
                    return self._send(adapter.fail_with, {"error": {"message": "broken"}})
                if self.path != "/api/v1/scan" or "scan.request" not in self.headers.get("Content-Type", ""):
                    return self._send(400, {"error": {"message": "not a scan request"}})
                job = Job(body)
                adapter._pull(job)
                scan_id = str(uuid.uuid4())
                adapter.jobs[scan_id] = job
                return self._send(202, {"id": scan_id})

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
