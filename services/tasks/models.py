"""A run's document, the requests that schedule one, and the queue message between the API and the runner.

The request bodies are ACR's (`azure-mgmt-containerregistrytasks` 1.0.0b1, api-version 2025-03-01-preview):
`DockerBuildRequest` for a quick build. Statuses are ACR's: Queued, Started, Running, Succeeded, Failed,
Canceled, Error, Timeout.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.platform.cosmos import Document, utcnow

RunStatus = Literal["Queued", "Started", "Running", "Succeeded", "Failed", "Canceled", "Error", "Timeout"]
TERMINAL: frozenset[str] = frozenset({"Succeeded", "Failed", "Canceled", "Error", "Timeout"})
MAX_TIMEOUT_SECONDS = 8 * 3600  # ACR's largest run timeout
MIN_TIMEOUT_SECONDS = 5  # ACR's is 300; smaller here so that a test can see a timeout
DEFAULT_TIMEOUT_SECONDS = 3600
# Image names as `acr build -t` takes them: repository[:tag], the registry's own (no other host).
_IMAGE_NAME = re.compile(r"^[a-z0-9{][a-z0-9._/{}\-]*(?::[A-Za-z0-9_{}.\-]{1,128})?$")
SOURCE_PATH = re.compile(r"^tasks/sources/\d{8}/[0-9a-f]{32}\.tar\.gz$")
AGENT_POOL_NAME = r"^[A-Za-z0-9-]{3,20}$"  # ACR's agent pool names


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Argument(_Body):
    name: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str = Field(max_length=4096)
    isSecret: bool = False


_LOGIN_SERVER = re.compile(r"^[a-z0-9]([a-z0-9.\-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$")
_VAULT_SECRET = re.compile(
    r"^https://[a-z0-9\-]{3,24}\.vault\.[a-z0-9.\-]+/secrets/[A-Za-z0-9\-]{1,127}(/[0-9a-f]{32})?/?$"
)


class SecretObject(_Body):
    """A credential's value: the value itself (`Opaque`, stored sealed) or a Key Vault secret URI
    (`Vaultsecret`, resolved when the run starts)."""

    value: str = Field(min_length=1, max_length=4096)
    type: Literal["Opaque", "Vaultsecret"] = "Opaque"

    @model_validator(mode="after")
    def _vault(self) -> SecretObject:
        if self.type == "Vaultsecret" and not _VAULT_SECRET.match(self.value):
            raise ValueError("a Vaultsecret is a Key Vault secret URI: https://<vault>.vault.azure.net/secrets/<name>")
        return self


class CustomRegistryCredentials(_Body):
    userName: SecretObject | None = None
    password: SecretObject | None = None
    identity: str | None = Field(default=None, max_length=1024)

    @model_validator(mode="after")
    def _both(self) -> CustomRegistryCredentials:
        if self.identity:
            raise ValueError("managed identity credentials are not supported here: give userName and password")
        if self.userName is None or self.password is None:
            raise ValueError("a custom registry's credentials need userName and password")
        return self


class SourceRegistryCredentials(_Body):
    loginMode: Literal["None", "Default"] | None = None


class Credentials(_Body):
    """ACR's task credentials: `customRegistries` maps a login server to the username and password buildah
    pulls base images from and pushes to it with."""

    sourceRegistry: SourceRegistryCredentials | None = None
    customRegistries: dict[str, CustomRegistryCredentials | None] = Field(default_factory=dict, max_length=10)

    @field_validator("customRegistries")
    @classmethod
    def _servers(
        cls, registries: dict[str, CustomRegistryCredentials | None]
    ) -> dict[str, CustomRegistryCredentials | None]:
        for server in registries:
            if not _LOGIN_SERVER.match(server):
                raise ValueError(f"not a registry login server: {server[:100]!r}")
        return registries


class PlatformProperties(_Body):
    os: Literal["Linux", "linux"] = "Linux"
    architecture: Literal["amd64", "arm64", "arm", "x86"] | None = None
    variant: str | None = Field(default=None, max_length=16)


class DockerBuildRequest(_Body):
    type: Literal["DockerBuildRequest"]
    imageNames: list[str] = Field(default_factory=list, max_length=32)
    isPushEnabled: bool = True
    noCache: bool = False
    dockerFilePath: str = Field(min_length=1, max_length=1024)
    target: str | None = Field(default=None, max_length=128)
    arguments: list[Argument] = Field(default_factory=list, max_length=64)
    timeout: int = Field(default=DEFAULT_TIMEOUT_SECONDS, ge=MIN_TIMEOUT_SECONDS, le=MAX_TIMEOUT_SECONDS)
    platform: PlatformProperties = Field(default_factory=PlatformProperties)
    sourceLocation: str | None = Field(default=None, max_length=1024)
    isArchiveEnabled: bool = False
    credentials: Credentials | None = None
    agentPoolName: str | None = Field(default=None, max_length=20, pattern=AGENT_POOL_NAME)

    @field_validator("sourceLocation")
    @classmethod
    def _source(cls, source: str | None) -> str | None:
        return _source_location(source)

    @field_validator("imageNames")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if len(name) > 256 or not _IMAGE_NAME.match(name):
                raise ValueError(f"not an image name of this registry: {name[:256]!r}")
        return names

    @field_validator("dockerFilePath")
    @classmethod
    def _dockerfile(cls, path: str) -> str:
        if path.startswith("/") or ".." in path.split("/") or "\\" in path or "\0" in path:
            raise ValueError("dockerFilePath must be a path inside the context")
        return path


class SetValue(_Body):
    name: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
    value: str = Field(max_length=4096)
    isSecret: bool = False


def _source_location(source: str | None) -> str | None:
    """An uploaded context's relativePath, or a git URL (`https://host/org/repo.git#branch:dir`)."""
    from services.tasks.gitsource import is_git_url, parse_git_url

    if source is not None and is_git_url(source):
        parse_git_url(source)
    return source


