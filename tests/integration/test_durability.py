"""Crashes, restarts, interruptions and races lose nothing and show nothing half-written.

- a restart of the whole local stack (registry killed with SIGKILL, emulators stopped) keeps every blob,
  manifest and tag;
- a chunk upload cut off mid-body leaves the session where it was and no blob behind;
- several clients pushing the same blob or the same tag at once all succeed and agree afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import uuid
from pathlib import Path

import httpx
import pytest

from services.platform.blobs import STAGED_UPLOAD_TAG, blob_path, upload_path
from tests.conftest import running_devhost
from tests.integration.conftest import RegistryClient, Stores, unique_registry_name

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(http: httpx.Client, name: str, data: bytes) -> str:
    digest = digest_of(data)
    response = http.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data)
    assert response.status_code == 201, response.text
    return digest


def image_manifest(config: bytes, layers: list[bytes], note: str = "") -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest_of(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest_of(layer),
                "size": len(layer),
            }
            for layer in layers
        ],
        "annotations": {"note": note},
    }
    return json.dumps(manifest).encode()


def push_image(http: httpx.Client, name: str, tag: str, note: str = "") -> tuple[str, bytes]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "note": note}).encode()
    layer = os.urandom(64 * 1024)
    push_blob(http, name, config)
    push_blob(http, name, layer)
    manifest = image_manifest(config, [layer], note)
    response = http.put(f"/v2/{name}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert response.status_code == 201, response.text
    return response.headers["Docker-Content-Digest"], layer


def test_everything_survives_a_restart_of_the_stack(tmp_path: Path) -> None:
    from services.devhost.stack import LocalStack

    layer = os.urandom(6 * 1024 * 1024)  # bigger than a block: staged, committed and copied
    with LocalStack.on_free_ports(tmp_path / "state") as stack:
        with running_devhost(stack.env(), tmp_path) as host, httpx.Client(base_url=host.url) as http:
            upload = http.post("/v2/keep/me/blobs/uploads/")
            location = upload.headers["Location"]
            assert http.patch(location, content=layer).status_code == 202
            assert http.put(location, params={"digest": digest_of(layer)}).status_code == 201
            config = b'{"os":"linux","architecture":"amd64"}'
            push_blob(http, "keep/me", config)
            manifest = image_manifest(config, [layer])
            put = http.put("/v2/keep/me/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST})
            assert put.status_code == 201
        ports = (stack.azurite_blob_port, stack.cosmos_port)
    # A new stack on the same folder (same ports, so the SAS URLs and endpoints are the same).
    again = LocalStack(
        tmp_path / "state",
        azurite_blob_port=ports[0],
        azurite_queue_port=stack.azurite_queue_port,
        azurite_table_port=stack.azurite_table_port,
        cosmos_port=ports[1],
    )
    with again, running_devhost(again.env(), tmp_path) as host, httpx.Client(base_url=host.url) as http:
        assert http.get("/v2/keep/me/tags/list").json() == {"name": "keep/me", "tags": ["v1"]}
        assert "keep/me" in http.get("/v2/_catalog").json()["repositories"]
        got = http.get("/v2/keep/me/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert got.status_code == 200 and got.content == manifest
        redirect = http.get(f"/v2/keep/me/blobs/{digest_of(layer)}")
        assert redirect.status_code == 307
        assert httpx.get(redirect.headers["Location"]).content == layer


def test_registry_killed_mid_flight_loses_no_committed_push(tmp_path: Path, stack: dict[str, str]) -> None:
    with running_devhost(stack, tmp_path) as first, httpx.Client(base_url=first.url) as http:
        digest, layer = push_image(http, "crash/safe", "v1")
        os.killpg(_pid_of(first.host), signal.SIGKILL)
    with running_devhost(stack, tmp_path) as second, httpx.Client(base_url=second.url) as http:
        head = http.head("/v2/crash/safe/manifests/v1")
        assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == digest
        assert http.head(f"/v2/crash/safe/blobs/{digest_of(layer)}").status_code == 200


def _pid_of(host: str) -> int:
    port = host.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"services.devhost" in cmdline and port.encode() in cmdline:
                return int(proc.name)
    raise AssertionError(f"no devhost process serves port {port}")


def test_a_chunk_cut_off_mid_body_leaves_nothing_visible(registry: RegistryClient) -> None:
    http, name = registry.http, "cut/off"
    start = http.post(f"/v2/{name}/blobs/uploads/")
    assert start.status_code == 202
    location = start.headers["Location"]
    first = os.urandom(1024 * 1024)
    assert http.patch(location, content=first, headers={"Content-Range": f"0-{len(first) - 1}"}).status_code == 202

    # Announce 8 MiB, send 5 MiB, hang up: the server must not count any of it.
    port = registry.port
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = (
            f"PATCH {location} HTTP/1.1\r\nHost: {registry.login_server}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {8 * 1024 * 1024}\r\n"
            f"Content-Range: {len(first)}-{len(first) + 8 * 1024 * 1024 - 1}\r\n\r\n"
        )
        sock.sendall(head.encode() + os.urandom(5 * 1024 * 1024))
    status = http.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == f"0-{len(first) - 1}"

    # The session goes on from where it was, and the finished blob is exactly what was acknowledged.
    rest = os.urandom(512 * 1024)
    assert (
        http.patch(
            location, content=rest, headers={"Content-Range": f"{len(first)}-{len(first) + len(rest) - 1}"}
        ).status_code
        == 202
    )
    whole = first + rest
    assert http.put(location, params={"digest": digest_of(whole)}).status_code == 201
    assert http.head(f"/v2/{name}/blobs/{digest_of(whole)}").headers["Content-Length"] == str(len(whole))


def test_an_abandoned_upload_is_invisible(registry: RegistryClient) -> None:
    http, name = registry.http, "abandoned/upload"
    data = os.urandom(5 * 1024 * 1024)
    location = http.post(f"/v2/{name}/blobs/uploads/").headers["Location"]
    assert http.patch(location, content=data).status_code == 202
    assert http.head(f"/v2/{name}/blobs/{digest_of(data)}").status_code == 404
    assert http.get(f"/v2/{name}/tags/list").status_code == 404  # no repository appeared either
    assert name not in http.get("/v2/_catalog").json()["repositories"]


def test_concurrent_pushes_of_one_tag_agree(registry: RegistryClient) -> None:
    name, results, errors = "race/tag", [], []

    def push(i: int) -> None:
        try:
            with httpx.Client(base_url=registry.http.base_url, headers=registry.http.headers) as http:
                results.append(push_image(http, name, "latest", note=f"writer-{i}")[0])
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(results)) == 6
    head = registry.http.head(f"/v2/{name}/manifests/latest")
    assert head.status_code == 200 and head.headers["Docker-Content-Digest"] in results
    for digest in results:  # every writer's manifest is stored whole, whichever won the tag
        assert registry.http.head(f"/v2/{name}/manifests/{digest}").status_code == 200


def test_concurrent_uploads_of_one_blob_agree(registry: RegistryClient) -> None:
    name, data = "race/blob", os.urandom(5 * 1024 * 1024)
    statuses: list[int] = []

    def upload() -> None:
        with httpx.Client(base_url=registry.http.base_url, headers=registry.http.headers, timeout=60) as http:
            location = http.post(f"/v2/{name}/blobs/uploads/").headers["Location"]
            http.patch(location, content=data)
            statuses.append(http.put(location, params={"digest": digest_of(data)}).status_code)

    threads = [threading.Thread(target=upload) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [201] * 5
    redirect = registry.http.get(f"/v2/{name}/blobs/{digest_of(data)}")
    assert httpx.get(redirect.headers["Location"]).content == data


async def test_a_committed_upload_is_tagged_for_the_lifecycle_rule_and_its_content_copy_is_not(stores: Stores) -> None:
    """The storage account's `staged-uploads` rule deletes blobs tagged stage=upload after 7 days: a committed
    upload the process died before copying is one; the bytes at their content address must never be."""
    registry = unique_registry_name()
    await stores.blobs.create_registry_container(registry)
    data = b"staged bytes " * 100
    digest = digest_of(data)
    session = str(uuid.uuid4())
    await stores.blobs.stage_block(registry, session, "YmxvY2swMDAw", data)
    await stores.blobs.commit_staged(registry, session, ["YmxvY2swMDAw"])
    container = stores.blobs._container(registry)
    staged = container.get_blob_client(upload_path(session))
    assert await staged.get_blob_tags() == STAGED_UPLOAD_TAG
    await stores.blobs.copy_upload(registry, session, digest)
    assert await container.get_blob_client(blob_path(digest)).get_blob_tags() == {}
