"""The real Azure CLI (PyPI `azure-cli`, pinned) against a devhost over https: `az cloud register` reads our
cloud metadata document (GET /metadata/endpoints), `az cloud set` makes it current, and the data-plane
`az acr repository ...` commands run with `--username/--password` (a registry's admin user; no `az login`);
so do `az acr repository list-deleted` and `az acr manifest restore` on what the first test deleted (the
registry has soft delete on; `az acr manifest list-deleted` reads the policy through ARM, so it needs a login).

What az needs and how it gets it here:
- https only: the devhost serves TLS beside http (API_TLS_PORT) with its own certificate, which names
  `*.azurecr.localhost`; az trusts it through REQUESTS_CA_BUNDLE.
- az builds `https://<registry><acrLoginServer suffix>`: the suffix the metadata announces carries the TLS
  port (`azurecr.localhost:<port>`), because the registry answers on the same address as the API.
- `<name>.azurecr.localhost` does not resolve on every machine (no systemd-resolved): az goes through a
  CONNECT proxy of this module (HTTPS_PROXY) that sends every tunnel to the devhost's TLS port, so nothing
  global (/etc/hosts) is touched; TLS stays end to end, so the certificate's names are still checked.

azure-cli is installed once into `.local/azcli-venv` (reused while it holds the pinned version; a fresh
install took 98 s on a 2-core machine, the tests themselves about 15 s). If pip cannot install it the test
fails: it is never skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.devhost.stack import free_port
from services.management.access import enable_admin_user
from services.management.registries import create_registry
from services.management.store import RegistryStore
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from tests.conftest import ROOT, Devhost, running_devhost
from tests.integration.conftest import settings_from_env
from tests.integration.test_distribution_api import image_manifest, push_manifest

AZURE_CLI = "azure-cli==2.91.0"
VENV = ROOT / ".local" / "azcli-venv"
CLOUD = "acrserverless"


def _installed_version(venv: Path) -> str:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('azure-cli'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else ""


@pytest.fixture(scope="session")
def az_venv() -> Path:
    """A venv holding the pinned azure-cli (made once; a broken or other-version venv is made again)."""
    wanted = AZURE_CLI.split("==")[1]
    if (VENV / "bin" / "az").is_file() and _installed_version(VENV) == wanted:
        return VENV
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    done = subprocess.run(
        [str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", AZURE_CLI],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"pip could not install {AZURE_CLI}: {done.stderr[-3000:]}")
    print(f"installed {AZURE_CLI} into {VENV} in {time.monotonic() - started:.0f} s")
    return VENV


class TunnelProxy:
    """An HTTP CONNECT proxy on 127.0.0.1 that tunnels every request to one local port, whatever host it
    names: az reaches `<registry>.azurecr.localhost:<port>` without a DNS entry for it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connects: list[str] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            method, authority = head.split(b"\r\n", 1)[0].split()[:2]
            port = int(authority.rsplit(b":", 1)[1]) if b":" in authority else 443
            # Only tunnels to the devhost's TLS port: anything else az tries (it runs offline) is refused.
            if method != b"CONNECT" or port != self.target_port:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            self.connects.append(authority.decode())
            with socket.create_connection(("127.0.0.1", self.target_port)) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _pump(client, upstream)

    def close(self) -> None:
        self._closed = True
        self.server.close()


def _pump(a: socket.socket, b: socket.socket) -> None:
    while True:
        readable, _, _ = select.select([a, b], [], [], 60)
        if not readable:
            return
        for source in readable:
            data = source.recv(65536)
            if not data:
                return
            (b if source is a else a).sendall(data)


@dataclass(frozen=True)
class AzRegistry:
    devhost: Devhost
    name: str
    password: str  # the admin user's (user name = registry name)
    tls_port: int
    ca_file: Path
    proxy: TunnelProxy


