"""The ARM-shaped API of geo-replication (`Microsoft.ContainerRegistry/registries/replications`), as
`azure-mgmt-containerregistry` 15.0.0 speaks it:

    PUT|GET|PATCH|DELETE /subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.ContainerRegistry
                         /registries/{registry}/replications/{replication}?api-version=2025-11-01
    GET                  .../registries/{registry}/replications

Create and update are long-running operations in ARM: PUT answers 201 (200 for an existing one) with an
`Azure-AsyncOperation` status URL, PATCH 200 with one; DELETE answers 202 with `Location` and
`Azure-AsyncOperation`. Premium registries only; the home region is a replication that cannot be deleted.
The rules live in services/replication/rules.py and resources.py; this module only translates.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Coroutine
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from services.management.arm import PROVIDER, ArmCall, ArmError, registry_id, registry_in_scope
from services.management.authorization import Access, ArmScope
from services.management.registries_api import finished_operation, operation_urls
from services.management.store import OperationDoc, RegistryDoc, RegistryStore
from services.replication import resources, rules
from services.replication.backfill import backfill, remove_replica
from services.replication.regions import RegionalStorage
from services.replication.resources import ReplicationChanges
from services.replication.store import ReplicationDoc
from services.replication.worker import replication_worker

log = logging.getLogger("management")
_background: set[asyncio.Task[Any]] = set()


# --- request bodies (ARM's Replication / ReplicationUpdateParameters) -------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ReplicationProperties(_Body):
    regionEndpointEnabled: bool | None = None
    zoneRedundancy: Literal["Enabled", "Disabled"] | None = None


class ReplicationUpdate(_Body):
    tags: dict[str, str] | None = None
    properties: ReplicationProperties = Field(default_factory=ReplicationProperties)

    def changes(self, location: str | None = None) -> ReplicationChanges:
        return ReplicationChanges(
            location=location,
            tags=self.tags,
            region_endpoint_enabled=self.properties.regionEndpointEnabled,
            zone_redundancy=self.properties.zoneRedundancy,
        )


class ReplicationCreate(ReplicationUpdate):
    location: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ]{0,63}$")


# --- shapes ------------------------------------------------------------------------------------------------
def replication_resource(registry: RegistryDoc, doc: ReplicationDoc) -> dict[str, Any]:
    scope = ArmScope(registry.subscription, registry.resourceGroup, registry.registry)
    return {
        "id": f"{registry_id(scope, registry.registry)}/replications/{doc.name}",
        "name": doc.name,
        "type": f"{PROVIDER}/registries/replications",
        "location": doc.location,
        "tags": doc.tags,
        "systemData": {"createdAt": doc.created},
        "properties": {
            "provisioningState": doc.provisioningState,
            "status": {
                "displayStatus": resources.status_of(doc),
                "message": _message(doc),
                "timestamp": doc.statusTimestamp,
            },
            "regionEndpointEnabled": doc.regionEndpointEnabled,
            "zoneRedundancy": doc.zoneRedundancy,
            # ours: how far the backfill of a new replica is (images done of the total)
            **(
                {"backfill": {"done": doc.backfillDone, "total": doc.backfillTotal}}
                if doc.backfillTotal is not None
                else {}
            ),
        },
    }


def _message(doc: ReplicationDoc) -> str:
    if doc.syncing:
        total = "?" if doc.backfillTotal is None else str(doc.backfillTotal)
        return f"Syncing content pushed before the replica existed: {doc.backfillDone} of {total} images"
    return doc.statusMessage


# --- the handler ------------------------------------------------------------------------------------------
REPLICATION_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerRegistry"
    r"/registries/(?P<registry>[^/]+)/replications(?:/(?P<replication>[^/]+))?/?$",
    re.IGNORECASE,
)


async def replications(call: ArmCall) -> Response:
    scope = call.scope()
    name, method = call.match["replication"], call.request.method
    access: Access = "read" if method == "GET" else "write"
    verb = {"GET": "read", "DELETE": "delete"}.get(method, "write")
    principal = await call.authorize(scope, access, f"registries/replications/{verb}")
    registry = await registry_in_scope(call, scope)
    try:
        if name is None:
            if method != "GET":
                raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a replication list")
            docs = await resources.list_replications(call.services.metadata, registry)
            return JSONResponse({"value": [replication_resource(registry, d) for d in docs]})
        if len(name) > 50:
            raise rules.ReplicationInvalid("replication names have at most 50 characters", "InvalidResourceName")
        if method == "GET":
            doc = await resources.get_replication(call.services.metadata, registry, name)
            return JSONResponse(replication_resource(registry, doc))
        if method == "PUT":
            return await _put(call, registry, name, principal.object_id)
        if method == "PATCH":
            body = await call.body(ReplicationUpdate)
            doc = await resources.update_replication(call.services.metadata, registry, name, body.changes())
            operation = await finished_operation(call, "update", registry, principal.object_id)
            headers = {"Azure-AsyncOperation": operation_urls(call, operation, doc.location)["Azure-AsyncOperation"]}
            return JSONResponse(replication_resource(registry, doc), headers=headers)
        if method == "DELETE":
            return await _delete(call, registry, name, principal.object_id)
        raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a replication")
    except rules.ReplicationInvalid as error:
        raise ArmError(error.status, error.code, str(error), target=error.target) from error
    except resources.ReplicationNotFound as error:
        raise ArmError(
            404,
            "ResourceNotFound",
            f"The Resource '{PROVIDER}/registries/{registry.registry}/replications/{str(error)[:50]}' under "
            f"resource group '{registry.resourceGroup}' was not found.",
        ) from error


def _available(call: ArmCall) -> frozenset[str] | None:
    regions = call.services.settings.region_accounts()
    return frozenset(regions) if regions else None


async def _put(call: ArmCall, registry: RegistryDoc, name: str, who: str) -> Response:
    body = await call.body(ReplicationCreate)
    settings = call.services.settings
    # a region with storage of its own is backfilled with what was pushed before it (Syncing until then)
    home = settings.region or registry.location
    own_storage = not RegionalStorage(settings, call.services.blobs).same_account(body.location.replace(" ", ""), home)
    doc, created = await resources.put_replication(
        call.services.metadata, registry, name, body.changes(body.location), _available(call), syncing=own_storage
    )
    if created and doc.syncing:
        _in_background(backfill(replication_worker(), registry.registry, doc.name), f"backfill of {doc.name}")
    operation = await finished_operation(call, "create" if created else "update", registry, who)
    headers = {"Azure-AsyncOperation": operation_urls(call, operation, doc.location)["Azure-AsyncOperation"]}
    return JSONResponse(replication_resource(registry, doc), status_code=201 if created else 200, headers=headers)


async def _delete(call: ArmCall, registry: RegistryDoc, name: str, who: str) -> Response:
    metadata = call.services.metadata
    try:
        await resources.get_replication(metadata, registry, name)
    except resources.ReplicationNotFound:
        return Response(status_code=204)  # ARM's answer to deleting what is not there
    operation = OperationDoc(
        id=f"operation:{uuid.uuid4()}",
        kind="delete",
        target=registry.registry,
        subscription=registry.subscription,
        resourceGroup=registry.resourceGroup,
        startedBy=who,
    )
    store = RegistryStore(metadata)
    operation = await store.put_operation(operation)
    doc = await resources.begin_delete(metadata, registry, name, operation.id.removeprefix("operation:"))
    # its copies go in the background (the resume_replica_jobs timer finishes it if this process dies)
    _in_background(remove_replica(replication_worker(), registry.registry, doc.name), f"removal of {doc.name}")
    return Response(status_code=202, headers=operation_urls(call, operation, doc.location))


def _in_background(job: Coroutine[Any, Any, Any], what: str) -> None:
    async def run() -> None:
        try:
            await job
        except Exception:
            log.exception("the %s did not finish; the resume_replica_jobs timer will resume it", what)

    task = asyncio.create_task(run())
    _background.add(task)
    task.add_done_callback(_background.discard)
