"""ACR Tasks quick builds end to end, with the official `azure-mgmt-containerregistrytasks` 1.0.0b1 SDK and
a real runner process (`python -m services.tasks runner`, buildah underneath):

upload a context through listBuildSourceUploadUrl, scheduleRun a DockerBuildRequest whose Dockerfile starts
FROM a base image in the registry and has a RUN step, wait for the run, read its log through listLogSasUrl,
pull the pushed image with podman and run it. Also: a failing RUN step fails the run with its log, a run
over its timeout is stopped and marked Timeout, a cancel stops a running build, and hostile contexts (path
traversal, a symbolic link out of the context, a context over the size limit) fail with a clear reason.

The registry is a devhost's default registry (reached at the devhost's address, as `make run` does), with
authentication on: the runner pushes with its run's own token, podman pulls with the admin user.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry import models as registry_models
from azure.mgmt.containerregistrytasks import ContainerRegistryTasksMgmtClient
from azure.mgmt.containerregistrytasks import models as m

from services.management.dev_issuer import LOCAL_RESOURCE_GROUP, LOCAL_SUBSCRIPTION
from tests.conftest import ROOT, Devhost, running_devhost
from tests.e2e.clients import Buildah, ContainersConfig, Podman, StorageRoot
from tests.e2e.gitserver import GitServer, git, git_server, github_headers
from tests.entra_issuer import IssuerCredential, TestIssuer
from tests.integration.conftest import make_subscription_owner
from tests.secrets_grep import register_secret

CALL = {"enforce_https": False}
BUSYBOX = Path("/bin/busybox")  # apt busybox-static: the base image's only file (a shell for RUN steps)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OTHER_PORT = _free_port()  # "another registry" (CNCF distribution with htpasswd) of the credentials test


@dataclass(frozen=True)
class TasksHost:
    devhost: Devhost
    registry: str
    login_server: str
    admin: tuple[str, str]
    tasks: ContainerRegistryTasksMgmtClient
    runner_log: Path
    token: str  # the owner's Entra token, for acr
    vault_file: Path  # TASKS_VAULT_SECRETS_FILE: the local stand-in for Key Vault

    @property
    def address(self) -> str:
        return self.devhost.host


@pytest.fixture(scope="module")
def tasks_host(
    stack: dict[str, str], entra_issuer: TestIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TasksHost]:
    if not BUSYBOX.is_file():
        pytest.fail("/bin/busybox is missing: apt-get install busybox-static (make apt does)")
    name = "tasks" + uuid.uuid4().hex[:12]
    env = stack | {
        "ENTRA_ISSUERS": entra_issuer.setting(),
        "DEFAULT_REGISTRY": name,
        "DEFAULT_REGISTRY_AUTH_DISABLED": "false",
        "TASKS_POLL_SECONDS": "0.2",
        # this module's queue and event topic: the session's devhost shares the emulators and would take the
        # base image events (and queue their runs where no runner of this module listens)
        "TASKS_QUEUE": "task-runs-" + uuid.uuid4().hex[:8],
        "BUS_TOPIC": "tasks-events-" + uuid.uuid4().hex[:8],
        "AUTH_CACHE_SECONDS": "0",  # the admin user enabled below counts at once
        "TASKS_MAX_CONTEXT_BYTES": str(256 * 1024),
        "TASKS_ALLOW_PRIVATE_SOURCES": "true",  # the local git server of the source trigger's test
        "TASKS_INSECURE_REGISTRIES": f"127.0.0.1:{OTHER_PORT}",  # "another registry": plain HTTP, htpasswd
    }
    directory = tmp_path_factory.mktemp("tasks")
    env["TASKS_VAULT_SECRETS_FILE"] = str(directory / "vault-secrets.json")
    with running_devhost(env, directory) as devhost:
        owner = str(uuid.uuid4())
        asyncio.run(make_subscription_owner(devhost.env, LOCAL_SUBSCRIPTION, owner, entra_issuer.tenant))
        credential = IssuerCredential(entra_issuer, owner)
        registries = ContainerRegistryManagementClient(credential, LOCAL_SUBSCRIPTION, base_url=devhost.url)  # type: ignore[arg-type]
        registries.registries.begin_update(
            LOCAL_RESOURCE_GROUP,
            name,
            registry_models.RegistryUpdateParameters(admin_user_enabled=True),
            enforce_https=False,
            polling_interval=0,
        ).result()
        password = (
            registries.registries.regenerate_credential(
                LOCAL_RESOURCE_GROUP, name, registry_models.RegenerateCredentialParameters(name="password"), **CALL
            )
            .passwords[0]
            .value
        )
        login_server = registries.registries.get(LOCAL_RESOURCE_GROUP, name, **CALL).login_server
        runner_log = directory / "runner.log"
        runner_env = devhost.env | {"TASKS_REGISTRY_ADDRESS": devhost.host, "TASKS_WORK_DIR": str(directory / "work")}
        with runner_log.open("wb") as out:
            runner = subprocess.Popen(
                [sys.executable, "-m", "services.tasks", "runner"],
                cwd=ROOT,
                env=runner_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        tasks = ContainerRegistryTasksMgmtClient(credential, LOCAL_SUBSCRIPTION, base_url=devhost.url)  # type: ignore[arg-type]
        try:
            token = entra_issuer.token(owner, lifetime=3600)
            yield TasksHost(
                devhost, name, login_server, (name, password), tasks, runner_log, token,
                Path(env["TASKS_VAULT_SECRETS_FILE"]),
            )  # fmt: skip
        finally:
            runner.terminate()
            try:
                runner.wait(timeout=20)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.wait()
            registries.close()
            tasks.close()


@pytest.fixture(scope="module")
def containers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Buildah, Podman]]:
    base = tmp_path_factory.mktemp("containers")
    storage, config = StorageRoot.create(base / "storage"), ContainersConfig.create(base / "config")
    try:
        yield Buildah(storage, config), Podman(storage, config)
    finally:
        storage.cleanup()


@pytest.fixture(scope="module")
def base_image(
    tasks_host: TasksHost, containers: tuple[Buildah, Podman], tmp_path_factory: pytest.TempPathFactory
) -> str:
    """`<login server>/base:1`: busybox alone, pushed with the admin user; returns its digest."""
    buildah, _ = containers
    work = buildah.from_image("scratch")
    buildah.copy(work, BUSYBOX, "/bin/busybox")
    buildah.copy(work, BUSYBOX, "/bin/sh")  # busybox picks its applet by argv[0]: a copy named sh is a shell
    buildah.config_image(work, "--cmd", "/bin/sh")
    buildah.commit(work, "localhost/tasks-base:1")
    user, password = tasks_host.admin
    digest_file = tmp_path_factory.mktemp("base") / "digest"
    return buildah.push(
        "localhost/tasks-base:1", f"docker://{tasks_host.address}/base:1", digest_file, "--creds", f"{user}:{password}"
    )


def context_archive(files: dict[str, str | bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def upload(host: TasksHost, archive: bytes) -> str:
    source = host.tasks.registries.get_build_source_upload_url(LOCAL_RESOURCE_GROUP, host.registry, **CALL)
    answer = httpx.put(source.upload_url, content=archive, headers={"x-ms-blob-type": "BlockBlob"}, timeout=30)
    assert answer.status_code == 201, answer.text
    return str(source.relative_path)


def schedule(host: TasksHost, archive: bytes, images: list[str], timeout: int = 600, push: bool = True) -> m.Run:
    request = m.DockerBuildRequest(
        image_names=images,
        is_push_enabled=push,
        docker_file_path="Dockerfile",
        source_location=upload(host, archive),
        platform=m.PlatformProperties(os="Linux"),
        timeout=timeout,
        arguments=[
            m.Argument(name="GREETING", value="built-by-task"),
            m.Argument(name="TOKEN", value="s3cr3t-value", is_secret=True),
        ],
    )
    return host.tasks.registries.schedule_run(LOCAL_RESOURCE_GROUP, host.registry, request, **CALL)


def wait_for(host: TasksHost, run_id: str, seconds: float = 240) -> m.Run:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = host.tasks.runs.get(LOCAL_RESOURCE_GROUP, host.registry, run_id, **CALL)
        if run.properties.status in ("Succeeded", "Failed", "Canceled", "Error", "Timeout"):
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish:\n{host.runner_log.read_text()[-3000:]}")


def run_log(host: TasksHost, run_id: str, *, started: bool = True) -> str:
    link = host.tasks.runs.get_log_sas_url(LOCAL_RESOURCE_GROUP, host.registry, run_id, **CALL).log_link
    answer = httpx.get(str(link), timeout=30)
    if answer.status_code == 404 and not started:  # the runner has not begun the run's log yet
        return ""
    assert answer.status_code == 200
    return answer.text


DOCKERFILE = """\
ARG BASE={login_server}/base:1
FROM ${{BASE}}
ARG GREETING
ARG TOKEN
RUN echo "$GREETING" > /built.txt && echo "token is $TOKEN"
CMD ["/bin/busybox", "cat", "/built.txt"]
"""


def test_a_quick_build_from_a_base_image_in_the_registry_is_pushed_and_runs(
    tasks_host: TasksHost, base_image: str, containers: tuple[Buildah, Podman]
) -> None:
    archive = context_archive({"Dockerfile": DOCKERFILE.format(login_server=tasks_host.login_server)})
    queued = schedule(tasks_host, archive, ["app:{{.Run.ID}}", "app:latest"])
    assert queued.properties.status == "Queued" and queued.name == queued.properties.run_id
    run_id = queued.properties.run_id
    run = wait_for(tasks_host, run_id)
    log = run_log(tasks_host, run_id)
    assert run.properties.status == "Succeeded", log
    tags = {image.tag: image for image in run.properties.output_images}
    assert set(tags) == {run_id, "latest"} and tags[run_id].repository == "app"
    assert tags[run_id].digest == tags["latest"].digest and tags[run_id].digest.startswith("sha256:")
    # the base image the build used, by digest (what the base-image trigger will compare against)
    assert run.properties["baseImages"][0]["digest"] == base_image
    assert "token is ***" in log and "s3cr3t-value" not in log  # secret build arguments are masked

    _, podman = containers
    user, password = tasks_host.admin
    reference = f"{tasks_host.address}/app:{run_id}"
    podman.run(
        "pull",
        "--tls-verify=false",
        "--creds",
        f"{user}:{password}",
        "--signature-policy",
        str(podman.config.policy),
        "--quiet",
        reference,
    )
    assert podman.image_inspect(reference)["Digest"] == tags[run_id].digest
    # Run what podman pulled (same storage) with buildah's chroot isolation: runc cannot set rlimits in
    # some sandboxes (this machine's), and the image's command is what is checked here.
    buildah, _ = containers
    work = buildah.from_image(reference)
    output = buildah.run("run", "--isolation", "chroot", work, "--", "/bin/busybox", "cat", "/built.txt").text
    assert output.strip() == "built-by-task"

    listed = [r.name for r in tasks_host.tasks.runs.list(LOCAL_RESOURCE_GROUP, tasks_host.registry, **CALL)]
    assert run_id in listed


def test_a_failing_step_fails_the_run_with_its_log(tasks_host: TasksHost, base_image: str) -> None:
    dockerfile = f"FROM {tasks_host.login_server}/base:1\nRUN echo about-to-fail && exit 3\n"
    run_id = schedule(tasks_host, context_archive({"Dockerfile": dockerfile}), ["broken:1"]).properties.run_id
    run = wait_for(tasks_host, run_id)
    assert run.properties.status == "Failed"
    assert run.properties.run_error_message == "the build failed"
    log = run_log(tasks_host, run_id)
    assert "about-to-fail" in log and f"Run ID: {run_id} ended: Failed" in log


def test_a_run_over_its_timeout_is_stopped_and_marked_timeout(tasks_host: TasksHost, base_image: str) -> None:
    dockerfile = f"FROM {tasks_host.login_server}/base:1\nRUN sleep 600\n"
    run_id = schedule(tasks_host, context_archive({"Dockerfile": dockerfile}), ["slow:1"], timeout=8).properties.run_id
    run = wait_for(tasks_host, run_id, seconds=120)
    assert run.properties.status == "Timeout", run_log(tasks_host, run_id)
    assert "exceeded its timeout of 8 seconds" in (run.properties.run_error_message or "")


def test_cancel_stops_a_running_build(tasks_host: TasksHost, base_image: str) -> None:
    dockerfile = f"FROM {tasks_host.login_server}/base:1\nRUN echo started-sleeping && sleep 600\n"
    run_id = schedule(tasks_host, context_archive({"Dockerfile": dockerfile}), ["cancelled:1"]).properties.run_id
    deadline = time.monotonic() + 120
    while "started-sleeping" not in run_log(tasks_host, run_id, started=False):
        assert time.monotonic() < deadline, tasks_host.runner_log.read_text()[-3000:]
        time.sleep(0.5)
    tasks_host.tasks.runs.cancel(LOCAL_RESOURCE_GROUP, tasks_host.registry, run_id, **CALL)
    assert wait_for(tasks_host, run_id, seconds=60).properties.status == "Canceled"


@pytest.mark.parametrize(
    ("files", "links", "reason"),
    [
        ({"Dockerfile": "FROM scratch\n", "../../escape.txt": "x"}, None, "path traversal in the context"),
        ({"Dockerfile": "FROM scratch\n"}, {"passwd": "../../../etc/passwd"}, "symbolic link out of the context"),
        ({"Dockerfile": "FROM scratch\n"}, {"passwd": "/etc/passwd"}, "symbolic link out of the context"),
        ({"Dockerfile": "FROM scratch\n", "big.bin": uuid.uuid4().bytes * 40_000}, None, "the context is larger than"),
    ],
    ids=["traversal", "relative-symlink", "absolute-symlink", "too-large"],
)
def test_hostile_contexts_fail_the_run_with_a_clear_reason(
    tasks_host: TasksHost, files: dict[str, str | bytes], links: dict[str, str] | None, reason: str
) -> None:
    archive = context_archive(files, links)
    if reason.startswith("the context is larger"):  # incompressible: over the 256 KiB limit compressed too
        archive = context_archive({"Dockerfile": "FROM scratch\n", "big.bin": _random(400 * 1024)})
    run_id = schedule(tasks_host, archive, ["hostile:1"]).properties.run_id
    run = wait_for(tasks_host, run_id, seconds=60)
    assert run.properties.status == "Failed"
    assert reason in (run.properties.run_error_message or "")
    assert reason in run_log(tasks_host, run_id)


def _random(size: int) -> bytes:
    return os.urandom(size)


ACR = Path(sys.executable).parent / "acr"


def acr_build(host: TasksHost, context: Path, *args: str) -> subprocess.CompletedProcess[str]:
    drop = ("ACR_", "STATE_DIR", "REGISTRY_AUTH_FILE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)} | {
        "ACR_CONFIG": str(context.parent / "acr-config.json"),
        "ACR_ENDPOINT": host.devhost.url,
        "ACR_SUBSCRIPTION": LOCAL_SUBSCRIPTION,
        "ACR_TOKEN": host.token,
    }
    argv = [str(ACR), "build", "-r", host.registry, "-g", LOCAL_RESOURCE_GROUP, *args, str(context)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=context.parent, timeout=300, check=False)


def test_acr_build_uploads_the_context_without_what_dockerignore_names_and_streams_the_log(
    tasks_host: TasksHost, base_image: str, tmp_path: Path
) -> None:
    context = tmp_path / "app"
    (context / "src").mkdir(parents=True)
    (context / "src" / "main.txt").write_text("hello from the context\n")
    (context / "secret.env").write_text("PASSWORD=never-uploaded\n")
    (context / ".dockerignore").write_text("# local files\n*.env\n")
    (context / "Dockerfile").write_text(
        f"FROM {tasks_host.login_server}/base:1\nCOPY . /ctx\nRUN test ! -e /ctx/secret.env && cat /ctx/src/main.txt\n"
    )
    done = acr_build(tasks_host, context, "-t", "cli-app:{{.Run.ID}}")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "Queued a build with ID: cb" in done.stderr
    assert "hello from the context" in done.stdout  # the log, streamed while the run went on
    pushed = done.stdout.strip().splitlines()[-1]
    assert pushed.startswith(f"{tasks_host.login_server}/cli-app:cb") and "@sha256:" in pushed


def test_acr_build_exits_with_the_failed_runs_status(tasks_host: TasksHost, base_image: str, tmp_path: Path) -> None:
    context = tmp_path / "broken"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {tasks_host.login_server}/base:1\nRUN echo going-down && false\n")
    done = acr_build(tasks_host, context, "-t", "cli-broken:1")
    assert done.returncode == 4, done.stderr
    assert "going-down" in done.stdout
    assert "ended Failed: the build failed" in done.stderr


# --- multi-step task files ----------------------------------------------------------------------------------
TASK_FILE = """\
version: v1.1.0
stepTimeout: 300
env: [GREETING=hello]
steps:
  - id: build-a
    build: -t $Registry/multi-a:{{.Run.ID}} -f Dockerfile.a .
    when: ["-"]
  - id: build-b
    build: -t {{.Run.Registry}}/multi-b:{{.Values.tag}} -f Dockerfile.b .
    when: ["-"]
  - id: check
    cmd: >-
      $Registry/multi-a:{{.Run.ID}} /bin/busybox sh -c
      'test "$(cat /a.txt)" = from-a && cat data.txt && echo "checked-$GREETING-$MODE"'
    env: [MODE=ci]
    when: [build-a, build-b]
  - id: push
    push:
      - $Registry/multi-a:{{.Run.ID}}
      - $Registry/multi-b:{{.Values.tag}}
