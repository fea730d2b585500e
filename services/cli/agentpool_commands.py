"""`acr agentpool create|list|show|update|delete|show-queue-count`: a registry's agent pools through the
management API (`registries/{r}/agentPools`, api-version 2025-03-01-preview), as `az acr agentpool` has them.
A pool limits how many of the runs naming it (`acr build|run --agent-pool`, `acr task create --agent-pool`)
execute at once: `--count` of them; 0 holds them queued. Premium registries only.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import typer

from services.cli.build_command import TASKS_API_VERSION
from services.cli.errors import CliError, ExitCode
from services.cli.output import OutputOption, QueryOption
from services.cli.progress import done, progress
from services.cli.session import RegistryOption, ResourceGroupOption, YesOption, session_of

agentpool_app = typer.Typer(help="Agent pools: dedicated capacity that runs wait for.", no_args_is_help=True)

PoolNameOption = Annotated[str, typer.Option("--name", "-n", help="The agent pool's name (3-20 letters, digits, -).")]
VERSION = f"?api-version={TASKS_API_VERSION}"


class Tier(enum.StrEnum):
    S1 = "S1"
    S2 = "S2"
    S3 = "S3"
    I6 = "I6"


def pool_view(result: Any) -> list[dict[str, Any]]:
    items = result if isinstance(result, list) else [result]
    return [
        {
            "Name": p.get("name"),
            "Tier": (p.get("properties") or {}).get("tier"),
            "Count": (p.get("properties") or {}).get("count"),
            "OS": (p.get("properties") or {}).get("os"),
            "State": (p.get("properties") or {}).get("provisioningState"),
        }
        for p in items
    ]


def _path(ctx: typer.Context, registry: str, resource_group: str | None, *child: str) -> str:
    session = session_of(ctx)
    ref = session.registry(registry, resource_group)
    return session.arm().registry_path(ref.resource_group, ref.name, "agentPools", *child)


@agentpool_app.command("create")
def create(
    ctx: typer.Context,
    name: PoolNameOption,
    registry: RegistryOption,
    tier: Annotated[Tier, typer.Option("--tier", help="S1 (2 vCPUs), S2 (4), S3 (8) or I6 (64, isolated).")] = Tier.S1,
    count: Annotated[int, typer.Option("--count", help="Instances: how many of its runs execute at once.")] = 1,
    subnet_id: Annotated[
        str | None, typer.Option("--subnet-id", help="A virtual network subnet's resource id (stored only).")
    ] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Do not wait for the pool to be provisioned.")] = False,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Create an agent pool (Premium registries; Linux)."""
    session = session_of(ctx)
    ref = session.registry(registry, resource_group)
    path = _path(ctx, registry, resource_group, name) + VERSION
    properties: dict[str, Any] = {"tier": tier.value, "count": count, "os": "Linux"}
    if subnet_id:
        properties["virtualNetworkSubnetResourceId"] = subnet_id
    body = {"location": ref.location, "properties": properties}
    with progress(f"Creating agent pool {name}") as report:
        resource = session.arm().long_running("PUT", path, body, report, wait=not no_wait)
    session.emit(resource, output, query, pool_view)


@agentpool_app.command("list")
def list_pools(
    ctx: typer.Context,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """List the registry's agent pools."""
    session = session_of(ctx)
    session.emit(session.arm().list(_path(ctx, registry, resource_group) + VERSION), output, query, pool_view)


@agentpool_app.command("show")
def show(
    ctx: typer.Context,
    name: PoolNameOption,
    registry: RegistryOption,
    queue_count: Annotated[
        bool, typer.Option("--queue-count", help="Show the number of runs queued for the pool instead.")
    ] = False,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Show an agent pool (with --queue-count: how many runs wait for it)."""
    session = session_of(ctx)
    path = _path(ctx, registry, resource_group, name)
    if queue_count:
        session.emit(session.arm().json("POST", f"{path}/listQueueStatus{VERSION}"), output, query)
        return
    session.emit(session.arm().json("GET", path + VERSION), output, query, pool_view)


@agentpool_app.command("show-queue-count")
def show_queue_count(
    ctx: typer.Context,
    name: PoolNameOption,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """How many runs are queued for the pool: {"count": n}."""
    session = session_of(ctx)
    path = _path(ctx, registry, resource_group, name)
    session.emit(session.arm().json("POST", f"{path}/listQueueStatus{VERSION}"), output, query)


@agentpool_app.command("update")
def update(
    ctx: typer.Context,
    name: PoolNameOption,
    registry: RegistryOption,
    count: Annotated[int | None, typer.Option("--count", help="Instances (0 holds its runs queued).")] = None,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Scale an agent pool: raising the count releases runs waiting for it."""
    if count is None:
        raise CliError(ExitCode.BAD_INPUT, "nothing to change: give --count")
    session = session_of(ctx)
    path = _path(ctx, registry, resource_group, name) + VERSION
    with progress(f"Scaling agent pool {name}") as report:
        resource = session.arm().long_running("PATCH", path, {"properties": {"count": count}}, report)
    session.emit(resource, output, query, pool_view)


@agentpool_app.command("delete")
def delete(
    ctx: typer.Context,
    name: PoolNameOption,
    registry: RegistryOption,
    yes: YesOption = False,
    resource_group: ResourceGroupOption = None,
) -> None:
    """Delete an agent pool (refused while runs are queued for it or running in it)."""
    session = session_of(ctx)
    path = _path(ctx, registry, resource_group, name) + VERSION
    session.confirm(f"Delete agent pool '{name}'?", yes)
    with progress(f"Deleting agent pool {name}") as report:
        session.arm().long_running("DELETE", path, None, report)
    done(f"Deleted agent pool {name}")
