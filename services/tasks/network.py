"""The network a run's RUN steps and `cmd` steps see (TASKS_BUILD_NETWORK): code the run's author wrote must
not reach the metadata address (IMDS, 169.254.169.254), Azure's wireserver (168.63.129.16), the runner's host
(its loopback: the devhost locally, the Container Apps identity endpoint in Azure) or the service's private
endpoints.

    filtered  (default) buildah runs inside a network namespace of this runner's own (`ip netns exec`), and a
              cmd step's container joins it (podman `--network ns:`), joined
              to the host by a veth pair and NATed out. The HOST side, which nothing in the namespace can
              change, refuses with iptables whatever comes in on that veth to: link-local 169.254.0.0/16, the
              wireserver, 0/8, loopback, multicast and reserved, the runners' own subnet, every address of the
              host itself (the INPUT chain: whichever address, added whenever), and the private ranges of
              TASKS_BUILD_NETWORK_DENY (RFC 1918 and 100.64.0.0/10 by default). TASKS_BUILD_NETWORK_ALLOW names
              addresses reachable all the same (an internal package mirror). DNS goes to the resolvers of
              TASKS_BUILD_DNS (default: the host's own non-loopback ones), port 53 only. No IPv6 in there.
    none      no network at all for RUN steps (`unshare --net`: a namespace with only a loopback, down)
    host      the runner's own network, unfiltered: only by explicit choice, logged loudly at start

The runner pulls a build's base images itself, in the host namespace with the run's credentials, and builds
with `--pull=never`: the build makes no registry calls of its own (it could not reach a registry on loopback
or a private endpoint anyway). Pushes stay in the host namespace, as before.

Fail closed: when `filtered` (or `none`) cannot be set up (no CAP_NET_ADMIN/CAP_SYS_ADMIN, no `ip` or
`iptables`), every run ends Error saying why and which setting to change; nothing builds on the host network.

Names: namespace `acrb<8 hex>`, veth `acrb<8 hex>h` (host) / `...n`, chains `ACRB-<8 hex>-IN`/`-FWD`, rules in
INPUT/FORWARD/POSTROUTING tagged with the namespace's name as a comment, a /30 of 10.233.0.0/16 per runner.
Each runner holds a lock file (/run/acr-tasks-net/<name>.lock) as long as it lives; at start a runner removes
every namespace, veth, rule and chain whose lock nobody holds (left by a runner that crashed).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger("tasks.network")

Mode = Literal["filtered", "none", "host"]
MODES: tuple[Mode, ...] = ("filtered", "none", "host")

# Refused always (after the DNS exception): not reachable from a build whatever TASKS_BUILD_NETWORK_ALLOW says.
ALWAYS_REFUSED = (
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",  # link-local: IMDS 169.254.169.254, and the Container Apps / App Service endpoints
    "168.63.129.16/32",  # Azure's wireserver (its DNS on port 53 stays reachable when it is the resolver)
    "224.0.0.0/4",
    "240.0.0.0/4",
)
SUBNET = ipaddress.IPv4Network("10.233.0.0/16")  # a /30 of it per runner's namespace
STATE_DIR = Path("/run/acr-tasks-net")
NETNS_DIR = Path("/etc/netns")  # `ip netns exec` binds /etc/netns/<name>/resolv.conf over /etc/resolv.conf
PREFIX = "acrb"
_NAME = re.compile(r"^acrb[0-9a-f]{8}$")
_CHAIN = re.compile(r"^-N (ACRB-([0-9a-f]{8})-(?:IN|FWD))$")
COMMAND_SECONDS = 15.0
SETTING_HINT = (
    "set TASKS_BUILD_NETWORK=none to build with no network for RUN steps, or TASKS_BUILD_NETWORK=host to build "
    "with the runner's own network, unfiltered (RUN steps then reach the metadata address and the host)"
)


class BuildNetworkUnavailable(Exception):
    """The build network the settings ask for cannot be set up here: runs end Error with this message."""


class NetworkPolicyInvalid(ValueError):
    pass


@dataclass(frozen=True)
class NetworkPolicy:
    mode: Mode
    allow: tuple[ipaddress.IPv4Network, ...] = ()
    deny: tuple[ipaddress.IPv4Network, ...] = ()
    dns: tuple[ipaddress.IPv4Address, ...] = ()  # empty: the host's own non-loopback resolvers

    @classmethod
    def parse(cls, mode: str, allow: str, deny: str, dns: str) -> NetworkPolicy:
        if mode not in MODES:
            raise NetworkPolicyInvalid(f"TASKS_BUILD_NETWORK must be one of {', '.join(MODES)}, not {mode!r}")
        return cls(
            mode,
            _networks(allow, "TASKS_BUILD_NETWORK_ALLOW"),
            _networks(deny, "TASKS_BUILD_NETWORK_DENY"),
            tuple(_address(text, "TASKS_BUILD_DNS") for text in _items(dns)),
        )


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _networks(text: str, setting: str) -> tuple[ipaddress.IPv4Network, ...]:
    found: list[ipaddress.IPv4Network] = []
    for item in _items(text):
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError as error:
            raise NetworkPolicyInvalid(f"{setting}: {item!r} is not an address or CIDR range") from error
        if not isinstance(network, ipaddress.IPv4Network):
            raise NetworkPolicyInvalid(f"{setting}: {item!r}: builds have no IPv6, only IPv4 ranges apply")
        found.append(network)
    return tuple(found)


def _address(text: str, setting: str) -> ipaddress.IPv4Address:
    try:
        address = ipaddress.ip_address(text)
    except ValueError as error:
        raise NetworkPolicyInvalid(f"{setting}: {text!r} is not an IP address") from error
    if not isinstance(address, ipaddress.IPv4Address) or address.is_loopback:
        raise NetworkPolicyInvalid(f"{setting}: {text!r}: a build reaches only IPv4 resolvers off the loopback")
    return address


def host_resolvers(
    files: Sequence[Path] = (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf")),
) -> tuple[ipaddress.IPv4Address, ...]:
    """The host's IPv4 resolvers a namespace can reach (not loopback: 127.0.0.53 is systemd-resolved's stub,
    whose upstreams are in /run/systemd/resolve/resolv.conf)."""
    for file in files:
        with contextlib.suppress(OSError):
            found: list[ipaddress.IPv4Address] = []
            for line in file.read_text().splitlines()[:200]:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    with contextlib.suppress(ValueError):
                        address = ipaddress.ip_address(parts[1])
                        if isinstance(address, ipaddress.IPv4Address) and not address.is_loopback:
                            found.append(address)
            if found:
                return tuple(dict.fromkeys(found))[:3]
    return ()


# --- commands -----------------------------------------------------------------------------------------------
def _run(argv: Sequence[str], *, check: bool = True) -> str:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_SECONDS, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BuildNetworkUnavailable(f"`{shlex.join(argv)}` failed: {error}") from error
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise BuildNetworkUnavailable(f"`{shlex.join(argv)}` failed: {detail[-1] if detail else done.returncode}")
    return done.stdout


def _quiet(argv: Sequence[str]) -> None:
    with contextlib.suppress(BuildNetworkUnavailable):
        _run(argv, check=False)


# --- one runner's namespace -----------------------------------------------------------------------------------
class BuildNetwork:
    """The build network of one runner process: set up once (`open`), used by every run it executes, removed
    at exit (`close`) or, after a crash, by the next runner's `open`."""

    def __init__(self, policy: NetworkPolicy, state_dir: Path = STATE_DIR, netns_dir: Path = NETNS_DIR) -> None:
        self.policy = policy
        self.state_dir, self.netns_dir = state_dir, netns_dir
        self.name = ""
        self._lock: int | None = None
        self._unshare_checked = False

    @property
    def mode(self) -> Mode:
        return self.policy.mode

    @property
    def ready(self) -> bool:
        if self.mode == "none":
            return self._unshare_checked
        return self.mode == "host" or self._lock is not None

    def describe(self) -> str:
        """A line for each run's log: what its RUN steps can reach."""
        if self.mode == "host":
            return "Build network: host (TASKS_BUILD_NETWORK=host: RUN steps share the runner's network, unfiltered)"
        if self.mode == "none":
            return "Build network: none (RUN steps have no network)"
        return (
            "Build network: filtered (RUN steps reach the internet; not the metadata address, the runner's host "
            "or private addresses)"
        )

    def wrap(self, argv: Sequence[str], step_network: str | None = None) -> list[str]:
        """`argv` (a buildah build or run) under the build network; a step's `network: none` takes it away."""
        if self.mode == "none" or step_network == "none":
            return ["unshare", "--net", "--", *argv]
        if self.mode == "filtered":
            if self._lock is None:
                raise BuildNetworkUnavailable("the filtered build network is not set up")
            return ["ip", "netns", "exec", self.name, *argv]
        return list(argv)

    def container_arguments(self, step_network: str | None = None) -> list[str]:
        """podman's `--network` for a cmd step's container (services/tasks/containers.py): the container joins
        this runner's namespace, so the same host-side refusals apply; `none` (the mode, or the step's
        `network: none`) gives it loopback only; TASKS_BUILD_NETWORK=host the runner's own network. podman
        itself (pulling the image) stays in the runner's namespace."""
        if self.mode == "none" or step_network == "none":
            return ["--network", "none"]
        if self.mode == "filtered":
            if self._lock is None:
                raise BuildNetworkUnavailable("the filtered build network is not set up")
            return ["--network", f"ns:/run/netns/{self.name}"]
        return ["--network", "host"]

    # --- setting up -------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Set the network up; BuildNetworkUnavailable (with what to change) when it cannot be."""
        if self.ready:
            return
        if self.mode == "none":
            if shutil.which("unshare") is None:
                raise BuildNetworkUnavailable(f"TASKS_BUILD_NETWORK=none needs `unshare` (util-linux); {SETTING_HINT}")
            try:
                _run(["unshare", "--net", "--", "true"])
            except BuildNetworkUnavailable as error:
                raise BuildNetworkUnavailable(
                    f"TASKS_BUILD_NETWORK=none cannot make a network namespace ({error}): the runner needs "
                    "CAP_SYS_ADMIN; or set TASKS_BUILD_NETWORK=host (unfiltered)"
                ) from error
            self._unshare_checked = True
            return
        try:
            self._open_filtered()
        except BuildNetworkUnavailable as error:
            raise BuildNetworkUnavailable(
                f"TASKS_BUILD_NETWORK=filtered could not be set up ({error}): the runner needs root with "
                f"CAP_NET_ADMIN and CAP_SYS_ADMIN, `ip` (iproute2) and `iptables`; {SETTING_HINT}"
            ) from error

    def _open_filtered(self) -> None:
        for tool in ("ip", "iptables"):
            if shutil.which(tool) is None:
                raise BuildNetworkUnavailable(f"`{tool}` is not installed")
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.netns_dir.mkdir(parents=True, exist_ok=True)
            allocation = os.open(self.state_dir / "alloc.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise BuildNetworkUnavailable(f"{self.state_dir}: {error.strerror}") from error
        try:
            fcntl.flock(allocation, fcntl.LOCK_EX)
            remove_stale(self.state_dir, self.netns_dir)
            name = PREFIX + secrets.token_hex(4)
            lock = os.open(self.state_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.name, self._lock = name, lock
            try:
                self._create(name, _free_subnet())
            except BaseException:
                self.close()
                raise
        finally:
            os.close(allocation)
        log.info("build network: namespace %s (filtered)", self.name)

    def _create(self, name: str, subnet: ipaddress.IPv4Network) -> None:
        gateway, inside = subnet[1], subnet[2]
        host_if, ns_if = f"{name}h", f"{name}n"
        _run(["ip", "netns", "add", name])
        _run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if])
        _run(["ip", "link", "set", ns_if, "netns", name])
        # No IPv6: else the namespace reaches the host's link-local address on the veth.
        _disable_ipv6(Path(f"/proc/sys/net/ipv6/conf/{host_if}/disable_ipv6"))
        _run(["ip", "netns", "exec", name, "sh", "-c", _NO_IPV6])
        _run(["ip", "addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", host_if])
        _run(["ip", "link", "set", host_if, "up"])
        _run(["ip", "-n", name, "addr", "add", f"{inside}/{subnet.prefixlen}", "dev", ns_if])
        _run(["ip", "-n", name, "link", "set", ns_if, "up"])
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        _run(["ip", "-n", name, "route", "add", "default", "via", str(gateway)])
        resolvers = self.policy.dns or host_resolvers()
        if not resolvers:
            log.warning("build network: no resolver a namespace can reach; RUN steps have no DNS (TASKS_BUILD_DNS)")
        directory = self.netns_dir / name
        directory.mkdir(exist_ok=True)
        (directory / "resolv.conf").write_text("".join(f"nameserver {r}\n" for r in resolvers))
        (directory / "hosts").write_text("127.0.0.1 localhost\n")
        forward = Path("/proc/sys/net/ipv4/ip_forward")
        if forward.read_text().strip() != "1":
            try:
                forward.write_text("1")
            except OSError as error:
                raise BuildNetworkUnavailable(f"cannot turn on IPv4 forwarding: {error.strerror}") from error
            log.warning("build network: turned IPv4 forwarding on (net.ipv4.ip_forward=1) for the build NAT")
        self._rules(name, subnet, resolvers)

    def _rules(self, name: str, subnet: ipaddress.IPv4Network, resolvers: Sequence[ipaddress.IPv4Address]) -> None:
        chain_in, chain_fwd = _chains(name)
        reject = ["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"]
        for chain in (chain_in, chain_fwd):
            _run(["iptables", "-N", chain])
            for resolver in resolvers:
                for protocol in ("udp", "tcp"):
                    dns = ["-d", f"{resolver}/32", "-p", protocol, "--dport", "53"]
                    _run(["iptables", "-A", chain, *dns, "-j", "ACCEPT"])
            for refused in (*ALWAYS_REFUSED, str(SUBNET)):
                _run(["iptables", "-A", chain, "-d", refused, *reject])
            for allowed in self.policy.allow:
                _run(["iptables", "-A", chain, "-d", str(allowed), "-j", "ACCEPT"])
        # INPUT: the host itself, at any of its addresses
        _run(["iptables", "-A", chain_in, *reject])
        for denied in self.policy.deny:
            _run(["iptables", "-A", chain_fwd, "-d", str(denied), *reject])
        _run(["iptables", "-A", chain_fwd, "-j", "ACCEPT"])
        tag = ["-m", "comment", "--comment", name]
        _run(["iptables", "-I", "INPUT", "1", "-i", f"{name}h", *tag, "-j", chain_in])
        _run(["iptables", "-I", "FORWARD", "1", "-i", f"{name}h", *tag, "-j", chain_fwd])
        # Replies to what the build opened come back through FORWARD too, on the other interface.
        _run(["iptables", "-I", "FORWARD", "1", "-o", f"{name}h", "-m", "conntrack", "--ctstate",
              "ESTABLISHED,RELATED", *tag, "-j", "ACCEPT"])  # fmt: skip
        _run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", str(subnet), "!", "-o", f"{name}h", *tag,
              "-j", "MASQUERADE"])  # fmt: skip

    def close(self) -> None:
        """Remove this runner's namespace, veth, rules and lock (at exit; idempotent)."""
        if self._lock is None:
            return
        remove_network(self.name, self.state_dir, self.netns_dir)
        with contextlib.suppress(OSError):
            (self.state_dir / f"{self.name}.lock").unlink()
        os.close(self._lock)
        self._lock = None


