"""Several worker processes on one port, as the Functions host runs `FUNCTIONS_WORKER_PROCESS_COUNT` of them.

One Python process serves on one core. The Functions host starts several language workers per instance and
spreads requests over them; the devhost does the same: the supervisor (this process) forks the workers,
each binds its own listening socket to the same port with `SO_REUSEPORT` (the kernel spreads connections
over them), and serves the same function table. Every worker consumes the bus subscriptions (competing
consumers, as the host's workers are); worker 0 alone runs the timer triggers, as the host runs a timer
once per app.

The supervisor holds a bound, non-listening socket on each port meanwhile: a port taken by someone else
fails at once here rather than in every worker, and nobody else can take it while a worker restarts.
A worker that dies is started again (after a pause that grows while they keep dying); SIGTERM or SIGINT
to the supervisor stops every worker gracefully and then the supervisor.

Workers share what must be shared through storage and the instance's change marks
(services/platform/readcache.py); each has its own caches and connection pools.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from types import FrameType

log = logging.getLogger("devhost")

RESTART_PAUSE_SECONDS = 0.5
RESTART_PAUSE_CAP_SECONDS = 10.0
STOP_SECONDS = 20.0
# A worker that ends this many times in a row, each time within HEALTHY_SECONDS of its start, is broken
# (a setting, a port): the supervisor stops rather than restart it forever.
MAX_QUICK_FAILURES = 5
HEALTHY_SECONDS = 30.0


def reuse_port_socket(host: str, port: int, listen: bool) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, listening if asked."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        if listen:
            sock.listen(2048)
            sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Supervisor:
    """Fork `count` workers running `work(index)`; restart the ones that die; stop them all on a signal."""

    def __init__(self, count: int, work: Callable[[int], None], ports: Sequence[tuple[str, int]]) -> None:
        self.count = count
        self.work = work
        self.ports = list(ports)
        self.children: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # worker index -> when it was last started
        self.stopping = False

    def run(self) -> int:
        reserved = [reuse_port_socket(host, port, listen=False) for host, port in self.ports]
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        failures: dict[int, int] = {}
        status_code = 0
        try:
            for index in range(self.count):
                self._spawn(index)
            while self.children:
                try:
                    pid, status = os.wait()
                except ChildProcessError:
                    break
                index = self.children.pop(pid, -1)
                if index < 0 or self.stopping:
                    continue
                quick = time.monotonic() - self.started.get(index, 0.0) < HEALTHY_SECONDS
                failures[index] = failures.get(index, 0) + 1 if quick else 1
                if failures[index] >= MAX_QUICK_FAILURES:
                    log.error("worker %d ended %d times in a row soon after starting: stopping", index, failures[index])
                    status_code = 1
                    break
                pause = min(RESTART_PAUSE_CAP_SECONDS, RESTART_PAUSE_SECONDS * 2 ** (failures[index] - 1))
                log.error("worker %d (pid %d) ended (%s); starting it again in %.1f s", index, pid, _how(status), pause)
                time.sleep(pause)
                if not self.stopping:
                    self._spawn(index)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sock in reserved:
                sock.close()
        return status_code

    def _spawn(self, index: int) -> None:
        self.started[index] = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the worker
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)  # uvicorn installs its own while it serves
            code = 0
            try:
                self.work(index)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 0
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = index

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _stop_all(self) -> None:
        """SIGTERM what is left, wait for it, then SIGKILL what still is."""
        self.stopping = True
        self._stop(signal.SIGTERM, None)
        deadline = time.monotonic() + STOP_SECONDS
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                break
            if pid:
                self.children.pop(pid, None)
            else:
                time.sleep(0.05)
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.children.clear()


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
