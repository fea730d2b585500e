"""Audit records, one JSON line each on the `audit` logger, in the shapes of ACR's resource logs.

    Category                            written by                               when
    ContainerRegistryLoginEvents        services/auth (token endpoints, Basic)   every sign-in attempt
    ContainerRegistryRepositoryEvents   services/registry (Push, Pull, Delete,   every such request, and
                                        Untag), retention (system identity)      every lifecycle deletion
    RegistryManagementEvents            services/management (ours: ARM's         every change (PUT, PATCH,
                                        activity log is Azure's)                 DELETE, POST)

The fields are the Log Analytics columns of ACR's tables (TimeGenerated, Category, OperationName, Identity,
LoginServer, Repository, Tag, Digest, MediaType, Size, ResultType, ResultDescription, CallerIpAddress,
UserAgent, DurationMs, CorrelationId); ResultType is `HttpStatusCode` and ResultDescription the status code,
so `ResultDescription != "200"` finds failures as in ACR's own examples. A deletion a timer makes names the
system as its identity (`system:<job>`).

The records never carry a secret: nothing here reads an Authorization header, a password, a token, a SAS URL,
a webhook's custom headers or an HMAC secret; callers pass names that were validated (or nothing), and a
username that failed to sign in is only written when it names the admin user or an existing token (a
password typed into the username field is never recorded). Every value is a JSON string or number
(`json.dumps` escapes CR, LF and quotes), so no value can end a record or start another, and values a client
chose (user agent, correlation id) are cut to a bound.

One log call per operation, after its result is known; no I/O of its own. In Azure the Function App's logs
go to Application Insights (AppTraces, the record in `Message`); locally to stderr, and under `make run`
also to `.local/audit.log` (`write_to`).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

log = logging.getLogger("audit")
log.setLevel(logging.INFO)  # audit records are kept whatever level the rest of the app logs at

LOGIN_EVENTS: Final = "ContainerRegistryLoginEvents"
REPOSITORY_EVENTS: Final = "ContainerRegistryRepositoryEvents"
MANAGEMENT_EVENTS: Final = "RegistryManagementEvents"

MAX_USER_AGENT = 512
MAX_FIELD = 1024
# A correlation id a client sends is kept only when it looks like one (a UUID or a short token).
_CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
CORRELATION_HEADERS = frozenset({b"x-ms-correlation-request-id", b"x-ms-client-request-id"})


def system_identity(job: str) -> str:
    """The identity of a deletion made by a timer, not a caller: `system:retention-policy`."""
    return f"system:{job}"


def correlation_id(raw_headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's correlation id when it sent a well-formed one, else a new one (a UUID). `raw_headers`
    as ASGI has them (lower-case names): one pass, nothing decoded but the one wanted."""
    for name, value in raw_headers:
        if name in CORRELATION_HEADERS:
            text = value.decode("latin-1")
            if _CORRELATION_ID.fullmatch(text):
                return text
    return str(uuid.uuid4())


def duration_ms(started: float) -> int:
    """Milliseconds since `started` (a `time.perf_counter()` reading)."""
    return int((time.perf_counter() - started) * 1000)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cut(value: str, limit: int = MAX_FIELD) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def emit(category: str, operation: str, fields: dict[str, str | int]) -> None:
    """Write one record: `TimeGenerated`, `Category`, `OperationName`, then `fields` as given (callers pass
    validated or bounded values: `client_fields` bounds what the client chose)."""
    if not log.isEnabledFor(logging.INFO):
        return
    record: dict[str, str | int] = {"TimeGenerated": _now(), "Category": category, "OperationName": operation}
    record.update(fields)
    # ensure_ascii: CR, LF, U+2028 and every other control or non-ASCII character is written as an escape.
    log.info("%s", json.dumps(record, ensure_ascii=True, separators=(",", ":")))


def result_fields(status: int) -> dict[str, str]:
    return {"ResultType": "HttpStatusCode", "ResultDescription": str(status)}


def client_fields(caller_ip: str, user_agent: str, correlation: str, started: float) -> dict[str, str | int]:
    """The fields every record of a request has."""
    return {
        "CallerIpAddress": caller_ip,
        "UserAgent": cut(user_agent, MAX_USER_AGENT),
        "CorrelationId": correlation,
        "DurationMs": duration_ms(started),
    }


def write_to(path: Path) -> None:
    """Also append the records to `path`, one JSON line each (`make run`: .local/audit.log). Processes forked
    after this share the file; each record is one `write` of a line opened for appending."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
