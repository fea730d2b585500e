"""What a run's RUN steps and cmd steps can reach (TASKS_BUILD_NETWORK, services/tasks/network.py), with a
real runner (in this process, as root), real buildah, real network namespaces and iptables rules.

A RUN step (and a cmd step) tries a TCP connection to servers this test binds: on the host, a link-local
address (the metadata address's range), the host's loopback (and the devhost's port), the host's own
address, a private address of the host; beyond the host (a namespace routed through it, as a private endpoint
would be), a private address. All refused; a host address and a remote one in TASKS_BUILD_NETWORK_ALLOW are
reached (the network works otherwise). `none` reaches nothing and still builds. A runner whose
build network cannot be set up ends its runs Error, never building unfiltered; a runner that dies leaves its
namespace, which the next one removes.
"""

from __future__ import annotations

import base64
import io
import os
import re
import secrets
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.management.registries import create_registry
from services.platform.settings import Settings
from services.tasks.models import RunDoc
from services.tasks.network import (
    BuildNetwork,
    BuildNetworkUnavailable,
    NetworkPolicy,
    remove_stale,
    stale_names,
)
from services.tasks.runner import Runner
from services.tasks.scheduling import log_path, new_source_path
from services.tasks.store import RunStore, run_doc_id
from tests.conftest import ROOT, Devhost
from tests.integration.conftest import Stores, unique_registry_name

pytestmark = pytest.mark.integration

BUSYBOX = Path("/bin/busybox")  # apt busybox-static: the only file of the images built here


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Listener:
    """A TCP server on one address that accepts and closes (a connection that succeeds is 'reached')."""

    def __init__(self, address: str, port: int = 0) -> None:
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((address, port))
        self.socket.listen(16)
        self.address, self.port = address, self.socket.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self.socket.close()


@dataclass(frozen=True)
class Targets:
    probes: dict[str, tuple[str, int]]  # name -> (address, port) of a server
    allowed: str  # TASKS_BUILD_NETWORK_ALLOW: the "allowed" and "remoteallowed" servers
    listeners: dict[str, Listener]  # the servers on the host

    def script(self, prefix: str = "") -> str:
        """A shell line that tries each server and says REACHED or REFUSED for it."""
        tries = [
            f"if /bin/busybox nc -w 3 {address} {port} </dev/null; then echo {prefix}REACHED-{name}; "
            f"else echo {prefix}REFUSED-{name}; fi"
            for name, (address, port) in self.probes.items()
        ]
        # nor can a step leave its namespace for the host's (no CAP_SYS_ADMIN in there)
        escape = (
            "if /bin/busybox nsenter -n/proc/1/ns/net /bin/busybox true; "
            f"then echo {prefix}REACHED-escape; else echo {prefix}REFUSED-escape; fi"
        )
        return "; ".join([*tries, escape, "/bin/busybox cat /etc/resolv.conf"])


REFUSED = ("metadata", "loopback", "devhost", "hostaddress", "private", "remoteprivate", "escape")
REACHED = ("allowed", "remoteallowed")

REMOTE_SERVER = """
import socket, sys, threading
sockets = []
for address in sys.argv[1:]:
    s = socket.socket(); s.bind((address, 0)); s.listen(16); sockets.append(s)
def serve(s):
    while True:
        c, _ = s.accept(); c.close()
threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in sockets]
[t.start() for t in threads]
print(" ".join(str(s.getsockname()[1]) for s in sockets), flush=True)
sys.stdin.read()
"""


def _host_address() -> str:
    """The host's primary address (its route out)."""
    route = subprocess.run(["ip", "-4", "route", "get", "192.0.2.123"], capture_output=True, text=True).stdout.split()
    return route[route.index("src") + 1]


