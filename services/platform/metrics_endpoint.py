"""`GET /metrics`: the process's metrics in Prometheus' text format, for a local scraper.

    METRICS_ENDPOINT=false (default)   404, as if there were no such route (Azure: metrics go to Azure Monitor)
    METRICS_TOKEN set                  only `Authorization: Bearer <token>` (401 otherwise), from anywhere
    METRICS_TOKEN empty                only callers on the loopback interface (403 otherwise); never under the
                                       Functions host, whose worker sees every request come from loopback

What it shows is bounded: route templates, methods, status classes and the names of registries that exist
(services/platform/telemetry.py), never a repository, tag, digest, address or credential.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.platform.settings import Settings
from services.platform.telemetry import telemetry

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
_NO_STORE = {"Cache-Control": "no-store"}


def under_functions_host() -> bool:
    """True in Azure (the host sets WEBSITE_SITE_NAME): the worker cannot tell a caller's address there."""
    return bool(os.environ.get("WEBSITE_SITE_NAME"))


def _refused(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers={**_NO_STORE, **(headers or {})})


def _loopback(request: Request) -> bool:
    if request.client is None:
        return False
    try:
        return ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


def metrics_response(request: Request, settings: Settings) -> Response:
    text = telemetry().prometheus_text() if settings.metrics_endpoint else None
    if text is None:
        return _refused(404, "not found")
    if settings.metrics_token:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), settings.metrics_token.encode()
        ):
            return _refused(401, "a bearer token is required", {"WWW-Authenticate": 'Bearer realm="metrics"'})
    elif under_functions_host() or not _loopback(request):
        return _refused(403, "metrics are served to loopback callers only (or set METRICS_TOKEN)")
    return Response(text, media_type=PROMETHEUS_TEXT, headers=_NO_STORE)