def _inside_context(path: str) -> str:
    if path.startswith("/") or ".." in path.split("/") or "\\" in path or "\0" in path:
        raise ValueError("must be a path inside the context")
    return path


class EncodedTaskRunRequest(_Body):
    """A multi-step task file sent whole (base64), with its values: `acr run -f acr-task.yaml`."""

    type: Literal["EncodedTaskRunRequest"]
    encodedTaskContent: str = Field(min_length=1, max_length=400_000)
    encodedValuesContent: str | None = Field(default=None, max_length=400_000)
    values: list[SetValue] = Field(default_factory=list, max_length=64)
    timeout: int = Field(default=DEFAULT_TIMEOUT_SECONDS, ge=MIN_TIMEOUT_SECONDS, le=MAX_TIMEOUT_SECONDS)
    platform: PlatformProperties = Field(default_factory=PlatformProperties)
    sourceLocation: str | None = Field(default=None, max_length=1024)
    isArchiveEnabled: bool = False
    credentials: Credentials | None = None
    agentPoolName: str | None = Field(default=None, max_length=20, pattern=AGENT_POOL_NAME)

    @field_validator("sourceLocation")
    @classmethod
    def _source(cls, source: str | None) -> str | None:
        return _source_location(source)


class FileTaskRunRequest(_Body):
    """A multi-step task file read from the uploaded context."""

    type: Literal["FileTaskRunRequest"]
    taskFilePath: str = Field(min_length=1, max_length=1024)
    valuesFilePath: str | None = Field(default=None, max_length=1024)
    values: list[SetValue] = Field(default_factory=list, max_length=64)
    timeout: int = Field(default=DEFAULT_TIMEOUT_SECONDS, ge=MIN_TIMEOUT_SECONDS, le=MAX_TIMEOUT_SECONDS)
    platform: PlatformProperties = Field(default_factory=PlatformProperties)
    sourceLocation: str = Field(max_length=1024)
    isArchiveEnabled: bool = False
    credentials: Credentials | None = None
    agentPoolName: str | None = Field(default=None, max_length=20, pattern=AGENT_POOL_NAME)

    @field_validator("sourceLocation")
    @classmethod
    def _source(cls, source: str) -> str:
        return _source_location(source) or source

    @field_validator("taskFilePath", "valuesFilePath")
    @classmethod
    def _paths(cls, path: str | None) -> str | None:
        return _inside_context(path) if path is not None else None


RunRequest = DockerBuildRequest | EncodedTaskRunRequest | FileTaskRunRequest


class TaskRunRequest(_Body):
    """Run a task now (`az acr task run`): the task's own step, with its context."""

    type: Literal["TaskRunRequest"]
    taskId: str = Field(min_length=1, max_length=1024)
    isArchiveEnabled: bool = False
    agentPoolName: str | None = Field(default=None, max_length=20, pattern=AGENT_POOL_NAME)


