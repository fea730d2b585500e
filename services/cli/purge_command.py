"""`acr purge`: delete old tags (and, with `--untagged`, untagged manifests) by filter, as ACR's `acr purge`,
through the registry's `/acr/v1/` API.

    acr purge -n REGISTRY --filter '<repository regex>:<tag regex>' --ago 30d [--keep N] [--untagged] [--dry-run]

Each `--filter` (repeatable) is a repository regular expression and a tag regular expression, each matched
against the whole name. The expressions are RE2 (google-re2: Go's `regexp` syntax): matching takes time
linear in the name whatever the pattern, so no filter can hang a purge; what RE2 does not have
(backreferences such as `\\1`, lookarounds such as `(?!...)`) is refused before anything is deleted. A tag
goes when it matches and was last updated more than `--ago` ago (`30d`, `12h`, `1d6h`, `15m`, `0`);
`--keep N` keeps the N most recently updated of those in each repository. `--untagged` also deletes the
manifests no tag points at in the matched repositories (not the children of an index that stays, nor one
that is locked). Locks are honoured: a tag or manifest whose delete is locked is reported as skipped, never
unlocked. Every row says what was (or, with `--dry-run`, would be) deleted.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol
from urllib.parse import quote

import re2
import typer

from services.cli.dataplane import CATALOG_SCOPE, RegistryClient
from services.cli.errors import CliError, ExitCode
from services.cli.output import OutputOption, QueryOption
from services.cli.session import (
    PasswordOption,
    RegistryNameOption,
    ResourceGroupOption,
    UsernameOption,
    session_of,
)

PAGE = 1000
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


MAX_FILTER_CHARS = 1024
# RE2's own bound on a compiled expression (bytes); a bigger one is refused as too large
_RE2_MAX_MEM = 8 << 20


class NamePattern(Protocol):
    """A compiled RE2 expression (google-re2 has no type hints)."""

    def fullmatch(self, text: str, /) -> object | None: ...


@dataclass(frozen=True)
class Filter:
    repository: NamePattern
    tag: NamePattern


def compile_expression(expression: str) -> NamePattern:
    """An RE2 expression, or ValueError with RE2's reason (backreferences, lookarounds, bad syntax, too big)."""
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    options.max_mem = _RE2_MAX_MEM
    try:
        pattern: NamePattern = re2.compile(expression, options)
    except re2.error as error:
        reason = error.args[0] if error.args else "invalid"
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise ValueError(text) from None
    return pattern


def parse_filter(text: str) -> Filter:
    """`<repository regex>:<tag regex>`; the last `:` separates them (a repository name has none)."""
    repository, colon, tag = text.rpartition(":")
    if not colon or not repository or not tag:
        raise CliError(ExitCode.BAD_INPUT, f"--filter {text[:200]!r}: expected '<repository regex>:<tag regex>'")
    if len(text) > MAX_FILTER_CHARS:
        raise CliError(ExitCode.BAD_INPUT, f"--filter: longer than {MAX_FILTER_CHARS} characters")
    compiled: list[NamePattern] = []
    for what, expression in (("repository", repository), ("tag", tag)):
        try:
            compiled.append(compile_expression(expression))
        except ValueError as error:
            raise CliError(
                ExitCode.BAD_INPUT,
                f"--filter {text!r}: the {what} expression {expression!r} is not RE2 syntax ({error}); "
                "purge filters are RE2 (Go regexp): no backreferences or lookarounds",
            ) from None
    return Filter(compiled[0], compiled[1])


class PurgeStopped(Exception):
    """The purge was told to stop (its `stop` event set) and made no further request."""


def parse_ago(text: str) -> timedelta:
    """`30d`, `12h`, `1d6h`, `15m`, `90s`, `0` (Go's duration with days, as ACR's purge takes it)."""
    if text == "0":
        return timedelta(0)
    match = _DURATION.fullmatch(text)
    if not text or match is None or not any(match.groups()):
        raise CliError(ExitCode.BAD_INPUT, f"--ago {text!r}: expected a duration such as 30d, 12h, 1d6h or 15m")
    days, hours, minutes, seconds = (int(value or 0) for value in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _time(value: Any) -> datetime:
    text = str(value or "").replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)  # unknown: never old enough
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def select_tags(tags: list[dict[str, Any]], pattern: NamePattern, before: datetime, keep: int) -> list[dict[str, Any]]:
    """The tags to delete: matching, last updated before `before`, all but the `keep` most recent."""
    old = [
        tag for tag in tags if pattern.fullmatch(str(tag.get("name", ""))) and _time(tag.get("lastUpdateTime")) < before
    ]
    old.sort(key=lambda tag: _time(tag.get("lastUpdateTime")), reverse=True)
    return old[keep:]


