"""Session fixtures shared by the integration and e2e suites.

`stack` starts Azurite and the Cosmos DB emulator on free ports in a temporary folder; `devhost` serves
`function_app.py` on a free port against them, in its own process, as `make run` does. Both stop at the end
of the session and leave no process behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.entra_issuer import TestIssuer

if TYPE_CHECKING:
    from services.devhost.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["tests.secrets_grep"]  # the secrets grep of the whole run: fails the run on a leaked secret


# Azurite serves an account per region of these (the first keeps the default account): the geo-replication
# tests run a devhost with `local_stack.region_env()`; every other devhost sees one region, as before.
GEO_REGIONS = ("westeurope", "eastus", "japaneast")


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The emulators (Azurite and the Cosmos DB emulator) on free ports."""
    from services.devhost.stack import LocalStack, free_port

    state = tmp_path_factory.mktemp("stack")
    local = LocalStack(
        state,
        azurite_blob_port=free_port(),
        azurite_queue_port=free_port(),
        azurite_table_port=free_port(),
        cosmos_port=free_port(),
        node_modules=ROOT / "node_modules",
        regions=GEO_REGIONS,
    )
    with local:
        yield local


@pytest.fixture(scope="session")
def stack(local_stack: LocalStack) -> dict[str, str]:
    """The environment variables the app's settings read to use the emulators."""
    return local_stack.env()


@dataclass(frozen=True)
class Devhost:
    host: str
    env: dict[str, str]
    log: Path
    pid: int = 0  # the devhost process (the supervisor when it runs worker processes)

    @property
    def url(self) -> str:
        return f"http://{self.host}"


@contextmanager
def running_devhost(env: dict[str, str], log_dir: Path) -> Iterator[Devhost]:
    """Serve the registry in its own process against the emulators named by `env` (extra settings go in
    `env` too, e.g. BLOB_DOWNLOAD_MODE=proxy); stop it on exit."""
    from services.devhost.stack import free_port

    port = free_port()
    # The default registry of a test devhost takes no credentials (`authDisabled`, dev/test only), so the
    # data-plane suites run as anonymous clients; the auth tests make registries of their own.
    # Pushes are scanned only where scanning is tested (the scanner's referrers would show up in other
    # tests' listings).
    defaults = {"DEFAULT_REGISTRY_AUTH_DISABLED": "true", "SCANNER_ENABLED": "false"}
    full_env = os.environ | defaults | env | {"API_PORT": str(port), "LOG_LEVEL": env.get("LOG_LEVEL", "warning")}
    log = log_dir / f"devhost-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.devhost", "serve", "--port", str(port)],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    host = Devhost(f"127.0.0.1:{port}", full_env, log, process.pid)
    try:
        _wait_until_serving(host, process)
        yield host
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def entra_issuer() -> TestIssuer:
    """The Entra ID stand-in the session's devhost trusts (management calls and /oauth2/exchange)."""
    return TestIssuer()


@pytest.fixture(scope="session")
def devhost(
    stack: dict[str, str], entra_issuer: TestIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Devhost]:
    env = stack | {"ENTRA_ISSUERS": entra_issuer.setting()}
    with running_devhost(env, tmp_path_factory.mktemp("devhost")) as host:
        yield host


def _wait_until_serving(host: Devhost, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"devhost exited with {process.returncode}:\n{host.log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{host.url}/v2/", timeout=2).status_code in (200, 401):  # 401: asks for credentials
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"devhost did not start within 60 s:\n{host.log.read_text()[-4000:]}")