# --- tasks ------------------------------------------------------------------------------------------------
TASK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{4,49}$"
_CRON_FIELD = r"[0-9*/,\-]+"
CRON = re.compile(rf"^{_CRON_FIELD}( {_CRON_FIELD}){{4}}$")
CONTEXT_PATH = re.compile(r"^(/dev/null|tasks/sources/\d{8}/[0-9a-f]{32}\.tar\.gz|https?://\S+)$")


class TimerTrigger(_Body):
    schedule: str = Field(max_length=128)
    status: Literal["Enabled", "Disabled"] = "Enabled"
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str) -> str:
        from services.tasks.triggers import CronSchedule

        CronSchedule.parse(schedule)  # ValueError names the problem
        return schedule


class BaseImageTrigger(_Body):
    """Run the task when a base image its last run pulled from this registry moves to another digest."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    baseImageTriggerType: Literal["All", "Runtime"] = "Runtime"
    status: Literal["Enabled", "Disabled"] = "Enabled"


class AuthInfo(_Body):
    """How the runner authenticates to the repository (a PAT sent as HTTP basic auth `x-access-token`)."""

    tokenType: Literal["PAT", "OAuth"] = "PAT"
    token: str = Field(min_length=1, max_length=4096)
    refreshToken: str | None = Field(default=None, max_length=4096)
    scope: str | None = Field(default=None, max_length=256)
    expiresIn: int | None = None


class SourceProperties(_Body):
    sourceControlType: Literal["Github", "VisualStudioTeamService"]
    repositoryUrl: str = Field(min_length=1, max_length=1024)
    branch: str | None = Field(default=None, max_length=200)
    sourceControlAuthProperties: AuthInfo | None = None

    @field_validator("repositoryUrl")
    @classmethod
    def _url(cls, url: str) -> str:
        from services.tasks.gitsource import parse_git_url

        if "#" in url:
            raise ValueError("repositoryUrl is the repository alone (the branch goes in branch)")
        parse_git_url(url)  # GitSourceInvalid (a ValueError) names the problem
        return url

    @field_validator("branch")
    @classmethod
    def _branch(cls, branch: str | None) -> str | None:
        from services.tasks.gitsource import valid_branch

        if branch is not None and not valid_branch(branch):
            raise ValueError(f"not a branch name: {branch[:100]!r}")
        return branch


class SourceTrigger(_Body):
    """Run the task when a commit is pushed to the repository's branch, or a pull request into that branch is
    opened, reopened or pushed to (GitHub or Gitea webhooks).

    `pullRequestForks` is ours (ACR has no such field): what a pull request from another repository (a fork)
    may do. `Restricted` (the default) runs it without the task's secrets, other registries' credentials or
    push rights (a pull-only token, no `acr` commands); `Trusted` runs it like a same-repository pull request
    (as ACR did); `Ignored` does not run it."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    sourceRepository: SourceProperties
    sourceTriggerEvents: list[Literal["commit", "pullrequest"]] = Field(min_length=1, max_length=2)
    status: Literal["Enabled", "Disabled"] = "Enabled"
    pullRequestForks: Literal["Restricted", "Trusted", "Ignored"] = "Restricted"

    @field_validator("sourceTriggerEvents")
    @classmethod
    def _events(cls, events: list[str]) -> list[str]:
        if len(set(events)) != len(events):
            raise ValueError("sourceTriggerEvents may name each event once")
        return events


class TriggerProperties(_Body):
    timerTriggers: list[TimerTrigger] = Field(default_factory=list, max_length=10)
    # one per task: the task's hook URL and secret belong to it (ACR's CLI makes one too)
    sourceTriggers: list[SourceTrigger] = Field(default_factory=list, max_length=1)
    baseImageTrigger: BaseImageTrigger | None = None

    @field_validator("timerTriggers")
    @classmethod
    def _unique(cls, triggers: list[TimerTrigger]) -> list[TimerTrigger]:
        if len({t.name for t in triggers}) != len(triggers):
            raise ValueError("timer trigger names must differ")
        return triggers


