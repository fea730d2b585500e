"""Where `acr` finds its endpoint, subscription and credentials: one place, with a known order.

Each setting is taken from the first of

1. the command line (`--endpoint`, `--subscription`, `--token`, `--resource-group`/`-g`, `--output`/`-o`),
2. the environment (`ACR_ENDPOINT`, `ACR_SUBSCRIPTION`, `ACR_RESOURCE_GROUP`, `ACR_LOCATION`,
   `ACR_DATA_ENDPOINT`, `ACR_OUTPUT`, `ACR_TOKEN`, `ACR_TOKEN_COMMAND`),
3. the config file: `$ACR_CONFIG`, else `$XDG_CONFIG_HOME/acr/config.json` (`~/.config/acr/config.json`),
   written by `acr config set key=value`,
4. `make run`'s `.local/credentials.json` (its `"arm"` object: endpoint, subscriptionId, resourceGroup, token),
   looked for in `$STATE_DIR` or `./.local`, so that `acr` works in a checkout with no setup at all.

The management token is never stored in the config file (a bearer token in a dotfile outlives its reason
to exist); the file names a command that prints a fresh one instead (`token-command`), run only when a
command needs the token.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.cli.errors import CliError, ExitCode
from services.cli.output import OutputFormat

DEFAULT_LOCATION = "westeurope"
TOKEN_COMMAND_SECONDS = 60


class ConfigFile(BaseModel):
    """The config file's content: the keys `acr config set` accepts, as they are written."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    endpoint: str | None = None
    subscription: str | None = None
    resource_group: str | None = Field(default=None, alias="resource-group")
    location: str | None = None
    data_endpoint: str | None = Field(default=None, alias="data-endpoint")
    token_command: str | None = Field(default=None, alias="token-command")
    output: OutputFormat | None = None

    @field_validator("endpoint", "data_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise ValueError("must be an http(s) URL of a host, like https://management.azure.com")
        return value.rstrip("/")

    @field_validator("token_command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None and not shlex.split(value):
            raise ValueError("must be a command line")
        return value


KEYS = tuple(info.alias or name for name, info in ConfigFile.model_fields.items())


def config_path() -> Path:
    explicit = os.environ.get("ACR_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "acr" / "config.json"


def load_config(path: Path) -> ConfigFile:
    if not path.is_file():
        return ConfigFile()
    try:
        return ConfigFile.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as error:
        raise CliError(ExitCode.BAD_INPUT, f"{path} is not a valid acr config: {_first_problem(error)}") from error


def save_config(path: Path, config: ConfigFile) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps(config.model_dump(by_alias=True, exclude_none=True, mode="json"), indent=2) + "\n"
    temporary = path.with_name(path.name + ".tmp")
    # 0600: a token-command can name secrets (a service principal's file, a vault path).
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(body)
    temporary.replace(path)


def changed_config(config: ConfigFile, assignments: dict[str, str | None]) -> ConfigFile:
    """The config with `key=value` assignments applied (None removes the key); bad input is exit 2."""
    unknown = sorted(set(assignments) - set(KEYS))
    if unknown:
        raise CliError(ExitCode.BAD_INPUT, f"unknown config key {unknown[0]!r}: the keys are {', '.join(KEYS)}")
    data = config.model_dump(by_alias=True, exclude_none=True, mode="json")
    for key, value in assignments.items():
        if value is None or value == "":
            data.pop(key, None)
        else:
            data[key] = value
    try:
        return ConfigFile.model_validate(data)
    except ValidationError as error:
        raise CliError(ExitCode.BAD_INPUT, f"invalid config: {_first_problem(error)}") from error


def _first_problem(error: Exception) -> str:
    if isinstance(error, ValidationError) and error.errors():
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}" if where else first["msg"]
    return str(error)


@dataclass(frozen=True)
class LocalDefaults:
    """`make run`'s management settings (`.local/credentials.json`, key "arm")."""

    path: Path
    endpoint: str | None = None
    subscription: str | None = None
    resource_group: str | None = None
    token: str | None = None


def local_defaults() -> LocalDefaults | None:
    state = os.environ.get("STATE_DIR")
    path = (Path(state) if state else Path.cwd() / ".local") / "credentials.json"
    try:
        arm: Any = json.loads(path.read_text()).get("arm")
    except (OSError, ValueError, AttributeError):
        return None  # no checkout here, or not one `make run` has started: nothing to default from
    if not isinstance(arm, dict):
        return None

    def text(key: str) -> str | None:
        value = arm.get(key)
        return value if isinstance(value, str) and value else None

    return LocalDefaults(path, text("endpoint"), text("subscriptionId"), text("resourceGroup"), text("token"))


@dataclass(frozen=True)
class Setting:
    value: str | None
    source: str  # where it came from: "--endpoint", "ACR_ENDPOINT", "config file", the credentials file's path


@dataclass(frozen=True)
class CommandLine:
    """What the root command line said (None: not given)."""

    endpoint: str | None = None
    subscription: str | None = None
    token: str | None = None


@dataclass
class Profile:
    """The settings in force for this run of `acr`, each with its source."""

    endpoint: Setting
    subscription: Setting
    resource_group: Setting
    location: Setting
    data_endpoint: Setting
    output: Setting
    token: TokenSource
    config_file: Path

    def require(self, setting: Setting, key: str) -> str:
        if not setting.value:
            raise CliError(ExitCode.BAD_INPUT, f"no {key} configured: pass it, or run `acr config set {key}=...`")
        return setting.value


@dataclass
class TokenSource:
    """The management (Entra) token, found when first needed; at most one run of the token command."""

    explicit: Setting | None
    command: Setting | None
    local: Setting | None
    _cached: str | None = field(default=None, repr=False)

    @property
    def source(self) -> str:
        if self.explicit is not None:
            return self.explicit.source
        if self.command is not None:
            return f"token-command ({self.command.source})"
        return self.local.source if self.local is not None else "none"

    def get(self) -> str:
        if self._cached is None:
            self._cached = self._find()
        return self._cached

    def _find(self) -> str:
        if self.explicit is not None and self.explicit.value:
            return self.explicit.value
        if self.command is not None and self.command.value:
            return run_token_command(self.command.value)
        if self.local is not None and self.local.value:
            return self.local.value
        raise CliError(
            ExitCode.AUTH,
            "no management token: set ACR_TOKEN, pass --token, or run "
            '`acr config set token-command="<a command that prints an Entra token>"`',
        )


def run_token_command(command: str) -> str:
    """Run the configured token command (no shell: its words as written) and take its first output line."""
    try:
        done = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=TOKEN_COMMAND_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CliError(ExitCode.AUTH, f"the token-command {command!r} did not run: {error}") from error
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        problem = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}, no output"])[-1]
        raise CliError(ExitCode.AUTH, f"the token-command {command!r} failed: {problem}")
    return lines[0].strip()


def _pick(
    option: str | None,
    option_name: str,
    env_name: str,
    configured: str | None,
    local: str | None = None,
    local_path: Path | None = None,
) -> Setting:
    if option:
        return Setting(option, option_name)
    if os.environ.get(env_name):
        return Setting(os.environ[env_name], env_name)
    if configured:
        return Setting(configured, "config file")
    if local:
        return Setting(local, str(local_path))
    return Setting(None, "not set")


def resolve_profile(line: CommandLine) -> Profile:
    path = config_path()
    config = load_config(path)
    local = local_defaults() or LocalDefaults(path)
    endpoint = _pick(line.endpoint, "--endpoint", "ACR_ENDPOINT", config.endpoint, local.endpoint, local.path)
    if endpoint.value:
        try:
            endpoint = Setting(ConfigFile(endpoint=endpoint.value).endpoint, endpoint.source)
        except ValidationError as error:
            raise CliError(ExitCode.BAD_INPUT, f"endpoint ({endpoint.source}): {_first_problem(error)}") from error
    location = _pick(None, "", "ACR_LOCATION", config.location)
    output = _pick(None, "", "ACR_OUTPUT", config.output.value if config.output else None)
    if output.value and output.value not in {f.value for f in OutputFormat}:
        raise CliError(ExitCode.BAD_INPUT, f"ACR_OUTPUT must be one of json, table, tsv, none, not {output.value!r}")
    explicit = _pick(line.token, "--token", "ACR_TOKEN", None)
    command = _pick(None, "", "ACR_TOKEN_COMMAND", config.token_command)
    return Profile(
        endpoint=endpoint,
        subscription=_pick(
            line.subscription, "--subscription", "ACR_SUBSCRIPTION", config.subscription, local.subscription, local.path
        ),
        resource_group=_pick(None, "", "ACR_RESOURCE_GROUP", config.resource_group, local.resource_group, local.path),
        location=location if location.value else Setting(DEFAULT_LOCATION, "default"),
        data_endpoint=_pick(None, "", "ACR_DATA_ENDPOINT", config.data_endpoint),
        output=output if output.value else Setting(OutputFormat.JSON.value, "default"),
        token=TokenSource(
            explicit if explicit.value else None,
            command if command.value else None,
            Setting(local.token, str(local.path)) if local.token else None,
        ),
        config_file=path,
    )
