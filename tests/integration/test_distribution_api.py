"""The OCI Distribution API (v1.1) at `/v2/`, over HTTP, against the devhost and the real emulators.

Every test gets a registry of its own (`registry` fixture), so tests never see each other's repositories.
Requests go to 127.0.0.1:<port> with `Host: <registry>.azurecr.localhost:<port>`; redirects are not
followed, so the 307 of a blob GET can be checked and then followed by hand to Azurite.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from azure.storage.blob.aio import ContainerClient

from services.platform.blobs import container_name
from tests.conftest import Devhost
from tests.integration.conftest import RegistryClient, Stores, registry_client

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_NONDIST_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

EMPTY_JSON = b"{}"
MiB = 1024 * 1024
LINK_NEXT = re.compile(r'^<(?P<url>[^>]+)>;\s*rel="next"$')


# --- helpers ---------------------------------------------------------------------------------------------
def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def error_codes(response: httpx.Response) -> list[str]:
    """The `code`s of an OCI error body; fails the test if the body is not one."""
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"], body
    for error in body["errors"]:
        assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), error
    return [error["code"] for error in body["errors"]]


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert code in error_codes(response), response.text


def path_of(location: str) -> str:
    """A `Location` may be absolute or relative; the client speaks to the same host either way."""
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def with_query(location: str, **params: str) -> str:
    path = path_of(location)
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{path}{'&' if '?' in path else '?'}{query}"


def push_blob(client: httpx.Client, repo: str, data: bytes, algorithm: str = "sha256") -> str:
    digest = digest_of(data, algorithm)
    response = client.post(
        f"/v2/{repo}/blobs/uploads/",
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    return digest


def start_upload(client: httpx.Client, repo: str) -> str:
    response = client.post(f"/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202, response.text
    assert response.headers["Location"]
    return response.headers["Location"]


def patch_chunk(client: httpx.Client, location: str, data: bytes, start: int) -> httpx.Response:
    return client.patch(
        path_of(location),
        content=data,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(data) - 1}",
        },
    )


def push_chunked(client: httpx.Client, repo: str, chunks: list[bytes], algorithm: str = "sha256") -> str:
    data = b"".join(chunks)
    digest = digest_of(data, algorithm)
    location = start_upload(client, repo)
    offset = 0
    for chunk in chunks:
        response = patch_chunk(client, location, chunk, offset)
        assert response.status_code == 202, response.text
        offset += len(chunk)
        assert response.headers["Range"] == f"0-{offset - 1}"
        location = response.headers["Location"]
    response = client.put(with_query(location, digest=digest))
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    return digest


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


def image_manifest(
    client: httpx.Client,
    repo: str,
    *,
    layers: int = 1,
    media_type: str = OCI_MANIFEST,
    **extra: Any,
) -> dict[str, Any]:
    """An image manifest whose config and layers are pushed to `repo` first."""
    docker = media_type == DOCKER_MANIFEST
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
    layer_data = [os.urandom(64 + i) for i in range(layers)]
    for blob in (config, *layer_data):
        push_blob(client, repo, blob)
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
        "layers": [descriptor(DOCKER_LAYER if docker else OCI_LAYER, data) for data in layer_data],
        **extra,
    }


def encode(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2).encode()


def put_manifest(
    client: httpx.Client,
    repo: str,
    reference: str,
    body: bytes,
    media_type: str = OCI_MANIFEST,
    **params: Any,
) -> httpx.Response:
    return client.put(
        f"/v2/{repo}/manifests/{reference}", content=body, headers={"Content-Type": media_type}, params=params
    )


def push_manifest(client: httpx.Client, repo: str, reference: str, manifest: dict[str, Any]) -> tuple[str, bytes]:
    body = encode(manifest)
    response = put_manifest(client, repo, reference, body, manifest["mediaType"])
    assert response.status_code == 201, response.text
    return response.headers["Docker-Content-Digest"], body


def follow_redirect(response: httpx.Response) -> bytes:
    """Fetch a 307's target (a SAS URL on Azurite) with a plain client: no registry Host header."""
    assert response.status_code == 307, response.text
    target = response.headers["Location"]
    assert urlsplit(target).scheme in ("http", "https")
    fetched = httpx.get(target, timeout=60)
    assert fetched.status_code == 200, fetched.text
    return fetched.content


def pages(client: httpx.Client, url: str, key: str) -> tuple[list[list[str]], list[str | None]]:
    """Follow `Link: <...>; rel="next"` from `url`; the pages and the Link header of each."""
    found: list[list[str]] = []
    links: list[str | None] = []
    next_url: str | None = url
    while next_url is not None:
        response = client.get(next_url)
        assert response.status_code == 200, response.text
        found.append(response.json()[key])
        link = response.headers.get("Link")
        links.append(link)
        if link is None:
            next_url = None
        else:
            match = LINK_NEXT.match(link)
            assert match, link
            next_url = match["url"]
        assert len(found) < 50, "pagination does not end"
    return found, links


