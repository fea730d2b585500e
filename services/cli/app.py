"""The `acr` command tree: the root options and every command group, assembled."""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli import registry_commands
from services.cli.agentpool_commands import agentpool_app
from services.cli.build_command import build, run_task
from services.cli.config import CommandLine
from services.cli.config_commands import config_app
from services.cli.gc_commands import gc_app
from services.cli.login_command import login
from services.cli.manifest_commands import manifest_app
from services.cli.purge_command import purge
from services.cli.replication_commands import replication_app
from services.cli.repository_commands import repository_app
from services.cli.scan_commands import scan_app
from services.cli.session import Session
from services.cli.task_commands import task_app
from services.cli.taskrun_commands import taskrun_app
from services.cli.token_commands import scope_map_app, token_app
from services.cli.webhook_commands import webhook_app

HELP = (
    "Manage container registries over their HTTP APIs, as `az acr` does.\n\n"
    "Settings: `acr config set endpoint=... subscription=... resource-group=... token-command=...`, or ACR_* "
    "variables; in a checkout where `make run` ran, .local/credentials.json is used.\n\n"
    "Exit codes: 0 done, 1 not found, 2 bad input, 3 authentication or authorization refused, "
    "4 service unavailable or failed, 5 acr's own failure."
)

app = typer.Typer(
    name="acr",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # paragraphs of docstrings reflow (rich mode keeps their line breaks)
    pretty_exceptions_enable=False,  # errors are one line (__main__.py), never a rich traceback
)


@app.callback()
def root(
    ctx: typer.Context,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="The management API, e.g. http://127.0.0.1:5000 [ACR_ENDPOINT].")
    ] = None,
    subscription: Annotated[
        str | None, typer.Option("--subscription", help="The subscription id [ACR_SUBSCRIPTION].")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="An Entra token for the management API [ACR_TOKEN].")
    ] = None,
) -> None:
    session = Session(CommandLine(endpoint, subscription, token))
    ctx.obj = session
    ctx.call_on_close(session.close)


registry_commands.register(app)
app.command("login")(login)
app.command("purge")(purge)
app.command("build")(build)
app.command("run")(run_task)
app.add_typer(repository_app, name="repository")
app.add_typer(manifest_app, name="manifest")
app.add_typer(scan_app, name="scan")
app.add_typer(webhook_app, name="webhook")
app.add_typer(replication_app, name="replication")
app.add_typer(task_app, name="task")
app.add_typer(taskrun_app, name="taskrun")
app.add_typer(agentpool_app, name="agentpool")
app.add_typer(token_app, name="token")
app.add_typer(scope_map_app, name="scope-map")
app.add_typer(config_app, name="config")
app.add_typer(gc_app, name="gc")
