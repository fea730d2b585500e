"""`GET /v2/_catalog`: the registry's repositories, from the metadata store, paged (list-disabled ones are
left out, as from `/acr/v1/_catalog`)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from services.registry.app import Call
from services.registry.routes.paging import next_link, page_request


async def get_catalog(call: Call) -> Response:
    n, last = page_request(call.request)
    if n == 0:
        return JSONResponse({"repositories": []})
    names = await call.api.artifacts.list_repositories(call.registry.registry, last, n + 1)
    page = names[:n]
    return JSONResponse({"repositories": page}, headers=next_link("/v2/_catalog", n, page, len(names) > n))