"""


def multi_step_context(tmp_path: Path, login_server: str) -> Path:
    context = tmp_path / "multi"
    context.mkdir()
    (context / "Dockerfile.a").write_text(f"FROM {login_server}/base:1\nRUN echo from-a > /a.txt\n")
    (context / "Dockerfile.b").write_text(f"FROM {login_server}/base:1\nRUN echo from-b > /b.txt\n")
    (context / "data.txt").write_text("data-from-the-workspace\n")
    (context / "acr-task.yaml").write_text(TASK_FILE)
    return context


def acr(host: TasksHost, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    drop = ("ACR_", "STATE_DIR", "REGISTRY_AUTH_FILE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)} | {
        "ACR_CONFIG": str(cwd / "acr-config.json"),
        "ACR_ENDPOINT": host.devhost.url,
        "ACR_SUBSCRIPTION": LOCAL_SUBSCRIPTION,
        "ACR_TOKEN": host.token,
    }
    argv = [str(ACR), *args, "-r", host.registry, "-g", LOCAL_RESOURCE_GROUP]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False)


def test_acr_run_runs_two_builds_in_parallel_then_a_check_then_a_push(
    tasks_host: TasksHost, base_image: str, tmp_path: Path
) -> None:
    context = multi_step_context(tmp_path, tasks_host.login_server)
    done = acr(tasks_host, tmp_path, "run", "-f", str(context / "acr-task.yaml"), "--set", "tag=v7", str(context))
    assert done.returncode == 0, done.stderr + done.stdout
    log = done.stdout
    # no dependency between the two builds: the second starts before the first has finished
    assert log.index("Executing step ID: build-b") < log.index("Step ID: build-a marked as successful")
    # the check waits for both, runs the image built by build-a, in the context, with the task's env
    assert log.index("Executing step ID: check") > log.index("Step ID: build-b marked as successful")
    assert "data-from-the-workspace" in log and "checked-hello-ci" in log
    run_id = done.stderr.split("Queued a run with ID: ")[1].split()[0]
    pushed = {line.split("@")[0] for line in log.strip().splitlines()[-2:]}
    assert pushed == {f"{tasks_host.login_server}/multi-a:{run_id}", f"{tasks_host.login_server}/multi-b:v7"}
    run = tasks_host.tasks.runs.get(LOCAL_RESOURCE_GROUP, tasks_host.registry, run_id, **CALL)
    assert run.properties.status == "Succeeded" and run.properties.run_type == "QuickRun"
    assert {i.repository for i in run.properties.output_images} == {"multi-a", "multi-b"}


def test_a_failing_step_fails_the_run_with_its_log_and_later_steps_never_start(
    tasks_host: TasksHost, base_image: str, tmp_path: Path
) -> None:
    task = (
        "version: v1.1.0\nsteps:\n"
        f"  - id: fail\n    cmd: {tasks_host.login_server}/base:1 /bin/busybox sh -c 'echo going-down; exit 3'\n"
        "  - id: after\n    cmd: $Registry/base:1 echo never-printed\n"
    )
    (tmp_path / "fail.yaml").write_text(task)
    done = acr(tasks_host, tmp_path, "run", "-f", str(tmp_path / "fail.yaml"), "/dev/null")
    assert done.returncode == 4, done.stderr
    assert "ended Failed: step fail: the command failed" in done.stderr
    assert "going-down" in done.stdout and "never-printed" not in done.stdout, done.stdout
    assert "Step ID: after skipped: step fail did not succeed" in done.stdout


def test_a_task_file_error_is_refused_with_its_line_before_anything_runs(tasks_host: TasksHost, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("version: v1.1.0\nsteps:\n  - id: a\n    build: .\n    bogus: 1\n")
    done = acr(tasks_host, tmp_path, "run", "-f", str(tmp_path / "bad.yaml"), "/dev/null")
    assert done.returncode == 2, done.stderr
    assert "line 5: unknown step property 'bogus'" in done.stderr
    (tmp_path / "values.yaml").write_text("version: v1.1.0\nsteps:\n  - cmd: x:{{.Values.missing}}\n")
    done = acr(tasks_host, tmp_path, "run", "-f", str(tmp_path / "values.yaml"), "/dev/null")
    assert done.returncode == 2 and "unknown variable {{.Values.missing}}" in done.stderr
    before = [r.name for r in tasks_host.tasks.runs.list(LOCAL_RESOURCE_GROUP, tasks_host.registry, **CALL)]
    assert len(before) == len(set(before))  # and no run was written for either


# --- tasks ----------------------------------------------------------------------------------------------------
def test_acr_task_create_run_logs_list_runs_update_and_delete(
    tasks_host: TasksHost, base_image: str, tmp_path: Path
) -> None:
    context = tmp_path / "task-context"
    context.mkdir()
    (context / "message.txt").write_text("from-the-task-context\n")
    task_file = tmp_path / "task.yaml"
    task_file.write_text(
        "version: v1.1.0\nsteps:\n"
        "  - cmd: $Registry/base:1 /bin/busybox sh -c 'cat message.txt; echo \"greeting={{.Values.greeting}} $T\"'\n"
        "    env: [T={{.Values.token}}]\n"
    )
    register_secret("t0ps3cret")  # handed to the `acr` process: the secrets grep cannot see it go by
    created = acr(
        tasks_host, tmp_path, "task", "create", "-n", "greeter", "-f", str(task_file), "-c", str(context),
        "--schedule", "0 2 * * *", "--schedule", "30 * * * 1-5",
        "--set", "greeting=hi", "--set-secret", "token=t0ps3cret", "-o", "json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    timers = json.loads(created.stdout)["properties"]["trigger"]["timerTriggers"]
    assert [t["schedule"] for t in timers] == ["0 2 * * *", "30 * * * 1-5"]
    listed = acr(tasks_host, tmp_path, "task", "list", "-o", "tsv", "--query", "[].name")
    assert listed.stdout.split() == ["greeter"]
    ran = acr(tasks_host, tmp_path, "task", "run", "-n", "greeter")
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert "from-the-task-context" in ran.stdout and "greeting=hi ***" in ran.stdout and "t0ps3cret" not in ran.stdout
    run_id = ran.stderr.split("Queued a run with ID: ")[1].split()[0]
    runs = acr(tasks_host, tmp_path, "task", "list-runs", "-n", "greeter", "-o", "json")
    assert [(r["name"], r["properties"]["status"], r["properties"]["task"]) for r in json.loads(runs.stdout)] == [
        (run_id, "Succeeded", "greeter")
    ]
    logs = acr(tasks_host, tmp_path, "task", "logs", "-n", "greeter")
    assert logs.returncode == 0 and "from-the-task-context" in logs.stdout
    disabled = acr(
        tasks_host, tmp_path, "task", "update", "-n", "greeter", "--status", "Disabled", "--no-schedule", "-o", "json"
    )
    assert json.loads(disabled.stdout)["properties"]["status"] == "Disabled"
    assert json.loads(disabled.stdout)["properties"]["trigger"]["timerTriggers"] == []
    assert acr(tasks_host, tmp_path, "task", "delete", "-n", "greeter", "--yes").returncode == 0
    assert acr(tasks_host, tmp_path, "task", "show", "-n", "greeter").returncode == 1


def registry_arm(host: TasksHost) -> str:
    """The registry's ARM resource URL at the devhost (tasks, runs, scheduleRun below it)."""
    return (
        f"{host.devhost.url}/subscriptions/{LOCAL_SUBSCRIPTION}/resourceGroups/{LOCAL_RESOURCE_GROUP}"
        f"/providers/Microsoft.ContainerRegistry/registries/{host.registry}"
    )


