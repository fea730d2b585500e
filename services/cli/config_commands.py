"""`acr config set|unset|show`: the config file (config.py says where it is and what overrides it)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from services.cli.config import KEYS, changed_config, config_path, load_config, save_config
from services.cli.errors import CliError, ExitCode
from services.cli.output import OutputOption, QueryOption
from services.cli.session import session_of

config_app = typer.Typer(
    help=f"Settings kept in $ACR_CONFIG or ~/.config/acr/config.json: {', '.join(KEYS)}.", no_args_is_help=True
)


@config_app.command("set")
def set_values(
    assignments: Annotated[list[str], typer.Argument(help="key=value ... (e.g. endpoint=https://... "
                                                    "subscription=<id> resource-group=<name>)")],
) -> None:  # fmt: skip
    """Set config keys (an empty value removes the key)."""
    values: dict[str, str | None] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep:
            raise CliError(ExitCode.BAD_INPUT, f"expected key=value, not {assignment!r}")
        values[key.strip()] = value
    path = config_path()
    save_config(path, changed_config(load_config(path), values))


@config_app.command("unset")
def unset(keys: Annotated[list[str], typer.Argument(help="The keys to remove.")]) -> None:
    """Remove config keys (their defaults apply again)."""
    path = config_path()
    save_config(path, changed_config(load_config(path), dict.fromkeys(keys)))


def _view(result: Any) -> list[dict[str, Any]]:
    settings = result.get("settings", {}) if isinstance(result, dict) else {}
    return [{"Key": key, "Value": s.get("value"), "Source": s.get("source")} for key, s in settings.items()]


@config_app.command("show")
def show(ctx: typer.Context, output: OutputOption = None, query: QueryOption = None) -> None:
    """The settings in force, each with where it came from (the token's source only, never its value)."""
    session = session_of(ctx)
    profile = session.profile
    settings = {
        "endpoint": profile.endpoint,
        "subscription": profile.subscription,
        "resource-group": profile.resource_group,
        "location": profile.location,
        "data-endpoint": profile.data_endpoint,
        "output": profile.output,
    }
    shown: dict[str, Any] = {key: {"value": s.value, "source": s.source} for key, s in settings.items()}
    if not profile.data_endpoint.value:
        shown["data-endpoint"] = {"value": session.data_endpoint(), "source": "the endpoint, a loopback address"
                                  if session.data_endpoint() else "each registry's login server (https)"}  # fmt: skip
    shown["token"] = {"value": "(hidden)" if profile.token.source != "none" else None, "source": profile.token.source}
    session.emit({"file": str(profile.config_file), "settings": shown}, output, query, _view)
