"""How a run's commands execute and reach the registry (shared by quick builds and multi-step runs): a
command in its own process group with its output streamed line by line, and the files buildah reads to
reach the run's registry with the run's token (auth file, registries.conf, signature policy).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.auth.service import REFRESH_TOKEN_USER

OUTPUT_LINE_BYTES = 16 * 1024


class StepFailed(Exception):
    """A step of the run failed (the user's: the run is Failed, not Error)."""


# --- commands -----------------------------------------------------------------------------------------------
async def run_command(argv: Sequence[str], env: dict[str, str], cwd: Path, output: Callable[[str], None]) -> int:
    """Run a command in its own process group, its output line by line to `output`; cancelling this kills the
    whole group (buildah and whatever its RUN steps started)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        limit=OUTPUT_LINE_BYTES,
    )
    assert process.stdout is not None
    try:
        while True:
            try:
                line = await process.stdout.readline()
            except ValueError:  # a line longer than the limit: take what there is
                line = await process.stdout.read(OUTPUT_LINE_BYTES)
            if not line:
                break
            output(line.decode(errors="replace"))
        return await process.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.wait(), 10)
        raise


# --- the run's registry access ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegistryAccess:
    """How the run reaches its registry: the address, whether it is plain HTTP, and the files buildah reads."""

    login_server: str
    address: str
    insecure: bool
    auth_file: Path
    registries_conf: Path
    policy: Path
    password: str = field(repr=False)

    def env(self, workdir: Path) -> dict[str, str]:
        """The whole environment of a build: nothing of the runner's (its settings hold the service's keys)."""
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(workdir),
            "TMPDIR": str(workdir / "tmp"),
            "REGISTRY_AUTH_FILE": str(self.auth_file),
            "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
            "BUILDAH_ISOLATION": "chroot",
        }

    def reference(self, repository: str, tag: str) -> str:
        return f"{self.address}/{repository}:{tag}"


def registry_files(workdir: Path, login_server: str, address: str, insecure: bool, password: str) -> RegistryAccess:
    auth = base64.b64encode(f"{REFRESH_TOKEN_USER}:{password}".encode()).decode()
    auth_file = workdir / "auth.json"
    auth_file.write_text(json.dumps({"auths": {login_server: {"auth": auth}, address: {"auth": auth}}}))
    auth_file.chmod(0o600)
    conf = workdir / "registries.conf"
    lines = ["unqualified-search-registries = []", 'short-name-mode = "disabled"', ""]
    if address != login_server:
        # FROM <login server>/base: pulled from the address the runner reaches the registry at.
        insecure_text = str(insecure).lower()
        lines += [
            "[[registry]]",
            f'prefix = "{login_server}"',
            f'location = "{address}"',
            f"insecure = {insecure_text}",
        ]
        lines.append("")
    if insecure:
        lines += ["[[registry]]", f'location = "{address}"', "insecure = true", ""]
    conf.write_text("\n".join(lines))
    policy = workdir / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    return RegistryAccess(login_server, address, insecure, auth_file, conf, policy, password)


def split_image(name: str) -> tuple[str, str]:
    """`repo[:tag]` -> (repo, tag) (`latest` when none)."""
    repository, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
    return repository, tag or "latest"


def local_repository(image: str, login_server: str) -> tuple[str, str] | None:
    """(repository, reference) of an image reference in this registry, else None."""
    prefix = login_server.lower() + "/"
    if not image.lower().startswith(prefix):
        return None
    rest = image[len(prefix) :]
    if "@" in rest:
        repository, _, digest = rest.partition("@")
        return repository, digest
    return split_image(rest)