def push_marked(host: TasksHost, buildah: Buildah, tmp_path: Path, image: str, marker: str, shell: bool = False) -> str:
    """Push `image` (repository:tag) to the registry with the admin user: a scratch image holding /marker (and
    /bin/busybox with `shell`); its digest."""
    user, password = host.admin
    local = f"localhost/marked:{uuid.uuid4().hex[:12]}"
    work = buildah.from_image("scratch")
    if shell:
        buildah.copy(work, BUSYBOX, "/bin/busybox")
    (tmp_path / "marker").write_text(marker)
    buildah.copy(work, tmp_path / "marker", "/marker")
    buildah.commit(work, local)
    digest_file = tmp_path / f"digest-{local.rsplit(':', 1)[1]}"
    return buildah.push(local, f"docker://{host.address}/{image}", digest_file, "--creds", f"{user}:{password}")


# --- base image updates -------------------------------------------------------------------------------------
def test_a_base_image_update_runs_the_dependent_task_exactly_once(
    tasks_host: TasksHost, containers: tuple[Buildah, Podman], tmp_path: Path
) -> None:
    buildah, _ = containers

    def push_base(repository: str, marker: str) -> str:
        return push_marked(tasks_host, buildah, tmp_path, f"{repository}:1", marker, shell=True)

    first_base = push_base("trig-base", "v1")
    dockerfile = f'FROM {tasks_host.login_server}/trig-base:1\nRUN ["/bin/busybox", "cp", "/marker", "/seen"]\n'
    source = upload(tasks_host, context_archive({"Dockerfile": dockerfile}))
    step = {
        "type": "Docker",
        "contextPath": source,
        "dockerFilePath": "Dockerfile",
        "imageNames": ["trig-app:{{.Run.ID}}"],
    }
    body = {
        "location": "westeurope",
        "properties": {"step": step, "platform": {"os": "Linux"}, "trigger": {"baseImageTrigger": {"name": "base"}}},
    }
    base = registry_arm(tasks_host)
    auth = {"Authorization": f"Bearer {tasks_host.token}"}
    version = {"api-version": "2025-03-01-preview"}
    created = httpx.put(f"{base}/tasks/rebuilder", json=body, headers=auth, params=version, timeout=30)
    assert created.status_code == 201, created.text
    first = httpx.post(
        f"{base}/scheduleRun", json={"type": "TaskRunRequest", "taskId": created.json()["id"]}, headers=auth,
        params=version, timeout=30,
    ).json()  # fmt: skip
    built = wait_for(tasks_host, first["name"])
    assert built.properties.status == "Succeeded"
    assert [b["digest"] for b in built.properties["baseImages"]] == [first_base]

    def task_runs() -> list[dict[str, object]]:
        params = version | {"$filter": "TaskName eq 'rebuilder'"}
        return list(httpx.get(f"{base}/runs", headers=auth, params=params, timeout=30).json()["value"])

    push_base("trig-other", "v1")  # an unrelated repository: nothing runs
    new_base = push_base("trig-base", "v2")
    deadline = time.monotonic() + 120
    while not (triggered := [r for r in task_runs() if r["properties"].get("imageUpdateTrigger")]):  # type: ignore[union-attr]
        assert time.monotonic() < deadline, tasks_host.runner_log.read_text()[-3000:]
        time.sleep(0.5)
    rebuilt = wait_for(tasks_host, str(triggered[0]["name"]))
    assert rebuilt.properties.status == "Succeeded"
    assert [b["digest"] for b in rebuilt.properties["baseImages"]] == [new_base]  # the rebuild used the new base
    assert rebuilt.properties["imageUpdateTrigger"]["images"][0]["digest"] == new_base
    time.sleep(6)  # redeliveries and the relay had their chance: still one run per update
    assert len(task_runs()) == 2


