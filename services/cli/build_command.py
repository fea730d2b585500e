"""`acr build` and `acr run`: a quick build, or a multi-step task file, run in the registry as `az acr build`
and `az acr run` do it.

    acr build -r myregistry -t app:{{.Run.ID}} .

packs the directory (without what `.dockerignore` names) as a `.tar.gz`, uploads it to the URL
`listBuildSourceUploadUrl` gives, schedules a `DockerBuildRequest` (`scheduleRun`), prints the run's log as
it is written (read through `listLogSasUrl`) and exits with the run's outcome: 0 when it Succeeded, 4 when
it Failed, timed out or was canceled.

    acr run -r myregistry -f acr-task.yaml --set tag=v1 .

sends the task file (an `EncodedTaskRunRequest`, checked by the service before anything runs: an error
names its line) with the context uploaded as above (`/dev/null` or no directory: none), and follows it the
same way.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from services.cli.errors import CliError, ExitCode
from services.cli.session import RegistryOption, ResourceGroupOption, pairs, session_of
from services.cli.transport import send

TASKS_API_VERSION = "2025-03-01-preview"  # azure-mgmt-containerregistrytasks 1.0.0b1's
TERMINAL = frozenset({"Succeeded", "Failed", "Canceled", "Error", "Timeout"})
# How often a followed run is read: often while a quick build may be ending, then once a second.
FIRST_POLL_SECONDS, FIRST_POLLS, POLL_SECONDS = 0.25, 40, 1.0


def build(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="The build context: a directory.")],
    registry: RegistryOption,
    image: Annotated[
        list[str] | None, typer.Option("--image", "-t", help="repository:tag to push, e.g. app:{{.Run.ID}} (repeat).")
    ] = None,
    file: Annotated[str, typer.Option("--file", "-f", help="The Dockerfile, relative to the context.")] = "Dockerfile",
    build_arg: Annotated[list[str] | None, typer.Option("--build-arg", help="NAME=VALUE (repeat).")] = None,
    secret_build_arg: Annotated[
        list[str] | None, typer.Option("--secret-build-arg", help="NAME=VALUE, masked in logs (repeat).")
    ] = None,
    no_push: Annotated[bool, typer.Option("--no-push", help="Build only.")] = False,
    no_logs: Annotated[bool, typer.Option("--no-logs", help="Do not print the log; wait for the run.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Print the run id and return at once.")] = False,
    timeout: Annotated[int, typer.Option("--timeout", help="The run's timeout in seconds.")] = 3600,
    platform: Annotated[str, typer.Option("--platform", help="linux/amd64, linux/arm64, ...")] = "linux/amd64",
    agent_pool: Annotated[
        str | None, typer.Option("--agent-pool", help="The agent pool to run in (it waits for a free slot).")
    ] = None,
    resource_group: ResourceGroupOption = None,
) -> None:
    """Build an image in the registry from a local directory and push it."""
    session = session_of(ctx)
    if not source.is_dir():
        raise CliError(ExitCode.BAD_INPUT, f"the context {source} is not a directory")
    if not (source / file).is_file():
        raise CliError(ExitCode.BAD_INPUT, f"the Dockerfile {file} is not in {source}")
    os_name, _, architecture = platform.partition("/")
    ref = session.registry(registry, resource_group)
    arm = session.arm()
    base = arm.registry_path(ref.resource_group, ref.name)
    version = f"?api-version={TASKS_API_VERSION}"
    upload = arm.json("POST", f"{base}/listBuildSourceUploadUrl{version}")
    upload_context(session.http(), source, file, str(upload["uploadUrl"]))
    arguments = [{"name": k, "value": v, "isSecret": False} for k, v in pairs(build_arg, "--build-arg").items()]
    arguments += [
        {"name": k, "value": v, "isSecret": True} for k, v in pairs(secret_build_arg, "--secret-build-arg").items()
    ]
    request: dict[str, Any] = {
        "type": "DockerBuildRequest",
        "imageNames": image or [],
        "isPushEnabled": not no_push,
        "dockerFilePath": file,
        "arguments": arguments,
        "timeout": timeout,
        "platform": {"os": os_name.capitalize() or "Linux", "architecture": architecture or "amd64"},
        "sourceLocation": upload["relativePath"],
    }
    if agent_pool:
        request["agentPoolName"] = agent_pool
    run = arm.json("POST", f"{base}/scheduleRun{version}", request)
    run_id = str(run["properties"]["runId"])
    typer.echo(f"Queued a build with ID: {run_id}", err=True)
    if no_wait:
        typer.echo(run_id)
        return
    run_path = f"{base}/runs/{run_id}"
    status = follow_run(session.http(), arm, run_path, version, show_log=not no_logs)
    if status["status"] != "Succeeded":
        reason = status.get("runErrorMessage") or status["status"]
        raise CliError(ExitCode.UNAVAILABLE, f"run {run_id} ended {status['status']}: {reason}", "RunFailed")
    for output in status.get("outputImages") or []:
        typer.echo(f"{output.get('registry')}/{output.get('repository')}:{output.get('tag')}@{output.get('digest')}")


def run_task(
    ctx: typer.Context,
    registry: RegistryOption,
    file: Annotated[Path, typer.Option("--file", "-f", help="The task file (YAML), e.g. acr-task.yaml.")],
    source: Annotated[
        Path | None, typer.Argument(help="The context directory (/dev/null or none: no context).")
    ] = None,
    set_value: Annotated[list[str] | None, typer.Option("--set", help="A value: NAME=VALUE (repeat).")] = None,
    set_secret: Annotated[
        list[str] | None, typer.Option("--set-secret", help="A secret value, masked in the log (repeat).")
    ] = None,
    values: Annotated[Path | None, typer.Option("--values", help="A YAML file of values.")] = None,
    no_logs: Annotated[bool, typer.Option("--no-logs", help="Do not print the log; wait for the run.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Print the run id and return at once.")] = False,
    timeout: Annotated[int, typer.Option("--timeout", help="The run's timeout in seconds.")] = 3600,
    platform: Annotated[str, typer.Option("--platform", help="linux/amd64, linux/arm64, ...")] = "linux/amd64",
    agent_pool: Annotated[
        str | None, typer.Option("--agent-pool", help="The agent pool to run in (it waits for a free slot).")
    ] = None,
    resource_group: ResourceGroupOption = None,
) -> None:
    """Run a multi-step task file (build, push and cmd steps) in the registry."""
    import base64

    session = session_of(ctx)
    if not file.is_file():
        raise CliError(ExitCode.BAD_INPUT, f"the task file {file} does not exist")
    has_context = source is not None and str(source) != "/dev/null"
    if has_context and source is not None and not source.is_dir():
        raise CliError(ExitCode.BAD_INPUT, f"the context {source} is not a directory")
    os_name, _, architecture = platform.partition("/")
    ref = session.registry(registry, resource_group)
    arm = session.arm()
    base = arm.registry_path(ref.resource_group, ref.name)
    version = f"?api-version={TASKS_API_VERSION}"
    request: dict[str, Any] = {
        "type": "EncodedTaskRunRequest",
        "encodedTaskContent": base64.b64encode(file.read_bytes()).decode(),
        "values": [{"name": k, "value": v, "isSecret": False} for k, v in pairs(set_value, "--set").items()]
        + [{"name": k, "value": v, "isSecret": True} for k, v in pairs(set_secret, "--set-secret").items()],
        "timeout": timeout,
        "platform": {"os": os_name.capitalize() or "Linux", "architecture": architecture or "amd64"},
    }
    if agent_pool:
        request["agentPoolName"] = agent_pool
    if values is not None:
        request["encodedValuesContent"] = base64.b64encode(values.read_bytes()).decode()
    if has_context and source is not None:
        upload = arm.json("POST", f"{base}/listBuildSourceUploadUrl{version}")
        upload_context(session.http(), source, "", str(upload["uploadUrl"]))
        request["sourceLocation"] = upload["relativePath"]
    run = arm.json("POST", f"{base}/scheduleRun{version}", request)
    run_id = str(run["properties"]["runId"])
    typer.echo(f"Queued a run with ID: {run_id}", err=True)
    if no_wait:
        typer.echo(run_id)
        return
    status = follow_run(session.http(), arm, f"{base}/runs/{run_id}", version, show_log=not no_logs)
    if status["status"] != "Succeeded":
        reason = status.get("runErrorMessage") or status["status"]
        raise CliError(ExitCode.UNAVAILABLE, f"run {run_id} ended {status['status']}: {reason}", "RunFailed")
    for output in status.get("outputImages") or []:
        typer.echo(f"{output.get('registry')}/{output.get('repository')}:{output.get('tag')}@{output.get('digest')}")


def upload_context(http: httpx.Client, source: Path, dockerfile: str, url: str) -> None:
    with tempfile.TemporaryFile() as archive:
        count = _pack(source, dockerfile, archive)
        size = archive.tell()
        archive.seek(0)
        typer.echo(f"Uploading the context: {count} files, {size} bytes", err=True)
        response = send(http, "PUT", url, content=archive.read(), headers={"x-ms-blob-type": "BlockBlob"})
    if response.status_code != 201:
        raise CliError(ExitCode.UNAVAILABLE, f"uploading the context failed: {response.status_code}", "UploadFailed")


def _pack(source: Path, dockerfile: str, archive: Any) -> int:
    from services.cli.build_context import write_context

    return write_context(source, dockerfile, archive)


def follow_run(http: httpx.Client, arm: Any, run_path: str, version: str, *, show_log: bool) -> dict[str, Any]:
    """Print the run's log as it grows until the run ends; the run's final properties."""
    offset = 0
    link: str | None = None
    polls = 0
    while True:
        properties: dict[str, Any] = arm.json("GET", run_path + version)["properties"]
        done = properties.get("status") in TERMINAL
        if show_log:
            if link is None:
                link = str(arm.json("POST", f"{run_path}/listLogSasUrl{version}")["logLink"])
            offset = print_log(http, link, offset)
        if done:
            return properties
        time.sleep(FIRST_POLL_SECONDS if polls < FIRST_POLLS else POLL_SECONDS)
        polls += 1


def print_log(http: httpx.Client, link: str, offset: int) -> int:
    response = send(http, "GET", link, headers={"Range": f"bytes={offset}-"})
    if response.status_code in (200, 206):
        typer.echo(response.content.decode(errors="replace"), nl=False)
        return offset + len(response.content)
    return offset  # 404: not started; 416: nothing new
