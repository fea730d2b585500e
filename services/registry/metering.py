"""The data plane's traces and metrics per request: which route template a request is, what ACR counts.

    route template     the span name and the `http.route` label: `/v2/{name}/manifests/{reference}`, never
                       the path itself (no repository, tag or digest in a metric label)
    pull               a manifest GET (ACR's TotalPullCount; SuccessfulPullCount when answered 2xx). A HEAD
                       only asks whether a manifest is there; blob GETs are the layers of a pull already counted
    push               a manifest PUT (TotalPushCount / SuccessfulPushCount); blob uploads are its parts
    registry           the label only when the Host named a registry that exists (`REGISTRY_SCOPE_KEY`, set by
                       the dispatcher once the registry is resolved), so callers cannot mint label values
    span name          `GET` when the request arrives, `GET /v2/{name}/manifests/{reference}` once the
                       dispatcher has matched the route (OpenTelemetry's HTTP conventions allow the update)

Everything here returns at its first line while telemetry is off (services/platform/telemetry.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from services.platform.telemetry import observed_http, telemetry

# ASGI scope entries the dispatcher (services/registry/app.py) sets: the route kind it matched, and the
# registry the request is for when that registry exists.
ROUTE_SCOPE_KEY: Final = "acr.route"
REGISTRY_SCOPE_KEY: Final = "acr.registry"

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
    "acr_deleted_catalog": "/acr/v1/_deleted/_catalog",
    "acr_deleted_manifests": "/acr/v1/_deleted/{name}/_manifests",
    "acr_deleted_tags": "/acr/v1/_deleted/{name}/_tags",
    "acr_deleted_manifest": "/acr/v1/_deleted/{name}/_manifests/{digest}",
}
UNMATCHED: Final = "/v2/{unmatched}"  # a path no route serves (answered 404): one label value for all of them


async def observed(request: Request, handle: Callable[[Request], Awaitable[Response]]) -> Response:
    """Answer `request` with `handle`, inside the request's span, and count it. The route kind and the registry
    come from the dispatcher (`ROUTE_SCOPE_KEY`, `REGISTRY_SCOPE_KEY`): the path is matched once, not twice."""
    scope = request.scope

    def counted(method: str, registry: str | None, status: int) -> None:
        if scope.get(ROUTE_SCOPE_KEY) == "manifest" and method in ("GET", "PUT"):
            telemetry().count_image_request(method == "GET", registry, 200 <= status < 300)

    return await observed_http(
        request,
        handle,
        route=lambda: ROUTE_TEMPLATES.get(scope.get(ROUTE_SCOPE_KEY, ""), UNMATCHED),
        registry=lambda: scope.get(REGISTRY_SCOPE_KEY),
        counted=counted,
    )
