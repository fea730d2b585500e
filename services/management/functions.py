"""The management API's functions (a Blueprint registered in function_app.py): the ARM-shaped routes under
`/subscriptions/...`, handed to `api.ManagementApi`, the cloud metadata document (cloud.py), and the timer
that finishes registry deletions a worker left unfinished."""

from __future__ import annotations

import logging

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response
from starlette.responses import JSONResponse

from services.management import cloud, openapi
from services.management.api import management_api
from services.management.registries import resume_deletions
from services.management.store import RegistryStore
from services.platform.settings import get_settings
from services.registry.collector import collect_all
from services.registry.retention import apply_retention, policy_days
from services.registry.softdelete import purge_expired
from services.registry.store import ArtifactStore
from services.registry.uploads import expire_uploads

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.route(
    route="subscriptions/{*path}",
    methods=["GET", "PUT", "PATCH", "DELETE", "POST"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
async def management_arm(req: Request) -> Response:
    """ARM-shaped management API (Microsoft.ContainerRegistry/registries and their webhooks)."""
    return await management_api().handle(req)


@bp.route(route="openapi/management.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def management_openapi(req: Request) -> Response:
    """The OpenAPI document of the management API (what it serves; public, like ARM's specs)."""
    return JSONResponse(openapi.management_openapi(str(req.base_url).rstrip("/")))


@bp.route(route="metadata/endpoints", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def cloud_metadata_endpoints(req: Request) -> Response:
    """The cloud metadata document `az cloud register --endpoint-resource-manager` reads (public in Azure
    too): where this cloud's management API and login servers are (services/management/cloud.py)."""
    document = cloud.metadata_response(get_settings(), str(req.base_url), req.query_params.get("api-version"))
    return JSONResponse(document)


@bp.timer_trigger(arg_name="timer", schedule="*/30 * * * * *", run_on_startup=False, use_monitor=False)
async def finish_registry_deletions(timer: func.TimerRequest) -> None:
    """Resume the deletions of registries still marked Deleting (their worker died, or is slow)."""
    api = management_api()
    await api.open()
    finished = await resume_deletions(api.services.metadata, api.services.blobs)
    if finished:
        logging.getLogger("management").info("finish_registry_deletions: %d registr(ies) deleted", finished)


@bp.timer_trigger(arg_name="timer", schedule="0 */10 * * * *", run_on_startup=False, use_monitor=False)
async def collect_garbage(timer: func.TimerRequest) -> None:
    """Online garbage collection of every registry's unreferenced blobs (services/registry/collector.py)."""
    api = management_api()
    await api.open()
    services = api.services
    names = [doc.registry for doc in await RegistryStore(services.metadata).list_registries()]
    await collect_all(services.settings, services.metadata, services.blobs, names)


@bp.timer_trigger(arg_name="timer", schedule="30 */10 * * * *", run_on_startup=False, use_monitor=False)
async def expire_idle_uploads(timer: func.TimerRequest) -> None:
    """Remove upload sessions idle longer than UPLOAD_EXPIRY_SECONDS, with their staged blocks."""
    api = management_api()
    await api.open()
    services = api.services
    expired = await expire_uploads(
        ArtifactStore(services.metadata), services.blobs, services.settings.upload_expiry_seconds
    )
    if expired:
        logging.getLogger("management").info("expire_idle_uploads: %d upload session(s) removed", expired)


@bp.timer_trigger(arg_name="timer", schedule="0 15 * * * *", run_on_startup=False, use_monitor=False)
async def apply_retention_policies(timer: func.TimerRequest) -> None:
    """Delete untagged manifests older than the registry's retention policy (Premium registries with it on)."""
    api = management_api()
    await api.open()
    artifacts = ArtifactStore(api.services.metadata)
    for doc in await RegistryStore(api.services.metadata).list_registries():
        if policy_days(doc) is not None:
            try:
                await apply_retention(artifacts, doc)
            except Exception:
                logging.getLogger("management").exception("retention of %s failed; the next run resumes", doc.registry)


@bp.timer_trigger(arg_name="timer", schedule="0 45 * * * *", run_on_startup=False, use_monitor=False)
async def purge_soft_deleted(timer: func.TimerRequest) -> None:
    """Purge soft-deleted manifests and tags older than their registry's `softDeletePolicy.retentionDays`
    (services/registry/softdelete.py): their blobs go to the garbage collector, as after a hard delete."""
    api = management_api()
    await api.open()
    for doc in await RegistryStore(api.services.metadata).list_registries():
        try:
            await purge_expired(api.services.metadata, doc)
        except Exception:
            logging.getLogger("management").exception(
                "soft-delete purge of %s failed; the next run resumes", doc.registry
            )
