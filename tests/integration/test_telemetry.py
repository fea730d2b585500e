"""Traces follow a push from the HTTP request through the outbox and the bus to each consumer; metrics count
pushes and pulls as ACR does, with bounded labels.

Everything runs in this process, so that an in-memory span exporter sees every span: the function table of
function_app.py served through its HTTP functions (as the devhost serves them) and its Service Bus functions
fed by the devhost's trigger runner from the local bus (storage queues on Azurite, a topic of this module's
own), against the session's real emulators; a real HTTP receiver takes the webhook deliveries.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette

import services.registry.app as registry_app
import services.scanning.worker as scanning_worker
import services.webhooks.delivery as webhook_delivery
from services.devhost.server import http_routes
from services.devhost.triggers import TriggerRunner
from services.events.actions import request_info
from services.events.models import EventTarget, RegistryEvent
from services.events.outbox import outbox_for
from services.management.access import update_registry
from services.management.registries import create_registry
from services.platform import telemetry as telemetry_module
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from services.platform.lifecycle import close_all
from services.platform.settings import Settings, get_settings
from services.registry.store import repo_key
from services.webhooks.resources import WebhookChanges, put_webhook
from tests.function_table import function_table
from tests.integration.conftest import settings_from_env, unique_registry_name
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PUSH_SPAN = "PUT /v2/{name}/manifests/{reference}"
PULL_SPAN = "GET /v2/{name}/manifests/{reference}"


@dataclass
class Traced:
    settings: Settings
    metadata: Cosmos
    blobs: BlobStore
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    app: Starlette

    def client(self, registry: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=("127.0.0.1", 40000)),
            base_url="http://testserver",
            headers={"Host": f"{registry}.azurecr.localhost"},
            timeout=60,
        )

    async def new_registry(self) -> str:
        name = unique_registry_name()
        await create_registry(self.metadata, self.blobs, self.settings, name, "Premium")
        await update_registry(self.metadata, name, auth_disabled=True)
        return name

    async def wait_for_spans(self, found: Callable[[list[ReadableSpan]], bool], seconds: float = 30) -> list[Any]:
        for _ in range(int(seconds / 0.05)):
            spans = list(self.spans.get_finished_spans())
            if found(spans):
                return spans
            await asyncio.sleep(0.05)
        raise AssertionError(f"spans never arrived: {[s.name for s in self.spans.get_finished_spans()]}")

    def counter(self, name: str, **labels: str) -> float:
        """The value of a counter's (or gauge's) data point with exactly these labels (0 when there is none)."""
        data = self.metrics.get_metrics_data()
        total = 0.0
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name.lower():  # OpenTelemetry keeps instrument names in lower case
                        continue
                    for point in metric.data.data_points:
                        if dict(point.attributes or {}) == labels:
                            total += point.value
        return total

    def metric_attributes(self) -> list[dict[str, Any]]:
        data = self.metrics.get_metrics_data()
        return [
            dict(point.attributes or {})
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            for point in metric.data.data_points
        ]


@pytest.fixture(scope="module")
def traced_env(stack: dict[str, str]) -> Iterator[dict[str, str]]:
    """This process's settings point at the session's emulators, with a bus topic of this module's own."""
    env = stack | {
        "BUS_TOPIC": "tl" + uuid.uuid4().hex[:10],
        "SCANNER_ENABLED": "true",
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
        "WEBHOOK_TIMEOUT_SECONDS": "5",
        "OUTBOX_RELAY_AFTER_SECONDS": "1",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        get_settings.cache_clear()
        yield env
    get_settings.cache_clear()


@pytest.fixture(scope="module")
async def traced(traced_env: dict[str, str]) -> AsyncIterator[Traced]:
    spans, metrics = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry_module.install(tracer_provider, MeterProvider(metric_readers=[metrics]))
    settings = settings_from_env(traced_env)
    metadata, blobs = Cosmos(settings), BlobStore(settings)
    await metadata.open()
    await blobs.open()
    table = function_table()
    runner = TriggerRunner(get_settings(), timers=False)
    consumers = ("deliver_webhooks", "scan_images", "replicate_images", "trigger_base_image_runs")
    await runner.start([table[name] for name in consumers])
    try:
        yield Traced(settings, metadata, blobs, spans, metrics, Starlette(routes=http_routes(table.values())))
    finally:
        await runner.stop()
        await close_all()
        await metadata.close()
        await blobs.close()
        # This module's process-wide objects (made with its settings) go with it.
        registry_app._api, webhook_delivery._dispatcher, scanning_worker._scanner = None, None, None
        telemetry_module.install(None, None)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as instance:
        yield instance


async def push_image(http: httpx.AsyncClient, repo: str, tag: str) -> str:
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": uuid.uuid4().hex}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    uploaded = await http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": config_digest}, content=config)
    assert uploaded.status_code == 201, uploaded.text
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    response = await http.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert response.status_code == 201, response.text
    return response.headers["Docker-Content-Digest"]


