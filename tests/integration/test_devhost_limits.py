"""The devhost as a front end: what an attacker on the network can do to it (issue 8).

The session's `devhost` serves the client-address test; `limited` is a devhost of this module's own with
one-second timeouts and one upload at a time, so every limit can be reached quickly. Connections are raw
sockets where the attack needs bytes no HTTP client would send. No test measures time: a limit that does
not hold shows as a socket that stays open until the test's own (generous) deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import select
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from services.management.access import enable_admin_user, update_registry
from services.management.registries import create_registry
from services.registry.digest import Digest
from services.registry.ledger import BlobLedger
from services.registry.store import ArtifactStore
from services.registry.uploads import UploadService
from tests.conftest import Devhost, running_devhost
from tests.integration.conftest import RegistryClient, Stores, unique_registry_name

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
DEADLINE = 20.0  # how long a test waits for the server to do what a limit says; the limits are 1 s


async def test_x_forwarded_for_from_loopback_does_not_pass_ip_rules(devhost: Devhost, stores: Stores) -> None:
    """uvicorn's proxy_headers would take 127.0.0.1 as a proxy and make X-Forwarded-For the client address;
    only TRUSTED_PROXIES (empty on this devhost) may make the app believe that header."""
    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name, "Premium")
    password = (await enable_admin_user(stores.metadata, name))[0].value
    await update_registry(stores.metadata, name, default_action="Deny", allow_ips=["10.0.0.0/8"])
    port = devhost.host.rsplit(":", 1)[1]
    async with httpx.AsyncClient(base_url=devhost.url, headers={"Host": f"{name}.azurecr.localhost:{port}"}) as http:
        forged = await http.get("/v2/", auth=(name, password), headers={"X-Forwarded-For": "10.1.2.3"})
        assert forged.status_code == 403
        assert forged.json()["errors"][0]["message"] == "client with IP '127.0.0.1' is not allowed access"
        real_ip = await http.get("/v2/", auth=(name, password), headers={"X-Real-IP": "10.1.2.3"})
        assert real_ip.status_code == 403


# --- a devhost with small limits -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    env = stack | {
        "DEVHOST_IDLE_TIMEOUT_SECONDS": "1",
        "DEVHOST_HEADER_TIMEOUT_SECONDS": "1",
        "DEVHOST_BODY_TIMEOUT_SECONDS": "1",
        "MAX_CONCURRENT_UPLOADS": "1",
    }
    with running_devhost(env, tmp_path_factory.mktemp("limited")) as host:
        yield host


@pytest.fixture
async def limited_registry(limited: Devhost, stores: Stores) -> AsyncIterator[RegistryClient]:
    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name)
    await update_registry(stores.metadata, name, auth_disabled=True)
    port = int(limited.host.rsplit(":", 1)[1])
    # A new connection for every request: with a one-second idle timeout, a kept-alive one could be closed by
    # the server just as the client reuses it.
    with httpx.Client(
        base_url=limited.url,
        headers={"Host": f"{name}.azurecr.localhost:{port}"},
        timeout=DEADLINE,
        limits=httpx.Limits(max_keepalive_connections=0),
    ) as http:
        yield RegistryClient(name, port, http)


def connect(host: Devhost) -> socket.socket:
    address, port = host.host.rsplit(":", 1)
    conn = socket.create_connection((address, int(port)), timeout=DEADLINE)
    return conn


def read_until_closed(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    try:
        while chunk := conn.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def start_upload(registry: RegistryClient) -> str:
    response = registry.http.post("/v2/repo/blobs/uploads/")
    assert response.status_code == 202, response.text
    return response.headers["Location"]


def patch_head(registry: RegistryClient, location: str, start: int, length: int) -> bytes:
    return (
        f"PATCH {location} HTTP/1.1\r\nHost: {registry.login_server}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Range: {start}-{start + length - 1}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def finish_upload(registry: RegistryClient, location: str, data: bytes, start: int) -> None:
    """Send the rest of `data` from `start` and close the upload; the blob must be exactly `data`."""
    content_range = f"{start}-{len(data) - 1}"
    response = registry.http.patch(location, content=data[start:], headers={"Content-Range": content_range})
    assert response.status_code == 202, response.text
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = registry.http.put(response.headers["Location"], params={"digest": digest})
    assert response.status_code == 201, response.text
    blob = registry.http.get(f"/v2/repo/blobs/{digest}", follow_redirects=True)
    assert hashlib.sha256(blob.content).hexdigest() == digest.split(":")[1]


def log_lines(host: Devhost) -> list[str]:
    return host.log.read_text(errors="replace").splitlines()


# --- item 9: header size and read timeouts -------------------------------------------------------------


def test_oversized_headers_are_refused_with_431(limited: Devhost) -> None:
    """A 4 MiB header is refused after 64 KiB: it is not buffered, and the answer arrives intact."""
    with connect(limited) as conn:
        conn.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (4 * MiB) + b"\r\n\r\n")
        answer = read_until_closed(conn)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"65536" in answer
    start = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
    for size, status in ((64 * 1024, b"200"), (64 * 1024 + 1, b"431")):  # request line and headers, all told
        with connect(limited) as conn:
            conn.sendall(start + b"a" * (size - len(start) - 4) + b"\r\n\r\n")
            assert read_until_closed(conn).startswith(b"HTTP/1.1 " + status + b" ")


def test_idle_connection_is_closed(limited: Devhost) -> None:
    with connect(limited) as conn:
        assert read_until_closed(conn) == b""  # closed without a word; would time out if left open


def test_slow_headers_get_408(limited: Devhost) -> None:
    """Slowloris: a header line every 0.2 s, each one well inside any idle timeout."""
    with connect(limited) as conn:
        conn.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        deadline = time.monotonic() + DEADLINE
        answer = b""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([conn], [], [], 0.2)
            if readable:
                answer = read_until_closed(conn)
                break
            try:
                conn.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


# --- items 9 and 16: a body that stalls or stops, and the upload it belonged to ------------------------


def test_stalled_body_is_cut_off_and_the_upload_is_unchanged(
    limited: Devhost, limited_registry: RegistryClient
) -> None:
    data = os.urandom(3 * MiB)
    location = start_upload(limited_registry)
    first = limited_registry.http.patch(location, content=data[:MiB], headers={"Content-Range": f"0-{MiB - 1}"})
    assert first.status_code == 202, first.text
    with connect(limited) as conn:
        conn.sendall(patch_head(limited_registry, location, MiB, MiB) + data[MiB : MiB + 100_000])
        assert b"HTTP/1.1 " not in read_until_closed(conn)  # cut off, not answered: there is nobody to read it
    assert limited_registry.http.get(location).headers["Range"] == f"0-{MiB - 1}"
    finish_upload(limited_registry, location, data, MiB)


def test_client_gone_mid_upload_is_one_line_and_the_upload_is_unchanged(
    limited: Devhost, limited_registry: RegistryClient
) -> None:
    data = os.urandom(6 * MiB)
    location = start_upload(limited_registry)
    path = location.split("?", 1)[0]
    before = len(log_lines(limited))
    with connect(limited) as conn:
        # More than a block (4 MiB) arrives, so blocks are being staged when the client goes.
        conn.sendall(patch_head(limited_registry, location, 0, len(data)) + data[: 5 * MiB])
    deadline = time.monotonic() + DEADLINE
    while not any("disconnected" in line for line in log_lines(limited)[before:]) and time.monotonic() < deadline:
        time.sleep(0.1)
    new = log_lines(limited)[before:]
    gone = [line for line in new if "disconnected" in line]
    assert len(gone) == 1 and " INFO " in gone[0] and f"PATCH {path}" in gone[0], new
    assert not [line for line in new if "Traceback" in line or " ERROR " in line], new
    assert limited_registry.http.get(location).headers["Range"] == "0-0"
    finish_upload(limited_registry, location, data, 0)


# --- item 9: concurrent uploads per instance --------------------------------------------------------------


def test_uploads_over_the_instance_cap_get_503_with_retry_after(
    limited: Devhost, limited_registry: RegistryClient
) -> None:
    """MAX_CONCURRENT_UPLOADS=1: while one body is being staged, another is refused, and its session is
    untouched; once the first is done the second goes through."""
    holding, waiting = os.urandom(2 * MiB), os.urandom(MiB)
    first, second = start_upload(limited_registry), start_upload(limited_registry)
    with connect(limited) as conn:
        conn.sendall(patch_head(limited_registry, first, 0, len(holding)) + holding[:65536])
        sent = 65536
        refused = None
        deadline = time.monotonic() + DEADLINE
        while refused is None and time.monotonic() < deadline:
            # The first upload is admitted once its bytes reach the app: until then the second may pass.
            response = limited_registry.http.patch(second, content=b"x", headers={"Content-Range": "0-0"})
            if response.status_code == 503:
                refused = response
                break
            assert response.status_code == 202, response.text
            second = start_upload(limited_registry)
            conn.sendall(holding[sent : sent + 1024])  # a slow client, but not a stalled one
            sent += 1024
            time.sleep(0.05)
        assert refused is not None, "the second upload was never refused"
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["errors"][0]["code"] == "UNAVAILABLE"
        assert "1 uploads" in refused.json()["errors"][0]["message"]
        assert limited_registry.http.get(second).headers["Range"] == "0-0"
        conn.sendall(holding[sent:])
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 202 "), answer[:300]
    finish_upload(limited_registry, second, waiting, 0)


# --- item 9: block buffers are reused ----------------------------------------------------------------------


async def _upload(service: UploadService, registry: str, data: bytes) -> None:
    async def body() -> AsyncIterator[bytes]:
        for offset in range(0, len(data), 64 * 1024):  # as uvicorn hands a body over
            await asyncio.sleep(0)  # as the network would, let the other uploads run
            yield data[offset : offset + 64 * 1024]

    digest = Digest("sha256", hashlib.sha256(data).hexdigest())
    assert await service.upload_whole(registry, "repo", digest, body()) == len(data)


async def test_block_buffers_are_reused_and_bounded(stores: Stores) -> None:
    """The buffers staging holds are counted, not measured as RSS: sequential uploads reuse one upload's
    worth, concurrent ones hold at most `upload_concurrency` + 2 each, and after them the pool keeps one
    upload's worth (the rest is unmapped)."""
    settings = stores.settings.model_copy(update={"block_size": 256 * 1024, "upload_concurrency": 2})
    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, settings, name)
    service = UploadService(settings, ArtifactStore(stores.metadata), stores.blobs, BlobLedger(stores.metadata))
    per_upload = settings.upload_concurrency + 2
    for _ in range(5):
        await _upload(service, name, os.urandom(7 * settings.block_size + 1000))
    assert 0 < service.buffers.peak <= per_upload  # 5 uploads of 8 blocks, from one upload's buffers
    assert service.buffers.idle == service.buffers.allocated
    await asyncio.gather(*(_upload(service, name, os.urandom(5 * settings.block_size)) for _ in range(3)))
    assert per_upload < service.buffers.peak <= 3 * per_upload
    assert service.buffers.idle == service.buffers.allocated <= per_upload
    assert service.active == 0
