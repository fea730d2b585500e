"""Traces and metrics (OpenTelemetry), configured once per process from the settings; off by default.

    exporters       APPLICATIONINSIGHTS_CONNECTION_STRING set   azure-monitor-opentelemetry (traces, metrics,
                                                                the Azure SDKs' own dependency spans)
                    else OTEL_EXPORTER_OTLP_ENDPOINT set        OTLP over HTTP (/v1/traces, /v1/metrics)
                    else TELEMETRY_CONSOLE=true                 spans and metrics printed to stdout
                    METRICS_ENDPOINT=true (any of the above)    Prometheus text at GET /metrics
                    TELEMETRY_SAMPLING_RATIO                    share of traces kept, decided at the root
                                                                and followed downstream (whole or absent)
                    none of them                                off: no provider, no SDK imported, every hook
                                                                below returns at its first line

    one push, one trace
      SERVER   "PUT /v2/{name}/manifests/{reference}"    the request (`observed_http`; the data plane's route
                                                         templates in services/registry/metering.py, the
                                                         ARM ones in services/management/api.py)
      PRODUCER "registry-events publish"                 the outbox's events put on the bus, the parent read
                                                         from the W3C `traceparent` the outbox document kept,
                                                         so a relayed outbox joins the push's trace too; each
                                                         message carries `traceparent` and `Diagnostic-Id`
                                                         (what the Azure SDKs write) in its properties
      CONSUMER "<subscription> process"                  each bus-triggered function (webhooks, scanning,
                                                         replication, tasks), its parent read from the message
      INTERNAL "webhook delivery", "image scan", ...      one per delivery, scan, copy, triggered run (a
                                                         webhook POST carries its `traceparent`)

    metrics (ACR's names; bounded labels: never a repository, tag, digest or path)
      TotalPullCount, SuccessfulPullCount       a manifest GET (successful: answered 2xx), by registry
      TotalPushCount, SuccessfulPushCount       a manifest PUT, by registry
      StorageUsed                               bytes the ledger counts for a registry, as this process last
                                                saw them (written or read)
      RunDuration                               a task run, start to finish, in milliseconds, by registry
      http.server.request.duration              seconds, by route template, method, status class, registry

`registry` is a label only for registries that exist (a Host naming an unknown registry is counted without
one): the number of label values is bounded by the registries an owner created, never by what callers send.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.requests import Request
from starlette.responses import Response

from services.platform.settings import Settings

if TYPE_CHECKING:  # the SDK is imported only when telemetry is on
    from opentelemetry.metrics import CallbackOptions, Counter, Histogram, MeterProvider, Observation
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.trace import TracerProvider

log = logging.getLogger("telemetry")

INSTRUMENTATION = "acr-serverless"
TRACEPARENT = "traceparent"
DIAGNOSTIC_ID = "Diagnostic-Id"  # the property the Azure SDKs write the W3C traceparent into
_W3C = TraceContextTextMapPropagator()
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()
# Exponential-ish buckets for request seconds: 1 ms to 60 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RUN_BUCKETS_MS = (1_000.0, 5_000.0, 15_000.0, 30_000.0, 60_000.0, 120_000.0, 300_000.0, 900_000.0, 3_600_000.0)


@dataclass
class Telemetry:
    """What is on in this process: a tracer (None: tracing off) and the instruments (None: metrics off)."""

    tracer: Tracer | None = None
    meter_provider: MeterProvider | None = None
    prometheus: MetricReader | None = None  # the reader behind GET /metrics
    prometheus_registry: Any = None
    storage_used: dict[str, int] = field(default_factory=dict)
    _storage_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.metering = self.meter_provider is not None
        self.enabled = self.tracer is not None or self.metering
        if self.meter_provider is None:
            return
        meter = self.meter_provider.get_meter(INSTRUMENTATION)
        self.pulls: Counter = meter.create_counter("TotalPullCount", unit="1", description="Image pulls in total")
        self.pulls_ok: Counter = meter.create_counter(
            "SuccessfulPullCount", unit="1", description="Successful image pulls"
        )
        self.pushes: Counter = meter.create_counter("TotalPushCount", unit="1", description="Image pushes in total")
        self.pushes_ok: Counter = meter.create_counter(
            "SuccessfulPushCount", unit="1", description="Successful image pushes"
        )
        self.requests: Histogram = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of the registry's HTTP requests",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.runs: Histogram = meter.create_histogram(
            "RunDuration",
            unit="ms",
            description="Duration of task runs",
            explicit_bucket_boundaries_advisory=RUN_BUCKETS_MS,
        )
        meter.create_observable_gauge(
            "StorageUsed", callbacks=[self._observe_storage], unit="By", description="Storage used by a registry"
        )

    def _observe_storage(self, options: CallbackOptions) -> Iterator[Observation]:
        from opentelemetry.metrics import Observation

        with self._storage_lock:
            values = list(self.storage_used.items())
        for registry, used in values:
            yield Observation(used, {"registry": registry})

    # --- metrics ----------------------------------------------------------------------------------------
    def count_image_request(self, pull: bool, registry: str | None, succeeded: bool) -> None:
        if not self.metering:
            return
        labels = {"registry": registry} if registry else {}
        (self.pulls if pull else self.pushes).add(1, labels)
        if succeeded:
            (self.pulls_ok if pull else self.pushes_ok).add(1, labels)

    def observe_request(self, route: str, method: str, status: int, seconds: float, registry: str | None) -> None:
        if not self.metering:
            return
        labels = {"http.route": route, "http.request.method": method, "status_class": f"{status // 100}xx"}
        if registry:
            labels["registry"] = registry
        self.requests.record(seconds, labels)

    def observe_run(self, registry: str, milliseconds: float) -> None:
        if self.metering:
            self.runs.record(milliseconds, {"registry": registry})

    def observe_storage(self, registry: str, used: int) -> None:
        if self.metering:
            with self._storage_lock:
                self.storage_used[registry] = used

    def prometheus_text(self) -> bytes | None:
        """The metrics in Prometheus' text format; None when GET /metrics is off."""
        if self.prometheus is None:
            return None
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.prometheus_registry))

    # --- traces -----------------------------------------------------------------------------------------
    def traceparent(self) -> str | None:
        """The W3C `traceparent` of the current span (None when tracing is off or there is no span)."""
        if self.tracer is None:
            return None
        carrier: dict[str, str] = {}
        _W3C.inject(carrier)
        return carrier.get(TRACEPARENT)

    def server_span(
        self, name: str, headers: Mapping[str, str], attributes: Mapping[str, Any]
    ) -> contextlib.AbstractContextManager[Span | None]:
        """The span of one HTTP request, continuing the caller's trace when it sent a `traceparent`."""
        if self.tracer is None:
            return _NO_SPAN
        parent = _W3C.extract({TRACEPARENT: headers[TRACEPARENT]}) if TRACEPARENT in headers else None
        return self.tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=dict(attributes), record_exception=False
        )

    @contextlib.contextmanager
    def producer_span(self, traceparent: str | None, attributes: Mapping[str, Any]) -> Iterator[dict[str, str]]:
        """Publishing to the bus under the trace `traceparent` names; yields the properties that carry this
        span's context to the consumers (empty when tracing is off)."""
        if self.tracer is None:
            yield {}
            return
        parent = _W3C.extract({TRACEPARENT: traceparent}) if traceparent else None
        with self.tracer.start_as_current_span(
            "registry-events publish", context=parent, kind=SpanKind.PRODUCER, attributes=dict(attributes)
        ):
            carrier: dict[str, str] = {}
            _W3C.inject(carrier)
            value = carrier.get(TRACEPARENT)
            yield {TRACEPARENT: value, DIAGNOSTIC_ID: value} if value else {}

    def consumer_span(
        self, subscription: str, properties: Mapping[str, Any] | None, message_id: str | None = None
    ) -> contextlib.AbstractContextManager[Span | None]:
        """A bus-triggered function's span, continuing the trace its message's properties carry."""
        if self.tracer is None:
            return _NO_SPAN
        parent_id = (properties or {}).get(TRACEPARENT) or (properties or {}).get(DIAGNOSTIC_ID)
        parent = _W3C.extract({TRACEPARENT: str(parent_id)}) if parent_id else otel_context.Context()
        attributes: dict[str, Any] = {
            "messaging.system": "servicebus",
            "messaging.operation.type": "process",
            "messaging.destination.name": "registry-events",
            "messaging.destination.subscription.name": subscription,
        }
        if message_id:
            attributes["messaging.message.id"] = message_id
        return self.tracer.start_as_current_span(
            f"{subscription} process", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )

    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager[Any]:
        """An internal span under the current one (a delivery, a scan, a copy)."""
        if self.tracer is None:
            return _NO_SPAN
        return self.tracer.start_as_current_span(name, attributes=dict(attributes or {}))


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})