@pytest.fixture(scope="module")
def targets(devhost: Devhost) -> Iterator[Targets]:
    """Servers on the host: a random 169.254.x.y, 127.0.0.1, the host's address, a 10.x address of the host
    (on an interface of this test's own) and a second one the runner's settings allow; and beyond the host (a
    network namespace of this test's own, routed through the host as a private endpoint would be): a 10.x
    server and a second one in the allowed range."""
    name = "acrt" + secrets.token_hex(4)
    base = secrets.randbelow(200) + 20
    link_local, private, allowed = (
        f"169.254.{base}.{secrets.randbelow(250) + 1}",
        f"10.{base}.{secrets.randbelow(250)}.7",
        f"10.{base}.251.9",
    )
    remote_private, remote_allowed = f"10.{base}.250.2", f"10.{base}.251.2"
    listeners: dict[str, Listener] = {}
    server: subprocess.Popen[str] | None = None
    try:
        # addresses on a veth pair of this test's own (no `dummy` interfaces everywhere: gVisor has none)
        _ip("link", "add", name, "type", "veth", "peer", "name", name + "p")
        for address in (link_local, private, allowed):
            _ip("addr", "add", f"{address}/32", "dev", name)
        _ip("link", "set", name, "up")
        _ip("link", "set", name + "p", "up")
        # the remote servers: a namespace behind a second veth pair
        _ip("netns", "add", name)
        _ip("link", "add", name + "s", "type", "veth", "peer", "name", name + "r")
        _ip("link", "set", name + "r", "netns", name)
        _ip("addr", "add", f"10.{base}.250.1/24", "dev", name + "s")
        _ip("link", "set", name + "s", "up")
        _ip("route", "add", f"10.{base}.251.0/24", "dev", name + "s")
        for address in (remote_private, remote_allowed):
            _ip("-n", name, "addr", "add", f"{address}/16", "dev", name + "r")
        _ip("-n", name, "link", "set", name + "r", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", REMOTE_SERVER, remote_private, remote_allowed],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert server.stdout is not None
        remote_ports = [int(port) for port in server.stdout.readline().split()]
        listeners = {
            "metadata": Listener(link_local),
            "loopback": Listener("127.0.0.1"),
            "hostaddress": Listener(_host_address()),
            "private": Listener(private),
            "allowed": Listener(allowed),
        }
        probes = {key: (x.address, x.port) for key, x in listeners.items()}
        probes["devhost"] = ("127.0.0.1", int(devhost.host.rsplit(":", 1)[1]))
        probes["remoteprivate"] = (remote_private, remote_ports[0])
        probes["remoteallowed"] = (remote_allowed, remote_ports[1])
        yield Targets(probes, f"10.{base}.251.0/24", listeners)
    finally:
        for listener in listeners.values():
            listener.close()
        if server is not None:
            server.kill()
            server.wait()
        for link in (name, name + "s"):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _context(script: str) -> dict[str, bytes]:
    return {"Dockerfile": _dockerfile(script), "busybox": BUSYBOX.read_bytes()}


def _dockerfile(script: str) -> bytes:
    # exec form with busybox's own sh: the image has no /bin/sh
    return (
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        f'RUN ["/bin/busybox", "sh", "-c", "{script}"]\n'
        'CMD ["/bin/busybox", "true"]\n'
    ).encode()


async def _run(
    stores: Stores, settings: Settings, request: dict[str, Any], context: dict[str, bytes]
) -> tuple[RunDoc, str]:
    """Create a registry and a run of `request` with `context` uploaded, execute it with a runner of
    `settings`, answer the finished run and its log."""
    registry = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, registry)
    source = new_source_path()
    url = await stores.blobs.path_url(registry, source, 600, write=True)
    async with httpx.AsyncClient() as http:
        answer = await http.put(url, content=_archive(context), headers={"x-ms-blob-type": "BlockBlob"})
        assert answer.status_code == 201, answer.text
    runs = RunStore(stores.metadata)
    run_id = await runs.next_run_id(registry)
    await runs.create(
        RunDoc(
            id=run_doc_id(run_id),
            registry=registry,
            runId=run_id,
            number=int(run_id[2:]),
            request=request | {"sourceLocation": source, "timeout": 300},
            logPath=log_path(run_id),
            createTime="2026-01-01T00:00:00.000Z",
        )
    )
    runner = Runner(settings)
    await runner.open()
    try:
        finished = await runner.execute(registry, run_id)
    finally:
        await runner.close()
    assert finished is not None
    log = b"".join([chunk async for chunk in stores.blobs.read_path(registry, finished.logPath)]).decode()
    return finished, log


