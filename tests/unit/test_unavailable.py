"""Cosmos DB or Storage down or throttling: which failures are outages, what a client is told, how the SDK
clients are bounded, and the readiness probe's cache (issue 8, item 17).

Pure logic: the classifier is fed the SDKs' own exception types; the transport test fails a real connection.
Real Cosmos throttling cannot be produced here (the emulator never answers 429), so the 429 path is
covered by the classifier and by the SDK's retry options, not end to end.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.rest import HttpRequest
from azure.cosmos.aio import CosmosClient
from azure.cosmos.exceptions import CosmosClientTimeoutError, CosmosHttpResponseError
from starlette.requests import Request

from services.devhost.stack import free_port
from services.platform.availability import (
    COSMOS,
    STORAGE,
    DependencyTransport,
    DependencyUnavailable,
    classify,
)
from services.platform.blobs import storage_client_options
from services.platform.cosmos import cosmos_retry_options
from services.platform.health import Readiness, health_probe
from services.platform.settings import COSMOS_EMULATOR_KEY, Settings
from services.registry.app import error_response
from services.registry.errors import ErrorCode, unavailable_error


def cosmos_error(status: int, headers: dict[str, str] | None = None) -> CosmosHttpResponseError:
    error = CosmosHttpResponseError(status_code=status, message="Request rate is large")
    error.headers = headers or {}
    return error


def storage_error(status: int, code: str = "") -> HttpResponseError:
    error = HttpResponseError(message="The server is busy.")
    error.status_code = status
    error.error_code = code
    return error


# --- which failures are outages --------------------------------------------------------------------------
def test_cosmos_429_is_throttling_with_the_wait_cosmos_asks_for() -> None:
    outage = classify(cosmos_error(429, {"x-ms-retry-after-ms": "1500"}))
    assert outage is not None
    assert (outage.dependency, outage.throttled) == (COSMOS, True)
    assert outage.retry_after_seconds == 2  # whole seconds, rounded up


def test_cosmos_429_without_a_hint_and_a_tiny_hint_still_say_at_least_a_second() -> None:
    assert classify(cosmos_error(429)).retry_after_seconds >= 1  # type: ignore[union-attr]
    assert classify(cosmos_error(429, {"x-ms-retry-after-ms": "8"})).retry_after_seconds == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("status", [408, 503])
def test_cosmos_timeouts_and_503_are_outages(status: int) -> None:
    outage = classify(cosmos_error(status))
    assert outage is not None and outage.dependency == COSMOS and not outage.throttled


def test_cosmos_client_timeout_is_an_outage() -> None:
    assert classify(CosmosClientTimeoutError()) is not None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412, 413, 500])
def test_other_cosmos_errors_are_not_outages(status: int) -> None:
    # 4XX are ours to report as they are; Cosmos 500s are not transient (Cosmos asks to report them).
    assert classify(cosmos_error(status)) is None


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_storage_5xx_are_outages(status: int) -> None:
    outage = classify(storage_error(status))
    assert outage is not None and outage.dependency == STORAGE


def test_storage_server_busy_is_throttling() -> None:
    outage = classify(storage_error(503, "ServerBusy"))
    assert outage is not None and outage.throttled


@pytest.mark.parametrize("status", [400, 403, 404, 409, 412, 416])
def test_storage_4xx_are_not_outages(status: int) -> None:
    assert classify(storage_error(status)) is None
    assert classify(ResourceNotFoundError("gone")) is None


@pytest.mark.parametrize(
    "error",
    [
        ServiceRequestError("Cannot connect to host"),
        ServiceResponseError("Server disconnected"),
        aiohttp.ServerDisconnectedError(),
    ],
)
def test_transport_failures_are_outages(error: Exception) -> None:
    assert classify(error) is not None


@pytest.mark.parametrize("error", [ValueError("x"), RuntimeError("bug"), KeyError("k"), TimeoutError()])
def test_bugs_are_not_outages(error: Exception) -> None:
    assert classify(error) is None


async def test_the_transport_names_the_dependency_whose_connection_failed() -> None:
    port = free_port()  # nothing listens there
    async with DependencyTransport(STORAGE, connection_timeout=2) as transport:
        with pytest.raises(ServiceRequestError) as info:
            await transport.send(HttpRequest("GET", f"http://127.0.0.1:{port}/devstoreaccount1"))
    outage = classify(info.value)
    assert outage is not None and outage.dependency == STORAGE


# --- what a client is told --------------------------------------------------------------------------------
def test_an_outage_is_503_unavailable_with_retry_after_and_nothing_internal() -> None:
    cause = ServiceRequestError("Cannot connect to host 10.1.2.3:443 AccountKey=c2VjcmV0")
    error = unavailable_error(classify(cause))  # type: ignore[arg-type]
    response = error_response(error, "GET")
    assert response.status_code == 503
    assert error.code is ErrorCode.UNAVAILABLE
    assert int(response.headers["Retry-After"]) >= 1
    body = json.loads(bytes(response.body))
    assert body["errors"][0]["code"] == "UNAVAILABLE"
    assert "10.1.2.3" not in response.body.decode() and "AccountKey" not in response.body.decode()


def test_throttling_is_503_with_the_wait_cosmos_asked_for() -> None:
    error = unavailable_error(classify(cosmos_error(429, {"x-ms-retry-after-ms": "2500"})))  # type: ignore[arg-type]
    response = error_response(error, "HEAD")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "3"
    assert response.body == b""  # HEAD: headers only


# --- the SDK clients are bounded -----------------------------------------------------------------------------
async def test_the_cosmos_client_takes_the_bounded_retry_options() -> None:
    settings = Settings(
        dependency_retry_total=1,
        dependency_connect_timeout_seconds=2,
        cosmos_read_timeout_seconds=3,
        cosmos_throttle_wait_seconds=4,
    )
    client = CosmosClient("https://127.0.0.1:1", COSMOS_EMULATOR_KEY, **cosmos_retry_options(settings))
    try:
        policy = client.client_connection.connection_policy
        assert (policy.RequestTimeout, policy.ReadTimeout) == (2, 3)
        assert policy.RetryOptions.MaxWaitTimeInSeconds == 4
        assert policy.ConnectionRetryConfiguration.total_retries == 1
        assert policy.RetryNonIdempotentWrites == 0  # a write whose answer was lost is not sent again
    finally:
        await client.close()


async def test_the_storage_client_retries_briefly_with_short_timeouts() -> None:
    settings = Settings(dependency_retry_total=1, dependency_retry_backoff_seconds=0.2, storage_read_timeout_seconds=7)
    options = storage_client_options(settings)
    retry = options["retry_policy"]
    assert retry.total_retries == 1 and not retry.retry_to_secondary
    assert all(0.1 <= retry.get_backoff_time({}) <= 0.3 for _ in range(50))
    config = options["transport"].connection_config
    assert (config.timeout, config.read_timeout) == (settings.dependency_connect_timeout_seconds, 7)
    await options["transport"].close()


# --- the readiness probe ------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def counting(calls: dict[str, int], name: str, fail: Exception | None = None, gate: asyncio.Event | None = None):
    async def check() -> None:
        calls[name] = calls.get(name, 0) + 1
        if gate is not None:
            await gate.wait()
        if fail is not None:
            raise fail

    return check


async def test_readiness_reuses_its_answer_for_the_cache_interval() -> None:
    calls: dict[str, int] = {}
    clock = FakeClock()
    readiness = Readiness({"cosmos": counting(calls, "cosmos")}, cache_seconds=2.0, timeout_seconds=5.0, clock=clock)
    for _ in range(20):
        assert await readiness.status() == {"cosmos": True}
    assert calls == {"cosmos": 1}
    clock.now += 2.5
    await readiness.status()
    assert calls == {"cosmos": 2}


async def test_a_flood_of_probes_costs_one_check() -> None:
    calls: dict[str, int] = {}
    gate = asyncio.Event()
    readiness = Readiness(
        {"cosmos": counting(calls, "cosmos", gate=gate), "storage": counting(calls, "storage", gate=gate)},
        cache_seconds=2.0,
        timeout_seconds=5.0,
    )
    probes = [asyncio.ensure_future(readiness.status()) for _ in range(200)]
    await asyncio.sleep(0)
    gate.set()
    answers = await asyncio.gather(*probes)
    assert calls == {"cosmos": 1, "storage": 1}
    assert all(answer == {"cosmos": True, "storage": True} for answer in answers)


async def test_a_probe_that_hangs_up_does_not_cancel_the_check_others_wait_for() -> None:
    calls: dict[str, int] = {}
    gate = asyncio.Event()
    readiness = Readiness({"cosmos": counting(calls, "cosmos", gate=gate)}, cache_seconds=2.0, timeout_seconds=5.0)
    first = asyncio.ensure_future(readiness.status())
    second = asyncio.ensure_future(readiness.status())
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == {"cosmos": True}
    assert calls == {"cosmos": 1}


async def test_a_hanging_dependency_is_down_after_the_check_timeout() -> None:
    readiness = Readiness(
        {"cosmos": counting({}, "cosmos", gate=asyncio.Event())}, cache_seconds=2.0, timeout_seconds=0.05
    )
    assert await readiness.status() == {"cosmos": False}


def probe_request(path: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:5000")],
            "scheme": "http",
            "server": ("127.0.0.1", 5000),
        }
    )


async def test_readiness_names_the_dependency_down_and_nothing_else() -> None:
    secret = ServiceRequestError("Cannot connect to host cosmos-prod.documents.azure.com:443 key=c2VjcmV0")
    readiness = Readiness(
        {"cosmos": counting({}, "cosmos", fail=secret), "storage": counting({}, "storage")},
        cache_seconds=2.0,
        timeout_seconds=5.0,
    )
    response = await health_probe(probe_request("/health/ready"), readiness)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["Cache-Control"] == "no-store"
    assert json.loads(bytes(response.body)) == {
        "status": "unavailable",
        "dependencies": {"cosmos": "down", "storage": "up"},
    }


async def test_liveness_asks_no_dependency() -> None:
    calls: dict[str, int] = {}
    readiness = Readiness({"cosmos": counting(calls, "cosmos", fail=RuntimeError("down"))}, 2.0, 5.0)
    response = await health_probe(probe_request("/health/live"), readiness)
    assert response.status_code == 200
    assert calls == {}
    assert (await health_probe(probe_request("/health/other"), readiness)).status_code == 404


def test_dependency_unavailable_text_is_for_the_log() -> None:
    outage = DependencyUnavailable(COSMOS, 0.2, throttled=True, cause="CosmosHttpResponseError")
    assert str(outage) == "cosmos throttling (CosmosHttpResponseError)"
    assert outage.retry_after_seconds == 1


async def test_a_write_that_keeps_losing_its_etag_race_is_a_503_not_a_500() -> None:
    """ConcurrentUpdate escaping a route (a document too contended to win within its retries) is the
    registry being busy: 503 UNAVAILABLE with Retry-After, never an internal error."""
    from starlette.requests import Request

    from services.platform.cosmos import ConcurrentUpdate
    from services.platform.settings import Settings
    from services.registry.app import RegistryApi

    api = RegistryApi(Settings())
    api._opened = True  # nothing here reaches a database: the dispatch below raises at once

    async def contended(request: Request, trail: object) -> None:
        raise ConcurrentUpdate("usage:storage")

    api._dispatch = contended  # type: ignore[method-assign,assignment]
    scope = {"type": "http", "method": "PUT", "path": "/v2/app/blobs/uploads/x", "headers": [], "query_string": b""}
    response = await api.handle(Request(scope))
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert b'"UNAVAILABLE"' in response.body
