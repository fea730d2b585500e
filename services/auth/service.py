"""The auth service: who is calling (authenticate) and may they (authorize), and the tokens it issues.

One entry point for the data plane, `admit(request, registry, need) -> Caller`, which answers the route's
question or raises the error the client must see:

- a registry with `authDisabled` (development and test registries only) admits everyone with every right;
- no credentials: anonymous, who may pull where the registry allows anonymous pull, else `401` with the
  Bearer challenge naming the scope the request needs;
- `Basic`: the admin user, a token, or `00000000-0000-0000-0000-000000000000` with an ACR refresh token;
  wrong credentials are `401`, right ones without the right are `403 DENIED`;
- `Bearer`: an access token from `/oauth2/token`; invalid (bad signature, unknown key, expired, another
  registry's, `alg: none`) is `401`, lacking the scope is `401` with `error="insufficient_scope"` so that
  clients fetch a token for it, as Docker token auth expects.

Verified passwords and resolved identities are cached for `AUTH_CACHE_SECONDS`; verified access tokens
until they expire, so the hot path of a request with a bearer token is one dictionary lookup.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from starlette.requests import Request

from services.auth import permissions as perms
from services.auth.entra import EntraVerifier, parse_issuers
from services.auth.network import NetworkRuleInvalid, NetworkRuleSet, client_address, parse_proxies
from services.auth.passwords import verify_password
from services.auth.permissions import Need, Permissions
from services.auth.ratelimit import RateLimiter, bucket_keys, categories, retry_after_header
from services.auth.scopes import Scope
from services.auth.signing import KeyRing, TokenInvalid, new_claims
from services.platform.access import AccessStore, PasswordDoc, RoleAssignmentDoc
from services.platform.metadata import MetadataStore, RegistryDoc
from services.platform.ratelimits import RateLimitStore, SharedStateContended
from services.platform.settings import Settings
from services.registry.errors import ErrorCode, RegistryError

REFRESH_TOKEN_USER = "00000000-0000-0000-0000-000000000000"
_CACHE_LIMIT = 10_000
K = TypeVar("K")
V = TypeVar("V")

IdentityKind = Literal["anonymous", "admin", "token", "entra", "open"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a caller is and everything they may do on the registry."""

    kind: IdentityKind
    subject: str  # admin: registry name; token: token name; entra: object id; anonymous: ""
    permissions: Permissions
    tenant: str = ""

    @property
    def rate_key(self) -> str:
        """The identity's rate-limit bucket: all anonymous callers share one, and so do admin callers."""
        return self.kind if self.kind in ("anonymous", "admin", "open") else f"{self.kind}:{self.subject}"


@dataclass(frozen=True, slots=True)
class Caller:
    """The answer to 'who is this?' that routes may ask further questions of."""

    identity: Identity
    permissions: Permissions  # what this request's credentials carry (an access token: its `access`)

    def may(self, action: str, repository: str) -> bool:
        return self.permissions.allows(action, repository)


OPEN = Identity("open", "", perms.EVERYTHING)


def anonymous_permissions(registry: RegistryDoc) -> Permissions:
    # ACR offers anonymous pull on Standard and Premium only.
    if registry.anonymousPullEnabled and registry.sku != "Basic":
        return perms.ANONYMOUS_PULL
    return perms.NOTHING


def challenge(request: Request, registry: RegistryDoc, need: Need | None, error: str = "") -> str:
    """`Bearer realm="<scheme>://<host>/oauth2/token",service="<login server>"[,scope=...][,error=...]`."""
    host = request.headers.get("host") or registry.loginServer
    parts = [f'realm="{request.url.scheme}://{host}/oauth2/token"', f'service="{registry.loginServer}"']
    scope = need.scope() if need is not None else ""
    if scope:
        parts.append(f'scope="{scope}"')
    if error:
        parts.append(f'error="{error}"')
    return "Bearer " + ",".join(parts)


def unauthorized(
    request: Request, registry: RegistryDoc, need: Need | None, message: str, error: str = ""
) -> RegistryError:
    return RegistryError(
        ErrorCode.UNAUTHORIZED,
        message,
        headers={"WWW-Authenticate": challenge(request, registry, need, error)},
    )


