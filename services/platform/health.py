"""Liveness and readiness probes: `GET /health/live` and `GET /health/ready` (function_app.py `health`).

    live   200 while the process serves HTTP. It asks nothing of Cosmos DB or Storage, so a platform that
           restarts instances that are not live does not restart every instance while a dependency is down.
    ready  200 when Cosmos DB and Blob Storage both answer a cheap read through the API's own clients, else
           503 with Retry-After, naming the dependency that does not answer:
           {"status": "unavailable", "dependencies": {"cosmos": "down", "storage": "up"}}

Like a load balancer's probe they need no credentials, so they tell an anonymous caller nothing more: no
endpoints, no account names, no exception texts (those go to the log, once per change). The answer is reused
for `health_cache_seconds`, and probes arriving while a check runs wait for that one check, so a flood of
probes costs each dependency at most one read per interval per instance; a check is cut off after one
attempt's timeouts, so a hanging dependency cannot hold probes either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from azure.core.exceptions import ResourceNotFoundError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.platform.availability import COSMOS, OUTAGE_RETRY_AFTER_SECONDS, STORAGE
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from services.platform.settings import Settings

log = logging.getLogger("health")

Check = Callable[[], Awaitable[object]]

# A document id and a digest that never exist: reading them costs one point read, whose 404 says "up".
_PROBE_ID = "health-probe"
_PROBE_DIGEST = "sha256:" + "0" * 64
_NO_STORE = {"Cache-Control": "no-store"}


class Readiness:
    """Whether each dependency answers, checked at most once per `cache_seconds`, one check at a time."""

    def __init__(
        self,
        checks: Mapping[str, Check],
        cache_seconds: float,
        timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._checks = dict(checks)
        self._cache_seconds = cache_seconds
        self._timeout_seconds = timeout_seconds
        self._clock = clock
        self._answer: dict[str, bool] | None = None
        self._until = 0.0
        self._running: asyncio.Future[dict[str, bool]] | None = None

    async def status(self) -> dict[str, bool]:
        """{dependency: answers?}, from the last check while it is fresh."""
        if self._answer is not None and self._clock() < self._until:
            return dict(self._answer)
        if self._running is None:
            self._running = asyncio.ensure_future(self._check_all())
        # Shielded: a probe that hangs up must not cancel the check the others are waiting for.
        return dict(await asyncio.shield(self._running))

    async def _check_all(self) -> dict[str, bool]:
        try:
            names = list(self._checks)
            results = await asyncio.gather(*(self._check(name) for name in names))
            answer = dict(zip(names, results, strict=True))
            previous = self._answer or {}
            for name, up in answer.items():
                if up and previous.get(name) is False:
                    log.info("readiness: %s answers again", name)
            self._answer, self._until = answer, self._clock() + self._cache_seconds
            return answer
        finally:
            self._running = None

    async def _check(self, name: str) -> bool:
        try:
            await asyncio.wait_for(self._checks[name](), self._timeout_seconds)
        except Exception as exc:
            if (self._answer or {}).get(name, True):
                # Logged when it goes down, not on every probe; the text names hosts, so never in the answer.
                log.warning("readiness: %s does not answer: %s: %s", name, type(exc).__name__, exc)
            return False
        return True


def dependency_readiness(settings: Settings, metadata: Cosmos, blobs: BlobStore) -> Readiness:
    """Readiness of Cosmos DB and Blob Storage, through the clients the API itself uses."""

    async def cosmos() -> None:
        await metadata.open()
        try:
            await metadata.container("registries").read_item(_PROBE_ID, partition_key=_PROBE_ID)
        except ResourceNotFoundError:
            pass

    async def storage() -> None:
        await blobs.open()
        await blobs.size(settings.default_registry, _PROBE_DIGEST)  # a missing container is a 404, too

    # One attempt's worth: the probe tells how things are now, not after the SDK's retries.
    timeout = settings.dependency_connect_timeout_seconds + settings.cosmos_read_timeout_seconds
    return Readiness({COSMOS: cosmos, STORAGE: storage}, settings.health_cache_seconds, timeout)


async def health_probe(request: Request, readiness: Readiness) -> Response:
    """The answer to `GET /health/<probe>`; the last path segment picks the probe."""
    probe = request.url.path.rstrip("/").rsplit("/", 1)[-1]
    if probe == "live":
        return JSONResponse({"status": "live"}, headers=_NO_STORE)
    if probe != "ready":
        return JSONResponse({"status": "unknown probe: use /health/live or /health/ready"}, 404, _NO_STORE)
    status = await readiness.status()
    dependencies = {name: "up" if up else "down" for name, up in status.items()}
    if all(status.values()):
        return JSONResponse({"status": "ready", "dependencies": dependencies}, headers=_NO_STORE)
    headers = _NO_STORE | {"Retry-After": str(int(OUTAGE_RETRY_AFTER_SECONDS))}
    return JSONResponse({"status": "unavailable", "dependencies": dependencies}, 503, headers)
