"""`acr webhook create|list|show|update|delete|ping|list-events|get-config`: a registry's webhooks through the
management API (`registries/{r}/webhooks`), as `az acr webhook` has them."""

from __future__ import annotations

import enum
from typing import Annotated, Any

import typer

from services.cli.arm import RegistryRef
from services.cli.errors import CliError, ExitCode
from services.cli.output import OutputOption, QueryOption
from services.cli.session import RegistryOption, ResourceGroupOption, YesOption, pairs, session_of, words

webhook_app = typer.Typer(help="Webhooks: a POST to your endpoint on push, delete, ... events.", no_args_is_help=True)

WebhookNameOption = Annotated[str, typer.Option("--name", "-n", help="The webhook's name.")]
UriOption = Annotated[str | None, typer.Option("--uri", help="The service URI the events are POSTed to.")]
ActionsOption = Annotated[
    list[str] | None,
    typer.Option("--actions", help="Events: push, delete, quarantine, chart_push, chart_delete (repeat or comma)."),
]
ScopeOption = Annotated[
    str | None, typer.Option("--scope", help="Only events of these images, e.g. team/app:* (empty: all).")
]
HeadersOption = Annotated[
    list[str] | None, typer.Option("--headers", help="A header sent with each event, key=value (repeat for more).")
]


class Status(enum.StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


StatusOption = Annotated[Status | None, typer.Option("--status", case_sensitive=False, help="enabled or disabled.")]


def webhook_view(result: Any) -> list[dict[str, Any]]:
    items = result if isinstance(result, list) else [result]
    return [
        {
            "Name": w.get("name"),
            "Location": w.get("location"),
            "Status": (w.get("properties") or {}).get("status"),
            "Scope": (w.get("properties") or {}).get("scope"),
            "Actions": ", ".join((w.get("properties") or {}).get("actions") or []),
            "ProvisioningState": (w.get("properties") or {}).get("provisioningState"),
        }
        for w in items
        if isinstance(w, dict)
    ]


def _path(ctx: typer.Context, registry: str, resource_group: str | None, *child: str) -> tuple[RegistryRef, str]:
    session = session_of(ctx)
    ref = session.registry(registry, resource_group)
    return ref, session.arm().registry_path(ref.resource_group, ref.name, "webhooks", *child)


def _properties(
    uri: str | None, actions: list[str] | None, scope: str | None, status: Status | None, headers: list[str] | None
) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    if uri is not None:
        properties["serviceUri"] = uri
    if actions is not None:
        properties["actions"] = words(actions)
    if scope is not None:
        properties["scope"] = scope
    if status is not None:
        properties["status"] = status.value
    if headers is not None:
        properties["customHeaders"] = pairs(headers, "--headers")
    return properties


@webhook_app.command("create")
def create(
    ctx: typer.Context,
    name: WebhookNameOption,
    registry: RegistryOption,
    uri: Annotated[str, typer.Option("--uri", help="The service URI the events are POSTed to.")],
    actions: Annotated[
        list[str], typer.Option("--actions", help="Events: push, delete, quarantine, chart_push, chart_delete.")
    ],
    scope: ScopeOption = None,
    status: StatusOption = None,
    headers: HeadersOption = None,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Create a webhook (in the registry's location)."""
    ref, path = _path(ctx, registry, resource_group, name)
    body = {"location": ref.location, "properties": _properties(uri, actions, scope, status, headers)}
    session = session_of(ctx)
    session.emit(session.arm().json("PUT", path, body), output, query, webhook_view)


@webhook_app.command("list")
def list_webhooks(
    ctx: typer.Context,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """List a registry's webhooks."""
    _, path = _path(ctx, registry, resource_group)
    session = session_of(ctx)
    session.emit(session.arm().list(path), output, query, webhook_view)


@webhook_app.command("show")
def show(
    ctx: typer.Context,
    name: WebhookNameOption,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Show a webhook."""
    _, path = _path(ctx, registry, resource_group, name)
    session = session_of(ctx)
    session.emit(session.arm().json("GET", path), output, query, webhook_view)


@webhook_app.command("update")
def update(
    ctx: typer.Context,
    name: WebhookNameOption,
    registry: RegistryOption,
    uri: UriOption = None,
    actions: ActionsOption = None,
    scope: ScopeOption = None,
    status: StatusOption = None,
    headers: HeadersOption = None,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Change a webhook (only what is given)."""
    properties = _properties(uri, actions, scope, status, headers)
    if not properties:
        raise CliError(ExitCode.BAD_INPUT, "nothing to change: give --uri, --actions, --scope, --status or --headers")
    _, path = _path(ctx, registry, resource_group, name)
    session = session_of(ctx)
    session.emit(session.arm().json("PATCH", path, {"properties": properties}), output, query, webhook_view)


@webhook_app.command("delete")
def delete(
    ctx: typer.Context,
    name: WebhookNameOption,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    yes: YesOption = False,
) -> None:
    """Delete a webhook."""
    _, path = _path(ctx, registry, resource_group, name)
    session = session_of(ctx)
    session.confirm(f"Delete webhook {name}?", yes)
    session.arm().call("DELETE", path)


@webhook_app.command("ping")
def ping(
    ctx: typer.Context,
    name: WebhookNameOption,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Send a ping event to the webhook's URI (its delivery shows in list-events)."""
    _, path = _path(ctx, registry, resource_group, name, "ping")
    session = session_of(ctx)
    session.emit(session.arm().json("POST", path), output, query)


def _event_view(result: Any) -> list[dict[str, Any]]:
    items = result if isinstance(result, list) else []
    return [
        {
            "Id": e.get("id"),
            "Action": ((e.get("eventRequestMessage") or {}).get("content") or {}).get("action"),
            "Timestamp": e.get("timestamp"),
            "StatusCode": (e.get("eventResponseMessage") or {}).get("statusCode"),
            "State": e.get("deliveryState"),
        }
        for e in items
        if isinstance(e, dict)
    ]


@webhook_app.command("list-events")
def list_events(
    ctx: typer.Context,
    name: WebhookNameOption,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """The webhook's recent deliveries, newest first (request and response of each attempt)."""
    _, path = _path(ctx, registry, resource_group, name, "listEvents")
    session = session_of(ctx)
    session.emit(session.arm().list(path, "POST"), output, query, _event_view)


@webhook_app.command("get-config")
def get_config(
    ctx: typer.Context,
    name: WebhookNameOption,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """The webhook's service URI and custom headers (header values masked)."""
    _, path = _path(ctx, registry, resource_group, name, "getCallbackConfig")
    session = session_of(ctx)
    session.emit(session.arm().json("POST", path), output, query)
