"""ACR's soft-deleted artifacts (services/registry/softdelete.py), at the paths `az acr` uses:

    GET   /acr/v1/_deleted/_catalog                      repositories deleted while soft delete was on
    GET   /acr/v1/_deleted/<name>/_manifests             the repository's soft-deleted manifests
    GET   /acr/v1/_deleted/<name>/_tags                  its soft-deleted tags (each with its digest)
    POST  /acr/v1/_deleted/<name>/_manifests/<digest>    restore: body {"tag": <tag or null>}, ?force=true

Lists page with `n` and `last` (a `Link` header names the next page), as the other `/acr/v1/` lists:
manifests by digest (a query of the repository's partition per page); repositories and tags are read whole
and paged here (the records of one repository, or the names of a registry's deleted repositories). Tags are
ordered by name, then by when they were deleted (oldest first: `az acr manifest restore` takes
the last one for a tag as the most recently deleted). Each item has `deletedAt`; `az` adds `expiresAfter`
from the registry's policy. A restore answers 200 with the digest and tags brought back.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.responses import JSONResponse, Response

from services.events.actions import request_info
from services.registry import softdelete
from services.registry.acr_paths import digest_reference, list_query, next_link, repository_unknown, request_body
from services.registry.app import Call
from services.registry.changes import current_attributes
from services.registry.deleted_store import DeletedStore
from services.registry.errors import ErrorCode, RegistryError
from services.registry.reference import is_tag
from services.registry.store import repo_key

MAX_RESTORE_BODY = 1024


def _deleted(call: Call) -> DeletedStore:
    return DeletedStore(call.api.metadata)


def _page(items: list[tuple[str, dict[str, Any]]], last: str, n: int) -> tuple[list[dict[str, Any]], str | None]:
    """The items after `last` (by key), at most `n`, and the key to continue from when there are more."""
    after = [(key, item) for key, item in sorted(items, key=lambda pair: pair[0]) if key > last]
    page = after[:n]
    return [item for _, item in page], page[-1][0] if len(after) > n and page else None


async def get_catalog(call: Call) -> Response:
    query = list_query(call.request.query_params)
    registry = call.registry.registry
    live = set(await call.api.artifacts.all_repositories(registry))
    names = [name for name in await _deleted(call).repositories(registry) if name not in live]
    page, more = _page([(name, {"name": name}) for name in names], query.last, query.n)
    link = next_link("/acr/v1/_deleted/_catalog", query, more) if more else {}
    return JSONResponse({"repositories": [item["name"] for item in page]}, headers=link)


async def _known(call: Call, has_records: bool) -> None:
    if not has_records and not await call.api.artifacts.repository_exists(call.registry.registry, call.name):
        raise repository_unknown(call.name)


async def list_manifests(call: Call) -> Response:
    query = list_query(call.request.query_params)
    repo = repo_key(call.registry.registry, call.name)
    records = await _deleted(call).manifests(repo, query.last, query.n + 1) if query.n else []
    await _known(call, bool(records) or bool(query.last))
    items = []
    for record in records:
        manifest = record.restored()
        item = {
            "digest": record.digest,
            "mediaType": manifest.mediaType,
            "imageSize": manifest.imageSize if manifest.imageSize is not None else manifest.size,
            "createdTime": manifest.created,
            "lastUpdateTime": manifest.last_update,
            "deletedAt": record.deletedAt,
            "architecture": manifest.architecture,
            "os": manifest.os,
            "tags": record.tags,
        }
        items.append((record.digest, {key: value for key, value in item.items() if value is not None}))
    page, more = [item for _, item in items[: query.n]], records[query.n - 1].digest if len(records) > query.n else None
    link = next_link(f"/acr/v1/_deleted/{call.name}/_manifests", query, more) if more else {}
    body = {"registry": call.registry.loginServer, "imageName": call.name, "manifests": page}
    return JSONResponse(body, headers=link)


async def list_tags(call: Call) -> Response:
    query = list_query(call.request.query_params)
    repo = repo_key(call.registry.registry, call.name)
    deleted = _deleted(call)
    records, tag_records = await deleted.manifests(repo), await deleted.deleted_tags(repo)
    await _known(call, bool(records or tag_records))
    found = [(tag, record.digest, record.deletedAt) for record in records for tag in record.tags]
    found += [(record.tag, record.digest, record.deletedAt) for record in tag_records]
    items = [
        (f"{tag}|{deleted_at}|{digest}", {"tag": tag, "digest": digest, "deletedAt": deleted_at})
        for tag, digest, deleted_at in found
    ]
    page, more = _page(items, query.last, query.n)
    link = next_link(f"/acr/v1/_deleted/{call.name}/_tags", query, more) if more else {}
    body = {"registry": call.registry.loginServer, "imageName": call.name, "tags": page}
    return JSONResponse(body, headers=link)


class RestoreBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tag: str | None = None


def _force(raw: str | None) -> bool:
    if raw is None or raw == "":
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise RegistryError(ErrorCode.UNSUPPORTED, "force must be true or false", status=400)


async def restore_manifest(call: Call) -> Response:
    digest = digest_reference(call.reference)
    force = _force(call.request.query_params.get("force"))
    raw = await request_body(call.request, MAX_RESTORE_BODY)
    try:
        body = RestoreBody.model_validate(json.loads(raw)) if raw.strip() else RestoreBody()
    except (ValueError, ValidationError):
        raise RegistryError(ErrorCode.UNSUPPORTED, 'the body must be JSON: {"tag": "<tag>"}', status=400) from None
    if body.tag is not None and not is_tag(body.tag):
        raise RegistryError(ErrorCode.TAG_INVALID, detail={"tag": body.tag[:128]})
    restored, outbox = await softdelete.restore(
        call.api.artifacts,
        _deleted(call),
        call.registry,
        call.name,
        digest,
        body.tag,
        force,
        request_info(call.request.headers, "PUT"),
        await current_attributes(call),
    )
    await call.api.events.publish(outbox)
    return JSONResponse({"digest": restored.digest, "tags": restored.tags})