class TaskStep(_Body):
    """ACR's DockerBuildStep, EncodedTaskStep or FileTaskStep: the fields of the run request it becomes, plus
    `contextPath` (/dev/null, the relativePath of an uploaded context, or a git URL
    `https://host/org/repo.git#branch:dir`)."""

    type: Literal["Docker", "EncodedTask", "FileTask"]
    contextPath: str = Field(default="/dev/null", max_length=1024, pattern=CONTEXT_PATH.pattern)
    # Docker
    imageNames: list[str] = Field(default_factory=list, max_length=32)
    isPushEnabled: bool = True
    noCache: bool = False
    dockerFilePath: str | None = Field(default=None, max_length=1024)
    target: str | None = Field(default=None, max_length=128)
    arguments: list[Argument] = Field(default_factory=list, max_length=64)

    @field_validator("contextPath")
    @classmethod
    def _git(cls, path: str) -> str:
        from services.tasks.gitsource import is_git_url, parse_git_url

        if is_git_url(path):
            parse_git_url(path)
        return path

    # EncodedTask / FileTask
    encodedTaskContent: str | None = Field(default=None, max_length=400_000)
    encodedValuesContent: str | None = Field(default=None, max_length=400_000)
    taskFilePath: str | None = Field(default=None, max_length=1024)
    valuesFilePath: str | None = Field(default=None, max_length=1024)
    values: list[SetValue] = Field(default_factory=list, max_length=64)


class TaskProperties(_Body):
    status: Literal["Enabled", "Disabled"] | None = None
    platform: PlatformProperties | None = None
    timeout: int | None = Field(default=None, ge=MIN_TIMEOUT_SECONDS, le=MAX_TIMEOUT_SECONDS)
    step: TaskStep | None = None
    trigger: TriggerProperties | None = None
    credentials: Credentials | None = None
    # the agent pool its runs wait for ("" removes it on PATCH)
    agentPoolName: str | None = Field(default=None, max_length=20, pattern=r"^([A-Za-z0-9-]{3,20})?$")


class TaskBody(_Body):
    location: str | None = Field(default=None, max_length=64)
    tags: dict[str, str] | None = None
    properties: TaskProperties = Field(default_factory=TaskProperties)


class TaskDoc(Document):
    registry: str
    type: Literal["task"] = "task"
    name: str
    location: str
    tags: dict[str, str] = Field(default_factory=dict)
    status: Literal["Enabled", "Disabled"] = "Enabled"
    platform: dict[str, Any] = Field(default_factory=lambda: {"os": "Linux", "architecture": "amd64"})
    timeout: int = DEFAULT_TIMEOUT_SECONDS
    step: dict[str, Any]  # TaskStep, secret values sealed
    timerTriggers: list[dict[str, Any]] = Field(default_factory=list)
    hasTimers: bool = False  # what the timer's query reads (set with timerTriggers)
    baseImageTrigger: dict[str, Any] | None = None
    hasBaseTrigger: bool = False  # what the bus consumer's query reads
    credentials: dict[str, Any] | None = None  # Credentials, Opaque values sealed to the task
    # SourceTrigger, with `webhookSecret` (ours: the push hook's HMAC key) and the token sealed
    sourceTriggers: list[dict[str, Any]] = Field(default_factory=list)
    agentPoolName: str | None = None  # the agent pool its runs wait for (services/tasks/pools.py)
    creationDate: str = Field(default_factory=utcnow)


class RunUpdate(_Body):
    isArchiveEnabled: bool | None = None


class ImageDescriptor(BaseModel):
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None


class RunDoc(Document):
    registry: str
    type: Literal["run"] = "run"
    runId: str
    number: int
    status: RunStatus = "Queued"
    runType: str = "QuickBuild"
    request: dict[str, Any]
    createTime: str = Field(default_factory=utcnow)
    startTime: str | None = None
    finishTime: str | None = None
    lastUpdatedTime: str = Field(default_factory=utcnow)
    dispatched: bool = False
    cancelRequested: bool = False
    isArchiveEnabled: bool = False
    outputImages: list[dict[str, Any]] = Field(default_factory=list)
    baseImages: list[dict[str, Any]] = Field(default_factory=list)  # ours: the FROM images, with digests
    sourceCommit: str | None = None  # the commit a git context was fetched at
    sourceTrigger: dict[str, Any] | None = None  # ACR's SourceTriggerDescriptor, when a push started it
    sourceToken: str | None = None  # the git repository's token, sealed to the run
    # ours: a pull request from a fork run Restricted (no secrets, no other registries' credentials, no push)
    restricted: bool = False
    # login server -> {userName, password: SecretObject}, Opaque values sealed to the run (never in `request`)
    customRegistries: dict[str, Any] = Field(default_factory=dict)
    logPath: str
    logExpired: bool = False  # the log was deleted after TASKS_LOG_RETENTION_DAYS (services/tasks/retention.py)
    logExpiredTime: str | None = None
    runErrorMessage: str | None = None
    attempts: int = 0
    task: str | None = None  # the task it ran, when it ran one
    timerTrigger: dict[str, Any] | None = None  # {name, scheduledTime} when a timer started it
    imageUpdateTrigger: dict[str, Any] | None = None  # {id, timestamp, images} when a base image update did
    agentPoolName: str | None = None  # the agent pool it waits for and runs in (None: the default queue)


