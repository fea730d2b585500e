"""Sign-in audit records (`ContainerRegistryLoginEvents`, services/platform/audit.py).

One record per sign-in attempt, written once its answer is known: each request to `/oauth2/token` and
`/oauth2/exchange` (`routes.handle`), and each `/v2/` request with Basic credentials (`AuthService.admit`).
Bearer requests to `/v2/` are not sign-ins: their token was issued by a recorded one.

    OperationName   Login
    Identity        who signed in (identity_name); on a failure, the username only when it names the admin
                    user, the refresh-token user or an existing token, else "" (a password typed into the
                    username field is never written); never a password or token
    ResultDescription  the HTTP status of the answer (200, 401, 429, ...)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from services.management.store import RegistryDoc
from services.platform import audit

if TYPE_CHECKING:  # service.py records its Basic sign-ins here
    from services.auth.service import AuthService, Identity

log = logging.getLogger("auth")


def identity_name(identity: Identity) -> str:
    """What the `Identity` column says: the admin user's name, a token's name, an Entra object id, a task
    run (`run:<id>`), or `anonymous`."""
    if identity.kind == "anonymous":
        return "anonymous"
    if identity.kind == "open":
        return "anonymous (authentication disabled)"
    return identity.subject


@dataclass(slots=True)
class SignIn:
    """One sign-in attempt as it goes: what was claimed, and who it turned out to be."""

    started: float = field(default_factory=time.perf_counter)
    username: str = ""  # as given; written only if it names an identity (see `named`)
    identity: Identity | None = None
    kind: str = ""  # admin, token, entra, refresh_token, anonymous: what was presented


async def named(auth: AuthService, registry: RegistryDoc, username: str) -> str:
    """The username of a failed sign-in if it names an identity of the registry, else "". One point read,
    on failures only (they are rationed by the failed-sign-in budget)."""
    from services.auth.service import REFRESH_TOKEN_USER

    if not username:
        return ""
    if username in (registry.registry, REFRESH_TOKEN_USER):
        return username
    try:
        return username if await auth.access.token(registry.registry, username) is not None else ""
    except Exception:  # the record must not fail the answer; the name is then simply not known
        log.warning("audit: could not look up whether a failed sign-in named a token")
        return ""


async def record(auth: AuthService, request: Request, registry: RegistryDoc, attempt: SignIn, status: int) -> None:
    """Write the attempt's record."""
    if attempt.identity is not None and status < 400:
        who = identity_name(attempt.identity)
    else:
        who = await named(auth, registry, attempt.username) if status == 401 else ""
    fields: dict[str, str | int] = {
        "Identity": audit.cut(who),
        "IdentityType": attempt.identity.kind if attempt.identity is not None and status < 400 else attempt.kind,
        "LoginServer": registry.loginServer,
    }
    fields.update(audit.result_fields(status))
    fields.update(
        audit.client_fields(
            str(auth.client(request) or ""),
            request.headers.get("user-agent", ""),
            audit.correlation_id(request.scope["headers"]),
            attempt.started,
        )
    )
    audit.emit(audit.LOGIN_EVENTS, "Login", fields)
