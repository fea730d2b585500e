"""`acr create|list|show|update|delete|check-name|show-usage` and `acr credential show|renew`: registries
through the management API (`Microsoft.ContainerRegistry/registries`), as `az acr` has them."""

from __future__ import annotations

import enum
from typing import Annotated, Any

import typer

from services.cli.arm import resource_group_of
from services.cli.output import OutputOption, QueryOption
from services.cli.progress import done, progress
from services.cli.session import (
    RegistryNameOption,
    ResourceGroupOption,
    YesOption,
    pairs,
    session_of,
)


class Switch(enum.StrEnum):
    """az's `--admin-enabled true|false` style: a value, so that "leave it as it is" is expressible."""

    TRUE = "true"
    FALSE = "false"

    @property
    def on(self) -> bool:
        return self is Switch.TRUE


def _switch(value: Switch | None) -> bool | None:
    return None if value is None else value.on


SkuOption = Annotated[str, typer.Option("--sku", help="Basic, Standard or Premium.")]
TagsOption = Annotated[list[str] | None, typer.Option("--tags", help="A tag as key=value (repeat for more).")]
AdminOption = Annotated[
    Switch | None, typer.Option("--admin-enabled", case_sensitive=False, help="The admin user: true or false.")
]
AnonymousOption = Annotated[
    Switch | None,
    typer.Option("--anonymous-pull-enabled", case_sensitive=False, help="Pull without credentials: true or false."),
]
PublicNetworkOption = Annotated[
    Switch | None,
    typer.Option("--public-network-enabled", case_sensitive=False, help="Public network access: true or false."),
]


def registry_view(result: Any) -> list[dict[str, Any]]:
    items = result if isinstance(result, list) else [result]
    return [
        {
            "Name": r.get("name"),
            "ResourceGroup": resource_group_of(str(r.get("id", ""))),
            "Location": r.get("location"),
            "Sku": (r.get("sku") or {}).get("name"),
            "LoginServer": (r.get("properties") or {}).get("loginServer"),
            "CreationDate": (r.get("properties") or {}).get("creationDate"),
            "AdminEnabled": (r.get("properties") or {}).get("adminUserEnabled"),
        }
        for r in items
        if isinstance(r, dict)
    ]


def usage_view(result: Any) -> list[dict[str, Any]]:
    items = result.get("value", []) if isinstance(result, dict) else []
    return [
        {"Name": u.get("name"), "Limit": u.get("limit"), "CurrentValue": u.get("currentValue"), "Unit": u.get("unit")}
        for u in items
    ]


def _properties(admin: Switch | None, anonymous: Switch | None, public: Switch | None) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    if admin is not None:
        properties["adminUserEnabled"] = admin.on
    if anonymous is not None:
        properties["anonymousPullEnabled"] = anonymous.on
    if public is not None:
        properties["publicNetworkAccess"] = "Enabled" if public.on else "Disabled"
    return properties


