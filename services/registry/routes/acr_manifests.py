"""`GET /acr/v1/<name>/_manifests` (`n`, `last`, `orderby`) and `GET`/`PATCH`/`DELETE
/acr/v1/<name>/_manifests/<digest>`: the manifests of ACR's metadata API with their attributes.

Each manifest carries the names of the tags pointing at it. PATCH changes `changeableAttributes` and the
quarantine fields a scanner sets (an AcrQuarantineWriter; setting Passed releases a quarantined image and
raises its `push` events, services/scanning/quarantine.py); DELETE removes the manifest and its tags and
raises `delete`, exactly as `DELETE /v2/<name>/manifests/<digest>` (ACR's SDKs use that one; this one is
for symmetry with tags).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from services.events.actions import request_info
from services.platform.cosmos import ConcurrentUpdate, utcnow
from services.registry import changes
from services.registry.acr_bodies import ManifestAttributes, ManifestList, manifest_base
from services.registry.acr_paths import (
    ListQuery,
    Order,
    cursor,
    digest_reference,
    list_query,
    manifest_unknown,
    next_link,
    repository_unknown,
    request_body,
)
from services.registry.app import Call
from services.registry.locks import MAX_PATCH_BYTES, ManifestAttributesPatch, parse_patch
from services.registry.store import ManifestDoc, repo_key
from services.replication.store import ImageStatusStore
from services.scanning.admission import check_quarantine_writer
from services.scanning.release import release_outbox_for
from services.scanning.status import request_rescan, scan_status


async def _after(call: Call, query: ListQuery) -> str:
    """Where the page starts: `last` itself, or for the time orders the time key of the manifest it names."""
    if not query.order.by_time or not query.last:
        return query.last
    key = cursor(query.last)
    if key is not None:
        return key
    doc = await call.api.artifacts.get_manifest(repo_key(call.registry.registry, call.name), query.last)
    if doc is None:
        raise manifest_unknown(query.last)
    return doc.time_key


async def list_manifests(call: Call) -> Response:
    query = list_query(call.request.query_params, ordered=True)
    store, registry = call.api.artifacts, call.registry.registry
    repo = repo_key(registry, call.name)
    listed = (await store.repository_attributes(registry, call.name)).listEnabled
    docs: list[ManifestDoc] = []
    if query.n and listed:
        docs = await store.list_manifest_docs(repo, query.order, await _after(call, query), query.n + 1)
    if not docs and not await store.repository_exists(registry, call.name):
        raise repository_unknown(call.name)
    page = docs[: query.n]
    tags = await store.tag_names_by_digest(repo, [doc.digest for doc in page])
    link: dict[str, str] = {}
    if len(docs) > query.n:
        last = page[-1].digest if query.order is Order.NAME else page[-1].time_key
        link = next_link(f"/acr/v1/{call.name}/_manifests", query, last)
    manifests = [manifest_base(doc, tags.get(doc.digest, [])) for doc in page]
    body = ManifestList(registry=call.registry.loginServer, imageName=call.name, manifests=manifests)
    return JSONResponse(body.dump(), headers=link)


async def _manifest_attributes(call: Call, doc: ManifestDoc) -> dict[str, Any]:
    tags = sorted(tag.name for tag in await call.api.artifacts.tags_of(doc.repo, doc.digest))
    body = ManifestAttributes(
        registry=call.registry.loginServer, imageName=call.name, manifest=manifest_base(doc, tags)
    )
    body.manifest.scan = await scan_status(call.api.metadata, doc)
    return body.dump()


async def _manifest_body(call: Call, doc: ManifestDoc) -> Response:
    return JSONResponse(await _manifest_attributes(call, doc))


async def get_manifest(call: Call) -> Response:
    digest = digest_reference(call.reference)
    doc = await call.api.artifacts.get_manifest(repo_key(call.registry.registry, call.name), digest)
    if doc is None:
        raise manifest_unknown(digest)
    body = await _manifest_attributes(call, doc)
    # ours, beyond ACR: where a geo-replicated image's copies stand in each region (services/replication)
    status = await ImageStatusStore(call.api.metadata).get(doc.repo, doc.digest)
    if status is not None:
        body["manifest"]["replication"] = {
            "pushed": status.pushed,
            "regions": {r: entry.model_dump(exclude_none=True) for r, entry in sorted(status.regions.items())},
        }
    return JSONResponse(body)


async def patch_manifest(call: Call) -> Response:
    digest = digest_reference(call.reference)
    patch = parse_patch(await request_body(call.request, MAX_PATCH_BYTES), ManifestAttributesPatch)
    repo = repo_key(call.registry.registry, call.name)
    if patch.quarantineState is not None or patch.quarantineDetails is not None:
        check_quarantine_writer(call)
    for _ in range(changes.ATTEMPTS):
        doc = await call.api.artifacts.get_manifest(repo, digest)
        if doc is None:
            raise manifest_unknown(digest)
        attributes = doc.changeableAttributes.merged(patch)
        state = patch.quarantineState if patch.quarantineState is not None else doc.quarantineState
        details = patch.quarantineDetails if patch.quarantineDetails is not None else doc.quarantineDetails
        if (attributes, state, details) == (doc.changeableAttributes, doc.quarantineState, doc.quarantineDetails):
            return await _manifest_body(call, doc)
        request = request_info(call.request.headers, call.request.method)
        outbox = await release_outbox_for(call.api.artifacts, call.registry, call.name, doc, state, request)
        doc.changeableAttributes, doc.quarantineState, doc.quarantineDetails = attributes, state, details
        doc.updated = utcnow()
        try:
            await call.api.artifacts.replace_manifest(doc, outbox)  # a quarantine release raises `push`, once
        except ConcurrentUpdate:
            continue
        await call.api.events.publish(outbox)
        written = await call.api.artifacts.get_manifest(repo, digest)
        return await _manifest_body(call, written or doc)
    raise changes.contended(f"manifest {digest}")


async def request_scan(call: Call) -> Response:
    """`POST /acr/v1/<name>/_manifests/<digest>/_scan` (ours): scan the image again (`acr scan run`); 202
    with the scan state, now `queued` (the scanner's timer picks it up), or `scanning` if it is running."""
    digest = digest_reference(call.reference)
    doc = await call.api.artifacts.get_manifest(repo_key(call.registry.registry, call.name), digest)
    if doc is None:
        raise manifest_unknown(digest)
    state = await request_rescan(call.api.metadata, call.registry.registry, call.name, doc)
    return JSONResponse({"digest": digest, "scan": state}, status_code=202)


async def delete_manifest(call: Call) -> Response:
    digest = digest_reference(call.reference)
    await changes.delete_manifest(call, digest, lambda: manifest_unknown(digest))
    return Response(status_code=202)
