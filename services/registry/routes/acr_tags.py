"""`GET /acr/v1/<name>/_tags` (`n`, `last`, `orderby`, `digest`) and `GET`/`PATCH`/`DELETE
/acr/v1/<name>/_tags/<tag>`: the tags of ACR's metadata API with their attributes.

Lists leave out list-disabled tags, and every tag of a list-disabled repository; paging and ordering are
described in services/registry/acr_paths.py. DELETE removes the tag only (the manifest stays) and raises our
`untag` event, as `DELETE /v2/<name>/manifests/<tag>` does; a write- or delete-locked tag refuses it.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from services.platform.cosmos import ConcurrentUpdate, utcnow
from services.registry import changes
from services.registry.acr_bodies import TagAttributes, TagList, tag_base
from services.registry.acr_paths import (
    ListQuery,
    Order,
    cursor,
    list_query,
    next_link,
    repository_unknown,
    request_body,
    tag_reference,
    tag_unknown,
)
from services.registry.app import Call
from services.registry.locks import MAX_PATCH_BYTES, AttributesPatch, parse_patch
from services.registry.store import TagDoc, repo_key


async def _after(call: Call, query: ListQuery) -> str:
    """Where the page starts: `last` itself, or for the time orders the time key of the tag it names."""
    if not query.order.by_time or not query.last:
        return query.last
    key = cursor(query.last)
    if key is not None:
        return key
    doc = await call.api.artifacts.get_tag(repo_key(call.registry.registry, call.name), query.last)
    if doc is None:
        # Its time cannot be known once it is gone; the Link header's cursors never need it.
        raise tag_unknown(query.last)
    return doc.time_key


async def list_tags(call: Call) -> Response:
    query = list_query(call.request.query_params, ordered=True, by_digest=True)
    store, registry = call.api.artifacts, call.registry.registry
    repo = repo_key(registry, call.name)
    listed = (await store.repository_attributes(registry, call.name)).listEnabled
    docs: list[TagDoc] = []
    if query.n and listed:
        docs = await store.list_tag_docs(repo, query.order, await _after(call, query), query.n + 1, query.digest)
    if not docs and not await store.repository_exists(registry, call.name):
        raise repository_unknown(call.name)
    page = docs[: query.n]
    link: dict[str, str] = {}
    if len(docs) > query.n:
        last = page[-1].name if query.order is Order.NAME else page[-1].time_key
        link = next_link(f"/acr/v1/{call.name}/_tags", query, last)
    body = TagList(registry=call.registry.loginServer, imageName=call.name, tags=[tag_base(doc) for doc in page])
    return JSONResponse(body.dump(), headers=link)


def _tag_body(call: Call, doc: TagDoc) -> Response:
    body = TagAttributes(registry=call.registry.loginServer, imageName=call.name, tag=tag_base(doc))
    return JSONResponse(body.dump())


async def get_tag(call: Call) -> Response:
    tag = tag_reference(call.reference)
    doc = await call.api.artifacts.get_tag(repo_key(call.registry.registry, call.name), tag)
    if doc is None:
        raise tag_unknown(tag)
    return _tag_body(call, doc)


async def patch_tag(call: Call) -> Response:
    tag = tag_reference(call.reference)
    patch = parse_patch(await request_body(call.request, MAX_PATCH_BYTES), AttributesPatch)
    repo = repo_key(call.registry.registry, call.name)
    for _ in range(changes.ATTEMPTS):
        doc = await call.api.artifacts.get_tag(repo, tag)
        if doc is None:
            raise tag_unknown(tag)
        attributes = doc.changeableAttributes.merged(patch)
        if attributes == doc.changeableAttributes:
            return _tag_body(call, doc)
        # ACR moves a tag's lastUpdateTime when its attributes change (and so its place in time order).
        doc.changeableAttributes, doc.updated = attributes, utcnow()
        try:
            written = TagDoc.model_validate(await call.api.artifacts.replace_artifact(doc))
        except ConcurrentUpdate:
            continue  # pushed or changed meanwhile: apply the patch to what is there now
        return _tag_body(call, written)
    raise changes.contended(f"tag {tag!r}")


async def delete_tag(call: Call) -> Response:
    tag = tag_reference(call.reference)
    await changes.untag(call, tag, lambda: tag_unknown(tag))
    return Response(status_code=202)