class RunMessage(BaseModel):
    """The `task-runs` queue message: which run to execute (the document holds everything else)."""

    registry: str
    runId: str


# --- agent pools (services/tasks/pools.py) ----------------------------------------------------------------
# ACR's pool tiers: vCPUs of one instance (S: standard, I: isolated)
POOL_TIER_CPUS: dict[str, int] = {"S1": 2, "S2": 4, "S3": 8, "I6": 64}
PoolTier = Literal["S1", "S2", "S3", "I6"]
# an Azure subnet's resource id (stored; nothing here joins a virtual network)
SUBNET_ID = (
    r"^/subscriptions/[^/]{1,64}/resourceGroups/[^/]{1,90}/providers/Microsoft\.Network"
    r"/virtualNetworks/[^/]{1,64}/subnets/[^/]{1,80}$"
)


class AgentPoolProperties(_Body):
    count: int | None = Field(default=None, ge=0, le=1000)
    tier: PoolTier | None = None
    os: Literal["Linux", "Windows"] | None = None
    virtualNetworkSubnetResourceId: str | None = Field(default=None, max_length=1024, pattern=SUBNET_ID)

    @field_validator("os")
    @classmethod
    def _linux(cls, os: str | None) -> str | None:
        if os == "Windows":
            raise ValueError("agent pools run Linux only (as ACR's do: Windows pools are not supported)")
        return os


class AgentPoolBody(_Body):
    location: str | None = Field(default=None, max_length=64)
    tags: dict[str, str] | None = Field(default=None, max_length=50)
    properties: AgentPoolProperties = Field(default_factory=AgentPoolProperties)


class AgentPoolUpdateProperties(_Body):
    count: int | None = Field(default=None, ge=0, le=1000)


class AgentPoolUpdate(_Body):
    tags: dict[str, str] | None = Field(default=None, max_length=50)
    properties: AgentPoolUpdateProperties = Field(default_factory=AgentPoolUpdateProperties)


class AgentPoolDoc(Document):
    registry: str
    type: Literal["agentPool"] = "agentPool"
    name: str
    location: str
    tags: dict[str, str] = Field(default_factory=dict)
    count: int = 1
    tier: PoolTier = "S1"
    os: Literal["Linux"] = "Linux"
    virtualNetworkSubnetResourceId: str | None = None
    creationDate: str = Field(default_factory=utcnow)
    # the runs holding one of its `count` slots (taken before a run starts, given back when it ends)
    running: list[str] = Field(default_factory=list)


# --- task runs (services/tasks/taskruns.py) ---------------------------------------------------------------
TASK_RUN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{4,49}$"


class TaskRunProperties(_Body):
    runRequest: dict[str, Any] | None = None  # one of the run requests scheduleRun takes (checked by type)
    forceUpdateTag: str | None = Field(default=None, max_length=256)


class TaskRunBody(_Body):
    location: str | None = Field(default=None, max_length=64)
    tags: dict[str, str] | None = Field(default=None, max_length=50)
    properties: TaskRunProperties = Field(default_factory=TaskRunProperties)


class TaskRunDoc(Document):
    registry: str
    type: Literal["taskRun"] = "taskRun"
    name: str
    location: str
    tags: dict[str, str] = Field(default_factory=dict)
    runRequest: dict[str, Any]  # secret values sealed to the task run
    forceUpdateTag: str | None = None
    runId: str  # its latest run
    creationDate: str = Field(default_factory=utcnow)
