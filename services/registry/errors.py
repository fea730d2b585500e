"""The one catalogue of registry error codes, and the exception that carries them to the HTTP layer.

Every failure the data plane reports to a client is a `RegistryError` holding an `ErrorCode`. The route
layer turns it into a response with `status`, `headers` and `body()`; nothing else decides a status code.

The OCI distribution spec (v1.1, "Error Codes") says the JSON `code` field MUST be one of its fourteen
codes. A few conditions need a status the code's usual one does not have, so a member carries three
things: the spec code it is reported as (`wire_code`), its HTTP status and a default message. Members
whose name is not a spec code are *aliases with their own status*:

- `RANGE_INVALID` (416) is reported as `BLOB_UPLOAD_INVALID`. The spec requires 416 for a chunk sent
  out of order; CNCF distribution reports it with its own `RANGE_INVALID` code, which is not in the
  spec's list, so we stay inside the list.
- `RANGE_NOT_SATISFIABLE` (416) is the answer to a blob GET whose `Range` lies wholly past the end of
  the blob. No spec code is about reads of a range, so it is reported as `SIZE_INVALID` (the request
  named bytes the blob's size does not have); clients act on the 416 and the `Content-Range` header.
- `MANIFEST_TOO_LARGE` (413) is reported as `MANIFEST_INVALID`: the spec says a registry SHOULD answer
  413 to a manifest over its size limit but names no code for it (zot does the same).

Three codes are outside the spec's list, each because no listed code describes the condition:

- `TAG_INVALID` (400), for a malformed tag on a manifest push (in the path or a `?tag=`): a legacy
  code the spec itself says clients MAY encounter (CNCF distribution's router answers such a path 404,
  which tells the client that something is missing when its request is what is wrong).
- `PAGINATION_NUMBER_INVALID` (400), for a bad `?n=`: CNCF distribution's code for it.
- `TAG_UNKNOWN` (404), for a tag that does not exist on the `/acr/v1/` metadata API: ACR's own code and
  message there (`{"code": "TAG_UNKNOWN", "message": "the specified tag does not exist"}`), which the
  `azure-containerregistry` SDKs see; `/v2/` keeps the spec's `MANIFEST_UNKNOWN`.
- `UNKNOWN` (500), for failures of the registry itself; the list governs 4XX responses only, and
  clients are told to treat codes they do not know as UNKNOWN.
- `UNAVAILABLE` (503, with `Retry-After`), when Cosmos DB or Blob Storage does not answer or throttles
  (services/platform/availability.py): CNCF distribution's code, which its health-check handler answers
  every request with while a storage check fails. Throttling by Cosmos DB is reported this way too, not as
  `TOOMANYREQUESTS` (429): that says *this client* sent too many requests (ours, for the registry's request
  limits), while a dependency's throttling is the whole registry being over capacity, which is 503.

Other choices, where the spec leaves room:

- `UNSUPPORTED` is 405, as in CNCF distribution: the spec allows 400 or 405 for a disabled delete,
  and 405 says "this operation is switched off" more precisely than a generic 400.
- `MANIFEST_BLOB_UNKNOWN` is 400: the request is wrong (it names content the registry lacks), not the
  URL, so 404 would mislead clients into thinking the manifest itself is missing.
"""

from __future__ import annotations

import enum
from typing import Any

from services.platform.availability import DependencyUnavailable


class ErrorCode(enum.Enum):
    """An error a client can act on: (spec code, HTTP status, default message)."""

    BLOB_UNKNOWN = ("BLOB_UNKNOWN", 404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = ("BLOB_UPLOAD_INVALID", 400, "blob upload invalid")
    BLOB_UPLOAD_UNKNOWN = ("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry")
    DIGEST_INVALID = ("DIGEST_INVALID", 400, "provided digest did not match uploaded content")
    MANIFEST_BLOB_UNKNOWN = (
        "MANIFEST_BLOB_UNKNOWN",
        400,
        "manifest references a manifest or blob unknown to registry",
    )
    MANIFEST_INVALID = ("MANIFEST_INVALID", 400, "manifest invalid")
    MANIFEST_UNKNOWN = ("MANIFEST_UNKNOWN", 404, "manifest unknown to registry")
    NAME_INVALID = ("NAME_INVALID", 400, "invalid repository name")
    NAME_UNKNOWN = ("NAME_UNKNOWN", 404, "repository name not known to registry")
    SIZE_INVALID = ("SIZE_INVALID", 400, "provided length did not match content length")
    UNAUTHORIZED = ("UNAUTHORIZED", 401, "authentication required")
    DENIED = ("DENIED", 403, "requested access to the resource is denied")
    UNSUPPORTED = ("UNSUPPORTED", 405, "the operation is unsupported")
    TOOMANYREQUESTS = ("TOOMANYREQUESTS", 429, "too many requests")
    # Outside the spec's list; see the module docstring.
    TAG_INVALID = ("TAG_INVALID", 400, "manifest tag is invalid")
    PAGINATION_NUMBER_INVALID = ("PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested")
    TAG_UNKNOWN = ("TAG_UNKNOWN", 404, "the specified tag does not exist")
    UNKNOWN = ("UNKNOWN", 500, "unknown error")
    UNAVAILABLE = ("UNAVAILABLE", 503, "service unavailable")
    # Aliases with their own status; see the module docstring for why each maps to its spec code.
    RANGE_INVALID = ("BLOB_UPLOAD_INVALID", 416, "content range is out of order or invalid")
    RANGE_NOT_SATISFIABLE = ("SIZE_INVALID", 416, "requested range not satisfiable")
    MANIFEST_TOO_LARGE = ("MANIFEST_INVALID", 413, "manifest exceeds the registry's size limit")

    # Annotations without values are attributes, not members.
    wire_code: str
    status: int
    message: str

    def __init__(self, wire_code: str, status: int, message: str) -> None:
        self.wire_code = wire_code
        self.status = status
        self.message = message


class RegistryError(Exception):
    """A failure to report to the client as an OCI error response."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        detail: object = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._code = code
        self._message = message if message is not None else code.message
        self._detail = detail
        self._status = status
        self._headers = dict(headers) if headers else {}
        super().__init__(f"{code.wire_code}: {self._message}")

    @property
    def code(self) -> ErrorCode:
        return self._code

    @property
    def message(self) -> str:
        return self._message

    @property
    def detail(self) -> object:
        return self._detail

    @property
    def status(self) -> int:
        return self._status if self._status is not None else self._code.status

    @property
    def headers(self) -> dict[str, str]:
        # A copy, so a handler adding headers to one response cannot leak them into another.
        return dict(self._headers)

    def body(self) -> dict[str, Any]:
        """The spec's JSON error envelope; `detail` is left out when there is none."""
        error: dict[str, Any] = {"code": self._code.wire_code, "message": self._message}
        if self._detail is not None:
            error["detail"] = self._detail
        return {"errors": [error]}

    def __repr__(self) -> str:
        return f"RegistryError({self._code.name}, {self._message!r}, status={self.status})"


def unavailable_error(outage: DependencyUnavailable) -> RegistryError:
    """The 503 a client gets for an outage: when to retry, and nothing about which service or where."""
    seconds = outage.retry_after_seconds
    reason = "is over capacity" if outage.throttled else "is temporarily unavailable"
    return RegistryError(
        ErrorCode.UNAVAILABLE,
        f"the registry {reason}; retry after {seconds} s",
        headers={"Retry-After": str(seconds)},
    )
