"""The ARM-shaped API of a registry's repository-scoped permissions, as `azure-mgmt-containerregistry` speaks
it: `Microsoft.ContainerRegistry/registries/scopeMaps` and `/tokens` (PUT, GET, PATCH, DELETE, list) and
`registries/{r}/generateCredentials`. The rules are services/management/access.py's (the command line uses
them too); this module only speaks ARM.

Tokens made here have no passwords until `generateCredentials` makes one (or both), as in ACR; a password is
shown once, in that answer, and stored hashed. The built-in scope maps (`_repositories_pull`, ...) are listed
as `SystemDefined` and cannot be changed or deleted.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from services.auth.permissions import BUILT_IN_SCOPE_MAPS
from services.auth.store import AccessStore, ScopeMapDoc, TokenDoc
from services.management import access
from services.management.access import AccessError
from services.management.arm import PROVIDER, ArmCall, ArmError, registry_id, registry_in_scope
from services.management.authorization import Access, ArmScope

CHILD_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerRegistry"
    r"/registries/(?P<registry>[^/]+)/(?P<kind>scopeMaps|tokens)(?:/(?P<name>[^/]+))?/?$",
    re.I,
)
GENERATE_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerRegistry"
    r"/registries/(?P<registry>[^/]+)/generateCredentials/?$",
    re.I,
)
SCOPE_MAP_ID = re.compile(r"/scopeMaps/(?P<name>[^/]+)$", re.I)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ScopeMapProperties(_Body):
    description: str | None = Field(default=None, max_length=256)
    actions: list[str] | None = Field(default=None, max_length=1000)


class ScopeMapBody(_Body):
    properties: ScopeMapProperties = Field(default_factory=ScopeMapProperties)


class TokenProperties(_Body):
    scopeMapId: str | None = Field(default=None, max_length=1000)
    status: Literal["enabled", "disabled"] | None = None


class TokenBody(_Body):
    properties: TokenProperties = Field(default_factory=TokenProperties)


class GenerateBody(_Body):
    tokenId: str = Field(max_length=1000)
    expiry: datetime | None = None
    name: Literal["password1", "password2"] | None = None


def _child_id(scope: ArmScope, registry: str, kind: str, name: str) -> str:
    return f"{registry_id(scope, registry)}/{kind}/{name}"


def scope_map_resource(scope: ArmScope, registry: str, doc: ScopeMapDoc) -> dict[str, Any]:
    system = doc.name in BUILT_IN_SCOPE_MAPS
    return {
        "id": _child_id(scope, registry, "scopeMaps", doc.name),
        "name": doc.name,
        "type": f"{PROVIDER}/registries/scopeMaps",
        "properties": {
            "description": doc.description,
            "type": "SystemDefined" if system else "UserDefined",
            "creationDate": doc.created,
            "provisioningState": "Succeeded",
            "actions": doc.actions,
        },
    }


def token_resource(scope: ArmScope, registry: str, doc: TokenDoc) -> dict[str, Any]:
    return {
        "id": _child_id(scope, registry, "tokens", doc.name),
        "name": doc.name,
        "type": f"{PROVIDER}/registries/tokens",
        "properties": {
            "creationDate": doc.created,
            "provisioningState": "Succeeded",
            "scopeMapId": _child_id(scope, registry, "scopeMaps", doc.scopeMap),
            "status": doc.status,
            "credentials": {
                "certificates": [],
                "passwords": [
                    {"name": p.name, "creationTime": p.created, **({"expiry": p.expiry} if p.expiry else {})}
                    for p in doc.passwords
                ],
            },
        },
    }


def _scope_map_name(scope_map_id: str) -> str:
    """A scope map id (ARM's full resource id, or a bare name) → its name."""
    found = SCOPE_MAP_ID.search(scope_map_id)
    return found["name"] if found else scope_map_id


async def children(call: ArmCall) -> Response:
    scope = call.scope()
    kind, name, method = call.match["kind"], call.match["name"], call.request.method
    kind = "scopeMaps" if kind.lower() == "scopemaps" else "tokens"
    access_kind: Access = "read" if method == "GET" else "write"
    verb = "read" if method == "GET" else "delete" if method == "DELETE" else "write"
    await call.authorize(scope, access_kind, f"registries/{kind}/{verb}")
    registry = (await registry_in_scope(call, scope)).registry
    try:
        if kind == "scopeMaps":
            return await _scope_maps(call, scope, registry, name, method)
        return await _tokens(call, scope, registry, name, method)
    except AccessError as error:
        raise ArmError(400, "InvalidRequest", str(error)) from error


async def _scope_maps(call: ArmCall, scope: ArmScope, registry: str, name: str | None, method: str) -> Response:
    metadata = call.services.metadata
    if name is None:
        if method != "GET":
            raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a scope map list")
        docs = await access.list_scope_maps(metadata, registry)
        return JSONResponse({"value": [scope_map_resource(scope, registry, d) for d in docs]})
    built_in = name in BUILT_IN_SCOPE_MAPS
    existing = next((d for d in await access.list_scope_maps(metadata, registry) if d.name == name), None)
    if method == "GET":
        if existing is None:
            raise ArmError(404, "ResourceNotFound", f"scope map {name[:60]!r} was not found")
        return JSONResponse(scope_map_resource(scope, registry, existing))
    if built_in:
        raise ArmError(400, "SystemDefinedScopeMap", f"{name} is a system-defined scope map and cannot change")
    if method == "DELETE":
        deleted = await access.delete_scope_map(metadata, registry, name)
        return Response(status_code=200 if deleted else 204)
    if method not in ("PUT", "PATCH"):
        raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a scope map")
    body = (await call.body(ScopeMapBody)).properties
    if method == "PATCH" and existing is None:
        raise ArmError(404, "ResourceNotFound", f"scope map {name[:60]!r} was not found")
    actions = body.actions if body.actions is not None else (existing.actions if existing else None)
    if actions is None:
        raise ArmError(400, "InvalidRequestContent", "properties.actions is required", target="properties.actions")
    description = body.description if body.description is not None else (existing.description if existing else "")
    doc = await access.put_scope_map(metadata, registry, name, actions, description)
    status = 201 if existing is None else 200
    return JSONResponse(scope_map_resource(scope, registry, doc), status_code=status)


async def _tokens(call: ArmCall, scope: ArmScope, registry: str, name: str | None, method: str) -> Response:
    metadata = call.services.metadata
    store = AccessStore(metadata)
    if name is None:
        if method != "GET":
            raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a token list")
        return JSONResponse({"value": [token_resource(scope, registry, d) for d in await store.tokens(registry)]})
    existing = await store.token(registry, name)
    if method == "GET":
        if existing is None:
            raise ArmError(404, "ResourceNotFound", f"token {name[:60]!r} was not found")
        return JSONResponse(token_resource(scope, registry, existing))
    if method == "DELETE":
        deleted = await access.delete_token(metadata, registry, name)
        return Response(status_code=200 if deleted else 204)
    if method not in ("PUT", "PATCH"):
        raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a token")
    body = (await call.body(TokenBody)).properties
    scope_map = _scope_map_name(body.scopeMapId) if body.scopeMapId else None
    if existing is None:
        if method == "PATCH":
            raise ArmError(404, "ResourceNotFound", f"token {name[:60]!r} was not found")
        if scope_map is None:
            raise ArmError(
                400, "InvalidRequestContent", "properties.scopeMapId is required", target="properties.scopeMapId"
            )
        doc, _ = await access.create_token(
            metadata, registry, name, scope_map, status=body.status or "enabled", with_passwords=False
        )
        return JSONResponse(token_resource(scope, registry, doc), status_code=201)
    doc = await access.update_token(metadata, registry, name, status=body.status, scope_map=scope_map)
    return JSONResponse(token_resource(scope, registry, doc))


async def generate_credentials(call: ArmCall) -> Response:
    """New password(s) of a token, shown once (ACR's generateCredentials)."""
    if call.request.method != "POST":
        raise ArmError(405, "MethodNotAllowed", "generateCredentials takes POST")
    scope = call.scope()
    await call.authorize(scope, "write", "registries/generateCredentials/action")
    registry = (await registry_in_scope(call, scope)).registry
    body = await call.body(GenerateBody)
    token = body.tokenId.rstrip("/").rsplit("/", 1)[-1]
    days: int | None = None
    if body.expiry is not None:
        expiry = body.expiry if body.expiry.tzinfo else body.expiry.replace(tzinfo=UTC)
        remaining = (expiry - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            raise ArmError(400, "InvalidRequest", "expiry must be in the future", target="expiry")
        days = max(1, round(remaining / 86400))
    names: list[Literal["password1", "password2"]] = [body.name] if body.name else ["password1", "password2"]
    try:
        made = [await access.regenerate_token_password(call.services.metadata, registry, token, n, days) for n in names]
    except AccessError as error:
        raise ArmError(404, "ResourceNotFound", str(error)) from error
    return JSONResponse(
        {
            "username": token,
            "passwords": [
                {"name": p.name, "value": p.value, **({"expiry": p.expiry} if p.expiry else {})} for p in made
            ],
        }
    )