def select_untagged(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Untagged manifests that may go: not the children of a manifest that stays (a tagged index)."""
    tagged = [manifest for manifest in manifests if manifest.get("tags")]
    children = {str(ref.get("digest")) for manifest in tagged for ref in manifest.get("references") or []}
    return [m for m in manifests if not m.get("tags") and str(m.get("digest")) not in children]


def _scope(repository: str, *actions: str) -> str:
    return f"repository:{repository}:{','.join(actions)}"


def _delete(client: RegistryClient, path: str, repository: str, dry_run: bool) -> str:
    if dry_run:
        return "would delete"
    try:
        client.call("DELETE", path, _scope(repository, "delete"))
    except CliError as error:
        # A lock answers 405 UNSUPPORTED "The operation is disallowed ..." (services/registry/locks.py).
        if error.code == "UNSUPPORTED" and "disallowed" in error.message:
            return f"skipped: {' '.join(error.message.split())}"
        raise
    return "deleted"


def purge(
    ctx: typer.Context,
    name: RegistryNameOption,
    filters: Annotated[list[str], typer.Option("--filter", help="'<repository regex>:<tag regex>' (repeatable).")],
    ago: Annotated[str, typer.Option("--ago", help="Only what was last updated longer ago: 30d, 12h, 1d6h, 0.")],
    keep: Annotated[int, typer.Option("--keep", min=0, help="Keep this many of the latest matching tags.")] = 0,
    untagged: Annotated[bool, typer.Option("--untagged", help="Also delete untagged manifests.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be deleted; delete nothing.")] = False,
    filter_timeout: Annotated[
        int | None,
        typer.Option(
            "--filter-timeout-seconds",
            min=1,
            help="Accepted as ACR's acr purge takes it; filters are RE2 here, linear in time: nothing to bound.",
        ),
    ] = None,
    resource_group: ResourceGroupOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Delete tags older than --ago that match --filter (keeping the --keep latest), and with --untagged the
    untagged manifests, honouring locks; prints every deletion (or, with --dry-run, every one it would make)."""
    del filter_timeout  # RE2 matching cannot run away (see the module's docstring)
    parsed = [parse_filter(text) for text in filters]
    before = datetime.now(UTC) - parse_ago(ago)
    session = session_of(ctx)
    client = session.data_plane(name, resource_group, username, password)
    rows = purge_registry(client, parsed, before, keep, untagged, dry_run)
    session.emit(rows, output, query)


def matching_repositories(client: RegistryClient, filters: list[Filter]) -> list[str]:
    """The registry's repositories some filter's repository expression matches (the catalog, every page)."""
    repositories = client.pages("/acr/v1/_catalog", CATALOG_SCOPE, "repositories", {"n": PAGE}, None)
    return [str(r) for r in repositories if any(f.repository.fullmatch(str(r)) for f in filters)]


def purge_registry(
    client: RegistryClient,
    filters: list[Filter],
    before: datetime,
    keep: int,
    untagged: bool,
    dry_run: bool,
    repositories: list[str] | None = None,
    stop: threading.Event | None = None,
) -> list[dict[str, Any]]:
    """What `acr purge` does (also inside a task, services/tasks/builtin.py): one row per tag or manifest
    deleted, skipped or (with `dry_run`) that would be. `repositories`: those to look at (default: the
    catalog's that a filter matches). `stop`, once set, ends it before its next request (a task's purge
    that was cancelled or timed out deletes nothing more)."""
    rows: list[dict[str, Any]] = []

    def check() -> None:
        if stop is not None and stop.is_set():
            raise PurgeStopped(f"stopped after {len(rows)} deletion(s)")

    for repository in matching_repositories(client, filters) if repositories is None else repositories:
        check()
        matching = [f for f in filters if f.repository.fullmatch(repository)]
        if not matching:
            continue
        quoted = quote(repository, safe="/")
        tags = client.pages(f"/acr/v1/{quoted}/_tags", _scope(repository, "metadata_read"), "tags", {"n": PAGE}, None)
        doomed: dict[str, dict[str, Any]] = {}
        for f in matching:
            for tag in select_tags(tags, f.tag, before, keep):
                doomed[str(tag["name"])] = tag
        for tag_name, tag in doomed.items():
            check()
            result = _delete(client, f"/acr/v1/{quoted}/_tags/{quote(tag_name, safe='')}", repository, dry_run)
            rows.append({"repository": repository, "tag": tag_name, "digest": tag.get("digest"), "result": result})
        if not untagged:
            continue
        manifests = client.pages(
            f"/acr/v1/{quoted}/_manifests", _scope(repository, "metadata_read"), "manifests", {"n": PAGE}, None
        )
        if dry_run:  # as they would be after the tag deletes above
            gone = set(doomed)
            manifests = [m | {"tags": [t for t in m.get("tags") or [] if t not in gone]} for m in manifests]
        for manifest in select_untagged(manifests):
            digest = str(manifest.get("digest"))
            if (manifest.get("changeableAttributes") or {}).get("deleteEnabled") is False:
                rows.append({"repository": repository, "tag": None, "digest": digest, "result": "skipped: locked"})
                continue
            check()
            result = _delete(client, f"/acr/v1/{quoted}/_manifests/{digest}", repository, dry_run)
            rows.append({"repository": repository, "tag": None, "digest": digest, "result": result})
    return rows
