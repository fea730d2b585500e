"""Git contexts: a task's context given as `https://host/org/repo.git#branch:dir`, fetched by the runner.

The URL is the task owner's, so the fetch is an outbound request someone else aims, under the webhooks'
address policy (services/webhooks/rules.py `address_refused`): the host is resolved once, every address it
answers is checked (private, loopback and link-local refused unless TASKS_ALLOW_PRIVATE_SOURCES is set), and
git is pinned to the checked address (`http.curloptResolve`), so no second lookup can answer differently.
git runs with nothing of the runner's: an empty environment and home, no system or global config, no
credential helper or prompt, redirects never followed (`http.followRedirects=false`), http(s) only
(`GIT_ALLOW_PROTOCOL`), no proxy. The fetch is shallow (one commit: the pushed sha, else the branch's head),
time-bounded and size-bounded (the repository directory is watched and the fetch killed over the limit); the
tree is then exported with `git archive` and extracted through the same member checks as an uploaded
context (services/tasks/context.py: no links out of the context, no devices, the unpacked size limit).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import resource
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from services.tasks.context import ContextInvalid, ContextLimits, extract_context
from services.webhooks.rules import address_refused

MAX_URL = 1024
_SHA = re.compile(r"^[0-9a-f]{40}$")
# A branch as git allows it (`git check-ref-format --branch`), conservatively: no `..`, no leading `-`.
_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9._/\-]{1,200}(?<![./])$")
_DIR = re.compile(r"^[A-Za-z0-9._/\-]{1,400}$")
_HOST = re.compile(r"^[A-Za-z0-9.\-]{1,253}$|^\[[0-9A-Fa-f:.]+\]$")
_PATH = re.compile(r"^/[A-Za-z0-9._~/\-%]{1,800}$")
_PULL_REF = re.compile(r"^refs/pull/[1-9][0-9]{0,9}/head$")


class GitSourceInvalid(ValueError):
    """The git URL is not one a run may fetch (the message says why)."""


class GitFetchFailed(Exception):
    """The fetch failed or was refused (the message is shown in the run's log and error)."""


@dataclass(frozen=True, slots=True)
class GitSource:
    url: str  # scheme://host[:port]/path, no fragment, no credentials
    scheme: str
    host: str
    port: int
    branch: str | None
    directory: str | None

    @property
    def repository(self) -> str:
        """The URL compared with a source trigger's repositoryUrl (no trailing `.git` or `/`, host lowered)."""
        return normal_repository(self.url)


def is_git_url(text: str) -> bool:
    return text.startswith(("https://", "http://"))


def normal_repository(url: str) -> str:
    parts = urlsplit(url.split("#", 1)[0])
    path = parts.path.rstrip("/")
    path = path.removesuffix(".git")
    return f"{parts.scheme.lower()}://{(parts.netloc or '').lower()}{path}"


def parse_git_url(text: str) -> GitSource:
    """`https://host[:port]/org/repo.git[#branch[:dir]]`; GitSourceInvalid naming what is wrong."""
    if len(text) > MAX_URL or not is_git_url(text):
        raise GitSourceInvalid("a git context is an http(s) URL of at most 1024 characters")
    base, _, fragment = text.partition("#")
    parts = urlsplit(base)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise GitSourceInvalid("a git URL may not hold credentials (give a token in sourceControlAuthProperties)")
    if parts.query:
        raise GitSourceInvalid("a git URL may not have a query")
    host = parts.hostname or ""
    if not host or not _HOST.match(parts.netloc.rsplit(":", 1)[0] if "]" not in parts.netloc else host):
        raise GitSourceInvalid("the git URL has no valid host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise GitSourceInvalid("the git URL's port is not valid") from error
    if not _PATH.match(parts.path or "") or ".." in parts.path.split("/"):
        raise GitSourceInvalid("the git URL's path is not valid")
    branch_text, _, directory = fragment.partition(":")
    branch = branch_text or None
    if branch is not None and not _BRANCH.match(branch):
        raise GitSourceInvalid(f"not a branch name: {branch[:100]!r}")
    directory = directory.strip("/") or ""
    if directory and (not _DIR.match(directory) or ".." in directory.split("/")):
        raise GitSourceInvalid(f"not a directory of the repository: {directory[:100]!r}")
    return GitSource(base, parts.scheme, host, port, branch, directory or None)


def valid_branch(name: str) -> bool:
    return bool(_BRANCH.match(name))


def valid_sha(text: str) -> bool:
    return bool(_SHA.match(text))


@dataclass(frozen=True, slots=True)
class FetchLimits:
    timeout_seconds: float
    max_fetch_bytes: int  # what the repository directory may grow to (the packed commit)
    context: ContextLimits  # what the exported tree may unpack to
    allow_private: bool


async def resolve_checked(host: str, port: int, allow_private: bool) -> str:
    """The address git is pinned to: every address `host` resolves to checked (any refused refuses the host)."""
    loop = asyncio.get_running_loop()
    literal = host.strip("[]")
    try:
        infos = await loop.getaddrinfo(literal, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise GitFetchFailed(f"cannot resolve {host}") from error
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise GitFetchFailed(f"cannot resolve {host}")
    if not allow_private and any(address_refused(a) for a in addresses):
        raise GitFetchFailed(f"{host} resolves to a private or local address (refused)")
    return addresses[0]


def git_env(home: Path, source: GitSource, address: str, token: str | None) -> dict[str, str]:
    """git's whole environment: nothing of the runner's; its config given here, none read from files."""
    pinned = f"[{address}]" if ":" in address else address
    config = [
        ("http.followRedirects", "false"),
        ("credential.helper", ""),
        ("core.askPass", ""),
        ("http.curloptResolve", f"{source.host.strip('[]')}:{source.port}:{pinned}"),
        ("http.lowSpeedLimit", "1024"),
        ("http.lowSpeedTime", "30"),
        ("protocol.version", "2"),
        ("protocol.allow", "never"),
        (f"protocol.{source.scheme}.allow", "always"),
        ("core.hooksPath", "/dev/null"),
        ("fetch.recurseSubmodules", "false"),
        ("transfer.fsckObjects", "true"),
        ("init.defaultBranch", "main"),
    ]
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        config.append(("http.extraHeader", f"Authorization: Basic {basic}"))
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": source.scheme,
        "GIT_PROTOCOL_FROM_USER": "0",
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    for index, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


async def _git(
    argv: list[str], env: dict[str, str], cwd: Path, output: Callable[[str], None], watch: tuple[Path, int] | None
) -> tuple[int, bytes]:
    """Run git in its own process group; kill it (and its remote helper) when `watch`'s directory grows past
    its limit (checked every 0.2 s, and no single file may be written past it: RLIMIT_FSIZE) or when
    cancelled. Answers (exit code, stdout); stderr goes to `output`."""
    limit = watch[1] if watch is not None else None

    def bounded() -> None:  # in the child, before exec
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    process = await asyncio.create_subprocess_exec(
        "git", *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        preexec_fn=bounded,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    over = False

    async def watcher() -> None:
        nonlocal over
        if watch is None:
            return
        directory, limit = watch
        while True:
            await asyncio.sleep(0.2)
            if await asyncio.to_thread(_tree_bytes, directory) > limit:
                over = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                return

    async def errors() -> None:
        nonlocal over
        assert process.stderr is not None
        while line := await process.stderr.readline():
            text = line.decode(errors="replace")[:2000]
            if "File too large" in text or "signal 25" in text:  # RLIMIT_FSIZE: EFBIG / SIGXFSZ
                over = True
            output(text)

    async def answer() -> bytes:
        assert process.stdout is not None
        kept = b""
        while chunk := await process.stdout.read(64 * 1024):
            kept = (kept + chunk)[: 64 * 1024]  # what git prints on stdout here is a sha or nothing
        return kept

    guard = asyncio.create_task(watcher())
    try:
        out, _ = await asyncio.gather(answer(), errors())
        code = await process.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.wait(), 10)
        raise
    finally:
        guard.cancel()
    if watch is not None and code == 0 and await asyncio.to_thread(_tree_bytes, watch[0]) > watch[1]:
        over = True
    if over:
        raise GitFetchFailed(f"the repository is larger than {watch[1] if watch else 0} bytes (fetch stopped)")
    return code, out


async def fetch_source(
    source: GitSource,
    commit: str | None,
    workdir: Path,
    context: Path,
    limits: FetchLimits,
    output: Callable[[str], None],
    token: str | None = None,
    ref: str | None = None,
) -> str:
    """Fetch `commit` (else the head of the URL's branch, else of the default branch) into `context`; returns
    the sha fetched. With `ref` (a pull request's `refs/pull/<n>/head`) that ref is fetched and its tip must
    be `commit`. GitFetchFailed with the reason."""
    if commit is not None and not valid_sha(commit):
        raise GitFetchFailed("not a commit id")
    if ref is not None and not _PULL_REF.match(ref):
        raise GitFetchFailed("not a pull request ref")
    address = await resolve_checked(source.host, source.port, limits.allow_private)
    repo, home = workdir / "git", workdir / "git-home"
    repo.mkdir()
    home.mkdir(exist_ok=True)
    env = git_env(home, source, address, token)
    want = ref or commit or (f"refs/heads/{source.branch}" if source.branch else "HEAD")

    async def steps() -> str:
        code, _ = await _git(["init", "-q", str(repo)], env, workdir, output, None)
        if code != 0:
            raise GitFetchFailed("git init failed")
        output(f"Fetching {source.url} at {want} (shallow)")
        fetch = ["fetch", "--depth", "1", "--no-tags", "--no-recurse-submodules", "-q", source.url, want]
        code, _ = await _git(fetch, env, repo, output, (repo, limits.max_fetch_bytes))
        if code != 0:
            raise GitFetchFailed(f"git could not fetch {want} from {source.url}")
        code, out = await _git(["rev-parse", "--verify", "FETCH_HEAD^{commit}"], env, repo, output, None)
        fetched = out.decode().strip()
        if code != 0 or not valid_sha(fetched):
            raise GitFetchFailed("the fetch brought no commit")
        if commit is not None and fetched != commit:
            if ref is not None:  # the pull request moved on: its newer head's own event runs that one
                raise GitFetchFailed(f"{ref} is now {fetched}, not {commit} (the pull request moved on)")
            raise GitFetchFailed(f"the fetch brought {fetched}, not {commit}")
        tree = f"{fetched}:{source.directory}" if source.directory else fetched
        archive = workdir / "git-context.tar"
        argv = ["archive", "--format=tar", "-o", str(archive), tree]
        code, _ = await _git(
            argv, env, repo, output, (archive.parent, limits.max_fetch_bytes + limits.context.max_bytes)
        )
        if code != 0:
            raise GitFetchFailed(f"{source.directory or 'the tree'} is not in commit {fetched}")
        try:
            with archive.open("rb") as tar:
                await asyncio.to_thread(extract_context, tar, context, limits.context)
        except ContextInvalid as error:
            raise GitFetchFailed(str(error)) from error
        return fetched

    try:
        return await asyncio.wait_for(steps(), limits.timeout_seconds)
    except TimeoutError as error:
        raise GitFetchFailed(f"the fetch took longer than {limits.timeout_seconds:g} seconds") from error
