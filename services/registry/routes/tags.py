"""`GET /v2/<name>/tags/list`: a repository's tags in lexical order, paged. List-disabled tags are left out,
and all of them when the repository is list-disabled (services/registry/locks.py)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from services.registry.app import Call
from services.registry.errors import ErrorCode, RegistryError
from services.registry.routes.paging import next_link, page_request
from services.registry.store import repo_key


async def get_tags(call: Call) -> Response:
    n, last = page_request(call.request)
    repo = repo_key(call.registry.registry, call.name)
    listed = (await call.api.artifacts.repository_attributes(call.registry.registry, call.name)).listEnabled
    tags = await call.api.artifacts.list_tags(repo, last, n + 1) if n and listed else []
    if not tags and not await call.api.artifacts.repository_exists(call.registry.registry, call.name):
        raise RegistryError(ErrorCode.NAME_UNKNOWN, f"repository {call.name!r} is not known to this registry")
    page = tags[:n]
    return JSONResponse(
        {"name": call.name, "tags": page},
        headers=next_link(f"/v2/{call.name}/tags/list", n, page, len(tags) > n),
    )