async def observed_http(
    request: Request,
    handle: Callable[[Request], Awaitable[Response]],
    route: Callable[[], str],
    registry: Callable[[], str | None] = lambda: None,
    counted: Callable[[str, str | None, int], None] | None = None,
) -> Response:
    """Answer `request` with `handle` inside the request's server span, and record its duration. `route` gives
    the route template once `handle` has run (the span is named by it, never by the path); `registry` the
    registry label (only one that exists); `counted(method, registry, status)` counts what else the caller
    counts. Returns at its first line while telemetry is off."""
    active = _active
    if not active.enabled:
        return await handle(request)
    started = time.perf_counter()
    scope = request.scope
    method = scope["method"] if scope["method"] in HTTP_METHODS else "_OTHER"
    if active.tracer is None:
        response = await handle(request)
        template = route()
    else:
        attributes = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "server.address": request.headers.get("host", ""),
            "user_agent.original": request.headers.get("user-agent", ""),
            "client.address": request.client.host if request.client else "",
        }
        with active.server_span(method, request.headers, attributes) as span:
            response = await handle(request)
            template = route()  # known once the handler matched it
            if span is not None:
                span.update_name(f"{method} {template}")
                span.set_attribute("http.route", template)
            end_server_span(span, response.status_code)
    label = registry()
    active.observe_request(template, method, response.status_code, time.perf_counter() - started, label)
    if counted is not None:
        counted(method, label, response.status_code)
    return response


