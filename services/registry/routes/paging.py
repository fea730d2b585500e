"""`n` and `last` query parameters and the `Link` header shared by the tags list and the catalog."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request

from services.registry.errors import ErrorCode, RegistryError

DEFAULT_PAGE = 1000
MAX_PAGE = 10_000


def page_request(request: Request) -> tuple[int, str]:
    """(n, last) from the query; n defaults to 1000 and is capped (ACR pages at most 1000 on its own)."""
    raw = request.query_params.get("n")
    if raw is None or raw == "":
        n = DEFAULT_PAGE
    elif raw.isdigit() and len(raw) <= 9:
        n = min(int(raw), MAX_PAGE)
    else:
        raise RegistryError(ErrorCode.PAGINATION_NUMBER_INVALID, f"n must be a non-negative integer, got {raw!r}")
    return n, request.query_params.get("last", "")


def next_link(path: str, n: int, items: list[str], more: bool) -> dict[str, str]:
    if not more or not items:
        return {}
    return {"Link": f'<{path}?{urlencode({"n": n, "last": items[-1]})}>; rel="next"'}
