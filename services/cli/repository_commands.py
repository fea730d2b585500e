"""`acr repository list|show|show-tags|show-manifests|delete|untag|update`: a registry's content through ACR's
`/acr/v1/` metadata API (and its token flow), as `az acr repository` has them.

Signed in as the profile's Entra principal (its token exchanged for the registry's refresh token), or with
`--username/--password` (admin user or a repository-scoped token), which then needs no management API at all
when `--name` is the login server.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any
from urllib.parse import quote

import typer

from services.cli.dataplane import CATALOG_SCOPE, RegistryClient
from services.cli.errors import CliError, ExitCode
from services.cli.output import OutputOption, QueryOption
from services.cli.registry_commands import Switch
from services.cli.session import (
    PasswordOption,
    RegistryNameOption,
    ResourceGroupOption,
    UsernameOption,
    YesOption,
    session_of,
)

PAGE = 100  # what each request asks for (ACR's default page)
MAX_PAGE = 1000  # the largest page /acr/v1/ serves

repository_app = typer.Typer(help="Repositories, tags and manifests of a registry (/acr/v1/).", no_args_is_help=True)

RepositoryOption = Annotated[str | None, typer.Option("--repository", help="The repository, e.g. team/app.")]
ImageOption = Annotated[
    str | None, typer.Option("--image", "-t", help="An image: repository:tag or repository@sha256:...")
]
TopOption = Annotated[int | None, typer.Option("--top", min=1, help="At most this many results.")]
DetailOption = Annotated[bool, typer.Option("--detail", help="All attributes, not only the names.")]


class OrderBy(enum.StrEnum):
    TIME_DESC = "time_desc"
    TIME_ASC = "time_asc"

    @property
    def wire(self) -> str:
        return self.value.replace("_", "")  # /acr/v1/'s orderby=timedesc|timeasc


OrderByOption = Annotated[
    OrderBy | None, typer.Option("--orderby", case_sensitive=False, help="time_desc or time_asc (default: by name).")
]


def _attribute_option(name: str, what: str) -> Any:
    return typer.Option(name, case_sensitive=False, help=f"{what}: true or false.")


# --- images --------------------------------------------------------------------------------------------------
class Image:
    """`repository:tag` or `repository@digest` (a bare repository means its `latest` tag, as docker does)."""

    def __init__(self, text: str) -> None:
        repository, at, digest = text.partition("@")
        tag = ""
        if not at:
            head, colon, tail = text.rpartition(":")
            if colon and "/" not in tail:
                repository, tag = head, tail
            else:
                repository, tag = text, "latest"
        if not repository or (at and ":" not in digest):
            raise CliError(ExitCode.BAD_INPUT, f"--image {text!r} is not repository:tag or repository@digest")
        self.repository, self.tag, self.digest = repository, tag, digest if at else ""

    @property
    def path(self) -> str:
        base = f"/acr/v1/{self.repository}"
        return f"{base}/_manifests/{self.digest}" if self.digest else f"{base}/_tags/{quote(self.tag, safe='')}"


def _target(repository: str | None, image: str | None) -> tuple[str, Image | None]:
    """The repository and, for --image, the image: exactly one of the two must be given."""
    if (repository is None) == (image is None):
        raise CliError(ExitCode.BAD_INPUT, "give either --repository or --image")
    if image is not None:
        parsed = Image(image)
        return parsed.repository, parsed
    assert repository is not None
    return repository, None


def _scope(repository: str, *actions: str) -> str:
    return f"repository:{repository}:{','.join(actions)}"


def _client(
    ctx: typer.Context, name: str, resource_group: str | None, username: str | None, password: str | None
) -> RegistryClient:
    return session_of(ctx).data_plane(name, resource_group, username, password)


def _page(top: int | None) -> int:
    return min(top, MAX_PAGE) if top is not None else PAGE


# --- table views -------------------------------------------------------------------------------------------
def attributes_view(result: Any) -> list[dict[str, Any]]:
    """Repository, tag or manifest attributes as one row each, the locks as columns."""
    items = result if isinstance(result, list) else [result]
    rows = []
    for item in items:
        if not isinstance(item, dict):
            continue
        inner = item.get("tag") or item.get("manifest") or item
        row: dict[str, Any] = {}
        if "imageName" in item:
            row["Repository"] = item["imageName"]
        for key in ("name", "digest", "tags", "manifestCount", "tagCount", "lastUpdateTime"):
            if key in inner:
                value = inner[key]
                row[key[:1].upper() + key[1:]] = ", ".join(value) if isinstance(value, list) else value
        for key, value in (inner.get("changeableAttributes") or {}).items():
            row[key[:1].upper() + key[1:]] = value
        rows.append(row)
    return rows


# --- commands ----------------------------------------------------------------------------------------------
@repository_app.command("list")
def list_repositories(
    ctx: typer.Context,
    name: RegistryNameOption,
    resource_group: ResourceGroupOption = None,
    top: TopOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """List the repositories of a registry."""
    client = _client(ctx, name, resource_group, username, password)
    names = client.pages("/acr/v1/_catalog", CATALOG_SCOPE, "repositories", {"n": _page(top)}, top)
    session_of(ctx).emit(names, output, query)


@repository_app.command("list-deleted")
def list_deleted(
    ctx: typer.Context,
    name: RegistryNameOption,
    resource_group: ResourceGroupOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """List the repositories deleted while soft delete was on (their manifests can be restored)."""
    client = _client(ctx, name, resource_group, username, password)
    names = client.pages("/acr/v1/_deleted/_catalog", "registry:deleted_catalog:*", "repositories", {"n": PAGE}, None)
    session_of(ctx).emit(names, output, query)


@repository_app.command("show")
def show(
    ctx: typer.Context,
    name: RegistryNameOption,
    repository: RepositoryOption = None,
    image: ImageOption = None,
    resource_group: ResourceGroupOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Show the attributes of a repository or of an image (by tag or digest)."""
    repo, parsed = _target(repository, image)
    client = _client(ctx, name, resource_group, username, password)
    path = parsed.path if parsed else f"/acr/v1/{repo}"
    body = client.call("GET", path, _scope(repo, "metadata_read")).json()
    session_of(ctx).emit(body, output, query, attributes_view)


