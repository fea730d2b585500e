"""The source-commit trigger over HTTP against the session devhost, with no runner (runs stay Queued): a task
with a git context and a source trigger shows its hook URL (and its secret in listDetails only); the hook is
authenticated by its HMAC alone (no signature, a wrong one, another task's secret, a task of another registry,
an unknown registry or task, a task with no source trigger: the same 401); a body over the limit is 413;
only then the event: ping, other events, other branches, tags and deletions are a 2xx saying why nothing ran;
a push to the branch schedules one run at its commit (GitHub and Gitea signatures), once per commit.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from services.management.access import assign_role
from services.management.registries import create_registry
from services.tasks.hooks import MAX_BODY_BYTES
from services.tasks.store import RunStore
from tests.conftest import Devhost
from tests.e2e.gitserver import gitea_headers, github_headers
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, unique_registry_name

pytestmark = pytest.mark.integration

API = {"api-version": "2025-03-01-preview"}
REPO = "http://127.0.0.1:9/org/app.git"  # never fetched here: no runner
NON_ASCII_SIGNATURE = "sha256=\u00fcn\u00efcode".encode("latin-1")
DOCKER_STEP = {"type": "Docker", "dockerFilePath": "Dockerfile", "imageNames": ["app:{{.Run.Commit}}"]}


def _base(registry: str) -> str:
    return (
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local-rg/providers/"
        f"Microsoft.ContainerRegistry/registries/{registry}"
    )


def _source_task(context: str = REPO + "#main", **trigger: object) -> dict[str, object]:
    source = {
        "name": "push",
        "sourceRepository": {
            "sourceControlType": "Github",
            "repositoryUrl": REPO,
            "branch": "main",
            "sourceControlAuthProperties": {"tokenType": "PAT", "token": "ghp_repo_token_value"},
        },
        "sourceTriggerEvents": ["commit"],
    } | trigger
    return {
        "location": "westeurope",
        "properties": {
            "platform": {"os": "Linux"},
            "step": DOCKER_STEP | {"contextPath": context},
            "trigger": {"sourceTriggers": [source]},
        },
    }


@dataclass(frozen=True)
class Hooks:
    registry: str
    other: str
    auth: str  # the owner of both
    url: str  # the task's hook
    secret: str
    second_url: str  # another task of the registry
    second_secret: str
    foreign_url: str  # a task of the same name in the other registry


async def _arm(devhost: Devhost, method: str, path: str, auth: str, body: object | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(
            method, f"{devhost.url}{path}", params=API, json=body, headers={"Authorization": auth}
        )


async def _details(devhost: Devhost, registry: str, name: str, auth: str) -> tuple[str, str]:
    reply = await _arm(devhost, "POST", f"{_base(registry)}/tasks/{name}/listDetails", auth)
    assert reply.status_code == 200, reply.text
    trigger = reply.json()["properties"]["trigger"]["sourceTriggers"][0]
    return str(trigger["webhookUrl"]), str(trigger["webhookSecret"])


@pytest.fixture(scope="module")
async def hooks(devhost: Devhost, stores: Stores, entra_issuer: TestIssuer) -> AsyncIterator[Hooks]:
    registry, other = unique_registry_name(), unique_registry_name()
    owner = str(uuid.uuid4())
    for name in (registry, other):
        await create_registry(stores.metadata, stores.blobs, stores.settings, name, "Premium")
        await assign_role(stores.metadata, name, owner, "Owner", tenant=entra_issuer.tenant)
    auth = "Bearer " + entra_issuer.token(owner)
    for name, task in ((registry, "hooked"), (registry, "second"), (other, "hooked")):
        created = await _arm(devhost, "PUT", f"{_base(name)}/tasks/{task}", auth, _source_task())
        assert created.status_code == 201, created.text
    url, secret = await _details(devhost, registry, "hooked", auth)
    second_url, second_secret = await _details(devhost, registry, "second", auth)
    foreign_url, _ = await _details(devhost, other, "hooked", auth)
    yield Hooks(registry, other, auth, url, secret, second_url, second_secret, foreign_url)


def _push(ref: str = "refs/heads/main", after: str | None = None, **extra: object) -> bytes:
    commit = after or hashlib.sha1(uuid.uuid4().bytes).hexdigest()
    payload = {"ref": ref, "after": commit, "before": "0" * 40, "repository": {"clone_url": REPO}} | extra
    return json.dumps(payload).encode()


def _github(body: bytes, secret: str, event: str = "push") -> dict[str, str]:
    return github_headers(body, secret, event)


def _gitea(body: bytes, secret: str, event: str = "push") -> dict[str, str]:
    return gitea_headers(body, secret, event)


async def _hook(url: str, body: bytes, headers: dict[str, str | bytes]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(url, content=body, headers=headers)


async def _runs(stores: Stores, registry: str, task: str) -> list[str]:
    return [r.runId for r in await RunStore(stores.metadata).list_runs(registry, 100, task)]


async def test_the_task_shows_its_hook_and_keeps_its_secrets(devhost: Devhost, stores: Stores, hooks: Hooks) -> None:
    shown = await _arm(devhost, "GET", f"{_base(hooks.registry)}/tasks/hooked", hooks.auth)
    trigger = shown.json()["properties"]["trigger"]["sourceTriggers"][0]
    assert trigger["webhookUrl"] == f"{devhost.url}/tasks/hooks/{hooks.registry}/hooked" == hooks.url
    assert trigger["webhookSecret"] is None
    assert trigger["sourceRepository"]["sourceControlAuthProperties"]["token"] is None
    assert len(hooks.secret) == 64 and hooks.secret != hooks.second_secret
    raw = await stores.metadata.read("registries", "task:hooked", hooks.registry)
    assert raw is not None and hooks.secret not in str(raw) and "ghp_repo_token_value" not in str(raw)
    # a PATCH of the timers alone keeps the source trigger and its secret
    timers = {"properties": {"trigger": {"timerTriggers": [{"name": "t1", "schedule": "0 0 31 2 *"}]}}}
    patched_timers = await _arm(devhost, "PATCH", f"{_base(hooks.registry)}/tasks/hooked", hooks.auth, timers)
    assert patched_timers.json()["properties"]["trigger"]["sourceTriggers"][0]["webhookUrl"] == hooks.url
    assert (await _details(devhost, hooks.registry, "hooked", hooks.auth))[1] == hooks.secret
    # an update that leaves the trigger's name keeps its secret (the one configured in GitHub stays valid)
    patched = await _arm(devhost, "PATCH", f"{_base(hooks.registry)}/tasks/second", hooks.auth, _source_task())
    assert patched.status_code == 200, patched.text
    assert (await _details(devhost, hooks.registry, "second", hooks.auth))[1] == hooks.second_secret


async def test_the_hook_is_authenticated_by_its_hmac_alone(devhost: Devhost, stores: Stores, hooks: Hooks) -> None:
    body = _push()
    plain_task = {
        "location": "westeurope",
        "properties": {"step": DOCKER_STEP | {"contextPath": REPO}, "platform": {"os": "Linux"}},
    }
    created = await _arm(devhost, "PUT", f"{_base(hooks.registry)}/tasks/plain", hooks.auth, plain_task)
    assert created.status_code == 201, created.text
    unsigned: dict[str, str | bytes] = {"X-GitHub-Event": "push", "Content-Type": "application/json"}
    refused: list[tuple[str, dict[str, str | bytes]]] = [
        (hooks.url, unsigned),  # anonymous, no signature
        (hooks.url, _github(body, "not-the-secret")),
        (hooks.url, {**_github(body, hooks.secret), "X-Hub-Signature-256": "sha1=" + "0" * 40}),
        (hooks.url, _github(body, hooks.second_secret)),  # another task's secret
        (hooks.foreign_url, _github(body, hooks.secret)),  # the same task name in another registry
        (hooks.url.replace(hooks.registry, "nosuchregistry1"), _github(body, hooks.secret)),
        (hooks.url.replace("/hooked", "/nosuchtask"), _github(body, hooks.secret)),
        (hooks.url.replace("/hooked", "/plain"), _github(body, hooks.secret)),  # no source trigger
        (hooks.url.replace("/hooked", "/../../x"), _github(body, hooks.secret)),
        (hooks.url, _gitea(body, hooks.secret + "x")),
        (hooks.url, {**_github(body, hooks.secret), "X-Hub-Signature-256": NON_ASCII_SIGNATURE}),
    ]
    answers = [await _hook(url, body, headers) for url, headers in refused]
    assert [a.status_code for a in answers[:-3]] + [answers[-2].status_code, answers[-1].status_code] == [401] * 10
    assert answers[-3].status_code in (401, 404)  # the path never reaches a task
    assert len({a.text for a in answers if a.status_code == 401}) == 1  # nothing tells them apart
    too_big = b"{" + b" " * MAX_BODY_BYTES + b"}"
    assert (await _hook(hooks.url, too_big, _github(too_big, hooks.secret))).status_code == 413
    assert (await _hook(hooks.url, body, {"X-GitHub-Event": "push"})).status_code == 401
    assert await _runs(stores, hooks.registry, "hooked") == []  # nothing ran
    assert await _runs(stores, hooks.other, "hooked") == []


async def test_a_signed_push_to_the_branch_runs_the_task_at_its_commit_once(
    devhost: Devhost, stores: Stores, hooks: Hooks
) -> None:
    commit = hashlib.sha1(b"the pushed commit").hexdigest()
    body = _push(after=commit)
    first = await _hook(hooks.url, body, _github(body, hooks.secret))
    assert first.status_code == 200, first.text
    run_id = first.json()["runId"]
    assert first.json()["commit"] == commit and first.json()["branch"] == "main"
    run = await RunStore(stores.metadata).get(hooks.registry, run_id)
    assert run is not None and run.task == "hooked" and run.sourceCommit == commit
    assert run.request["sourceLocation"] == REPO + "#main"  # the task's repository, never the payload's URL
    assert run.sourceTrigger is not None and run.sourceTrigger["providerType"] == "Github"
    assert run.sourceToken is not None and "ghp_repo_token_value" not in run.sourceToken  # sealed to the run
    shown = await _arm(devhost, "GET", f"{_base(hooks.registry)}/runs/{run_id}", hooks.auth)
    assert shown.json()["properties"]["sourceTrigger"]["commitId"] == commit
    again = await _hook(hooks.url, body, _github(body, hooks.secret))  # GitHub redelivers: the same run
    assert again.status_code == 200 and again.json()["runId"] == run_id
    gitea_body = _push()
    gitea = await _hook(hooks.url, gitea_body, _gitea(gitea_body, hooks.secret))
    assert gitea.status_code == 200, gitea.text
    gitea_run = await RunStore(stores.metadata).get(hooks.registry, gitea.json()["runId"])
    assert gitea_run is not None and gitea_run.sourceTrigger is not None
    assert gitea_run.sourceTrigger["providerType"] == "Gitea"
    assert sorted(await _runs(stores, hooks.registry, "hooked")) == sorted([run_id, gitea_run.runId])


async def test_events_that_do_not_run_the_task_say_why(devhost: Devhost, stores: Stores, hooks: Hooks) -> None:
    before = await _runs(stores, hooks.registry, "second")
    cases: list[tuple[bytes, str, str]] = [
        (_push(ref="refs/heads/dev"), "push", "'dev'"),
        (_push(ref="refs/tags/v1"), "push", "not a branch"),
        (_push(after="0" * 40, deleted=True), "push", "deleted"),
        (b'{"action": "opened"}', "issues", "'issues' events"),
        (b'{"action": "opened"}', "pull_request", "does not run on pull requests"),  # a commit-only trigger
    ]
    for body, event, reason in cases:
        answer = await _hook(hooks.second_url, body, _github(body, hooks.second_secret, event))
        assert answer.status_code == 202 and reason in answer.json()["message"], answer.text
    ping = b'{"zen": "Keep it logically awesome."}'
    assert (await _hook(hooks.second_url, ping, _github(ping, hooks.second_secret, "ping"))).status_code == 200
    garbage = b"not json"
    assert (await _hook(hooks.second_url, garbage, _github(garbage, hooks.second_secret))).status_code == 400
    disabled = _source_task(status="Disabled")
    patched = await _arm(devhost, "PATCH", f"{_base(hooks.registry)}/tasks/second", hooks.auth, disabled)
    assert patched.status_code == 200
    body = _push()
    answer = await _hook(hooks.second_url, body, _github(body, hooks.second_secret))
    assert answer.status_code == 202 and "disabled" in answer.json()["message"]
    assert await _runs(stores, hooks.registry, "second") == before


async def test_bad_source_triggers_are_refused(devhost: Devhost, hooks: Hooks) -> None:
    tasks = f"{_base(hooks.registry)}/tasks"
    other_repo = _source_task(context="http://127.0.0.1:9/org/other.git#main")
    cases: list[tuple[str, dict[str, object], str]] = [
        ("uploaded", _source_task(context="/dev/null"), "contextPath to be the repository's git URL"),
        ("mismatch", other_repo, "repositoryUrl must be the repository of the contextPath"),
        ("noevents", _source_task(sourceTriggerEvents=[]), "sourceTriggerEvents"),
        ("badbranch", _source_task(context=REPO + "#a..b"), "branch"),
        ("creds", _source_task(context="https://u:p@example.com/r.git"), "credentials"),
    ]
    two = _source_task()
    two["properties"]["trigger"]["sourceTriggers"] *= 2  # type: ignore[index]
    cases.append(("twotriggers", two, "sourceTriggers"))
    for name, body, reason in cases:
        reply = await _arm(devhost, "PUT", f"{tasks}/{name}", hooks.auth, body)
        assert reply.status_code == 400 and reason in reply.text, f"{name}: {reply.text}"
