"""What telemetry costs on the push and pull paths (issue 15): off must cost nothing measurable.

    .venv/bin/python -m bench.telemetry_overhead [--seconds 5] [--rounds 3] [--pushes 100]
                                                 [--baseline /path/to/a/checkout/before/telemetry]

One emulator stack, one registry (authDisabled), one devhost process per case, alternating within each
round: telemetry off (the default); metrics on (METRICS_ENDPOINT, what `make run` sets); traces and metrics on
with the console exporter (spans written to the devhost's log file); and, with --baseline, the same code
before telemetry existed (its devhost imports that checkout). Per case: manifest GET by tag (a pull) at
concurrency 16, requests per second; and a sequential loop of manifest PUTs to new tags (a push), ms each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

import tests.conftest as harness
from bench.loadgen import run_load
from bench.processes import create_registries
from bench.workloads import config_only_manifest
from services.devhost.stack import LocalStack
from tests.conftest import Devhost, running_devhost
from tests.integration.conftest import settings_from_env

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REGISTRY = "benchtelemetry"


def _push_loop(http: httpx.Client, base: str, body: bytes, pushes: int, label: str) -> float:
    """Milliseconds per manifest PUT, median of `pushes` sequential pushes to new tags."""
    times: list[float] = []
    for index in range(pushes):
        started = time.perf_counter()
        reply = http.put(
            f"{base}/v2/bench/app/manifests/{label}-{index}-{time.monotonic_ns()}",
            content=body,
            headers={"Content-Type": OCI_MANIFEST},
        )
        times.append((time.perf_counter() - started) * 1000)
        assert reply.status_code == 201, reply.text
    return statistics.median(times)


async def _in_process(env: dict[str, str], requests: int, rounds: int) -> dict[str, list[float]]:
    """Microseconds per manifest GET through one RegistryApi in this process (no sockets, no load generator):
    `_handle` (the dispatcher as it was before telemetry) against `handle` with telemetry off, metrics on, and
    traces + metrics on (spans to an in-memory exporter), alternating in batches."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from starlette.requests import Request

    from services.platform import telemetry
    from services.registry.app import RegistryApi

    api = RegistryApi(settings_from_env(env))
    await api.open()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = telemetry.prometheus_reader()
    meter_provider = MeterProvider(metric_readers=[reader[0]])
    headers = [(b"host", f"{REGISTRY}.azurecr.localhost".encode()), (b"accept", OCI_MANIFEST.encode())]
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v2/bench/app/manifests/v1",
        "headers": headers,
        "query_string": b"",
        "client": ("127.0.0.1", 5000),
        "scheme": "http",
        "server": ("127.0.0.1", 80),
    }
    cases = {
        "before telemetry (_handle)": (None, None, True),
        "telemetry off": (None, None, False),
        "metrics on": (None, meter_provider, False),
        "traces + metrics on": (tracer_provider, meter_provider, False),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for round_index in range(rounds):
        order = list(cases.items()) if round_index % 2 == 0 else list(reversed(cases.items()))
        for name, (tracing, metering, bare) in order:
            telemetry.install(tracing, metering, reader if metering else None)
            call = api._handle if bare else api.handle
            started = time.perf_counter()
            for _ in range(requests):
                response = await call(Request(dict(scope)))
                assert response.status_code == 200
            results[name].append((time.perf_counter() - started) / requests * 1e6)
            spans.clear()
    telemetry.install(None, None)
    await api.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.telemetry_overhead")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pushes", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--baseline", type=Path, default=None, help="a checkout of the code before telemetry")
    parser.add_argument(
        "--in-process", type=int, default=0, metavar="N", help="only the in-process figures: N GETs a batch"
    )
    args = parser.parse_args()
    if args.in_process:
        with tempfile.TemporaryDirectory() as tmp, LocalStack.on_free_ports(Path(tmp) / "stack") as stack:
            env = stack.env() | {"DEFAULT_REGISTRY": REGISTRY}
            asyncio.run(create_registries(env, anonymous=[REGISTRY]))
            with running_devhost(env, Path(tmp)) as devhost, httpx.Client(timeout=30) as http:
                body = config_only_manifest(http, devhost.url, "bench/app", {})
                reply = http.put(
                    f"{devhost.url}/v2/bench/app/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST}
                )
                assert reply.status_code == 201, reply.text
            figures = asyncio.run(_in_process(env, args.in_process, args.rounds))
        base = statistics.median(next(iter(figures.values())))
        print(
            f"manifest GET by tag in-process, {args.rounds} batches of {args.in_process}: "
            "us per request, median (min-max)"
        )
        for name, values in figures.items():
            median = statistics.median(values)
            print(f"  {name:28} {median:8.1f} ({min(values):.1f}-{max(values):.1f})  {median / base:6.1%}")
        return
    cases: dict[str, dict[str, str]] = {
        "telemetry off": {},
        "metrics on (/metrics)": {"METRICS_ENDPOINT": "true"},
        "traces+metrics (console)": {"TELEMETRY_CONSOLE": "true", "METRICS_ENDPOINT": "true"},
    }
    if args.baseline is not None:
        cases = {"baseline (no telemetry code)": {"PYTHONPATH": str(args.baseline.resolve())}, **cases}
    own_root = harness.ROOT
    with tempfile.TemporaryDirectory() as tmp, LocalStack.on_free_ports(Path(tmp) / "stack") as stack:
        env = stack.env() | {"DEFAULT_REGISTRY": REGISTRY, "DEFAULT_REGISTRY_AUTH_DISABLED": "true"}
        asyncio.run(create_registries(env, anonymous=[REGISTRY]))
        hosts: dict[str, Devhost] = {}
        contexts = []
        try:
            for name, extra in cases.items():
                # The baseline's devhost runs in its checkout (`python -m` puts the working directory first).
                harness.ROOT = Path(extra["PYTHONPATH"]) if "PYTHONPATH" in extra else own_root
                context = running_devhost(env | extra, Path(tmp))
                hosts[name] = context.__enter__()
                contexts.append(context)
            harness.ROOT = own_root
            with httpx.Client(timeout=30) as http:
                first = next(iter(hosts.values()))
                body = config_only_manifest(http, first.url, "bench/app", {})
                assert (
                    http.put(
                        f"{first.url}/v2/bench/app/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST}
                    ).status_code
                    == 201
                )
                pulls: dict[str, list[float]] = {name: [] for name in cases}
                pushes: dict[str, list[float]] = {name: [] for name in cases}
                for round_index in range(args.rounds):
                    order = list(hosts.items())
                    if round_index % 2:
                        order.reverse()
                    for name, devhost in order:
                        load = asyncio.run(
                            run_load(
                                "GET",
                                f"{devhost.url}/v2/bench/app/manifests/v1",
                                concurrency=args.concurrency,
                                duration=args.seconds,
                                headers={"Accept": OCI_MANIFEST},
                            )
                        )
                        assert set(load.statuses) == {200}, (name, load.statuses)
                        pulls[name].append(load.rps)
                        pushes[name].append(_push_loop(http, devhost.url, body, args.pushes, f"r{round_index}"))
        finally:
            for context in reversed(contexts):
                context.__exit__(None, None, None)
    reference = next(iter(cases))
    base_pull, base_push = statistics.median(pulls[reference]), statistics.median(pushes[reference])
    print(
        f"manifest GET by tag at c={args.concurrency} ({args.rounds} x {args.seconds:.0f} s) and "
        f"{args.pushes} sequential manifest PUTs per round; medians (min-max)"
    )
    for name in cases:
        pull, push = statistics.median(pulls[name]), statistics.median(pushes[name])
        print(
            f"  {name:30} pull {pull:7.0f} rps ({min(pulls[name]):.0f}-{max(pulls[name]):.0f}) {pull / base_pull:6.1%}"
            f"   push {push:6.2f} ms ({min(pushes[name]):.2f}-{max(pushes[name]):.2f}) {push / base_push:6.1%}"
        )


if __name__ == "__main__":
    main()
