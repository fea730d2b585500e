"""`GET /acr/v1/_catalog` and `GET`/`PATCH`/`DELETE /acr/v1/<name>`: the repositories of ACR's metadata API.

The catalog is `/v2/_catalog`'s list (list-disabled repositories left out) with `/acr/v1/`'s page size. A
repository's properties count its manifests and tags and report the latest change in it. PATCH changes its
`changeableAttributes` (partial: only the fields sent). DELETE removes every manifest and tag, raising a
`delete` event per manifest, and answers `202` with what it deleted, as ACR does; anything locked in it
refuses the whole delete (services/registry/changes.py).
"""

from __future__ import annotations

import asyncio

from starlette.responses import JSONResponse, Response

from services.platform.cosmos import ConcurrentUpdate, utcnow
from services.registry import changes
from services.registry.acr_bodies import DeletedRepository, Repositories, repository_body
from services.registry.acr_paths import list_query, next_link, repository_unknown, request_body
from services.registry.app import Call
from services.registry.locks import MAX_PATCH_BYTES, AttributesPatch, parse_patch
from services.registry.store import RepositoryDoc, repo_key


async def get_catalog(call: Call) -> Response:
    query = list_query(call.request.query_params)
    if query.n == 0:
        return JSONResponse(Repositories(repositories=[]).dump())
    names = await call.api.artifacts.list_repositories(call.registry.registry, query.last, query.n + 1)
    page = names[: query.n]
    link = next_link("/acr/v1/_catalog", query, page[-1]) if len(names) > query.n else {}
    return JSONResponse(Repositories(repositories=page).dump(), headers=link)


async def _properties(call: Call, doc: RepositoryDoc) -> Response:
    store, repo = call.api.artifacts, repo_key(call.registry.registry, call.name)
    manifests, tags, last_update = await asyncio.gather(
        store.count(repo, "manifest"), store.count(repo, "tag"), store.last_update(repo)
    )
    return JSONResponse(repository_body(call.registry.loginServer, doc, manifests, tags, last_update).dump())


async def get_repository(call: Call) -> Response:
    doc = await call.api.artifacts.get_repository(call.registry.registry, call.name)
    if doc is None:
        raise repository_unknown(call.name)
    return await _properties(call, doc)


async def patch_repository(call: Call) -> Response:
    patch = parse_patch(await request_body(call.request, MAX_PATCH_BYTES), AttributesPatch)
    for _ in range(changes.ATTEMPTS):
        doc = await call.api.artifacts.get_repository(call.registry.registry, call.name)
        if doc is None:
            raise repository_unknown(call.name)
        attributes = doc.changeableAttributes.merged(patch)
        if attributes == doc.changeableAttributes:
            return await _properties(call, doc)  # nothing to change: no write, no new lastUpdateTime
        doc.changeableAttributes, doc.updated = attributes, utcnow()
        try:
            written = await call.api.artifacts.replace_repository(doc)
        except ConcurrentUpdate:
            continue
        return await _properties(call, written)
    raise changes.contended(f"repository {call.name!r}")


async def delete_repository(call: Call) -> Response:
    manifests, tags = await changes.delete_repository(call)
    return JSONResponse(DeletedRepository(manifestsDeleted=manifests, tagsDeleted=tags).dump(), status_code=202)