def in_trace(spans: list[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {[s.name for s in spans]}"
    return found[0]


def child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return span.parent is not None and parent.context is not None and span.parent.span_id == parent.context.span_id


async def test_a_push_is_one_trace_from_the_request_through_the_bus_to_every_consumer(
    traced: Traced, receiver: WebhookReceiver
) -> None:
    name = await traced.new_registry()
    await put_webhook(
        traced.metadata, name, "tracehook", WebhookChanges(service_uri=receiver.url + "/hook", actions=["push"])
    )
    async with traced.client(name) as http:
        digest = await push_image(http, "team/app", "v1")

    def complete(spans: list[ReadableSpan]) -> bool:
        pushes = [s for s in spans if s.name == PUSH_SPAN and s.attributes and s.attributes.get("url.path", "")]
        pushes = [s for s in pushes if "team/app" in str(s.attributes.get("url.path") if s.attributes else "")]
        if not pushes or pushes[-1].context is None:
            return False
        names = {s.name for s in in_trace(spans, pushes[-1].context.trace_id)}
        return {"webhook delivery", "image scan", "replication process", "base image trigger"} <= names

    spans = await traced.wait_for_spans(complete)
    request = [s for s in spans if s.name == PUSH_SPAN and "team/app" in str((s.attributes or {}).get("url.path"))][-1]
    assert request.context is not None
    trace = in_trace(spans, request.context.trace_id)

    # the request: a server span named by its route template, with the HTTP semantic conventions
    assert request.kind == SpanKind.SERVER and request.parent is None
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/v2/{name}/manifests/{reference}"
    assert request.attributes["http.request.method"] == "PUT"
    assert request.attributes["http.response.status_code"] == 201
    # the outbox publish, parented by the request through the traceparent the outbox document kept
    publish = one(trace, "registry-events publish")
    assert publish.kind == SpanKind.PRODUCER and child_of(publish, request)
    # each consumer continues the trace from the message's properties, with a span per delivery and scan
    webhooks, scanning = one(trace, "webhooks process"), one(trace, "scanning process")
    assert webhooks.kind == SpanKind.CONSUMER and child_of(webhooks, publish)
    assert scanning.kind == SpanKind.CONSUMER and child_of(scanning, publish)
    assert child_of(one(trace, "webhook delivery"), webhooks)
    assert child_of(one(trace, "image scan"), scanning)
    # replication (one region: nothing to copy) and the tasks' base image trigger take it in the same trace
    replication, tasks = one(trace, "replication process"), one(trace, "tasks process")
    assert child_of(replication, publish) and child_of(tasks, publish)
    assert child_of(one(trace, "base image trigger"), tasks)
    # the receiver really got it, and the outbox document in Cosmos carries the push's trace context
    receiver.wait_for(lambda r: len(r.requests) >= 1)
    assert receiver.requests[0].json()["target"]["digest"] == digest
    # ... with the delivery span's `traceparent`, so a receiver that traces continues the same trace
    delivered = one(trace, "webhook delivery")
    assert delivered.context is not None
    headers = {k.lower(): v for k, v in receiver.requests[0].headers.items()}
    _, trace_id, parent_id, _ = headers["traceparent"].split("-")
    assert (trace_id, parent_id) == (f"{request.context.trace_id:032x}", f"{delivered.context.span_id:016x}")
    outboxes = [
        item
        async for item in traced.metadata.query(
            "artifacts",
            "SELECT * FROM c WHERE c.repo = @repo AND c.type = 'outbox'",
            {"@repo": repo_key(name, "team/app")},
            repo_key(name, "team/app"),
        )
    ]
    assert len(outboxes) == 1
    assert outboxes[0]["traceparent"].split("-")[1] == f"{request.context.trace_id:032x}"


async def test_a_pull_is_a_trace_of_its_own(traced: Traced) -> None:
    name = await traced.new_registry()
    async with traced.client(name) as http:
        await push_image(http, "pulled", "v1")
        pulled = await http.get("/v2/pulled/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert pulled.status_code == 200
    spans = list(traced.spans.get_finished_spans())
    pull = [s for s in spans if s.name == PULL_SPAN and "/v2/pulled/" in str((s.attributes or {}).get("url.path"))]
    assert len(pull) == 1 and pull[0].context is not None
    assert pull[0].parent is None
    assert [s.name for s in in_trace(spans, pull[0].context.trace_id)] == [PULL_SPAN]
    push = [s for s in spans if s.name == PUSH_SPAN and "/v2/pulled/" in str((s.attributes or {}).get("url.path"))]
    assert push[0].context is not None and push[0].context.trace_id != pull[0].context.trace_id


async def test_a_relayed_outbox_joins_the_trace_of_the_change_that_wrote_it(traced: Traced) -> None:
    """The process died between the commit and the publish: the relay publishes later, in the same trace."""
    name = await traced.new_registry()
    tracer = telemetry_module.telemetry().tracer
    assert tracer is not None
    with tracer.start_as_current_span("the change") as change:
        target = EventTarget(mediaType=OCI_MANIFEST, digest="sha256:" + "a" * 64, repository="relayed", tag="v1")
        event = RegistryEvent(action="push", target=target, request=request_info({}, "PUT"))
        outbox = outbox_for(name, repo_key(name, "relayed"), [event])
    assert outbox is not None and outbox.traceparent is not None
    outbox.created = (datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="milliseconds")[:-6] + "Z"
    await traced.metadata.create("artifacts", outbox)
    publisher = registry_app.registry_api().events
    await registry_app.registry_api().open()
    assert await publisher.relay() >= 1
    spans = list(traced.spans.get_finished_spans())
    relayed = [s for s in spans if s.name == "registry-events publish" and child_of(s, change)]  # type: ignore[arg-type]
    assert len(relayed) == 1


async def test_metrics_count_manifest_gets_and_puts_as_acr_does_with_bounded_labels(traced: Traced) -> None:
    name = await traced.new_registry()
    async with traced.client(name) as http:
        await push_image(http, "counted/app", "v1")
        assert (await http.get("/v2/counted/app/manifests/v1", headers={"Accept": OCI_MANIFEST})).status_code == 200
        assert (await http.head("/v2/counted/app/manifests/v1", headers={"Accept": OCI_MANIFEST})).status_code == 200
        assert (await http.get("/v2/counted/app/manifests/missing")).status_code == 404
        refused = await http.put(
            "/v2/counted/app/manifests/v2", content=b"{not json", headers={"Content-Type": OCI_MANIFEST}
        )
        assert refused.status_code == 400
    assert traced.counter("TotalPushCount", registry=name) == 2
    assert traced.counter("SuccessfulPushCount", registry=name) == 1
    assert traced.counter("TotalPullCount", registry=name) == 2  # the HEAD is not a pull
    assert traced.counter("SuccessfulPullCount", registry=name) == 1
    assert traced.counter("StorageUsed", registry=name) > 0  # the config blob, as the ledger counted it

    # A Host naming a registry that does not exist mints no label value.
    ghost = unique_registry_name()
    async with traced.client(ghost) as http:
        assert (await http.get("/v2/ghost/manifests/v1")).status_code in (401, 404)
    attributes = traced.metric_attributes()
    assert all(a.get("registry") != ghost for a in attributes)
    # Labels are route templates, methods, status classes and registries: no repository, tag or digest.
    for labels in attributes:
        assert set(labels) <= {"registry", "http.route", "http.request.method", "status_class"}
        assert not any("counted" in str(value) or "sha256" in str(value) for value in labels.values())
    routes = {a["http.route"] for a in attributes if "http.route" in a}
    assert "/v2/{name}/manifests/{reference}" in routes and "/v2/{name}/blobs/uploads/" in routes
    statuses = {a["status_class"] for a in attributes if a.get("registry") == name and "status_class" in a}
    assert statuses == {"2xx", "4xx"}


async def test_token_management_and_health_requests_are_spans_and_timed_by_route_template(traced: Traced) -> None:
    name = await traced.new_registry()
    arm_path = (
        "/subscriptions/Sub-1/RESOURCEGROUPS/rg-1/providers/Microsoft.ContainerRegistry/registries/"
        f"{name}/webhooks/someHook"
    )
    async with traced.client(name) as http:
        token = await http.get("/oauth2/token", params={"service": f"{name}.azurecr.localhost", "scope": ""})
        assert token.status_code == 401, token.text  # no anonymous pull here: refused, still timed
        arm = await http.get(arm_path, params={"api-version": "2025-11-01"})
        assert arm.status_code == 401  # no bearer: refused, and still one span and one timing
        unknown = await http.get("/subscriptions/x/nothing/here", params={"api-version": "2025-11-01"})
        assert unknown.status_code in (401, 404)
        assert (await http.get("/health/live")).status_code == 200
    arm_route = (
        "/subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.containerregistry/registries/{registry}"
        "/webhooks/{webhook}"
    )
    spans = list(traced.spans.get_finished_spans())
    routes = {(s.attributes or {}).get("url.path"): (s.attributes or {}).get("http.route") for s in spans}
    assert routes["/oauth2/token"] == "/oauth2/token"
    assert routes[arm_path] == arm_route  # lower-cased, every name a placeholder: bounded labels
    assert routes["/subscriptions/x/nothing/here"] == "/subscriptions/{unmatched}"
    assert routes["/health/live"] == "/health/{probe}"
    named = {s.name for s in spans}
    assert {"GET /oauth2/token", f"GET {arm_route}", "GET /health/{probe}"} <= named
    timed = {(a.get("http.route"), a.get("registry")) for a in traced.metric_attributes() if "http.route" in a}
    assert ("/oauth2/token", name) in timed  # the registry the Host named exists: labelled
    assert (arm_route, None) in timed and ("/health/{probe}", None) in timed
    assert not any(name in str(route) or "somehook" in str(route).lower() for route, _ in timed)
