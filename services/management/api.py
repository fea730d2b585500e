"""The ARM-shaped management API's one entry point: `ManagementApi.handle(request) -> response`.

It matches the path against the route table, checks the api-version, and hands the call to a handler
(registries_api.py, webhooks_api.py), which authorizes it first (arm.py) and then acts. Every failure leaves
as an ARM error body; Cosmos DB or Storage outages as 503 with Retry-After; never a bare 500 for bad input.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from services.auth.entra import EntraVerifier, parse_issuers
from services.auth.store import AccessStore
from services.management import (
    access_api,
    registries_api,
    replications_api,
    task_pools_api,
    tasks_api,
    webhooks_api,
)
from services.management.arm import API_VERSIONS, ArmCall, ArmError, Services
from services.management.audit import record_change
from services.management.authorization import ManagementAuthorizer, ManagementDenied
from services.management.store import RegistryStore
from services.platform.availability import classify
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from services.platform.lifecycle import close_on_shutdown
from services.platform.settings import Settings, get_settings
from services.platform.telemetry import observed_http
from services.tasks.queue import RunQueue
from services.webhooks.delivery import WebhookDispatcher

log = logging.getLogger("management")

Handler = Callable[[ArmCall], Awaitable[Response]]
ROUTES: list[tuple[re.Pattern[str], Handler]] = [
    (webhooks_api.WEBHOOK_PATH, webhooks_api.webhooks),
    (replications_api.REPLICATION_PATH, replications_api.replications),
    (tasks_api.REGISTRY_ACTION_PATH, tasks_api.registry_actions),
    (tasks_api.RUN_PATH, tasks_api.runs),
    (tasks_api.TASK_PATH, tasks_api.tasks),
    (task_pools_api.AGENT_POOL_PATH, task_pools_api.agent_pools),
    (task_pools_api.TASK_RUN_PATH, task_pools_api.task_runs),
    (access_api.CHILD_PATH, access_api.children),
    (access_api.GENERATE_PATH, access_api.generate_credentials),
    (registries_api.REGISTRY_PATH, registries_api.registry),
    (registries_api.REGISTRY_LIST_PATH, registries_api.registry_list),
    (registries_api.CHECK_NAME_PATH, registries_api.check_name),
    (registries_api.OPERATION_PATH, registries_api.operation_status),
]


ARM_ROUTE_KEY = "acr.arm_route"  # the matched route (an re.Match), set by the dispatcher
LITERAL_GROUPS = frozenset({"action", "kind"})  # groups that match one of a few fixed words


def arm_route(match: re.Match[str] | None) -> str:
    """The route template of a call: its matched route's, or one value for every path no route serves."""
    return "/subscriptions/{unmatched}" if match is None else route_template(match)


def route_template(match: re.Match[str]) -> str:
    """The route template of a matched ARM path, for span names and metric labels: each name in it a
    placeholder (`/subscriptions/{sub}/resourcegroups/{rg}/.../registries/{registry}/webhooks/{webhook}`),
    lower-cased (the routes match any case, the labels must not multiply by it)."""
    path = match.string
    pieces: list[str] = []
    end = 0
    groups = sorted((match.start(name), name) for name in match.groupdict() if match.start(name) >= 0)
    for start, name in groups:
        pieces.append(path[end:start].lower())
        pieces.append(path[start : match.end(name)].lower() if name in LITERAL_GROUPS else "{" + name + "}")
        end = match.end(name)
    pieces.append(path[end:].lower())
    return "".join(pieces)


class ManagementApi:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        metadata = Cosmos(self.settings)
        authorizer = ManagementAuthorizer(
            EntraVerifier(parse_issuers(self.settings.entra_issuers)), AccessStore(metadata), RegistryStore(metadata)
        )
        self.services = Services(
            self.settings,
            metadata,
            BlobStore(self.settings),
            WebhookDispatcher(self.settings, metadata),
            authorizer,
            RunQueue(self.settings),
        )
        self._opened = False
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        async with self._opening:
            if not self._opened:
                await self.services.metadata.open()
                await self.services.blobs.open()
                await self.services.dispatcher.open()
                await self.services.runs.open()
                self._opened = True

    async def close(self) -> None:
        await self.services.runs.close()
        await self.services.dispatcher.close()
        await self.services.blobs.close()
        await self.services.metadata.close()
        self._opened = False

    async def handle(self, request: Request) -> Response:
        """The answer to one ARM call, in its server span, timed by route (services/platform/telemetry.py)."""
        return await observed_http(request, self._recorded, route=lambda: arm_route(request.scope.get(ARM_ROUTE_KEY)))

    async def _recorded(self, request: Request) -> Response:
        started = time.perf_counter()
        response = await self._answer(request)
        record_change(request, response, started, self.settings.trusted_proxies)  # who changed what (audit.py)
        return response

    async def _answer(self, request: Request) -> Response:
        try:
            await self.open()
            return await self._dispatch(request)
        except ArmError as error:
            return error.response()
        except ManagementDenied as error:
            return ArmError(error.status, error.code, error.message, error.headers).response()
        except Exception as error:
            outage = classify(error)
            if outage is not None:  # Cosmos DB or Storage down or throttling: ARM's 503, not a 500
                log.warning("%s %s: %s", request.method, request.url.path, outage)
                retry = {"Retry-After": str(outage.retry_after_seconds)}
                return ArmError(503, "ServiceUnavailable", "the service is unavailable; retry later", retry).response()
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return ArmError(500, "InternalServerError", "internal error").response()

    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path
        found = next(((m, h) for p, h in ROUTES if (m := p.match(path)) is not None), None)
        if found is None:
            raise ArmError(404, "NotFound", "no such resource type")
        match, handler = found
        request.scope[ARM_ROUTE_KEY] = match  # its template is made only if telemetry asks (arm_route)
        version = request.query_params.get("api-version")
        if not version:
            raise ArmError(
                400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required."
            )
        if version not in API_VERSIONS:
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version[:40]}' is invalid. The supported versions are "
                f"'{','.join(sorted(API_VERSIONS, reverse=True))}'.",
            )
        return await handler(ArmCall(self.services, request, match))


_api: ManagementApi | None = None


def management_api() -> ManagementApi:
    global _api
    if _api is None:
        _api = ManagementApi()
        close_on_shutdown(_api.close)
    return _api