# --- source commits ---------------------------------------------------------------------------------------------
def _signed(body: bytes, secret: str, event: str = "push") -> dict[str, str]:
    return github_headers(body, secret, event)


def _push_event(branch: str, commit: str, url: str) -> bytes:
    return json.dumps({"ref": f"refs/heads/{branch}", "after": commit, "repository": {"clone_url": url}}).encode()


def test_a_pushed_commit_and_its_event_run_the_task_at_that_commit(
    tasks_host: TasksHost, base_image: str, tmp_path: Path
) -> None:
    with git_server(tmp_path / "git") as server:
        work, url = server.create("webapp")
        dockerfile = (
            f"FROM {tasks_host.login_server}/base:1\nCOPY version.txt /version.txt\n"
            'RUN ["/bin/busybox", "sh", "-c", "echo content: $(cat /version.txt)"]\n'
        )
        server.commit(work, {"Dockerfile": dockerfile, "version.txt": "first\n"}, "one")
        base = registry_arm(tasks_host)
        auth, version = {"Authorization": f"Bearer {tasks_host.token}"}, {"api-version": "2025-03-01-preview"}
        step = {
            "type": "Docker",
            "contextPath": f"{url}#main",
            "dockerFilePath": "Dockerfile",
            "imageNames": ["gitapp:{{.Run.Commit}}"],
        }
        source = {
            "name": "push",
            "sourceRepository": {"sourceControlType": "Github", "repositoryUrl": url, "branch": "main"},
            "sourceTriggerEvents": ["commit"],
        }
        body = {
            "location": "westeurope",
            "properties": {"step": step, "platform": {"os": "Linux"}, "trigger": {"sourceTriggers": [source]}},
        }
        created = httpx.put(f"{base}/tasks/from-git", json=body, headers=auth, params=version, timeout=30)
        assert created.status_code == 201, created.text
        details = httpx.post(f"{base}/tasks/from-git/listDetails", headers=auth, params=version, timeout=30).json()
        hook = details["properties"]["trigger"]["sourceTriggers"][0]
        hook_url, secret = hook["webhookUrl"], hook["webhookSecret"]

        commit = server.commit(work, {"version.txt": "second\n"}, "two")
        event = _push_event("main", commit, url)
        wrong = httpx.post(hook_url, content=event, headers=_signed(event, "a-guess"), timeout=30)
        assert wrong.status_code == 401
        elsewhere = GitServer.commit(work, {"version.txt": "on dev\n"}, "dev work", branch="dev")
        other = _push_event("dev", elsewhere, url)
        ignored = httpx.post(hook_url, content=other, headers=_signed(other, secret), timeout=30)
        assert ignored.status_code == 202 and "'dev'" in ignored.json()["message"]
        started = httpx.post(hook_url, content=event, headers=_signed(event, secret), timeout=30)
        assert started.status_code == 200, started.text
        run = wait_for(tasks_host, started.json()["runId"])
        log = run_log(tasks_host, run.name)
        assert run.properties.status == "Succeeded", log
    assert run.properties["sourceTrigger"]["commitId"] == commit and run.properties["sourceCommit"] == commit
    assert [(i.repository, i.tag) for i in run.properties.output_images] == [("gitapp", commit)]
    assert "content: second" in log and commit in log, log  # that commit's tree, not the branch's later state
    user, password = tasks_host.admin
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--creds", f"{user}:{password}",
         f"docker://{tasks_host.address}/gitapp:{commit}"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == run.properties.output_images[0].digest
    task_runs = httpx.get(
        f"{base}/runs", headers=auth, params=version | {"$filter": "TaskName eq 'from-git'"}, timeout=30
    ).json()["value"]
    assert [r["name"] for r in task_runs] == [run.name]  # the dev push and the wrong signature ran nothing


