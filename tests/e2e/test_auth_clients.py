"""Real clients with credentials: skopeo and podman with `--creds` (admin user and tokens), `docker login`
(the CLI logs in without a daemon; plain HTTP is allowed for loopback), and the azure-containerregistry
SDK with a credential that returns a test-issuer Entra token (exchange -> refresh -> access), plus
anonymous pull with that SDK.

The registry under test is the default registry of a devhost of this module's own, with authentication on
(test devhosts otherwise switch it off for the data-plane suites) and the test Entra issuer trusted.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import socket
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.containerregistry import ContainerRegistryClient
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from services.devhost.stack import free_port
from services.management.access import assign_role, create_token, enable_admin_user, put_scope_map, update_registry
from services.management.registries import create_registry
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from tests.conftest import Devhost, running_devhost
from tests.e2e.clients import (
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    CommandError,
    Podman,
    Skopeo,
    build_single_platform_image,
)
from tests.e2e.test_azure_sdk import AllowPlainHttpPolicy
from tests.entra_issuer import IssuerCredential, TestIssuer
from tests.integration.conftest import settings_from_env

PUSHER_OID, READER_OID = str(uuid.uuid4()), str(uuid.uuid4())


@dataclass(frozen=True)
class AuthRegistry:
    devhost: Devhost
    name: str
    admin: str  # password
    puller: str  # token "puller" (_repositories_pull) password
    pusher: str  # token "pusher" (_repositories_push) password
    issuer: TestIssuer
    tls_port: int
    ca_file: Path  # the devhost's certificate (its own CA)

    @property
    def host(self) -> str:
        return self.devhost.host


async def _prepare(env: dict[str, str], name: str, issuer: TestIssuer) -> tuple[str, str, str]:
    settings = settings_from_env(env)
    metadata, blobs = Cosmos(settings), BlobStore(settings)
    await metadata.open()
    await blobs.open()
    try:
        await create_registry(metadata, blobs, settings, name, "Premium")
        admin = await enable_admin_user(metadata, name)
        await update_registry(metadata, name, anonymous_pull=True)
        _, puller = await create_token(metadata, name, "puller", "_repositories_pull")
        _, pusher = await create_token(metadata, name, "pusher", "_repositories_push")
        await assign_role(metadata, name, PUSHER_OID, "AcrPush", tenant=issuer.tenant)
        await assign_role(metadata, name, READER_OID, "AcrPull", tenant=issuer.tenant)
    finally:
        await metadata.close()
        await blobs.close()
    return admin[0].value, puller[0].value, pusher[0].value


@pytest.fixture(scope="module")
def auth_registry(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthRegistry]:
    issuer = TestIssuer()
    name = "e2eauth" + uuid.uuid4().hex[:10]
    state, tls_port = tmp_path_factory.mktemp("e2e-auth-state"), free_port()
    env = stack | {
        "API_TLS_PORT": str(tls_port),
        "STATE_DIR": str(state),
        "DEFAULT_REGISTRY": name,
        "DEFAULT_REGISTRY_AUTH_DISABLED": "false",
        "ENTRA_ISSUERS": issuer.setting(),
    }
    # Made before the devhost starts: it caches registry documents for 30 s.
    admin, puller, pusher = asyncio.run(_prepare(stack, name, issuer))
    with running_devhost(env, tmp_path_factory.mktemp("e2e-auth")) as devhost:
        yield AuthRegistry(devhost, name, admin, puller, pusher, issuer, tls_port, state / "tls" / "cert.pem")


def _failed(skopeo: Skopeo, *args: str) -> str:
    with pytest.raises(CommandError) as caught:
        skopeo._run(*args)
    return caught.value.stderr.lower()


def test_skopeo_with_admin_and_token_credentials(auth_registry: AuthRegistry, skopeo: Skopeo, tmp_path: Path) -> None:
    reg = auth_registry
    layout, image = build_single_platform_image(tmp_path / "src", [2048], tag="v1")
    target = f"docker://{reg.host}/team/app:v1"
    admin = f"{reg.name}:{reg.admin}"
    skopeo.copy(layout.reference("v1"), target, preserve_digests=True, extra=["--dest-creds", admin])
    tags = json.loads(
        skopeo._run(
            "list-tags", "--tls-verify=false", "--creds", f"puller:{reg.puller}", f"docker://{reg.host}/team/app"
        ).stdout
    )
    assert tags["Tags"] == ["v1"]
    # A pull-only token cannot push; a push token can; nobody gets in with a wrong password.
    denied = _failed(
        skopeo,
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        f"puller:{reg.puller}",
        layout.reference("v1"),
        f"docker://{reg.host}/team/other:v1",
    )
    assert "denied" in denied
    skopeo.copy(
        layout.reference("v1"), f"docker://{reg.host}/team/other:v1", extra=["--dest-creds", f"pusher:{reg.pusher}"]
    )
    wrong = _failed(skopeo, "inspect", "--tls-verify=false", "--creds", f"puller:{reg.puller}x", target)
    assert "invalid username/password" in wrong
    # Anonymous pull is on for this registry: reads work without credentials, writes do not.
    raw = skopeo._run("inspect", "--tls-verify=false", "--raw", target).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == image.manifest.digest
    anonymous_push = _failed(
        skopeo, "copy", "--dest-tls-verify=false", layout.reference("v1"), f"docker://{reg.host}/team/anon:v1"
    )
    assert "unauthorized" in anonymous_push or "denied" in anonymous_push


def test_podman_with_credentials(auth_registry: AuthRegistry, skopeo: Skopeo, podman: Podman, tmp_path: Path) -> None:
    reg = auth_registry
    layout, _ = build_single_platform_image(tmp_path / "src", [4096], tag="v1")
    skopeo.copy(
        layout.reference("v1"), f"docker://{reg.host}/pod/src:v1", extra=["--dest-creds", f"pusher:{reg.pusher}"]
    )
    podman.run(
        "pull",
        "--tls-verify=false",
        "--creds",
        f"puller:{reg.puller}",
        "--signature-policy",
        str(podman.config.policy),
        "--quiet",
        f"{reg.host}/pod/src:v1",
    )
    digestfile = tmp_path / "digest"
    podman.push(
        f"{reg.host}/pod/src:v1", f"docker://{reg.host}/pod/copy:v1", digestfile, "--creds", f"{reg.name}:{reg.admin}"
    )
    assert digestfile.read_text().startswith("sha256:")
    with pytest.raises(CommandError):
        podman.push(
            f"{reg.host}/pod/src:v1",
            f"docker://{reg.host}/pod/nope:v1",
            tmp_path / "d2",
            "--creds",
            f"puller:{reg.puller}",
        )


def _docker_login(
    config: Path, host: str, username: str, password: str, ca_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ) | {"DOCKER_CONFIG": str(config)}
    if ca_file is not None:
        env["SSL_CERT_FILE"] = str(ca_file)  # Go's TLS trusts exactly this CA
    return subprocess.run(
        ["docker", "login", "-u", username, "--password-stdin", host],
        input=password, capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def test_docker_login(auth_registry: AuthRegistry, tmp_path: Path) -> None:
    reg = auth_registry
    config = tmp_path / "docker"
    ok = _docker_login(config, reg.host, reg.name, reg.admin)
    assert ok.returncode == 0 and "Login Succeeded" in ok.stdout, ok.stderr
    assert reg.host in json.loads((config / "config.json").read_text())["auths"]
    assert _docker_login(tmp_path / "d2", reg.host, "pusher", reg.pusher).returncode == 0
    bad = _docker_login(tmp_path / "d3", reg.host, reg.name, reg.admin + "x")
    assert bad.returncode != 0 and "unauthorized" in bad.stderr.lower()
    # ACR's convention: the null GUID with a refresh token (from /oauth2/exchange) as the password.
    import httpx

    refresh = httpx.post(
        f"http://{reg.host}/oauth2/exchange",
        data={
            "grant_type": "access_token",
            "service": f"{reg.name}.azurecr.localhost",
            "access_token": reg.issuer.token(READER_OID),
        },
    ).json()["refresh_token"]
    guid = _docker_login(tmp_path / "d4", reg.host, "00000000-0000-0000-0000-000000000000", refresh)
    assert guid.returncode == 0, guid.stderr


def _sdk(reg: AuthRegistry, credential: Any) -> ContainerRegistryClient:
    return ContainerRegistryClient(
        f"http://{reg.host}",
        credential=credential,
        audience="https://management.azure.com",
        per_call_policies=[AllowPlainHttpPolicy()],
    )


def test_azure_sdk_with_entra_credential_and_anonymous_pull(auth_registry: AuthRegistry) -> None:
    reg = auth_registry
    config, layer = b'{"architecture":"amd64","os":"linux"}', os.urandom(100_000)
    credential = IssuerCredential(reg.issuer, PUSHER_OID)
    with _sdk(reg, credential) as client:
        for blob in (config, layer):
            digest, _ = client.upload_blob("sdk/app", io.BytesIO(blob))
            assert digest == "sha256:" + hashlib.sha256(blob).hexdigest()
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": OCI_LAYER_TAR,
                    "digest": "sha256:" + hashlib.sha256(layer).hexdigest(),
                    "size": len(layer),
                }
            ],
        }
        pushed = client.set_manifest("sdk/app", manifest, tag="v1")
    assert credential.calls >= 1  # exchange -> refresh -> access went through the Entra credential
    # AcrPull may read but not write.
    with _sdk(reg, IssuerCredential(reg.issuer, READER_OID)) as reader:
        assert reader.get_manifest("sdk/app", "v1").digest == pushed
        with pytest.raises((HttpResponseError, ClientAuthenticationError)):
            reader.upload_blob("sdk/app", io.BytesIO(b"no"))
    # Anonymous pull with the SDK (credential=None): the anonymous token flow, pull only.
    with _sdk(reg, None) as anonymous:
        got = anonymous.get_manifest("sdk/app", "v1")
        assert got.digest == pushed
        stream = anonymous.download_blob("sdk/app", "sha256:" + hashlib.sha256(layer).hexdigest())
        assert b"".join(stream) == layer
        with pytest.raises((HttpResponseError, ClientAuthenticationError)):
            anonymous.upload_blob("sdk/app", io.BytesIO(b"no"))


def test_docker_login_over_https_and_tls_below_1_2_refused(auth_registry: AuthRegistry, tmp_path: Path) -> None:
    reg = auth_registry
    address = f"127.0.0.1:{reg.tls_port}"
    ok = _docker_login(tmp_path / "docker", address, reg.name, reg.admin, ca_file=reg.ca_file)
    assert ok.returncode == 0 and "Login Succeeded" in ok.stdout, ok.stderr
    # (docker treats 127.0.0.0/8 as an insecure registry and would also log in without SSL_CERT_FILE.)
    context = ssl.create_default_context(cafile=str(reg.ca_file))
    with (
        socket.create_connection(("127.0.0.1", reg.tls_port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    old = ssl.create_default_context(cafile=str(reg.ca_file))
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", reg.tls_port)) as raw, pytest.raises(ssl.SSLError):
        old.wrap_socket(raw, server_hostname="127.0.0.1")


async def _target_only_token(env: dict[str, str], registry: str, target: str) -> str:
    """A token that may pull and push `target` and nothing else (made while the devhost runs: tokens are
    looked up by name on sign-in, so a new one works at once)."""
    settings = settings_from_env(env)
    metadata = Cosmos(settings)
    await metadata.open()
    try:
        actions = [f"repositories/{target}/content/read", f"repositories/{target}/content/write"]
        await put_scope_map(metadata, registry, "target-only", actions)
        _, passwords = await create_token(metadata, registry, "targetonly", "target-only")
    finally:
        await metadata.close()
    return passwords[0].value


def test_skopeo_copy_between_repositories_with_scoped_tokens(
    auth_registry: AuthRegistry, skopeo: Skopeo, tmp_path: Path
) -> None:
    """Issue 10: a token client mounts shared layers when its identity may pull the source, and falls back
    to uploading them (never a loop of challenges, never a failure) when it may not. skopeo asks for pull on
    the source in its token request itself; its debug log shows each mount attempt and its outcome."""
    reg = auth_registry
    layout, image = build_single_platform_image(tmp_path / "src", [64 * 1024, 4096], tag="v1")
    source = f"docker://{reg.host}/mnt/src:v1"
    skopeo.copy(layout.reference("v1"), source, preserve_digests=True, extra=["--dest-creds", f"pusher:{reg.pusher}"])
    pusher = ["--src-creds", f"pusher:{reg.pusher}", "--dest-creds", f"pusher:{reg.pusher}"]
    mounted = skopeo.copy(source, f"docker://{reg.host}/mnt/dst:v1", preserve_digests=True, extra=pusher, debug=True)
    log = mounted.stderr.decode()
    for layer in image.layers:
        quoted = layer.descriptor.digest.replace(":", "%3A")
        assert f"/v2/mnt/dst/blobs/uploads/?from=mnt%2Fsrc&mount={quoted}" in log, log
        assert f"digest={quoted}" not in log, f"layer {layer.descriptor.digest} was uploaded, not mounted"
    assert log.count("mount OK") == len(image.layers), log

    password = asyncio.run(_target_only_token(reg.devhost.env, reg.name, "mnt/only"))
    scoped = ["--src-creds", f"puller:{reg.puller}", "--dest-creds", f"targetonly:{password}"]
    uploaded = skopeo.copy(source, f"docker://{reg.host}/mnt/only:v1", preserve_digests=True, extra=scoped, debug=True)
    log = uploaded.stderr.decode()
    for layer in image.layers:
        quoted = layer.descriptor.digest.replace(":", "%3A")
        assert f"digest={quoted}" in log, f"layer {layer.descriptor.digest} was not uploaded"
    assert "mount OK" not in log, log
    raw = skopeo._run("inspect", "--tls-verify=false", "--raw", f"docker://{reg.host}/mnt/only:v1").stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == image.manifest.digest
