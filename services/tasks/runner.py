"""The task runner: takes runs off the `task-runs` queue and executes them (`python -m services.tasks runner`).

Functions cannot run builds, so the runner is its own process: in Azure a Container Apps job running this
package (one execution per run, the isolation boundary); locally `make run` starts one. Per run:

    claim       Queued -> Running under the run's ETag (a message delivered twice runs once; a run found
                Running was left by a runner that died: Error, since its builds cannot be resumed)
    context     the uploaded .tar.gz, size-checked, every member checked (services/tasks/context.py)
    token       a refresh token of the run alone: pull on the base images of this registry, pull and push on
                the run's images, lapsing with the run's timeout (services/auth/service.py run_token)
    build       buildah, no daemon (`--isolation chroot --storage-driver vfs`), a containers/storage root of
                the run's own, an environment with nothing of the runner's (no storage keys, no signing keys);
                base images pulled by the runner, the build in the build network (services/tasks/network.py:
                no metadata address, no host, no private addresses), `--pull=never`
    push        buildah push through the registry's own /v2/ API with that token: never storage directly
    finish      Succeeded / Failed (a step failed) / Timeout / Canceled / Error (ours), output images with
                their digests, the base images with theirs

The log is an append blob written as the run goes (flushed every half second), secret values masked. One
run's failure, timeout or cancel never stops the runner: each run is its own task, every exception of it is
the run's Error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from services.auth.service import REFRESH_TOKEN_USER, AuthService
from services.management.store import RegistryDoc, RegistryStore
from services.platform.blobs import BlobStore
from services.platform.cosmos import ConcurrentUpdate, Cosmos, utcnow
from services.platform.secrets import SecretBox, secret_box
from services.platform.settings import Settings
from services.platform.telemetry import telemetry
from services.tasks.builtin import run_acr
from services.tasks.containers import remove_run_directory, run_storage
from services.tasks.context import ContextInvalid, ContextLimits, base_images, extract_context, pulled_images
from services.tasks.credentials import CredentialsUnavailable, VaultResolver, resolve_credentials
from services.tasks.execution import (
    RegistryAccess,
    StepFailed,
    local_repository,
    pull_images,
    registry_files,
    run_command,
    split_image,
)
from services.tasks.gitsource import (
    FetchLimits,
    GitFetchFailed,
    GitSourceInvalid,
    fetch_source,
    is_git_url,
    parse_git_url,
)
from services.tasks.models import TERMINAL, RunDoc, RunStatus, SetValue
from services.tasks.network import BuildNetwork, BuildNetworkUnavailable, NetworkPolicy, NetworkPolicyInvalid
from services.tasks.pools import release_slot, take_slot
from services.tasks.queue import ReceivedRun, RunQueue
from services.tasks.scheduling import (
    RunRequestInvalid,
    decode_text,
    secret_context,
    values_of,
)
from services.tasks.steps import StepContext, StepRunner
from services.tasks.store import RunStore
from services.tasks.taskfile import MAX_TASK_FILE_BYTES, TaskFile, TaskFileInvalid, parse_task_file
from services.tasks.variables import RunVariables, VariableUnknown, render

log = logging.getLogger("tasks")

HEARTBEAT_SECONDS = 30  # the queue message is kept invisible this long at a time while its run goes on
INVISIBLE_SECONDS = 120
LOG_FLUSH_SECONDS = 0.5


class RunCanceled(Exception):
    pass


# --- the log ------------------------------------------------------------------------------------------------
RESTRICTED_NOTE = (
    "Restricted run (a pull request from a fork): no secrets, no other registries' credentials, "
    "pull-only access to this registry, nothing pushed"
)
RESTRICTED_REFUSAL = "a pull request from a fork runs restricted"


def pull_only(access: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The grants of a restricted run: pull, never push (nor anything else)."""
    return [{**grant, "actions": ["pull"]} for grant in access if "pull" in grant.get("actions", [])]


