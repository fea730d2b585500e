"""`acr manifest list-deleted|list-deleted-tags|restore` and `acr repository list-deleted`: soft-deleted
artifacts (services/registry/softdelete.py) through `/acr/v1/_deleted/...`, as `az acr manifest` has them.

`restore -n repo:tag` restores the most recently deleted manifest that tag pointed at (asking first when it
pointed at several); `--digest` names the manifest; `--force` moves the tag even if it now points at another
manifest (that one's tag is then soft-deleted). `expiresAfter` is not added: the registry computes nothing of
it and `az` derives it from the policy (`acr show -n R --query properties.policies.softDeletePolicy`).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from services.cli.dataplane import RegistryClient
from services.cli.errors import CliError, ExitCode
from services.cli.output import OutputOption, QueryOption
from services.cli.session import (
    PasswordOption,
    RegistryOption,
    ResourceGroupOption,
    UsernameOption,
    YesOption,
    session_of,
)

PAGE = 100

manifest_app = typer.Typer(
    help="Manifests of a repository: soft-deleted ones, and their restore.", no_args_is_help=True
)

RepositoryNameOption = Annotated[str, typer.Option("--name", "-n", help="The repository, e.g. team/app.")]
ImageNameOption = Annotated[
    str, typer.Option("--name", "-n", help="repository:tag (list-deleted-tags: a bare repository lists every tag).")
]


def _client(
    ctx: typer.Context, registry: str, resource_group: str | None, username: str | None, password: str | None
) -> RegistryClient:
    return session_of(ctx).data_plane(registry, resource_group, username, password)


def _scope(repository: str, *actions: str) -> str:
    return f"repository:{repository}:{','.join(actions)}"


def _split(text: str, need_tag: bool) -> tuple[str, str | None]:
    """`repository[:tag]` (no digests: ACR's restore takes the digest apart)."""
    if "@" in text:
        raise CliError(ExitCode.BAD_INPUT, f"--name {text!r}: give repository:tag, and the digest with --digest")
    head, colon, tail = text.rpartition(":")
    repository, tag = (head, tail) if colon and "/" not in tail else (text, None)
    if not repository or (need_tag and not tag):
        raise CliError(ExitCode.BAD_INPUT, f"--name {text!r} is not repository:tag")
    return repository, tag


def deleted_tags(client: RegistryClient, repository: str) -> list[dict[str, Any]]:
    path = f"/acr/v1/_deleted/{repository}/_tags"
    items = client.pages(path, _scope(repository, "deleted_read"), "tags", {"n": PAGE}, None)
    return [item for item in items if isinstance(item, dict)]


@manifest_app.command("list-deleted")
def list_deleted(
    ctx: typer.Context,
    registry: RegistryOption,
    name: RepositoryNameOption,
    resource_group: ResourceGroupOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """List the soft-deleted manifests of a repository (digest, tags, deletedAt)."""
    client = _client(ctx, registry, resource_group, username, password)
    path = f"/acr/v1/_deleted/{name}/_manifests"
    manifests = client.pages(path, _scope(name, "deleted_read"), "manifests", {"n": PAGE}, None)
    session_of(ctx).emit(manifests, output, query)


@manifest_app.command("list-deleted-tags")
def list_deleted_tags(
    ctx: typer.Context,
    registry: RegistryOption,
    name: ImageNameOption,
    resource_group: ResourceGroupOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """List the soft-deleted tags of a repository (`-n repo:tag`: only that tag), oldest deletion first."""
    repository, tag = _split(name, need_tag=False)
    client = _client(ctx, registry, resource_group, username, password)
    tags = [item for item in deleted_tags(client, repository) if tag is None or item.get("tag") == tag]
    session_of(ctx).emit(tags, output, query)


@manifest_app.command("restore")
def restore(
    ctx: typer.Context,
    registry: RegistryOption,
    name: Annotated[str, typer.Option("--name", "-n", help="repository:tag to restore.")],
    digest: Annotated[
        str | None, typer.Option("--digest", "-d", help="The manifest (default: the tag's latest deleted one).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Move the tag even if it now points at another manifest.")
    ] = False,
    yes: YesOption = False,
    resource_group: ResourceGroupOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Restore a soft-deleted manifest with its tag (raises the `push` event a push would)."""
    repository, tag = _split(name, need_tag=True)
    client = _client(ctx, registry, resource_group, username, password)
    if digest is None:
        found = [item["digest"] for item in deleted_tags(client, repository) if item.get("tag") == tag]
        if not found:
            raise CliError(ExitCode.NOT_FOUND, f"no soft-deleted manifest has the tag {tag!r} in {repository}")
        digest = str(found[-1])
        if len(set(found)) > 1:
            session_of(ctx).confirm(
                f"The tag {tag!r} pointed at {len(set(found))} deleted manifests; restore the most recently "
                f"deleted one, {digest}?",
                yes,
            )
    path = f"/acr/v1/_deleted/{repository}/_manifests/{quote(digest, safe=':')}"
    scope = _scope(repository, "deleted_read", "deleted_restore")
    reply = client.call("POST", path, scope, body={"tag": tag}, params={"force": str(force).lower()})
    session_of(ctx).emit(reply.json(), output, query)