async def _prepare(env: dict[str, str], name: str) -> str:
    settings = settings_from_env(env)
    metadata, blobs = Cosmos(settings), BlobStore(settings)
    await metadata.open()
    await blobs.open()
    try:
        await create_registry(metadata, blobs, settings, name, "Premium")
        passwords = await enable_admin_user(metadata, name)
        # soft delete on from the start (the devhost caches registry documents): the deletes of the first
        # test are kept, and the last test lists and restores them with az
        registries = RegistryStore(metadata)
        doc = await registries.get_registry(name)
        assert doc is not None
        doc.policies = {"softDeletePolicy": {"status": "enabled", "retentionDays": 7}}
        await registries.put_registry(doc)
    finally:
        await metadata.close()
        await blobs.close()
    return passwords[0].value


@pytest.fixture(scope="module")
def az_registry(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzRegistry]:
    name = "e2eaz" + uuid.uuid4().hex[:10]
    state, tls_port = tmp_path_factory.mktemp("e2e-az-state"), free_port()
    env = stack | {"API_TLS_PORT": str(tls_port), "STATE_DIR": str(state)}
    password = asyncio.run(_prepare(stack, name))
    proxy = TunnelProxy(tls_port)
    try:
        with running_devhost(env, tmp_path_factory.mktemp("e2e-az")) as devhost:
            yield AzRegistry(devhost, name, password, tls_port, state / "tls" / "cert.pem", proxy)
    finally:
        proxy.close()


