"""`/oauth2/token` and `/oauth2/exchange`: ACR's token endpoints (Docker token auth, OAuth2 forms).

    GET  /oauth2/token?service=&scope=...           Basic credentials (or none: anonymous)
    POST /oauth2/token      grant_type=password      username, password (none: anonymous), service, scope...
                            grant_type=refresh_token refresh_token, service, scope...
    POST /oauth2/exchange   grant_type=access_token  access_token (Entra ID), service, tenant
                            -> {"refresh_token"}

Access token responses carry `access_token` (OAuth2) and `token` (Docker) with `expires_in` and
`issued_at`; a password grant with `access_type=offline` (docker login) also gets a `refresh_token`.
Scopes not granted, and scopes naming no valid repository, are left out of the token, never an error. Bad
credentials are `401 UNAUTHORIZED`; a client address or username that has used up its failed-sign-in
budget is `429 TOOMANYREQUESTS` with `Retry-After`, before any password is hashed (failures.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.auth import audit as sign_ins
from services.auth.entra import EntraTokenInvalid
from services.auth.scopes import parse_scopes
from services.auth.service import AuthService, Identity, anonymous_permissions, basic_credentials
from services.management.store import RegistryDoc
from services.platform.availability import classify
from services.platform.telemetry import observed_http
from services.registry.app import error_response, registry_api
from services.registry.errors import ErrorCode, RegistryError, unavailable_error
from services.registry.metering import REGISTRY_SCOPE_KEY

log = logging.getLogger("auth")

_MAX_FORM_BYTES = 64 * 1024


async def _form(request: Request) -> dict[str, list[str]]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise RegistryError(ErrorCode.UNSUPPORTED, "form too large", status=413)
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def _first(form: dict[str, list[str]], key: str) -> str:
    values = form.get(key)
    return values[0] if values else ""


def _bad_request(message: str) -> RegistryError:
    return RegistryError(ErrorCode.UNSUPPORTED, message, status=400)


def _unauthorized(message: str = "invalid credentials") -> RegistryError:
    return RegistryError(ErrorCode.UNAUTHORIZED, message)


def _check_service(registry: RegistryDoc, service: str) -> None:
    if service and service != registry.loginServer:
        raise _unauthorized(f"service {service!r} is not this registry ({registry.loginServer})")


def _anonymous(registry: RegistryDoc) -> Identity:
    permissions = anonymous_permissions(registry)
    if permissions.grants == ():
        raise _unauthorized("authentication required: anonymous pull is not enabled on this registry")
    return Identity("anonymous", "", permissions)


async def _password_identity(
    auth: AuthService, registry: RegistryDoc, request: Request, attempt: sign_ins.SignIn, username: str, password: str
) -> Identity:
    attempt.username = username
    if not username and not password:
        attempt.kind = "anonymous"
        return _anonymous(registry)
    attempt.kind = "password"
    identity = await auth.authenticate(registry, username, password, auth.client(request))
    if identity is None:
        raise _unauthorized("invalid username or password")
    return identity


async def get_token(auth: AuthService, registry: RegistryDoc, request: Request, attempt: sign_ins.SignIn) -> Response:
    _check_service(registry, request.query_params.get("service", ""))
    header = request.headers.get("authorization", "")
    credentials = basic_credentials(header) if header else ("", "")
    if credentials is None:
        raise _unauthorized("only Basic credentials are accepted here")
    identity = attempt.identity = await _password_identity(auth, registry, request, attempt, *credentials)
    scopes = parse_scopes(request.query_params.getlist("scope"))
    return JSONResponse(auth.access_token(registry, identity, scopes))


async def post_token(auth: AuthService, registry: RegistryDoc, request: Request, attempt: sign_ins.SignIn) -> Response:
    form = await _form(request)
    _check_service(registry, _first(form, "service"))
    grant_type = _first(form, "grant_type")
    scopes = parse_scopes(form.get("scope", []))
    offline = False
    if grant_type == "password":
        identity = await _password_identity(
            auth, registry, request, attempt, _first(form, "username"), _first(form, "password")
        )
        offline = _first(form, "access_type") == "offline" and identity.kind != "anonymous"
    elif grant_type == "refresh_token":
        attempt.kind = "refresh_token"
        refreshed = await auth.from_refresh_token(registry, _first(form, "refresh_token"))
        if refreshed is None:
            raise _unauthorized("the refresh token is invalid, expired, or its identity is no longer allowed")
        identity = refreshed
    else:
        raise _bad_request(f"unsupported grant_type {grant_type!r}: use password or refresh_token")
    attempt.identity = identity
    body = auth.access_token(registry, identity, scopes)
    if offline:
        body["refresh_token"] = auth.refresh_token(registry, identity)
    return JSONResponse(body)


async def post_exchange(
    auth: AuthService, registry: RegistryDoc, request: Request, attempt: sign_ins.SignIn
) -> Response:
    form = await _form(request)
    _check_service(registry, _first(form, "service"))
    grant_type = _first(form, "grant_type")
    if grant_type == "access_token":
        attempt.kind = "entra"
        try:
            principal = await auth.entra.verify(_first(form, "access_token"))
        except EntraTokenInvalid as exc:
            raise _unauthorized(f"the Entra ID access token is not accepted: {exc}") from exc
        tenant = _first(form, "tenant")
        if tenant and tenant != principal.tenant_id:
            raise _unauthorized("the access token is from another tenant")
        identity = await auth.resolve(registry, "entra", principal.object_id, principal.tenant_id)
    elif grant_type == "refresh_token":  # ACR also renews a refresh token for a new one
        attempt.kind = "refresh_token"
        identity = await auth.from_refresh_token(registry, _first(form, "refresh_token"))
    else:
        raise _bad_request(f"unsupported grant_type {grant_type!r}: use access_token")
    if identity is None:
        raise _unauthorized("no access to this registry")
    attempt.identity = identity
    return JSONResponse({"refresh_token": auth.refresh_token(registry, identity)})


Endpoint = Callable[[AuthService, RegistryDoc, Request, sign_ins.SignIn], Awaitable[Response]]


async def handle(request: Request, endpoint: Endpoint) -> Response:
    """Run a token endpoint for the registry the request names (by Host), errors as the OCI error body; in its
    server span, timed by route (services/platform/telemetry.py)."""
    route = "/oauth2/exchange" if endpoint is post_exchange else "/oauth2/token"
    return await observed_http(
        request,
        lambda r: _answer(r, endpoint),
        route=lambda: route,
        registry=lambda: request.scope.get(REGISTRY_SCOPE_KEY),
    )


async def _answer(request: Request, endpoint: Endpoint) -> Response:
    api = registry_api()
    attempt = sign_ins.SignIn()
    registry: RegistryDoc | None = None
    try:
        await api.open()
        registry = await api.registry_for(request)
        request.scope[REGISTRY_SCOPE_KEY] = registry.registry  # a metric label (metering.py): it exists
        api.auth.check_network(request, registry)
        await api.auth.limit(request, registry, "", "oauth")  # per registry only (ACR's table)
        response = await endpoint(api.auth, registry, request, attempt)
    except RegistryError as error:
        response = error_response(error, request.method)
    except Exception as exc:
        outage = classify(exc)  # Cosmos DB or Storage down or throttling: 503 with Retry-After, not 500
        if outage is not None:
            log.warning("%s %s: 503, %s", request.method, request.url.path, outage)
            response = error_response(unavailable_error(outage), request.method)
        else:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            response = error_response(RegistryError(ErrorCode.UNKNOWN, "internal error"), request.method)
    if registry is not None:  # a Host naming no valid registry signed in to nothing
        await sign_ins.record(api.auth, request, registry, attempt, response.status_code)
    return response
