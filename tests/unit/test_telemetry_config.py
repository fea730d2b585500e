"""Which telemetry a process gets from its settings. Each case is a fresh process: telemetry is configured
once per process (function_app.py does it on import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
import function_app  # configures telemetry from the settings, as under the Functions host and the devhost
from services.platform.telemetry import telemetry
active = telemetry()
with active.server_span("GET /v2/", {}, {}):
    parent = active.traceparent()
print("PROBE " + json.dumps({
    "enabled": active.enabled,
    "tracing": active.tracer is not None,
    "metrics": active.metering,
    "prometheus": active.prometheus_text() is not None,
    "traceparent": parent,
    "sdk_loaded": "opentelemetry.sdk.trace" in sys.modules,
    "azure_monitor_loaded": "azure.monitor.opentelemetry" in sys.modules,
}), flush=True)
"""
SETTINGS = (
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "TELEMETRY_CONSOLE",
    "METRICS_ENDPOINT",
    "METRICS_TOKEN",
    "TELEMETRY_SAMPLING_RATIO",
)


def probe(**settings: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    # Offline: no Azure resource detection, no statsbeat (shared/environment.md).
    env |= {"OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel", "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true"}
    env |= {"PYTHONPATH": str(ROOT)} | settings
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))  # exporters print too
    result: dict[str, object] = json.loads(line.removeprefix("PROBE "))
    return result


def test_off_by_default_loads_no_sdk_and_propagates_nothing() -> None:
    assert probe() == {
        "enabled": False,
        "tracing": False,
        "metrics": False,
        "prometheus": False,
        "traceparent": None,
        "sdk_loaded": False,
        "azure_monitor_loaded": False,
    }


def test_metrics_endpoint_alone_turns_metrics_on_and_traces_off() -> None:
    found = probe(METRICS_ENDPOINT="true")
    assert found["metrics"] is True and found["prometheus"] is True
    assert found["tracing"] is False and found["traceparent"] is None


@pytest.mark.parametrize(
    "settings",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        {"TELEMETRY_CONSOLE": "true"},
        {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
            "IngestionEndpoint=http://127.0.0.1:9/"
        },
    ],
    ids=["otlp", "console", "application-insights"],
)
def test_each_exporter_turns_traces_and_metrics_on(settings: dict[str, str]) -> None:
    found = probe(**settings)
    assert found["tracing"] is True and found["metrics"] is True and found["prometheus"] is False
    assert isinstance(found["traceparent"], str) and found["traceparent"].startswith("00-")
    assert found["azure_monitor_loaded"] is ("APPLICATIONINSIGHTS_CONNECTION_STRING" in settings)


def sampled(traceparent: object) -> bool:
    """The W3C trace-flags' sampled bit (other bits, e.g. random trace id, may be set too)."""
    return bool(int(str(traceparent).rsplit("-", 1)[1], 16) & 1)


@pytest.mark.parametrize("exporter", ["TELEMETRY_CONSOLE", "APPLICATIONINSIGHTS_CONNECTION_STRING"])
def test_the_sampling_ratio_decides_at_the_root_and_the_decision_travels(exporter: str) -> None:
    value = (
        "true"
        if exporter == "TELEMETRY_CONSOLE"
        else ("InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/")
    )
    kept, dropped = probe(**{exporter: value}), probe(**{exporter: value, "TELEMETRY_SAMPLING_RATIO": "0"})
    assert sampled(kept["traceparent"])  # the consumers record their spans too
    assert dropped["tracing"] is True and dropped["metrics"] is True  # metrics count every request anyway
    assert not sampled(dropped["traceparent"])  # downstream spans are not recorded either
