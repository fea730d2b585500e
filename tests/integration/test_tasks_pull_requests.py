"""The pull-request trigger: GitHub- and Gitea-style `pull_request` events at the task's hook, over HTTP against
the session devhost with no runner (runs stay Queued), and the fetch of a PR's head (`refs/pull/<n>/head`) from a
real `git http-backend`.

Opened, reopened and synchronize (Gitea: synchronized) run the task at the PR's head sha, once per (PR, head
sha); other actions do not; the branch filter applies to the PR's base. A fork's PR runs restricted (empty
secrets, no other registries' credentials, no push) unless the trigger trusts forks, or not at all when it
ignores them. The hook's 401 matrix is the push hook's; hostile payloads are 4xx and run nothing; a head
repository URL in the payload is never what is fetched.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.management.access import assign_role
from services.management.registries import create_registry
from services.platform.secrets import secret_box
from services.tasks.context import ContextLimits
from services.tasks.execution import StepFailed, registry_files
from services.tasks.gitsource import FetchLimits, GitFetchFailed, fetch_source, parse_git_url
from services.tasks.hooks import MAX_BODY_BYTES
from services.tasks.runner import RESTRICTED_REFUSAL, pull_only
from services.tasks.scheduling import secret_context
from services.tasks.steps import StepContext, StepRunner
from services.tasks.store import RunStore
from services.tasks.taskfile import parse_task_file
from tests.conftest import Devhost
from tests.e2e.gitserver import GitServer, git, git_server, gitea_headers, github_headers
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, unique_registry_name

pytestmark = pytest.mark.integration

API = {"api-version": "2025-03-01-preview"}
REPO = "http://127.0.0.1:9/org/app.git"  # never fetched here: no runner
SECRET_ARG = "s3cret-build-arg-value"


def _base(registry: str) -> str:
    return (
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local-rg/providers/"
        f"Microsoft.ContainerRegistry/registries/{registry}"
    )


def _task(events: list[str], branch: str | None = "main", **trigger: object) -> dict[str, object]:
    repository: dict[str, object] = {"sourceControlType": "Github", "repositoryUrl": REPO}
    if branch:
        repository["branch"] = branch
    step = {
        "type": "Docker",
        "contextPath": REPO + (f"#{branch}" if branch else ""),
        "dockerFilePath": "Dockerfile",
        "imageNames": ["app:{{.Run.Branch}}-{{.Run.Commit}}"],
        "arguments": [{"name": "TOKEN", "value": SECRET_ARG, "isSecret": True}, {"name": "PLAIN", "value": "p"}],
    }
    opaque = {"userName": {"value": "robot"}, "password": {"value": "other-registry-pa55"}}
    return {
        "location": "westeurope",
        "properties": {
            "platform": {"os": "Linux"},
            "step": step,
            "credentials": {"customRegistries": {"other.example.com": opaque}},
            "trigger": {
                "sourceTriggers": [
                    {"name": "src", "sourceRepository": repository, "sourceTriggerEvents": events} | trigger
                ]
            },
        },
    }


@dataclass(frozen=True)
class Hooks:
    registry: str
    auth: str
    hooks: dict[str, tuple[str, str]]  # task -> (hook URL, secret)


async def _arm(devhost: Devhost, method: str, path: str, auth: str, body: object | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(
            method, f"{devhost.url}{path}", params=API, json=body, headers={"Authorization": auth}
        )


TASKS: dict[str, dict[str, object]] = {
    "pulls": _task(["commit", "pullrequest"]),
    "prs-trusted": _task(["pullrequest"], pullRequestForks="Trusted"),
    "prs-no-forks": _task(["pullrequest"], pullRequestForks="Ignored"),
    "prs-default-branch": _task(["pullrequest"], branch=None),
}


@pytest.fixture(scope="module")
async def hooks(devhost: Devhost, stores: Stores, entra_issuer: TestIssuer) -> AsyncIterator[Hooks]:
    registry, owner = unique_registry_name(), str(uuid.uuid4())
    await create_registry(stores.metadata, stores.blobs, stores.settings, registry, "Premium")
    await assign_role(stores.metadata, registry, owner, "Owner", tenant=entra_issuer.tenant)
    auth = "Bearer " + entra_issuer.token(owner)
    found: dict[str, tuple[str, str]] = {}
    for name, body in TASKS.items():
        created = await _arm(devhost, "PUT", f"{_base(registry)}/tasks/{name}", auth, body)
        assert created.status_code == 201, created.text
        details = await _arm(devhost, "POST", f"{_base(registry)}/tasks/{name}/listDetails", auth)
        trigger = details.json()["properties"]["trigger"]["sourceTriggers"][0]
        found[name] = (str(trigger["webhookUrl"]), str(trigger["webhookSecret"]))
    yield Hooks(registry, auth, found)


def _sha() -> str:
    return hashlib.sha1(uuid.uuid4().bytes).hexdigest()


def _pr(
    action: str = "opened",
    number: Any = 7,
    head: str | None = None,
    head_ref: str = "feature/x",
    base_ref: str = "main",
    head_repo: Any = "org/app",
    **extra: object,
) -> bytes:
    """A GitHub-shaped pull_request event (Gitea sends the same fields)."""
    repo = {"full_name": "org/app", "clone_url": REPO, "default_branch": "main"}
    head_repository = (
        {"full_name": head_repo, "clone_url": f"https://evil.example.com/{head_repo}.git"}
        if isinstance(head_repo, str)
        else head_repo
    )
    pull = {
        "number": number,
        "head": {"ref": head_ref, "sha": head or _sha(), "repo": head_repository},
        "base": {"ref": base_ref, "sha": _sha(), "repo": repo},
    }
    return json.dumps({"action": action, "number": number, "pull_request": pull, "repository": repo} | extra).encode()


def _github(body: bytes, secret: str, event: str = "pull_request") -> dict[str, str]:
    return github_headers(body, secret, event)


def _gitea(body: bytes, secret: str, event: str = "pull_request") -> dict[str, str]:
    return gitea_headers(body, secret, event)


async def _send(hooks: Hooks, task: str, body: bytes, gitea: bool = False, secret: str | None = None) -> httpx.Response:
    url, own = hooks.hooks[task]
    headers = (_gitea if gitea else _github)(body, secret or own)
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(url, content=body, headers=headers)


async def _runs(stores: Stores, registry: str, task: str) -> list[str]:
    return sorted(r.runId for r in await RunStore(stores.metadata).list_runs(registry, 100, task))


async def test_opened_reopened_and_synchronize_run_at_the_head_other_actions_do_not(
    devhost: Devhost, stores: Stores, hooks: Hooks
) -> None:
    ran: list[str] = []
    for number, (action, gitea) in enumerate(
        [("opened", False), ("synchronize", False), ("reopened", False), ("synchronized", True), ("opened", True)],
        start=100,
    ):
        head = _sha()
        answer = await _send(hooks, "pulls", _pr(action, number, head), gitea=gitea)
        assert answer.status_code == 200, answer.text
        assert answer.json()["commit"] == head and answer.json()["restricted"] is False
        run = await RunStore(stores.metadata).get(hooks.registry, answer.json()["runId"])
        assert run is not None and run.sourceCommit == head and not run.restricted
        assert run.sourceTrigger is not None
        assert run.sourceTrigger["eventType"] == "pullrequest" and run.sourceTrigger["pullRequestId"] == str(number)
        assert run.sourceTrigger["branchName"] == "feature/x" and run.sourceTrigger["baseBranchName"] == "main"
        assert run.sourceTrigger["providerType"] == ("Gitea" if gitea else "Github")
        assert run.request["sourceLocation"] == REPO + "#main"  # the task's repository, not the head repo's URL
        assert run.request["isPushEnabled"] is True and run.customRegistries  # same repository: as ACR runs it
        ran.append(run.runId)
        shown = await _arm(devhost, "GET", f"{_base(hooks.registry)}/runs/{run.runId}", hooks.auth)
        assert shown.json()["properties"]["sourceTrigger"]["commitId"] == head
        assert "restricted" not in shown.json()["properties"]
    for action in ("closed", "labeled", "edited", "assigned", "review_requested", "ready_for_review"):
        answer = await _send(hooks, "pulls", _pr(action, 200))
        assert answer.status_code == 202 and f"'{action}'" in answer.json()["message"], answer.text
    assert await _runs(stores, hooks.registry, "pulls") == sorted(ran)


async def test_one_run_per_pull_request_and_head_sha(stores: Stores, hooks: Hooks) -> None:
    head = _sha()
    first = await _send(hooks, "pulls", _pr("opened", 300, head))
    assert first.status_code == 200, first.text
    run_id = first.json()["runId"]
    redelivered = await _send(hooks, "pulls", _pr("opened", 300, head))
    reopened = await _send(hooks, "pulls", _pr("reopened", 300, head))  # closed and reopened at the same head
    assert [redelivered.json()["runId"], reopened.json()["runId"]] == [run_id, run_id]
    assert "already ran" in reopened.json()["message"]
    moved = await _send(hooks, "pulls", _pr("synchronize", 300))  # a new head: a new run
    other_pr = await _send(hooks, "pulls", _pr("opened", 301, head))  # the same sha in another PR: its own run
    assert len({run_id, moved.json()["runId"], other_pr.json()["runId"]}) == 3
    other_again = await _send(hooks, "pulls", _pr("synchronize", 301, head))  # answers its own PR's run
    assert other_again.json()["runId"] == other_pr.json()["runId"]
    # a push of that commit to the watched branch is a commit event: its own run too
    push = json.dumps({"ref": "refs/heads/main", "after": head, "repository": {"clone_url": REPO}}).encode()
    url, secret = hooks.hooks["pulls"]
    async with httpx.AsyncClient(timeout=30) as http:
        committed = await http.post(url, content=push, headers=_github(push, secret, "push"))
    assert committed.status_code == 200 and committed.json()["runId"] not in (run_id, moved.json()["runId"])


async def test_a_fork_runs_restricted_unless_trusted_and_not_at_all_when_ignored(
    devhost: Devhost, stores: Stores, hooks: Hooks
) -> None:
    box = secret_box(stores.settings.secrets_keys, stores.settings.secrets_keys_file)
    for head_repo in ("mallory/app", None, {"full_name": ""}):  # another repository, a deleted fork, a nameless one
        answer = await _send(hooks, "pulls", _pr(head_repo=head_repo, number=400))
        assert answer.status_code == 200, answer.text
        assert answer.json()["restricted"] is True
        run = await RunStore(stores.metadata).get(hooks.registry, answer.json()["runId"])
        assert run is not None and run.restricted
        assert run.sourceTrigger is not None and run.sourceTrigger["fromFork"] is True
        secret = next(a for a in run.request["arguments"] if a["isSecret"])
        assert box.open(secret["value"], secret_context(run.registry, run.runId)) == b""  # empty, as GitHub does
        assert SECRET_ARG not in json.dumps(run.model_dump())
        assert run.customRegistries == {} and run.request["isPushEnabled"] is False
        assert run.sourceToken is None  # the task has no git token; the fetch uses it when it has one
        shown = await _arm(devhost, "GET", f"{_base(hooks.registry)}/runs/{run.runId}", hooks.auth)
        assert shown.json()["properties"]["restricted"] is True
    trusted = await _send(hooks, "prs-trusted", _pr(head_repo="mallory/app"))
    assert trusted.status_code == 200 and trusted.json()["restricted"] is False
    run = await RunStore(stores.metadata).get(hooks.registry, trusted.json()["runId"])
    assert run is not None and not run.restricted and run.customRegistries and run.request["isPushEnabled"]
    secret = next(a for a in run.request["arguments"] if a["isSecret"])
    assert box.open(secret["value"], secret_context(run.registry, run.runId)).decode() == SECRET_ARG
    ignored = await _send(hooks, "prs-no-forks", _pr(head_repo="mallory/app"))
    assert ignored.status_code == 202 and "forks" in ignored.json()["message"]
    same = await _send(hooks, "prs-no-forks", _pr(head_repo="ORG/App"))  # the same repository, any case
    assert same.status_code == 200 and same.json()["restricted"] is False
    assert len(await _runs(stores, hooks.registry, "prs-no-forks")) == 1


async def test_the_branch_filter_is_the_pull_requests_base(stores: Stores, hooks: Hooks) -> None:
    into_dev = await _send(hooks, "pulls", _pr(base_ref="dev", head_ref="main", number=500))
    assert into_dev.status_code == 202 and "'dev'" in into_dev.json()["message"]
    from_main = await _send(hooks, "pulls", _pr(base_ref="main", head_ref="dev", number=501))
    assert from_main.status_code == 200  # the head's branch does not matter
    # no branch on the trigger or the context: the base repository's default branch
    default = await _send(hooks, "prs-default-branch", _pr(base_ref="main", number=502))
    assert default.status_code == 200, default.text
    other = await _send(hooks, "prs-default-branch", _pr(base_ref="release", number=503))
    assert other.status_code == 202
    assert len(await _runs(stores, hooks.registry, "prs-default-branch")) == 1
    # a trigger for pull requests alone ignores pushes (and a commit-only one ignores pull requests:
    # tests/integration/test_tasks_source.py)
    push = json.dumps({"ref": "refs/heads/main", "after": _sha()}).encode()
    url, secret = hooks.hooks["prs-trusted"]
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(url, content=push, headers=_github(push, secret, "push"))
    assert answer.status_code == 202 and "does not run on commits" in answer.json()["message"]


async def test_hostile_pull_request_events_are_refused_and_run_nothing(stores: Stores, hooks: Hooks) -> None:
    before = await _runs(stores, hooks.registry, "pulls")
    body = _pr(number=600)
    url, secret = hooks.hooks["pulls"]
    _, other_secret = hooks.hooks["prs-trusted"]
    async with httpx.AsyncClient(timeout=30) as http:
        refused = [
            await http.post(url, content=body, headers={"X-GitHub-Event": "pull_request"}),
            await http.post(url, content=body, headers=_github(body, "a-guess")),
            await http.post(url, content=body, headers=_github(body, other_secret)),  # another task's secret
            await http.post(url.replace("/pulls", "/nosuchtask"), content=body, headers=_github(body, secret)),
            await http.post(url, content=body, headers=_gitea(body, secret + "x")),
        ]
        assert [r.status_code for r in refused] == [401] * 5 and len({r.text for r in refused}) == 1
        big = b'{"action": "opened", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
        assert (await http.post(url, content=big, headers=_github(big, secret))).status_code == 413
    malformed: list[bytes] = [
        b"not json",
        b"[]",
        b'{"action": "opened"}',  # no pull_request
        json.dumps({"action": "opened", "pull_request": {"number": 7}}).encode(),  # no head or base
        _pr(head="g" * 40),  # not hex
        _pr(head="abc123"),  # short
        _pr(head="A" * 39 + "'"),
        _pr(number="7"),  # a string
        _pr(number=7.5),
        _pr(number=0),
        _pr(number=-3),
        _pr(number=10**12),
        _pr(number=True),
        _pr(head_ref="a..b"),
        _pr(head_ref="-upload-pack=x"),
        _pr(base_ref="main\nx"),
        _pr(action="o" * 100),
    ]
    for payload in malformed:
        answer = await _send(hooks, "pulls", payload)
        assert answer.status_code == 400, (payload[:120], answer.text)
    # a head repository URL aimed elsewhere is never what is fetched: the run names the task's repository
    aimed = await _send(
        hooks, "pulls", _pr(head_repo={"full_name": "org/app", "clone_url": "http://169.254.169.254/x.git"}, number=601)
    )
    assert aimed.status_code == 200
    run = await RunStore(stores.metadata).get(hooks.registry, aimed.json()["runId"])
    assert run is not None and run.request["sourceLocation"] == REPO + "#main"
    assert "169.254.169.254" not in json.dumps(run.model_dump())
    assert await _runs(stores, hooks.registry, "pulls") == sorted([*before, run.runId])


# --- the fetch of a pull request's head from a real git http-backend --------------------------------------------
ALLOWED = FetchLimits(60, 5 * 1024 * 1024, ContextLimits(max_bytes=5 * 1024 * 1024), allow_private=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    with git_server(tmp_path_factory.mktemp("git")) as served:
        yield served


def _fetch(url: str, commit: str, ref: str, tmp: Path) -> tuple[str, Path]:
    work = tmp / os.urandom(4).hex()
    (work / "context").mkdir(parents=True)
    sha = asyncio.run(fetch_source(parse_git_url(url), commit, work, work / "context", ALLOWED, print, ref=ref))
    return sha, work / "context"


def test_the_pull_requests_head_is_fetched_through_its_ref_and_must_be_the_events_sha(
    server: GitServer, tmp_path: Path
) -> None:
    work, url = server.create("pulls")
    server.commit(work, {"Dockerfile": "FROM scratch\n", "v.txt": "main\n"}, "main")
    git(work, "checkout", "-q", "-b", "feature")
    (work / "v.txt").write_text("pr head\n")
    git(work, "commit", "-q", "-am", "pr")
    head = git(work, "rev-parse", "HEAD")
    git(work, "push", "-q", "origin", "HEAD:refs/pull/7/head")  # what GitHub and Gitea publish for PR 7
    sha, context = _fetch(url + "#main", head, "refs/pull/7/head", tmp_path)
    assert sha == head and (context / "v.txt").read_text() == "pr head\n"
    (work / "v.txt").write_text("moved on\n")
    git(work, "commit", "-q", "-am", "later")
    git(work, "push", "-q", "-f", "origin", "HEAD:refs/pull/7/head")
    with pytest.raises(GitFetchFailed, match="moved on"):  # the event's sha is no longer the head: refused
        _fetch(url + "#main", head, "refs/pull/7/head", tmp_path)
    with pytest.raises(GitFetchFailed, match="could not fetch"):  # no such pull request
        _fetch(url + "#main", head, "refs/pull/8/head", tmp_path)
    for ref in ("refs/heads/main", "refs/pull/0/head", "refs/pull/7/merge", "refs/pull/7/head/../x"):
        with pytest.raises(GitFetchFailed, match="not a pull request ref"):
            _fetch(url + "#main", head, ref, tmp_path)


def test_a_restricted_run_skips_its_pushes_and_runs_no_acr_command(tmp_path: Path) -> None:
    """The step runner of a fork's pull request: a push step is skipped (said in the log), an `acr` step fails
    the run (it would be given delete rights), and the run token it gets grants pull alone."""
    files = registry_files(tmp_path, "reg.azurecr.io", "reg.azurecr.io", False, "run-token")
    task = parse_task_file(
        "version: v1.1.0\nsteps:\n  - push: [\"reg.azurecr.io/app:1\"]\n  - cmd: acr purge --filter 'app:.*' --ago 0d\n"
    )
    lines: list[str] = []

    async def acr(arguments: list[str], output: Any) -> None:
        raise AssertionError("a restricted run never reaches the acr command")

    context = StepContext(tmp_path, tmp_path, [], files, lines.append, "amd64", [], None, refused=RESTRICTED_REFUSAL)
    with pytest.raises(StepFailed, match="acr command does not run here"):
        asyncio.run(StepRunner(task, context).run())
    assert any("push skipped" in line for line in lines), lines
    grants = [
        {"type": "repository", "name": "app", "actions": ["pull", "push"]},
        {"type": "repository", "name": "base", "actions": ["pull"]},
        {"type": "repository", "name": "gone", "actions": ["delete"]},
    ]
    assert pull_only(grants) == [
        {"type": "repository", "name": "app", "actions": ["pull"]},
        {"type": "repository", "name": "base", "actions": ["pull"]},
    ]
