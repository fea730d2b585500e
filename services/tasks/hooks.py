"""The source-commit trigger's push hook: `POST /tasks/hooks/{registry}/{task}`.

ACR registers a webhook on GitHub for the task; a service outside GitHub cannot, so the task shows the hook's
URL and a generated secret (listDetails) and its owner adds the webhook in GitHub or Gitea (content type
application/json, the secret, push events). The hook is authenticated by its HMAC alone:

    1. the body is read (at most MAX_BODY_BYTES; larger: 413) and nothing of it is parsed yet
    2. the signature (`X-Hub-Signature-256: sha256=<hex>` from GitHub, `X-Gitea-Signature: <hex>` from Gitea)
       is compared in constant time with the HMAC-SHA256 of the body under the task's secret; an unknown
       registry or task, a task without a source trigger and a wrong or missing signature are all the same
       401 (an HMAC is computed either way: nothing tells a missing task from a wrong secret)
    3. only then the event: `ping` 200; other events, pushes of tags, of other branches, branch deletions and
       disabled triggers or tasks are answered 202 saying why nothing ran
    4. a push to the trigger's branch schedules one run at the pushed commit (`{{.Run.Commit}}`,
       `{{.Run.Branch}}`), once per (task, commit): a redelivered event answers with the run it made.
    5. a `pull_request` event (trigger events naming `pullrequest`) whose action is opened, reopened or
       synchronize (Gitea: synchronized) and whose base is the trigger's branch schedules one run at the
       PR's head sha, once per (task, PR, head sha); other actions are 202. The runner fetches
       `refs/pull/<n>/head` and refuses a tip that is not that sha (the PR moved on: its newer head's own
       event runs that one). A PR whose head is another repository (a fork, or a head repository the payload
       does not name) follows the trigger's `pullRequestForks`: Restricted (default), Trusted or Ignored.

The commit is always fetched from the task's own repository URL, never from a URL in the payload.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos, Document
from services.platform.secrets import SecretBox
from services.tasks.gitsource import valid_branch, valid_sha
from services.tasks.models import TASK_NAME, TaskDoc
from services.tasks.queue import RunQueue
from services.tasks.scheduling import RunRequestInvalid, schedule_task_run, task_secret_context
from services.tasks.store import RunStore, TaskStore

log = logging.getLogger("tasks")

MAX_BODY_BYTES = 1024 * 1024  # GitHub's push payloads are capped at 25 MB; a push of a few commits is KBs
_REGISTRY = re.compile(r"^[a-z0-9]{5,50}$")
_TASK = re.compile(TASK_NAME)
_ZERO = "0" * 40
# Computed against when there is no task to check with, so a missing task costs what a wrong secret does.
_DUMMY_KEY = hashlib.sha256(b"no such task").digest()


@dataclass(frozen=True, slots=True)
class HookAnswer:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


UNAUTHORIZED = HookAnswer(401, {"error": "the signature does not match (or there is no such hook)"})


class _Repository(BaseModel):
    model_config = ConfigDict(extra="ignore")
    clone_url: str | None = Field(default=None, max_length=2048)
    html_url: str | None = Field(default=None, max_length=2048)
    default_branch: str | None = Field(default=None, max_length=255)
    full_name: str | None = Field(default=None, max_length=512)


class _Ref(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ref: str = Field(max_length=1024)
    sha: str = Field(max_length=64)
    repo: _Repository | None = None


class _PullRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    number: int = Field(ge=1, lt=10**10, strict=True)
    head: _Ref
    base: _Ref


class PullRequestEvent(BaseModel):
    """What a GitHub or Gitea pull_request event carries that the trigger reads."""

    model_config = ConfigDict(extra="ignore")
    action: str = Field(max_length=64)
    number: int | None = Field(default=None, strict=True)
    pull_request: _PullRequest


RUNNING_ACTIONS = frozenset({"opened", "reopened", "synchronize", "synchronized"})  # Gitea: synchronized


class PushEvent(BaseModel):
    """What a GitHub or Gitea push event carries that the trigger reads."""

    model_config = ConfigDict(extra="ignore")
    ref: str = Field(max_length=1024)
    after: str = Field(max_length=64)
    deleted: bool = False
    repository: _Repository = Field(default_factory=_Repository)


def _signature(headers: dict[str, str]) -> str | None:
    github = headers.get("x-hub-signature-256")
    if github is not None:
        return github[len("sha256=") :] if github.startswith("sha256=") else None
    return headers.get("x-gitea-signature")


def _event(headers: dict[str, str]) -> tuple[str, str]:
    if "x-github-event" in headers:
        return "Github", headers["x-github-event"]
    return "Gitea", headers.get("x-gitea-event", "")


class SourceClaimDoc(Document):
    registry: str
    type: str = "sourceFired"
    runId: str = ""
    ttl: int = 30 * 86400


async def handle_push(
    metadata: Cosmos,
    blobs: BlobStore,
    queue: RunQueue,
    box: SecretBox,
    registry: str,
    task_name: str,
    headers: dict[str, str],
    body: bytes,
) -> HookAnswer:
    """One hook delivery (headers lower-cased, the body read whole and within MAX_BODY_BYTES)."""
    headers = {k.lower(): v for k, v in headers.items()}
    task: TaskDoc | None = None
    if _REGISTRY.fullmatch(registry) and _TASK.fullmatch(task_name):
        task = await TaskStore(metadata).get(registry, task_name)
    trigger = task.sourceTriggers[0] if task is not None and task.sourceTriggers else None
    key = _DUMMY_KEY
    if task is not None and trigger is not None:
        key = box.open(trigger["webhookSecret"], task_secret_context(task.registry, task.name))
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    given = _signature(headers) or ""
    matches = hmac.compare_digest(expected.encode(), given.lower().encode(errors="replace"))
    if not (matches and task is not None and trigger is not None):
        return UNAUTHORIZED
    # Authenticated: from here on the sender is the task's owner's repository.
    provider, event = _event(headers)
    if event == "ping":
        return HookAnswer(200, {"message": "pong: the hook and its secret are set up"})
    if event in ("pull_request", "pull_request_sync"):  # Gitea may name a push to the PR pull_request_sync
        return await _pull_request(metadata, blobs, queue, box, task, trigger, headers, body, provider)
    if event != "push":
        return HookAnswer(
            202, {"message": f"ignored: {event[:64]!r} events do not run the task (push and pull_request do)"}
        )
    if "commit" not in trigger.get("sourceTriggerEvents", []):
        return HookAnswer(202, {"message": "ignored: the trigger does not run on commits"})
    if task.status != "Enabled" or trigger.get("status", "Enabled") != "Enabled":
        return HookAnswer(202, {"message": "ignored: the task or its source trigger is disabled"})
    try:
        push = PushEvent.model_validate(json.loads(body))
    except (ValueError, ValidationError):
        return HookAnswer(400, {"error": "the push event is not JSON with ref and after"})
    if not push.ref.startswith("refs/heads/"):
        return HookAnswer(202, {"message": f"ignored: {push.ref[:200]!r} is not a branch"})
    branch = push.ref[len("refs/heads/") :]
    wanted = _branch_of(task, trigger) or push.repository.default_branch
    if wanted is None or branch != wanted:
        return HookAnswer(202, {"message": f"ignored: the push is to {branch[:200]!r}, the trigger is for {wanted!r}"})
    if push.deleted or push.after == _ZERO:
        return HookAnswer(202, {"message": f"ignored: {branch[:200]!r} was deleted"})
    commit = push.after.lower()
    if not valid_sha(commit):
        return HookAnswer(400, {"error": "after is not a commit id"})
    claim = SourceClaimDoc(id=f"sourceFired:{task.name.lower()}:{commit}", registry=registry)
    if await metadata.create("registries", claim) is None:
        runs = await RunStore(metadata).list_runs(registry, 50, task.name)
        earlier = next((r.runId for r in runs if r.sourceCommit == commit), None)
        return HookAnswer(200, {"message": "this commit already ran the task", "runId": earlier})
    from services.management.store import RegistryStore

    doc = await RegistryStore(metadata).get_registry(registry)
    if doc is None:
        return UNAUTHORIZED
    descriptor = {
        "id": headers.get("x-github-delivery") or headers.get("x-gitea-delivery") or commit,
        "eventType": "commit",
        "commitId": commit,
        "repositoryUrl": trigger["sourceRepository"]["repositoryUrl"],
        "branchName": branch,
        "providerType": provider,
    }
    try:
        run = await schedule_task_run(
            metadata, blobs, queue, box, registry, doc.loginServer, task, source_trigger=descriptor
        )
    except RunRequestInvalid as error:
        await metadata.delete("registries", claim.id, registry)
        return HookAnswer(422, {"error": f"the task cannot run: {error}"})
    log.info("source trigger: task %s/%s runs %s at %s", registry, task.name, run.runId, commit)
    return HookAnswer(200, {"message": "run scheduled", "runId": run.runId, "commit": commit, "branch": branch})


async def _pull_request(
    metadata: Cosmos,
    blobs: BlobStore,
    queue: RunQueue,
    box: SecretBox,
    task: TaskDoc,
    trigger: dict[str, Any],
    headers: dict[str, str],
    body: bytes,
    provider: str,
) -> HookAnswer:
    """An authenticated pull_request event: one run at the PR's head sha, or 202 saying why none."""
    if "pullrequest" not in trigger.get("sourceTriggerEvents", []):
        return HookAnswer(202, {"message": "ignored: the trigger does not run on pull requests"})
    if task.status != "Enabled" or trigger.get("status", "Enabled") != "Enabled":
        return HookAnswer(202, {"message": "ignored: the task or its source trigger is disabled"})
    try:
        event = PullRequestEvent.model_validate(json.loads(body))
    except (ValueError, ValidationError):
        return HookAnswer(400, {"error": "the pull_request event is not JSON with action and pull_request"})
    if event.action not in RUNNING_ACTIONS:
        return HookAnswer(202, {"message": f"ignored: pull requests {event.action[:64]!r} do not run the task"})
    pull = event.pull_request
    head, base = pull.head.sha.lower(), pull.base.ref.removeprefix("refs/heads/")
    if not valid_sha(head):
        return HookAnswer(400, {"error": "pull_request.head.sha is not a commit id"})
    if not valid_branch(pull.head.ref) or not valid_branch(base):
        return HookAnswer(400, {"error": "pull_request.head.ref or base.ref is not a branch name"})
    wanted = _branch_of(task, trigger) or (pull.base.repo.default_branch if pull.base.repo else None)
    if wanted is None or base != wanted:
        return HookAnswer(202, {"message": f"ignored: the pull request is into {base[:200]!r}, not {wanted!r}"})
    fork = _from_fork(pull)
    policy = str(trigger.get("pullRequestForks", "Restricted"))
    if fork and policy == "Ignored":
        return HookAnswer(202, {"message": "ignored: pull requests from forks do not run this task"})
    claim = SourceClaimDoc(id=f"pullRequestFired:{task.name.lower()}:{pull.number}:{head}", registry=task.registry)
    if await metadata.create("registries", claim) is None:
        runs = await RunStore(metadata).list_runs(task.registry, 50, task.name)
        this = {"eventType": "pullrequest", "pullRequestId": str(pull.number), "commitId": head}
        earlier = next((r.runId for r in runs if this.items() <= (r.sourceTrigger or {}).items()), None)
        return HookAnswer(200, {"message": "this pull request head already ran the task", "runId": earlier})
    from services.management.store import RegistryStore

    doc = await RegistryStore(metadata).get_registry(task.registry)
    if doc is None:
        return UNAUTHORIZED
    restricted = fork and policy != "Trusted"
    descriptor = {
        "id": headers.get("x-github-delivery") or headers.get("x-gitea-delivery") or f"{pull.number}:{head}",
        "eventType": "pullrequest",
        "commitId": head,
        "pullRequestId": str(pull.number),
        "repositoryUrl": trigger["sourceRepository"]["repositoryUrl"],
        "branchName": pull.head.ref,  # {{.Run.Branch}}: the branch of the commit built (the PR's head)
        "providerType": provider,
        "baseBranchName": base,  # ours: the branch the pull request is into
        "fromFork": fork,  # ours
    }
    try:
        run = await schedule_task_run(
            metadata, blobs, queue, box, task.registry, doc.loginServer, task,
            source_trigger=descriptor, restricted=restricted,
        )  # fmt: skip
    except RunRequestInvalid as error:
        await metadata.delete("registries", claim.id, task.registry)
        return HookAnswer(422, {"error": f"the task cannot run: {error}"})
    log.info(
        "pull request trigger: task %s/%s runs %s at %s (#%d)", task.registry, task.name, run.runId, head, pull.number
    )
    return HookAnswer(
        200,
        {
            "message": "run scheduled",
            "runId": run.runId,
            "commit": head,
            "pullRequest": pull.number,
            "branch": pull.head.ref,
            "restricted": restricted,
        },
    )


def _from_fork(pull: _PullRequest) -> bool:
    """Whether the PR's head is another repository than its base. A payload that does not name both (GitHub
    sends `head.repo: null` once a fork is deleted) counts as a fork: the safe side."""
    head, base = pull.head.repo, pull.base.repo
    if head is None or base is None or not head.full_name or not base.full_name:
        return True
    return head.full_name.lower() != base.full_name.lower()


def _branch_of(task: TaskDoc, trigger: dict[str, Any]) -> str | None:
    """The branch the trigger watches: its own, else the context URL's `#branch`, else (None) the repository's
    default branch as the push event names it."""
    from services.tasks.gitsource import parse_git_url

    branch = trigger.get("sourceRepository", {}).get("branch")
    if branch:
        return str(branch)
    return parse_git_url(str(task.step.get("contextPath", ""))).branch
