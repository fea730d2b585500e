"""The servers the benchmark starts and stops: our API (the devhost) and the peer (CNCF distribution).

Each runs in a process group of its own (`start_new_session`), logs to a file and is stopped with SIGTERM to
the group, then SIGKILL to whatever is left, so nothing outlives the harness. The emulator stack itself is
`services.devhost.stack.LocalStack`, which does the same for Azurite and the Cosmos DB emulator.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Self

from services.devhost.stack import HOST, free_port

if TYPE_CHECKING:
    from services.platform.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


class ServerError(RuntimeError):
    """A server did not start (the message carries the end of its log)."""


class ServerProcess:
    """One HTTP server on 127.0.0.1, ready once `GET /v2/` answers (200, or 401 asking for credentials).

    `credentials` (user, password) when its registry requires them; `open_host` the Host header of a
    registry of the same server that takes anonymous callers (ours: the auth-off figures beside)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        env: Mapping[str, str],
        log: Path,
        credentials: tuple[str, str] | None = None,
        open_host: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.env = dict(env)
        self.log = log
        self.credentials = credentials
        self.open_host = open_host
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError(f"{self.name} is not running")
        return self.process.pid

    def start(self, timeout: float = 60.0) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        try:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise ServerError(f"{self.name} exited with {code} while starting:\n{self.tail()}")
                if _answers(f"{self.url}/v2/"):
                    return
                if time.monotonic() > deadline:
                    raise ServerError(f"{self.name} did not answer within {timeout:.0f} s:\n{self.tail()}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, wait up to `timeout`, then SIGKILL the group and reap the leader."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as error:
        return error.code == 401
    except OSError:
        return False


def ours(
    stack_env: Mapping[str, str],
    logs_dir: Path,
    extra_env: Mapping[str, str] | None = None,
    *,
    credentials: tuple[str, str] | None = None,
    open_registry: str | None = None,
) -> ServerProcess:
    """Our API as `make run` serves it (uvicorn, uvloop, httptools; one worker process per core, as a
    Functions instance runs several), against the stack in `stack_env`.

    With `credentials` (its admin user), its default registry requires them, as users run it, and the
    registry `open_registry` of the same server takes anonymous callers (`authDisabled`), for the
    auth-off figures beside; without, the default registry takes anonymous callers (the attack scripts).
    Request-rate limits stay on, scaled up 1,000 times: ACR's per-tier limits (a Premium registry: 10,000
    reads a minute) are far below what one load generator sends, and throttling is not what is measured.
    """
    port = free_port()
    env = dict(os.environ) | dict(stack_env)
    env |= {"API_PORT": str(port), "LOG_LEVEL": "warning", "DEFAULT_REGISTRY_AUTH_DISABLED": "true"}
    if credentials:  # the benchmark proper (the attack scripts watch one process: one worker for them)
        env |= {
            "DEFAULT_REGISTRY_AUTH_DISABLED": "false",
            "FUNCTIONS_WORKER_PROCESS_COUNT": str(os.cpu_count() or 1),
            "RATE_LIMIT_SCALE": "1000",
        }
    env |= dict(extra_env or {})
    env.pop("ACCESS_LOG", None)
    argv = [sys.executable, "-m", "services.devhost", "serve", "--port", str(port)]
    domain = env.get("REGISTRY_DOMAIN", "azurecr.localhost")
    open_host = f"{open_registry}.{domain}:{port}" if open_registry else None
    return ServerProcess("ours", argv, port, env, logs_dir / "ours.log", credentials, open_host)


OPEN_REGISTRY = "benchopen"


def _settings(stack_env: Mapping[str, str]) -> Settings:
    from services.platform.settings import Settings

    fields = set(Settings.model_fields)
    return Settings(**{k.lower(): v for k, v in stack_env.items() if k.lower() in fields})  # type: ignore[arg-type]


async def create_registries(
    stack_env: Mapping[str, str], *, admin: str | None = None, anonymous: Sequence[str] = ()
) -> str | None:
    """Before our API starts: the Premium registry `admin` with its admin user on (its password is returned)
    and the Premium registries `anonymous` that take anonymous callers."""
    from services.management.access import enable_admin_user, update_registry
    from services.management.registries import create_registry
    from services.platform.blobs import BlobStore
    from services.platform.cosmos import Cosmos

    settings = _settings(stack_env)
    metadata, blobs = Cosmos(settings), BlobStore(settings)
    await metadata.open()
    await blobs.open()
    password = None
    try:
        if admin is not None:
            await create_registry(metadata, blobs, settings, admin, "Premium")
            password = (await enable_admin_user(metadata, admin))[0].value
        for name in anonymous:
            await create_registry(metadata, blobs, settings, name, "Premium")
            await update_registry(metadata, name, auth_disabled=True)
    finally:
        await metadata.close()
        await blobs.close()
    return password


async def prepare_our_registries(stack_env: Mapping[str, str]) -> tuple[str, str]:
    """Our API's default registry with the admin user on, and `OPEN_REGISTRY` that takes anonymous callers.
    Returns the admin user's (name, password)."""
    default = _settings(stack_env).default_registry
    password = await create_registries(stack_env, admin=default, anonymous=[OPEN_REGISTRY])
    assert password is not None
    return default, password


def distribution_binary() -> str:
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if binary is None:
        raise ServerError("docker-registry (CNCF distribution) is not installed: apt-get install docker-registry")
    return binary


def distribution_version() -> str:
    try:
        done = subprocess.run(
            [distribution_binary(), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, ServerError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or done.stderr.strip()


def distribution_config(root: Path, port: int) -> str:
    """The peer's config: filesystem storage under `root`, loopback, relative URLs, deletes enabled.

    The blob descriptor cache is `inmemory`, as in the config distribution ships; no access log (ours has
    none either) and errors only.
    """
    return "\n".join(
        [
            "version: 0.1",
            "log:",
            "  level: error",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {root}",
            "  delete:",
            "    enabled: true",
            "  cache:",
            "    blobdescriptor: inmemory",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            f"  addr: {HOST}:{port}",
            "  relativeurls: true",
            "",
        ]
    )


def peer(state_dir: Path, logs_dir: Path) -> ServerProcess:
    """CNCF distribution (`docker-registry serve CONFIG`) with its own config and storage in `state_dir`."""
    port = free_port()
    root = state_dir / "storage"
    root.mkdir(parents=True, exist_ok=True)
    config = state_dir / "config.yml"
    config.write_text(distribution_config(root, port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    argv = [distribution_binary(), "serve", str(config)]
    return ServerProcess("peer", argv, port, env, logs_dir / "peer.log")


# --- memory --------------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (our API's worker processes)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    queue.extend(int(child) for child in children.read().split())
        except OSError:
            continue
    return found


def _status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class RssSampler:
    """Peak resident memory of the largest process of a process tree (a server and its worker processes)
    over a `with` block, in bytes.

    On entry each process's high-water mark (VmHWM) is reset through /proc/<pid>/clear_refs where allowed;
    meanwhile VmRSS is polled every `interval` seconds. The peak is the larger of the polled maximum and
    the largest VmHWM at exit (when the resets worked; otherwise VmHWM would include everything before).
    """

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.before = 0
        self.polled_peak = 0
        self.hwm: int | None = None
        self._hwm_reset = False
        self._pids: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def peak(self) -> int:
        return max(self.polled_peak, self.hwm or 0)

    def _largest(self, field: str) -> int | None:
        values = [v for v in (_status_kib(pid, field) for pid in self._pids) if v is not None]
        return max(values) * 1024 if values else None

    def _poll(self) -> None:
        while not self._stop.is_set():
            rss = self._largest("VmRSS")
            if rss is not None:
                self.polled_peak = max(self.polled_peak, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._pids = process_tree(self.pid)
        self._hwm_reset = True
        for pid in self._pids:
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as clear:
                    clear.write("5")  # 5: reset the peak RSS (VmHWM) to the current RSS
            except OSError:
                self._hwm_reset = False
        self.before = self._largest("VmRSS") or 0
        self.polled_peak = self.before
        self._thread = threading.Thread(target=self._poll, name=f"rss-{self.pid}", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._hwm_reset:
            self.hwm = self._largest("VmHWM")


# --- CPU -----------------------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")
CLIENT = "client"  # the harness itself, plus the children it waited for (skopeo, curl)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants (all their threads) so far, from
    /proc/<pid>/stat: a server with worker processes counts them all."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def _client_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CpuMeter:
    """CPU seconds each named process spent during a `with` block; `CLIENT` is the harness and the
    children it waited for (skopeo, curl). On a 2-core machine this is the cost that load from others
    does not change much, unlike throughput."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.seconds: dict[str, float] = {}
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        now[CLIENT] = _client_seconds()
        return now

    def __enter__(self) -> Self:
        self._start = self._now()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        end = self._now()
        self.seconds = {name: end[name] - self._start[name] for name in end}


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises SystemExit, so the `with` blocks stop every process the harness or script started."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
