"""GET /metrics: off, loopback only, or its bearer token only; hostile headers get a 4xx, never the metrics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from starlette.requests import Request

from services.platform import telemetry as telemetry_module
from services.platform.metrics_endpoint import metrics_response
from services.platform.settings import Settings

TOKEN = "metrics-token-0123456789"


@pytest.fixture(autouse=True)
def metrics_on() -> Iterator[None]:
    reader = telemetry_module.prometheus_reader()
    active = telemetry_module.install(None, MeterProvider(metric_readers=[reader[0]]), reader)
    active.count_image_request(True, "myregistry", True)
    yield
    telemetry_module.install(None, None)


def request(client: str = "127.0.0.1", headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "GET", "path": "/metrics", "headers": raw, "client": (client, 50000)})


def test_off_by_default_answers_404_even_on_loopback() -> None:
    response = metrics_response(request(), Settings())
    assert response.status_code == 404 and b"totalpullcount" not in bytes(response.body)


@pytest.mark.parametrize("client", ["127.0.0.1", "::1", "127.8.9.10"])
def test_without_a_token_loopback_callers_read_prometheus_text(client: str) -> None:
    response = metrics_response(request(client), Settings(metrics_endpoint=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b'totalpullcount_total{registry="myregistry"} 1.0' in bytes(response.body)


@pytest.mark.parametrize("client", ["10.1.2.3", "192.168.0.7", "2001:db8::1", "not-an-address", ""])
def test_without_a_token_other_callers_are_refused(client: str) -> None:
    response = metrics_response(request(client), Settings(metrics_endpoint=True))
    assert response.status_code == 403 and b"totalpullcount" not in bytes(response.body)


def test_without_a_token_nobody_reads_them_under_the_functions_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Functions host hands the worker every request from loopback: loopback proves nothing there."""
    monkeypatch.setenv("WEBSITE_SITE_NAME", "myapp")
    assert metrics_response(request("127.0.0.1"), Settings(metrics_endpoint=True)).status_code == 403


def test_with_a_token_it_is_the_only_key() -> None:
    settings = Settings(metrics_endpoint=True, metrics_token=TOKEN)
    assert metrics_response(request("10.1.2.3", {"Authorization": f"Bearer {TOKEN}"}), settings).status_code == 200
    assert metrics_response(request("10.1.2.3", {"Authorization": f"bearer {TOKEN}"}), settings).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        None,  # loopback is not enough once a token is set
        "Bearer",
        "Bearer ",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        f"{TOKEN}",
        "Bearer " + "A" * 65536,
        "Bearer ünïcode",
        "Bearer \x00\x01",
    ],
)
def test_with_a_token_anything_else_is_401_with_a_challenge(authorization: str | None) -> None:
    settings = Settings(metrics_endpoint=True, metrics_token=TOKEN)
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = metrics_response(request("127.0.0.1", headers), settings)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert b"totalpullcount" not in bytes(response.body) and TOKEN.encode() not in bytes(response.body)
