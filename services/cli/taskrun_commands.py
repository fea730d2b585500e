"""`acr taskrun list|show|delete|logs`: a registry's task runs (`registries/{r}/taskRuns`, api-version
2025-03-01-preview), as `az acr taskrun` has them. A task run is a run request kept as a resource (created
through the API or an SDK, e.g. by an ARM deployment); `logs` prints its latest run's log.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from services.cli.build_command import TASKS_API_VERSION, print_log
from services.cli.errors import CliError, ExitCode
from services.cli.output import OutputOption, QueryOption
from services.cli.session import RegistryOption, ResourceGroupOption, YesOption, session_of

taskrun_app = typer.Typer(help="Task runs: run requests kept as resources.", no_args_is_help=True)

TaskRunNameOption = Annotated[str, typer.Option("--name", "-n", help="The task run's name.")]
VERSION = f"?api-version={TASKS_API_VERSION}"


def task_run_view(result: Any) -> list[dict[str, Any]]:
    items = result if isinstance(result, list) else [result]
    rows = []
    for item in items:
        properties = item.get("properties") or {}
        run = (properties.get("runResult") or {}).get("properties") or {}
        rows.append(
            {
                "Name": item.get("name"),
                "RunId": run.get("runId", ""),
                "Status": run.get("status", ""),
                "Request": (properties.get("runRequest") or {}).get("type", ""),
                "ForceUpdateTag": properties.get("forceUpdateTag") or "",
            }
        )
    return rows


def _path(ctx: typer.Context, registry: str, resource_group: str | None, *child: str) -> str:
    session = session_of(ctx)
    ref = session.registry(registry, resource_group)
    return session.arm().registry_path(ref.resource_group, ref.name, "taskRuns", *child)


@taskrun_app.command("list")
def list_task_runs(
    ctx: typer.Context,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """List the registry's task runs, each with its latest run."""
    session = session_of(ctx)
    items = session.arm().list(_path(ctx, registry, resource_group) + VERSION)
    session.emit(items, output, query, task_run_view)


@taskrun_app.command("show")
def show(
    ctx: typer.Context,
    name: TaskRunNameOption,
    registry: RegistryOption,
    secure: Annotated[
        bool, typer.Option("--with-secure-properties", help="Show the run request's secret values.")
    ] = False,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Show a task run and its latest run."""
    session = session_of(ctx)
    path = _path(ctx, registry, resource_group, name)
    if secure:
        found = session.arm().json("POST", f"{path}/listDetails{VERSION}")
    else:
        found = session.arm().json("GET", path + VERSION)
    session.emit(found, output, query, task_run_view)


@taskrun_app.command("delete")
def delete(
    ctx: typer.Context,
    name: TaskRunNameOption,
    registry: RegistryOption,
    yes: YesOption = False,
    resource_group: ResourceGroupOption = None,
) -> None:
    """Delete a task run (its runs stay)."""
    session = session_of(ctx)
    session.confirm(f"Delete task run '{name}'?", yes)
    session.arm().call("DELETE", _path(ctx, registry, resource_group, name) + VERSION)


@taskrun_app.command("logs")
def logs(
    ctx: typer.Context,
    name: TaskRunNameOption,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
) -> None:
    """Print the log of the task run's latest run."""
    session = session_of(ctx)
    ref = session.registry(registry, resource_group)
    arm = session.arm()
    found = arm.json("GET", _path(ctx, registry, resource_group, name) + VERSION)
    run_id = ((found.get("properties") or {}).get("runResult") or {}).get("name")
    if not run_id:
        raise CliError(ExitCode.NOT_FOUND, f"task run {name} has no run", "ResourceNotFound")
    base = arm.registry_path(ref.resource_group, ref.name, "runs", str(run_id))
    link = str(arm.json("POST", f"{base}/listLogSasUrl{VERSION}")["logLink"])
    print_log(session.http(), link, 0)
