"""`acr purge` inside a task (services/tasks/builtin.py) against the session devhost: the tokens it asks the
auth service for (the catalog alone, then metadata_read and delete on exactly the repositories its filters
match: nothing else), what it deletes and keeps, `--dry-run`, and the commands a task may not run.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from services.auth.service import AuthService
from services.cli.purge_command import PurgeStopped
from services.management.store import RegistryDoc, RegistryStore
from services.tasks.builtin import parse_purge, purge_with_run_tokens, run_acr
from services.tasks.execution import StepFailed
from tests.conftest import Devhost
from tests.integration.conftest import RegistryClient, Stores
from tests.scan_images import push_image

pytestmark = pytest.mark.integration


async def _run_tokens(
    stores: Stores, name: str
) -> tuple[RegistryDoc, Callable[[list[dict[str, Any]]], str], list[Any]]:
    """The registry, a minter of run cb1's tokens as the runner has (the purge step's `mint`), and the grants
    each token it made was asked for."""
    doc = await RegistryStore(stores.metadata).get_registry(name)
    assert doc is not None
    auth = AuthService(stores.settings, stores.metadata)
    asked: list[list[dict[str, Any]]] = []

    def mint(access: list[dict[str, Any]]) -> str:
        asked.append(access)
        return auth.run_token(doc, "cb1", access, 300)

    return doc, mint, asked


async def test_purge_in_a_task_asks_for_the_catalog_then_delete_on_the_matched_repositories_only(
    devhost: Devhost, stores: Stores, registry: RegistryClient
) -> None:
    for tag in ("old", "older", "newest"):
        push_image(registry.http, "team/app", tag, [tag.encode()])
        await asyncio.sleep(1.1)  # distinct update times
    push_image(registry.http, "team/app-spared", "old", [b"spared"])
    push_image(registry.http, "unrelated", "old", [b"other"])
    doc, mint, asked = await _run_tokens(stores, registry.name)

    log: list[str] = []
    command = ["purge", "--filter", "team/app:.*", "--ago", "0", "--keep", "1", "--dry-run"]
    await run_acr(command, doc.loginServer, devhost.host, True, mint, log.append)
    assert asked == [
        [{"type": "registry", "name": "catalog", "actions": ["*"]}],
        [{"type": "repository", "name": "team/app", "actions": ["metadata_read", "delete"]}],
    ]
    assert "Number of tags to be deleted: 2" in log
    tags = registry.http.get("/acr/v1/team/app/_tags").json()["tags"]
    assert sorted(t["name"] for t in tags) == ["newest", "old", "older"]  # a dry run deletes nothing

    log.clear()
    await run_acr([*command[:-1], "--untagged"], doc.loginServer, devhost.host, True, mint, log.append)
    assert f"deleted: {doc.loginServer}/team/app:old" in log and f"deleted: {doc.loginServer}/team/app:older" in log
    assert "Number of tags deleted: 2" in log and "Number of manifests deleted: 2" in log
    assert [t["name"] for t in registry.http.get("/acr/v1/team/app/_tags").json()["tags"]] == ["newest"]
    for spared in ("team/app-spared", "unrelated"):
        assert [t["name"] for t in registry.http.get(f"/acr/v1/{spared}/_tags").json()["tags"]] == ["old"]

    log.clear()
    await run_acr(
        ["purge", "--filter", "nothing-here:.*", "--ago", "1d"], doc.loginServer, devhost.host, True, mint, log.append
    )
    assert log[-3:] == ["acr purge: no repository matches the filters", "Number of tags deleted: 0",
                        "Number of manifests deleted: 0"]  # fmt: skip
    assert asked[-1] == [{"type": "registry", "name": "catalog", "actions": ["*"]}]  # no delete token made


async def test_a_pathological_filter_completes_and_a_backreference_fails_the_step_before_any_request(
    devhost: Devhost, stores: Stores, registry: RegistryClient
) -> None:
    long_tag = "a" * 100 + "b"  # (a+)+$ against it: 2^100 paths for a backtracking matcher
    for tag in (long_tag, "aaaa"):
        push_image(registry.http, "patho/app", tag, [tag.encode()])
    doc, mint, asked = await _run_tokens(stores, registry.name)

    log: list[str] = []
    command = ["purge", "--filter", "patho/app:(a+)+$", "--ago", "0", "--filter-timeout-seconds", "60"]
    # a generous bound so that a regression fails here instead of hanging the session
    await asyncio.wait_for(run_acr(command, doc.loginServer, devhost.host, True, mint, log.append), 120)
    assert f"deleted: {doc.loginServer}/patho/app:aaaa" in log and "Number of tags deleted: 1" in log
    assert [t["name"] for t in registry.http.get("/acr/v1/patho/app/_tags").json()["tags"]] == [long_tag]

    asked.clear()
    with pytest.raises(StepFailed) as refused:
        await run_acr(
            ["purge", "--filter", r"patho/app:(a)\1.*", "--ago", "0"], doc.loginServer, devhost.host, True, mint, print
        )
    assert "not RE2 syntax (invalid escape sequence: \\1)" in str(refused.value)
    assert asked == []  # refused before any token was asked for, let alone a deletion
    assert [t["name"] for t in registry.http.get("/acr/v1/patho/app/_tags").json()["tags"]] == [long_tag]


async def test_a_stopped_purge_makes_no_further_request(
    devhost: Devhost, stores: Stores, registry: RegistryClient
) -> None:
    """What run_acr does when its step times out or is cancelled: the thread's stop event is set, and the
    purge ends before its next request (here: after the catalog, before any delete token or deletion)."""
    push_image(registry.http, "stopped/app", "old", [b"old"])
    doc, mint, asked = await _run_tokens(stores, registry.name)

    stop = threading.Event()
    stop.set()
    command = parse_purge(["purge", "--filter", "stopped/app:.*", "--ago", "0"], doc.loginServer)
    with pytest.raises(PurgeStopped):
        await asyncio.to_thread(purge_with_run_tokens, command, doc.loginServer, devhost.host, True, mint, stop)
    assert asked == [[{"type": "registry", "name": "catalog", "actions": ["*"]}]]
    assert [t["name"] for t in registry.http.get("/acr/v1/stopped/app/_tags").json()["tags"]] == ["old"]


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["login", "-u", "x"], "only `acr purge`"),
        ([], "only `acr purge`"),
        (["purge", "--ago", "1d"], "--filter is required"),
        (["purge", "--filter", "a:.*"], "--ago is required"),
        (["purge", "--filter", "a:.*", "--ago", "1d", "--include-locked"], "not an option"),
        (["purge", "--filter", "a:.*", "--ago", "soon"], "--ago"),
        (["purge", "--filter", "a:(", "--ago", "1d"], "--filter"),
        (["purge", "--filter", "a:.*", "--ago", "1d", "--keep", "-1"], "--keep"),
        (["purge", "--filter", "a:.*", "--ago", "1d", "--registry", "other.azurecr.io"], "its own registry"),
        (["purge", "--filter"], "needs a value"),
        (["purge", "--filter", "a:(?!latest).*", "--ago", "1d"], "not RE2 syntax"),
        (["purge", "--filter", "a:.*", "--ago", "1d", "--filter-timeout-seconds", "soon"], "whole number"),
    ],
)
def test_what_a_task_may_not_ask_of_acr(arguments: list[str], reason: str) -> None:
    with pytest.raises(StepFailed, match=reason.replace("(", r"\(")):
        parse_purge(arguments, "mine.azurecr.io")


def test_the_task_may_name_its_own_registry() -> None:
    for name in ("mine.azurecr.io", "MINE.azurecr.io", "mine"):
        command = parse_purge(
            ["purge", f"--registry={name}", "--filter", "a:.*", "--ago=7d", "--untagged"], "mine.azurecr.io"
        )
        assert command.untagged and command.ago == "7d"
    assert asyncio.iscoroutinefunction(run_acr)
