"""What every `acr` command works with: the profile (config.py), one HTTP client, the management API client,
registry data-plane clients, printing results, asking for confirmation; and the options commands share.

The root command makes one `Session` and keeps it in the click context; commands take it with
`session_of(ctx)`. Nothing is contacted until a command needs it, so `acr config ...` and `--help` work
without an endpoint or a token.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import typer

from services.cli.arm import ArmClient, RegistryRef
from services.cli.config import CommandLine, Profile, resolve_profile
from services.cli.dataplane import PasswordCredentials, RegistryClient, address_of, is_loopback
from services.cli.errors import CliError, ExitCode
from services.cli.output import OutputFormat, TableView, render
from services.cli.transport import new_client

# --- options shared by several commands (az's names) ----------------------------------------------------
RegistryNameOption = Annotated[str, typer.Option("--name", "-n", help="The registry's name.")]
RegistryOption = Annotated[str, typer.Option("--registry", "-r", help="The registry's name.")]
ResourceGroupOption = Annotated[
    str | None,
    typer.Option(
        "--resource-group", "-g", help="The registry's resource group (default: configured, else found by name)."
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
UsernameOption = Annotated[
    str | None,
    typer.Option("--username", "-u", envvar="ACR_USERNAME", help="Sign in to the registry with this username "
                 "(admin user or token) instead of the Entra token."),
]  # fmt: skip
PasswordOption = Annotated[
    str | None, typer.Option("--password", "-p", envvar="ACR_PASSWORD", help="The password for --username.")
]


@dataclass
class Session:
    line: CommandLine
    _profile: Profile | None = field(default=None, repr=False)
    _http: httpx.Client | None = field(default=None, repr=False)
    _arm: ArmClient | None = field(default=None, repr=False)

    @property
    def profile(self) -> Profile:
        # Resolved on first use: `acr config set` must work even when the file it repairs is invalid.
        if self._profile is None:
            self._profile = resolve_profile(self.line)
        return self._profile

    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = new_client()
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def arm(self) -> ArmClient:
        if self._arm is None:
            endpoint = self.profile.require(self.profile.endpoint, "endpoint")
            subscription = self.profile.require(self.profile.subscription, "subscription")
            self._arm = ArmClient(self.http(), endpoint, subscription, self.profile.token)
        return self._arm

    def resource_group(self, given: str | None) -> str:
        """The resource group a new resource goes to: the option, else the configured one."""
        return given or self.profile.require(self.profile.resource_group, "resource-group")

    def registry(self, name: str, resource_group: str | None) -> RegistryRef:
        return self.arm().find_registry(name, resource_group, self.profile.resource_group.value)

    def data_endpoint(self) -> str | None:
        """Where registries' data planes are reached (see dataplane.py); None: at their login servers."""
        configured = self.profile.data_endpoint.value
        if configured:
            return configured
        endpoint = self.profile.endpoint.value
        return endpoint if endpoint and is_loopback(endpoint) else None  # a loopback endpoint is the devhost

    def data_plane(
        self, name: str, resource_group: str | None, username: str | None = None, password: str | None = None
    ) -> RegistryClient:
        """A registry's data plane. `name` may be a login server (it has a dot): then ARM is not asked, so
        a username and password alone are enough."""
        if (username is None) != (password is None):
            raise CliError(ExitCode.BAD_INPUT, "--username and --password go together")
        login_server = name.lower() if "." in name else self.registry(name, resource_group).login_server
        if not login_server:
            raise CliError(ExitCode.UNAVAILABLE, f"the registry {name!r} has no login server yet")
        credentials = PasswordCredentials(username, password) if username and password is not None else None
        address = address_of(login_server, self.data_endpoint())
        return RegistryClient(self.http(), address, self.profile.token, credentials)

    def emit(self, data: Any, output: OutputFormat | None, query: str | None, view: TableView | None = None) -> None:
        fmt = output or OutputFormat(self.profile.output.value or OutputFormat.JSON.value)
        try:
            sys.stdout.write(render(data, fmt, query, view))
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader stopped (`acr list | head -1`): it took what it wanted. Later writes, and the
            # interpreter's flush at exit, go nowhere instead of failing.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    def confirm(self, question: str, yes: bool) -> None:
        if yes:
            return
        if not sys.stdin.isatty():
            raise CliError(ExitCode.BAD_INPUT, f"{question} Pass --yes to confirm (there is no terminal to ask).")
        try:
            agreed = typer.confirm(question, default=False, err=True)
        except typer.Abort:  # Ctrl-D or Ctrl-C at the prompt
            agreed = False
        if not agreed:
            raise CliError(ExitCode.BAD_INPUT, "cancelled: nothing was changed")


def session_of(ctx: typer.Context) -> Session:
    session = ctx.find_root().obj
    if not isinstance(session, Session):
        raise CliError(ExitCode.INTERNAL, "no session: the root command did not run")
    return session


def pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """`key=value` arguments (tags, headers) as a dict; anything else is bad input."""
    result: dict[str, str] = {}
    for value in values or []:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise CliError(ExitCode.BAD_INPUT, f"{what} must be given as key=value, not {value!r}")
        result[key] = text
    return result


def words(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated values (`--actions push,delete --actions quarantine`) as one list."""
    return [word.strip() for value in values or [] for word in value.split(",") if word.strip()]
