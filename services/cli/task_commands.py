"""`acr task create|list|show|update|delete|run|logs|list-runs|cancel-run`: a registry's tasks and their runs
through the management API (`registries/{r}/tasks`, `scheduleRun` with a `TaskRunRequest`, `runs`), as
`az acr task` has them. A task is a task file (`-f`, sent whole) or one command (`--cmd`, as az makes it: a
task file of one `cmd` step), with an uploaded context, none (`/dev/null`), or a git repository
(`https://host/org/repo.git#branch:dir`: then `-f` is a path in the repository); timer triggers
(`--schedule`, five-field cron in UTC, repeatable), a commit trigger (`--commit-trigger-enabled`) and a
pull-request trigger (`--pull-request-trigger-enabled true|false`, as az takes it; `--pull-request-forks`
says what a fork's pull request may do): their hook URL and secret are shown by `acr task show
--with-secure-properties`.
"""

from __future__ import annotations

import base64
import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from services.cli.build_command import TASKS_API_VERSION, follow_run, print_log, upload_context
from services.cli.errors import CliError, ExitCode
from services.cli.output import OutputOption, QueryOption
from services.cli.session import RegistryOption, ResourceGroupOption, YesOption, pairs, session_of

task_app = typer.Typer(help="Tasks: task files run on demand or on a schedule.", no_args_is_help=True)

TaskNameOption = Annotated[str, typer.Option("--name", "-n", help="The task's name.")]
ScheduleOption = Annotated[
    list[str] | None, typer.Option("--schedule", help="A cron schedule in UTC, e.g. '0 2 * * *' (repeat for more).")
]
VERSION = f"?api-version={TASKS_API_VERSION}"
AgentPoolOption = Annotated[
    str | None, typer.Option("--agent-pool", help="The agent pool its runs wait for (update: '' for none).")
]


