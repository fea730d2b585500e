"""The local emulator stack: Azurite (Blob, Queue, Table) and the Cosmos DB emulator.

The Cosmos DB emulator is the npm package `@vercel/cosmosdb-server`, patched (`patches/`, applied by
`npm ci`) and started by `cosmos_server.js` next to this file: HTTPS with keep-alive, data persisted in a
journal. Both run as child processes, each in its own process group, with their logs in
`<state_dir>/logs/`. Used by `make run`, the test fixtures and the benchmarks::

    with LocalStack.on_free_ports(tmp_path) as stack:
        os.environ.update(stack.env())

Manual use: ``python -m services.devhost.stack [STATE_DIR]`` prints the environment and runs until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from services.platform.settings import AZURITE_ACCOUNT_KEY, COSMOS_EMULATOR_KEY, azurite_connection_string

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_NODE_MODULES = REPO_ROOT / "node_modules"
COSMOS_LAUNCHER = Path(__file__).with_name("cosmos_server.js")
HOST = "127.0.0.1"

_LOG_TAIL_LINES = 40
# The emulators' data is the registry's: the Cosmos journal holds password hashes and webhook headers,
# Azurite holds every pushed blob. Whatever they create is for this user only (files 0600, folders 0700).
_PRIVATE_UMASK = 0o077


def region_accounts(regions: Sequence[str]) -> dict[str, str]:
    """The Azurite account of each local region: the first region keeps the default account (so that a
    `make run` with REGIONS finds the data of one without), each other region gets `acr<region>`."""
    return {region: "devstoreaccount1" if i == 0 else f"acr{region}" for i, region in enumerate(regions)}


class StackError(RuntimeError):
    """An emulator did not start (the message carries the end of its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_certificate(state_dir: Path, registry_domain: str | None = None) -> tuple[Path, Path]:
    """A self-signed TLS certificate for 127.0.0.1, localhost and the login servers `*.<registry_domain>`:
    (cert.pem, key.pem) under state_dir/tls.

    Made once with the `openssl` CLI (valid ten years) and reused while it has more than a day left and was
    made for the same names (tls/names.txt; a certificate made before the login-server name was added is
    replaced). The certificate is its own CA: trust it as a CA bundle. The wildcard is there because clients
    that build `https://<registry>.<domain>` themselves (az acr) check the name against the certificate.
    """
    tls_dir = state_dir / "tls"
    cert, key, names_file = tls_dir / "cert.pem", tls_dir / "key.pem", tls_dir / "names.txt"
    # The setting's default, read from the environment as the devhost's settings are, so the emulator stack
    # and the devhost sharing a state directory ask for the same names.
    domain = (registry_domain or os.environ.get("REGISTRY_DOMAIN") or "azurecr.localhost").split(":")[0]
    names = f"IP:127.0.0.1,DNS:localhost,DNS:*.{domain}"
    same_names = names_file.is_file() and names_file.read_text().strip() == names
    if cert.is_file() and key.is_file() and same_names and _certificate_valid(cert):
        return cert, key
    openssl = shutil.which("openssl")
    if openssl is None:
        raise StackError("the openssl command is needed to make the emulators' TLS certificate")
    tls_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tls_dir) as tmp:
        new_cert, new_key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        # fmt: off
        command = [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes", "-days", "3650",
            "-keyout", str(new_key), "-out", str(new_cert), "-subj", "/CN=localhost",
            "-addext", f"subjectAltName={names}",
            "-addext", "extendedKeyUsage=serverAuth",
        ]
        # fmt: on
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(f"openssl could not make a certificate: {done.stderr.strip()}")
        new_key.chmod(0o600)
        os.replace(new_key, key)
        os.replace(new_cert, cert)
    names_file.write_text(names + "\n")
    return cert, key


def _certificate_valid(cert: Path) -> bool:
    openssl = shutil.which("openssl")
    if openssl is None:
        return True
    done = subprocess.run(
        [openssl, "x509", "-checkend", "86400", "-noout", "-in", str(cert)], capture_output=True, check=False
    )
    return done.returncode == 0


def queue_connection_string(queue_port: int, host: str = HOST) -> str:
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_ACCOUNT_KEY};"
        f"QueueEndpoint=http://{host}:{queue_port}/devstoreaccount1;"
    )


