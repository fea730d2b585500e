"""The function table the Azure Functions host indexes, and the host settings it depends on."""

from __future__ import annotations

import json
from pathlib import Path

import azure.functions as func
import pytest

from services.devhost.server import http_routes, starlette_paths
from tests.function_table import function_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def functions() -> dict[str, func.FunctionBuilder]:
    return function_table()  # indexed once per process (tests/function_table.py)


def _table() -> list:  # type: ignore[type-arg]
    return list(function_table().values())


def test_registry_api_is_one_anonymous_catch_all_under_v2(functions) -> None:
    trigger = functions["registry_v2"].get_trigger()
    assert trigger.get_binding_name() == "httpTrigger"
    assert trigger.route == "v2/{*path}"
    assert trigger.auth_level == func.AuthLevel.ANONYMOUS
    methods = {str(getattr(m, "value", m)) for m in trigger.methods}
    assert methods == {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}


def test_acr_metadata_api_is_one_anonymous_catch_all_under_acr_v1(functions) -> None:
    # Repository names contain slashes here too: one catch-all, routed by services/registry/acr_paths.py.
    trigger = functions["registry_acr_v1"].get_trigger()
    assert trigger.route == "acr/v1/{*path}"
    assert trigger.auth_level == func.AuthLevel.ANONYMOUS
    methods = {str(getattr(m, "value", m)) for m in trigger.methods}
    assert {"GET", "HEAD", "PATCH", "DELETE"} <= methods


def test_function_json_is_what_the_host_indexes(functions) -> None:
    bindings = json.loads(functions["registry_v2"].get_function_json())["bindings"]
    http_in = next(b for b in bindings if b["type"] == "httpTrigger")
    assert http_in["authLevel"] == "ANONYMOUS"
    assert http_in["route"] == "v2/{*path}"


def test_host_json_puts_v2_at_the_root() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensions"]["http"]["routePrefix"] == ""


def test_devhost_serves_every_http_function(functions) -> None:
    routes = http_routes(_table())
    assert {r.path for r in routes} == {
        "/v2/{path:path}",
        "/v2",
        "/acr/v1/{path:path}",
        "/acr/v1",
        "/oauth2/token",
        "/oauth2/exchange",
        "/subscriptions/{path:path}",
        "/subscriptions",
        "/health/{probe}",
        "/openapi/management.json",
        "/metadata/endpoints",
        "/metrics",
        "/tasks/hooks/{registry}/{task}",
    }


def test_health_probes_are_one_anonymous_get_function(functions) -> None:
    # A load balancer's probe has no credentials; the readiness answer must not need any.
    trigger = functions["health"].get_trigger()
    assert trigger.get_binding_name() == "httpTrigger"
    assert trigger.route == "health/{probe}"
    assert trigger.auth_level == func.AuthLevel.ANONYMOUS
    assert {str(getattr(m, "value", m)) for m in trigger.methods} == {"GET"}


def test_event_pipeline_functions_are_a_timer_and_a_service_bus_topic_trigger(functions) -> None:
    relay = functions["relay_outbox"].get_trigger()
    assert relay.get_binding_name() == "timerTrigger"
    assert relay.schedule == "*/5 * * * * *"
    worker = functions["deliver_webhooks"].get_trigger()
    assert worker.get_binding_name() == "serviceBusTrigger"
    assert (worker.topic_name, worker.subscription_name) == ("registry-events", "webhooks")


def test_task_functions_are_the_run_relay_and_the_minute_timer(functions) -> None:
    relay = functions["relay_runs"].get_trigger()
    assert relay.get_binding_name() == "timerTrigger" and relay.schedule == "*/5 * * * * *"
    timers = functions["fire_task_timers"].get_trigger()
    assert timers.get_binding_name() == "timerTrigger" and timers.schedule == "5 * * * * *"  # once a minute
    expiry = functions["expire_task_files"].get_trigger()
    assert expiry.get_binding_name() == "timerTrigger" and expiry.schedule == "0 17 3 * * *"  # daily


def test_the_source_trigger_hook_is_an_anonymous_post_authenticated_by_its_hmac(functions) -> None:
    trigger = functions["task_source_hook"].get_trigger()
    assert trigger.route == "tasks/hooks/{registry}/{task}"
    assert trigger.auth_level == func.AuthLevel.ANONYMOUS  # the HMAC is its authentication (services/tasks/hooks.py)
    assert {str(getattr(m, "value", m)) for m in trigger.methods} == {"POST"}


@pytest.mark.parametrize(
    ("template", "paths"),
    [
        ("v2/{*path}", ["/v2/{path:path}", "/v2"]),
        ("oauth2/token", ["/oauth2/token"]),
        ("acr/v1/{name}/_tags/{tag:alpha}", ["/acr/v1/{name}/_tags/{tag}"]),
        ("{*all}", ["/{all:path}", "/"]),
    ],
)
def test_route_templates_become_starlette_paths(template: str, paths: list[str]) -> None:
    assert starlette_paths(template) == paths


def test_local_settings_template_names_every_setting() -> None:
    from services.platform.settings import Settings

    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert {name.upper() for name in Settings.model_fields} <= set(values)