def test_acr_task_create_with_a_git_context_and_a_commit_trigger(
    tasks_host: TasksHost, base_image: str, tmp_path: Path
) -> None:
    with git_server(tmp_path / "git") as server:
        work, url = server.create("tasks-repo")
        task_file = (
            "version: v1.1.0\nsteps:\n"
            '  - cmd: "$Registry/base:1 /bin/busybox sh -c'
            " 'echo at {{.Run.Commit}} on {{.Run.Branch}} $(cat note.txt)'\"\n"
        )
        server.commit(work, {"ci/task.yaml": task_file, "note.txt": "one\n"}, "one")
        created = acr(
            tasks_host, tmp_path, "task", "create", "-n", "git-cli", "-c", f"{url}#main", "-f", "ci/task.yaml",
            "--commit-trigger-enabled", "--git-access-token", "tok-for-the-repo", "-o", "json",
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        shown = json.loads(
            acr(tasks_host, tmp_path, "task", "show", "-n", "git-cli", "--with-secure-properties", "-o", "json").stdout
        )
        trigger = shown["properties"]["trigger"]["sourceTriggers"][0]
        assert trigger["sourceRepository"]["branch"] == "main" and trigger["sourceTriggerEvents"] == ["commit"]
        commit = server.commit(work, {"note.txt": "two\n"}, "two")
        event = _push_event("main", commit, url)
        started = httpx.post(trigger["webhookUrl"], content=event, headers=_signed(event, trigger["webhookSecret"]))
        assert started.status_code == 200, started.text
        run = wait_for(tasks_host, started.json()["runId"])
        log = run_log(tasks_host, run.name)
        assert run.properties.status == "Succeeded", log
    assert f"at {commit} on main two" in log
    assert "tok-for-the-repo" not in log
    runs = acr(tasks_host, tmp_path, "task", "list-runs", "-n", "git-cli")
    assert "Commit" in runs.stdout, runs.stdout


# --- pull requests ------------------------------------------------------------------------------------------
def _pull_request_event(number: int, head: str, head_repo: str, action: str = "opened") -> bytes:
    base = {"full_name": "org/pr-repo", "default_branch": "main"}
    pull = {
        "number": number,
        "head": {"ref": "feature/greeting", "sha": head, "repo": {"full_name": head_repo}},
        "base": {"ref": "main", "sha": "0" * 40, "repo": base},
    }
    return json.dumps({"action": action, "number": number, "pull_request": pull, "repository": base}).encode()


def test_a_pull_request_runs_the_task_at_its_head_and_a_forks_pushes_nothing(
    tasks_host: TasksHost, base_image: str, tmp_path: Path
) -> None:
    """`acr task create --pull-request-trigger-enabled true`; a same-repository PR's event builds its head
    (fetched through refs/pull/<n>/head) and pushes it; a fork's PR builds restricted: its secret is empty and
    its push step is skipped; `--pull-request-trigger-enabled false` stops both."""
    with git_server(tmp_path / "git") as server:
        work, url = server.create("pr-repo")
        task_file = (
            "version: v1.1.0\nsteps:\n"
            "  - build: -t $Registry/prapp:{{.Run.Commit}} --build-arg BRANCH={{.Run.Branch}}"
            " --build-arg TOKEN={{.Values.token}} .\n"
            '  - push: ["$Registry/prapp:{{.Run.Commit}}"]\n'
        )
        dockerfile = (
            f"FROM {tasks_host.login_server}/base:1\nARG BRANCH\nARG TOKEN\nCOPY greeting.txt /g.txt\n"
            'RUN ["/bin/busybox", "sh", "-c", "echo built $(cat /g.txt) on $BRANCH token=${TOKEN:-none}"]\n'
        )
        server.commit(work, {"acr-task.yaml": task_file, "Dockerfile": dockerfile, "greeting.txt": "main\n"}, "one")
        created = acr(
            tasks_host, tmp_path, "task", "create", "-n", "pr-task", "-c", f"{url}#main", "-f", "acr-task.yaml",
            "--pull-request-trigger-enabled", "true", "--set-secret", "token=pr-task-5ecret", "-o", "json",
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        register_secret("pr-task-5ecret")
        shown = acr(tasks_host, tmp_path, "task", "show", "-n", "pr-task", "--with-secure-properties", "-o", "json")
        trigger = json.loads(shown.stdout)["properties"]["trigger"]["sourceTriggers"][0]
        assert trigger["sourceTriggerEvents"] == ["pullrequest"] and trigger["pullRequestForks"] == "Restricted"
        hook, secret = trigger["webhookUrl"], trigger["webhookSecret"]

        def pull_request(number: int, text: str) -> str:
            """A PR's head commit, published as GitHub does (refs/pull/<n>/head), never on main."""
            GitServer.commit(work, {"greeting.txt": text}, text, branch=f"pr{number}")
            head = git(work, "rev-parse", "HEAD")
            git(work, "push", "-q", "-f", "origin", f"HEAD:refs/pull/{number}/head")
            return head

        same = pull_request(5, "from-the-pr")
        event = _pull_request_event(5, same, "org/pr-repo")
        started = httpx.post(hook, content=event, headers=_signed(event, secret, "pull_request"), timeout=30)
        assert started.status_code == 200, started.text
        run = wait_for(tasks_host, started.json()["runId"])
        log = run_log(tasks_host, run.name)
        assert run.properties.status == "Succeeded", log
        assert run.properties["sourceTrigger"]["eventType"] == "pullrequest" and run.properties["sourceCommit"] == same
        assert "built from-the-pr on feature/greeting token=pr-task-5ecret" not in log  # masked in the log
        assert "built from-the-pr on feature/greeting token=***" in log, log
        assert [(i.repository, i.tag) for i in run.properties.output_images] == [("prapp", same)]

        forked = pull_request(6, "from-a-fork")
        event = _pull_request_event(6, forked, "mallory/pr-repo")
        started = httpx.post(hook, content=event, headers=_signed(event, secret, "pull_request"), timeout=30)
        assert started.status_code == 200 and started.json()["restricted"] is True, started.text
        restricted = wait_for(tasks_host, started.json()["runId"])
        fork_log = run_log(tasks_host, restricted.name)
        assert restricted.properties.status == "Succeeded", fork_log
        assert "built from-a-fork on feature/greeting token=none" in fork_log  # the secret withheld
        assert "Restricted run" in fork_log and "push skipped" in fork_log
        assert restricted.properties.output_images == [] and restricted.properties["restricted"] is True

        off = acr(tasks_host, tmp_path, "task", "update", "-n", "pr-task", "--pull-request-trigger-enabled", "false")
        assert off.returncode == 0, off.stderr
        again = _pull_request_event(6, pull_request(6, "later"), "org/pr-repo", "synchronize")
        ignored = httpx.post(hook, content=again, headers=_signed(again, secret, "pull_request"), timeout=30)
        assert ignored.status_code == 401  # the trigger is gone with its hook secret
    user, password = tasks_host.admin

    def inspect(tag: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--creds", f"{user}:{password}",
             f"docker://{tasks_host.address}/prapp:{tag}"],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip

    assert inspect(same).returncode == 0
    assert inspect(forked).returncode != 0  # the fork's build was never pushed
    listed = acr(tasks_host, tmp_path, "task", "list-runs", "-n", "pr-task", "-o", "table")
    assert listed.stdout.count("Pull request") == 2, listed.stdout


# --- purge as a scheduled task ----------------------------------------------------------------------------------
def test_a_purge_task_deletes_the_old_tags_keeps_the_latest_and_logs_it(
    tasks_host: TasksHost, containers: tuple[Buildah, Podman], tmp_path: Path
) -> None:
    buildah, _ = containers
    user, password = tasks_host.admin

    def push(repository: str, tag: str) -> str:
        return push_marked(tasks_host, buildah, tmp_path, f"{repository}:{tag}", f"{repository}:{tag}")

    def tags(repository: str) -> list[str]:
        listed = subprocess.run(
            ["skopeo", "list-tags", "--tls-verify=false", "--creds", f"{user}:{password}",
             f"docker://{tasks_host.address}/{repository}"],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        return sorted(json.loads(listed.stdout)["Tags"])

    for tag in ("v1", "v2", "v3"):
        push("purge-me", tag)
        time.sleep(1.1)  # distinct update times: --keep keeps the latest
    push("purge-spared", "v1")  # no filter names it
    command = "acr purge --registry {{.Run.Registry}} --filter 'purge-me:v.*' --ago 0 --keep 1 --untagged"
    created = acr(
        tasks_host, tmp_path, "task", "create", "-n", "purger", "--cmd", command,
        "--schedule", "0 1 * * *", "--context", "/dev/null",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    ran = acr(tasks_host, tmp_path, "task", "run", "-n", "purger")
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert f"deleted: {tasks_host.login_server}/purge-me:v1" in ran.stdout
    assert f"deleted: {tasks_host.login_server}/purge-me:v2" in ran.stdout
    assert "Number of tags deleted: 2" in ran.stdout and "Number of manifests deleted: 2" in ran.stdout
    assert tags("purge-me") == ["v3"] and tags("purge-spared") == ["v1"]
    refused = acr(
        tasks_host, tmp_path, "task", "create", "-n", "elsewhere",
        "--cmd", "acr purge --registry other.azurecr.io --filter 'a:.*' --ago 1d",
    )  # fmt: skip
    assert refused.returncode == 0, refused.stderr  # a task file is valid; its run says why it cannot purge
    failed = acr(tasks_host, tmp_path, "task", "run", "-n", "elsewhere")
    assert failed.returncode != 0 and "purges its own registry only" in failed.stdout + failed.stderr


# --- credentials for other registries ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def other_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """CNCF distribution (`docker-registry`, as bench/ uses it) with htpasswd auth on OTHER_PORT: (login server,
    username, password)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        hashed = crypt.crypt("0ther-pa55", crypt.mksalt(crypt.METHOD_BLOWFISH))
    root = tmp_path_factory.mktemp("other-registry")
    (root / "htpasswd").write_text(f"builder:{hashed}\n")
    config = root / "config.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{OTHER_PORT}\n"
        f"auth:\n  htpasswd:\n    realm: other\n    path: {root / 'htpasswd'}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    with (root / "log").open("wb") as log:
        server = subprocess.Popen(["docker-registry", "serve", str(config)], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{OTHER_PORT}/v2/", timeout=2).status_code == 401:
                    break
            assert time.monotonic() < deadline and server.poll() is None, (root / "log").read_text()
            time.sleep(0.2)
        yield f"127.0.0.1:{OTHER_PORT}", "builder", "0ther-pa55"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_a_task_pulls_from_and_pushes_to_another_registry_with_its_credentials(
    tasks_host: TasksHost, containers: tuple[Buildah, Podman], other_registry: tuple[str, str, str], tmp_path: Path
) -> None:
    buildah, _ = containers
    server, user, password = other_registry
    work = buildah.from_image("scratch")
    buildah.copy(work, BUSYBOX, "/bin/busybox")
    buildah.commit(work, "localhost/elsewhere-base:1")
    buildah.push(
        "localhost/elsewhere-base:1", f"docker://{server}/lib/base:1", tmp_path / "d", "--creds",
        f"{user}:{password}", "--tls-verify=false",
    )  # fmt: skip
    dockerfile = f'FROM {server}/lib/base:1\nRUN ["/bin/busybox", "echo", "pulled from the other registry"]\n'
    task_file = (
        "version: v1.1.0\nsteps:\n"
        f"  - build: -t $Registry/from-other:{{{{.Run.ID}}}} -t {server}/copies/app:{{{{.Run.ID}}}} .\n"
        f"  - push: [$Registry/from-other:{{{{.Run.ID}}}}, {server}/copies/app:{{{{.Run.ID}}}}]\n"
    )
    step = {
        "type": "EncodedTask",
        "contextPath": upload(tasks_host, context_archive({"Dockerfile": dockerfile})),
        "encodedTaskContent": base64.b64encode(task_file.encode()).decode(),
    }
    credentials = {
        "customRegistries": {
            server: {"userName": {"type": "Opaque", "value": user}, "password": {"type": "Opaque", "value": password}}
        }
    }
    base = registry_arm(tasks_host)
    auth, version = {"Authorization": f"Bearer {tasks_host.token}"}, {"api-version": "2025-03-01-preview"}
    body = {
        "location": "westeurope",
        "properties": {"step": step, "platform": {"os": "Linux"}, "credentials": credentials},
    }
    created = httpx.put(f"{base}/tasks/mirror", json=body, headers=auth, params=version, timeout=30)
    assert created.status_code == 201, created.text
    shown = created.json()["properties"]["credentials"]["customRegistries"][server]
    assert shown["userName"]["value"] is None and shown["password"]["value"] is None  # never shown back
    ran = acr(tasks_host, tmp_path, "task", "run", "-n", "mirror")
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert "pulled from the other registry" in ran.stdout and password not in ran.stdout
    run_id = ran.stderr.split("Queued a run with ID: ")[1].split()[0]
    copied = httpx.get(
        f"http://{server}/v2/copies/app/manifests/{run_id}", auth=(user, password), timeout=30,
        headers={"Accept": f"{OCI_MANIFEST},application/vnd.docker.distribution.manifest.v2+json"},
    )  # fmt: skip
    assert copied.status_code == 200, copied.text
    run = tasks_host.tasks.runs.get(LOCAL_RESOURCE_GROUP, tasks_host.registry, run_id, **CALL)
    assert {(i.registry, i.repository) for i in run.properties.output_images} == {
        (tasks_host.login_server, "from-other"), (server, "copies/app"),
    }  # fmt: skip

    # A Key Vault reference resolves through the operator's resolver only (TASKS_VAULT_SECRETS_FILE here).
    uri = "https://team-vault.vault.azure.net/secrets/other-password"
    vaulted = {
        "customRegistries": {server: {"userName": {"value": user}, "password": {"type": "Vaultsecret", "value": uri}}}
    }
    patched = httpx.patch(
        f"{base}/tasks/mirror", json={"properties": {"credentials": vaulted}}, headers=auth, params=version, timeout=30
    )
    assert patched.status_code == 200, patched.text
    unresolved = acr(tasks_host, tmp_path, "task", "run", "-n", "mirror")
    assert unresolved.returncode != 0 and uri in unresolved.stdout + unresolved.stderr
    tasks_host.vault_file.write_text(json.dumps({uri: password}))
    resolved = acr(tasks_host, tmp_path, "task", "run", "-n", "mirror")
    assert resolved.returncode == 0, resolved.stderr + resolved.stdout
    assert password not in resolved.stdout


# --- agent pools and task runs ------------------------------------------------------------------------------
def test_a_quick_build_in_an_agent_pool_waits_for_its_count_and_pushes(tasks_host: TasksHost, base_image: str) -> None:
    pools, group, registry = tasks_host.tasks.agent_pools, LOCAL_RESOURCE_GROUP, tasks_host.registry
    pool = pools.begin_create(
        group, registry, "builders", m.AgentPool(properties=m.AgentPoolProperties(count=0, tier="S2", os="Linux")),
        polling_interval=0, **CALL,
    ).result()  # fmt: skip
    assert pool.properties.provisioning_state == "Succeeded" and pool.properties.count == 0
    assert pool.properties.tier == "S2" and pool.properties.os == "Linux"
    request = m.DockerBuildRequest(
        image_names=["pooled:{{.Run.ID}}"],
        docker_file_path="Dockerfile",
        source_location=upload(
            tasks_host, context_archive({"Dockerfile": DOCKERFILE.format(login_server=tasks_host.login_server)})
        ),
        platform=m.PlatformProperties(os="Linux"),
        agent_pool_name="builders",
    )
    run_id = tasks_host.tasks.registries.schedule_run(group, registry, request, **CALL).properties.run_id
    # count 0: the run waits in the pool's queue (no runner may start it)
    assert pools.get_queue_status(group, registry, "builders", **CALL).count == 1
    one = m.AgentPoolUpdateParameters(properties=m.AgentPoolPropertiesUpdateParameters(count=1))
    scaled = pools.begin_update(group, registry, "builders", one, polling_interval=0, **CALL).result()
    assert scaled.properties.count == 1
    run = wait_for(tasks_host, run_id)
    assert run.properties.status == "Succeeded", run_log(tasks_host, run_id)
    assert run.properties.agent_pool_name == "builders"
    assert [i.tag for i in run.properties.output_images] == [run_id]
    assert pools.get_queue_status(group, registry, "builders", **CALL).count == 0
    assert [p.name for p in pools.list(group, registry, **CALL)] == ["builders"]
    pools.begin_delete(group, registry, "builders", polling_interval=0, **CALL).result()
    assert [p.name for p in pools.list(group, registry, **CALL)] == []


def test_a_task_run_runs_its_request_and_again_for_a_new_force_update_tag(
    tasks_host: TasksHost, base_image: str
) -> None:
    task_runs, group, registry = tasks_host.tasks.task_runs, LOCAL_RESOURCE_GROUP, tasks_host.registry
    task = (
        "version: v1.1.0\nsteps:\n  - cmd: $Registry/base:1 /bin/busybox sh -c 'echo task-run-says $S'\n"
        "    env: [S={{.Values.s}}]\n"
    )
    request = m.EncodedTaskRunRequest(
        encoded_task_content=base64.b64encode(task.encode()).decode(),
        values_property=[m.SetValue(name="s", value="tr-s3cret", is_secret=True)],
        platform=m.PlatformProperties(os="Linux"),
    )
    created = task_runs.begin_create(
        group, registry, "nightly-check",
        m.TaskRun(properties=m.TaskRunProperties(run_request=request, force_update_tag="1")),
        polling_interval=0, **CALL,
    ).result()  # fmt: skip
    assert created.properties.provisioning_state == "Succeeded"
    first = created.properties.run_result.properties.run_id
    assert wait_for(tasks_host, first).properties.status == "Succeeded"
    assert "task-run-says ***" in run_log(tasks_host, first)
    shown = task_runs.get(group, registry, "nightly-check", **CALL)
    assert shown.properties.run_result.properties.status == "Succeeded"  # runResult is the run, fresh
    assert shown.properties.run_request.values_property[0].value is None  # masked; listDetails shows it
    details = task_runs.get_details(group, registry, "nightly-check", **CALL)
    assert details.properties.run_request.values_property[0].value == "tr-s3cret"
    update = m.TaskRunUpdateParameters(properties=m.TaskRunPropertiesUpdateParameters(force_update_tag="2"))
    again = task_runs.begin_update(group, registry, "nightly-check", update, polling_interval=0, **CALL).result()
    second = again.properties.run_result.properties.run_id
    assert second != first and wait_for(tasks_host, second).properties.status == "Succeeded"
    same = task_runs.begin_update(group, registry, "nightly-check", update, polling_interval=0, **CALL).result()
    assert same.properties.run_result.properties.run_id == second  # the same tag: no new run
    assert [t.name for t in task_runs.list(group, registry, **CALL)] == ["nightly-check"]


def test_acr_agentpool_and_taskrun_commands(tasks_host: TasksHost, base_image: str, tmp_path: Path) -> None:
    created = acr(tasks_host, tmp_path, "agentpool", "create", "-n", "clipool", "--tier", "S1", "-o", "json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["properties"]["count"] == 1
    (tmp_path / "hello.yaml").write_text(
        "version: v1.1.0\nsteps:\n  - cmd: $Registry/base:1 /bin/busybox echo pooled-hello\n"
    )
    ran = acr(tasks_host, tmp_path, "run", "-f", str(tmp_path / "hello.yaml"), "--agent-pool", "clipool", "/dev/null")
    assert ran.returncode == 0 and "pooled-hello" in ran.stdout, ran.stderr + ran.stdout
    unknown = acr(
        tasks_host, tmp_path, "run", "-f", str(tmp_path / "hello.yaml"), "--agent-pool", "nosuch", "/dev/null"
    )
    assert unknown.returncode == 2 and "agent pool 'nosuch' does not exist" in unknown.stderr
    queue = acr(tasks_host, tmp_path, "agentpool", "show-queue-count", "-n", "clipool", "-o", "json")
    assert json.loads(queue.stdout) == {"count": 0}
    scaled = acr(tasks_host, tmp_path, "agentpool", "update", "-n", "clipool", "--count", "0", "-o", "json")
    assert json.loads(scaled.stdout)["properties"]["count"] == 0, scaled.stderr
    listed = acr(tasks_host, tmp_path, "agentpool", "list", "-o", "tsv", "--query", "[].name")
    assert listed.stdout.split() == ["clipool"]
    assert acr(tasks_host, tmp_path, "agentpool", "delete", "-n", "clipool", "--yes").returncode == 0
    assert acr(tasks_host, tmp_path, "agentpool", "show", "-n", "clipool").returncode == 1
    # task runs (made through the SDK test above, or here if it ran alone)
    names = acr(tasks_host, tmp_path, "taskrun", "list", "-o", "tsv", "--query", "[].name").stdout.split()
    if "nightly-check" not in names:
        request = m.EncodedTaskRunRequest(
            encoded_task_content=base64.b64encode(
                b"version: v1.1.0\nsteps:\n  - cmd: $Registry/base:1 /bin/busybox echo task-run-says\n"
            ).decode(),
            platform=m.PlatformProperties(os="Linux"),
        )
        tasks_host.tasks.task_runs.begin_create(
            LOCAL_RESOURCE_GROUP, tasks_host.registry, "nightly-check",
            m.TaskRun(properties=m.TaskRunProperties(run_request=request)), polling_interval=0, **CALL,
        ).result()  # fmt: skip
    shown = json.loads(acr(tasks_host, tmp_path, "taskrun", "show", "-n", "nightly-check", "-o", "json").stdout)
    run_id = shown["properties"]["runResult"]["name"]
    wait_for(tasks_host, run_id)
    logs = acr(tasks_host, tmp_path, "taskrun", "logs", "-n", "nightly-check")
    assert logs.returncode == 0 and "task-run-says" in logs.stdout, logs.stderr
    assert acr(tasks_host, tmp_path, "taskrun", "delete", "-n", "nightly-check", "--yes").returncode == 0
    assert acr(tasks_host, tmp_path, "taskrun", "show", "-n", "nightly-check").returncode == 1
    run = tasks_host.tasks.runs.get(LOCAL_RESOURCE_GROUP, tasks_host.registry, run_id, **CALL)
    assert run.properties.status == "Succeeded"  # the task run's runs stay
