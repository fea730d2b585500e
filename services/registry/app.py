"""The data plane's one HTTP entry point: `RegistryApi.handle(request) -> response`.

Every HTTP function (and the devhost) hands its Starlette/FastAPI request here. This module finds the
registry the request is for (by Host), matches the `/v2/` route, calls the route handler in
`services/registry/routes/`, and turns domain errors into the OCI error body. Repository names contain
slashes, so routes are matched from the end of the path by `reference.match_route`, not by a router.
ACR's `/acr/v1/` metadata API goes through the same steps, its paths matched by `acr_paths.match_acr_route`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from services.auth.permissions import route_need
from services.auth.service import AuthService, Caller, UnknownRegistry, unknown_registry
from services.events.outbox import EventPublisher
from services.management.registries import REGISTRY_NAME, login_server
from services.management.store import RegistryDoc, RegistryStore
from services.platform.availability import classify
from services.platform.blobs import BlobStore
from services.platform.cosmos import ConcurrentUpdate, Cosmos
from services.platform.health import Readiness, dependency_readiness
from services.platform.lifecycle import close_on_shutdown
from services.platform.settings import Settings, get_settings
from services.registry.acr_paths import match_acr_route
from services.registry.audit import RequestTrail
from services.registry.errors import ErrorCode, RegistryError, unavailable_error
from services.registry.ledger import BlobLedger
from services.registry.metering import REGISTRY_SCOPE_KEY, ROUTE_SCOPE_KEY, observed
from services.registry.reference import match_route, validate_repository_name
from services.registry.store import ArtifactStore
from services.registry.uploads import UploadService
from services.replication.routing import BlobRouter, split_regional

log = logging.getLogger("registry")

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
CORRELATION_HEADER = "X-Ms-Correlation-Request-Id"  # as ACR answers; the audit records carry it too
REGISTRY_CACHE_SECONDS = 30.0


@dataclass(slots=True)
class Call:
    """One request, resolved: which registry, which repository, which reference."""

    api: RegistryApi
    request: Request
    registry: RegistryDoc
    name: str
    reference: str
    caller: Caller  # who is calling; `caller.may(action, repository)` for a route's further questions


Handler = Callable[[Call], Awaitable[Response]]


class ManifestCache:
    """Manifests by digest are immutable, so their bytes can be kept; existence is still checked.

    Bounded by bytes, least recently used out first: manifests range from a few hundred bytes to 4 MiB, so
    a bound on entries bounds nothing (4,096 entries of 4 MiB are 16 GiB). Manifests over `max_item_bytes`
    are never kept: they are rare, each would push out hundreds of small ones, and they are read from Blob
    Storage anyway (they are too big to be inline in their Cosmos document).
    """

    # What an entry costs besides its bytes: the key's strings and tuple and the OrderedDict node.
    ENTRY_OVERHEAD = 200

    def __init__(self, max_bytes: int, max_item_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._max_item_bytes = min(max_item_bytes, max_bytes)
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self.bytes = 0  # what the kept entries cost, by `cost`

    def __len__(self) -> int:
        return len(self._items)

    @classmethod
    def cost(cls, registry: str, digest: str, data: bytes) -> int:
        return len(data) + len(registry) + len(digest) + cls.ENTRY_OVERHEAD

    def get(self, registry: str, digest: str) -> bytes | None:
        data = self._items.get((registry, digest))
        if data is not None:
            self._items.move_to_end((registry, digest))
        return data

    def put(self, registry: str, digest: str, data: bytes) -> None:
        if len(data) > self._max_item_bytes:
            return
        key = (registry, digest)
        previous = self._items.pop(key, None)
        if previous is not None:
            self.bytes -= self.cost(registry, digest, previous)
        self._items[key] = data
        self.bytes += self.cost(registry, digest, data)
        while self.bytes > self._max_bytes:
            (old_registry, old_digest), old = self._items.popitem(last=False)
            self.bytes -= self.cost(old_registry, old_digest, old)


class RegistryApi:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.metadata = Cosmos(self.settings)
        self.artifacts = ArtifactStore(self.metadata, read_seconds=self.settings.read_cache_seconds)
        self.registries = RegistryStore(self.metadata)
        self.blobs = BlobStore(self.settings)
        self.ledger = BlobLedger(self.metadata)
        self.geo = BlobRouter(self.settings, self.metadata, self.blobs)  # which region serves a blob GET
        self.uploads = UploadService(self.settings, self.artifacts, self.blobs, self.ledger)
        self.events = EventPublisher(self.settings, self.metadata)
        self.auth = AuthService(self.settings, self.metadata)
        self.manifests = ManifestCache(
            self.settings.manifest_cache_bytes, self.settings.manifest_cache_max_manifest_bytes
        )
        self._registries: dict[str, tuple[float, RegistryDoc]] = {}
        self._opened = False
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        async with self._opening:
            if not self._opened:
                await self.metadata.open()
                await self.blobs.open()
                await self.events.open()
                self._opened = True

    async def close(self) -> None:
        await self.metadata.close()
        await self.geo.close()
        await self.blobs.close()
        await self.events.close()
        self._opened = False

    async def handle(self, request: Request) -> Response:
        return await observed(request, self._handle)  # traces and metrics (services/registry/metering.py)

    async def _handle(self, request: Request) -> Response:
        trail = RequestTrail.begin(request)  # the audit record (services/registry/audit.py)
        try:
            if not self._opened:
                await self.open()
            response = await self._dispatch(request, trail)
        except RegistryError as error:
            response = error_response(error, request.method)
        except ClientDisconnect:
            # The client went away while sending its body: nothing to answer, nothing broken on our side.
            # Uploads leave their session as it was (services/registry/uploads.py).
            log.info(
                "%s %s: the client disconnected before its request body was complete", request.method, request.url.path
            )
            response = Response(status_code=499)  # nginx's "client closed request"; nobody reads it
        except ConcurrentUpdate:
            # A write lost its optimistic (ETag) race more times than it may retry: contention on one
            # document (for example many uploads of new blobs at once), not a fault. Nothing was written.
            log.warning("%s %s: 503, too many concurrent updates", request.method, request.url.path)
            response = error_response(
                RegistryError(
                    ErrorCode.UNAVAILABLE,
                    "too many concurrent changes of the same data; nothing was changed, retry after 1 s",
                    headers={"Retry-After": "1"},
                ),
                request.method,
            )
        except Exception as exc:
            outage = classify(exc)
            if outage is None:
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                failure = RegistryError(ErrorCode.UNKNOWN, "internal error; the request changed nothing")
            else:
                # Expected while a dependency is down, and the SDK's retries are behind it: no traceback.
                log.warning("%s %s: 503, %s", request.method, request.url.path, outage)
                failure = unavailable_error(outage)
            response = error_response(failure, request.method)
        response.headers.update(API_VERSION_HEADER)
        response.headers[CORRELATION_HEADER] = trail.correlation_id
        if trail.operation:
            trail.finish(request, response, str(self.auth.client(request) or ""))
        return response

    @cached_property
    def readiness(self) -> Readiness:
        """Whether Cosmos DB and Storage answer this API's own clients (`GET /health/ready`)."""
        return dependency_readiness(self.settings, self.metadata, self.blobs)

    async def _dispatch(self, request: Request, trail: RequestTrail) -> Response:
        from services.registry.routes import ROUTES  # the routes import this module's Call

        route = match_route(request.url.path) or match_acr_route(request.url.path)
        if route is None:
            raise RegistryError(ErrorCode.NAME_UNKNOWN, "no such route", status=404)
        request.scope[ROUTE_SCOPE_KEY] = route.kind  # the route template of traces and metrics (metering.py)
        method = "GET" if request.method == "HEAD" and (route.kind, "HEAD") not in ROUTES else request.method
        handler = ROUTES.get((route.kind, method))
        if handler is None:
            raise RegistryError(ErrorCode.UNSUPPORTED, f"{request.method} is not supported on this route", status=405)
        trail.route(route.kind, method, route.reference or "")
        registry = await self.registry_for(request)
        if not isinstance(registry, UnknownRegistry):
            request.scope[REGISTRY_SCOPE_KEY] = registry.registry  # a metric label (metering.py)
        trail.login_server = registry.loginServer
        name = validate_repository_name(route.name) if route.name is not None else ""
        trail.repository = name
        # Who is calling, and may they? (services/auth) A 401 challenge or 403 DENIED leaves from here.
        need = route_need(route.kind, request.method, name, mount_source(route.kind, request))
        caller = await self.auth.admit(request, registry, need)
        trail.identity = caller.identity
        return await handler(Call(self, request, registry, name, route.reference or "", caller))

    async def registry_for(self, request: Request) -> RegistryDoc:
        """The registry named by the Host header (`<name>.<domain>`), else the default registry.

        A name no registry can have is `400 NAME_INVALID` before anything is read (it never reaches the
        database, and the answer does not repeat it). A valid name of a registry that does not exist is
        answered by a stand-in (`auth.service.UnknownRegistry`) that challenges like a real registry and
        admits nobody, so that the answers do not tell which registries exist. The stand-in is not cached,
        so a registry is served as soon as it is created. Registry documents are cached no longer than
        verified credentials are (`AUTH_CACHE_SECONDS`): they hold the access properties and the identity
        that tokens are bound to.
        """
        host = request.headers.get("host", "").rsplit(":", 1)[0].lower()
        suffix = "." + self.settings.registry_domain
        name = host[: -len(suffix)] if host.endswith(suffix) else self.settings.default_registry
        name = split_regional(name)[0]  # a regional endpoint, <name>.<region>.geo.<domain>, is <name>'s
        if not REGISTRY_NAME.fullmatch(name):
            raise RegistryError(
                ErrorCode.NAME_INVALID,
                "the Host header names no valid registry: registry names are 5-50 lower-case letters and digits",
                status=400,
            )
        cached = self._registries.get(name)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        doc = await self.registries.get_registry(name)
        if doc is None or doc.provisioningState == "Deleting":  # a registry being deleted serves nothing
            return unknown_registry(name, login_server(name, self.settings))
        self._registries[name] = (now + min(REGISTRY_CACHE_SECONDS, self.settings.auth_cache_seconds), doc)
        return doc


def mount_source(kind: str, request: Request) -> str:
    """The `from` of a cross-repository mount, if it is a valid name, else "": the challenge asks for pull
    there too (services/auth/permissions.py `Need`). Validated because it is written into a header; an
    invalid one makes the mount fall back to an upload anyway (routes/uploads.py)."""
    if kind != "upload" or request.method != "POST":
        return ""  # before the query is parsed: the hot read paths never pay for it
    query = request.query_params
    source = query.get("from")
    if source is None or "mount" not in query:
        return ""
    try:
        return validate_repository_name(source)
    except RegistryError:
        return ""


def error_response(error: RegistryError, method: str) -> Response:
    headers = dict(error.headers)
    if method == "HEAD":
        return Response(status_code=error.status, headers=headers)
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


_api: RegistryApi | None = None


def registry_api() -> RegistryApi:
    """The process's one RegistryApi (its clients keep connection pools; create them once)."""
    global _api
    if _api is None:
        _api = RegistryApi()
        close_on_shutdown(_api.close)
    return _api
