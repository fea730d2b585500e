"""The `acr` command inside a task: a `cmd` step `acr purge ...` runs our own purge, as ACR runs its acr-cli
image for it (`az acr task create --cmd "acr purge --filter 'repo:.*' --ago 7d --untagged" --schedule ...`).

    acr purge --filter '<repository regex>:<tag regex>' [--filter ...] --ago 7d [--keep N] [--untagged]
              [--dry-run] [--registry $Registry] [--filter-timeout-seconds N]

The filters are RE2 expressions (services/cli/purge_command.py): a pattern RE2 refuses fails the step before
anything is deleted, and matching is linear in the name, so no pattern can keep the step running.
`--filter-timeout-seconds` (acr-cli's bound on its backtracking matcher) is accepted so that commands written
for ACR run unchanged; with RE2 there is nothing for it to bound.

It runs in the runner, not in a container, through the registry's `/acr/v1/` API like `acr purge` from a
laptop (services/cli/purge_command.py), with tokens of the run alone (services/auth/service.py run_token):
first one that reads the catalog only, to find the repositories the filters match; then one granting
`metadata_read` and `delete` on exactly those repositories (at most MAX_REPOSITORIES), nothing else, lapsing
with the run. Every deletion (and skipped lock) goes to the run's log, with the totals acr-cli prints.
Other `acr` subcommands, and purge options this service does not have (`--include-locked`: a task never
unlocks), fail the step saying so.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from services.cli.config import TokenSource
from services.cli.dataplane import RegistryClient, address_of
from services.cli.errors import CliError
from services.cli.purge_command import (
    Filter,
    PurgeStopped,
    matching_repositories,
    parse_ago,
    parse_filter,
    purge_registry,
)
from services.tasks.execution import StepFailed

MAX_REPOSITORIES = 1000
_FLAGS = {"--untagged", "--dry-run"}
_VALUED = {"--filter", "--ago", "--keep", "--registry", "-r", "--filter-timeout-seconds"}

# (access entries) -> a run token granting exactly them
Mint = Callable[[list[dict[str, Any]]], str]


@dataclass(frozen=True)
class PurgeCommand:
    filters: list[Filter]
    ago: str
    keep: int
    untagged: bool
    dry_run: bool


def parse_purge(arguments: list[str], login_server: str) -> PurgeCommand:
    """`purge` and its options (after `acr`), StepFailed naming what is wrong."""
    if not arguments or arguments[0] != "purge":
        what = arguments[0] if arguments else "nothing"
        raise StepFailed(f"`acr {what[:40]}` does not run in a task here: only `acr purge` does")
    filters: list[str] = []
    values: dict[str, str] = {}
    flags: set[str] = set()
    rest = arguments[1:]
    index = 0
    while index < len(rest):
        word = rest[index]
        name, equals, inline = word.partition("=")
        if name in _FLAGS and not equals:
            flags.add(name)
            index += 1
            continue
        if name not in _VALUED:
            raise StepFailed(f"acr purge: {word[:60]!r} is not an option of acr purge here")
        if equals:
            value = inline
            index += 1
        else:
            if index + 1 >= len(rest):
                raise StepFailed(f"acr purge: {name} needs a value")
            value = rest[index + 1]
            index += 2
        if name == "--filter":
            filters.append(value)
        else:
            values[name] = value
    registry = values.get("--registry") or values.get("-r")
    if registry is not None and registry.lower() not in (login_server.lower(), login_server.split(".")[0].lower()):
        raise StepFailed(f"acr purge: a task purges its own registry only, not {registry[:100]!r}")
    if not filters:
        raise StepFailed("acr purge: --filter is required")
    if "--ago" not in values:
        raise StepFailed("acr purge: --ago is required")
    keep_text = values.get("--keep", "0")
    if not keep_text.isdigit():
        raise StepFailed("acr purge: --keep takes a whole number")
    if not values.get("--filter-timeout-seconds", "1").isdigit():
        raise StepFailed("acr purge: --filter-timeout-seconds takes a whole number")
    try:
        parsed = [parse_filter(text) for text in filters]
        parse_ago(values["--ago"])
    except CliError as error:
        raise StepFailed(f"acr purge: {error.message}") from error
    return PurgeCommand(parsed, values["--ago"], int(keep_text), "--untagged" in flags, "--dry-run" in flags)


def _client(http: httpx.Client, login_server: str, address: str, insecure: bool, token: str) -> RegistryClient:
    endpoint = f"http://{address}" if insecure else (f"https://{address}" if address != login_server else None)
    # signed in with the run's refresh token itself: never an exchange of any other credential
    return RegistryClient(http, address_of(login_server, endpoint), TokenSource(None, None, None), _refresh=token)


def purge_with_run_tokens(
    command: PurgeCommand, login_server: str, address: str, insecure: bool, mint: Mint, stop: threading.Event
) -> list[str]:
    lines: list[str] = []
    before = datetime.now(UTC) - parse_ago(command.ago)
    with httpx.Client(timeout=60, trust_env=False, follow_redirects=False) as http:
        reader = _client(http, login_server, address, insecure, mint([_CATALOG]))
        repositories = matching_repositories(reader, command.filters)
        if stop.is_set():
            raise PurgeStopped("stopped before deleting anything")
        if len(repositories) > MAX_REPOSITORIES:
            raise StepFailed(f"acr purge: the filters match more than {MAX_REPOSITORIES} repositories")
        if not repositories:
            return ["acr purge: no repository matches the filters", *_totals([], command.dry_run)]
        access = [{"type": "repository", "name": r, "actions": ["metadata_read", "delete"]} for r in repositories]
        deleter = _client(http, login_server, address, insecure, mint(access))
        rows = purge_registry(
            deleter, command.filters, before, command.keep, command.untagged, command.dry_run, repositories, stop
        )
    for row in rows:
        what = f"{row['repository']}:{row['tag']}" if row["tag"] else f"{row['repository']}@{row['digest']}"
        lines.append(f"{row['result']}: {login_server}/{what}")
    return [*lines, *_totals(rows, command.dry_run)]


_CATALOG = {"type": "registry", "name": "catalog", "actions": ["*"]}


def _totals(rows: list[dict[str, Any]], dry_run: bool) -> list[str]:
    done = "would delete" if dry_run else "deleted"
    tags = sum(1 for r in rows if r["tag"] and r["result"] == done)
    manifests = sum(1 for r in rows if not r["tag"] and r["result"] == done)
    verb = "to be deleted" if dry_run else "deleted"
    return [f"Number of tags {verb}: {tags}", f"Number of manifests {verb}: {manifests}"]


async def run_acr(
    arguments: list[str], login_server: str, address: str, insecure: bool, mint: Mint, output: Callable[[str], None]
) -> None:
    """A `cmd: acr ...` step: its output to `output`; StepFailed when it fails. The purge's HTTP calls block,
    so it runs in a thread; when the step is cancelled or times out the thread is told to stop and makes no
    further request (at most the one in flight, bounded by the client's timeout, completes)."""
    command = parse_purge(arguments, login_server)
    output(f"acr purge: {len(command.filters)} filter(s), older than {command.ago}, keeping {command.keep}")
    stop = threading.Event()
    try:
        lines = await asyncio.to_thread(purge_with_run_tokens, command, login_server, address, insecure, mint, stop)
    except CliError as error:
        raise StepFailed(f"acr purge failed: {error.message}") from error
    except PurgeStopped as error:
        raise StepFailed(f"acr purge {error}") from error
    finally:
        stop.set()
    for line in lines:
        output(line)
