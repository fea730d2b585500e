"""`cmd` steps as containers with podman and runc (services/tasks/containers.py, services/tasks/steps.py),
driven through the StepRunner with a real podman, runc and buildah: an image a step built in the run's
storage runs without a push; the task file's fields reach the container; nothing of the runner's
environment or credentials does; the network choice; the step's timeout, a detached step and a failure
each leave no container behind. No emulator is needed: the image is local to the run's storage.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.tasks.containers import containers_conf, remove_run_directory, run_storage
from services.tasks.execution import StepFailed, registry_files
from services.tasks.network import BuildNetwork, BuildNetworkUnavailable, NetworkPolicy
from services.tasks.steps import StepContext, StepRunner
from services.tasks.taskfile import parse_task_file

pytestmark = pytest.mark.integration

BUSYBOX = Path("/bin/busybox")
RUN_TOKEN = "run-token-never-in-a-container"
DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["/bin/sh", "-c", "echo from-the-image-cmd"]
"""


# What these tests are about is the container, not the network (tests/integration/test_tasks_network.py): none.
NO_NETWORK = BuildNetwork(NetworkPolicy.parse("none", "", "", ""))


@dataclass
class Run:
    workdir: Path
    context: Path
    storage: list[str]
    log: list[str]

    def steps(
        self, task_yaml: str, task_env: list[str] | None = None, network: BuildNetwork = NO_NETWORK
    ) -> StepRunner:
        task = parse_task_file(task_yaml)
        files = registry_files(self.workdir, "reg.azurecr.localhost", "127.0.0.1:9", True, RUN_TOKEN)
        ctx = StepContext(
            self.workdir, self.context, self.storage, files, self.log.append, "amd64", task_env or task.env, network
        )
        return StepRunner(task, ctx)

    def containers(self) -> list[str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CONTAINERS_CONF": str(containers_conf(self.workdir))}
        listed = subprocess.run(
            ["podman", *self.storage, "ps", "--all", "--format", "{{.Names}}"],
            capture_output=True, text=True, env=env, check=True, timeout=60,
        )  # fmt: skip
        return listed.stdout.split()

    def output(self) -> str:
        return "\n".join(self.log)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """A run directory as the runner makes it, with `localhost/tools:1` (busybox) built into its storage by a
    build step, so that the cmd steps find it there."""
    if shutil.which("podman") is None or shutil.which("runc") is None or not BUSYBOX.is_file():
        pytest.fail("podman, runc and /bin/busybox are needed: make apt installs them")
    workdir = tmp_path / "run-cb1-x"
    (workdir / "context").mkdir(parents=True)
    (workdir / "tmp").mkdir()
    context = workdir / "context"
    shutil.copy(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "data.txt").write_text("from-the-context\n")
    ready = Run(workdir, context, run_storage(workdir), [])
    try:
        asyncio.run(ready.steps("steps:\n  - build: -t localhost/tools:1 .\n").run())
        ready.log.clear()
        yield ready
        assert ready.containers() == []  # every test: no container outlives its step
    finally:
        state = (workdir / "state").readlink()
        remove_run_directory(workdir)
        assert not state.exists() and not workdir.exists()


def test_the_task_files_fields_reach_the_container_and_nothing_of_the_runners(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_ONLY_SECRET", "storage-key-of-the-runner")
    task = """
env: [FROM_TASK=t]
steps:
  - id: fields
    cmd: >-
      localhost/tools:1 -c
      'id -u; id -g; pwd; echo "env:$FROM_TASK:$FROM_STEP"; env; ulimit -n; cat /workspace/data.txt'
    entryPoint: /bin/sh
    user: "1234:55"
    workingDirectory: /workspace/made/here
    env: [FROM_STEP=s]
    network: none
  - id: defaults
    cmd: localhost/tools:1
"""
    asyncio.run(run.steps(task, ["FROM_TASK=t"]).run())
    lines = [line.removeprefix("[fields] ") for line in run.log if line.startswith("[fields] ")]
    assert lines[:4] == ["1234", "55", "/workspace/made/here", "env:t:s"]  # made under the context: podman
    # creates a working directory only there (one elsewhere must exist in the image)
    assert "from-the-context" in lines
    # the image's CMD runs when the step gives no command; its working directory is the context
    assert "[defaults] from-the-image-cmd" in run.log
    output = run.output()
    assert "storage-key-of-the-runner" not in output and "RUNNER_ONLY_SECRET" not in output
    assert RUN_TOKEN not in output and "REGISTRY_AUTH_FILE" not in output and "CONTAINERS_CONF" not in output
    # limits no higher than the runner's own (what lets runc set them without CAP_SYS_RESOURCE)
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    expected = 1048576 if hard == resource.RLIM_INFINITY else min(hard, 1048576)
    assert str(expected) in lines


def test_a_volume_is_mounted_read_only_where_the_step_says(run: Run) -> None:
    task = """
volumes:
  - name: config
    secret:
      app.conf: ZnJvbS1hLXZvbHVtZQ==
steps:
  - id: reader
    cmd: localhost/tools:1 sh -c 'cat /etc/app/app.conf; echo; echo x > /etc/app/new || echo read-only'
    user: "1234"
    volumeMounts:
      - name: config
        mountPath: /etc/app
  - id: other
    cmd: localhost/tools:1 sh -c 'test -e /etc/app && echo mounted || echo not-mounted'
"""
    asyncio.run(run.steps(task).run())
    assert "[reader] from-a-volume" in run.log and "[reader] read-only" in run.log
    assert "[other] not-mounted" in run.log  # only the steps that name it


def test_a_steps_container_joins_the_runs_build_network_and_host_mode_is_the_runners(run: Run) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        accepted: list[bytes] = []

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    accepted.append(b"x")
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\nrunner!")

        threading.Thread(target=serve, daemon=True).start()
        probe = f"echo GET | nc -w 3 127.0.0.1 {port} && echo reached || echo unreachable; ip -o -4 addr"
        task = f"""
steps:
  - id: default
    cmd: localhost/tools:1 sh -c '{probe}'
  - id: none
    cmd: localhost/tools:1 sh -c '{probe}'
    network: none
"""
        filtered = BuildNetwork(NetworkPolicy.parse("filtered", "", "", ""))
        filtered.open()
        try:
            asyncio.run(run.steps(task, network=filtered).run())
        finally:
            filtered.close()
        host_mode = BuildNetwork(NetworkPolicy.parse("host", "", "", ""))
        asyncio.run(
            run.steps(f"steps:\n  - id: host\n    cmd: localhost/tools:1 sh -c '{probe}'\n", network=host_mode).run()
        )
    output = run.output()
    assert "[default] unreachable" in output and "[none] unreachable" in output
    assert "[host] runner!reached" in output
    # the default step is in the runner's build namespace (its /30 of 10.233.0.0/16), `none` has loopback only
    assert any(line.startswith("[default]") and " 10.233." in line for line in run.log)
    assert not any(line.startswith("[none]") and "inet 10." in line for line in run.log)
    assert len(accepted) == 1


def test_a_step_over_its_timeout_is_stopped_and_its_container_removed(run: Run) -> None:
    task = "steps:\n  - id: slow\n    cmd: localhost/tools:1 sh -c 'echo started; sleep 600'\n    timeout: 3\n"
    with pytest.raises(StepFailed, match="step slow timed out after 3 seconds"):
        asyncio.run(run.steps(task).run())
    assert "[slow] started" in run.log
    # the fixture's teardown asserts no container is left


def test_a_detached_step_runs_beside_the_next_and_is_stopped_when_the_run_ends(run: Run) -> None:
    task = """
steps:
  - id: server
    cmd: localhost/tools:1 sh -c 'echo serving > /workspace/served; sleep 600'
    detach: true
  - id: client
    cmd: localhost/tools:1 sh -c 'for i in $(seq 50); do test -f served && break; sleep 0.2; done; cat served'
"""
    asyncio.run(run.steps(task).run())
    assert "[client] serving" in run.log


def test_a_failing_command_or_a_missing_image_fails_the_step_with_its_output(run: Run) -> None:
    failing = "steps:\n  - id: bad\n    cmd: localhost/tools:1 sh -c 'echo going-down; exit 3'\n"
    with pytest.raises(StepFailed, match="step bad: the command failed"):
        asyncio.run(run.steps(failing).run())
    assert "[bad] going-down" in run.log
    missing = "steps:\n  - id: gone\n    cmd: localhost/nothing-here:1 true\n"
    with pytest.raises(StepFailed, match="the image localhost/nothing-here:1 could not be used"):
        asyncio.run(run.steps(missing).run())
    for refused in ("container:other", "ns:/proc/1/ns/net", "slirp4netns", "my-net"):
        with pytest.raises(StepFailed, match="is not supported"):
            asyncio.run(run.steps(f"steps:\n  - cmd: localhost/tools:1 true\n    network: {refused}\n").run())


def test_the_network_decision() -> None:
    assert NO_NETWORK.container_arguments(None) == ["--network", "none"]
    assert NO_NETWORK.container_arguments("host") == ["--network", "none"]  # a step cannot widen the run's
    host_mode = BuildNetwork(NetworkPolicy.parse("host", "", "", ""))
    assert host_mode.container_arguments(None) == ["--network", "host"]
    assert host_mode.container_arguments("none") == ["--network", "none"]
    filtered = BuildNetwork(NetworkPolicy.parse("filtered", "", "", ""))
    with pytest.raises(BuildNetworkUnavailable):  # not set up: never the runner's network instead
        filtered.container_arguments(None)
