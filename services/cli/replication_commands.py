"""`acr replication create|list|show|update|delete`: a Premium registry's regions through the management API
(`registries/{r}/replications`), as `az acr replication` has them."""

from __future__ import annotations

import enum
from typing import Annotated, Any

import typer

from services.cli.arm import RegistryRef
from services.cli.errors import CliError, ExitCode
from services.cli.output import OutputOption, QueryOption
from services.cli.progress import done, progress
from services.cli.repository_commands import Image
from services.cli.session import (
    PasswordOption,
    RegistryOption,
    ResourceGroupOption,
    UsernameOption,
    YesOption,
    pairs,
    session_of,
)

replication_app = typer.Typer(
    help="Geo-replication: the regions a Premium registry is served from.", no_args_is_help=True
)

NameOption = Annotated[
    str | None, typer.Option("--name", "-n", help="The replication's name (default: the location, no spaces).")
]
TagsOption = Annotated[list[str] | None, typer.Option("--tags", help="A tag, key=value (repeat for more).")]
EndpointOption = Annotated[
    bool | None,
    typer.Option(
        "--region-endpoint-enabled/--region-endpoint-disabled",
        help="Whether reads are routed to this region (its content keeps syncing either way).",
    ),
]


class Zones(enum.StrEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"


def replication_view(result: Any) -> list[dict[str, Any]]:
    items = result if isinstance(result, list) else [result]
    return [
        {
            "Name": r.get("name"),
            "Location": r.get("location"),
            "ProvisioningState": (r.get("properties") or {}).get("provisioningState"),
            "Status": ((r.get("properties") or {}).get("status") or {}).get("displayStatus"),
            "RegionEndpointEnabled": (r.get("properties") or {}).get("regionEndpointEnabled"),
            "ZoneRedundancy": (r.get("properties") or {}).get("zoneRedundancy"),
            "Backfill": _backfill_text((r.get("properties") or {}).get("backfill")),
        }
        for r in items
        if isinstance(r, dict)
    ]


def _backfill_text(backfill: Any) -> str:
    """A new replica's backfill, "done/total" images."""
    if not isinstance(backfill, dict):
        return ""
    return f"{backfill.get('done', 0)}/{backfill.get('total') if backfill.get('total') is not None else '?'}"


def _path(ctx: typer.Context, registry: str, resource_group: str | None, *child: str) -> tuple[RegistryRef, str]:
    session = session_of(ctx)
    ref = session.registry(registry, resource_group)
    return ref, session.arm().registry_path(ref.resource_group, ref.name, "replications", *child)


def _name_of(name: str | None, location: str | None) -> str:
    given = name or (location or "").replace(" ", "").lower()
    if not given:
        raise CliError(ExitCode.BAD_INPUT, "give --name or --location")
    return given


@replication_app.command("create")
def create(
    ctx: typer.Context,
    registry: RegistryOption,
    location: Annotated[str, typer.Option("--location", "-l", help="The Azure region, e.g. eastus.")],
    name: NameOption = None,
    region_endpoint_enabled: EndpointOption = None,
    zone_redundancy: Annotated[
        Zones | None, typer.Option("--zone-redundancy", case_sensitive=False, help="Enabled or Disabled.")
    ] = None,
    tags: TagsOption = None,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Replicate the registry to another region (Premium tier)."""
    replication = _name_of(name, location)
    _, path = _path(ctx, registry, resource_group, replication)
    properties: dict[str, Any] = {}
    if region_endpoint_enabled is not None:
        properties["regionEndpointEnabled"] = region_endpoint_enabled
    if zone_redundancy is not None:
        properties["zoneRedundancy"] = zone_redundancy.value
    body: dict[str, Any] = {"location": location, "properties": properties}
    if tags is not None:
        body["tags"] = pairs(tags, "--tags")
    session = session_of(ctx)
    with progress(f"Creating replication {replication}") as report:
        resource = session.arm().long_running("PUT", path, body, report)
    session.emit(resource, output, query, replication_view)


@replication_app.command("list")
def list_replications(
    ctx: typer.Context,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """The registry's regions, the home region first."""
    _, path = _path(ctx, registry, resource_group)
    session = session_of(ctx)
    session.emit(session.arm().list(path), output, query, replication_view)


@replication_app.command("show")
def show(
    ctx: typer.Context,
    registry: RegistryOption,
    name: Annotated[str, typer.Option("--name", "-n", help="The replication's name.")],
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Show a replication (its status: Ready, Syncing, Failed or Disabled)."""
    _, path = _path(ctx, registry, resource_group, name)
    session = session_of(ctx)
    session.emit(session.arm().json("GET", path), output, query, replication_view)


@replication_app.command("update")
def update(
    ctx: typer.Context,
    registry: RegistryOption,
    name: Annotated[str, typer.Option("--name", "-n", help="The replication's name.")],
    region_endpoint_enabled: EndpointOption = None,
    tags: TagsOption = None,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Change a replication's tags or regional endpoint (only what is given)."""
    body: dict[str, Any] = {"properties": {}}
    if region_endpoint_enabled is not None:
        body["properties"]["regionEndpointEnabled"] = region_endpoint_enabled
    if tags is not None:
        body["tags"] = pairs(tags, "--tags")
    if tags is None and region_endpoint_enabled is None:
        raise CliError(ExitCode.BAD_INPUT, "nothing to change: give --tags or --region-endpoint-enabled/-disabled")
    _, path = _path(ctx, registry, resource_group, name)
    session = session_of(ctx)
    with progress(f"Updating replication {name}") as report:
        resource = session.arm().long_running("PATCH", path, body, report)
    session.emit(resource, output, query, replication_view)


@replication_app.command("delete")
def delete(
    ctx: typer.Context,
    registry: RegistryOption,
    name: Annotated[str, typer.Option("--name", "-n", help="The replication's name.")],
    resource_group: ResourceGroupOption = None,
    yes: YesOption = False,
) -> None:
    """Stop replicating to a region (the home region cannot be deleted)."""
    _, path = _path(ctx, registry, resource_group, name)
    session = session_of(ctx)
    session.confirm(f"Delete replication {name} and every copy in that region?", yes)
    with progress(f"Deleting replication {name}") as report:
        session.arm().long_running("DELETE", path, None, report)
    done(f"Deleted replication {name}")


def status_view(result: Any) -> list[dict[str, Any]]:
    regions = (result.get("regions") or {}) if isinstance(result, dict) else {}
    return [
        {
            "Region": region,
            "State": entry.get("state"),
            "Time": entry.get("time"),
            "LagMs": entry.get("lagMs"),
            "Attempts": entry.get("attempts"),
            "Reason": entry.get("reason"),
        }
        for region, entry in regions.items()
        if isinstance(entry, dict)
    ]


@replication_app.command("status")
def status(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="An image: repository:tag or repository@sha256:...")],
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Where an image's copies stand in each region: pending, copied (with the time and the lag from the
    push) or failed (with the reason). Ours; ACR does not show this."""
    parsed = Image(image)
    client = session_of(ctx).data_plane(registry, resource_group, username, password)
    scope = f"repository:{parsed.repository}:metadata_read"
    digest = parsed.digest
    if not digest:
        tag = client.call("GET", parsed.path, scope).json()
        digest = str((tag.get("tag") or {}).get("digest") or "") if isinstance(tag, dict) else ""
    manifest = client.call("GET", f"/acr/v1/{parsed.repository}/_manifests/{digest}", scope).json()
    attributes = (manifest.get("manifest") or {}) if isinstance(manifest, dict) else {}
    replication = attributes.get("replication") or {"regions": {}}
    result = {"image": f"{parsed.repository}@{digest}", **replication}
    session_of(ctx).emit(result, output, query, status_view)