_NO_IPV6 = (
    "for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 /proc/sys/net/ipv6/conf/default/disable_ipv6 "
    '/proc/sys/net/ipv6/conf/*/disable_ipv6; do if [ -e "$f" ]; then echo 1 > "$f" || exit 1; fi; done'
)


def _disable_ipv6(switch: Path) -> None:
    if switch.exists():
        try:
            switch.write_text("1")
        except OSError as error:
            raise BuildNetworkUnavailable(f"cannot turn IPv6 off on the veth: {error.strerror}") from error


def _chains(name: str) -> tuple[str, str]:
    suffix = name[len(PREFIX) :]
    return f"ACRB-{suffix}-IN", f"ACRB-{suffix}-FWD"


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 of SUBNET no interface of the host has an address in (under the allocation lock)."""
    used: set[ipaddress.IPv4Network] = set()
    for line in _run(["ip", "-4", "-o", "addr", "show"]).splitlines():
        for word in line.split():
            if "/" in word:
                with contextlib.suppress(ValueError):
                    address = ipaddress.ip_interface(word).ip
                    if address in SUBNET:
                        used.add(ipaddress.IPv4Network(f"{address}/30", strict=False))
    for candidate in SUBNET.subnets(new_prefix=30):
        if candidate not in used:
            return candidate
    raise BuildNetworkUnavailable(f"no free /30 left in {SUBNET}")


# --- cleaning up ------------------------------------------------------------------------------------------------
def remove_network(name: str, state_dir: Path = STATE_DIR, netns_dir: Path = NETNS_DIR) -> None:
    """Remove everything of namespace `name` that exists (rules, chains, veth, namespace, its /etc/netns)."""
    for table, chain in (("filter", "INPUT"), ("filter", "FORWARD"), ("nat", "POSTROUTING")):
        try:
            listed = _run(["iptables", "-t", table, "-S", chain])
        except BuildNetworkUnavailable:
            continue
        for line in listed.splitlines():
            words = shlex.split(line)
            tagged = len(words) > 2 and words[0] == "-A" and "--comment" in words
            if tagged and words[words.index("--comment") + 1] == name:
                _quiet(["iptables", "-t", table, "-D", *words[1:]])
    for chain in _chains(name):
        _quiet(["iptables", "-F", chain])
        _quiet(["iptables", "-X", chain])
    _quiet(["ip", "link", "del", f"{name}h"])
    _quiet(["ip", "netns", "del", name])
    shutil.rmtree(netns_dir / name, ignore_errors=True)


def stale_names(state_dir: Path = STATE_DIR) -> set[str]:
    """Build networks that exist on this host (namespaces, chains, lock files) whose runner is gone."""
    names: set[str] = set()
    with contextlib.suppress(BuildNetworkUnavailable):
        names.update(w for line in _run(["ip", "netns", "list"]).splitlines() for w in line.split()[:1])
    with contextlib.suppress(BuildNetworkUnavailable):
        for line in _run(["iptables", "-S"]).splitlines():
            if (match := _CHAIN.match(line)) is not None:
                names.add(PREFIX + match.group(2))
    with contextlib.suppress(OSError):
        names.update(p.name.removesuffix(".lock") for p in state_dir.glob(f"{PREFIX}*.lock"))
    return {name for name in names if _NAME.match(name) and not _held(state_dir / f"{name}.lock")}


def _held(lock: Path) -> bool:
    """Whether a live runner holds this lock (an flock dies with its process)."""
    try:
        descriptor = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def remove_stale(state_dir: Path = STATE_DIR, netns_dir: Path = NETNS_DIR) -> list[str]:
    """Remove the build networks of runners that died without cleaning up; answers their names."""
    removed = sorted(stale_names(state_dir))
    for name in removed:
        remove_network(name, state_dir, netns_dir)
        with contextlib.suppress(OSError):
            (state_dir / f"{name}.lock").unlink()
        log.warning("build network: removed %s, left by a runner that stopped", name)
    return removed
