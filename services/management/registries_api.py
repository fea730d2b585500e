"""The ARM-shaped API of `Microsoft.ContainerRegistry/registries`, as `azure-mgmt-containerregistry` 15.0.0
(api-version 2025-11-01) speaks it:

    PUT|GET|PATCH|DELETE /subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.ContainerRegistry/registries/{r}
    GET                  /subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.ContainerRegistry/registries
    GET                  /subscriptions/{s}/providers/Microsoft.ContainerRegistry/registries
    POST                 /subscriptions/{s}/providers/Microsoft.ContainerRegistry/checkNameAvailability
    GET                  .../registries/{r}/listUsages
    POST                 .../registries/{r}/listCredentials | /regenerateCredential
    POST                 .../registries/{r}/collectGarbage {"dryRun": bool}   (ours: garbage collection now)
    POST                 .../registries/{r}/recountUsage                      (ours: usage from a recount)
    GET                  /subscriptions/{s}/providers/Microsoft.ContainerRegistry/locations/{l}
                         /operationResults/{id} | /asyncOperations/{id}

Create, update and delete are long-running operations, as in ARM: PUT answers 201 (or 200) with an
`Azure-AsyncOperation` status URL; DELETE answers 202 with `Location` and `Azure-AsyncOperation`, marks
the registry Deleting and empties it in the background (resumed by the cleanup timer if the worker dies).
Creating and updating finish within the request here, so their operation is already Succeeded when polled.

Admin passwords are stored hashed, so `listCredentials` cannot show them again: it gives the username and
names the passwords, and `regenerateCredential` shows the new one once (ACR shows both at any time).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from services.management import registries
from services.management.access import disable_admin_user, enable_admin_user, regenerate_admin_password
from services.management.arm import PROVIDER, ArmCall, ArmError, registry_id, registry_in_scope
from services.management.authorization import ArmScope
from services.management.registries import RegistryChanges, RegistryInvalid, RegistryNameInvalid, RegistryNameTaken
from services.management.store import OperationDoc, RegistryDoc, RegistryStore
from services.platform.cosmos import ConcurrentUpdate, utcnow
from services.registry.collector import GarbageCollector, recount_storage
from services.registry.ledger import BlobLedger
from services.replication.resources import list_replications

log = logging.getLogger("management")

_ARM = r"^/subscriptions/(?P<sub>[^/]+)"
_PROVIDER = r"/providers/Microsoft\.ContainerRegistry"
REGISTRY_LIST_PATH = re.compile(_ARM + r"(?:/resourceGroups/(?P<rg>[^/]+))?" + _PROVIDER + r"/registries/?$", re.I)
REGISTRY_PATH = re.compile(
    _ARM + r"/resourceGroups/(?P<rg>[^/]+)" + _PROVIDER + r"/registries/(?P<registry>[^/]+)"
    r"(?:/(?P<action>listUsages|listCredentials|regenerateCredential|collectGarbage|recountUsage))?/?$",
    re.I,
)
CHECK_NAME_PATH = re.compile(_ARM + _PROVIDER + r"/checkNameAvailability/?$", re.I)
OPERATION_PATH = re.compile(
    _ARM + _PROVIDER + r"/locations/(?P<location>[^/]+)/(?P<kind>operationResults|asyncOperations)/(?P<op>[^/]+)/?$",
    re.I,
)
PAGE_SIZE = 100
DEFAULT_POLICIES: dict[str, dict[str, Any]] = {
    "quarantinePolicy": {"status": "disabled"},
    "trustPolicy": {"type": "Notary", "status": "disabled"},
    "retentionPolicy": {"days": 7, "status": "disabled"},
    "exportPolicy": {"status": "enabled"},
    "softDeletePolicy": {"retentionDays": 7, "status": "disabled"},
}
_background: set[asyncio.Task[Any]] = set()


# --- request bodies (ARM's Registry / RegistryUpdateParameters) -------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SkuBody(_Body):
    name: Literal["Basic", "Standard", "Premium"]


class RegistryProperties(_Body):
    adminUserEnabled: bool | None = None
    anonymousPullEnabled: bool | None = None
    networkRuleSet: dict[str, Any] | None = None
    publicNetworkAccess: Literal["Enabled", "Disabled"] | None = None
    dataEndpointEnabled: bool | None = None
    zoneRedundancy: Literal["Enabled", "Disabled"] | None = None
    policies: dict[str, Any] | None = None


class RegistryUpdate(_Body):
    sku: SkuBody | None = None
    tags: dict[str, str] | None = None
    identity: dict[str, Any] | None = None
    properties: RegistryProperties = Field(default_factory=RegistryProperties)

    def changes(self) -> RegistryChanges:
        p = self.properties
        return RegistryChanges(
            sku=self.sku.name if self.sku is not None else None,
            tags=self.tags,
            admin_user_enabled=p.adminUserEnabled,
            anonymous_pull_enabled=p.anonymousPullEnabled,
            network_rule_set=p.networkRuleSet,
            public_network_access=p.publicNetworkAccess,
            data_endpoint_enabled=p.dataEndpointEnabled,
            zone_redundancy=p.zoneRedundancy,
            policies=p.policies,
            identity=self.identity,
        )


class RegistryCreate(RegistryUpdate):
    # Azure's region names ("westeurope", "West Europe"): they end up in operation URLs and headers.
    location: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ]{0,63}$")
    sku: SkuBody  # required on create


class NameRequest(_Body):
    name: str = Field(max_length=1000)
    type: Literal["Microsoft.ContainerRegistry/registries"] = "Microsoft.ContainerRegistry/registries"


class CollectRequest(_Body):
    dryRun: bool = False


class RegenerateRequest(_Body):
    name: Literal["password", "password2"]


# --- shapes ------------------------------------------------------------------------------------------------
def registry_resource(doc: RegistryDoc) -> dict[str, Any]:
    scope = ArmScope(doc.subscription, doc.resourceGroup, doc.registry)
    policies = {name: {**default, **doc.policies.get(name, {})} for name, default in DEFAULT_POLICIES.items()}
    # ours (services/scanning): vulnerabilityPolicy and externalScanner, shown once set
    policies |= {name: value for name, value in doc.policies.items() if name not in DEFAULT_POLICIES}
    return {
        "id": registry_id(scope, doc.registry),
        "name": doc.registry,
        "type": f"{PROVIDER}/registries",
        "location": doc.location,
        "tags": doc.tags,
        "sku": {"name": doc.sku, "tier": doc.sku},
        **({"identity": doc.identity} if doc.identity else {}),
        "systemData": {"createdAt": doc.created},
        "properties": {
            "loginServer": doc.loginServer,
            "creationDate": doc.created,
            "provisioningState": doc.provisioningState,
            "adminUserEnabled": doc.adminUserEnabled,
            "anonymousPullEnabled": doc.anonymousPullEnabled,
            "networkRuleSet": doc.networkRuleSet or {"defaultAction": "Allow", "ipRules": []},
            "networkRuleBypassOptions": "AzureServices",
            "publicNetworkAccess": doc.publicNetworkAccess,
            "dataEndpointEnabled": doc.dataEndpointEnabled,
            "dataEndpointHostNames": [],
            "zoneRedundancy": doc.zoneRedundancy,
            "privateEndpointConnections": [],
            "encryption": {"status": "disabled"},
            "policies": policies,
        },
    }


def operation_urls(call: ArmCall, operation: OperationDoc, location: str) -> dict[str, str]:
    op = operation.id.removeprefix("operation:")
    base = f"{call.base_url()}/subscriptions/{operation.subscription}/providers/{PROVIDER}/locations/{location}"
    version = f"?api-version={call.api_version}"
    return {
        "Azure-AsyncOperation": f"{base}/asyncOperations/{op}{version}",
        "Location": f"{base}/operationResults/{op}{version}",
        "Retry-After": "1",
    }


def _invalid(error: Exception) -> ArmError:
    target = getattr(error, "target", "")
    return ArmError(400, "InvalidRequest", str(error), target=target)


# --- handlers ------------------------------------------------------------------------------------------------
async def registry_list(call: ArmCall) -> Response:
    """Every registry of the subscription (or resource group) the caller may read, paged by `$skipToken`."""
    if call.request.method != "GET":
        raise ArmError(405, "MethodNotAllowed", f"{call.request.method} is not allowed on a registry list")
    scope = call.scope()
    principal = await call.services.authorizer.authenticate(call.request)
    after = call.request.query_params.get("$skipToken", "")
    if len(after) > 50:
        raise ArmError(400, "InvalidSkipToken", "the $skipToken is not one this API gave")
    top = call.request.query_params.get("$top", str(PAGE_SIZE))
    if not top.isdigit() or not 1 <= int(top) <= PAGE_SIZE:
        raise ArmError(400, "InvalidTop", f"$top must be a whole number from 1 to {PAGE_SIZE}")
    page = int(top)
    store = RegistryStore(call.services.metadata)
    docs = await store.registries_in(scope.subscription, scope.resource_group, after, page + 1)
    more, docs = len(docs) > page, docs[:page]
    visible = []
    assignments = await store.scope_role_assignments(scope.subscription)  # read once for the whole page
    for doc in docs:
        if doc.provisioningState == "Deleting":
            continue
        where = ArmScope(doc.subscription, doc.resourceGroup, doc.registry)
        if await call.services.authorizer.may(principal, where, "read", assignments):
            visible.append(registry_resource(doc))
    body: dict[str, Any] = {"value": visible}
    if more:
        url = call.request.url.remove_query_params("$skipToken").include_query_params(
            **{"$skipToken": docs[-1].registry}
        )
        body["nextLink"] = str(url)
    return JSONResponse(body)


async def registry(call: ArmCall) -> Response:
    if call.match["action"] is not None:
        return await _registry_action(call)
    method = call.request.method
    if method == "GET":
        scope = call.scope()
        await call.authorize(scope, "read", "registries/read")
        return JSONResponse(registry_resource(await registry_in_scope(call, scope)))
    if method == "PUT":
        return await _put(call)
    if method == "PATCH":
        return await _patch(call)
    if method == "DELETE":
        return await _delete(call)
    raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a registry")


async def _put(call: ArmCall) -> Response:
    scope = call.scope()
    assert scope.registry is not None
    try:
        registries.check_name(scope.registry)
    except RegistryNameInvalid as error:  # said only to who may create there; never read, never echoed whole
        await call.authorize(ArmScope(scope.subscription, scope.resource_group), "write", "registries/write")
        raise ArmError(400, "InvalidResourceName", str(error), target="name") from error
    store = RegistryStore(call.services.metadata)
    existing = await store.get_registry(scope.registry)
    in_scope = existing is not None and (existing.subscription.lower(), existing.resourceGroup.lower()) == (
        scope.subscription.lower(),
        (scope.resource_group or "").lower(),
    )
    # Creating needs a role on the resource group or subscription; replacing, one on the registry will do.
    where = scope if in_scope else ArmScope(scope.subscription, scope.resource_group)
    principal = await call.authorize(where, "write", "registries/write")
    body = await call.body(RegistryCreate)
    if existing is not None and in_scope and existing.provisioningState != "Deleting":
        if body.location.lower().replace(" ", "") != existing.location:
            raise ArmError(
                400,
                "InvalidResourceLocation",
                f"The resource '{scope.registry}' already exists in location '{existing.location}'.",
                target="location",
            )
        doc = await _update(call, existing, body.changes())
        operation = await finished_operation(call, "update", doc, principal.object_id)
        return JSONResponse(registry_resource(doc), status_code=200, headers=_async_header(call, operation, doc))
    changes = body.changes()
    changes.location = body.location
    settings = call.services.settings
    try:
        doc, created = await registries.create_registry(
            call.services.metadata,
            call.services.blobs,
            settings,
            scope.registry,
            body.sku.name,
            subscription=scope.subscription,
            resource_group=scope.resource_group or "",
            changes=changes,
        )
    except RegistryNameTaken as error:
        raise ArmError(
            409,
            "AlreadyInUse",
            f"The registry DNS name {scope.registry}.{settings.registry_domain} is already in use.",
            target="name",
        ) from error
    except RegistryInvalid as error:
        raise _invalid(error) from error
    if doc.adminUserEnabled:
        await enable_admin_user(call.services.metadata, doc.registry)
    operation = await finished_operation(call, "create", doc, principal.object_id)
    status = 201 if created else 200
    return JSONResponse(registry_resource(doc), status_code=status, headers=_async_header(call, operation, doc))


async def _patch(call: ArmCall) -> Response:
    scope = call.scope()
    principal = await call.authorize(scope, "write", "registries/write")
    existing = await registry_in_scope(call, scope)
    body = await call.body(RegistryUpdate)
    doc = await _update(call, existing, body.changes())
    operation = await finished_operation(call, "update", doc, principal.object_id)
    return JSONResponse(registry_resource(doc), headers=_async_header(call, operation, doc))


async def _update(call: ArmCall, existing: RegistryDoc, changes: RegistryChanges) -> RegistryDoc:
    metadata = call.services.metadata
    try:
        doc = registries.apply_changes(existing, changes)
        if doc.sku != existing.sku:
            await registries.check_usage_fits(metadata, doc)
        if registries.enabled(doc, "softDeletePolicy") and not registries.enabled(existing, "softDeletePolicy"):
            replicas = await list_replications(metadata, existing)
            if any(replica.location != existing.location for replica in replicas):
                raise RegistryInvalid(registries.SOFT_DELETE_GEO_REPLICATION, "properties.policies.softDeletePolicy")
    except RegistryInvalid as error:
        raise _invalid(error) from error
    turning_admin_off = existing.adminUserEnabled and not doc.adminUserEnabled
    turning_admin_on = doc.adminUserEnabled and not existing.adminUserEnabled
    doc.adminUserEnabled = existing.adminUserEnabled  # toggled below, through the functions that do it right
    try:
        doc = await RegistryStore(metadata).replace_registry(doc)
    except ConcurrentUpdate as error:
        raise ArmError(409, "Conflict", "the registry was changed meanwhile; read it again and retry") from error
    if turning_admin_on:
        await enable_admin_user(metadata, doc.registry)
    if turning_admin_off:
        await disable_admin_user(metadata, doc.registry)  # also revokes the admin's refresh tokens
    return await RegistryStore(metadata).get_registry(doc.registry) or doc


async def _delete(call: ArmCall) -> Response:
    scope = call.scope()
    principal = await call.authorize(scope, "write", "registries/delete")
    try:
        doc = await registry_in_scope(call, scope, deleting_ok=True)
    except ArmError:
        return Response(status_code=204)  # nothing there: ARM's answer to deleting what does not exist
    metadata = call.services.metadata
    try:
        operation = await registries.begin_delete(metadata, doc)
    except ConcurrentUpdate as error:
        raise ArmError(409, "Conflict", "the registry was changed meanwhile; retry the delete") from error
    if operation.startedBy is None:
        operation.startedBy = principal.object_id
        operation = await RegistryStore(metadata).put_operation(operation)
    # Empty it now, beside the answer; if this process dies, the cleanup timer finishes it.
    task = asyncio.create_task(_finish_delete(call, doc.registry))
    _background.add(task)
    task.add_done_callback(_background.discard)
    return Response(status_code=202, headers=operation_urls(call, operation, doc.location))


async def _finish_delete(call: ArmCall, name: str) -> None:
    try:
        await registries.finish_delete(call.services.metadata, call.services.blobs, name)
    except Exception:
        log.exception("deleting registry %s did not finish; the cleanup timer will resume it", name)


async def _registry_action(call: ArmCall) -> Response:
    action, method = call.match["action"], call.request.method
    scope = call.scope()
    metadata = call.services.metadata
    if action == "listUsages":
        if method != "GET":
            raise ArmError(405, "MethodNotAllowed", "listUsages takes GET")
        await call.authorize(scope, "read", "registries/listUsages/read")
        doc = await registry_in_scope(call, scope)
        return JSONResponse(
            {
                "value": [
                    {"name": u.name, "limit": u.limit, "currentValue": u.current, "unit": u.unit}
                    for u in await registries.usages(metadata, doc)
                ]
            }
        )
    if method != "POST":
        raise ArmError(405, "MethodNotAllowed", f"{action} takes POST")
    await call.authorize(scope, "write", f"registries/{action}/action")
    doc = await registry_in_scope(call, scope)
    if action == "collectGarbage":
        request = await call.body(CollectRequest)
        collector = GarbageCollector(call.services.settings, metadata, call.services.blobs)
        report = await collector.run(doc.registry, dry_run=request.dryRun)
        return JSONResponse(report.to_json())
    if action == "recountUsage":
        recount = await recount_storage(BlobLedger(metadata), doc.registry)
        return JSONResponse(recount.to_json())
    if not doc.adminUserEnabled:
        raise ArmError(
            400, "AdminUserDisabled", "the admin user is disabled: enable it (properties.adminUserEnabled) first"
        )
    if action == "listCredentials":
        return JSONResponse({"username": doc.registry, "passwords": [{"name": "password"}, {"name": "password2"}]})
    body = await call.body(RegenerateRequest)
    which: Literal["password1", "password2"] = "password1" if body.name == "password" else "password2"
    new = await regenerate_admin_password(metadata, doc.registry, which)
    passwords: list[dict[str, str]] = [{"name": "password"}, {"name": "password2"}]
    passwords[0 if which == "password1" else 1]["value"] = new.value
    return JSONResponse({"username": doc.registry, "passwords": passwords})


async def check_name(call: ArmCall) -> Response:
    if call.request.method != "POST":
        raise ArmError(405, "MethodNotAllowed", "checkNameAvailability takes POST")
    await call.authorize(call.scope(), "read", "checkNameAvailability/read")
    body = await call.body(NameRequest)
    try:
        registries.check_name(body.name)
    except RegistryNameInvalid:
        return JSONResponse(
            {
                "nameAvailable": False,
                "reason": "Invalid",
                "message": "Registry names may contain only alpha numeric characters and must be between 5 and "
                "50 characters",
            }
        )
    if await RegistryStore(call.services.metadata).get_registry(body.name) is not None:
        return JSONResponse(
            {
                "nameAvailable": False,
                "reason": "AlreadyExists",
                "message": f"The registry {body.name} is already in use.",
            }
        )
    return JSONResponse({"nameAvailable": True})


async def operation_status(call: ArmCall) -> Response:
    """An operation's status: `asyncOperations` always 200 with {status}; `operationResults` 202 while it
    runs, then 200 (ARM's two polling styles)."""
    if call.request.method != "GET":
        raise ArmError(405, "MethodNotAllowed", "operations are read with GET")
    scope = call.scope()
    principal = await call.services.authorizer.authenticate(call.request)
    op = call.match["op"]
    operation = await RegistryStore(call.services.metadata).get_operation(op) if len(op) <= 64 else None
    # Who started it may follow it (their role may have gone with a deleted registry); else a role at its scope.
    allowed = operation is not None and (
        operation.startedBy == principal.object_id
        or await call.services.authorizer.may(
            principal, ArmScope(operation.subscription, operation.resourceGroup, operation.target), "read"
        )
    )
    if operation is None or not allowed or operation.subscription.lower() != scope.subscription.lower():
        raise ArmError(404, "OperationNotFound", "no such operation")
    if call.match["kind"].lower() == "operationresults":
        if operation.status == "InProgress":
            return Response(status_code=202, headers={"Location": str(call.request.url), "Retry-After": "1"})
        return Response(status_code=200 if operation.status == "Succeeded" else 500)
    body: dict[str, Any] = {
        "id": str(call.request.url.path),
        "name": op,
        "status": operation.status,
        "startTime": operation.startTime,
    }
    if operation.endTime:
        body["endTime"] = operation.endTime
    if operation.error:
        body["error"] = operation.error
    if operation.progress:
        body["properties"] = {"progress": operation.progress}  # ours: what a delete removed
    return JSONResponse(body)


async def finished_operation(
    call: ArmCall, kind: Literal["create", "update", "delete"], doc: RegistryDoc, who: str
) -> OperationDoc:
    """An operation on `doc` (the registry or one of its children) already Succeeded: what an SDK's poller
    follows to its end when the change was made at once."""
    operation = OperationDoc(
        id=f"operation:{uuid.uuid4()}",
        kind=kind,
        target=doc.registry,
        subscription=doc.subscription,
        resourceGroup=doc.resourceGroup,
        status="Succeeded",
        endTime=utcnow(),
        startedBy=who,
    )
    return await RegistryStore(call.services.metadata).put_operation(operation)


def _async_header(call: ArmCall, operation: OperationDoc, doc: RegistryDoc) -> dict[str, str]:
    return {"Azure-AsyncOperation": operation_urls(call, operation, doc.location)["Azure-AsyncOperation"]}
