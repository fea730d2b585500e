"""The data plane's audit records (`ContainerRegistryRepositoryEvents`, services/platform/audit.py): which
requests are Push, Pull, Delete and Untag, and what their record says.

    route                                   OperationName
    GET    /v2/<name>/manifests/<ref>       Pull   (HEAD is not a pull, as in ACR's pull counts)
    PUT    /v2/<name>/manifests/<ref>       Push
    DELETE /v2/<name>/manifests/<tag>       Untag
    DELETE /v2/<name>/manifests/<digest>    Delete
    DELETE /acr/v1/<name>/_tags/<tag>       Untag
    DELETE /acr/v1/<name>/_manifests/<d>    Delete
    DELETE /acr/v1/<name>                   Delete (the repository: no tag, no digest)
    POST   /acr/v1/_deleted/<name>/_manifests/<d>  Restore (soft delete)

A deletion a timer makes (retention, the soft-delete purge) is `lifecycle_deletion`'s `Delete`, with the
system as its identity.

`RegistryApi.handle` opens a `RequestTrail` per request, `_dispatch` notes on it what it resolved (the
validated repository name, the caller), and once the response is known `RequestTrail.finish` writes one
record if the route is one of these, failures included. Only validated values are written: a repository
name or reference that failed validation is left out, and so is the tag of a request that failed for any
reason but a refusal (403) or a lock (409), so a hostile path cannot put text of its choosing in a record.
The digest, media type and size come from the response (a pull) or from the request that succeeded (a
push).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from services.auth.audit import identity_name
from services.auth.service import Identity
from services.platform import audit

_OPERATIONS: dict[tuple[str, str], str] = {
    ("manifest", "GET"): "Pull",
    ("manifest", "PUT"): "Push",
    ("manifest", "DELETE"): "Delete",  # Untag when the reference is a tag
    ("acr_tag", "DELETE"): "Untag",
    ("acr_manifest", "DELETE"): "Delete",
    ("acr_repository", "DELETE"): "Delete",
    ("acr_deleted_manifest", "POST"): "Restore",  # soft delete (services/registry/softdelete.py)
}
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


@dataclass(slots=True)
class RequestTrail:
    """What one data-plane request's audit record needs, noted as the request is resolved."""

    started: float
    correlation_id: str
    operation: str = ""  # set when the route is audited
    login_server: str = ""
    repository: str = ""  # only once validated
    reference: str = ""
    identity: Identity | None = None

    @classmethod
    def begin(cls, request: Request) -> RequestTrail:
        return cls(time.perf_counter(), audit.correlation_id(request.scope["headers"]))

    def route(self, kind: str, method: str, reference: str) -> None:
        """The matched route (before anything is validated): is it audited, and by what name?"""
        operation = _OPERATIONS.get((kind, method))
        if operation is None:
            return
        if kind == "manifest" and method == "DELETE" and _TAG.fullmatch(reference):
            operation = "Untag"
        self.operation = operation
        self.reference = reference

    def finish(self, request: Request, response: Response, caller_ip: str) -> None:
        """Write the record, if the route is audited (one log call; the headers are read in one pass each)."""
        if not self.operation:
            return
        status = response.status_code
        ok = status < 400
        reference = self.reference
        sent = _headers(request.scope["headers"])
        answered = _headers(response.raw_headers)
        # A tag is the client's text until something answered for it: a failure names it only when the
        # caller was authenticated and refused (403) or the tag is there and locked (409), never an unknown one
        # (a secret mistyped into the reference would otherwise be written).
        tag = reference if (ok or status in (403, 409)) and _TAG.fullmatch(reference) else ""
        digest = answered.get(b"docker-content-digest", "") or reference
        media_type, size = "", 0
        if ok and self.operation in ("Pull", "Push"):
            facts = answered if self.operation == "Pull" else sent
            media_type = facts.get(b"content-type", "").split(";", 1)[0].strip()
            size = _int(facts.get(b"content-length", ""))
            media_type = media_type if _MEDIA_TYPE.fullmatch(media_type) else ""
        if self.operation == "Delete" and not reference:  # a repository: no tag, no digest
            tag = digest = ""
        fields: dict[str, str | int] = {
            "Identity": identity_name(self.identity) if self.identity is not None else "",
            "LoginServer": self.login_server,
            "Repository": self.repository,
            "Tag": tag,
            "Digest": digest if len(digest) < 200 and _DIGEST.fullmatch(digest) else "",
            "MediaType": media_type,
            "Size": size,
            "ResultType": "HttpStatusCode",
            "ResultDescription": str(status),
            "CallerIpAddress": caller_ip,
            "UserAgent": audit.cut(sent.get(b"user-agent", ""), audit.MAX_USER_AGENT),
            "CorrelationId": self.correlation_id,
            "DurationMs": audit.duration_ms(self.started),
        }
        audit.emit(audit.REPOSITORY_EVENTS, self.operation, fields)


_WANTED = frozenset({b"user-agent", b"content-type", b"content-length", b"docker-content-digest"})


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, str]:
    """The few headers a record needs, from a raw header list (names are lower case in ASGI and Starlette)."""
    return {name: value.decode("latin-1") for name, value in raw if name in _WANTED}


def _int(value: str) -> int:
    return int(value) if value.isdigit() and len(value) < 19 else 0


def lifecycle_deletion(job: str, login_server: str, repository: str, digest: str, media_type: str, size: int) -> None:
    """The record of a manifest a timer deleted (retention): the system is its identity."""
    fields: dict[str, str | int] = {
        "Identity": audit.system_identity(job),
        "LoginServer": login_server,
        "Repository": repository,
        "Tag": "",
        "Digest": digest,
        "MediaType": media_type,
        "Size": size,
        "CallerIpAddress": "",
        "UserAgent": job,
        "CorrelationId": audit.correlation_id(()),
        "DurationMs": 0,
    }
    fields.update(audit.result_fields(200))
    audit.emit(audit.REPOSITORY_EVENTS, "Delete", fields)