def _said(log: str) -> set[str]:
    """The REACHED-/REFUSED- verdicts of the log (a line's last word; the echoed command does not count)."""
    words = (line.split()[-1] for line in log.splitlines() if line.split())
    return {word for word in words if re.fullmatch(r"(?:[A-Z]+-)?RE(?:ACH|FUS)ED-[a-z]+", word)}


def _settings(stores: Stores, tmp_path: Path, **changes: Any) -> Settings:
    return Settings(**(stores.settings.model_dump() | {"tasks_work_dir": str(tmp_path / "work")} | changes))


QUICK_BUILD = {"type": "DockerBuildRequest", "dockerFilePath": "Dockerfile", "isPushEnabled": False}


async def test_run_steps_reach_the_internet_side_only_what_is_allowed(
    stores: Stores, targets: Targets, tmp_path: Path
) -> None:
    settings = _settings(stores, tmp_path, tasks_build_network_allow=targets.allowed)
    context = _context(targets.script())
    run, log = await _run(stores, settings, QUICK_BUILD, context)
    assert run.status == "Succeeded", log
    assert "Build network: filtered" in log
    # the network works: the allowed addresses are reached, on the host and beyond it
    assert _said(log) == {f"REFUSED-{n}" for n in REFUSED} | {f"REACHED-{n}" for n in REACHED}, log
    assert targets.listeners["metadata"].accepted == 0 and targets.listeners["loopback"].accepted == 0
    assert targets.listeners["allowed"].accepted >= 1
    # DNS: the host's resolvers (never a loopback stub the namespace cannot reach)
    assert "nameserver 127." not in log


async def test_cmd_steps_are_under_the_same_policy_and_network_none_takes_it_away(
    stores: Stores, targets: Targets, tmp_path: Path
) -> None:
    settings = _settings(stores, tmp_path, tasks_build_network_allow=targets.allowed)
    task = (
        "version: v1.1.0\nsteps:\n"
        "  - id: image\n    build: -t localhost/probe:1 .\n"
        f"  - id: probe\n    cmd: localhost/probe:1 /bin/busybox sh -c '{targets.script('CMD-')}'\n"
        "    when: [image]\n"
        f"  - id: isolated\n    cmd: localhost/probe:1 /bin/busybox sh -c '{targets.script('NONE-')}'\n"
        "    network: none\n    when: [image]\n"
    )
    request = {
        "type": "EncodedTaskRunRequest",
        "encodedTaskContent": base64.b64encode(task.encode()).decode(),
        "values": [],
    }
    context = _context("true")
    run, log = await _run(stores, settings, request, context)
    assert run.status == "Succeeded", log
    expected = {f"CMD-REFUSED-{n}" for n in REFUSED} | {f"CMD-REACHED-{n}" for n in REACHED}
    assert _said(log) == expected | {f"NONE-REFUSED-{n}" for n in REFUSED + REACHED}, log


async def test_none_reaches_nothing_and_a_build_without_network_still_builds(
    stores: Stores, targets: Targets, tmp_path: Path
) -> None:
    settings = _settings(stores, tmp_path, tasks_build_network="none", tasks_build_network_allow=targets.allowed)
    context = _context(targets.script())
    run, log = await _run(stores, settings, QUICK_BUILD, context)
    assert run.status == "Succeeded", log
    assert "Build network: none" in log
    assert _said(log) == {f"REFUSED-{n}" for n in REFUSED + REACHED}, log


