"""The `/acr/v1/` metadata API's paths and list parameters (what `azure-containerregistry` 1.2.0, the
`az acr repository` commands and `acr purge` send). Pure parsing: no storage.

    GET                /acr/v1/_catalog                      acr_catalog
    GET PATCH DELETE   /acr/v1/<name>                        acr_repository
    GET                /acr/v1/<name>/_tags                  acr_tags       n, last, orderby, digest
    GET PATCH DELETE   /acr/v1/<name>/_tags/<tag>            acr_tag
    GET                /acr/v1/<name>/_manifests             acr_manifests  n, last, orderby
    GET PATCH DELETE   /acr/v1/<name>/_manifests/<digest>    acr_manifest
    POST               /acr/v1/<name>/_manifests/<digest>/_scan  acr_manifest_scan  (ours: a rescan)
    GET                /acr/v1/_deleted/_catalog             acr_deleted_catalog    (soft delete:
    GET                /acr/v1/_deleted/<name>/_manifests    acr_deleted_manifests   routes/acr_deleted.py)
    GET                /acr/v1/_deleted/<name>/_tags         acr_deleted_tags
    POST               /acr/v1/_deleted/<name>/_manifests/<digest>  acr_deleted_manifest  (restore)

Repository names contain slashes, so a path is matched from its end, as `reference.match_route` does for
`/v2/`; no component of a valid name starts with `_`, so `_tags`, `_manifests` and `_catalog` cannot be
part of one.

Paging. `n` is the page size (default 100, as ACR's; at most 1000; 0 gives an empty page). Without
`orderby` (or `orderby=none`) items come in lexical order of name (tags) or digest (manifests) and `last`
is the name or digest the previous page ended with. With `orderby=timedesc|timeasc` they come by
`lastUpdateTime`, ties broken by name or digest in the same direction, and the `Link` header's `last` is a
cursor `<lastUpdateTime>|<name or digest>` (no tag or digest contains `|`). A cursor rather than the
name, because `acr purge` deletes the tags of a page before asking for the next one with the `last` it took
from the `Link`: a name would no longer say where the page ended. A plain name or digest given as `last`
still works with `orderby` while the item exists (its time is looked up). ACR documents neither the ordering
of ties nor the form of its time-ordered links.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote, urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request

from services.registry.digest import Digest
from services.registry.errors import ErrorCode, RegistryError
from services.registry.reference import is_tag

AcrRouteKind = Literal[
    "acr_catalog",
    "acr_repository",
    "acr_tags",
    "acr_tag",
    "acr_manifests",
    "acr_manifest",
    "acr_manifest_scan",
    "acr_deleted_catalog",
    "acr_deleted_manifests",
    "acr_deleted_tags",
    "acr_deleted_manifest",
]
DELETED: Final = "_deleted/"

PREFIX: Final = "/acr/v1/"
DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 1000
MAX_LAST: Final = 512  # the longest cursor: a timestamp, "|" and a 255-character name or a sha512 digest
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,7})?Z")


@dataclass(frozen=True, slots=True)
class AcrRoute:
    """Which `/acr/v1/` endpoint a path addresses; `name` and `reference` are raw, unvalidated path text."""

    kind: AcrRouteKind
    name: str | None = None
    reference: str | None = None  # the tag or the digest


def match_acr_route(path: str) -> AcrRoute | None:
    """Map a decoded `/acr/v1/...` URL path to its endpoint, or None if it is not one."""
    path = path.split("?", 1)[0]
    if not path.startswith(PREFIX):
        return None
    rest = path[len(PREFIX) :]
    if rest == "_catalog":
        return AcrRoute("acr_catalog")
    if rest.startswith(DELETED):
        return _match_deleted(rest[len(DELETED) :])
    parts = rest.split("/")
    if not rest or "" in parts:
        return None  # an empty segment: no name can have one
    if parts[-1] in ("_tags", "_manifests") and len(parts) >= 2:
        kind: AcrRouteKind = "acr_tags" if parts[-1] == "_tags" else "acr_manifests"
        return AcrRoute(kind, "/".join(parts[:-1]))
    if len(parts) >= 4 and parts[-3] == "_manifests" and parts[-1] == "_scan":
        return AcrRoute("acr_manifest_scan", "/".join(parts[:-3]), parts[-2])
    if len(parts) >= 3 and parts[-2] in ("_tags", "_manifests"):
        kind = "acr_tag" if parts[-2] == "_tags" else "acr_manifest"
        return AcrRoute(kind, "/".join(parts[:-2]), parts[-1])
    if any(part.startswith("_") for part in parts):
        return None  # `_catalog/x`, `a/_tags/b/c` and the like: not an endpoint
    return AcrRoute("acr_repository", rest)


def _match_deleted(rest: str) -> AcrRoute | None:
    """`_catalog`, `<name>/_manifests`, `<name>/_tags`, `<name>/_manifests/<digest>` (after `_deleted/`)."""
    if rest == "_catalog":
        return AcrRoute("acr_deleted_catalog")
    parts = rest.split("/")
    if "" in parts or len(parts) < 2:
        return None
    if parts[-1] == "_manifests":
        return AcrRoute("acr_deleted_manifests", "/".join(parts[:-1]))
    if parts[-1] == "_tags":
        return AcrRoute("acr_deleted_tags", "/".join(parts[:-1]))
    if len(parts) >= 3 and parts[-2] == "_manifests":
        return AcrRoute("acr_deleted_manifest", "/".join(parts[:-2]), parts[-1])
    return None


class Order(enum.Enum):
    NAME = "none"
    TIME_DESC = "timedesc"
    TIME_ASC = "timeasc"

    @property
    def by_time(self) -> bool:
        return self is not Order.NAME


@dataclass(frozen=True, slots=True)
class ListQuery:
    n: int
    last: str  # "" for the first page
    order: Order
    digest: str | None = None  # the tags list's filter


def _bad(message: str) -> RegistryError:
    # The spec's UNSUPPORTED also covers "an invalid set of parameters"; 400 says the request is at fault.
    return RegistryError(ErrorCode.UNSUPPORTED, message, status=400)


def page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PAGE
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise RegistryError(ErrorCode.PAGINATION_NUMBER_INVALID, "n must be a non-negative integer")
    return min(int(raw), MAX_PAGE)


def list_query(params: QueryParams, *, ordered: bool = False, by_digest: bool = False) -> ListQuery:
    """`n`, `last`, and where the endpoint has them `orderby` and `digest`."""
    n = page_size(params.get("n"))
    last = params.get("last") or ""
    if len(last) > MAX_LAST or not last.isprintable():
        raise _bad(f"last must be a name, a digest or a cursor from a Link header (at most {MAX_LAST} characters)")
    order = Order.NAME
    raw_order = params.get("orderby")
    if ordered and raw_order:
        try:
            order = Order(raw_order)
        except ValueError:
            raise _bad("orderby must be timedesc, timeasc or none") from None
    digest = None
    if by_digest and params.get("digest"):
        digest = str(Digest.parse(params["digest"]))  # DIGEST_INVALID (400) when malformed
    return ListQuery(n, last, order, digest)


# --- time cursors ------------------------------------------------------------------------------------
def time_key(updated: str, key: str) -> str:
    """The sort key of a time-ordered list: unique, and ordered as (lastUpdateTime, name or digest)."""
    return f"{updated}|{key}"


def cursor(last: str) -> str | None:
    """`last` when it is a time cursor (`<timestamp>|<key>`), else None (it is then a name or digest)."""
    stamp, bar, key = last.partition("|")
    if not bar:
        return None
    if not _TIMESTAMP.fullmatch(stamp) or not key or "|" in key:
        raise _bad("last is neither a name, a digest, nor a cursor from a Link header")
    return last


def next_link(path: str, query: ListQuery, last: str) -> dict[str, str]:
    """`Link: </acr/v1/...?last=...&n=...[&orderby=...]>; rel="next"`: the path is quoted (names may hold
    only `[a-z0-9._/-]`, so it stays readable) and so are the parameters (digests carry `:`)."""
    params: dict[str, str | int] = {"last": last, "n": query.n}
    if query.order.by_time:
        params["orderby"] = query.order.value
    if query.digest:
        params["digest"] = query.digest
    return {"Link": f'<{quote(path)}?{urlencode(params)}>; rel="next"'}


# --- path components, bodies and the API's not-found answers ---------------------------------------------
def tag_reference(text: str) -> str:
    """A tag in the path: `400 TAG_INVALID` when no tag can be spelled so."""
    if not is_tag(text):
        raise RegistryError(
            ErrorCode.TAG_INVALID,
            "a tag is 1 to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'",
            detail={"tag": text[:MAX_LAST]},
        )
    return text


def digest_reference(text: str) -> str:
    """A digest in the path (the manifest endpoints take digests only, as ACR's): `400 DIGEST_INVALID`."""
    return str(Digest.parse(text))


async def request_body(request: Request, limit: int) -> bytes:
    """The body, refused (`400 UNSUPPORTED`) as soon as it is over `limit` bytes."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise _bad(f"the body is over {limit} bytes")
    return bytes(data)


def repository_unknown(name: str) -> RegistryError:
    return RegistryError(ErrorCode.NAME_UNKNOWN, detail={"name": name})


def tag_unknown(tag: str) -> RegistryError:
    return RegistryError(ErrorCode.TAG_UNKNOWN, detail={"tag": tag})


def manifest_unknown(digest: str) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_UNKNOWN, detail={"digest": digest})