class Status(enum.StrEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"


class Toggle(enum.StrEnum):
    TRUE = "true"
    FALSE = "false"


class Forks(enum.StrEnum):
    RESTRICTED = "Restricted"
    TRUSTED = "Trusted"
    IGNORED = "Ignored"


PullRequestOption = Annotated[
    Toggle | None,
    typer.Option(
        "--pull-request-trigger-enabled",
        help="true: run on pull requests into the git context's branch (opened, reopened, pushed to).",
    ),
]
ForksOption = Annotated[
    Forks | None,
    typer.Option(
        "--pull-request-forks",
        help="A fork's pull request: Restricted (default: no secrets, no push), Trusted, or Ignored.",
    ),
]


def task_view(result: Any) -> list[dict[str, Any]]:
    items = result if isinstance(result, list) else [result]
    rows = []
    for task in items:
        properties = task.get("properties") or {}
        timers = (properties.get("trigger") or {}).get("timerTriggers") or []
        sources = (properties.get("trigger") or {}).get("sourceTriggers") or []
        rows.append(
            {
                "Name": task.get("name"),
                "Status": properties.get("status"),
                "Step": (properties.get("step") or {}).get("type"),
                "Schedules": ", ".join(str(t.get("schedule")) for t in timers),
                "CommitHook": ", ".join(str(t.get("webhookUrl")) for t in sources),
            }
        )
    return rows


def run_view(result: Any) -> list[dict[str, Any]]:
    items = result if isinstance(result, list) else [result]
    return [
        {
            "RunId": (r.get("properties") or {}).get("runId"),
            "Task": (r.get("properties") or {}).get("task", ""),
            "Status": (r.get("properties") or {}).get("status"),
            "Trigger": _trigger_of(r.get("properties") or {}),
            "Started": (r.get("properties") or {}).get("startTime", ""),
        }
        for r in items
    ]


def _trigger_of(properties: dict[str, Any]) -> str:
    if properties.get("sourceTrigger"):
        return "Pull request" if properties["sourceTrigger"].get("eventType") == "pullrequest" else "Commit"
    if properties.get("timerTrigger"):
        return "Timer"
    return "Image update" if properties.get("imageUpdateTrigger") else "Manual"


def _base(ctx: typer.Context, registry: str, resource_group: str | None) -> tuple[Any, str, Any]:
    session = session_of(ctx)
    ref = session.registry(registry, resource_group)
    return session, session.arm().registry_path(ref.resource_group, ref.name), ref


def _timers(schedules: list[str] | None) -> dict[str, Any]:
    return {"timerTriggers": [{"name": f"t{i + 1}", "schedule": s} for i, s in enumerate(schedules or [])]}


@task_app.command("create")
def create(
    ctx: typer.Context,
    name: TaskNameOption,
    registry: RegistryOption,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="The task file (YAML); with a git context, its path there.")
    ] = None,
    cmd: Annotated[str | None, typer.Option("--cmd", help="One command to run (instead of a task file).")] = None,
    context: Annotated[
        str, typer.Option("--context", "-c", help="A directory to upload, /dev/null, or a git URL (repo.git#branch).")
    ] = "/dev/null",
    schedule: ScheduleOption = None,
    commit_trigger: Annotated[
        bool, typer.Option("--commit-trigger-enabled", help="Run on each push to the git context's branch.")
    ] = False,
    pull_request_trigger: PullRequestOption = None,
    forks: ForksOption = None,
    git_token: Annotated[
        str | None, typer.Option("--git-access-token", help="A token that reads the git repository (private ones).")
    ] = None,
    set_value: Annotated[list[str] | None, typer.Option("--set", help="A value: NAME=VALUE (repeat).")] = None,
    set_secret: Annotated[list[str] | None, typer.Option("--set-secret", help="A secret value (repeat).")] = None,
    timeout: Annotated[int, typer.Option("--timeout", help="Each run's timeout in seconds.")] = 3600,
    agent_pool: AgentPoolOption = None,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Create a task from a task file or a command, with timer, commit and pull-request triggers."""
    git = context.startswith(("https://", "http://"))
    if (file is None) == (cmd is None):
        raise CliError(ExitCode.BAD_INPUT, "give a task file (--file) or a command (--cmd)")
    if file is not None and not git and not file.is_file():
        raise CliError(ExitCode.BAD_INPUT, f"the task file {file} does not exist")
    pull_requests = pull_request_trigger == Toggle.TRUE
    if (commit_trigger or pull_requests) and not git:
        raise CliError(ExitCode.BAD_INPUT, "a source trigger needs a git context (--context https://...git)")
    session, base, ref = _base(ctx, registry, resource_group)
    arm = session.arm()
    context_path = "/dev/null"
    if git:
        context_path = context
    elif context != "/dev/null":
        directory = Path(context)
        if not directory.is_dir():
            raise CliError(ExitCode.BAD_INPUT, f"the context {context} is not a directory")
        upload = arm.json("POST", f"{base}/listBuildSourceUploadUrl{VERSION}")
        upload_context(session.http(), directory, "", str(upload["uploadUrl"]))
        context_path = str(upload["relativePath"])
    values = [{"name": k, "value": v, "isSecret": False} for k, v in pairs(set_value, "--set").items()]
    values += [{"name": k, "value": v, "isSecret": True} for k, v in pairs(set_secret, "--set-secret").items()]
    step: dict[str, Any] = {"contextPath": context_path, "values": values}
    if cmd is not None:
        step |= {"type": "EncodedTask", "encodedTaskContent": base64.b64encode(command_task(cmd, timeout)).decode()}
    elif git:
        step |= {"type": "FileTask", "taskFilePath": str(file)}
    else:
        assert file is not None
        step |= {"type": "EncodedTask", "encodedTaskContent": base64.b64encode(file.read_bytes()).decode()}
    trigger = _timers(schedule)
    events = (["commit"] if commit_trigger else []) + (["pullrequest"] if pull_requests else [])
    if events:
        source = _source_trigger(context, events, forks)
        if git_token:
            source["sourceRepository"]["sourceControlAuthProperties"] = {"tokenType": "PAT", "token": git_token}
        trigger["sourceTriggers"] = [source]
    body: dict[str, Any] = {
        "location": ref.location,
        "properties": {"step": step, "timeout": timeout, "platform": {"os": "Linux"}, "trigger": trigger},
    }
    if agent_pool:
        body["properties"]["agentPoolName"] = agent_pool
    session.emit(arm.json("PUT", f"{base}/tasks/{name}{VERSION}", body), output, query, task_view)


def _source_trigger(context: str, events: list[str], forks: Forks | None) -> dict[str, Any]:
    """The task's one source trigger for a git context `repo.git#branch:dir` (without its token)."""
    repository = context.split("#", 1)[0]
    branch = context.split("#", 1)[1].split(":", 1)[0] if "#" in context else ""
    source: dict[str, Any] = {"sourceControlType": "Github", "repositoryUrl": repository}
    if branch:
        source["branch"] = branch
    trigger: dict[str, Any] = {"name": "defaultSourceTriggerName", "sourceRepository": source}
    trigger["sourceTriggerEvents"] = events
    if forks is not None:
        trigger["pullRequestForks"] = forks.value
    return trigger


