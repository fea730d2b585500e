"""`acr gc run [--dry-run]` and `acr gc recount`: a registry's garbage collection and storage usage recount,
through the management API (`collectGarbage`, `recountUsage`: Owner or Contributor of the registry)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from services.cli.output import OutputOption, QueryOption
from services.cli.session import RegistryNameOption, ResourceGroupOption, session_of

gc_app = typer.Typer(help="Garbage collection of blobs no manifest needs, and the storage usage.", no_args_is_help=True)

DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Say what would be deleted now; delete nothing.")]


def report_view(result: Any) -> list[dict[str, Any]]:
    if not isinstance(result, dict):
        return []
    return [{key: value for key, value in result.items() if key != "digests"}]


@gc_app.command("run")
def run(
    ctx: typer.Context,
    name: RegistryNameOption,
    dry_run: DryRunOption = False,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Delete the registry's blobs that no manifest has needed for the grace period (GC_GRACE_SECONDS); with
    --dry-run, list them instead. Pushes and pulls go on meanwhile."""
    session = session_of(ctx)
    ref = session.registry(name, resource_group)
    arm = session.arm()
    path = arm.registry_path(ref.resource_group, ref.name, "collectGarbage")
    session.emit(arm.json("POST", path, {"dryRun": dry_run}), output, query, report_view)


@gc_app.command("recount")
def recount(
    ctx: typer.Context,
    name: RegistryNameOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Recount the registry's storage usage from its stored blobs and set it to the result (show-usage)."""
    session = session_of(ctx)
    ref = session.registry(name, resource_group)
    arm = session.arm()
    path = arm.registry_path(ref.resource_group, ref.name, "recountUsage")
    session.emit(arm.json("POST", path), output, query)
