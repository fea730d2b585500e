"""ACR's RunDuration: a task run's start to finish in milliseconds, recorded when the runner finishes it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from services.platform import telemetry
from services.tasks.models import RunDoc
from services.tasks.runner import observe_run_duration


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    found = InMemoryMetricReader()
    telemetry.install(None, MeterProvider(metric_readers=[found]))
    yield found
    telemetry.install(None, None)


def run(start: str | None, finish: str | None) -> RunDoc:
    return RunDoc(
        id="run:ca1", registry="myregistry", runId="ca1", number=1, request={}, logPath="runs/ca1.log",
        status="Succeeded", startTime=start, finishTime=finish,
    )  # fmt: skip


def points(reader: InMemoryMetricReader) -> list[HistogramDataPoint]:
    data = reader.get_metrics_data()
    return [
        point
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "runduration"
        for point in metric.data.data_points
        if isinstance(point, HistogramDataPoint)
    ]


def test_a_finished_run_records_its_duration_in_milliseconds(reader: InMemoryMetricReader) -> None:
    observe_run_duration(run("2026-12-01T10:00:00.000Z", "2026-12-01T10:01:02.500Z"))
    [point] = points(reader)
    assert point.count == 1 and point.sum == 62_500 and dict(point.attributes or {}) == {"registry": "myregistry"}


def test_a_run_that_never_started_records_nothing(reader: InMemoryMetricReader) -> None:
    observe_run_duration(run(None, "2026-12-01T10:01:02.500Z"))
    assert points(reader) == []