def _updated_source_triggers(
    task: dict[str, Any], pull_requests: Toggle | None, forks: Forks | None
) -> list[dict[str, Any]]:
    """The task's source triggers with pull requests turned on or off (the stored token and hook secret are
    kept: the entries are sent without them); a trigger left with no event is removed."""
    properties = task.get("properties") or {}
    shown = ((properties.get("trigger") or {}).get("sourceTriggers") or [])[:1]
    context = str((properties.get("step") or {}).get("contextPath") or "")
    if not shown:
        if pull_requests != Toggle.TRUE:
            raise CliError(ExitCode.BAD_INPUT, "the task has no source trigger (--pull-request-trigger-enabled true)")
        if not context.startswith(("https://", "http://")):
            raise CliError(ExitCode.BAD_INPUT, "a source trigger needs the task's context to be a git URL")
        return [_source_trigger(context, ["pullrequest"], forks)]
    old = shown[0]
    events = [e for e in old.get("sourceTriggerEvents", []) if e != "pullrequest"]
    if pull_requests == Toggle.TRUE or (pull_requests is None and "pullrequest" in old["sourceTriggerEvents"]):
        events.append("pullrequest")
    if not events:
        return []
    repository = old.get("sourceRepository") or {}
    trigger = {
        "name": old["name"],
        "sourceRepository": {k: v for k, v in repository.items() if k != "sourceControlAuthProperties"},
        "sourceTriggerEvents": events,
        "status": old.get("status", "Enabled"),
        "pullRequestForks": forks.value if forks is not None else old.get("pullRequestForks", "Restricted"),
    }
    return [trigger]


def command_task(cmd: str, timeout: int) -> bytes:
    """The task file `az acr task create --cmd` makes: one `cmd` step."""
    import json

    return f"version: v1.1.0\nsteps:\n  - cmd: {json.dumps(cmd)}\n    timeout: {timeout}\n".encode()