async def test_a_network_that_cannot_be_set_up_ends_the_run_error_and_builds_nothing(
    stores: Stores, targets: Targets, tmp_path: Path
) -> None:
    # "cannot set up", honestly: the runner cannot create its namespace's state (as without root), so the
    # filtered network never comes up; the run must not fall back to the host network.
    settings = _settings(stores, tmp_path)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    original = Runner.__init__

    def init(self: Runner, settings: Settings) -> None:
        original(self, settings)
        assert self.network is not None
        self.network = BuildNetwork(self.network.policy, state_dir=blocker / "state")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Runner, "__init__", init)
        context = _context(targets.script())
        run, log = await _run(stores, settings, QUICK_BUILD, context)
    assert run.status == "Error", log
    assert run.runErrorMessage is not None and "TASKS_BUILD_NETWORK=filtered could not be set up" in log
    assert "TASKS_BUILD_NETWORK=none" in run.runErrorMessage
    assert _said(log) == set() and "STEP" not in log  # nothing was built


def test_without_cap_net_admin_the_filtered_network_is_refused_with_what_to_change() -> None:
    probe = (
        "from services.tasks.network import *\n"
        "n = BuildNetwork(NetworkPolicy.parse('filtered', '', '10.0.0.0/8', ''))\n"
        "try:\n    n.open()\nexcept BuildNetworkUnavailable as e:\n    print('UNAVAILABLE', e)\n"
        "else:\n    n.close()\n    print('OPENED')\n"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["capsh", "--drop=cap_net_admin", "--", "-c", f"exec {sys.executable} -c \"$0\"", probe],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.stdout.startswith("UNAVAILABLE TASKS_BUILD_NETWORK=filtered could not be set up"), done
    assert "CAP_NET_ADMIN" in done.stdout and "TASKS_BUILD_NETWORK=none" in done.stdout


def test_a_dead_runners_network_is_removed_and_a_live_ones_is_kept(tmp_path: Path) -> None:
    policy = NetworkPolicy.parse("filtered", "", "10.0.0.0/8", "")
    live = BuildNetwork(policy)
    live.open()
    try:
        # a runner that dies without cleaning up (os._exit: no close, its lock dies with it)
        crash = (
            "import os\nfrom services.tasks.network import *\n"
            "n = BuildNetwork(NetworkPolicy.parse('filtered', '', '10.0.0.0/8', ''))\n"
            "n.open()\nprint(n.name, flush=True)\nos._exit(9)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", crash], capture_output=True, text=True, cwd=ROOT, timeout=60,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        dead = done.stdout.strip()
        assert dead.startswith("acrb"), done
        assert dead in _netns() and dead in _iptables()
        stale = stale_names()
        assert dead in stale and live.name not in stale
        assert dead in remove_stale()
        assert dead not in _netns() and dead[4:] not in _iptables() and not Path(f"/etc/netns/{dead}").exists()
        assert live.name in _netns() and live.name in _iptables()  # a live runner's network is untouched
    finally:
        live.close()
    assert live.name not in _netns() and live.name[4:] not in _iptables()


def test_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="TASKS_BUILD_NETWORK_ALLOW"):
        NetworkPolicy.parse("filtered", "10.0.0.0/33", "", "")
    with pytest.raises(ValueError, match="TASKS_BUILD_DNS"):
        NetworkPolicy.parse("filtered", "", "", "127.0.0.53")
    with pytest.raises(ValueError, match="TASKS_BUILD_NETWORK"):
        NetworkPolicy.parse("bridge", "", "", "")
    with pytest.raises(BuildNetworkUnavailable):
        BuildNetwork(NetworkPolicy.parse("filtered", "", "", "")).wrap(["true"])  # not set up: never unfiltered


def _netns() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _iptables() -> str:
    return "".join(
        subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        for table in ("filter", "nat")
    )