@repository_app.command("show-tags")
def show_tags(
    ctx: typer.Context,
    name: RegistryNameOption,
    repository: Annotated[str, typer.Option("--repository", help="The repository, e.g. team/app.")],
    resource_group: ResourceGroupOption = None,
    top: TopOption = None,
    orderby: OrderByOption = None,
    detail: DetailOption = False,
    username: UsernameOption = None,
    password: PasswordOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """List the tags of a repository (names; --detail for their attributes)."""
    client = _client(ctx, name, resource_group, username, password)
    params: dict[str, Any] = {"n": _page(top)}
    if orderby is not None:
        params["orderby"] = orderby.wire
    tags = client.pages(f"/acr/v1/{repository}/_tags", _scope(repository, "metadata_read"), "tags", params, top)
    result = tags if detail else [t.get("name") for t in tags if isinstance(t, dict)]
    session_of(ctx).emit(result, output, query, attributes_view if detail else None)


@repository_app.command("show-manifests")
def show_manifests(
    ctx: typer.Context,
    name: RegistryNameOption,
    repository: Annotated[str, typer.Option("--repository", help="The repository, e.g. team/app.")],
    resource_group: ResourceGroupOption = None,
    top: TopOption = None,
    orderby: OrderByOption = None,
    detail: DetailOption = False,
    username: UsernameOption = None,
    password: PasswordOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """List the manifests of a repository: digest, tags and time (--detail for every attribute)."""
    client = _client(ctx, name, resource_group, username, password)
    params: dict[str, Any] = {"n": _page(top)}
    if orderby is not None:
        params["orderby"] = orderby.wire
    scope = _scope(repository, "metadata_read")
    manifests = client.pages(f"/acr/v1/{repository}/_manifests", scope, "manifests", params, top)
    result = (
        manifests
        if detail
        else [
            {"digest": m.get("digest"), "tags": m.get("tags", []), "timestamp": m.get("lastUpdateTime")}
            for m in manifests
            if isinstance(m, dict)
        ]
    )
    session_of(ctx).emit(result, output, query, attributes_view)


@repository_app.command("delete")
def delete(
    ctx: typer.Context,
    name: RegistryNameOption,
    repository: RepositoryOption = None,
    image: ImageOption = None,
    resource_group: ResourceGroupOption = None,
    yes: YesOption = False,
    username: UsernameOption = None,
    password: PasswordOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Delete a repository (everything in it), or an image: its manifest and every tag pointing at it."""
    repo, parsed = _target(repository, image)
    session = session_of(ctx)
    client = _client(ctx, name, resource_group, username, password)
    if parsed is None:
        session.confirm(f"Delete repository {repo} with all its images?", yes)
        deleted = client.call("DELETE", f"/acr/v1/{repo}", _scope(repo, "delete")).json()
        session.emit(deleted, output, query)
        return
    digest = parsed.digest
    if not digest:  # a tag names the manifest to delete; ACR deletes images by manifest
        tag = client.call("GET", parsed.path, _scope(repo, "metadata_read")).json()
        digest = str(tag.get("tag", {}).get("digest", ""))
    session.confirm(f"Delete image {repo}@{digest} and every tag pointing at it?", yes)
    client.call("DELETE", f"/acr/v1/{repo}/_manifests/{digest}", _scope(repo, "delete"))


@repository_app.command("untag")
def untag(
    ctx: typer.Context,
    name: RegistryNameOption,
    image: Annotated[str, typer.Option("--image", "-t", help="The tag to remove: repository:tag.")],
    resource_group: ResourceGroupOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
) -> None:
    """Remove a tag; the manifest it pointed at stays."""
    parsed = Image(image)
    if parsed.digest:
        raise CliError(ExitCode.BAD_INPUT, "untag takes repository:tag, not a digest")
    client = _client(ctx, name, resource_group, username, password)
    client.call("DELETE", parsed.path, _scope(parsed.repository, "delete"))


@repository_app.command("update")
def update(
    ctx: typer.Context,
    name: RegistryNameOption,
    repository: RepositoryOption = None,
    image: ImageOption = None,
    write_enabled: Annotated[Switch | None, _attribute_option("--write-enabled", "Pushes and deletes")] = None,
    delete_enabled: Annotated[Switch | None, _attribute_option("--delete-enabled", "Deletes")] = None,
    list_enabled: Annotated[Switch | None, _attribute_option("--list-enabled", "Listing")] = None,
    read_enabled: Annotated[Switch | None, _attribute_option("--read-enabled", "Pulls")] = None,
    resource_group: ResourceGroupOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Lock or unlock a repository or an image: its write, delete, list and read switches."""
    repo, parsed = _target(repository, image)
    changes = {
        key: switch.on
        for key, switch in (
            ("writeEnabled", write_enabled),
            ("deleteEnabled", delete_enabled),
            ("listEnabled", list_enabled),
            ("readEnabled", read_enabled),
        )
        if switch is not None
    }
    if not changes:
        raise CliError(ExitCode.BAD_INPUT, "nothing to change: give --write-enabled, --delete-enabled, "
                       "--list-enabled or --read-enabled")  # fmt: skip
    client = _client(ctx, name, resource_group, username, password)
    path = parsed.path if parsed else f"/acr/v1/{repo}"
    body = client.call("PATCH", path, _scope(repo, "metadata_write"), body=changes).json()
    session_of(ctx).emit(body, output, query, attributes_view)
