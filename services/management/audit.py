"""The management API's audit records (`RegistryManagementEvents`, services/platform/audit.py): who changed
what. Azure's activity log records ARM calls to ACR; this API is not ARM, so it records its own changes
in a like shape on the audit logger.

Every PUT, PATCH, DELETE and POST (which includes `listCredentials` and `generateCredentials`: reading
or making secrets is recorded, the secrets never are) gets one record once answered, failures included:

    OperationName   the ARM action the call was authorized for (`Microsoft.ContainerRegistry/registries/
                    webhooks/write`), or `<METHOD> <resource type>` when it was refused before that
    Identity        the caller's Entra object id (UserTenantId: their tenant), "" when not authenticated
    ResourceId      the request path (no query string), as the route matched it
    ResultDescription  the HTTP status

`ArmCall.authorize` notes the operation and principal on the request (`note_authorized`); nothing else is
read: not the body (webhook custom headers, passwords), not the Authorization header.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from services.auth.network import client_address, parse_proxies
from services.management.authorization import Principal
from services.platform import audit

CHANGES = frozenset({"PUT", "PATCH", "DELETE", "POST"})
_RESOURCE = re.compile(r"/providers/(?P<type>[A-Za-z0-9.]+(?:/[A-Za-z0-9]+/[^/]+)*)")


def note_authorized(request: Request, operation: str, principal: Principal) -> None:
    request.state.audit_operation = operation
    request.state.audit_principal = principal


def _resource_type(path: str) -> str:
    """`Microsoft.ContainerRegistry/registries/webhooks` of a path (the names between dropped)."""
    match = _RESOURCE.search(path)
    if match is None:
        return "subscription"
    parts = match["type"].split("/")
    return "/".join([parts[0], *parts[1::2]])


def record_change(request: Request, response: Response, started: float, trusted_proxies: str) -> None:
    """Write the record of a change (nothing for reads)."""
    if request.method not in CHANGES:
        return
    operation = getattr(request.state, "audit_operation", "") or f"{request.method} {_resource_type(request.url.path)}"
    principal: Principal | None = getattr(request.state, "audit_principal", None)
    address = client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        parse_proxies(trusted_proxies),
    )
    fields: dict[str, str | int] = {
        "Identity": principal.object_id if principal is not None else "",
        "UserTenantId": principal.tenant_id if principal is not None else "",
        "ResourceId": audit.cut(request.url.path),
        "HttpMethod": request.method,
    }
    fields.update(audit.result_fields(response.status_code))
    fields.update(
        audit.client_fields(
            str(address or ""),
            request.headers.get("user-agent", ""),
            audit.correlation_id(request.scope["headers"]),
            started,
        )
    )
    audit.emit(audit.MANAGEMENT_EVENTS, audit.cut(operation), fields)
