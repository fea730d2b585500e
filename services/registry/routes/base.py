"""`GET /v2/`: the API version check every client starts with."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from services.registry.app import Call


async def get_base(call: Call) -> Response:
    return JSONResponse({})
