"""Cosmos DB and Blob Storage going away under a running registry (issue 8, item 17).

The emulators of a private stack are stopped (both, or one of them) while a devhost serves from them: every
request that needs them answers `503 UNAVAILABLE` with `Retry-After` (never `500 UNKNOWN`, never a hang),
`/health/ready` says which dependency is down without naming hosts or keys, and once the emulators are back
the same requests succeed again. The devhost runs with small retry budgets (settings), so this is quick.

Not covered here: Cosmos throttling (429 with x-ms-retry-after-ms). The emulator never throttles, so its path
is covered by the classifier's unit tests (tests/unit/test_unavailable.py) only.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from services.devhost.stack import HOST, LocalStack
from tests.conftest import ROOT, Devhost, running_devhost

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# Small budgets: one retry, short backoff and timeouts, a readiness answer reused for a moment only.
FAST = {
    "DEPENDENCY_RETRY_TOTAL": "1",
    "DEPENDENCY_RETRY_BACKOFF_SECONDS": "0.1",
    "DEPENDENCY_CONNECT_TIMEOUT_SECONDS": "2",
    "HEALTH_CACHE_SECONDS": "0.2",
}
# Anything that would tell an anonymous caller where the dependencies are or how to get in.
INTERNALS = ("127.0.0.1", "localhost", "devstoreaccount1", "AccountKey", "https://", "http://", "Connect call")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, Devhost]]:
    """Emulators of this module's own (they are stopped mid-test), and a devhost serving from them."""
    state = tmp_path_factory.mktemp("unavailable")
    stack = LocalStack.on_free_ports(state / "stack", node_modules=ROOT / "node_modules")
    with stack, running_devhost(stack.env() | FAST, state) as host:
        yield stack, host


@pytest.fixture
def up(private: tuple[LocalStack, Devhost]) -> Iterator[tuple[LocalStack, Devhost, httpx.Client]]:
    """The private stack, running and ready, with a client; left running and ready for the next test."""
    stack, host = private
    with httpx.Client(base_url=host.url, timeout=60) as http:
        restart(stack, http)
        yield stack, host, http
        restart(stack, http)


def restart(stack: LocalStack, http: httpx.Client) -> None:
    """Bring both emulators up (on the same ports and data) and wait until the registry says it is ready."""
    if not all_listening(stack):
        stack.stop()
        stack.start()
    deadline = time.monotonic() + 60
    while True:
        ready = http.get("/health/ready")
        if ready.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready again after a restart: {ready.status_code} {ready.text}")
        time.sleep(0.2)


def readiness_once_down(http: httpx.Client) -> httpx.Response:
    """/health/ready once it has noticed (it reuses its answer for HEALTH_CACHE_SECONDS)."""
    deadline = time.monotonic() + 30
    while True:
        ready = http.get("/health/ready")
        if ready.status_code != 200 or time.monotonic() > deadline:
            return ready
        time.sleep(0.1)


def all_listening(stack: LocalStack) -> bool:
    return listening(stack.cosmos_port) and listening(stack.azurite_blob_port)


def listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def stop_one(stack: LocalStack, name: str, port: int) -> None:
    """Stop one emulator (its whole process group) and wait until its port refuses connections."""
    os.killpg(stack.pids[name], signal.SIGTERM)
    deadline = time.monotonic() + 30
    while listening(port):
        assert time.monotonic() < deadline, f"{name} still listens on {port}"
        time.sleep(0.05)