class RunLog:
    """The run's append blob, written as the run goes; secret values never reach it."""

    def __init__(self, blobs: BlobStore, registry: str, path: str, secrets: Sequence[str] = ()) -> None:
        self._blobs, self._registry, self._path = blobs, registry, path
        self._secrets = sorted((s for s in secrets if s), key=len, reverse=True)
        self._pending: list[str] = []
        self._unsent = b""  # taken from _pending, not yet appended (an append failed)
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        await self._blobs.create_append(self._registry, self._path)
        self._flusher = asyncio.create_task(self._flush_loop())

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def write(self, line: str) -> None:
        self._pending.append(self.mask(line.rstrip("\n")) + "\n")

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_SECONDS)
            with contextlib.suppress(Exception):
                # shielded: close() cancels this loop, and a cancel mid-append would lose those lines
                await asyncio.shield(self.flush())

    async def flush(self) -> None:
        """Append what was written since; what an append failed to take stays for the next flush (a line
        may then appear twice, never go missing)."""
        async with self._lock:
            if not self._pending and not self._unsent:
                return
            data, self._pending = self._unsent + "".join(self._pending).encode(), []
            self._unsent = data
            # An append block holds at most 4 MiB.
            for start in range(0, len(data), 4 * 1024 * 1024):
                await self._blobs.append(self._registry, self._path, data[start : start + 4 * 1024 * 1024])
                self._unsent = data[start + 4 * 1024 * 1024 :]

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for attempt in range(5):  # the end of the log (the outcome) is worth a few tries
            try:
                await self.flush()
                return
            except Exception:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.5 * (attempt + 1))


