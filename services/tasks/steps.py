"""The steps of a multi-step run (services/tasks/taskfile.py), executed in dependency order: a step starts once
every step its `when` names has succeeded, so steps with no dependency between them run at once.

    build  buildah build (chroot isolation) in the step's context directory, tagged as the step says; the
           runner pulls its FROM images first, the build itself runs in the build network with --pull=never
    push   buildah push of images built earlier, to this registry through /v2/ with the run's token
    cmd    the image as a container of its own with podman and runc (services/tasks/containers.py) in the
           run's build network (`network: none`: no network at all; services/tasks/network.py), the run's
           context mounted at /workspace (its working directory unless the step names another), removed when
           the step ends; `acr purge ...` (ACR's acr-cli image) runs our own purge instead
           (services/tasks/builtin.py)

A step that fails is retried `retries` times `retryDelay` seconds apart; its timeout fails it. When a step
fails, the steps that wait on it never start and the run is Failed with the step named (unless the step
has `ignoreErrors`). Detached cmd steps run in the background until the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.tasks.containers import container_name, containers_conf
from services.tasks.context import pulled_images
from services.tasks.execution import RegistryAccess, StepFailed, pull_images, run_command, split_image
from services.tasks.network import BuildNetwork
from services.tasks.taskfile import Step, TaskFile


@dataclass
class StepContext:
    workdir: Path
    context: Path
    storage: list[str]
    files: RegistryAccess
    write: Any  # (line) -> None: the run's log
    architecture: str
    task_env: list[str]
    network: BuildNetwork  # what RUN steps and cmd steps reach (TASKS_BUILD_NETWORK)
    # a `cmd: acr ...` step (services/tasks/builtin.py): (arguments after `acr`, output) -> done or StepFailed
    acr: Callable[[list[str], Callable[[str], None]], Awaitable[None]] | None = None
    # why this run pushes nothing and runs no `acr` command (a fork's pull request), else None
    refused: str | None = None


class StepRunner:
    def __init__(self, task: TaskFile, ctx: StepContext) -> None:
        self.task, self.ctx = task, ctx
        self.pushed: list[dict[str, Any]] = []
        self._done: dict[str, asyncio.Future[bool]] = {}
        self._detached: list[asyncio.Task[None]] = []
        self._volumes: dict[str, Path] = {}  # volume name -> its files, written once per run

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._done = {step.id: loop.create_future() for step in self.task.steps}
        tasks = [asyncio.create_task(self._step(step)) for step in self.task.steps]
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            for detached in self._detached:
                detached.cancel()
            for detached in self._detached:
                with contextlib.suppress(BaseException):
                    await detached
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, StepFailed):
                raise failure
        if failures:
            raise failures[0]

    async def _step(self, step: Step) -> None:
        future = self._done[step.id]
        try:
            for dependency in step.when:
                if not await asyncio.shield(self._done[dependency]):
                    self.ctx.write(f"Step ID: {step.id} skipped: step {dependency} did not succeed")
                    future.set_result(False)
                    return
            if step.start_delay:
                await asyncio.sleep(step.start_delay)
            self.ctx.write(f"Executing step ID: {step.id}. Timeout(sec): {step.timeout}")
            await self._attempts(step)
        except StepFailed:
            future.set_result(step.ignore_errors)
            if not step.ignore_errors:
                raise
            self.ctx.write(f"Step ID: {step.id} failed; its errors are ignored")
            return
        except BaseException:
            if not future.done():
                future.set_result(False)
            raise
        self.ctx.write(f"Step ID: {step.id} marked as successful")
        future.set_result(True)

    async def _attempts(self, step: Step) -> None:
        for attempt in range(step.retries + 1):
            try:
                async with asyncio.timeout(step.timeout):
                    await self._execute(step)
                return
            except TimeoutError:
                failure = StepFailed(f"step {step.id} timed out after {step.timeout} seconds")
            except StepFailed as error:
                failure = error
            if attempt < step.retries:
                self.ctx.write(f"Step ID: {step.id} failed ({failure}); retrying in {step.retry_delay} s")
                await asyncio.sleep(step.retry_delay)
        raise failure

    async def _execute(self, step: Step) -> None:
        if step.kind == "build":
            await self._build(step)
        elif step.kind == "push" and self.ctx.refused is not None:
            self.ctx.write(f"Step ID: {step.id}: push skipped ({self.ctx.refused}: nothing is pushed)")
        elif step.kind == "push":
            await self._push(step)
        elif step.cmd and step.cmd[0] == "acr":  # ACR's acr-cli image: our own purge, in the runner
            if self.ctx.refused is not None:
                raise StepFailed(f"step {step.id}: the acr command does not run here ({self.ctx.refused})")
            if self.ctx.acr is None:
                raise StepFailed(f"step {step.id}: the acr command does not run here")
            await self.ctx.acr(step.cmd[1:], self._output(step))
        elif step.detach:
            self._detached.append(asyncio.create_task(self._detached_cmd(step)))
        else:
            await self._cmd(step)

    def _output(self, step: Step) -> Any:
        return lambda line: self.ctx.write(f"[{step.id}] {line.rstrip()}")

    async def _command(self, step: Step, argv: list[str], failure: str) -> None:
        env = self.ctx.files.env(self.ctx.workdir)
        if await run_command(argv, env, self.ctx.workdir, self._output(step)) != 0:
            raise StepFailed(failure)

    # --- build ----------------------------------------------------------------------------------------
    async def _build(self, step: Step) -> None:
        assert step.build is not None
        ctx, args = self.ctx, step.build
        directory = (ctx.context / args.context).resolve()
        dockerfile = (directory / args.dockerfile).resolve()
        if not dockerfile.is_relative_to(ctx.context.resolve()) or not dockerfile.is_file():
            raise StepFailed(f"step {step.id}: the Dockerfile {args.dockerfile!r} is not in the context")
        build_args = dict(a.split("=", 1) for a in args.build_args if "=" in a)
        images = pulled_images(dockerfile.read_text(errors="replace"), build_args)
        platform = f"linux/{ctx.architecture}"
        await pull_images(ctx.storage, ctx.files, images, platform, ctx.workdir, self._output(step))
        argv = ["buildah", *ctx.storage, "build", "--isolation", "chroot", "--signature-policy", str(ctx.files.policy)]
        argv += ["--file", str(dockerfile), "--platform", platform, "--pull=never"]
        if ctx.files.insecure:
            argv.append("--tls-verify=false")
        if args.no_cache:
            argv.append("--no-cache")
        if args.target:
            argv += ["--target", args.target]
        for value in args.build_args:
            argv += ["--build-arg", value]
        for image in args.images or [f"localhost/{step.id}:latest"]:
            argv += ["--tag", image]
        argv.append(str(directory))
        await self._command(step, ctx.network.wrap(argv), f"step {step.id}: the build failed")

    # --- push -----------------------------------------------------------------------------------------
    async def _push(self, step: Step) -> None:
        ctx = self.ctx
        for image in step.push:
            repository = _in_registry(image, ctx.files)
            if repository is None:
                await self._push_elsewhere(step, image)
                continue
            name, tag = split_image(repository)
            digest_file = ctx.workdir / f"digest-{step.id}"
            argv = ["buildah", *ctx.storage, "push", "--signature-policy", str(ctx.files.policy)]
            argv += ["--digestfile", str(digest_file), "--authfile", str(ctx.files.auth_file)]
            if ctx.files.insecure:
                argv.append("--tls-verify=false")
            argv += [image, f"docker://{ctx.files.reference(name, tag)}"]
            ctx.write(f"Pushing {image}")
            await self._command(step, argv, f"step {step.id}: the push of {image} failed")
            digest = digest_file.read_text().strip()
            self.pushed.append({"registry": ctx.files.login_server, "repository": name, "tag": tag, "digest": digest})

    async def _push_elsewhere(self, step: Step, image: str) -> None:
        """Push to another registry, with the credentials the task names for it (credentials.customRegistries)."""
        ctx = self.ctx
        server = ctx.files.other_registry(image)
        if server is None:
            raise StepFailed(f"step {step.id}: {image} is not in this registry and the task has no credentials for it")
        digest_file = ctx.workdir / f"digest-{step.id}"
        argv = ["buildah", *ctx.storage, "push", "--signature-policy", str(ctx.files.policy)]
        argv += ["--digestfile", str(digest_file), "--authfile", str(ctx.files.auth_file)]
        if server in ctx.files.insecure_others:
            argv.append("--tls-verify=false")
        argv += [image, f"docker://{image}"]
        ctx.write(f"Pushing {image}")
        await self._command(step, argv, f"step {step.id}: the push of {image} failed")
        name, tag = split_image(image[len(server) + 1 :])
        digest = digest_file.read_text().strip()
        self.pushed.append({"registry": server, "repository": name, "tag": tag, "digest": digest})

    # --- cmd ------------------------------------------------------------------------------------------
    async def _cmd(self, step: Step) -> None:
        """The image as a container (services/tasks/containers.py): podman and runc, removed at the end."""
        ctx = self.ctx
        image, arguments = step.cmd[0], step.cmd[1:]
        if step.network not in (None, "host", "none"):
            raise StepFailed(
                f"step {step.id}: network {step.network!r} is not supported (host: the run's build network; none)"
            )
        network = ctx.network.container_arguments(step.network)
        env = ctx.files.env(ctx.workdir) | {"CONTAINERS_CONF": str(containers_conf(ctx.workdir))}
        name = container_name(ctx.workdir, step.id)
        podman = ["podman", *ctx.storage]
        create = [*podman, "create", "--name", name, "--signature-policy", str(ctx.files.policy), "--pull", "missing"]
        if ctx.files.insecure:
            create.append("--tls-verify=false")
        create += ["--log-driver", "none", *network]
        create += ["--volume", f"{ctx.context}:/workspace", "--workdir", step.working_directory or "/workspace"]
        for value in [*ctx.task_env, *step.env]:
            create += ["--env", value]
        if step.user:
            create += ["--user", step.user]
        if step.entry_point:
            create += ["--entrypoint", step.entry_point]
        for mount in step.volume_mounts:
            create += ["--volume", f"{self._volume_directory(mount.name)}:{mount.path}:ro"]
        create += [image, *arguments]
        try:
            lines: list[str] = []
            if await run_command(create, env, ctx.workdir, lines.append) != 0:
                for line in lines:
                    self._output(step)(line)
                raise StepFailed(f"step {step.id}: the image {image} could not be used")
            for line in lines[:-1]:  # the pull's progress; the last line is the container's id
                self._output(step)(line)
            start = [*podman, "start", "--attach", name]
            await self._command_env(step, start, env, f"step {step.id}: the command failed")
        finally:
            # also after a timeout or a cancel: killing `podman start` leaves the container running
            remove = [*podman, "rm", "--force", "--ignore", "--time", "0", name]
            with contextlib.suppress(Exception):
                await asyncio.shield(run_command(remove, env, ctx.workdir, lambda _line: None))

    def _volume_directory(self, name: str) -> Path:
        """A volume of the task file (`volumes: [{name, secret: {file: base64}}]`) as a directory of the run,
        mounted read-only by the cmd steps whose `volumeMounts` name it."""
        directory = self._volumes.get(name)
        if directory is None:
            directory = self.ctx.workdir / "volumes" / str(len(self._volumes))
            directory.mkdir(parents=True)
            for file_name, content in self.task.volumes[name].items():
                path = directory / file_name
                path.write_bytes(content)
                path.chmod(0o444)  # readable by whatever user the step runs as
            self._volumes[name] = directory
        return directory

    async def _command_env(self, step: Step, argv: list[str], env: dict[str, str], failure: str) -> None:
        if await run_command(argv, env, self.ctx.workdir, self._output(step)) != 0:
            raise StepFailed(failure)

    async def _detached_cmd(self, step: Step) -> None:
        with contextlib.suppress(StepFailed):
            await self._cmd(step)


def _in_registry(image: str, files: RegistryAccess) -> str | None:
    for prefix in (files.login_server, files.address):
        if image.lower().startswith(prefix.lower() + "/"):
            return image[len(prefix) + 1 :]
    return None