def end_server_span(span: Span | None, status: int) -> None:
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


_active = Telemetry()
_configured = False
_configure_lock = threading.Lock()


def telemetry() -> Telemetry:
    """This process's telemetry (off until `configure_telemetry` or `install` turned something on)."""
    return _active


def install(
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
    prometheus: tuple[MetricReader, Any] | None = None,
) -> Telemetry:
    """Use these providers from now on (configure_telemetry's last step; tests install in-memory ones).
    `prometheus`: the reader of `meter_provider` that GET /metrics renders, and its collector registry."""
    global _active
    tracer = tracer_provider.get_tracer(INSTRUMENTATION) if tracer_provider is not None else None
    _active = Telemetry(tracer=tracer, meter_provider=meter_provider)
    if prometheus is not None:
        _active.prometheus, _active.prometheus_registry = prometheus
    return _active


def prometheus_reader() -> tuple[MetricReader, Any]:
    """A metric reader for GET /metrics, with a collector registry of its own (prometheus_client's default
    one would add the process's own collectors: command line, memory, file descriptors)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=True)
    return PrometheusMetricReader(disable_target_info=True, scope_info_enabled=False, registry=registry), registry


def configure_telemetry(settings: Settings) -> Telemetry:
    """Turn on what the settings ask for, once per process (later calls return what the first made)."""
    global _configured
    with _configure_lock:
        if _configured:
            return _active
        _configured = True
        tracing = bool(
            settings.applicationinsights_connection_string
            or settings.otel_exporter_otlp_endpoint
            or settings.telemetry_console
        )
        if not tracing and not settings.metrics_endpoint:
            return _active  # off: nothing imported, nothing running
        return _configure(settings, tracing)


def _configure(settings: Settings, tracing: bool) -> Telemetry:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    readers: list[MetricReader] = []
    prometheus = prometheus_reader() if settings.metrics_endpoint else None
    if prometheus is not None:
        readers.append(prometheus[0])
    tracer_provider: Any = None
    meter_provider: Any = None
    if settings.applicationinsights_connection_string:
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(
            connection_string=settings.applicationinsights_connection_string,
            metric_readers=readers,
            sampling_ratio=settings.telemetry_sampling_ratio,  # Application Insights' trace-id sampler
            # The HTTP spans are ours (route templates, no repository names): no second server span.
            instrumentation_options={name: {"enabled": False} for name in ("fastapi", "flask", "django", "psycopg2")},
        )
        tracer_provider, meter_provider = trace.get_tracer_provider(), metrics.get_meter_provider()
    else:
        resource = Resource.create({"service.name": settings.otel_service_name})
        if settings.otel_exporter_otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            base = settings.otel_exporter_otlp_endpoint.rstrip("/")
            span_exporter: Any = OTLPSpanExporter(endpoint=f"{base}/v1/traces")
            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics")))
        elif settings.telemetry_console:
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            span_exporter = ConsoleSpanExporter()
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=60_000))
        if tracing:
            sampler = ParentBased(TraceIdRatioBased(settings.telemetry_sampling_ratio))
            tracer_provider = SdkTracerProvider(resource=resource, sampler=sampler)
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
            trace.set_tracer_provider(tracer_provider)  # the Azure SDKs' spans join ours
        meter_provider = SdkMeterProvider(resource=resource, metric_readers=readers)
        metrics.set_meter_provider(meter_provider)
    active = install(tracer_provider, meter_provider, prometheus)
    log.info(
        "telemetry on: traces %s, metrics endpoint %s",
        "on" if tracing else "off",
        "on" if settings.metrics_endpoint else "off",
    )
    return active
