"""Fixtures for the end-to-end suite that drives real registry clients.

Target registry: `E2E_REGISTRY=127.0.0.1:PORT` if set (e.g. a CNCF distribution started by hand), otherwise
the `devhost` session fixture from tests/conftest.py. Every test here is marked `e2e`.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tests.e2e.clients import (
    Buildah,
    ContainersConfig,
    OrasArtifactClient,
    Podman,
    RegistryHttp,
    Skopeo,
    StorageRoot,
    ToolMissingError,
)

E2E_DIR = Path(__file__).resolve().parent
T = TypeVar("T")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item of the session: mark only the ones under tests/e2e.
    for item in items:
        if E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def registry_host(request: pytest.FixtureRequest) -> str:
    """`host:port` of the registry under test."""
    host = os.environ.get("E2E_REGISTRY", "").strip()
    if host:
        host = re.sub(r"^https?://", "", host).rstrip("/")
    else:
        try:
            devhost = request.getfixturevalue("devhost")
        except pytest.FixtureLookupError as exc:
            pytest.fail(
                "no registry for the e2e suite: set E2E_REGISTRY=127.0.0.1:PORT or provide the `devhost` "
                f"session fixture in tests/conftest.py ({exc})"
            )
        host = str(devhost.host)
    try:
        response = httpx.get(f"http://{host}/v2/", timeout=10)
    except httpx.HTTPError as exc:
        pytest.fail(f"registry at http://{host}/v2/ is not reachable: {exc!r}")
    if response.status_code not in (200, 401):
        pytest.fail(f"http://{host}/v2/ answered {response.status_code}, not a registry: {response.text}")
    return host


@pytest.fixture(scope="session")
def registry_url(registry_host: str) -> str:
    return f"http://{registry_host}"


@pytest.fixture
def registry_http(registry_url: str) -> Iterator[RegistryHttp]:
    client = RegistryHttp(registry_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def repo_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory of repository names unique to this test (and this run): `e2e/<test>-<suffix>-<random>`."""
    test = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60].strip("-")
    run = uuid.uuid4().hex[:8]

    def make(suffix: str = "repo") -> str:
        clean = re.sub(r"[^a-z0-9]+", "-", suffix.lower()).strip("-") or "repo"
        return f"e2e/{test}-{clean}-{run}"

    return make


def _tool(factory: Callable[[], T]) -> T:
    """Build a client wrapper; a missing binary fails the test loudly (never a skip)."""
    try:
        return factory()
    except ToolMissingError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def containers_config(tmp_path: Path) -> ContainersConfig:
    return ContainersConfig.create(tmp_path / "containers")


@pytest.fixture
def skopeo(containers_config: ContainersConfig) -> Skopeo:
    return _tool(lambda: Skopeo(containers_config))


@pytest.fixture
def storage_root(tmp_path: Path) -> Iterator[StorageRoot]:
    roots = StorageRoot.create(tmp_path / "storage")
    yield roots
    roots.cleanup()


@pytest.fixture
def buildah(storage_root: StorageRoot, containers_config: ContainersConfig) -> Buildah:
    return _tool(lambda: Buildah(storage_root, containers_config))


@pytest.fixture
def podman(storage_root: StorageRoot, containers_config: ContainersConfig) -> Podman:
    """podman sharing the test's storage root with `buildah` (so it can push what buildah committed)."""
    return _tool(lambda: Podman(storage_root, containers_config))


@pytest.fixture
def fresh_podman(tmp_path: Path, containers_config: ContainersConfig) -> Iterator[Podman]:
    """podman with a second, empty storage root: pulls land in a clean store."""
    roots = StorageRoot.create(tmp_path / "fresh-storage")
    yield _tool(lambda: Podman(roots, containers_config))
    roots.cleanup()


@pytest.fixture
def oras_client(registry_host: str) -> OrasArtifactClient:
    return OrasArtifactClient(registry_host)