class Az:
    """The az command with a config directory of its own, trusting the devhost and going through the proxy."""

    def __init__(self, venv: Path, config_dir: Path, reg: AzRegistry) -> None:
        self.binary = str(venv / "bin" / "az")
        self.reg = reg
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(config_dir),
            "AZURE_CONFIG_DIR": str(config_dir),
            "REQUESTS_CA_BUNDLE": str(reg.ca_file),
            "HTTPS_PROXY": f"http://127.0.0.1:{reg.proxy.port}",
            "NO_PROXY": "",
            "AZURE_CORE_COLLECT_TELEMETRY": "false",
            "AZURE_CORE_NO_COLOR": "true",
            "AZURE_CORE_SURVEY_MESSAGE": "false",
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=300, check=False
        )
        if check and done.returncode != 0:
            pytest.fail(f"az {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
        return done

    def acr(self, *args: str, check: bool = True) -> Any:
        """`az acr repository ...` with the admin user's credentials; the JSON it prints."""
        creds = ["--name", self.reg.name, "--username", self.reg.name, f"--password={self.reg.password}"]
        done = self.run("acr", "repository", *args, *creds, "--output", "json", check=check)
        return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else done


@pytest.fixture(scope="module")
def az(az_venv: Path, az_registry: AzRegistry, tmp_path_factory: pytest.TempPathFactory) -> Az:
    return Az(az_venv, tmp_path_factory.mktemp("azure-config"), az_registry)


def _push_images(reg: AzRegistry) -> dict[str, str]:
    """Two tags in `team/app` and one in `tools/x`, pushed over https with the admin user (Basic)."""
    digests: dict[str, str] = {}
    with httpx.Client(
        base_url=f"https://127.0.0.1:{reg.tls_port}",
        headers={"Host": f"{reg.name}.azurecr.localhost:{reg.tls_port}"},
        auth=(reg.name, reg.password),
        verify=ssl.create_default_context(cafile=str(reg.ca_file)),
        timeout=60,
    ) as client:
        for repo, tag in (("team/app", "v1"), ("team/app", "v2"), ("tools/x", "latest")):
            digests[f"{repo}:{tag}"], _ = push_manifest(client, repo, tag, image_manifest(client, repo))
    return digests


def test_az_cloud_register_and_acr_repository_commands(az: Az, az_registry: AzRegistry) -> None:
    reg = az_registry
    suffix = f"azurecr.localhost:{reg.tls_port}"
    az.run("cloud", "register", "--name", CLOUD, "--endpoint-resource-manager", f"https://127.0.0.1:{reg.tls_port}")
    az.run("cloud", "set", "--name", CLOUD)
    shown = json.loads(az.run("cloud", "show", "--output", "json").stdout)
    assert shown["name"] == CLOUD and shown["isActive"] is True
    assert shown["suffixes"]["acrLoginServerEndpoint"] == f".{suffix}"
    # az keeps the --endpoint-resource-manager it was given (no trailing slash) over the document's.
    assert shown["endpoints"]["resourceManager"].rstrip("/") == f"https://127.0.0.1:{reg.tls_port}"
    assert shown["endpoints"]["activeDirectory"] == "https://login.microsoftonline.com"

    digests = _push_images(reg)
    assert az.acr("list") == ["team/app", "tools/x"]
    shown_repo = az.acr("show", "--repository", "team/app")
    assert shown_repo["imageName"] == "team/app" and shown_repo["tagCount"] == 2
    tags = az.acr("show-tags", "--repository", "team/app")
    assert sorted(tags) == ["v1", "v2"]
    # `az acr repository show-manifests` is gone from az 2.x; `az acr manifest list-metadata` replaced it.
    listed = az.run(
        "acr", "manifest", "list-metadata", "--registry", reg.name, "--name", "team/app",
        "--username", reg.name, f"--password={reg.password}", "--output", "json",
    )  # fmt: skip
    manifests = json.loads(listed.stdout)
    assert {m["digest"] for m in manifests} == {digests["team/app:v1"], digests["team/app:v2"]}
    tag = az.acr("show", "--image", "team/app:v1")
    assert tag["name"] == "v1" and tag["digest"] == digests["team/app:v1"]

    updated = az.acr("update", "--image", "team/app:v1", "--write-enabled", "false")
    assert updated["changeableAttributes"]["writeEnabled"] is False
    az.acr("update", "--image", "team/app:v1", "--write-enabled", "true")

    az.acr("untag", "--image", "team/app:v2")
    assert az.acr("show-tags", "--repository", "team/app") == ["v1"]
    az.acr("delete", "--repository", "tools/x", "--yes")
    assert az.acr("list") == ["team/app"]
    # Every data-plane call went to the login server az built from the metadata's suffix.
    assert f"{reg.name}.{suffix}" in reg.proxy.connects


def test_az_refuses_a_login_server_of_another_cloud_and_a_wrong_password(az: Az, az_registry: AzRegistry) -> None:
    # Runs after the test above (same module, same config dir): the cloud is registered and current.
    reg = az_registry
    wrong = az.run(
        "acr", "repository", "list", "--name", reg.name, "--username", reg.name, "--password", "not-it", check=False
    )
    assert wrong.returncode != 0
    assert "unauthorized" in wrong.stderr.lower() or "401" in wrong.stderr, wrong.stderr


def test_az_lists_soft_deleted_repositories_and_restores_manifests(az: Az, az_registry: AzRegistry) -> None:
    # Runs after the first test: it untagged team/app:v2 and deleted tools/x, with soft delete on.
    reg = az_registry
    assert az.acr("list") == ["team/app"]
    assert az.acr("list-deleted") == ["tools/x"]
    creds = ["--registry", reg.name, "--username", reg.name, f"--password={reg.password}", "--output", "json"]
    for image in ("team/app:v2", "tools/x:latest"):  # the tag's most recently deleted manifest
        restored = json.loads(az.run("acr", "manifest", "restore", "--name", image, "--yes", *creds).stdout)
        assert restored["tags"] == [image.split(":")[1]]
    assert sorted(az.acr("show-tags", "--repository", "team/app")) == ["v1", "v2"]
    assert az.acr("list") == ["team/app", "tools/x"] and az.acr("list-deleted") == []
    again = az.run("acr", "manifest", "restore", "--name", "team/app:v2", "--yes", *creds, check=False)
    assert again.returncode != 0 and "No deleted manifests found for tag: v2" in again.stderr