def denied(identity: Identity, need: Need) -> RegistryError:
    detail = [{"Type": "repository", "Name": need.repository, "Action": need.action}] if need.repository else None
    return RegistryError(ErrorCode.DENIED, "requested access to the resource is denied", detail)


def basic_credentials(header: str) -> tuple[str, str] | None:
    if header[:6].lower() != "basic ":
        return None
    try:
        text = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = text.partition(":")
    return (username, password) if colon else None


def _password_live(password: PasswordDoc, now: datetime) -> bool:
    if password.expiry is None:
        return True
    try:
        expiry = datetime.fromisoformat(password.expiry.replace("Z", "+00:00"))
    except ValueError:
        return False
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=UTC)
    return expiry > now


class _TtlCache(Generic[K, V]):
    def __init__(self) -> None:
        self._items: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            del self._items[key]
            return None
        return item[1]

    def put(self, key: K, value: V, seconds: float) -> None:
        if len(self._items) >= _CACHE_LIMIT:
            self._items.clear()
        self._items[key] = (time.monotonic() + seconds, value)

    def clear(self) -> None:
        self._items.clear()


class AuthService:
    def __init__(self, settings: Settings, metadata: MetadataStore) -> None:
        self.settings = settings
        self.access = AccessStore(metadata)
        self._ring: KeyRing | None = None
        self._entra: EntraVerifier | None = None
        self._cache_key = secrets.token_bytes(32)  # passwords are cached under an HMAC, never in clear
        self._passwords: _TtlCache[bytes, Identity] = _TtlCache()
        self._identities: _TtlCache[tuple[str, str, str], Identity] = _TtlCache()
        self._bearers: _TtlCache[tuple[str, str], Caller] = _TtlCache()
        self._proxies = parse_proxies(settings.trusted_proxies)
        self.limiter = RateLimiter(RateLimitStore(metadata).update)

    @property
    def ring(self) -> KeyRing:
        if self._ring is None:
            self._ring = KeyRing.from_settings(self.settings.auth_signing_keys, self.settings.auth_signing_keys_file)
        return self._ring

    @property
    def entra(self) -> EntraVerifier:
        if self._entra is None:
            self._entra = EntraVerifier(parse_issuers(self.settings.entra_issuers))
        return self._entra

    def forget(self) -> None:
        """Drop every cached identity and verified credential (tests, and after management changes)."""
        self._passwords.clear()
        self._identities.clear()
        self._bearers.clear()

    # --- the data plane's one question ------------------------------------------------------------------
    async def admit(self, request: Request, registry: RegistryDoc, need: Need) -> Caller:
        """Network rules, then who is calling, then the rate limits (their identity's buckets), then may they."""
        self.check_network(request, registry)
        caller, refusal = await self._identify(request, registry, need)
        if not registry.authDisabled:  # dev/test registries: neither authentication nor rate limits
            await self.limit(request, registry, caller.identity.rate_key if caller else "anonymous", need.route)
        if refusal is not None:
            raise refusal
        assert caller is not None
        return caller

    async def _identify(
        self, request: Request, registry: RegistryDoc, need: Need
    ) -> tuple[Caller | None, RegistryError | None]:
        """The caller, or why not: the refusal is raised after the request has counted against the limits."""
        if registry.authDisabled:
            return Caller(OPEN, OPEN.permissions), None
        header = request.headers.get("authorization", "")
        if not header:
            identity = Identity("anonymous", "", anonymous_permissions(registry))
            caller = Caller(identity, identity.permissions)
            if need.kind == "base":
                # Always a challenge, even with anonymous pull: clients decide from this ping whether to
                # use token auth at all, and would never send their credentials for a later push.
                return caller, unauthorized(request, registry, None, "authentication required")
            if not perms.satisfies(identity.permissions, need):
                return caller, unauthorized(request, registry, need, "authentication required")
            return caller, None
        if header[:7].lower() == "bearer ":
            bearer = self._bearer(header[7:].strip(), registry)
            if bearer is None:
                return None, unauthorized(request, registry, need, "the access token is invalid", "invalid_token")
            if not perms.satisfies(bearer.permissions, need):
                lacking = unauthorized(
                    request, registry, need, "the access token lacks this scope", "insufficient_scope"
                )
                return bearer, lacking
            return bearer, None
        credentials = basic_credentials(header)
        known = await self.authenticate(registry, *credentials) if credentials else None
        if known is None:
            return None, unauthorized(request, registry, need, "invalid username or password")
        caller = Caller(known, known.permissions)
        return caller, (denied(known, need) if not perms.satisfies(known.permissions, need) else None)

    # --- network rules and rate limits ------------------------------------------------------------------
    def check_network(self, request: Request, registry: RegistryDoc) -> None:
        """403 DENIED naming the client's address when the registry's network rules keep it out."""
        if not registry.networkRuleSet or registry.sku != "Premium":  # network rules are a Premium feature
            return
        address = client_address(
            request.client.host if request.client else None, request.headers.get("x-forwarded-for"), self._proxies
        )
        try:
            rules = NetworkRuleSet.parse(registry.networkRuleSet)
            admitted = rules is None or rules.admits(address)
        except NetworkRuleInvalid:
            admitted = False  # a broken rule set keeps everyone out rather than everyone in
        if not admitted:
            raise RegistryError(ErrorCode.DENIED, f"client with IP '{address}' is not allowed access")

    async def limit(self, request: Request, registry: RegistryDoc, rate_key: str, route: str) -> None:
        """429 TOOMANYREQUESTS with Retry-After when a bucket the request counts in is empty."""
        if not self.settings.rate_limits_enabled:
            return
        cats = categories(request.method, route)
        keys = bucket_keys(registry.sku, registry.registry, rate_key, cats, self.settings.rate_limit_scale)
        try:
            wait = await self.limiter.check(keys)
        except SharedStateContended:
            wait = 1.0
        if wait is not None:
            raise RegistryError(
                ErrorCode.TOOMANYREQUESTS,
                "too many requests: the registry's request-rate limit was reached",
                headers={"Retry-After": retry_after_header(wait)},
            )

    def _bearer(self, token: str, registry: RegistryDoc) -> Caller | None:
        key = (registry.loginServer, token)  # a token is only ever good for the registry it names
        cached = self._bearers.get(key)
        if cached is not None:
            return cached
        try:
            claims = self.ring.verify(token, audience=registry.loginServer, issuer=self.settings.auth_issuer)
        except TokenInvalid:
            return None
        if claims.get("grant_type") != "access_token" or not isinstance(claims.get("access"), list):
            return None
        kind = claims.get("idt")
        if kind not in ("anonymous", "admin", "token", "entra"):
            return None
        granted = perms.permissions_from_access(claims["access"])
        caller = Caller(Identity(kind, str(claims["sub"]), granted, str(claims.get("tid", ""))), granted)
        self._bearers.put(key, caller, max(0.0, float(claims["exp"]) - time.time()))
        return caller

    # --- authentication -----------------------------------------------------------------------------------
    async def authenticate(self, registry: RegistryDoc, username: str, password: str) -> Identity | None:
        """The identity of a username and password (admin, token, or refresh-token user), else None."""
        if not username or not password:
            return None
        key = hmac.digest(self._cache_key, f"{registry.registry}\0{username}\0{password}".encode(), hashlib.sha256)
        cached = self._passwords.get(key)
        if cached is not None:
            return cached
        identity: Identity | None
        if username == REFRESH_TOKEN_USER:
            identity = await self.from_refresh_token(registry, password)
        elif username == registry.registry:
            identity = await self._admin(registry, password)
        else:
            identity = await self._token(registry, username, password)
        if identity is not None:
            self._passwords.put(key, identity, self.settings.auth_cache_seconds)
        return identity

    async def _admin(self, registry: RegistryDoc, password: str) -> Identity | None:
        if not registry.adminUserEnabled:
            return None
        doc = await self.access.admin_user(registry.registry)
        if doc is None or not any(verify_password(p.hash, password) for p in doc.passwords):
            return None
        return Identity("admin", registry.registry, perms.EVERYTHING)

    async def _token(self, registry: RegistryDoc, name: str, password: str) -> Identity | None:
        doc = await self.access.token(registry.registry, name)
        if doc is None or doc.status != "enabled":
            return None
        now = datetime.now(UTC)
        if not any(_password_live(p, now) and verify_password(p.hash, password) for p in doc.passwords):
            return None
        scope_map = await self.scope_map_permissions(registry, doc.scopeMap)
        return Identity("token", name, scope_map) if scope_map is not None else None

    async def scope_map_permissions(self, registry: RegistryDoc, name: str) -> Permissions | None:
        built_in = perms.BUILT_IN_SCOPE_MAPS.get(name)
        if built_in is not None:
            return perms.scope_map_permissions(built_in.actions)
        doc = await self.access.scope_map(registry.registry, name)
        return perms.scope_map_permissions(doc.actions) if doc is not None else None

    async def resolve(self, registry: RegistryDoc, kind: str, subject: str, tenant: str = "") -> Identity | None:
        """An identity named by a refresh token, as it stands now (disabled or removed -> None)."""
        cache_key = (registry.registry, kind, subject)
        cached = self._identities.get(cache_key)
        if cached is not None:
            return cached
        identity: Identity | None = None
        if kind == "admin" and registry.adminUserEnabled and subject == registry.registry:
            identity = Identity("admin", subject, perms.EVERYTHING)
        elif kind == "token":
            doc = await self.access.token(registry.registry, subject)
            if doc is not None and doc.status == "enabled":
                scope_map = await self.scope_map_permissions(registry, doc.scopeMap)
                identity = Identity("token", subject, scope_map) if scope_map is not None else None
        elif kind == "entra":
            assignments = await self.access.role_assignments(registry.registry)
            identity = Identity("entra", subject, entra_permissions(assignments, subject, tenant), tenant)
        if identity is not None:
            self._identities.put(cache_key, identity, self.settings.auth_cache_seconds)
        return identity

    async def from_refresh_token(self, registry: RegistryDoc, token: str) -> Identity | None:
        try:
            claims = self.ring.verify(token, audience=registry.loginServer, issuer=self.settings.auth_issuer)
        except TokenInvalid:
            return None
        if claims.get("grant_type") != "refresh_token":
            return None
        return await self.resolve(registry, str(claims.get("idt")), str(claims["sub"]), str(claims.get("tid", "")))

    # --- tokens ---------------------------------------------------------------------------------------------
    def access_token(self, registry: RegistryDoc, identity: Identity, scopes: list[Scope]) -> dict[str, Any]:
        """A signed access token granting what `identity` may of `scopes` (the rest left out)."""
        access: list[dict[str, Any]] = []
        for scope in scopes:
            actions = perms.grant_scope(identity.permissions, scope.type, scope.name, scope.actions)
            if actions:
                access.append({"type": scope.type, "name": scope.name, "actions": actions})
        lifetime = self.settings.access_token_seconds
        claims = new_claims(
            issuer=self.settings.auth_issuer,
            audience=registry.loginServer,
            subject=identity.subject,
            lifetime=lifetime,
            grant_type="access_token",
            idt=identity.kind,
            access=access,
        )
        if identity.tenant:
            claims["tid"] = identity.tenant
        token = self.ring.sign(claims)
        issued = datetime.fromtimestamp(claims["iat"], UTC).isoformat().replace("+00:00", "Z")
        return {"access_token": token, "token": token, "expires_in": lifetime, "issued_at": issued}

    def refresh_token(self, registry: RegistryDoc, identity: Identity) -> str:
        claims = new_claims(
            issuer=self.settings.auth_issuer,
            audience=registry.loginServer,
            subject=identity.subject,
            lifetime=self.settings.refresh_token_seconds,
            grant_type="refresh_token",
            idt=identity.kind,
        )
        if identity.tenant:
            claims["tid"] = identity.tenant
        return self.ring.sign(claims)


def entra_permissions(assignments: list[RoleAssignmentDoc], principal: str, tenant: str) -> Permissions:
    """The union of the principal's role assignments on the registry."""
    result = perms.NOTHING
    for assignment in assignments:
        if assignment.principalId != principal or (assignment.tenantId and tenant and assignment.tenantId != tenant):
            continue
        condition = (
            perms.RepositoryCondition(assignment.condition.operator, tuple(assignment.condition.values))
            if assignment.condition is not None
            else None
        )
        result = result | perms.role_permissions(assignment.role, condition)
    return result
