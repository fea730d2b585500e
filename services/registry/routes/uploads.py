"""Blob uploads: `POST /v2/<name>/blobs/uploads/` and `GET`/`PATCH`/`PUT`/`DELETE .../uploads/<id>`.

Monolithic (`POST ?digest=` with the body), POST then one `PUT ?digest=`, chunked (`PATCH`es with
`Content-Range`, then `PUT`), and cross-repository mounts (`?mount=<digest>[&from=<repo>]`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from services.auth.permissions import PULL
from services.registry import locks
from services.registry.app import Call
from services.registry.digest import Digest
from services.registry.errors import ErrorCode, RegistryError
from services.registry.quota import check_room
from services.registry.ranges import parse_content_range
from services.registry.reference import validate_repository_name
from services.registry.store import UploadDoc
from services.registry.uploads import Room, upload_headers


def _body(request: Request) -> AsyncIterator[bytes]:
    return request.stream()


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise RegistryError(ErrorCode.SIZE_INVALID, f"Content-Length {raw!r} is not a size")
    return int(raw)


def _room(call: Call) -> Room:
    """The storage quota check of this registry (services/registry/quota.py)."""

    async def room(size: int, digest: str | None) -> None:
        await check_room(call.api.ledger, call.registry, size, digest)

    return room


def _created(call: Call, digest: Digest) -> Response:
    return Response(
        status_code=201,
        headers={
            "Location": f"/v2/{call.name}/blobs/{digest}",
            "Docker-Content-Digest": str(digest),
            "Content-Length": "0",
        },
    )


def _accepted(call: Call, doc: UploadDoc, status: int = 202) -> Response:
    headers = upload_headers(call.name, doc) | {"Content-Length": "0"}
    if call.api.settings.chunk_min_length:
        headers["OCI-Chunk-Min-Length"] = str(call.api.settings.chunk_min_length)
    return Response(status_code=status, headers=headers)


def _mount_arguments(mount: str, source: str | None) -> Digest | None:
    """The digest to mount, or None when `mount` or `from` is invalid: such a mount cannot be done, and
    the spec asks for the fallback to an ordinary upload session then, as CNCF distribution does."""
    try:
        if source is not None:
            validate_repository_name(source)
        return Digest.parse(mount)
    except RegistryError:
        return None


def _may_mount_from(call: Call, source: str | None) -> bool:
    """A mount reads the source repository: the caller needs pull there (anywhere, without `from`).

    A bearer token that lacks it got here only if it was already asked for and refused it (else the
    auth service challenged for it, services/auth/service.py): like Basic and anonymous callers without
    it, it gets the ordinary upload session, never another challenge."""
    if source is None:
        return call.caller.permissions.allows_everywhere(PULL)
    return call.caller.may(PULL, source)


async def start_upload(call: Call) -> Response:
    query = call.request.query_params
    registry = call.registry.registry
    locks.check_blob_push(call.name, await call.api.artifacts.repository_attributes(registry, call.name))
    mount = query.get("mount")
    if mount is not None:
        source = query.get("from")
        digest = _mount_arguments(mount, source)
        if (
            digest is not None
            and _may_mount_from(call, source)
            and await call.api.uploads.mount(registry, call.name, digest, source) is not None
        ):
            return _created(call, digest)
        # Not mountable: the spec says to fall back to an ordinary upload session.
    elif "digest" in query:
        digest = Digest.parse(query["digest"])
        length = _content_length(call.request)
        await call.api.uploads.upload_whole(
            registry, call.name, digest, _body(call.request), room=_room(call), length=length
        )
        return _created(call, digest)
    doc = await call.api.uploads.start(registry, call.name)
    return _accepted(call, doc)


async def get_upload(call: Call) -> Response:
    doc = await call.api.uploads.get(call.registry.registry, call.name, call.reference)
    return _accepted(call, doc, status=204)


def _chunk_range(request: Request) -> tuple[int | None, int | None]:
    """(start, length) of a chunk, from its Content-Range and Content-Length; None where not given."""
    length = _content_length(request)
    header = request.headers.get("content-range")
    if not header:
        return None, length
    start, end = parse_content_range(header)
    if length is not None and length != end - start + 1:
        raise RegistryError(
            ErrorCode.BLOB_UPLOAD_INVALID,
            f"Content-Range {header!r} covers {end - start + 1} bytes but Content-Length is {length}",
            status=416,
        )
    return start, end - start + 1


async def patch_upload(call: Call) -> Response:
    start, length = _chunk_range(call.request)
    doc = await call.api.uploads.append(
        call.registry.registry,
        call.name,
        call.reference,
        _body(call.request),
        start=start,
        length=length,
        room=_room(call),
    )
    return _accepted(call, doc)


async def put_upload(call: Call) -> Response:
    raw = call.request.query_params.get("digest")
    if not raw:
        raise RegistryError(ErrorCode.DIGEST_INVALID, "the closing PUT must name the blob's ?digest=")
    digest = Digest.parse(raw)
    registry = call.registry.registry
    body = _body(call.request)
    length = _content_length(call.request)
    if call.request.headers.get("content-range"):
        # A last chunk with a Content-Range is checked like a PATCH: one that does not start where the
        # upload stands is a 416 the client can resume from, not bytes appended twice.
        start, length = _chunk_range(call.request)
        await call.api.uploads.append(
            registry, call.name, call.reference, body, start=start, length=length, room=_room(call)
        )
        body, length = _nothing(), 0
    await call.api.uploads.finish(registry, call.name, call.reference, digest, body, room=_room(call), length=length)
    return _created(call, digest)


async def delete_upload(call: Call) -> Response:
    await call.api.uploads.cancel(call.registry.registry, call.name, call.reference)
    return Response(status_code=204)
