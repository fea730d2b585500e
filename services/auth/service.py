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

Cross-repository mounts (`POST .../uploads/?mount=&from=<source>`). Pull on the source is wanted, not
required: without it the upload route falls back to an ordinary upload (202). A bearer token that lacks it
is sent back once with a challenge naming `repository:<target>:pull,push repository:<source>:pull` (CNCF
distribution's scopes), so that a client that learns its scopes from challenges gets a token that allows
the mount instead of re-uploading every shared layer. It must never loop for an identity that truly lacks
that pull: every access token records in a `refused` claim the repository actions it was asked for and
did not grant, and a token that was asked for pull on the source and refused it is not challenged again
(the request falls back to 202). The memory is the token itself, so it lasts as long as the token
(`ACCESS_TOKEN_SECONDS`); a token the client gets without asking for the source is challenged once more.
Basic and anonymous callers cannot fetch a narrower or wider token, so they are never challenged for it.

Verified passwords and resolved identities are cached for `AUTH_CACHE_SECONDS`; verified access tokens
until they expire, so the hot path of a request with a bearer token is one dictionary lookup.

Passwords are verified off the event loop (passwords.PasswordVerifier), after a failed-sign-in budget per
client address and per username has been reserved (failures.py), and a wrong password costs the same
verifications whether the name exists or not. Tokens carry the registry's identity, and refresh tokens the
version of the credential that made them (credentials.py), so re-creating a registry, and regenerating,
disabling or deleting a credential, revoke them.

A registry that does not exist is answered by an `UnknownRegistry` standing in for it, which goes through
the same steps as a real registry and admits nobody: a caller cannot tell the two apart by the answers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from starlette.requests import Request

from services.auth import audit as sign_ins
from services.auth import permissions as perms
from services.auth.credentials import credential_version, live_slots, registry_identity
from services.auth.entra import EntraVerifier, parse_issuers
from services.auth.failures import FailureLimiter, failure_keys
from services.auth.network import (
    IPAddress,
    NetworkRuleInvalid,
    NetworkRuleSet,
    client_address,
    parse_address,
    parse_proxies,
)
from services.auth.passwords import PasswordVerifier
from services.auth.permissions import Need, Permissions
from services.auth.ratelimit import RateLimiter, bucket_keys, categories, retry_after_header
from services.auth.scopes import Scope, valid_name
from services.auth.signing import KeyRing, TokenInvalid, new_claims
from services.auth.store import AccessStore, PasswordDoc, RateLimitStore, RoleAssignmentDoc, SharedStateContended
from services.management.authorization import ArmScope
from services.management.store import RegistryDoc, RegistryStore, ScopeRoleAssignmentDoc
from services.platform.cosmos import Cosmos
from services.platform.settings import Settings
from services.registry.errors import ErrorCode, RegistryError

REFRESH_TOKEN_USER = "00000000-0000-0000-0000-000000000000"
_CACHE_LIMIT = 10_000
K = TypeVar("K")
V = TypeVar("V")

IdentityKind = Literal["anonymous", "admin", "token", "entra", "open", "run"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a caller is and everything they may do on the registry."""

    kind: IdentityKind
    subject: str  # admin: registry name; token: token name; entra: object id; anonymous: ""
    permissions: Permissions
    tenant: str = ""
    credential: str = ""  # the credential version a password identity signed in with (credentials.py)

    @property
    def rate_key(self) -> str:
        """The identity's rate-limit bucket: all anonymous callers share one, and so do admin callers."""
        return self.kind if self.kind in ("anonymous", "admin", "open") else f"{self.kind}:{self.subject}"


@dataclass(frozen=True, slots=True)
class Caller:
    """The answer to 'who is this?' that routes may ask further questions of."""

    identity: Identity
    permissions: Permissions  # what this request's credentials carry (an access token: its `access`)
    # An access token's `refused` claim: what its request asked for and was not granted (never a right).
    refused: Permissions = perms.NOTHING

    def may(self, action: str, repository: str) -> bool:
        return self.permissions.allows(action, repository)

    def should_ask_for_source(self, need: Need) -> bool:
        """Whether a bearer token should be sent back for pull on a mount's source: it lacks that pull,
        and no token request asked for it and was refused (which would make the challenge loop)."""
        return (
            bool(need.source)
            and not self.may(perms.PULL, need.source)
            and not self.refused.allows(perms.PULL, need.source)
        )


OPEN = Identity("open", "", perms.EVERYTHING)


class UnknownRegistry(RegistryDoc):
    """Stands in for a registry that does not exist: answered like a real one, it admits nobody.

    Its `created` is empty, which no real registry's is, so its identity matches no token ever signed.
    """


def unknown_registry(name: str, login_server: str) -> UnknownRegistry:
    return UnknownRegistry(id=name, registry=name, loginServer=login_server, created="")


def anonymous_permissions(registry: RegistryDoc) -> Permissions:
    # ACR offers anonymous pull on Standard and Premium only.
    if registry.anonymousPullEnabled and registry.sku != "Basic":
        return perms.ANONYMOUS_PULL
    return perms.NOTHING


# `host[:port]` as a client writes it in `Host`: a DNS name or an IP literal, then at most a port.
_HOST = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?")


def realm_authority(host_header: str, login_server: str) -> str:
    """Where clients fetch tokens: the registry's login server, with the port the client connected to.

    Never the `Host` text itself, which the client chose: only its port, when it is a number, is kept. The
    one exception is a client that reached the registry by IP address or as `localhost` (the default
    registry of a local run, `127.0.0.1:5000`), whose login server may not resolve where the client is:
    then the address, parsed and written back out, is the realm's host.
    """
    match = _HOST.fullmatch(host_header.strip())
    if match is None:
        return login_server
    port = int(match["port"]) if match["port"] else 0
    suffix = f":{port}" if 0 < port < 65536 else ""
    host = match["host"].lower()
    if host == "localhost":
        return host + suffix
    address = parse_address(host)
    if address is not None and (host.startswith("[") or address.version == 4):
        return (f"[{address}]" if address.version == 6 else str(address)) + suffix
    return login_server + suffix


def challenge(request: Request, registry: RegistryDoc, need: Need | None, error: str = "") -> str:
    """`Bearer realm="<scheme>://<authority>/oauth2/token",service="<login server>"[,scope=...][,error=...]`."""
    authority = realm_authority(request.headers.get("host", ""), registry.loginServer)
    parts = [f'realm="{request.url.scheme}://{authority}/oauth2/token"', f'service="{registry.loginServer}"']
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
    def __init__(self, settings: Settings, metadata: Cosmos) -> None:
        self.settings = settings
        self.access = AccessStore(metadata)
        self.registries = RegistryStore(metadata)
        self._ring: KeyRing | None = None
        self._entra: EntraVerifier | None = None
        self._cache_key = secrets.token_bytes(32)  # passwords are cached under an HMAC, never in clear
        self._passwords: _TtlCache[bytes, Identity] = _TtlCache()
        self._identities: _TtlCache[tuple[str, ...], Identity] = _TtlCache()
        self._bearers: _TtlCache[tuple[str, str], Caller] = _TtlCache()
        self._proxies = parse_proxies(settings.trusted_proxies)
        self.limiter = RateLimiter(RateLimitStore(metadata).update)
        self.failures = FailureLimiter()
        self.verifier = PasswordVerifier(settings.password_verify_workers)

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

    def client(self, request: Request) -> IPAddress | None:
        """The client's address (the TCP peer, or what a trusted proxy says it forwarded for)."""
        return client_address(
            request.client.host if request.client else None, request.headers.get("x-forwarded-for"), self._proxies
        )

    # --- the data plane's one question ------------------------------------------------------------------
    async def admit(self, request: Request, registry: RegistryDoc, need: Need) -> Caller:
        """Network rules, then who is calling, then the rate limits (their identity's buckets), then may they."""
        self.check_network(request, registry)
        caller, refusal = await self._identify(request, registry, need)
        if not registry.authDisabled:  # dev/test registries: neither authentication nor rate limits
            await self.limit(request, registry, caller.identity.rate_key if caller else "anonymous", need.route)
        if refusal is None and isinstance(registry, UnknownRegistry):
            # Unreachable (nothing authenticates there); kept so that no path can ever serve one.
            refusal = unauthorized(request, registry, need, "authentication required")
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
            if bearer.should_ask_for_source(need):
                lacking = unauthorized(
                    request,
                    registry,
                    need,
                    "the access token lacks pull on the repository to mount from",
                    "insufficient_scope",
                )
                return bearer, lacking
            return bearer, None
        credentials = basic_credentials(header)
        attempt = sign_ins.SignIn(username=credentials[0] if credentials else "", kind="basic")
        try:
            known = await self.authenticate(registry, *credentials, self.client(request)) if credentials else None
        except RegistryError as error:  # 429: the failed-sign-in budget is used up
            await sign_ins.record(self, request, registry, attempt, error.status)
            raise
        attempt.identity = known
        await sign_ins.record(self, request, registry, attempt, 200 if known is not None else 401)
        if known is None:
            return None, unauthorized(request, registry, need, "invalid username or password")
        caller = Caller(known, known.permissions)
        return caller, (denied(known, need) if not perms.satisfies(known.permissions, need) else None)

    # --- network rules and rate limits ------------------------------------------------------------------
    def check_network(self, request: Request, registry: RegistryDoc) -> None:
        """403 DENIED naming the client's address when the registry's network rules keep it out."""
        if not registry.networkRuleSet or registry.sku != "Premium":  # network rules are a Premium feature
            return
        address = self.client(request)
        try:
            rules = NetworkRuleSet.parse(registry.networkRuleSet)
            admitted = rules is None or rules.admits(address)
        except NetworkRuleInvalid:
            admitted = False  # a broken rule set keeps everyone out rather than everyone in
        if not admitted:
            raise RegistryError(ErrorCode.DENIED, f"client with IP '{address}' is not allowed access")

    async def limit(self, request: Request, registry: RegistryDoc, rate_key: str, route: str) -> None:
        """429 TOOMANYREQUESTS with Retry-After when a bucket the request counts in is empty."""
        if not self.settings.rate_limits_enabled or isinstance(registry, UnknownRegistry):
            # An unknown registry has no buckets: making some would let anyone write state for any name.
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
        if isinstance(registry, UnknownRegistry):
            return None
        # A token is only ever good for the registry it names, as that registry is now.
        key = (f"{registry.loginServer}\0{registry_identity(registry)}", token)
        cached = self._bearers.get(key)
        if cached is not None:
            return cached
        try:
            claims = self.ring.verify(token, audience=registry.loginServer, issuer=self.settings.auth_issuer)
        except TokenInvalid:
            return None
        if claims.get("grant_type") != "access_token" or not isinstance(claims.get("access"), list):
            return None
        if claims.get("rid") != registry_identity(registry):  # a deleted registry's of the same name
            return None
        kind = claims.get("idt")
        if kind not in ("anonymous", "admin", "token", "entra", "run"):
            return None
        granted = perms.permissions_from_access(claims["access"])
        refused_claim = claims.get("refused")
        refused = perms.permissions_from_access(refused_claim) if isinstance(refused_claim, list) else perms.NOTHING
        identity = Identity(kind, str(claims["sub"]), granted, str(claims.get("tid", "")))
        caller = Caller(identity, granted, refused)
        self._bearers.put(key, caller, max(0.0, float(claims["exp"]) - time.time()))
        return caller

    # --- authentication -----------------------------------------------------------------------------------
    async def authenticate(
        self, registry: RegistryDoc, username: str, password: str, address: IPAddress | None = None
    ) -> Identity | None:
        """The identity of a username and password (admin, token, or refresh-token user), else None.

        Raises 429 TOOMANYREQUESTS, without verifying anything, when the client's address or the username has
        used up its failed-sign-in budget.
        """
        if not username or not password:
            return None
        # Under the registry's identity too: a registry re-created under the same name starts with nothing cached.
        scope = f"{registry.registry}\0{registry_identity(registry)}"
        key = hmac.digest(self._cache_key, f"{scope}\0{username}\0{password}".encode(), hashlib.sha256)
        cached = self._passwords.get(key)
        if cached is not None:
            return cached
        identity: Identity | None
        if username == REFRESH_TOKEN_USER:
            identity = await self.from_refresh_token(registry, password)  # a signature check: nothing to ration
        else:
            identity = await self._password_sign_in(registry, username, password, address)
        if identity is not None:
            self._passwords.put(key, identity, self.settings.auth_cache_seconds)
        return identity

    async def _password_sign_in(
        self, registry: RegistryDoc, username: str, password: str, address: IPAddress | None
    ) -> Identity | None:
        keys = failure_keys(
            address,
            registry.registry,
            username,
            self.settings.auth_failures_per_address_per_minute,
            self.settings.auth_failures_per_username_per_minute,
        )
        wait = self.failures.reserve(keys)
        if wait is not None:
            raise RegistryError(
                ErrorCode.TOOMANYREQUESTS,
                "too many failed sign-ins from this address or for this username: try again later",
                headers={"Retry-After": retry_after_header(wait)},
            )
        try:
            if username == registry.registry:
                identity = await self._admin(registry, password)
            else:
                identity = await self._token(registry, username, password)
        except BaseException:
            self.failures.refund(keys)  # our failure (the database, a cancelled request), not the client's
            raise
        if identity is not None:
            self.failures.refund(keys)
        return identity

    async def _verify(
        self,
        registry: RegistryDoc,
        kind: str,
        subject: str,
        generation: int,
        passwords: list[PasswordDoc] | None,
        password: str,
    ) -> str | None:
        """The credential version of the live password that `password` is, else None.

        Always the same verifications (one per slot, a dummy hash for an absent one), so that a credential
        that does not exist, is disabled or has expired passwords costs what a wrong password does.
        """
        slots = live_slots(passwords, datetime.now(UTC)) if passwords is not None else [None, None]
        index = await self.verifier.verify([p.hash if p is not None else None for p in slots], password)
        matched = slots[index] if index is not None else None
        if matched is None:
            return None
        return credential_version(registry, kind, subject, generation, matched.hash)

    async def _admin(self, registry: RegistryDoc, password: str) -> Identity | None:
        doc = await self.access.admin_user(registry.registry)
        usable = doc is not None and registry.adminUserEnabled and not isinstance(registry, UnknownRegistry)
        credential = await self._verify(
            registry,
            "admin",
            registry.registry,
            doc.generation if doc is not None else 0,
            doc.passwords if doc is not None and usable else None,
            password,
        )
        if credential is None:
            return None
        return Identity("admin", registry.registry, perms.EVERYTHING, credential=credential)

    async def _token(self, registry: RegistryDoc, name: str, password: str) -> Identity | None:
        doc = await self.access.token(registry.registry, name)
        usable = doc is not None and doc.status == "enabled" and not isinstance(registry, UnknownRegistry)
        credential = await self._verify(
            registry,
            "token",
            name,
            doc.generation if doc is not None else 0,
            doc.passwords if doc is not None and usable else None,
            password,
        )
        if credential is None or doc is None:
            return None
        scope_map = await self.scope_map_permissions(registry, doc.scopeMap)
        return Identity("token", name, scope_map, credential=credential) if scope_map is not None else None

    async def scope_map_permissions(self, registry: RegistryDoc, name: str) -> Permissions | None:
        built_in = perms.BUILT_IN_SCOPE_MAPS.get(name)
        if built_in is not None:
            return perms.scope_map_permissions(built_in.actions)
        doc = await self.access.scope_map(registry.registry, name)
        return perms.scope_map_permissions(doc.actions) if doc is not None else None

    async def inherited_assignments(self, registry: RegistryDoc) -> list[RoleAssignmentDoc]:
        """Roles at the registry's subscription and resource group (an Owner there may push here)."""
        if isinstance(registry, UnknownRegistry):  # belongs to no subscription: nothing is inherited
            return []
        return inherited(registry, await self.registries.scope_role_assignments(registry.subscription))

    async def resolve(
        self, registry: RegistryDoc, kind: str, subject: str, tenant: str = "", credential: str = ""
    ) -> Identity | None:
        """An identity named by a refresh token, as it stands now (disabled, removed, rotated -> None).

        The admin user and tokens are only themselves with the credential version they signed in with, and
        only while the password behind it is live (regenerated, re-created or disabled since: None).
        """
        cache_key = (registry.registry, registry_identity(registry), kind, subject, tenant, credential)
        cached = self._identities.get(cache_key)
        if cached is not None:
            return cached
        identity: Identity | None = None
        now = datetime.now(UTC)
        if kind == "admin" and registry.adminUserEnabled and subject == registry.registry:
            admin = await self.access.admin_user(registry.registry)
            if admin is not None and credential in _versions(
                registry, kind, subject, admin.generation, admin.passwords, now
            ):
                identity = Identity("admin", subject, perms.EVERYTHING, credential=credential)
        elif kind == "token":
            doc = await self.access.token(registry.registry, subject)
            if (
                doc is not None
                and doc.status == "enabled"
                and credential in _versions(registry, kind, subject, doc.generation, doc.passwords, now)
            ):
                scope_map = await self.scope_map_permissions(registry, doc.scopeMap)
                if scope_map is not None:
                    identity = Identity("token", subject, scope_map, credential=credential)
        elif kind == "entra":
            assignments = await self.access.role_assignments(registry.registry)
            assignments += await self.inherited_assignments(registry)
            identity = Identity("entra", subject, entra_permissions(assignments, subject, tenant), tenant)
        if identity is not None:
            self._identities.put(cache_key, identity, self.settings.auth_cache_seconds)
        return identity

    async def from_refresh_token(self, registry: RegistryDoc, token: str) -> Identity | None:
        """The identity a refresh token of this registry (as it is now) stands for, if it still may."""
        if isinstance(registry, UnknownRegistry):
            return None
        try:
            claims = self.ring.verify(token, audience=registry.loginServer, issuer=self.settings.auth_issuer)
        except TokenInvalid:
            return None
        if claims.get("grant_type") != "refresh_token" or claims.get("rid") != registry_identity(registry):
            return None
        if claims.get("idt") == "run":  # a task run's: its rights are in the token, signed (run_token)
            access = claims.get("access")
            granted = perms.permissions_from_access(access) if isinstance(access, list) else perms.NOTHING
            return Identity("run", str(claims["sub"]), granted)
        return await self.resolve(
            registry,
            str(claims.get("idt")),
            str(claims["sub"]),
            str(claims.get("tid", "")),
            str(claims.get("cv", "")),
        )

    # --- tokens ---------------------------------------------------------------------------------------------
    def access_token(self, registry: RegistryDoc, identity: Identity, scopes: list[Scope]) -> dict[str, Any]:
        """A signed access token granting what `identity` may of `scopes` (the rest left out).

        The repository actions asked for and not granted go in its `refused` claim (only when there are
        some), so that a mount's challenge is not repeated to a client that asked and was refused (see
        the module docstring). `*` is never recorded: what it would have meant is not known.
        """
        access: list[dict[str, Any]] = []
        refused: dict[str, list[str]] = {}
        for scope in scopes:
            if not valid_name(scope):  # parse_scopes drops these already; never sign one whatever the caller
                continue
            actions = perms.grant_scope(identity.permissions, scope.type, scope.name, scope.actions)
            if actions:
                access.append({"type": scope.type, "name": scope.name, "actions": actions})
            if scope.type == "repository":
                missing = refused.setdefault(scope.name, [])
                missing += [a for a in scope.actions if a != "*" and a not in actions and a not in missing]
        lifetime = self.settings.access_token_seconds
        claims = new_claims(
            issuer=self.settings.auth_issuer,
            audience=registry.loginServer,
            subject=identity.subject,
            lifetime=lifetime,
            grant_type="access_token",
            idt=identity.kind,
            access=access,
            rid=registry_identity(registry),
        )
        if identity.tenant:
            claims["tid"] = identity.tenant
        refused_claim = [{"type": "repository", "name": n, "actions": a} for n, a in refused.items() if a]
        if refused_claim:
            claims["refused"] = refused_claim
        token = self.ring.sign(claims)
        issued = datetime.fromtimestamp(claims["iat"], UTC).isoformat().replace("+00:00", "Z")
        return {"access_token": token, "token": token, "expires_in": lifetime, "issued_at": issued}

    def run_token(self, registry: RegistryDoc, run_id: str, access: list[dict[str, Any]], lifetime: int) -> str:
        """A task run's refresh token (services/tasks/runner.py): used as the password of
        `00000000-0000-0000-0000-000000000000`, it grants exactly `access` on this registry and nothing else,
        and lapses when the run's timeout does. It names no stored credential, so nothing can widen it."""
        claims = new_claims(
            issuer=self.settings.auth_issuer,
            audience=registry.loginServer,
            subject=f"run:{run_id}",
            lifetime=lifetime,
            grant_type="refresh_token",
            idt="run",
            rid=registry_identity(registry),
            access=access,
        )
        return self.ring.sign(claims)

    def refresh_token(self, registry: RegistryDoc, identity: Identity) -> str:
        claims = new_claims(
            issuer=self.settings.auth_issuer,
            audience=registry.loginServer,
            subject=identity.subject,
            lifetime=self.settings.refresh_token_seconds,
            grant_type="refresh_token",
            idt=identity.kind,
            rid=registry_identity(registry),
        )
        if identity.tenant:
            claims["tid"] = identity.tenant
        if identity.credential:
            claims["cv"] = identity.credential
        return self.ring.sign(claims)


def _versions(
    registry: RegistryDoc, kind: str, subject: str, generation: int, passwords: list[PasswordDoc], now: datetime
) -> set[str]:
    """The credential versions of the credential's live passwords (what its refresh tokens may carry)."""
    return {
        credential_version(registry, kind, subject, generation, p.hash)
        for p in live_slots(passwords, now)
        if p is not None
    }


def inherited(registry: RegistryDoc, assignments: list[ScopeRoleAssignmentDoc]) -> list[RoleAssignmentDoc]:
    """The roles given at the registry's subscription or resource group, as if given on the registry (Azure
    role assignments are inherited by the resources below their scope)."""
    scope = ArmScope(registry.subscription, registry.resourceGroup, registry.registry)
    return [
        RoleAssignmentDoc(
            id=a.id, registry=registry.registry, principalId=a.principalId, tenantId=a.tenantId, role=a.role
        )
        for a in assignments
        if scope.covered_by(a.scope)
    ]


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