@task_app.command("list")
def list_tasks(
    ctx: typer.Context,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """List a registry's tasks."""
    session, base, _ = _base(ctx, registry, resource_group)
    session.emit(session.arm().list(f"{base}/tasks{VERSION}"), output, query, task_view)


@task_app.command("show")
def show(
    ctx: typer.Context,
    name: TaskNameOption,
    registry: RegistryOption,
    secure: Annotated[
        bool,
        typer.Option(
            "--with-secure-properties", help="Show secret values, the git token and the commit hook's secret."
        ),
    ] = False,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Show a task (its commit trigger's hook URL; with --with-secure-properties, the hook's secret)."""
    session, base, _ = _base(ctx, registry, resource_group)
    if secure:
        found = session.arm().json("POST", f"{base}/tasks/{name}/listDetails{VERSION}")
    else:
        found = session.arm().json("GET", f"{base}/tasks/{name}{VERSION}")
    session.emit(found, output, query, task_view)


@task_app.command("update")
def update(
    ctx: typer.Context,
    name: TaskNameOption,
    registry: RegistryOption,
    status: Annotated[Status | None, typer.Option("--status", help="Enabled or Disabled.")] = None,
    schedule: ScheduleOption = None,
    no_schedule: Annotated[bool, typer.Option("--no-schedule", help="Remove every timer trigger.")] = False,
    timeout: Annotated[int | None, typer.Option("--timeout", help="Each run's timeout in seconds.")] = None,
    agent_pool: AgentPoolOption = None,
    pull_request_trigger: PullRequestOption = None,
    forks: ForksOption = None,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Change a task's status, schedules, timeout, agent pool or pull-request trigger."""
    session, base, _ = _base(ctx, registry, resource_group)
    properties: dict[str, Any] = {}
    if status is not None:
        properties["status"] = status.value
    if schedule or no_schedule:
        properties["trigger"] = _timers(schedule)
    if pull_request_trigger is not None or forks is not None:
        task = session.arm().json("GET", f"{base}/tasks/{name}{VERSION}")
        trigger = properties.setdefault("trigger", {})
        trigger["sourceTriggers"] = _updated_source_triggers(task, pull_request_trigger, forks)
    if timeout is not None:
        properties["timeout"] = timeout
    if agent_pool is not None:
        properties["agentPoolName"] = agent_pool  # "" : no pool
    body = {"properties": properties}
    session.emit(session.arm().json("PATCH", f"{base}/tasks/{name}{VERSION}", body), output, query, task_view)


@task_app.command("delete")
def delete(
    ctx: typer.Context,
    name: TaskNameOption,
    registry: RegistryOption,
    yes: YesOption = False,
    resource_group: ResourceGroupOption = None,
) -> None:
    """Delete a task (its runs stay)."""
    session, base, _ = _base(ctx, registry, resource_group)
    session.confirm(f"Delete task '{name}'?", yes)
    session.arm().call("DELETE", f"{base}/tasks/{name}{VERSION}")


@task_app.command("run")
def run(
    ctx: typer.Context,
    name: TaskNameOption,
    registry: RegistryOption,
    no_logs: Annotated[bool, typer.Option("--no-logs", help="Do not print the log; wait for the run.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Print the run id and return at once.")] = False,
    resource_group: ResourceGroupOption = None,
) -> None:
    """Run a task now, print its log, exit with its outcome (0 Succeeded, 4 otherwise)."""
    session, base, _ = _base(ctx, registry, resource_group)
    arm = session.arm()
    task = arm.json("GET", f"{base}/tasks/{name}{VERSION}")
    scheduled = arm.json("POST", f"{base}/scheduleRun{VERSION}", {"type": "TaskRunRequest", "taskId": task["id"]})
    run_id = str(scheduled["properties"]["runId"])
    typer.echo(f"Queued a run with ID: {run_id}", err=True)
    if no_wait:
        typer.echo(run_id)
        return
    status = follow_run(session.http(), arm, f"{base}/runs/{run_id}", VERSION, show_log=not no_logs)
    if status["status"] != "Succeeded":
        reason = status.get("runErrorMessage") or status["status"]
        raise CliError(ExitCode.UNAVAILABLE, f"run {run_id} ended {status['status']}: {reason}", "RunFailed")


@task_app.command("list-runs")
def list_runs(
    ctx: typer.Context,
    registry: RegistryOption,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Only this task's runs.")] = None,
    top: Annotated[int, typer.Option("--top", help="At most this many, newest first.")] = 15,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """List runs, newest first."""
    session, base, _ = _base(ctx, registry, resource_group)
    path = f"{base}/runs{VERSION}&$top={top}"
    if name:
        path += f"&$filter=TaskName eq '{name}'"
    session.emit(session.arm().list(path), output, query, run_view)


@task_app.command("logs")
def logs(
    ctx: typer.Context,
    registry: RegistryOption,
    run_id: Annotated[str | None, typer.Option("--run-id", help="The run (default: the task's latest).")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="The task whose latest run to show.")] = None,
    resource_group: ResourceGroupOption = None,
) -> None:
    """Print a run's log."""
    session, base, _ = _base(ctx, registry, resource_group)
    arm = session.arm()
    if run_id is None:
        path = f"{base}/runs{VERSION}&$top=1" + (f"&$filter=TaskName eq '{name}'" if name else "")
        latest = arm.json("GET", path).get("value") or []
        if not latest:
            raise CliError(ExitCode.NOT_FOUND, "no run found", "ResourceNotFound")
        run_id = str(latest[0]["name"])
    link = str(arm.json("POST", f"{base}/runs/{run_id}/listLogSasUrl{VERSION}")["logLink"])
    print_log(session.http(), link, 0)


@task_app.command("cancel-run")
def cancel_run(
    ctx: typer.Context,
    registry: RegistryOption,
    run_id: Annotated[str, typer.Option("--run-id", help="The run to cancel.")],
    resource_group: ResourceGroupOption = None,
) -> None:
    """Cancel a queued or running run."""
    session, base, _ = _base(ctx, registry, resource_group)
    session.arm().call("POST", f"{base}/runs/{run_id}/cancel{VERSION}")
