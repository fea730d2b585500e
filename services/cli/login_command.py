"""`acr login`: sign in to a registry with ACR's token flow and write the entry podman, skopeo, buildah and
docker read (authfile.py), so that later pushes and pulls need no password.

    acr login -n teamreg                         # the Entra principal of the profile (/oauth2/exchange)
    acr login -n teamreg -u cibot --password-stdin < password    # a token or the admin user
    acr login -n teamreg --expose-token          # print the refresh token instead of writing a file
    acr login -n local --address 127.0.0.1:5000  # the devhost's default registry, as clients name it
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from services.cli.authfile import default_auth_file, store_login
from services.cli.dataplane import REFRESH_TOKEN_USER
from services.cli.errors import CliError, ExitCode
from services.cli.output import OutputOption, QueryOption
from services.cli.session import (
    PasswordOption,
    RegistryNameOption,
    ResourceGroupOption,
    UsernameOption,
    session_of,
)


def login(
    ctx: typer.Context,
    name: RegistryNameOption,
    resource_group: ResourceGroupOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password for --username from stdin.")
    ] = False,
    auth_file: Annotated[
        Path | None,
        typer.Option(
            "--auth-file",
            help="Write here (default: $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json, "
            "else ~/.docker/config.json).",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Write the entry for this address instead of <login server>[:port], e.g. 127.0.0.1:5000 for "
            "the devhost's default registry.",
        ),
    ] = None,
    expose_token: Annotated[
        bool, typer.Option("--expose-token", help="Print the refresh token and login server; write nothing.")
    ] = False,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Sign in to a registry: its refresh token is written to the podman/docker auth file."""
    if password_stdin:
        if password is not None:
            raise CliError(ExitCode.BAD_INPUT, "give --password or --password-stdin, not both")
        password = sys.stdin.readline().rstrip("\r\n")
    session = session_of(ctx)
    client = session.data_plane(name, resource_group, username, password)
    refresh = client.refresh_token()
    client.check_sign_in()
    server = address or client.address.server
    if expose_token:
        exposed = {"accessToken": refresh, "loginServer": server, "username": REFRESH_TOKEN_USER}
        session.emit(exposed, output, query)
        return
    path = auth_file or default_auth_file(os.environ)
    for warning in store_login(path, server, REFRESH_TOKEN_USER, refresh):
        print(f"WARNING: {warning}", file=sys.stderr)
    print(f"Login Succeeded: {server} (credentials in {path})", file=sys.stderr)