# --- base ------------------------------------------------------------------------------------------------
def test_base_endpoint(registry: RegistryClient) -> None:
    response = registry.http.get("/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    head = registry.http.head("/v2/")
    assert head.status_code == 200


def test_error_responses_carry_api_version(registry: RegistryClient) -> None:
    response = registry.http.get(f"/v2/repo/manifests/{digest_of(b'nothing')}")
    assert_error(response, 404, "MANIFEST_UNKNOWN")
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


# --- blob uploads ----------------------------------------------------------------------------------------
def test_monolithic_post_with_digest(registry: RegistryClient) -> None:
    data = os.urandom(1000)
    digest = digest_of(data)
    response = registry.http.post(
        "/v2/team/app/blobs/uploads/",
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    assert path_of(response.headers["Location"]) == f"/v2/team/app/blobs/{digest}"
    head = registry.http.head(f"/v2/team/app/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "1000"


def test_post_then_single_put(registry: RegistryClient) -> None:
    http = registry.http
    location = start_upload(http, "repo")
    data = os.urandom(4096)
    digest = digest_of(data)
    response = http.put(
        with_query(location, digest=digest),
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    assert path_of(response.headers["Location"]) == f"/v2/repo/blobs/{digest}"
    assert response.headers.get("Content-Length") == "0"
    assert follow_redirect(http.get(f"/v2/repo/blobs/{digest}")) == data
    # The session is finished: it cannot be used again.
    assert_error(http.get(path_of(location)), 404, "BLOB_UPLOAD_UNKNOWN")


def test_post_start_headers(registry: RegistryClient) -> None:
    response = registry.http.post("/v2/repo/blobs/uploads/")
    assert response.status_code == 202
    location = path_of(response.headers["Location"])
    assert location.startswith("/v2/repo/blobs/uploads/")
    session = location.rsplit("/", 1)[1]
    assert session
    assert response.headers["Docker-Upload-UUID"] == session
    assert response.headers["Range"] == "0-0"
    assert response.headers["Content-Length"] == "0"


@pytest.mark.parametrize("final_chunk", [True, False], ids=["final-chunk-on-put", "empty-put"])
def test_chunked_upload(registry: RegistryClient, final_chunk: bool) -> None:
    http = registry.http
    chunks = [os.urandom(1000), os.urandom(3000), os.urandom(1), os.urandom(700)]
    data = b"".join(chunks)
    digest = digest_of(data)
    location = start_upload(http, "chunky")
    offset = 0
    for chunk in chunks[:3]:
        response = http.patch(
            path_of(location),
            content=chunk,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                "Content-Length": str(len(chunk)),
            },
        )
        assert response.status_code == 202, response.text
        offset += len(chunk)
        assert response.headers["Range"] == f"0-{offset - 1}"
        assert response.headers["Docker-Upload-UUID"]
        assert response.headers["Content-Length"] == "0"
        location = response.headers["Location"]
    if final_chunk:
        last = chunks[3]
        response = http.put(
            with_query(location, digest=digest),
            content=last,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(last) - 1}",
            },
        )
    else:
        response = patch_chunk(http, location, chunks[3], offset)
        assert response.status_code == 202, response.text
        response = http.put(with_query(response.headers["Location"], digest=digest))
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    assert path_of(response.headers["Location"]) == f"/v2/chunky/blobs/{digest}"
    head = http.head(f"/v2/chunky/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(data))
    assert follow_redirect(http.get(f"/v2/chunky/blobs/{digest}")) == data


def test_streamed_patch_without_content_range(registry: RegistryClient) -> None:
    """A PATCH with neither Content-Range nor Content-Length (chunked transfer encoding) is one stream."""
    http = registry.http
    parts = [os.urandom(10_000) for _ in range(5)]
    data = b"".join(parts)
    location = start_upload(http, "streamed")
    response = http.patch(path_of(location), content=iter(parts), headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 202, response.text
    assert response.headers["Range"] == f"0-{len(data) - 1}"
    # Then a PATCH with a Content-Length and no Content-Range: appended where the upload stands.
    tail = os.urandom(999)
    response = http.patch(path_of(response.headers["Location"]), content=tail)
    assert response.status_code == 202, response.text
    assert response.headers["Range"] == f"0-{len(data) + len(tail) - 1}"
    data += tail
    response = http.put(with_query(response.headers["Location"], digest=digest_of(data)))
    assert response.status_code == 201, response.text
    assert follow_redirect(http.get(f"/v2/streamed/blobs/{digest_of(data)}")) == data


def test_upload_sessions_advertise_the_minimum_chunk_length(registry: RegistryClient) -> None:
    started = registry.http.post("/v2/chunky/blobs/uploads/")
    assert started.status_code == 202
    assert started.headers["OCI-Chunk-Min-Length"] == str(1024 * 1024)
    chunk = registry.http.patch(path_of(started.headers["Location"]), content=os.urandom(2 * 1024 * 1024))
    assert chunk.headers["OCI-Chunk-Min-Length"] == str(1024 * 1024)


def test_upload_status(registry: RegistryClient) -> None:
    http = registry.http
    location = start_upload(http, "status")
    session = path_of(location).rsplit("/", 1)[1]
    response = http.get(path_of(location))
    assert response.status_code == 204
    assert response.headers["Range"] == "0-0"
    assert response.headers["Docker-Upload-UUID"] == session
    assert path_of(response.headers["Location"]) == path_of(location)
    assert response.content == b""

    assert patch_chunk(http, location, os.urandom(100), 0).status_code == 202
    response = http.get(path_of(location))
    assert response.status_code == 204
    assert response.headers["Range"] == "0-99"
    assert response.headers["Docker-Upload-UUID"] == session
    assert path_of(response.headers["Location"]) == path_of(location)


def test_out_of_order_patch_is_416_and_session_survives(registry: RegistryClient) -> None:
    http = registry.http
    first, second = os.urandom(500), os.urandom(300)
    location = start_upload(http, "ordered")
    assert patch_chunk(http, location, first, 0).status_code == 202

    for wrong_start in (0, 400, 501, 10_000):  # a repeat, an overlap, a gap, far ahead
        response = patch_chunk(http, location, second, wrong_start)
        assert response.status_code == 416, (wrong_start, response.text)
        assert response.headers["Range"] == "0-499"
        assert path_of(response.headers["Location"]) == path_of(location)

    status = http.get(path_of(location))
    assert status.status_code == 204
    assert status.headers["Range"] == "0-499"

    response = patch_chunk(http, location, second, 500)
    assert response.status_code == 202, response.text
    assert response.headers["Range"] == "0-799"
    digest = digest_of(first + second)
    response = http.put(with_query(response.headers["Location"], digest=digest))
    assert response.status_code == 201, response.text
    assert follow_redirect(http.get(f"/v2/ordered/blobs/{digest}")) == first + second


def test_closing_put_with_out_of_order_content_range(registry: RegistryClient) -> None:
    """The closing PUT's last chunk is a chunk like any other: it must start where the upload stands.

    The case that matters: a client whose last PATCH was stored but whose response was lost resends
    that chunk's bytes with the closing PUT. The server must answer 416 (the client then resumes from
    `Range`), not append the bytes twice and fail the whole upload on the digest.
    """
    http = registry.http
    first, last = os.urandom(500), os.urandom(200)
    digest = digest_of(first + last)
    location = start_upload(http, "ordered")
    assert patch_chunk(http, location, first, 0).status_code == 202
    resent = first[400:] + last
    response = http.put(
        with_query(location, digest=digest),
        content=resent,
        headers={"Content-Range": f"400-{399 + len(resent)}"},
    )
    assert response.status_code == 416, response.text
    assert response.headers["Range"] == "0-499"
    assert http.head(f"/v2/ordered/blobs/{digest}").status_code == 404
    # A 416 is not fatal: the session is still there and the right chunk completes it.
    status = http.get(path_of(location))
    assert status.status_code == 204, status.text
    assert status.headers["Range"] == "0-499"
    response = http.put(
        with_query(location, digest=digest), content=last, headers={"Content-Range": f"500-{499 + len(last)}"}
    )
    assert response.status_code == 201, response.text
    assert follow_redirect(http.get(f"/v2/ordered/blobs/{digest}")) == first + last


def test_cancel_upload(registry: RegistryClient) -> None:
    http = registry.http
    location = start_upload(http, "cancelled")
    assert patch_chunk(http, location, os.urandom(100), 0).status_code == 202
    response = http.delete(path_of(location))
    assert response.status_code == 204, response.text
    assert_error(http.get(path_of(location)), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(patch_chunk(http, location, os.urandom(10), 100), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(http.put(with_query(location, digest=digest_of(b"x"))), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(http.delete(path_of(location)), 404, "BLOB_UPLOAD_UNKNOWN")


def test_unknown_upload_session(registry: RegistryClient) -> None:
    http = registry.http
    start_upload(http, "repo")  # the repository exists; the sessions below do not
    for session in ("0" * 32, "not-a-session", "x" * 300):
        assert_error(http.get(f"/v2/repo/blobs/uploads/{session}"), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(http.patch(f"/v2/repo/blobs/uploads/{session}", content=b"abc"), 404, "BLOB_UPLOAD_UNKNOWN")


def test_upload_session_belongs_to_its_repository(registry: RegistryClient) -> None:
    http = registry.http
    location = start_upload(http, "one")
    session = path_of(location).rsplit("/", 1)[1]
    start_upload(http, "two")
    assert_error(http.get(f"/v2/two/blobs/uploads/{session}"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert http.get(path_of(location)).status_code == 204


@pytest.mark.parametrize("mode", ["monolithic", "post-put", "chunked"])
def test_digest_mismatch_is_rejected_and_nothing_is_stored(registry: RegistryClient, mode: str) -> None:
    http = registry.http
    data = os.urandom(2048)
    claimed = digest_of(b"something else entirely")
    if mode == "monolithic":
        response = http.post("/v2/repo/blobs/uploads/", params={"digest": claimed}, content=data)
    else:
        location = start_upload(http, "repo")
        if mode == "chunked":
            assert patch_chunk(http, location, data[:1000], 0).status_code == 202
            response = http.put(with_query(location, digest=claimed), content=data[1000:])
        else:
            response = http.put(with_query(location, digest=claimed), content=data)
    assert_error(response, 400, "DIGEST_INVALID")
    assert http.head(f"/v2/repo/blobs/{claimed}").status_code == 404
    assert http.head(f"/v2/repo/blobs/{digest_of(data)}").status_code == 404
    assert_error(http.get(f"/v2/repo/blobs/{claimed}"), 404, "BLOB_UNKNOWN")


def test_put_without_digest_is_rejected(registry: RegistryClient) -> None:
    http = registry.http
    location = start_upload(http, "repo")
    response = http.put(path_of(location), content=b"abc")
    assert response.status_code == 400, response.text
    assert error_codes(response)


def test_monolithic_post_with_malformed_digest(registry: RegistryClient) -> None:
    response = registry.http.post("/v2/repo/blobs/uploads/", params={"digest": "sha256:nothex"}, content=b"a")
    assert_error(response, 400, "DIGEST_INVALID")


@pytest.mark.parametrize("chunked", [False, True], ids=["monolithic", "chunked"])
def test_sha512_blob(registry: RegistryClient, chunked: bool) -> None:
    http = registry.http
    data = os.urandom(5000)
    if chunked:
        digest = push_chunked(http, "sha", [data[:1234], data[1234:4000], data[4000:]], algorithm="sha512")
    else:
        digest = push_blob(http, "sha", data, algorithm="sha512")
    assert digest.startswith("sha512:") and len(digest) == len("sha512:") + 128
    head = http.head(f"/v2/sha/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["Docker-Content-Digest"] == digest
    assert head.headers["Content-Length"] == str(len(data))
    assert follow_redirect(http.get(f"/v2/sha/blobs/{digest}")) == data


def test_sha512_digest_mismatch(registry: RegistryClient) -> None:
    http = registry.http
    claimed = digest_of(b"other", "sha512")
    location = start_upload(http, "sha")
    assert patch_chunk(http, location, b"a" * 100, 0).status_code == 202
    assert_error(http.put(with_query(location, digest=claimed)), 400, "DIGEST_INVALID")
    assert http.head(f"/v2/sha/blobs/{claimed}").status_code == 404


@pytest.mark.parametrize("mode", ["monolithic", "post-put"])
def test_empty_blob(registry: RegistryClient, mode: str) -> None:
    http = registry.http
    digest = digest_of(b"")
    assert digest == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    if mode == "monolithic":
        response = http.post("/v2/empty/blobs/uploads/", params={"digest": digest}, content=b"")
    else:
        response = http.put(with_query(start_upload(http, "empty"), digest=digest))
    assert response.status_code == 201, response.text
    head = http.head(f"/v2/empty/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "0"
    assert follow_redirect(http.get(f"/v2/empty/blobs/{digest}")) == b""


def test_blob_larger_than_a_block(registry: RegistryClient) -> None:
    """~20 MiB in three uneven PATCHes; the default staging block is 8 MiB."""
    http = registry.http
    data = os.urandom(20 * MiB + 4321)
    cuts = [9 * MiB + 1234, 12 * MiB - 77]
    chunks = [data[: cuts[0]], data[cuts[0] : cuts[1]], data[cuts[1] :]]
    digest = push_chunked(http, "big", chunks)
    head = http.head(f"/v2/big/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(data))
    body = follow_redirect(http.get(f"/v2/big/blobs/{digest}"))
    assert len(body) == len(data)
    assert body == data


def test_monolithic_blob_larger_than_a_block(registry: RegistryClient) -> None:
    http = registry.http
    data = os.urandom(17 * MiB + 99)
    digest = push_blob(http, "bigmono", data)
    assert http.head(f"/v2/bigmono/blobs/{digest}").headers["Content-Length"] == str(len(data))
    assert follow_redirect(http.get(f"/v2/bigmono/blobs/{digest}")) == data


async def _blob_names(stores: Stores, registry: str, prefix: str) -> list[str]:
    async with ContainerClient.from_connection_string(
        stores.settings.blob_connection_string, container_name(registry)
    ) as container:
        return [blob.name async for blob in container.list_blobs(name_starts_with=prefix)]


async def test_same_blob_uploaded_concurrently(devhost: Devhost, registry: RegistryClient, stores: Stores) -> None:
    data = os.urandom(MiB + 17)
    digest = digest_of(data)
    clients = [
        httpx.AsyncClient(
            base_url=devhost.url, headers={"Host": registry.login_server}, follow_redirects=False, timeout=60
        )
        for _ in range(6)
    ]

    async def chunked(client: httpx.AsyncClient, repo: str) -> httpx.Response:
        started = await client.post(f"/v2/{repo}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = path_of(started.headers["Location"])
        half = len(data) // 2
        for start, part in ((0, data[:half]), (half, data[half:])):
            response = await client.patch(
                location, content=part, headers={"Content-Range": f"{start}-{start + len(part) - 1}"}
            )
            assert response.status_code == 202, response.text
        return await client.put(with_query(location, digest=digest))

    async def monolithic(client: httpx.AsyncClient, repo: str) -> httpx.Response:
        return await client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)

    try:
        jobs = [
            (chunked if i % 2 else monolithic)(client, "shared" if i < 4 else f"other{i}")
            for i, client in enumerate(clients)
        ]
        results = await asyncio.gather(*jobs)
    finally:
        for client in clients:
            await client.aclose()
    for response in results:
        assert response.status_code == 201, response.text
        assert response.headers["Docker-Content-Digest"] == digest
    for repo in ("shared", "other4", "other5"):
        head = registry.http.head(f"/v2/{repo}/blobs/{digest}")
        assert head.status_code == 200
        assert head.headers["Content-Length"] == str(len(data))
    assert follow_redirect(registry.http.get(f"/v2/shared/blobs/{digest}")) == data
    # One content-addressed blob, and no upload left behind.
    assert await _blob_names(stores, registry.name, "blobs/") == [f"blobs/sha256/{digest[7:9]}/{digest[7:]}"]
    assert await _blob_names(stores, registry.name, "uploads/") == []


async def test_racing_patches_never_store_wrong_bytes(devhost: Devhost, registry: RegistryClient) -> None:
    """Two PATCHes for the same offset of one session at once: one wins (202), the other gets 416, and
    the winner's bytes are what the upload holds. Whatever happens, a blob is never stored under a
    digest its bytes do not have."""
    async with httpx.AsyncClient(
        base_url=devhost.url, headers={"Host": registry.login_server}, follow_redirects=False, timeout=60
    ) as client:
        for attempt in range(4):
            started = await client.post("/v2/race/blobs/uploads/")
            location = path_of(started.headers["Location"])
            candidates = [os.urandom(MiB), os.urandom(MiB)]
            responses = await asyncio.gather(
                *(
                    client.patch(location, content=data, headers={"Content-Range": f"0-{len(data) - 1}"})
                    for data in candidates
                )
            )
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [202, 416], (attempt, [r.text for r in responses])
            won = [r.status_code for r in responses].index(202)
            winner, loser = candidates[won], candidates[1 - won]
            digest = digest_of(winner)
            done = await client.put(with_query(location, digest=digest))
            assert done.status_code in (201, 400), done.text
            if done.status_code == 201:
                stored = follow_redirect(await client.get(f"/v2/race/blobs/{digest}"))
                which = "the losing PATCH's bytes" if stored == loser else "other bytes"
                assert stored == winner, f"attempt {attempt}: {digest} is stored with {which}"


async def test_concurrent_closing_puts_are_never_a_server_error(devhost: Devhost, registry: RegistryClient) -> None:
    """A client that retries its closing PUT (a timeout, a proxy) may send it twice at once. One PUT
    completes the upload; the others find it done (201) or the session gone (404), never a 500."""
    async with httpx.AsyncClient(
        base_url=devhost.url, headers={"Host": registry.login_server}, follow_redirects=False, timeout=60
    ) as client:
        for attempt in range(4):
            data = os.urandom(MiB)
            digest = digest_of(data)
            started = await client.post("/v2/retry/blobs/uploads/")
            location = path_of(started.headers["Location"])
            patched = await client.patch(location, content=data, headers={"Content-Range": f"0-{len(data) - 1}"})
            assert patched.status_code == 202, patched.text
            responses = await asyncio.gather(*(client.put(with_query(location, digest=digest)) for _ in range(4)))
            outcome = [(r.status_code, r.text) for r in responses]
            assert all(status in (201, 404) for status, _ in outcome), (attempt, outcome)
            assert any(status == 201 for status, _ in outcome), (attempt, outcome)
            for response in responses:
                if response.status_code == 404:
                    assert "BLOB_UPLOAD_UNKNOWN" in error_codes(response)
            again = await client.put(with_query(location, digest=digest))
            assert_error(again, 404, "BLOB_UPLOAD_UNKNOWN")
            assert follow_redirect(await client.get(f"/v2/retry/blobs/{digest}")) == data


# --- blob reads ------------------------------------------------------------------------------------------
def test_blob_head_and_get(registry: RegistryClient) -> None:
    http = registry.http
    data = os.urandom(3333)
    digest = push_blob(http, "reads", data)
    head = http.head(f"/v2/reads/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "3333"
    assert head.headers["Docker-Content-Digest"] == digest
    assert head.content == b""
    response = http.get(f"/v2/reads/blobs/{digest}")
    assert response.status_code == 307
    assert response.headers["Docker-Content-Digest"] == digest
    target = urlsplit(response.headers["Location"])
    assert "sig=" in target.query  # a SAS URL, not a public blob
    assert follow_redirect(response) == data


def test_unknown_and_malformed_blob_digests(registry: RegistryClient) -> None:
    http = registry.http
    push_blob(http, "reads", b"present")
    unknown = digest_of(b"never pushed")
    assert_error(http.get(f"/v2/reads/blobs/{unknown}"), 404, "BLOB_UNKNOWN")
    assert http.head(f"/v2/reads/blobs/{unknown}").status_code == 404
    for bad in ("sha256:abc", "sha256:" + "G" * 64, "md5:" + "a" * 32, "sha256:" + "A" * 64, "nodigest"):
        response = http.get(f"/v2/reads/blobs/{bad}")
        assert_error(response, 400, "DIGEST_INVALID")
        assert http.head(f"/v2/reads/blobs/{bad}").status_code == 400


def test_blob_is_served_only_by_repositories_that_have_it(registry: RegistryClient) -> None:
    http = registry.http
    data = os.urandom(777)
    digest = push_blob(http, "repo-a", data)
    push_blob(http, "repo-b", b"b has something else")
    assert_error(http.get(f"/v2/repo-b/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert http.head(f"/v2/repo-b/blobs/{digest}").status_code == 404
    mounted = http.post("/v2/repo-b/blobs/uploads/", params={"mount": digest, "from": "repo-a"})
    assert mounted.status_code == 201, mounted.text
    assert http.head(f"/v2/repo-b/blobs/{digest}").status_code == 200
    assert follow_redirect(http.get(f"/v2/repo-b/blobs/{digest}")) == data


def test_delete_blob(registry: RegistryClient) -> None:
    http = registry.http
    digest = push_blob(http, "del", os.urandom(100))
    response = http.delete(f"/v2/del/blobs/{digest}")
    assert response.status_code == 202, response.text
    assert http.head(f"/v2/del/blobs/{digest}").status_code == 404
    assert_error(http.get(f"/v2/del/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_error(http.delete(f"/v2/del/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    # Pushed again, it is served again.
    data = os.urandom(10)
    digest = push_blob(http, "del", data)
    assert http.delete(f"/v2/del/blobs/{digest}").status_code == 202
    assert push_blob(http, "del", data) == digest
    assert follow_redirect(http.get(f"/v2/del/blobs/{digest}")) == data


def test_delete_blob_unlinks_only_that_repository(registry: RegistryClient) -> None:
    http = registry.http
    data = os.urandom(100)
    digest = push_blob(http, "keep", data)
    push_blob(http, "drop", data)
    assert http.delete(f"/v2/drop/blobs/{digest}").status_code == 202
    assert http.head(f"/v2/drop/blobs/{digest}").status_code == 404
    assert http.head(f"/v2/keep/blobs/{digest}").status_code == 200
    assert follow_redirect(http.get(f"/v2/keep/blobs/{digest}")) == data


# --- proxy downloads and Range ---------------------------------------------------------------------------
@pytest.fixture
def proxy_client(proxy_devhost: Devhost, registry: RegistryClient) -> Iterator[httpx.Client]:
    """A client of the proxy-mode devhost for this test's registry."""
    with registry_client(proxy_devhost, registry.name) as client:
        yield client


def test_proxy_get_full_body(registry: RegistryClient, proxy_client: httpx.Client) -> None:
    data = os.urandom(100_000)
    digest = push_blob(registry.http, "proxied", data)
    response = proxy_client.get(f"/v2/proxied/blobs/{digest}")
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["Content-Length"] == str(len(data))
    assert response.headers["Docker-Content-Digest"] == digest
    head = proxy_client.head(f"/v2/proxied/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(data))


def test_proxy_ranges(registry: RegistryClient, proxy_client: httpx.Client) -> None:
    data = os.urandom(1000)
    size = len(data)
    digest = push_blob(registry.http, "ranged", data)
    url = f"/v2/ranged/blobs/{digest}"
    cases = {
        "bytes=0-9": (0, 9),
        "bytes=-5": (size - 5, size - 1),
        "bytes=10-": (10, size - 1),
        "bytes=990-5000": (990, size - 1),  # an end past the blob is clamped
        "bytes=999-999": (999, 999),
    }
    for header, (start, end) in cases.items():
        response = proxy_client.get(url, headers={"Range": header})
        assert response.status_code == 206, (header, response.text)
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{size}", header
        assert response.headers["Content-Length"] == str(end - start + 1), header
        assert response.content == data[start : end + 1], header
    for ignored in ("bytes=0-1,5-6", "bytes=9-2", "items=0-5"):  # RFC 9110 lets a server ignore these
        response = proxy_client.get(url, headers={"Range": ignored})
        assert response.status_code == 200, ignored
        assert response.content == data
    response = proxy_client.get(url, headers={"Range": "bytes=999999999-"})
    assert response.status_code == 416, response.text
    assert response.headers["Content-Range"] == f"bytes */{size}"
    response = proxy_client.get(url, headers={"Range": f"bytes={size}-"})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{size}"


def test_proxy_range_across_blocks(registry: RegistryClient, proxy_client: httpx.Client, stores: Stores) -> None:
    """Ranges spanning the boundaries of the staged blocks of a chunked upload."""
    block = stores.settings.block_size
    data = os.urandom(2 * block + 5000)
    digest = push_chunked(registry.http, "blocks", [data[: block + 10], data[block + 10 :]])
    for start, end in ((block - 100, block + 100), (block + 5, 2 * block + 1), (1, 2 * block + 4998)):
        response = proxy_client.get(f"/v2/blocks/blobs/{digest}", headers={"Range": f"bytes={start}-{end}"})
        assert response.status_code == 206
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
        assert response.content == data[start : end + 1]


def test_proxy_unknown_blob(registry: RegistryClient, proxy_client: httpx.Client) -> None:
    push_blob(registry.http, "proxied", b"x")
    assert_error(proxy_client.get(f"/v2/proxied/blobs/{digest_of(b'nope')}"), 404, "BLOB_UNKNOWN")


# --- mounts ----------------------------------------------------------------------------------------------
def test_mount_from_repository_that_has_the_blob(registry: RegistryClient) -> None:
    http = registry.http
    data = os.urandom(500)
    digest = push_blob(http, "source/repo", data)
    response = http.post("/v2/target/blobs/uploads/", params={"mount": digest, "from": "source/repo"})
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    assert path_of(response.headers["Location"]) == f"/v2/target/blobs/{digest}"
    head = http.head(f"/v2/target/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "500"


def test_mount_from_repository_without_the_blob_falls_back_to_upload(registry: RegistryClient) -> None:
    http = registry.http
    data = os.urandom(500)
    digest = digest_of(data)
    push_blob(http, "source", b"source has other content")
    response = http.post("/v2/target/blobs/uploads/", params={"mount": digest, "from": "source"})
    assert response.status_code == 202, response.text
    location = response.headers["Location"]
    assert path_of(location).startswith("/v2/target/blobs/uploads/")
    assert http.head(f"/v2/target/blobs/{digest}").status_code == 404
    # It is an ordinary session: the client uploads through it.
    response = http.put(with_query(location, digest=digest), content=data)
    assert response.status_code == 201, response.text
    assert http.head(f"/v2/target/blobs/{digest}").status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"mount": "sha256:not-a-digest", "from": "source"},
        {"mount": digest_of(b"x"), "from": "Not/A//Valid-Repo"},
    ],
    ids=["bad-digest", "bad-from"],
)
def test_mount_with_invalid_arguments_falls_back_to_upload(registry: RegistryClient, params: dict[str, str]) -> None:
    """Spec: "If a mount fails due to invalid repository or digest arguments, the registry will fall
    back to the standard upload behavior and return a 202 Accepted with the upload URL"."""
    response = registry.http.post("/v2/target/blobs/uploads/", params=params)
    assert response.status_code == 202, response.text
    assert path_of(response.headers["Location"]).startswith("/v2/target/blobs/uploads/")


def test_mount_without_from(registry: RegistryClient, other_registry: RegistryClient) -> None:
    http = registry.http
    data = os.urandom(321)
    digest = push_blob(http, "holder", data)
    response = http.post("/v2/newcomer/blobs/uploads/", params={"mount": digest})
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    assert follow_redirect(http.get(f"/v2/newcomer/blobs/{digest}")) == data
    # Another registry does not hold it: a mount there is an ordinary upload.
    response = other_registry.http.post("/v2/newcomer/blobs/uploads/", params={"mount": digest})
    assert response.status_code == 202, response.text
    assert other_registry.http.head(f"/v2/newcomer/blobs/{digest}").status_code == 404


# --- manifests -------------------------------------------------------------------------------------------
def test_push_and_pull_oci_manifest(registry: RegistryClient) -> None:
    http = registry.http
    manifest = image_manifest(http, "team/app", layers=2, annotations={"org.example": "x"})
    body = encode(manifest)
    digest = digest_of(body)
    response = put_manifest(http, "team/app", "v1", body)
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    assert path_of(response.headers["Location"]) == f"/v2/team/app/manifests/{digest}"
    assert "OCI-Subject" not in response.headers

    for reference in ("v1", digest):
        got = http.get(f"/v2/team/app/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
        assert got.status_code == 200, got.text
        assert got.content == body
        assert got.headers["Content-Type"] == OCI_MANIFEST
        assert got.headers["Docker-Content-Digest"] == digest
        assert got.headers["Content-Length"] == str(len(body))
        head = http.head(f"/v2/team/app/manifests/{reference}")
        assert head.status_code == 200
        assert head.headers["Content-Type"] == OCI_MANIFEST
        assert head.headers["Docker-Content-Digest"] == digest
        assert head.headers["Content-Length"] == str(len(body))
        assert head.content == b""


def test_manifest_is_served_only_by_its_repository(registry: RegistryClient) -> None:
    http = registry.http
    digest, _ = push_manifest(http, "one", "latest", image_manifest(http, "one"))
    push_manifest(http, "two", "other", image_manifest(http, "two"))
    assert_error(http.get(f"/v2/two/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")
    assert http.head(f"/v2/two/manifests/{digest}").status_code == 404
    assert_error(http.get("/v2/two/manifests/latest"), 404, "MANIFEST_UNKNOWN")
    assert_error(http.delete(f"/v2/two/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")
    assert http.get(f"/v2/one/manifests/{digest}").status_code == 200


def test_manifest_content_type_parameters_and_absence(registry: RegistryClient) -> None:
    """Parameters on Content-Type are ignored; without a Content-Type the body's mediaType decides."""
    http = registry.http
    body = encode(image_manifest(http, "repo"))
    response = put_manifest(http, "repo", "params", body, f"{OCI_MANIFEST}; charset=utf-8")
    assert response.status_code == 201, response.text
    assert http.head("/v2/repo/manifests/params").headers["Content-Type"] == OCI_MANIFEST
    body = encode(image_manifest(http, "repo"))
    response = http.put("/v2/repo/manifests/bare", content=body)
    assert response.status_code == 201, response.text
    got = http.get("/v2/repo/manifests/bare")
    assert got.headers["Content-Type"] == OCI_MANIFEST
    assert got.content == body


def test_push_manifest_by_digest(registry: RegistryClient) -> None:
    http = registry.http
    body = encode(image_manifest(http, "repo"))
    digest = digest_of(body)
    response = put_manifest(http, "repo", digest, body)
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    assert path_of(response.headers["Location"]) == f"/v2/repo/manifests/{digest}"
    got = http.get(f"/v2/repo/manifests/{digest}")
    assert got.status_code == 200
    assert got.content == body
    assert http.get("/v2/repo/tags/list").json()["tags"] == []


def test_push_manifest_by_sha512_digest(registry: RegistryClient) -> None:
    http = registry.http
    body = encode(image_manifest(http, "repo"))
    digest = digest_of(body, "sha512")
    response = put_manifest(http, "repo", digest, body)
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    got = http.get(f"/v2/repo/manifests/{digest}")
    assert got.status_code == 200
    assert got.content == body
    assert got.headers["Docker-Content-Digest"] == digest


def test_push_manifest_with_several_tags(registry: RegistryClient) -> None:
    http = registry.http
    body = encode(image_manifest(http, "repo"))
    digest = digest_of(body)
    response = http.put(
        f"/v2/repo/manifests/{digest}?tag=a&tag=b&tag=release-1.0",
        content=body,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert response.status_code == 201, response.text
    for tag in ("a", "b", "release-1.0"):
        got = http.get(f"/v2/repo/manifests/{tag}")
        assert got.status_code == 200, tag
        assert got.headers["Docker-Content-Digest"] == digest
        assert got.content == body
    assert http.get("/v2/repo/tags/list").json()["tags"] == ["a", "b", "release-1.0"]


def test_invalid_tag_parameter_is_rejected(registry: RegistryClient) -> None:
    http = registry.http
    body = encode(image_manifest(http, "repo"))
    for tag in ("-bad", "a" * 129, "has space"):
        response = put_manifest(http, "repo", digest_of(body), body, tag=tag)
        assert 400 <= response.status_code < 500, (tag, response.text)
        assert error_codes(response)
    assert http.get(f"/v2/repo/manifests/{digest_of(body)}").status_code == 404


def test_retag_moves_the_tag(registry: RegistryClient) -> None:
    http = registry.http
    first, _ = push_manifest(http, "repo", "latest", image_manifest(http, "repo"))
    second, body = push_manifest(http, "repo", "latest", image_manifest(http, "repo"))
    assert first != second
    got = http.get("/v2/repo/manifests/latest")
    assert got.headers["Docker-Content-Digest"] == second
    assert got.content == body
    assert http.get(f"/v2/repo/manifests/{first}").status_code == 200


def test_manifest_referencing_missing_blob(registry: RegistryClient) -> None:
    http = registry.http
    manifest = image_manifest(http, "repo", layers=2)
    missing = os.urandom(100)
    manifest["layers"].append(descriptor(OCI_LAYER, missing))
    body = encode(manifest)
    response = put_manifest(http, "repo", "broken", body)
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert digest_of(missing) in response.text
    assert_error(http.get("/v2/repo/manifests/broken"), 404, "MANIFEST_UNKNOWN")
    assert_error(http.get(f"/v2/repo/manifests/{digest_of(body)}"), 404, "MANIFEST_UNKNOWN")
    assert "broken" not in http.get("/v2/repo/tags/list").json()["tags"]


def test_manifest_with_missing_config(registry: RegistryClient) -> None:
    http = registry.http
    manifest = image_manifest(http, "repo")
    manifest["config"] = descriptor(OCI_CONFIG, b'{"not":"pushed"}')
    assert_error(put_manifest(http, "repo", "t", encode(manifest)), 400, "MANIFEST_BLOB_UNKNOWN")


def test_manifest_blobs_must_be_in_the_same_repository(registry: RegistryClient) -> None:
    http = registry.http
    manifest = image_manifest(http, "elsewhere")
    assert_error(put_manifest(http, "here", "t", encode(manifest)), 400, "MANIFEST_BLOB_UNKNOWN")


def test_non_distributable_layer_need_not_be_present(registry: RegistryClient) -> None:
    http = registry.http
    manifest = image_manifest(http, "repo")
    manifest["layers"].append(descriptor(OCI_NONDIST_LAYER, os.urandom(50), urls=["https://example.com/layer.tar.gz"]))
    digest, body = push_manifest(http, "repo", "foreign", manifest)
    assert http.get("/v2/repo/manifests/foreign").content == body
    assert digest == digest_of(body)


def test_oci_index(registry: RegistryClient) -> None:
    http = registry.http
    amd64, amd64_body = push_manifest(http, "multi", "amd64", image_manifest(http, "multi"))
    arm64, arm64_body = push_manifest(http, "multi", "arm64", image_manifest(http, "multi"))
    children = [
        {**descriptor(OCI_MANIFEST, amd64_body), "platform": {"architecture": "amd64", "os": "linux"}},
        {**descriptor(OCI_MANIFEST, arm64_body), "platform": {"architecture": "arm64", "os": "linux"}},
    ]
    assert [child["digest"] for child in children] == [amd64, arm64]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    digest, body = push_manifest(http, "multi", "latest", index)
    got = http.get("/v2/multi/manifests/latest")
    assert got.status_code == 200
    assert got.headers["Content-Type"] == OCI_INDEX
    assert got.headers["Docker-Content-Digest"] == digest
    assert got.content == body


def test_index_with_missing_child(registry: RegistryClient) -> None:
    http = registry.http
    present, present_body = push_manifest(http, "multi", "one", image_manifest(http, "multi"))
    absent_body = encode(image_manifest(http, "multi"))  # its blobs are there, the manifest is not
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, present_body), descriptor(OCI_MANIFEST, absent_body)],
    }
    body = encode(index)
    response = put_manifest(http, "multi", "idx", body, OCI_INDEX)
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert digest_of(absent_body) in response.text
    assert http.get("/v2/multi/manifests/idx").status_code == 404
    assert http.get(f"/v2/multi/manifests/{digest_of(body)}").status_code == 404
    assert present == digest_of(present_body)


def test_docker_schema2_manifest_and_list(registry: RegistryClient) -> None:
    http = registry.http
    image = image_manifest(http, "docker", media_type=DOCKER_MANIFEST)
    digest, body = push_manifest(http, "docker", "image", image)
    got = http.get("/v2/docker/manifests/image", headers={"Accept": DOCKER_MANIFEST})
    assert got.status_code == 200
    assert got.headers["Content-Type"] == DOCKER_MANIFEST
    assert got.content == body
    manifest_list = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{**descriptor(DOCKER_MANIFEST, body), "platform": {"architecture": "amd64", "os": "linux"}}],
    }
    list_digest, list_body = push_manifest(http, "docker", "list", manifest_list)
    head = http.head("/v2/docker/manifests/list")
    assert head.status_code == 200
    assert head.headers["Content-Type"] == DOCKER_LIST
    assert head.headers["Docker-Content-Digest"] == list_digest
    assert http.get(f"/v2/docker/manifests/{list_digest}").content == list_body
    assert digest == digest_of(body)


def test_docker_schema1_is_refused(registry: RegistryClient) -> None:
    http = registry.http
    schema1 = {
        "schemaVersion": 1,
        "name": "legacy",
        "tag": "old",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": digest_of(b"layer")}],
        "history": [{"v1Compatibility": "{}"}],
        "signatures": [],
    }
    response = put_manifest(http, "legacy", "old", encode(schema1), DOCKER_SCHEMA1_SIGNED)
    assert response.status_code == 400, response.text
    assert "MANIFEST_INVALID" in error_codes(response)
    assert "schema 1" in response.json()["errors"][0]["message"]
    assert http.get("/v2/legacy/manifests/old").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'"a string"',
        b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'"}',
    ],
    ids=["broken", "empty", "array", "string", "no-config"],
)
def test_invalid_manifest(registry: RegistryClient, body: bytes) -> None:
    http = registry.http
    push_blob(http, "repo", b"x")
    assert_error(put_manifest(http, "repo", "bad", body), 400, "MANIFEST_INVALID")
    assert http.get("/v2/repo/manifests/bad").status_code == 404


def test_content_type_must_match_media_type(registry: RegistryClient) -> None:
    http = registry.http
    manifest = image_manifest(http, "repo")
    response = put_manifest(http, "repo", "t", encode(manifest), DOCKER_MANIFEST)
    assert_error(response, 400, "MANIFEST_INVALID")
    response = put_manifest(http, "repo", "t", encode(manifest), OCI_INDEX)
    assert_error(response, 400, "MANIFEST_INVALID")
    assert http.get("/v2/repo/manifests/t").status_code == 404


def test_manifest_too_large(registry: RegistryClient) -> None:
    http = registry.http
    manifest = image_manifest(http, "repo", annotations={"pad": "x" * (4 * MiB)})
    response = put_manifest(http, "repo", "huge", encode(manifest))
    assert response.status_code == 413, response.text
    assert error_codes(response) == ["MANIFEST_INVALID"]
    assert http.get("/v2/repo/manifests/huge").status_code == 404
    # Without a Content-Length (chunked transfer), the limit is enforced while reading.
    body = encode(manifest)
    parts = (body[i : i + MiB] for i in range(0, len(body), MiB))
    response = http.put("/v2/repo/manifests/huge", content=parts, headers={"Content-Type": OCI_MANIFEST})
    assert response.status_code == 413, response.text
    assert error_codes(response) == ["MANIFEST_INVALID"]
    assert http.get("/v2/repo/manifests/huge").status_code == 404


def test_large_manifests_up_to_the_limit_are_accepted(registry: RegistryClient) -> None:
    """Bigger than the inline limit (kept in Blob Storage), and just under the 4 MiB the spec asks for."""
    http = registry.http
    for tag, size in (("mid", 300 * 1024), ("max", 4 * MiB)):
        manifest = image_manifest(http, "repo", annotations={"pad": ""})
        filler = size - len(encode(manifest))
        manifest["annotations"]["pad"] = "y" * filler
        body = encode(manifest)
        assert len(body) == size
        response = put_manifest(http, "repo", tag, body)
        assert response.status_code == 201, (tag, response.text[:500])
        got = http.get(f"/v2/repo/manifests/{tag}")
        assert got.status_code == 200
        assert got.content == body
        assert got.headers["Docker-Content-Digest"] == digest_of(body)


def test_digest_mismatch_on_put_by_digest(registry: RegistryClient) -> None:
    http = registry.http
    body = encode(image_manifest(http, "repo"))
    wrong = digest_of(body + b" ")
    assert_error(put_manifest(http, "repo", wrong, body), 400, "DIGEST_INVALID")
    assert http.get(f"/v2/repo/manifests/{wrong}").status_code == 404
    assert http.get(f"/v2/repo/manifests/{digest_of(body)}").status_code == 404


def test_delete_manifest_by_tag_removes_only_the_tag(registry: RegistryClient) -> None:
    http = registry.http
    digest, body = push_manifest(http, "repo", "gone", image_manifest(http, "repo"))
    response = put_manifest(http, "repo", "kept", body)
    assert response.status_code == 201
    response = http.delete("/v2/repo/manifests/gone")
    assert response.status_code == 202, response.text
    assert_error(http.get("/v2/repo/manifests/gone"), 404, "MANIFEST_UNKNOWN")
    assert http.get(f"/v2/repo/manifests/{digest}").content == body
    assert http.get("/v2/repo/manifests/kept").status_code == 200
    assert http.get("/v2/repo/tags/list").json()["tags"] == ["kept"]
    assert_error(http.delete("/v2/repo/manifests/gone"), 404, "MANIFEST_UNKNOWN")


def test_delete_manifest_by_digest_removes_it_and_its_tags(registry: RegistryClient) -> None:
    http = registry.http
    other, _ = push_manifest(http, "repo", "other", image_manifest(http, "repo"))
    digest, body = push_manifest(http, "repo", "one", image_manifest(http, "repo"))
    assert put_manifest(http, "repo", "two", body).status_code == 201
    response = http.delete(f"/v2/repo/manifests/{digest}")
    assert response.status_code == 202, response.text
    for reference in (digest, "one", "two"):
        assert_error(http.get(f"/v2/repo/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
        assert http.head(f"/v2/repo/manifests/{reference}").status_code == 404
    assert http.get("/v2/repo/tags/list").json()["tags"] == ["other"]
    assert http.get(f"/v2/repo/manifests/{other}").status_code == 200
    assert_error(http.delete(f"/v2/repo/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")


def test_unknown_manifest(registry: RegistryClient) -> None:
    http = registry.http
    push_manifest(http, "repo", "exists", image_manifest(http, "repo"))
    assert_error(http.get("/v2/repo/manifests/nosuchtag"), 404, "MANIFEST_UNKNOWN")
    assert http.head("/v2/repo/manifests/nosuchtag").status_code == 404
    assert_error(http.get(f"/v2/repo/manifests/{digest_of(b'no')}"), 404, "MANIFEST_UNKNOWN")
    assert_error(http.get("/v2/neverpushed/manifests/latest"), 404, "MANIFEST_UNKNOWN")
    assert_error(http.get("/v2/repo/manifests/sha256:short"), 400, "DIGEST_INVALID")


@pytest.mark.parametrize("name", ["UPPER", "a//b", "-x", "x-", "a/B", "a..b", "a_/b"])
def test_invalid_repository_names(registry: RegistryClient, name: str) -> None:
    http = registry.http
    requests = [
        ("GET", f"/v2/{name}/manifests/latest"),
        ("PUT", f"/v2/{name}/manifests/latest"),
        ("GET", f"/v2/{name}/tags/list"),
        ("GET", f"/v2/{name}/blobs/{digest_of(b'x')}"),
        ("POST", f"/v2/{name}/blobs/uploads/"),
        ("GET", f"/v2/{name}/referrers/{digest_of(b'x')}"),
    ]
    for method, url in requests:
        response = http.request(method, url, content=b"{}" if method == "PUT" else None)
        assert_error(response, 400, "NAME_INVALID")


def test_invalid_tag_in_path(registry: RegistryClient) -> None:
    http = registry.http
    body = encode(image_manifest(http, "repo"))
    for tag in ("-bad", ".bad", "a" * 129, "t%20t"):
        response = put_manifest(http, "repo", tag, body)
        assert 400 <= response.status_code < 500, (tag, response.status_code)
        assert error_codes(response)
        get = http.get(f"/v2/repo/manifests/{tag}")
        assert 400 <= get.status_code < 500
    assert http.get("/v2/repo/tags/list").json()["tags"] == []


# --- subject and referrers -------------------------------------------------------------------------------
def artifact(
    client: httpx.Client,
    repo: str,
    subject: dict[str, Any],
    artifact_type: str | None,
    annotations: dict[str, str] | None = None,
    config_type: str = OCI_EMPTY,
) -> dict[str, Any]:
    config = EMPTY_JSON if config_type == OCI_EMPTY else json.dumps({"kind": config_type}).encode()
    payload = os.urandom(40)
    push_blob(client, repo, config)
    push_blob(client, repo, payload)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config_type, config),
        "layers": [descriptor("application/vnd.example.payload", payload)],
        "subject": subject,
    }
    if artifact_type is not None:
        manifest["artifactType"] = artifact_type
    if annotations is not None:
        manifest["annotations"] = annotations
    return manifest


def referrers(client: httpx.Client, repo: str, digest: str, **params: str) -> httpx.Response:
    response = client.get(f"/v2/{repo}/referrers/{digest}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].split(";")[0] == OCI_INDEX
    body = response.json()
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == OCI_INDEX
    assert isinstance(body["manifests"], list)
    return response


def test_referrers(registry: RegistryClient) -> None:
    http = registry.http
    subject_digest, subject_body = push_manifest(http, "app", "v1", image_manifest(http, "app"))
    subject = descriptor(OCI_MANIFEST, subject_body)

    sbom = artifact(http, "app", subject, "application/spdx+json", {"org.example.kind": "sbom"})
    sbom_body = encode(sbom)
    response = put_manifest(http, "app", digest_of(sbom_body), sbom_body)
    assert response.status_code == 201, response.text
    assert response.headers["OCI-Subject"] == subject_digest
    # No artifactType: the config's media type stands in for it.
    signature = artifact(
        http, "app", subject, None, {"org.example.kind": "sig"}, config_type="application/vnd.example.sig"
    )
    signature_digest, signature_body = push_manifest(http, "app", "sig", signature)
    unrelated_digest, _ = push_manifest(http, "app", "v2", image_manifest(http, "app"))

    listed = referrers(http, "app", subject_digest).json()["manifests"]
    by_digest = {entry["digest"]: entry for entry in listed}
    assert set(by_digest) == {digest_of(sbom_body), signature_digest}
    assert unrelated_digest not in by_digest
    assert by_digest[digest_of(sbom_body)] == {
        "mediaType": OCI_MANIFEST,
        "digest": digest_of(sbom_body),
        "size": len(sbom_body),
        "artifactType": "application/spdx+json",
        "annotations": {"org.example.kind": "sbom"},
    }
    assert by_digest[signature_digest]["artifactType"] == "application/vnd.example.sig"
    assert by_digest[signature_digest]["size"] == len(signature_body)
    assert by_digest[signature_digest]["annotations"] == {"org.example.kind": "sig"}

    filtered = referrers(http, "app", subject_digest, artifactType="application/spdx+json")
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [entry["digest"] for entry in filtered.json()["manifests"]] == [digest_of(sbom_body)]
    none = referrers(http, "app", subject_digest, artifactType="application/vnd.example.none")
    assert none.headers["OCI-Filters-Applied"] == "artifactType"
    assert none.json()["manifests"] == []
    unfiltered = referrers(http, "app", subject_digest)
    assert "OCI-Filters-Applied" not in unfiltered.headers


def test_referrer_pushed_before_its_subject(registry: RegistryClient) -> None:
    http = registry.http
    subject_manifest = image_manifest(http, "app")
    subject_body = encode(subject_manifest)
    subject_digest = digest_of(subject_body)
    referrer = artifact(http, "app", descriptor(OCI_MANIFEST, subject_body), "application/vnd.example.early")
    body = encode(referrer)
    response = put_manifest(http, "app", "early", body)
    assert response.status_code == 201, response.text
    assert response.headers["OCI-Subject"] == subject_digest
    assert http.get(f"/v2/app/manifests/{subject_digest}").status_code == 404
    listed = referrers(http, "app", subject_digest).json()["manifests"]
    assert [entry["digest"] for entry in listed] == [digest_of(body)]
    push_manifest(http, "app", "subject", subject_manifest)
    listed = referrers(http, "app", subject_digest).json()["manifests"]
    assert [entry["digest"] for entry in listed] == [digest_of(body)]


def test_referrers_of_an_index_subject(registry: RegistryClient) -> None:
    http = registry.http
    _, child_body = push_manifest(http, "app", "child", image_manifest(http, "app"))
    index_digest, index_body = push_manifest(
        http,
        "app",
        "index",
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(OCI_MANIFEST, child_body)]},
    )
    referrer = artifact(http, "app", descriptor(OCI_INDEX, index_body), "application/vnd.example.attest")
    digest, _ = push_manifest(http, "app", "attest", referrer)
    listed = referrers(http, "app", index_digest).json()["manifests"]
    assert [entry["digest"] for entry in listed] == [digest]


def test_deleted_referrer_is_no_longer_listed(registry: RegistryClient) -> None:
    http = registry.http
    subject_digest, subject_body = push_manifest(http, "app", "v1", image_manifest(http, "app"))
    digest, _ = push_manifest(
        http, "app", "sig", artifact(http, "app", descriptor(OCI_MANIFEST, subject_body), "application/x.sig")
    )
    assert len(referrers(http, "app", subject_digest).json()["manifests"]) == 1
    assert http.delete(f"/v2/app/manifests/{digest}").status_code == 202
    assert referrers(http, "app", subject_digest).json()["manifests"] == []


def test_referrers_of_unknown_and_malformed_digests(registry: RegistryClient) -> None:
    http = registry.http
    push_manifest(http, "app", "v1", image_manifest(http, "app"))
    assert referrers(http, "app", digest_of(b"unknown")).json()["manifests"] == []
    assert_error(http.get("/v2/app/referrers/sha256:xyz"), 400, "DIGEST_INVALID")
    assert_error(http.get("/v2/app/referrers/latest"), 400, "DIGEST_INVALID")


# --- tags list -------------------------------------------------------------------------------------------
TAGS = ["v1.10", "A", "latest", "v1.2", "B", "a", "v1.0", "_under", "z9"]


def test_tags_list_sorted_and_paged(registry: RegistryClient) -> None:
    http = registry.http
    body = encode(image_manifest(http, "team/tags"))
    query = "&".join(f"tag={tag}" for tag in TAGS)
    response = http.put(
        f"/v2/team/tags/manifests/{digest_of(body)}?{query}",
        content=body,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert response.status_code == 201, response.text
    expected = sorted(TAGS)

    whole = http.get("/v2/team/tags/tags/list")
    assert whole.status_code == 200
    assert whole.json() == {"name": "team/tags", "tags": expected}
    assert "Link" not in whole.headers

    found, links = pages(http, "/v2/team/tags/tags/list?n=4", "tags")
    assert found == [expected[0:4], expected[4:8], expected[8:]]
    assert links[0] == f'</v2/team/tags/tags/list?n=4&last={expected[3]}>; rel="next"'
    assert links[1] == f'</v2/team/tags/tags/list?n=4&last={expected[7]}>; rel="next"'
    assert links[2] is None

    exact = http.get(f"/v2/team/tags/tags/list?n={len(TAGS)}")
    assert exact.json()["tags"] == expected
    assert "Link" not in exact.headers

    after = http.get(f"/v2/team/tags/tags/list?last={expected[2]}")
    assert after.json()["tags"] == expected[3:]
    after_n = http.get(f"/v2/team/tags/tags/list?n=2&last={expected[2]}")
    assert after_n.json()["tags"] == expected[3:5]
    assert "Link" in after_n.headers
    past_end = http.get(f"/v2/team/tags/tags/list?n=2&last={expected[-1]}")
    assert past_end.status_code == 200
    assert past_end.json()["tags"] == []
    assert "Link" not in past_end.headers


def test_tags_list_n_zero(registry: RegistryClient) -> None:
    http = registry.http
    push_manifest(http, "repo", "latest", image_manifest(http, "repo"))
    response = http.get("/v2/repo/tags/list?n=0")
    assert response.status_code == 200
    assert response.json() == {"name": "repo", "tags": []}
    assert "Link" not in response.headers


def test_tags_list_unknown_repository(registry: RegistryClient) -> None:
    assert_error(registry.http.get("/v2/nosuchrepo/tags/list"), 404, "NAME_UNKNOWN")
    assert_error(registry.http.get("/v2/nosuch/nested/tags/list?n=0"), 404, "NAME_UNKNOWN")


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", "0x10", "99999999999999999999"])
def test_tags_list_invalid_n(registry: RegistryClient, n: str) -> None:
    http = registry.http
    push_manifest(http, "repo", "latest", image_manifest(http, "repo"))
    response = http.get("/v2/repo/tags/list", params={"n": n})
    assert response.status_code == 400, response.text
    assert error_codes(response)


def test_tags_list_of_repository_with_blobs_only(registry: RegistryClient) -> None:
    push_blob(registry.http, "blobsonly", b"data")
    response = registry.http.get("/v2/blobsonly/tags/list")
    assert response.status_code == 200
    assert response.json() == {"name": "blobsonly", "tags": []}


# --- catalog ---------------------------------------------------------------------------------------------
REPOS = ["gamma", "alpha", "beta/one", "beta-x", "beta/two", "delta.d", "a/b/c"]


def test_catalog(registry: RegistryClient, other_registry: RegistryClient) -> None:
    http = registry.http
    for repo in REPOS:
        push_blob(http, repo, repo.encode())
    push_blob(other_registry.http, "zz-other", b"other")
    push_blob(other_registry.http, "alpha", b"other alpha")
    expected = sorted(REPOS)

    whole = http.get("/v2/_catalog")
    assert whole.status_code == 200
    assert whole.json() == {"repositories": expected}
    assert "Link" not in whole.headers

    found, links = pages(http, "/v2/_catalog?n=3", "repositories")
    assert found == [expected[0:3], expected[3:6], expected[6:]]
    assert all(link is not None and link.startswith("</v2/_catalog?") for link in links[:2])
    assert links[2] is None

    assert http.get("/v2/_catalog?n=0").json() == {"repositories": []}
    assert_error(http.get("/v2/_catalog?n=x"), 400, "PAGINATION_NUMBER_INVALID")
    assert other_registry.http.get("/v2/_catalog").json() == {"repositories": ["alpha", "zz-other"]}


def test_catalog_of_empty_registry(registry: RegistryClient) -> None:
    response = registry.http.get("/v2/_catalog")
    assert response.status_code == 200
    assert response.json() == {"repositories": []}


# --- registry isolation ----------------------------------------------------------------------------------
def test_registries_are_isolated(registry: RegistryClient, other_registry: RegistryClient) -> None:
    one, two = registry.http, other_registry.http
    digest_one, body_one = push_manifest(one, "shared/app", "latest", image_manifest(one, "shared/app"))
    only_one = push_blob(one, "shared/app", b"only in the first registry")

    assert_error(two.get("/v2/shared/app/tags/list"), 404, "NAME_UNKNOWN")
    assert_error(two.get("/v2/shared/app/manifests/latest"), 404, "MANIFEST_UNKNOWN")
    assert_error(two.get(f"/v2/shared/app/manifests/{digest_one}"), 404, "MANIFEST_UNKNOWN")
    assert_error(two.get(f"/v2/shared/app/blobs/{only_one}"), 404, "BLOB_UNKNOWN")
    # Not even a mount without `from`: the second registry does not hold the bytes.
    assert two.post("/v2/shared/app/blobs/uploads/", params={"mount": only_one}).status_code == 202
    # The first registry's manifest cannot be pushed to the second: its blobs are not there.
    assert_error(put_manifest(two, "shared/app", "latest", body_one), 400, "MANIFEST_BLOB_UNKNOWN")

    # An upload session of one registry is unknown to the other, at the same path.
    session = path_of(start_upload(one, "shared/app"))
    assert_error(two.get(session), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(two.patch(session, content=b"x"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert one.get(session).status_code == 204

    digest_two, body_two = push_manifest(two, "shared/app", "latest", image_manifest(two, "shared/app"))
    assert digest_one != digest_two
    assert one.get("/v2/shared/app/manifests/latest").content == body_one
    assert two.get("/v2/shared/app/manifests/latest").content == body_two
    assert one.get("/v2/shared/app/tags/list").json()["tags"] == ["latest"]
    assert two.get("/v2/shared/app/tags/list").json()["tags"] == ["latest"]
    assert one.delete("/v2/shared/app/manifests/latest").status_code == 202
    assert two.get("/v2/shared/app/manifests/latest").status_code == 200


def test_unknown_registry_host(devhost: Devhost) -> None:
    # Answered as a real registry answers a caller without credentials, so that registry names cannot be
    # enumerated (issue 8, item 13; the full comparison is in test_auth_attacks.py).
    with registry_client(devhost, "nosuch1") as client:
        for method, url in (
            ("GET", "/v2/"),
            ("GET", "/v2/_catalog"),
            ("GET", "/v2/repo/tags/list"),
            ("POST", "/v2/repo/blobs/uploads/"),
        ):
            response = client.request(method, url)
            assert_error(response, 401, "UNAUTHORIZED")
            assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")
            assert response.headers["Content-Type"].startswith("application/json")
        assert client.head("/v2/").status_code == 401


# --- garbage ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/x/manifests/t"),
        ("PATCH", "/v2/x/manifests/t"),
        ("PUT", "/v2/x/blobs/" + "sha256:" + "a" * 64),
        ("POST", "/v2/x/blobs/" + "sha256:" + "a" * 64),
        ("PUT", "/v2/x/tags/list"),
        ("DELETE", "/v2/x/tags/list"),
        ("DELETE", "/v2/_catalog"),
        ("PUT", "/v2/"),
        ("POST", "/v2/x/referrers/" + "sha256:" + "a" * 64),
        ("PUT", "/v2/x/blobs/uploads/"),
    ],
)
def test_method_not_allowed(registry: RegistryClient, method: str, path: str) -> None:
    response = registry.http.request(method, path, content=b"{}")
    assert_error(response, 405, "UNSUPPORTED")


@pytest.mark.parametrize(
    "path",
    [
        "/v2/x",
        "/v2/x/",
        "/v2/x/y/z",
        "/v2/x/manifests/",
        "/v2/x/blobs/",
        "/v2/x/tags",
        "/v2/x/referrers/",
        "/v2/_catalog/extra",
        "/v2/x/blobs/uploads/a/b",
        "/v2/%00/tags/list",
        "/v2/" + "a" * 300 + "/tags/list",
        "/v2/x/manifests/" + "sha256:" + "a" * 10_000,
    ],
)
def test_garbage_paths(registry: RegistryClient, path: str) -> None:
    response = registry.http.get(path)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert error_codes(response)


def test_garbage_outside_v2_is_never_a_server_error(registry: RegistryClient) -> None:
    for method in ("GET", "POST", "OPTIONS"):
        for path in ("/", "/v1/", "/v3/x", "/v2x"):
            response = registry.http.request(method, path)
            assert 400 <= response.status_code < 500, (method, path, response.status_code)
    assert registry.http.options("/v2/").status_code < 500


@pytest.mark.parametrize("content_range", ["garbage", "0-", "-5", "a-b", "5-2", "0-9/10", "bytes 0-9/5"])
def test_malformed_content_range(registry: RegistryClient, content_range: str) -> None:
    http = registry.http
    location = start_upload(http, "repo")
    response = http.patch(path_of(location), content=b"0123456789", headers={"Content-Range": content_range})
    assert response.status_code in (400, 416), (content_range, response.status_code, response.text)
    assert error_codes(response)
    status = http.get(path_of(location))
    assert status.status_code == 204
    assert status.headers["Range"] == "0-0"
    # The session still takes a correct chunk.
    assert patch_chunk(http, location, b"0123456789", 0).status_code == 202


def test_content_range_and_length_disagree(registry: RegistryClient) -> None:
    http = registry.http
    location = start_upload(http, "repo")
    response = http.patch(path_of(location), content=b"0123456789", headers={"Content-Range": "0-19"})
    assert response.status_code in (400, 416), response.text
    assert error_codes(response)
    assert http.get(path_of(location)).headers["Range"] == "0-0"


def raw_request(host: str, request: bytes) -> bytes:
    address, port = host.rsplit(":", 1)
    with socket.create_connection((address, int(port)), timeout=30) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1e3", b"10, 11"])
def test_malformed_content_length(devhost: Devhost, registry: RegistryClient, length: bytes) -> None:
    location = path_of(start_upload(registry.http, "repo"))
    request = (
        f"PATCH {location} HTTP/1.1\r\nHost: {registry.login_server}\r\n".encode()
        + b"Content-Length: "
        + length
        + b"\r\nContent-Range: 0-9\r\nConnection: close\r\n\r\n0123456789"
    )
    response = raw_request(devhost.host, request)
    status_line = response.split(b"\r\n", 1)[0]
    status = int(status_line.split()[1])
    assert 400 <= status < 500, response[:500]
    assert registry.http.get(location).headers["Range"] == "0-0"


# --- descriptors: how many a manifest may list (issue 8, item 7) -------------------------------------------


def test_manifest_listing_one_layer_25000_times_is_refused(registry: RegistryClient) -> None:
    """Each listed descriptor used to be one concurrent Cosmos point read: 25,000 of them took 13 s and
    stalled other requests. Past the limit the manifest is refused before anything is read."""
    manifest = image_manifest(registry.http, "repo")
    manifest["layers"] = manifest["layers"] * 25_000
    body = json.dumps(manifest, separators=(",", ":")).encode()
    assert len(body) < 4 * MiB  # within the size limit: only the count is wrong
    response = put_manifest(registry.http, "repo", "many", body)
    assert_error(response, 400, "MANIFEST_INVALID")
    assert "at most 1000" in response.json()["errors"][0]["message"]
    assert registry.http.get("/v2/repo/manifests/many").status_code == 404


def test_index_listing_too_many_children_is_refused(registry: RegistryClient) -> None:
    _, child = push_manifest(registry.http, "repo", "child", image_manifest(registry.http, "repo"))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(OCI_MANIFEST, child)] * 1001}
    assert_error(put_manifest(registry.http, "repo", "index", encode(index), OCI_INDEX), 400, "MANIFEST_INVALID")


def test_repeated_layers_up_to_the_limit_are_accepted(registry: RegistryClient) -> None:
    """Images do repeat layers (the empty layer of a metadata-only step); repeats are legal, checked once."""
    manifest = image_manifest(registry.http, "repo")
    manifest["layers"] = manifest["layers"] * 1000
    digest, body = push_manifest(registry.http, "repo", "repeats", manifest)
    pulled = registry.http.get(f"/v2/repo/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
    assert pulled.status_code == 200
    assert pulled.content == body
    missing = dict(manifest, layers=[*manifest["layers"], descriptor(OCI_LAYER, b"never pushed")])
    response = put_manifest(registry.http, "repo", "missing", encode(missing))
    assert_error(response, 400, "MANIFEST_INVALID")  # 1001 descriptors: refused before any read
    missing["layers"] = missing["layers"][-2:]
    response = put_manifest(registry.http, "repo", "missing", encode(missing))
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert response.json()["errors"][0]["detail"] == {"digests": [digest_of(b"never pushed")]}


# --- Range through the redirect and the proxy mode (issue 10) --------------------------------------------
def get_as_client(http: httpx.Client, url: str, headers: dict[str, str]) -> tuple[httpx.Response, bool]:
    """GET a blob as docker, podman or curl would: a 307 is followed to its Location with the same request
    headers (a client cannot be told to change its Range); True when the registry redirected."""
    response = http.get(url, headers=headers)
    if response.status_code != 307:
        return response, False
    return httpx.get(response.headers["Location"], headers=headers, timeout=60), True


# What a blob of SIZE bytes answers to each Range: (status, (first, last) byte served or None).
SIZE = 1000
RANGE_CASES: dict[str, tuple[int, tuple[int, int] | None]] = {
    "bytes=0-9": (206, (0, 9)),
    "bytes=999-999": (206, (999, 999)),
    "bytes=10-": (206, (10, SIZE - 1)),
    "bytes=-500": (206, (SIZE - 500, SIZE - 1)),  # a suffix: the last 500 bytes
    "bytes=-1": (206, (SIZE - 1, SIZE - 1)),
    "bytes=-5000": (206, (0, SIZE - 1)),  # a suffix longer than the blob is all of it
    "bytes=990-5000": (206, (990, SIZE - 1)),  # an end past the blob is clamped
    "bytes=-0": (416, None),  # a zero-length suffix names no bytes
    f"bytes={SIZE}-": (416, None),  # starts past the end
    "bytes=5000-6000": (416, None),
    "bytes=0-1,5-6": (200, None),  # several ranges: the whole blob (see services/registry/ranges.py)
    "bytes=-5,0-1": (200, None),
    "bytes=9-2": (200, None),  # an invalid range-spec is ignored (RFC 9110 section 14.2)
    "items=0-5": (200, None),  # another unit is ignored
}
# The forms Blob Storage serves, which the redirect mode keeps redirecting.
REDIRECTED = {"bytes=0-9", "bytes=999-999", "bytes=10-"}


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
@pytest.mark.parametrize("mode", ["redirect", "proxy"])
def test_every_range_form_as_a_client_sees_it(
    registry: RegistryClient, proxy_devhost: Devhost, mode: str, algorithm: str
) -> None:
    data = os.urandom(SIZE)
    digest = push_blob(registry.http, "ranges", data, algorithm)
    url = f"/v2/ranges/blobs/{digest}"
    with registry_client(proxy_devhost, registry.name) as proxied:
        http = registry.http if mode == "redirect" else proxied
        plain, redirected = get_as_client(http, url, {})
        assert plain.status_code == 200 and plain.content == data
        assert redirected == (mode == "redirect")  # the plain GET still goes straight to storage
        for header, (status, span) in RANGE_CASES.items():
            response, redirected = get_as_client(http, url, {"Range": header})
            assert response.status_code == status, (header, response.status_code, response.text)
            if mode == "redirect":
                assert redirected == (header in REDIRECTED), header
            if status == 206:
                assert span is not None
                start, end = span
                assert response.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}", header
                assert response.headers["Content-Length"] == str(end - start + 1), header
                assert response.content == data[start : end + 1], header
            elif status == 416:
                assert response.headers["Content-Range"] == f"bytes */{SIZE}", header
            else:
                assert response.content == data, header
                assert "Content-Range" not in response.headers, header
            if not redirected and status != 416:
                assert response.headers["Docker-Content-Digest"] == digest, header


def test_suffix_range_of_a_large_blob_is_streamed(registry: RegistryClient, stores: Stores) -> None:
    """A suffix range the registry answers itself, across staged blocks, in the redirect mode."""
    block = stores.settings.block_size
    data = os.urandom(2 * block + 5000)
    digest = push_chunked(registry.http, "big", [data[: block + 10], data[block + 10 :]])
    suffix = block + 100
    response, redirected = get_as_client(registry.http, f"/v2/big/blobs/{digest}", {"Range": f"bytes=-{suffix}"})
    assert not redirected and response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {len(data) - suffix}-{len(data) - 1}/{len(data)}"
    assert response.content == data[-suffix:]


# --- a malformed tag on a manifest push (issue 10) --------------------------------------------------------
@pytest.mark.parametrize("tag", ["a" * 129, "-starts-with-dash", ".starts-with-dot"], ids=["129-chars", "dash", "dot"])
def test_manifest_put_with_invalid_tag_is_tag_invalid(registry: RegistryClient, tag: str) -> None:
    http = registry.http
    body = encode(image_manifest(http, "repo"))
    assert_error(put_manifest(http, "repo", tag, body), 400, "TAG_INVALID")
    # Reads and deletes of such a reference name nothing that can exist: they stay 404.
    assert_error(http.get(f"/v2/repo/manifests/{tag}"), 404, "MANIFEST_UNKNOWN")
    assert http.head(f"/v2/repo/manifests/{tag}").status_code == 404
    assert_error(http.delete(f"/v2/repo/manifests/{tag}"), 404, "MANIFEST_UNKNOWN")
    assert http.get("/v2/repo/tags/list").json()["tags"] == []
    # The longest valid tag, 128 characters, is accepted.
    assert put_manifest(http, "repo", "a" * 128, body).status_code == 201