# --- the runner -----------------------------------------------------------------------------------------------
class Runner:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metadata = Cosmos(settings)
        self.blobs = BlobStore(settings)
        self.queue = RunQueue(settings)
        self.runs = RunStore(self.metadata)
        self.auth = AuthService(settings, self.metadata)
        self.box: SecretBox = secret_box(settings.secrets_keys, settings.secrets_keys_file)
        self._slots = asyncio.Semaphore(max(1, settings.tasks_concurrency))
        self._running: set[asyncio.Task[None]] = set()
        self.network: BuildNetwork | None = None
        self._network_invalid: str | None = None
        self._network_lock = asyncio.Lock()
        try:
            policy = NetworkPolicy.parse(
                settings.tasks_build_network,
                settings.tasks_build_network_allow,
                settings.tasks_build_network_deny,
                settings.tasks_build_dns,
            )
            self.network = BuildNetwork(policy)
        except NetworkPolicyInvalid as error:
            self._network_invalid = str(error)

    async def open(self) -> None:
        await self.metadata.open()
        await self.blobs.open()
        await self.queue.open()
        if self.settings.tasks_build_network == "host":
            log.warning(
                "TASKS_BUILD_NETWORK=host: RUN steps and cmd steps share this runner's network UNFILTERED; they "
                "can reach the metadata address, this host's loopback and every private address"
            )
        try:
            await self.build_network()
        except BuildNetworkUnavailable as error:
            log.error("build network: %s; every run ends Error until this is fixed", error)

    async def build_network(self) -> BuildNetwork:
        """The build network, set up on first use (again after a failure: a run ends Error, never unfiltered)."""
        if self.network is None:
            raise BuildNetworkUnavailable(f"{self._network_invalid}")
        async with self._network_lock:
            if not self.network.ready:
                await asyncio.to_thread(self.network.open)
        return self.network

    async def close(self) -> None:
        for task in list(self._running):
            task.cancel()
        for task in list(self._running):
            with contextlib.suppress(BaseException):
                await task
        if self.network is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.network.close)
        await self.queue.close()
        await self.blobs.close()
        await self.metadata.close()

    async def serve(self, stop: asyncio.Event) -> None:
        """Take runs off the queue until `stop` is set; at most `tasks_concurrency` at once."""
        while not stop.is_set():
            await self._slots.acquire()
            try:
                received = await self.queue.receive(INVISIBLE_SECONDS)
            except Exception:
                self._slots.release()
                log.exception("receiving from the run queue failed")
                await _sleep_or_stop(stop, 2.0)
                continue
            if received is None:
                self._slots.release()
                await _sleep_or_stop(stop, 0.5)
                continue
            task = asyncio.create_task(self.handle(received))
            self._running.add(task)

            def finished(done: asyncio.Task[None]) -> None:
                self._running.discard(done)
                self._slots.release()

            task.add_done_callback(finished)

    async def handle(self, received: ReceivedRun) -> None:
        """One queue message: run it (at most once), then complete the message. Never raises.

        A run for an agent pool first takes one of the pool's slots; when all are held its message goes back
        out of sight for TASKS_POOL_WAIT_SECONDS and the run stays Queued (nothing is lost: the message is
        only completed once the run has ended)."""
        registry, run_id = received.message.registry, received.message.runId
        heartbeat = asyncio.create_task(self._keep_invisible(received))
        pool: str | None = None
        try:
            pool, start = await self._enter_pool(registry, run_id)
            if not start:
                heartbeat.cancel()
                await self.queue.keep_invisible(received, max(1, self.settings.tasks_pool_wait_seconds))
                return
            await self.execute(registry, run_id)
            heartbeat.cancel()
            await self.queue.complete(received)
        except Exception:
            log.exception("run %s/%s: the runner failed", registry, run_id)
        finally:
            heartbeat.cancel()
            if pool is not None:
                with contextlib.suppress(Exception):  # else the next runner finding the pool full takes it back
                    await release_slot(self.metadata, registry, pool, run_id)

    async def _enter_pool(self, registry: str, run_id: str) -> tuple[str | None, bool]:
        """(the pool whose slot this run holds, whether it may start now). A run of a deleted pool ends in
        Error; one found Running again (its runner died) is left to execute(), which ends it."""
        run = await self.runs.get(registry, run_id)
        if run is None or run.agentPoolName is None or run.status != "Queued":
            return None, True
        slot = await take_slot(self.metadata, registry, run.agentPoolName, run_id)
        if slot == "gone":
            await self._finish(registry, run_id, "Error", f"agent pool {run.agentPoolName} no longer exists", {})
            return None, True
        if slot == "full":
            return None, False
        return run.agentPoolName, True

    async def _keep_invisible(self, received: ReceivedRun) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            with contextlib.suppress(Exception):
                await self.queue.keep_invisible(received, INVISIBLE_SECONDS)

    # --- one run ----------------------------------------------------------------------------------------
    async def execute(self, registry_name: str, run_id: str) -> RunDoc | None:
        run = await self._claim(registry_name, run_id)
        if run is None:
            return None
        registry = await RegistryStore(self.metadata).get_registry(registry_name)
        secrets = self._secret_values(run)
        if run.sourceToken:
            secrets.append(self.box.open(run.sourceToken, secret_context(run.registry, run.runId)).decode())
        others: dict[str, tuple[str, str]] = {}
        unavailable: str | None = None
        try:
            resolver = VaultResolver(self.settings.tasks_vault_secrets_file)
            context = secret_context(run.registry, run.runId)
            others = resolve_credentials(run.customRegistries, self.box, context, resolver)
        except CredentialsUnavailable as error:
            unavailable = str(error)
        secrets += [value for pair in others.values() for value in pair]
        run_log = RunLog(self.blobs, registry_name, run.logPath, secrets)
        await run_log.open()
        status: RunStatus = "Error"
        message: str | None = None
        outcome: dict[str, Any] = {}
        timeout = int(run.request.get("timeout", 3600))
        try:
            if registry is None:
                raise StepFailed("the registry no longer exists")
            run_log.write(f"Run ID: {run_id} on registry {registry.loginServer}")
            if unavailable is not None:
                raise StepFailed(unavailable)
            if others:
                run_log.write(f"Credentials for: {', '.join(sorted(others))}")
            network = await self.build_network()
            run_log.write(network.describe())
            if run.request.get("type") == "DockerBuildRequest":
                work = self._quick_build(run, registry, run_log, outcome, others, network)
            else:
                work = self._task_run(run, registry, run_log, outcome, others, network)
            status, message = await self._supervise(run, work, timeout)
        except StepFailed as failure:
            status, message = "Failed", str(failure)
        except BuildNetworkUnavailable as error:  # fail closed: nothing builds on an unfiltered network
            status, message = "Error", str(error)
        except Exception as error:
            log.exception("run %s/%s failed in the runner", registry_name, run_id)
            status, message = "Error", f"the runner failed: {type(error).__name__}"
        if message:
            run_log.write(message)
        ended = "was successful" if status == "Succeeded" else f"ended: {status}"
        run_log.write(f"Run ID: {run_id} {ended}")
        with contextlib.suppress(Exception):
            await run_log.close()
        return await self._finish(registry_name, run_id, status, message, outcome)

    async def _claim(self, registry: str, run_id: str) -> RunDoc | None:
        for _ in range(10):
            run = await self.runs.get(registry, run_id)
            if run is None or run.status in TERMINAL:
                return None
            if run.status in ("Started", "Running"):
                # Its runner died mid-run (else this message would still be invisible): builds do not resume.
                await self._finish(registry, run_id, "Error", "the runner executing this run stopped", {})
                return None
            now = utcnow()
            run.status, run.startTime, run.lastUpdatedTime, run.attempts = "Running", now, now, run.attempts + 1
            try:
                return await self.runs.replace(run)
            except ConcurrentUpdate:
                continue
        return None

    async def _finish(
        self, registry: str, run_id: str, status: RunStatus, message: str | None, outcome: dict[str, Any]
    ) -> RunDoc | None:
        for _ in range(20):
            run = await self.runs.get(registry, run_id)
            if run is None:
                return None
            if run.status in TERMINAL:
                return run
            now = utcnow()
            run.status, run.finishTime, run.lastUpdatedTime, run.runErrorMessage = status, now, now, message
            run.outputImages = outcome.get("outputImages", run.outputImages)
            run.baseImages = outcome.get("baseImages", run.baseImages)
            run.sourceCommit = outcome.get("sourceCommit", run.sourceCommit)
            try:
                finished = await self.runs.replace(run)
            except ConcurrentUpdate:
                continue  # a cancel request landed meanwhile: read again
            observe_run_duration(finished)
            return finished
        return None

    def _secret_values(self, run: RunDoc) -> list[str]:
        """The run's secret values, opened (in the order of its arguments and values; its source token last)."""
        values: list[str] = []
        for argument in run.request.get("arguments", []) + run.request.get("values", []):
            if argument.get("isSecret"):
                sealed = str(argument.get("value", ""))
                values.append(self.box.open(sealed, secret_context(run.registry, run.runId)).decode())
        return values

    async def _supervise(self, run: RunDoc, work: Awaitable[None], limit_seconds: int) -> tuple[RunStatus, str | None]:
        """Run `work` until it ends, the run's timeout passes (Timeout) or a cancel is asked for (Canceled)."""
        task = asyncio.ensure_future(work)
        watcher = asyncio.create_task(self._watch_cancel(run))
        try:
            done, _ = await asyncio.wait({task, watcher}, timeout=limit_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if task in done:
            task.result()  # StepFailed / other errors propagate
            return "Succeeded", None
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        if watcher in done and not watcher.cancelled() and watcher.exception() is None:
            return "Canceled", "the run was canceled"
        return "Timeout", f"the run exceeded its timeout of {limit_seconds} seconds"

    async def _watch_cancel(self, run: RunDoc) -> None:
        while True:
            await asyncio.sleep(self.settings.tasks_poll_seconds)
            with contextlib.suppress(Exception):
                current = await self.runs.get(run.registry, run.runId)
                if current is None or current.cancelRequested:
                    return

    # --- quick build ------------------------------------------------------------------------------------
    async def _quick_build(
        self,
        run: RunDoc,
        registry: RegistryDoc,
        run_log: RunLog,
        outcome: dict[str, Any],
        others: dict[str, tuple[str, str]],
        network: BuildNetwork,
    ) -> None:
        request = run.request
        workdir = make_workdir(self.settings.tasks_work_dir, run.runId)
        context = workdir / "context"
        try:
            commit, branch = await self._fetch_context(run, context, workdir / "context.tar.gz", run_log, outcome)
            dockerfile = (context / request["dockerFilePath"]).resolve()
            if not dockerfile.is_relative_to(context.resolve()) or not dockerfile.is_file():
                raise StepFailed(f"the Dockerfile {request['dockerFilePath']!r} is not in the context")
            secrets = self._secret_values(run)
            arguments = [(a["name"], a["value"]) for a in request.get("arguments", []) if not a.get("isSecret")]
            arguments += [
                (a["name"], value)
                for a, value in zip(
                    [a for a in request.get("arguments", []) if a.get("isSecret")], secrets, strict=True
                )
            ]
            variables = RunVariables(
                run.runId,
                registry.loginServer,
                registry.registry,
                architecture=(request.get("platform") or {}).get("architecture") or "amd64",
                commit=commit,
                branch=branch,
            )
            try:
                images = [split_image(render(name, variables)) for name in request.get("imageNames", [])]
            except VariableUnknown as error:
                raise StepFailed(str(error)) from error
            bases = base_images(dockerfile.read_text(errors="replace"), dict(arguments))
            # The runner reaches the default registry at TASKS_REGISTRY_ADDRESS locally; every other at its
            # login server. FROM may name the registry either way.
            address = registry.loginServer
            if self.settings.tasks_registry_address and registry.registry == self.settings.default_registry:
                address = self.settings.tasks_registry_address
            local_bases = [
                b for i in bases if (b := local_repository(i, registry.loginServer) or local_repository(i, address))
            ]
            access = [{"type": "repository", "name": r, "actions": ["pull"]} for r, _ in local_bases]
            access += [{"type": "repository", "name": r, "actions": ["pull", "push"]} for r, _ in images]
            if run.restricted:
                access = pull_only(access)
                run_log.write(RESTRICTED_NOTE)
            token = self.auth.run_token(registry, run.runId, access, int(request.get("timeout", 3600)) + 300)
            insecure = address != registry.loginServer
            files = registry_files(
                workdir, registry.loginServer, address, insecure, token, others, self._insecure_registries()
            )
            outcome["baseImages"] = await self._base_digests(files, bases)
            storage = run_storage(workdir)
            tags = [f"{registry.loginServer}/{repository}:{tag}" for repository, tag in images] or [f"run-{run.runId}"]
            platform = f"linux/{variables.architecture}"
            pulls = pulled_images(dockerfile.read_text(errors="replace"), dict(arguments))
            await pull_images(storage, files, pulls, platform, workdir, run_log.write)
            argv = ["buildah", *storage, "build", "--isolation", "chroot", "--signature-policy", str(files.policy)]
            argv += ["--file", str(dockerfile), "--platform", platform, "--pull=never"]
            if files.insecure:
                argv.append("--tls-verify=false")
            if request.get("noCache"):
                argv.append("--no-cache")
            if request.get("target"):
                argv += ["--target", str(request["target"])]
            for name, value in arguments:
                argv += ["--build-arg", f"{name}={value}"]
            for tag in tags:
                argv += ["--tag", tag]
            argv.append(str(context))
            run_log.write(f"Building {', '.join(tags)} (buildah, chroot isolation)")
            env = files.env(workdir)
            if await run_command(network.wrap(argv), env, workdir, run_log.write) != 0:
                raise StepFailed("the build failed")
            pushed: list[dict[str, Any]] = []
            if request.get("isPushEnabled", True):
                for (repository, tag), local in zip(images, tags, strict=False):
                    digest_file = workdir / "digest"
                    push = ["buildah", *storage, "push", "--signature-policy", str(files.policy)]
                    push += ["--digestfile", str(digest_file), "--authfile", str(files.auth_file)]
                    if files.insecure:
                        push.append("--tls-verify=false")
                    push += [local, f"docker://{files.reference(repository, tag)}"]
                    run_log.write(f"Pushing {registry.loginServer}/{repository}:{tag}")
                    if await run_command(push, env, workdir, run_log.write) != 0:
                        raise StepFailed(f"the push of {repository}:{tag} failed")
                    digest = digest_file.read_text().strip()
                    run_log.write(f"{registry.loginServer}/{repository}:{tag}: digest: {digest}")
                    pushed.append(
                        {"registry": registry.loginServer, "repository": repository, "tag": tag, "digest": digest}
                    )
            outcome["outputImages"] = pushed
        finally:
            await asyncio.to_thread(remove_run_directory, workdir)

    def _insecure_registries(self) -> frozenset[str]:
        return frozenset(s.strip().lower() for s in self.settings.tasks_insecure_registries.split(",") if s.strip())

    def _registry_address(self, registry: RegistryDoc) -> str:
        """The runner reaches the default registry at TASKS_REGISTRY_ADDRESS locally; every other at its login
        server."""
        if self.settings.tasks_registry_address and registry.registry == self.settings.default_registry:
            return self.settings.tasks_registry_address
        return registry.loginServer

    # --- multi-step runs ----------------------------------------------------------------------------------
    async def _task_run(
        self,
        run: RunDoc,
        registry: RegistryDoc,
        run_log: RunLog,
        outcome: dict[str, Any],
        others: dict[str, tuple[str, str]],
        network: BuildNetwork,
    ) -> None:
        request = run.request
        workdir = await asyncio.to_thread(make_workdir, self.settings.tasks_work_dir, run.runId)
        context = workdir / "context"
        try:
            commit = branch = ""
            if request.get("sourceLocation"):
                commit, branch = await self._fetch_context(run, context, workdir / "context.tar.gz", run_log, outcome)
            if request["type"] == "EncodedTaskRunRequest":
                text = decode_text(request["encodedTaskContent"], "encodedTaskContent")
                encoded_values = request.get("encodedValuesContent")
                values_text = decode_text(encoded_values, "encodedValuesContent") if encoded_values else None
            else:
                text = _context_file(context, request["taskFilePath"], "the task file")
                values_path = request.get("valuesFilePath")
                values_text = _context_file(context, values_path, "the values file") if values_path else None
            secrets = iter(self._secret_values(run))
            given = [
                SetValue(name=v["name"], value=next(secrets) if v.get("isSecret") else v["value"])
                for v in request.get("values", [])
            ]
            architecture = (request.get("platform") or {}).get("architecture") or "amd64"
            try:
                values = values_of(given, values_text)
                variables = RunVariables(
                    run.runId, registry.loginServer, registry.registry, architecture=architecture, values=values,
                    commit=commit, branch=branch,
                )  # fmt: skip
                task = parse_task_file(render(text, variables))
            except (TaskFileInvalid, VariableUnknown, RunRequestInvalid) as error:
                raise StepFailed(f"the task file is invalid: {error}") from error
            address = self._registry_address(registry)
            access = self._task_access(task, context, registry.loginServer, address)
            if run.restricted:
                access = pull_only(access)
                run_log.write(RESTRICTED_NOTE)
            token = self.auth.run_token(registry, run.runId, access, int(request.get("timeout", 3600)) + 300)
            files = registry_files(
                workdir, registry.loginServer, address, address != registry.loginServer, token, others,
                self._insecure_registries(),
            )  # fmt: skip
            storage = run_storage(workdir)
            lifetime = int(request.get("timeout", 3600)) + 300

            async def acr(arguments: list[str], output: Callable[[str], None]) -> None:
                def mint(grants: list[dict[str, Any]]) -> str:
                    return self.auth.run_token(registry, run.runId, grants, lifetime)

                await run_acr(arguments, registry.loginServer, address, files.insecure, mint, output)

            step_context = StepContext(
                workdir, context, storage, files, run_log.write, architecture, task.env, network,
                None if run.restricted else acr,
                refused=RESTRICTED_REFUSAL if run.restricted else None,
            )  # fmt: skip
            steps = StepRunner(task, step_context)
            try:
                await steps.run()
            finally:
                outcome["outputImages"] = steps.pushed
        finally:
            await asyncio.to_thread(remove_run_directory, workdir)

    @staticmethod
    def _task_access(task: TaskFile, context: Path, login_server: str, address: str) -> list[dict[str, Any]]:
        """What the run's token grants: push (and pull) on what its steps build or push in this registry,
        pull on the images its cmd steps run and its builds start FROM."""
        push: set[str] = set()
        pull: set[str] = set()

        def repository(image: str) -> str | None:
            found = local_repository(image, login_server) or local_repository(image, address)
            return found[0] if found else None

        for step in task.steps:
            images: list[str] = []
            if step.build is not None:
                images = step.build.images
                dockerfile = context / step.build.context / step.build.dockerfile
                if dockerfile.is_file():
                    build_args = dict(a.split("=", 1) for a in step.build.build_args if "=" in a)
                    pull.update(
                        r
                        for b in base_images(dockerfile.read_text(errors="replace"), build_args)
                        if (r := repository(b))
                    )
            images += step.push
            push.update(r for i in images if (r := repository(i)))
            if step.cmd:
                pull.update(r for r in [repository(step.cmd[0])] if r)
        access = [{"type": "repository", "name": r, "actions": ["pull", "push"]} for r in sorted(push)]
        access += [{"type": "repository", "name": r, "actions": ["pull"]} for r in sorted(pull - push)]
        return access

    async def _fetch_context(
        self, run: RunDoc, context: Path, archive: Path, run_log: RunLog, outcome: dict[str, Any]
    ) -> tuple[str, str]:
        """The run's context into `context`: an uploaded archive, or a git URL fetched at the pushed commit
        (else its branch's head). Answers ({{.Run.Commit}}, {{.Run.Branch}})."""
        source = str(run.request.get("sourceLocation") or "")
        if is_git_url(source):
            return await self._fetch_git(run, source, context, archive.parent, run_log, outcome)
        size = await self.blobs.path_size(run.registry, source)
        if size is None:
            raise StepFailed("the build context was not found")
        if size > self.settings.tasks_max_context_bytes:
            raise StepFailed(f"the context is larger than {self.settings.tasks_max_context_bytes} bytes")
        written = 0
        with archive.open("wb") as out:
            async for chunk in self.blobs.read_path(run.registry, source):
                written += len(chunk)
                if written > self.settings.tasks_max_context_bytes:
                    raise StepFailed(f"the context is larger than {self.settings.tasks_max_context_bytes} bytes")
                out.write(chunk)
        limits = ContextLimits(max_bytes=self.settings.tasks_max_unpacked_bytes)
        try:
            with archive.open("rb") as source_file:
                await asyncio.to_thread(extract_context, source_file, context, limits)
        except ContextInvalid as error:
            raise StepFailed(str(error)) from error
        run_log.write(f"Context: {size} bytes")
        return "", ""

    async def _fetch_git(
        self, run: RunDoc, url: str, context: Path, workdir: Path, run_log: RunLog, outcome: dict[str, Any]
    ) -> tuple[str, str]:
        try:
            source = parse_git_url(url)
        except GitSourceInvalid as error:
            raise StepFailed(str(error)) from error
        trigger = run.sourceTrigger or {}
        token = (
            self.box.open(run.sourceToken, secret_context(run.registry, run.runId)).decode()
            if run.sourceToken
            else None
        )
        limits = FetchLimits(
            timeout_seconds=self.settings.tasks_git_timeout_seconds,
            max_fetch_bytes=self.settings.tasks_max_context_bytes,
            context=ContextLimits(max_bytes=self.settings.tasks_max_unpacked_bytes),
            allow_private=self.settings.tasks_allow_private_sources,
        )
        ref = None
        if trigger.get("eventType") == "pullrequest":  # the PR's head, as GitHub and Gitea publish it
            ref = f"refs/pull/{trigger.get('pullRequestId')}/head"
        try:
            commit = await fetch_source(
                source, run.sourceCommit, workdir, context, limits, run_log.write, token, ref=ref
            )
        except GitFetchFailed as error:
            raise StepFailed(f"the git context could not be fetched: {error}") from error
        outcome["sourceCommit"] = commit
        run_log.write(f"Context: {source.url} at commit {commit}")
        return commit, str(trigger.get("branchName") or source.branch or "")

    async def _base_digests(self, files: RegistryAccess, bases: list[str]) -> list[dict[str, Any]]:
        """The FROM images with the digests their tags point at now (this registry's only; others as named)."""
        found: list[dict[str, Any]] = []
        scheme = "http" if files.insecure else "https"
        accept = ",".join(
            [
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json",
                "application/vnd.docker.distribution.manifest.v2+json",
            ]
        )
        auth = httpx.BasicAuth(REFRESH_TOKEN_USER, files.password)
        async with httpx.AsyncClient(timeout=30, auth=auth) as http:
            for image in bases:
                local = local_repository(image, files.login_server) or local_repository(image, files.address)
                entry: dict[str, Any] = {"image": image}
                if local is not None:
                    repository, reference = local
                    entry.update(registry=files.login_server, repository=repository, tag=reference)
                    with contextlib.suppress(httpx.HTTPError):
                        url = f"{scheme}://{files.address}/v2/{repository}/manifests/{reference}"
                        answer = await http.head(url, headers={"Accept": accept})
                        if answer.status_code == 200:
                            entry["digest"] = answer.headers.get("Docker-Content-Digest")
                found.append(entry)
        return found


def make_workdir(base_dir: str, run_id: str) -> Path:
    """The run's own directory (context, containers storage, auth file), removed when the run ends."""
    base = Path(base_dir or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"run-{run_id}-", dir=base))
    (workdir / "context").mkdir()
    (workdir / "tmp").mkdir()
    return workdir