def create(
    ctx: typer.Context,
    name: RegistryNameOption,
    sku: SkuOption,
    resource_group: ResourceGroupOption = None,
    location: Annotated[str | None, typer.Option("--location", "-l", help="Azure region (default: config).")] = None,
    admin_enabled: AdminOption = None,
    anonymous_pull_enabled: AnonymousOption = None,
    public_network_enabled: PublicNetworkOption = None,
    tags: TagsOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Create a registry (or replace its settings, when it exists in that resource group)."""
    session = session_of(ctx)
    arm = session.arm()
    body: dict[str, Any] = {
        "location": location or session.profile.location.value,
        "sku": {"name": sku},
        "properties": _properties(admin_enabled, anonymous_pull_enabled, public_network_enabled),
    }
    if tags is not None:
        body["tags"] = pairs(tags, "--tags")
    path = arm.registry_path(session.resource_group(resource_group), name.lower())
    with progress(f"Creating registry {name}") as report:
        resource = arm.long_running("PUT", path, body, report)
    session.emit(resource, output, query, registry_view)


def list_registries(
    ctx: typer.Context,
    resource_group: Annotated[
        str | None, typer.Option("--resource-group", "-g", help="Only this resource group's registries.")
    ] = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """List the registries of the subscription (or of a resource group) you may read."""
    session = session_of(ctx)
    arm = session.arm()
    path = arm.registries_path(resource_group) if resource_group else f"{arm.provider_path()}/registries"
    session.emit(arm.list(path), output, query, registry_view)


def show(
    ctx: typer.Context,
    name: RegistryNameOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Show a registry."""
    session = session_of(ctx)
    session.emit(session.registry(name, resource_group).resource, output, query, registry_view)


def update(
    ctx: typer.Context,
    name: RegistryNameOption,
    resource_group: ResourceGroupOption = None,
    sku: Annotated[str | None, typer.Option("--sku", help="Basic, Standard or Premium.")] = None,
    admin_enabled: AdminOption = None,
    anonymous_pull_enabled: AnonymousOption = None,
    public_network_enabled: PublicNetworkOption = None,
    tags: TagsOption = None,
    soft_delete: Annotated[
        Switch | None,
        typer.Option("--soft-delete-enabled", case_sensitive=False, help="Soft delete policy: true or false."),
    ] = None,
    soft_delete_days: Annotated[
        int | None, typer.Option("--soft-delete-days", help="Days soft-deleted artifacts are kept (1-90).")
    ] = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Change a registry's tier, tags or settings (only what is given)."""
    session = session_of(ctx)
    ref = session.registry(name, resource_group)
    body: dict[str, Any] = {"properties": _properties(admin_enabled, anonymous_pull_enabled, public_network_enabled)}
    policy: dict[str, Any] = {}
    if soft_delete is not None:
        policy["status"] = "enabled" if soft_delete.on else "disabled"
    if soft_delete_days is not None:
        policy["retentionDays"] = soft_delete_days
    if policy:
        body["properties"]["policies"] = {"softDeletePolicy": policy}
    if sku is not None:
        body["sku"] = {"name": sku}
    if tags is not None:
        body["tags"] = pairs(tags, "--tags")
    arm = session.arm()
    with progress(f"Updating registry {ref.name}") as report:
        resource = arm.long_running("PATCH", arm.registry_path(ref.resource_group, ref.name), body, report)
    session.emit(resource, output, query, registry_view)


def delete(
    ctx: typer.Context,
    name: RegistryNameOption,
    resource_group: ResourceGroupOption = None,
    yes: YesOption = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once the delete has started.")] = False,
) -> None:
    """Delete a registry with everything in it.

    It stops serving at once and is emptied in the background; acr follows the operation until it is done
    (a spinner with what has been removed so far, on a terminal), unless --no-wait.
    """
    session = session_of(ctx)
    ref = session.registry(name, resource_group)
    session.confirm(f"Delete registry {ref.name} and every image in it?", yes)
    arm = session.arm()
    with progress(f"Deleting registry {ref.name}") as report:
        arm.long_running("DELETE", arm.registry_path(ref.resource_group, ref.name), None, report, wait=not no_wait)
    done(f"{'Deleting' if no_wait else 'Deleted'} registry {ref.name}")


def check_name(
    ctx: typer.Context,
    name: RegistryNameOption,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Whether a registry name is free (names are global)."""
    session = session_of(ctx)
    arm = session.arm()
    body = {"name": name, "type": "Microsoft.ContainerRegistry/registries"}
    session.emit(arm.json("POST", f"{arm.provider_path()}/checkNameAvailability", body), output, query)


def show_usage(
    ctx: typer.Context,
    name: RegistryNameOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """What a registry uses of its tier's limits (webhooks, tokens, scope maps, IP rules...)."""
    session = session_of(ctx)
    ref = session.registry(name, resource_group)
    arm = session.arm()
    usages = arm.json("GET", arm.registry_path(ref.resource_group, ref.name, "listUsages"))
    session.emit(usages, output, query, usage_view)


credential_app = typer.Typer(help="The admin user's credentials.", no_args_is_help=True)


@credential_app.command("show")
def credential_show(
    ctx: typer.Context,
    name: RegistryNameOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """The admin username and its passwords' names (stored hashed: `renew` shows a new one once)."""
    session = session_of(ctx)
    ref = session.registry(name, resource_group)
    arm = session.arm()
    session.emit(arm.json("POST", arm.registry_path(ref.resource_group, ref.name, "listCredentials")), output, query)


class PasswordName(enum.StrEnum):
    PASSWORD = "password"
    PASSWORD2 = "password2"


@credential_app.command("renew")
def credential_renew(
    ctx: typer.Context,
    name: RegistryNameOption,
    password_name: Annotated[
        PasswordName, typer.Option("--password-name", case_sensitive=False, help="password or password2.")
    ],
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Make a new admin password (shown this once)."""
    session = session_of(ctx)
    ref = session.registry(name, resource_group)
    arm = session.arm()
    path = arm.registry_path(ref.resource_group, ref.name, "regenerateCredential")
    session.emit(arm.json("POST", path, {"name": password_name.value}), output, query)


def register(app: typer.Typer) -> None:
    app.command("create")(create)
    app.command("list")(list_registries)
    app.command("show")(show)
    app.command("update")(update)
    app.command("delete")(delete)
    app.command("check-name")(check_name)
    app.command("show-usage")(show_usage)
    app.add_typer(credential_app, name="credential")
