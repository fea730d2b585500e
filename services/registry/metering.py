"""The data plane's traces and metrics per request: which route template a request is, what ACR counts.

    route template     the span name and the `http.route` label: `/v2/{name}/manifests/{reference}`, never
                       the path itself (no repository, tag or digest in a metric label)
    pull               a manifest GET (ACR's TotalPullCount; SuccessfulPullCount when answered 2xx). A HEAD
                       only asks whether a manifest is there; blob GETs are the layers of a pull already counted
    push               a manifest PUT (TotalPushCount / SuccessfulPushCount); blob uploads are its parts
    registry           the label only when the Host named a registry that exists (`REGISTRY_SCOPE_KEY`, set by
                       the dispatcher once the registry is resolved), so callers cannot mint label values

Everything here returns at its first line while telemetry is off (services/platform/telemetry.py).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from services.platform.telemetry import end_server_span, telemetry
from services.registry.acr_paths import match_acr_route
from services.registry.reference import match_route

REGISTRY_SCOPE_KEY: Final = "acr.registry"  # the ASGI scope entry naming the (existing) registry of a request

ROUTE_TEMPLATES: Final[dict[str, str]] = {
    "base": "/v2/",
    "catalog": "/v2/_catalog",
    "tags": "/v2/{name}/tags/list",
    "manifest": "/v2/{name}/manifests/{reference}",
    "blob": "/v2/{name}/blobs/{digest}",
    "upload": "/v2/{name}/blobs/uploads/",
    "upload_session": "/v2/{name}/blobs/uploads/{uuid}",
    "referrers": "/v2/{name}/referrers/{digest}",
    "acr_catalog": "/acr/v1/_catalog",
    "acr_repository": "/acr/v1/{name}",
    "acr_tags": "/acr/v1/{name}/_tags",
    "acr_tag": "/acr/v1/{name}/_tags/{reference}",
    "acr_manifests": "/acr/v1/{name}/_manifests",
    "acr_manifest": "/acr/v1/{name}/_manifests/{reference}",
    "acr_manifest_scan": "/acr/v1/{name}/_manifests/{digest}/_scan",
}
UNMATCHED: Final = "/v2/{unmatched}"  # a path no route serves (answered 404): one label value for all of them
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})


def route_kind(path: str) -> str | None:
    route = match_route(path) or match_acr_route(path)
    return route.kind if route is not None else None


async def observed(request: Request, handle: Callable[[Request], Awaitable[Response]]) -> Response:
    """Answer `request` with `handle`, inside the request's span, and count it."""
    active = telemetry()
    if not active.enabled:
        return await handle(request)
    started = time.perf_counter()
    kind = route_kind(request.url.path)
    template = ROUTE_TEMPLATES.get(kind, UNMATCHED) if kind is not None else UNMATCHED
    method = request.method if request.method in METHODS else "_OTHER"
    attributes = {
        "http.request.method": method,
        "http.route": template,
        "url.path": request.url.path,
        "url.scheme": request.url.scheme,
        "server.address": request.headers.get("host", ""),
        "user_agent.original": request.headers.get("user-agent", ""),
        "client.address": request.client.host if request.client else "",
    }
    with active.server_span(f"{method} {template}", request.headers, attributes) as span:
        response = await handle(request)
        end_server_span(span, response.status_code)
    registry = request.scope.get(REGISTRY_SCOPE_KEY)
    status = response.status_code
    active.observe_request(template, method, status, time.perf_counter() - started, registry)
    if kind == "manifest" and method in ("GET", "PUT"):
        active.count_image_request(method == "GET", registry, 200 <= status < 300)
    return response
