"""`acr token create|list|show|update|delete|credential generate` and `acr scope-map
create|list|show|update|delete`: repository-scoped permissions through the management API
(`registries/{r}/tokens`, `/scopeMaps`, `/generateCredentials`), as `az acr token` and `az acr scope-map`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from services.cli.arm import RegistryRef
from services.cli.errors import CliError, ExitCode
from services.cli.output import OutputOption, QueryOption
from services.cli.session import RegistryOption, ResourceGroupOption, Session, YesOption, session_of, words
from services.cli.webhook_commands import StatusOption

token_app = typer.Typer(help="Tokens: repository-scoped credentials (username + passwords).", no_args_is_help=True)
token_credential_app = typer.Typer(help="A token's passwords.", no_args_is_help=True)
token_app.add_typer(token_credential_app, name="credential")
scope_map_app = typer.Typer(help="Scope maps: the repository actions a token may take.", no_args_is_help=True)

TokenNameOption = Annotated[str, typer.Option("--name", "-n", help="The token's name (its username).")]
ScopeMapNameOption = Annotated[str, typer.Option("--name", "-n", help="The scope map's name.")]
ExpiryDaysOption = Annotated[
    int | None, typer.Option("--expiration-in-days", min=1, help="The passwords expire after this many days.")
]


def _child_path(ctx: typer.Context, registry: str, resource_group: str | None, kind: str, *rest: str) -> str:
    session = session_of(ctx)
    ref = session.registry(registry, resource_group)
    return session.arm().registry_path(ref.resource_group, ref.name, kind, *rest)


def _last(resource_id: Any) -> str:
    return str(resource_id or "").rstrip("/").rsplit("/", 1)[-1]


# --- tokens ------------------------------------------------------------------------------------------------
def token_view(result: Any) -> list[dict[str, Any]]:
    items = result if isinstance(result, list) else [result]
    rows = []
    for t in items:
        if not isinstance(t, dict):
            continue
        properties = t.get("properties") or {}
        passwords = (properties.get("credentials") or {}).get("passwords") or []
        rows.append(
            {
                "Name": t.get("name"),
                "ScopeMap": _last(properties.get("scopeMapId")),
                "Status": properties.get("status"),
                "CreationDate": properties.get("creationDate"),
                "Passwords": ", ".join(str(p.get("name")) for p in passwords if isinstance(p, dict)),
            }
        )
    return rows


def _generate(session: Session, ref: RegistryRef, token_id: str, name: str | None, days: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"tokenId": token_id}
    if name is not None:
        body["name"] = name
    if days is not None:
        body["expiry"] = (datetime.now(UTC) + timedelta(days=days)).isoformat()
    arm = session.arm()
    result = arm.json("POST", arm.registry_path(ref.resource_group, ref.name, "generateCredentials"), body)
    return result if isinstance(result, dict) else {}


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: TokenNameOption,
    registry: RegistryOption,
    scope_map: Annotated[str, typer.Option("--scope-map", help="The scope map, e.g. _repositories_push.")],
    status: StatusOption = None,
    no_passwords: Annotated[bool, typer.Option("--no-passwords", help="Make no passwords now.")] = False,
    expiration_in_days: ExpiryDaysOption = None,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Create a token on a scope map, with two passwords (shown this once) unless --no-passwords."""
    session = session_of(ctx)
    ref = session.registry(registry, resource_group)
    arm = session.arm()
    scope_map_id = arm.registry_path(ref.resource_group, ref.name, "scopeMaps", scope_map)
    properties: dict[str, Any] = {"scopeMapId": scope_map_id}
    if status is not None:
        properties["status"] = status.value
    token = arm.json("PUT", arm.registry_path(ref.resource_group, ref.name, "tokens", name), {"properties": properties})
    if not no_passwords and isinstance(token, dict):
        made = _generate(session, ref, str(token.get("id")), None, expiration_in_days)
        token.setdefault("properties", {}).setdefault("credentials", {})["passwords"] = made.get("passwords", [])
    session.emit(token, output, query, token_view)