class _Child:
    """One emulator process, in a process group of its own, logging to a file."""

    def __init__(self, name: str, command: Sequence[str], log: Path, env: Mapping[str, str], umask: int = -1) -> None:
        self.name = name
        self.command = list(command)
        self.log = log
        self.env = dict(env)
        self.umask = umask  # -1: inherit ours
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- {stamp} {' '.join(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=REPO_ROOT,
                start_new_session=True,
                umask=self.umask,
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def exited(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return self.process.poll() if self.process is not None else None

    def signal_group(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float) -> None:
        """SIGTERM the group, wait up to `timeout`, then SIGKILL it."""
        if self.process is None:
            return
        self.signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group (also what is left of it after the leader exited) and reap the leader."""
        if self.process is None:
            return
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self.process = None

    def tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class LocalStack:
    """Azurite and the Cosmos DB emulator on 127.0.0.1, with their data and logs under `state_dir`.

    state_dir/azurite   Azurite's data (--location), 0700
    state_dir/cosmos    the Cosmos DB emulator's journal, 0700, its files 0600
    state_dir/tls       its certificate (see ensure_certificate)
    state_dir/logs      azurite.log, cosmos.log

    Starting a new stack on the same state_dir (after stop() or a crash) finds the same data.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        azurite_blob_port: int,
        azurite_queue_port: int,
        azurite_table_port: int,
        cosmos_port: int,
        node_modules: Path = DEFAULT_NODE_MODULES,
        azurite_access_log: bool = False,
        cosmos_fsync: bool = False,
        node: str | None = None,
        regions: Sequence[str] = (),
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.azurite_blob_port = azurite_blob_port
        self.azurite_queue_port = azurite_queue_port
        self.azurite_table_port = azurite_table_port
        self.cosmos_port = cosmos_port
        self.node_modules = Path(node_modules).resolve()
        self.azurite_access_log = azurite_access_log
        self.cosmos_fsync = cosmos_fsync
        self.node = node
        self.regions = tuple(regions)  # geo-replication: one Azurite account per region, the first is home
        self.cert_file = self.state_dir / "tls" / "cert.pem"
        self.key_file = self.state_dir / "tls" / "key.pem"
        self.logs_dir = self.state_dir / "logs"
        self._azurite: _Child | None = None
        self._cosmos: _Child | None = None

    @classmethod
    def on_free_ports(cls, state_dir: Path, *, node_modules: Path = DEFAULT_NODE_MODULES) -> LocalStack:
        return cls(
            state_dir,
            azurite_blob_port=free_port(),
            azurite_queue_port=free_port(),
            azurite_table_port=free_port(),
            cosmos_port=free_port(),
            node_modules=node_modules,
        )

    # --- what the app reads ------------------------------------------------------------------------
    @property
    def cosmos_endpoint(self) -> str:
        return f"https://{HOST}:{self.cosmos_port}"

    @property
    def blob_connection_string(self) -> str:
        return azurite_connection_string(self.azurite_blob_port, HOST)

    @property
    def queue_connection_string(self) -> str:
        return queue_connection_string(self.azurite_queue_port, HOST)

    def env(self) -> dict[str, str]:
        """The environment variables of the app's settings that point it at this stack."""
        return {
            "BLOB_CONNECTION_STRING": self.blob_connection_string,
            "QUEUE_CONNECTION_STRING": self.queue_connection_string,
            "COSMOS_ENDPOINT": self.cosmos_endpoint,
            "COSMOS_KEY": COSMOS_EMULATOR_KEY,
            "COSMOS_CA_FILE": str(self.cert_file),
            # The token service's signing keys (services/auth/signing.py makes the file on first use).
            "AUTH_SIGNING_KEYS_FILE": str(self.state_dir / "auth" / "signing-keys.json"),
            # The key ring that seals secrets at rest (services/platform/secrets.py makes it on first use).
            "SECRETS_KEYS_FILE": str(self.state_dir / "auth" / "secrets-keys.json"),
        }

    def region_env(self) -> dict[str, str]:
        """The settings of a geo-replicated deployment on this stack (empty without regions): this instance's
        region (the first) and every region's account (services/replication)."""
        if not self.regions:
            return {}
        storage = {
            region: azurite_connection_string(self.azurite_blob_port, HOST, account)
            for region, account in region_accounts(self.regions).items()
        }
        return {"REGION": self.regions[0], "REGION_STORAGE": json.dumps(storage)}

    # --- lifecycle ----------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return any(c is not None and c.exited() is None for c in (self._azurite, self._cosmos))

    @property
    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in (self._azurite, self._cosmos) if c is not None and c.pid is not None}

    def start(self, timeout: float = 60.0) -> None:
        """Start both emulators and wait until they answer; StackError (with the log tail) if they do not."""
        if self.running:
            raise StackError("the stack is already running")
        node = self.node or shutil.which("node")
        if node is None:
            raise StackError("node (Node.js 20) is not on PATH")
        azurite_js = self.node_modules / "azurite" / "dist" / "src" / "azurite.js"
        cosmos_package = self.node_modules / "@vercel" / "cosmosdb-server"
        for needed in (azurite_js, cosmos_package):
            if not needed.exists():
                raise StackError(f"{needed} is missing: run `npm ci` in {REPO_ROOT}")
        ports = (self.cosmos_port, self.azurite_blob_port, self.azurite_queue_port, self.azurite_table_port)
        busy = [port for port in ports if _accepts(port)]
        if busy:  # else another server there would look like ours starting
            raise StackError(f"port(s) {', '.join(map(str, busy))} on {HOST} already in use")
        ensure_certificate(self.state_dir)
        env = dict(os.environ)
        env["NODE_PATH"] = str(self.node_modules)
        env.pop("AZURITE_ACCOUNTS", None)  # the app and its connection strings use devstoreaccount1
        if self.regions:  # ... and each other region an account of its own (the same well-known key)
            accounts = dict.fromkeys(["devstoreaccount1", *region_accounts(self.regions).values()])
            env["AZURITE_ACCOUNTS"] = ";".join(f"{account}:{AZURITE_ACCOUNT_KEY}" for account in accounts)

        # fmt: off
        azurite = [
            node, str(azurite_js),
            "--skipApiVersionCheck", "--disableTelemetry", "--loose",
            "--location", str(self.state_dir / "azurite"),
            "--blobHost", HOST, "--blobPort", str(self.azurite_blob_port),
            "--queueHost", HOST, "--queuePort", str(self.azurite_queue_port),
            "--tableHost", HOST, "--tablePort", str(self.azurite_table_port),
            "--blobKeepAliveTimeout", "60", "--queueKeepAliveTimeout", "60", "--tableKeepAliveTimeout", "60",
        ]
        cosmos = [
            node, str(COSMOS_LAUNCHER),
            "--host", HOST, "--port", str(self.cosmos_port),
            "--cert", str(self.cert_file), "--key", str(self.key_file),
            "--data-dir", str(self.state_dir / "cosmos"),
        ]
        # fmt: on
        if not self.azurite_access_log:
            azurite.append("--silent")
        if self.cosmos_fsync:
            cosmos.append("--fsync")
        _make_private(self.state_dir / "azurite")
        _make_private(self.state_dir / "cosmos")
        self._azurite = _Child("azurite", azurite, self.logs_dir / "azurite.log", env, umask=_PRIVATE_UMASK)
        self._cosmos = _Child("cosmos", cosmos, self.logs_dir / "cosmos.log", env, umask=_PRIVATE_UMASK)
        try:
            deadline = time.monotonic() + timeout
            # Cosmos first: it refuses a data directory in use, before Azurite would share one.
            self._cosmos.start()
            self._wait(self._cosmos, deadline, self._cosmos_ready)
            self._azurite.start()
            self._wait(self._azurite, deadline, self._azurite_ready)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM both process groups, wait up to `timeout` for each, SIGKILL what is left."""
        for child in (self._cosmos, self._azurite):
            if child is not None:
                child.stop(timeout)
        self._azurite = self._cosmos = None

    def kill(self) -> None:
        """SIGKILL both process groups at once, as a crash would (for tests of durability)."""
        for child in (self._cosmos, self._azurite):
            if child is not None:
                child.kill()
        self._azurite = self._cosmos = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- readiness ----------------------------------------------------------------------------------
    def _wait(self, child: _Child, deadline: float, ready: Callable[[], bool]) -> None:
        while True:
            code = child.exited()
            if code is not None:
                raise StackError(f"{child.name} exited with code {code} while starting; {child.log}:\n{child.tail()}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise StackError(f"{child.name} did not answer in time; {child.log}:\n{child.tail()}")
            time.sleep(0.05)

    def _azurite_ready(self) -> bool:
        ports = (self.azurite_blob_port, self.azurite_queue_port, self.azurite_table_port)
        return all(_accepts(port) for port in ports)

    def _cosmos_ready(self) -> bool:
        """The emulator answers GET / over TLS, verified against our certificate."""
        if not _accepts(self.cosmos_port):
            return False
        context = ssl.create_default_context(cafile=str(self.cert_file))
        connection = http.client.HTTPSConnection(HOST, self.cosmos_port, context=context, timeout=2)
        try:
            connection.request("GET", "/")
            return connection.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()


def _make_private(folder: Path) -> None:
    """`folder` 0700 and the files directly in it 0600: new ones are made so by the children's umask, these
    are what a stack before that umask left behind (the folder's mode alone already shuts others out)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    for entry in folder.iterdir():
        if entry.is_file() and not entry.is_symlink():
            entry.chmod(0o600)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stack in the foreground (state in argv[0] or .local/stack) until SIGINT or SIGTERM."""
    args = list(sys.argv[1:] if argv is None else argv)
    state_dir = Path(args[0]) if args else REPO_ROOT / ".local" / "stack"
    stack = LocalStack(
        state_dir,
        azurite_blob_port=10000,
        azurite_queue_port=10001,
        azurite_table_port=10002,
        cosmos_port=8081,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with stack:
        for name, value in stack.env().items():
            print(f"export {name}='{value}'")
        print(f"# logs in {stack.logs_dir}; Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while stack.running:
                time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