def push_image(http: httpx.Client, name: str, tag: str) -> tuple[str, str]:
    """Push a config, a layer and a manifest to the default registry; (manifest digest, layer digest)."""
    config, layer = b'{"architecture":"amd64","os":"linux"}', os.urandom(4096)
    for blob in (config, layer):
        response = http.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest_of(blob)}, content=blob)
        assert response.status_code == 201, response.text
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(layer), "size": len(layer)}
            ],
        }
    ).encode()
    put = http.put(f"/v2/{name}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert put.status_code == 201, put.text
    return put.headers["Docker-Content-Digest"], digest_of(layer)


def assert_unavailable(response: httpx.Response, *, body: bool = True) -> None:
    """503 with a Retry-After of whole seconds and, unless HEAD, the OCI error body; nothing internal."""
    assert response.status_code == 503, f"{response.request.method} {response.request.url}: {response.text}"
    assert response.headers["Retry-After"].isdigit() and int(response.headers["Retry-After"]) >= 1
    if body:
        errors = response.json()["errors"]
        assert [error["code"] for error in errors] == ["UNAVAILABLE"]
        for internal in INTERNALS:
            assert internal not in response.text


def other_host(host: Devhost) -> dict[str, str]:
    """A registry this devhost has not looked up yet (so not cached): finding it needs Cosmos."""
    port = host.host.rsplit(":", 1)[1]
    return {"Host": f"notcached{os.urandom(4).hex()}.azurecr.localhost:{port}"}


def test_every_request_answers_503_while_cosmos_and_storage_are_down_and_works_once_back(
    up: tuple[LocalStack, Devhost, httpx.Client],
) -> None:
    stack, host, http = up
    manifest_digest, layer_digest = push_image(http, "down/app", "v1")

    stack.stop()

    # The base ping of a registry not cached yet (the default registry's document is cached for a while).
    assert_unavailable(http.get("/v2/", headers=other_host(host)))
    assert_unavailable(http.head("/v2/down/app/manifests/v1", headers={"Accept": OCI_MANIFEST}), body=False)
    assert_unavailable(http.get("/v2/down/app/manifests/v1", headers={"Accept": OCI_MANIFEST}))
    assert_unavailable(http.get(f"/v2/down/app/blobs/{layer_digest}"))
    assert_unavailable(http.get("/v2/down/app/tags/list"))
    assert_unavailable(http.get("/v2/_catalog"))
    assert_unavailable(http.post("/v2/down/app/blobs/uploads/"))
    # The token service: Basic credentials, the OAuth2 form, and the exchange.
    token_host = other_host(host)
    service = token_host["Host"].rsplit(":", 1)[0]
    assert_unavailable(
        http.get(
            "/oauth2/token",
            params={"service": service, "scope": "repository:down/app:pull"},
            headers=token_host,
            auth=("someone", "password"),
        )
    )
    form = {"grant_type": "password", "username": "someone", "password": "x", "service": service}
    assert_unavailable(http.post("/oauth2/token", data=form, headers=token_host))
    form = {"grant_type": "refresh_token", "refresh_token": "x", "service": service}
    assert_unavailable(http.post("/oauth2/exchange", data=form, headers=token_host))

    ready = readiness_once_down(http)
    assert ready.status_code == 503
    assert int(ready.headers["Retry-After"]) >= 1
    assert ready.json() == {"status": "unavailable", "dependencies": {"cosmos": "down", "storage": "down"}}
    for internal in (*INTERNALS, str(stack.cosmos_port), str(stack.azurite_blob_port)):
        assert internal not in ready.text
    assert http.get("/health/live").status_code == 200  # the process itself is fine: do not restart it

    restart(stack, http)

    head = http.head("/v2/down/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == manifest_digest
    assert http.get(f"/v2/down/app/blobs/{layer_digest}").status_code == 307
    assert http.get("/v2/", headers=other_host(host)).status_code < 500  # a registry that does not exist
    assert http.get("/health/ready").json() == {"status": "ready", "dependencies": {"cosmos": "up", "storage": "up"}}


def test_readiness_names_the_dependency_that_is_down(up: tuple[LocalStack, Devhost, httpx.Client]) -> None:
    stack, _, http = up
    _, layer_digest = push_image(http, "half/app", "v1")

    stop_one(stack, "cosmos", stack.cosmos_port)
    ready = readiness_once_down(http)
    assert ready.status_code == 503
    assert ready.json()["dependencies"] == {"cosmos": "down", "storage": "up"}
    assert_unavailable(http.head("/v2/half/app/manifests/v1", headers={"Accept": OCI_MANIFEST}), body=False)

    restart(stack, http)
    assert http.head("/v2/half/app/manifests/v1", headers={"Accept": OCI_MANIFEST}).status_code == 200

    stop_one(stack, "azurite", stack.azurite_blob_port)
    ready = readiness_once_down(http)
    assert ready.status_code == 503
    assert ready.json()["dependencies"] == {"cosmos": "up", "storage": "down"}
    # A push needs Storage for the bytes: 503, and the metadata of what was pushed before still answers.
    blob = os.urandom(2048)
    assert_unavailable(http.post("/v2/half/app/blobs/uploads/", params={"digest": digest_of(blob)}, content=blob))
    assert http.head(f"/v2/half/app/blobs/{layer_digest}").status_code == 200

    restart(stack, http)
    pushed = http.post("/v2/half/app/blobs/uploads/", params={"digest": digest_of(blob)}, content=blob)
    assert pushed.status_code == 201, pushed.text
