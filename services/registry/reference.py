"""Repository names, tags, manifest references, and the mapping of `/v2/...` URL paths to routes.

Names follow the distribution spec (v1.1, "Pulling manifests"):

    [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*

with a total length of at most 255 characters (`MAX_NAME_LENGTH`). The spec gives no hard limit, only a
note that many clients cap `host[:port]/name` at 255; CNCF distribution enforces 255 on the name itself,
and the ACR documentation states the character rules but no length, so we take distribution's limit. A
bad name is `NAME_INVALID` (400).

A tag is `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`. A `<reference>` path component is either a tag or a digest;
it is a digest exactly when it contains ':' (which no tag can). A malformed digest is `DIGEST_INVALID`
(400). A malformed tag is a client error on a write: a manifest PUT to `/manifests/<tag>` with a tag longer
than 128 characters or starting with '-' or '.' is `TAG_INVALID` (400), so the client learns that its tag
is wrong rather than that something is missing. On reads and deletes (GET/HEAD/DELETE) it stays
`MANIFEST_UNKNOWN` (404): no manifest can ever be stored under it, the spec's endpoint table lists 404 for
those, and CNCF distribution answers such a path with 404 as well (its router does not match it).

`match_route` matches from the end of the path because names contain slashes: the last one to three
segments say which endpoint it is, and everything between `/v2/` and them is the name. It does not
validate the name, so the route layer can report `NAME_INVALID` rather than a bare 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from services.registry.digest import Digest
from services.registry.errors import ErrorCode, RegistryError

MAX_NAME_LENGTH: Final = 255
MAX_TAG_LENGTH: Final = 128

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_PATTERN: Final = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_PATTERN: Final = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")

# Longer inputs are cut in error messages so a hostile URL cannot bloat the response.
_SHOWN = 160


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def validate_repository_name(name: str) -> str:
    """Return `name` if it is a valid repository name, else raise `RegistryError(NAME_INVALID)`."""
    if not isinstance(name, str) or not name:
        raise RegistryError(ErrorCode.NAME_INVALID, "the repository name is empty", {"name": name})
    if len(name) > MAX_NAME_LENGTH:
        raise RegistryError(
            ErrorCode.NAME_INVALID,
            f"repository name is {len(name)} characters; the limit is {MAX_NAME_LENGTH}",
            {"name": name[:_SHOWN]},
        )
    # fullmatch: `$` would accept a trailing newline. The length check comes first, which also bounds the
    # regex's work on hostile input.
    if not NAME_PATTERN.fullmatch(name):
        raise RegistryError(
            ErrorCode.NAME_INVALID,
            f"invalid repository name {_shown(name)}: path components are lowercase letters and digits, "
            "separated by '.', '_', '__' or dashes, joined by '/'",
            {"name": name},
        )
    return name


def is_tag(text: str) -> bool:
    return isinstance(text, str) and TAG_PATTERN.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Reference:
    """A manifest reference: exactly one of a tag or a digest."""

    tag: str | None = None
    digest: Digest | None = None

    def __post_init__(self) -> None:
        if (self.tag is None) == (self.digest is None):
            raise ValueError("a Reference is exactly one of a tag or a digest")
        if self.tag is not None and not is_tag(self.tag):
            raise ValueError(f"invalid tag {self.tag!r}")

    @classmethod
    def parse(cls, text: str, *, writing: bool = False) -> Reference:
        """Parse a `<reference>`: DIGEST_INVALID for a bad digest; for a bad tag, TAG_INVALID (400) when
        `writing` (a manifest PUT), else MANIFEST_UNKNOWN (404)."""
        if not isinstance(text, str):
            raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, "a reference must be a string")
        if ":" in text:
            return cls(digest=Digest.parse(text))
        if not is_tag(text):
            raise RegistryError(
                ErrorCode.TAG_INVALID if writing else ErrorCode.MANIFEST_UNKNOWN,
                f"invalid tag {_shown(text)}: a tag is 1 to {MAX_TAG_LENGTH} characters of letters, digits, "
                "'_', '.' and '-', not starting with '.' or '-'",
                {"tag": text[:_SHOWN]},
            )
        return cls(tag=text)

    @property
    def is_digest(self) -> bool:
        return self.digest is not None

    def __str__(self) -> str:
        return self.tag if self.tag is not None else str(self.digest)


RouteKind = Literal["base", "catalog", "tags", "manifest", "blob", "upload", "upload_session", "referrers"]


# `/v2/<name>/<segment>/<reference>` endpoints, by their second-to-last segment.
_LEAF_ROUTES: Final[dict[str, RouteKind]] = {
    "manifests": "manifest",
    "blobs": "blob",
    "referrers": "referrers",
}


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Which endpoint a path addresses; `name` and `reference` are raw, unvalidated path text."""

    kind: RouteKind
    name: str | None = None
    # The manifest reference, blob digest, upload session id, or referrers subject digest.
    reference: str | None = None


def match_route(path: str) -> RouteMatch | None:
    """Map a decoded `/v2/...` URL path to its endpoint, or None if it is not a registry path.

    A query string, if still attached, is ignored. Each pattern needs a non-empty name before it; where
    two patterns could both match, the more specific one wins (`/blobs/uploads` is the upload endpoint,
    never a blob whose digest is "uploads", which could not be a valid digest anyway).
    """
    path = path.split("?", 1)[0]
    if path in ("/v2", "/v2/"):
        return RouteMatch("base")
    if path == "/v2/_catalog":
        return RouteMatch("catalog")
    if not path.startswith("/v2/"):
        return None
    parts = path[len("/v2/") :].split("/")

    def name_before(count: int) -> str | None:
        # The name is everything before the last `count` segments; it must be there and non-empty.
        if len(parts) <= count:
            return None
        return "/".join(parts[:-count]) or None

    last = parts[-1]
    if len(parts) >= 3 and parts[-3:] == ["blobs", "uploads", ""]:
        name = name_before(3)
        if name is not None:
            return RouteMatch("upload", name)
    if len(parts) >= 2 and parts[-2:] == ["blobs", "uploads"]:
        name = name_before(2)
        if name is not None:
            return RouteMatch("upload", name)
    if len(parts) >= 3 and parts[-3:-1] == ["blobs", "uploads"] and last:
        name = name_before(3)
        if name is not None:
            return RouteMatch("upload_session", name, last)
    if len(parts) >= 2 and parts[-2:] == ["tags", "list"]:
        name = name_before(2)
        if name is not None:
            return RouteMatch("tags", name)
    if len(parts) >= 2 and last:
        kind = _LEAF_ROUTES.get(parts[-2])
        name = name_before(2)
        if kind is not None and name is not None:
            return RouteMatch(kind, name, last)
    return None
