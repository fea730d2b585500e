"""`GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

A blob is served only by a repository that links it. GET answers 307 to a short-lived read-only SAS URL,
so the bytes never pass through the API; in proxy mode they are streamed here, with `Range` support. A
Range that storage would not answer as RFC 9110 asks (a suffix, an unsatisfiable or several ranges: see
`ranges.storage_serves`) is never redirected, since the client would send it on to the SAS URL: the
registry answers it itself, as in proxy mode.
"""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response, StreamingResponse

from services.registry import locks
from services.registry.app import Call
from services.registry.digest import Digest
from services.registry.errors import ErrorCode, RegistryError
from services.registry.ledger import release_of
from services.registry.ranges import parse_range, storage_serves
from services.registry.store import BlobLinkDoc, repo_key
from services.replication.routing import REGION_HEADER


async def _linked(call: Call) -> tuple[Digest, BlobLinkDoc]:
    digest = Digest.parse(call.reference)
    locks.check_blob_read(call.name, await call.api.artifacts.repository_attributes(call.registry.registry, call.name))
    link = await call.api.artifacts.get_blob_link(repo_key(call.registry.registry, call.name), str(digest), cached=True)
    if link is None:
        raise RegistryError(ErrorCode.BLOB_UNKNOWN, detail={"digest": str(digest)})
    return digest, link


def _headers(digest: Digest, size: int) -> dict[str, str]:
    return {
        "Content-Length": str(size),
        "Content-Type": "application/octet-stream",
        "Docker-Content-Digest": str(digest),
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",  # content-addressed: it never changes
        "ETag": f'"{digest}"',
    }


async def head_blob(call: Call) -> Response:
    digest, link = await _linked(call)
    return Response(status_code=200, headers=_headers(digest, link.size))


async def get_blob(call: Call) -> Response:
    digest, link = await _linked(call)
    registry = call.registry.registry
    # Geo-replication: the region asked for, or one that has the blob (services/replication/routing.py)
    blobs, region = await call.api.geo.serving(call.request, call.registry, str(digest))
    served = {REGION_HEADER: region} if region else {}
    # Several Range lines are one list of ranges (RFC 9110 section 5.3); joined, they parse as such.
    range_header = ", ".join(call.request.headers.getlist("range"))
    if call.api.settings.blob_download_mode == "redirect" and (
        not range_header or storage_serves(range_header, link.size)
    ):
        url = await blobs.read_url(registry, str(digest))
        return RedirectResponse(url, status_code=307, headers={"Docker-Content-Digest": str(digest), **served})
    headers = _headers(digest, link.size) | served
    byte_range = parse_range(range_header, link.size)
    if byte_range is None:
        return StreamingResponse(blobs.read(registry, str(digest)), headers=headers)
    start, end = byte_range
    headers["Content-Length"] = str(end - start + 1)
    headers["Content-Range"] = f"bytes {start}-{end}/{link.size}"
    body = blobs.read(registry, str(digest), start, end - start + 1)
    return StreamingResponse(body, status_code=206, headers=headers)


async def delete_blob(call: Call) -> Response:
    """Unlink the blob from the repository; the garbage collector deletes the bytes once no manifest needs
    them (services/registry/collector.py)."""
    digest = Digest.parse(call.reference)
    registry, repo = call.registry.registry, repo_key(call.registry.registry, call.name)
    if not await call.api.artifacts.delete_blob_link(repo, str(digest), release_of(registry, repo, [str(digest)])):
        raise RegistryError(ErrorCode.BLOB_UNKNOWN, detail={"digest": str(digest)})
    return Response(status_code=202, headers={"Docker-Content-Digest": str(digest)})
