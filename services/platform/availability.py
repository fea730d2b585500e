"""When Cosmos DB or Blob Storage cannot answer: the one exception for it, and the one place that decides
which SDK failures mean that.

The SDKs retry transient failures themselves (connection refused or reset, timeouts, 408/5xx, Cosmos 429
after the `x-ms-retry-after-ms` it is told); `Cosmos` and `BlobStore` bound those retries by the
`dependency_*` settings so that one call gives up within a request's budget instead of holding it for
minutes. What still fails after that is classified here: `classify(exc)` turns it into `DependencyUnavailable`
(which dependency, whether it was throttling, when to retry), and the HTTP layers answer `503` with
`Retry-After` instead of `500`. Anything else (404, 409, 412, a 403 from a wrong key, a bug) is not an outage
and stays what it is.

Transport errors do not say whose they are, so the clients use `DependencyTransport`, which notes the
dependency's name on the exception (PEP 678 notes: the exception itself, its type and what the SDKs retry on
stay exactly as they were).
"""

from __future__ import annotations

import math
from typing import Any

import aiohttp
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import AioHttpTransport
from azure.cosmos.exceptions import CosmosClientTimeoutError, CosmosHttpResponseError

COSMOS = "cosmos"
STORAGE = "storage"

# After the SDK's own retries gave up, the dependency has been failing for a while already: a few seconds is
# long enough that a fleet of clients does not hammer it while it recovers, short enough that a blip costs
# little.
OUTAGE_RETRY_AFTER_SECONDS = 5.0

# Cosmos DB: 408 request timeout, 429 throttled (request units used up), 503 service unavailable; its 500s
# are not transient (Cosmos asks to report them). Storage: 408, 500 (InternalError, OperationTimedOut), 502,
# 503 (ServerBusy, its way of throttling), 504, the statuses its own retry policy treats as transient.
_COSMOS_TRANSIENT = frozenset({408, 429, 503})
_STORAGE_TRANSIENT = frozenset({408, 500, 502, 503, 504})
_NOTE_PREFIX = "dependency: "


class DependencyUnavailable(Exception):
    """Cosmos DB or Blob Storage did not answer (or throttled) within the retries a request may spend."""

    def __init__(self, dependency: str, retry_after: float, *, throttled: bool = False, cause: str = "") -> None:
        self.dependency = dependency
        self.retry_after = retry_after
        self.throttled = throttled
        self.cause = cause  # the failure's type, for the log; never shown to clients
        what = "throttling" if throttled else "unavailable"
        super().__init__(f"{dependency} {what}" + (f" ({cause})" if cause else ""))

    @property
    def retry_after_seconds(self) -> int:
        """Retry-After is whole seconds; never 0, which would invite an immediate retry storm."""
        return max(1, math.ceil(self.retry_after))


def classify(exc: BaseException) -> DependencyUnavailable | None:
    """The outage `exc` reports, or None when it is not one (then it is a 4XX condition or a bug)."""
    if isinstance(exc, DependencyUnavailable):
        return exc
    cause = type(exc).__name__
    if isinstance(exc, CosmosHttpResponseError):
        status = exc.status_code or 0
        if status not in _COSMOS_TRANSIENT:
            return None
        hint = _cosmos_retry_after(exc.headers) if status == 429 else None
        return DependencyUnavailable(
            COSMOS, hint if hint is not None else OUTAGE_RETRY_AFTER_SECONDS, throttled=status == 429, cause=cause
        )
    if isinstance(exc, CosmosClientTimeoutError):
        return DependencyUnavailable(COSMOS, OUTAGE_RETRY_AFTER_SECONDS, cause=cause)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        # Connection refused, reset, or no answer in time (the timeouts are subclasses of these two).
        return DependencyUnavailable(noted_dependency(exc) or "dependency", OUTAGE_RETRY_AFTER_SECONDS, cause=cause)
    if isinstance(exc, HttpResponseError):
        # Not Cosmos (handled above): Storage is the other service the request path talks to.
        status = exc.status_code or 0
        if status not in _STORAGE_TRANSIENT:
            return None
        busy = getattr(exc, "error_code", None) == "ServerBusy"
        headers = getattr(exc.response, "headers", None) or {}
        hint = _seconds(headers.get("Retry-After"))
        return DependencyUnavailable(
            STORAGE, hint if hint is not None else OUTAGE_RETRY_AFTER_SECONDS, throttled=busy, cause=cause
        )
    if isinstance(exc, aiohttp.ClientConnectionError):
        # Raw aiohttp errors escape the SDKs only while a streamed body is read.
        return DependencyUnavailable("dependency", OUTAGE_RETRY_AFTER_SECONDS, cause=cause)
    return None


def noted_dependency(exc: BaseException) -> str | None:
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, str) and note.startswith(_NOTE_PREFIX):
            return note[len(_NOTE_PREFIX) :]
    return None


def _cosmos_retry_after(headers: Any) -> float | None:
    """Cosmos says how long to back off in milliseconds (`x-ms-retry-after-ms`)."""
    try:
        value = headers.get("x-ms-retry-after-ms") if headers is not None else None
        return float(value) / 1000.0 if value is not None else None
    except (TypeError, ValueError):
        return None


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from Storage, and the default is as good


class DependencyTransport(AioHttpTransport):  # type: ignore[misc]  # azure-core exports it lazily, untyped
    """aiohttp transport that notes whose connection failed on the SDK's transport error."""

    def __init__(self, dependency: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dependency = dependency

    async def send(self, request: Any, **kwargs: Any) -> Any:
        try:
            return await super().send(request, **kwargs)
        except (ServiceRequestError, ServiceResponseError) as exc:
            if noted_dependency(exc) is None:
                exc.add_note(_NOTE_PREFIX + self.dependency)
            raise