@token_app.command("list")
def token_list(
    ctx: typer.Context,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """List a registry's tokens."""
    path = _child_path(ctx, registry, resource_group, "tokens")
    session = session_of(ctx)
    session.emit(session.arm().list(path), output, query, token_view)


@token_app.command("show")
def token_show(
    ctx: typer.Context,
    name: TokenNameOption,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Show a token (its passwords' names and expiry; never their values)."""
    path = _child_path(ctx, registry, resource_group, "tokens", name)
    session = session_of(ctx)
    session.emit(session.arm().json("GET", path), output, query, token_view)


@token_app.command("update")
def token_update(
    ctx: typer.Context,
    name: TokenNameOption,
    registry: RegistryOption,
    scope_map: Annotated[str | None, typer.Option("--scope-map", help="Move the token to this scope map.")] = None,
    status: StatusOption = None,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Enable or disable a token, or move it to another scope map."""
    if scope_map is None and status is None:
        raise CliError(ExitCode.BAD_INPUT, "nothing to change: give --status or --scope-map")
    session = session_of(ctx)
    ref = session.registry(registry, resource_group)
    arm = session.arm()
    properties: dict[str, Any] = {}
    if scope_map is not None:
        properties["scopeMapId"] = arm.registry_path(ref.resource_group, ref.name, "scopeMaps", scope_map)
    if status is not None:
        properties["status"] = status.value
    path = arm.registry_path(ref.resource_group, ref.name, "tokens", name)
    session.emit(arm.json("PATCH", path, {"properties": properties}), output, query, token_view)


@token_app.command("delete")
def token_delete(
    ctx: typer.Context,
    name: TokenNameOption,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    yes: YesOption = False,
) -> None:
    """Delete a token (its passwords stop working at once)."""
    path = _child_path(ctx, registry, resource_group, "tokens", name)
    session = session_of(ctx)
    session.confirm(f"Delete token {name}?", yes)
    session.arm().call("DELETE", path)


@token_credential_app.command("generate")
def token_credential_generate(
    ctx: typer.Context,
    name: TokenNameOption,
    registry: RegistryOption,
    password1: Annotated[bool, typer.Option("--password1", help="Make password1 anew.")] = False,
    password2: Annotated[bool, typer.Option("--password2", help="Make password2 anew.")] = False,
    expiration_in_days: ExpiryDaysOption = None,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Make new passwords for a token (both unless one is named), shown this once."""
    session = session_of(ctx)
    ref = session.registry(registry, resource_group)
    token_id = session.arm().registry_path(ref.resource_group, ref.name, "tokens", name)
    which = "password1" if password1 and not password2 else "password2" if password2 and not password1 else None
    made = _generate(session, ref, token_id, which, expiration_in_days)
    session.emit(made, output, query)


# --- scope maps ------------------------------------------------------------------------------------------
REPOSITORY_ACTIONS = ("content/read", "content/write", "content/delete", "metadata/read", "metadata/write")


def repository_actions(values: list[str] | None) -> list[str]:
    """`REPO=ACTION[,ACTION]` (az's `--repository REPO ACTION...`) as scope map actions."""
    actions: list[str] = []
    for value in values or []:
        repository, sep, listed = value.partition("=")
        named = words([listed])
        if not sep or not repository or not named:
            raise CliError(
                ExitCode.BAD_INPUT, f"--repository takes REPO=ACTION[,ACTION] (team/app=content/read), not {value!r}"
            )
        for action in named:
            if action not in REPOSITORY_ACTIONS:
                raise CliError(ExitCode.BAD_INPUT, f"unknown action {action!r}: use {', '.join(REPOSITORY_ACTIONS)}")
            actions.append(f"repositories/{repository}/{action}")
    return actions


RepositoryActionsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--repository",
        help="Actions on a repository: REPO=ACTION[,ACTION], actions content/read|write|delete, "
        "metadata/read|write (repeat for more repositories).",
    ),
]
RawActionsOption = Annotated[
    list[str] | None,
    typer.Option("--action", help="A raw action, e.g. repositories/team/app/content/read (repeat for more)."),
]


def scope_map_view(result: Any) -> list[dict[str, Any]]:
    items = result if isinstance(result, list) else [result]
    return [
        {
            "Name": s.get("name"),
            "Type": (s.get("properties") or {}).get("type"),
            "Description": (s.get("properties") or {}).get("description"),
            "Actions": ", ".join((s.get("properties") or {}).get("actions") or []),
        }
        for s in items
        if isinstance(s, dict)
    ]


@scope_map_app.command("create")
def scope_map_create(
    ctx: typer.Context,
    name: ScopeMapNameOption,
    registry: RegistryOption,
    repository: RepositoryActionsOption = None,
    action: RawActionsOption = None,
    description: Annotated[str | None, typer.Option("--description", help="What the scope map is for.")] = None,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Create a scope map: the repository actions tokens on it may take."""
    actions = repository_actions(repository) + list(action or [])
    if not actions:
        raise CliError(ExitCode.BAD_INPUT, "a scope map needs actions: give --repository or --action")
    properties: dict[str, Any] = {"actions": actions}
    if description is not None:
        properties["description"] = description
    path = _child_path(ctx, registry, resource_group, "scopeMaps", name)
    session = session_of(ctx)
    session.emit(session.arm().json("PUT", path, {"properties": properties}), output, query, scope_map_view)


@scope_map_app.command("list")
def scope_map_list(
    ctx: typer.Context,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """List a registry's scope maps (the system-defined ones too)."""
    path = _child_path(ctx, registry, resource_group, "scopeMaps")
    session = session_of(ctx)
    session.emit(session.arm().list(path), output, query, scope_map_view)


@scope_map_app.command("show")
def scope_map_show(
    ctx: typer.Context,
    name: ScopeMapNameOption,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Show a scope map."""
    path = _child_path(ctx, registry, resource_group, "scopeMaps", name)
    session = session_of(ctx)
    session.emit(session.arm().json("GET", path), output, query, scope_map_view)


@scope_map_app.command("update")
def scope_map_update(
    ctx: typer.Context,
    name: ScopeMapNameOption,
    registry: RegistryOption,
    add_repository: Annotated[
        list[str] | None, typer.Option("--add-repository", help="Add actions: REPO=ACTION[,ACTION].")
    ] = None,
    remove_repository: Annotated[
        list[str] | None, typer.Option("--remove-repository", help="Remove actions: REPO=ACTION[,ACTION].")
    ] = None,
    description: Annotated[str | None, typer.Option("--description", help="What the scope map is for.")] = None,
    resource_group: ResourceGroupOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Add or remove a scope map's actions, or change its description."""
    added, removed = repository_actions(add_repository), set(repository_actions(remove_repository))
    if not added and not removed and description is None:
        raise CliError(ExitCode.BAD_INPUT, "nothing to change: give --add-repository, --remove-repository or "
                       "--description")  # fmt: skip
    path = _child_path(ctx, registry, resource_group, "scopeMaps", name)
    session = session_of(ctx)
    arm = session.arm()
    current = arm.json("GET", path) or {}
    existing = list((current.get("properties") or {}).get("actions") or [])
    actions = [a for a in existing if a not in removed] + [a for a in added if a not in existing]
    properties: dict[str, Any] = {"actions": actions}
    if description is not None:
        properties["description"] = description
    session.emit(arm.json("PATCH", path, {"properties": properties}), output, query, scope_map_view)


@scope_map_app.command("delete")
def scope_map_delete(
    ctx: typer.Context,
    name: ScopeMapNameOption,
    registry: RegistryOption,
    resource_group: ResourceGroupOption = None,
    yes: YesOption = False,
) -> None:
    """Delete a scope map (none of the registry's tokens may use it)."""
    path = _child_path(ctx, registry, resource_group, "scopeMaps", name)
    session = session_of(ctx)
    session.confirm(f"Delete scope map {name}?", yes)
    session.arm().call("DELETE", path)