def _context_file(context: Path, path: str, what: str) -> str:
    file = (context / path).resolve()
    if not file.is_relative_to(context.resolve()) or not file.is_file():
        raise StepFailed(f"{what} {path!r} is not in the context")
    if file.stat().st_size > MAX_TASK_FILE_BYTES:
        raise StepFailed(f"{what} is larger than {MAX_TASK_FILE_BYTES} bytes")
    return file.read_text(errors="replace")


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def serve_one(settings: Settings) -> bool:
    """Take one run off the queue and execute it (one execution of the Container Apps job in Azure, so each
    run has a container of its own); False when the queue had none (another execution took it)."""
    runner = Runner(settings)
    await runner.open()
    try:
        received = await runner.queue.receive(INVISIBLE_SECONDS)
        if received is None:
            return False
        await runner.handle(received)
        return True
    finally:
        await runner.close()


async def run_forever(settings: Settings) -> None:
    runner = Runner(settings)
    await runner.open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("task runner: taking runs from queue %s", settings.tasks_queue)
    try:
        await runner.serve(stop)
    finally:
        await runner.close()


def observe_run_duration(run: RunDoc) -> None:
    """ACR's RunDuration metric: start to finish of a run that started (milliseconds)."""
    if not run.startTime or not run.finishTime:
        return
    started, finished = datetime.fromisoformat(run.startTime), datetime.fromisoformat(run.finishTime)
    telemetry().observe_run(run.registry, max(0.0, (finished - started).total_seconds() * 1000))
