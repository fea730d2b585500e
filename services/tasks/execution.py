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
    others: frozenset[str] = frozenset()  # other registries' login servers the run has credentials for
    insecure_others: frozenset[str] = frozenset()  # of those, the ones reached over plain HTTP (local only)

    def other_registry(self, image: str) -> str | None:
        """The login server of `image` when it is another registry the run has credentials for."""
        host = image.split("/", 1)[0].lower() if "/" in image else ""
        return host if host in self.others else None

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


def registry_files(
    workdir: Path,
    login_server: str,
    address: str,
    insecure: bool,
    password: str,
    others: dict[str, tuple[str, str]] | None = None,
    insecure_others: frozenset[str] = frozenset(),
) -> RegistryAccess:
    """The run's auth file (its own registry with the run token, each other registry with its credentials;
    mode 0600, in the run's directory, removed with it), registries.conf and signature policy."""
    others = {k: v for k, v in (others or {}).items() if k not in (login_server.lower(), address.lower())}
    auth = base64.b64encode(f"{REFRESH_TOKEN_USER}:{password}".encode()).decode()
    auths = {server: {"auth": base64.b64encode(f"{u}:{p}".encode()).decode()} for server, (u, p) in others.items()}
    auths |= {login_server: {"auth": auth}, address: {"auth": auth}}
    auth_file = workdir / "auth.json"
    auth_file.touch(mode=0o600)
    auth_file.write_text(json.dumps({"auths": auths}))
    auth_file.chmod(0o600)
    plain = frozenset(server for server in others if server in insecure_others)
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
    for server in sorted(plain):
        lines += ["[[registry]]", f'location = "{server}"', "insecure = true", ""]
    conf.write_text("\n".join(lines))
    policy = workdir / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    return RegistryAccess(login_server, address, insecure, auth_file, conf, policy, password, frozenset(others), plain)


async def pull_images(
    storage: Sequence[str],
    files: RegistryAccess,
    images: Sequence[str],
    platform: str,
    workdir: Path,
    output: Callable[[str], None],
) -> None:
    """Pull a build's images into the run's storage, here in the runner's own network namespace with the run's
    credentials, so the build itself runs with `--pull=never` and makes no registry calls (its RUN steps may
    have no way to the registry: services/tasks/network.py)."""
    env = files.env(workdir)
    for image in images:
        argv = ["buildah", *storage, "pull", "--signature-policy", str(files.policy), "--platform", platform]
        argv += ["--authfile", str(files.auth_file), "--quiet"]
        local = local_repository(image, files.login_server) or local_repository(image, files.address)
        if (local is not None and files.insecure) or files.other_registry(image) in files.insecure_others:
            argv.append("--tls-verify=false")
        argv.append(image)
        output(f"Pulling {image}")
        if await run_command(argv, env, workdir, output) != 0:
            raise StepFailed(f"the image {image} could not be pulled")


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
