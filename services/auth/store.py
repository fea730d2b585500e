"""Identity and access documents of a registry: admin user, tokens, scope maps, role assignments, and the
shared state of the request-rate limiter.

All live in the `registries` container, in the registry's own partition (`/registry` = registry name),
next to the registry document itself, one document each::

    adminUser                 {type: "adminUser", generation, passwords: [{name, hash, created}]}
    scopeMap:<name>           {type: "scopeMap", name, description, actions: ["repositories/<pattern>/<action>"]}
    token:<name>              {type: "token", name, scopeMap, status, generation,
                               passwords: [{name, hash, created, expiry}]}
    roleAssignment:<id>       {type: "roleAssignment", principalId, tenantId, role, condition}

Passwords are argon2 hashes (services/auth/passwords.py); no document ever holds a password. `generation`
counts the times a credential was disabled: refresh tokens are bound to it and to the hash of the password
that made them (services/auth/credentials.py), so disabling, regenerating or re-creating revokes them.
"""

from __future__ import annotations

from typing import Any, Literal

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.cosmos.exceptions import CosmosAccessConditionFailedError
from pydantic import BaseModel, Field

from services.platform.cosmos import Cosmos, Document, utcnow

PasswordName = Literal["password1", "password2"]


class PasswordDoc(BaseModel):
    name: PasswordName
    hash: str
    created: str = Field(default_factory=utcnow)
    expiry: str | None = None  # ISO 8601 (UTC); None never expires


class AdminUserDoc(Document):
    id: str = "adminUser"
    registry: str
    type: Literal["adminUser"] = "adminUser"
    generation: int = 0  # bumped on disable: the refresh tokens made before stop working
    passwords: list[PasswordDoc] = Field(default_factory=list)


class ScopeMapDoc(Document):
    registry: str
    type: Literal["scopeMap"] = "scopeMap"
    name: str
    description: str = ""
    actions: list[str] = Field(default_factory=list)
    created: str = Field(default_factory=utcnow)


class TokenDoc(Document):
    registry: str
    type: Literal["token"] = "token"
    name: str
    scopeMap: str
    status: Literal["enabled", "disabled"] = "enabled"
    generation: int = 0  # bumped on disable: the refresh tokens made before stop working
    passwords: list[PasswordDoc] = Field(default_factory=list)
    created: str = Field(default_factory=utcnow)


class RepositoryConditionDoc(BaseModel):
    operator: Literal["equals", "prefix"]
    values: list[str]


class RoleAssignmentDoc(Document):
    registry: str
    type: Literal["roleAssignment"] = "roleAssignment"
    principalId: str
    tenantId: str = ""
    role: str
    condition: RepositoryConditionDoc | None = None
    created: str = Field(default_factory=utcnow)


def scope_map_id(name: str) -> str:
    return f"scopeMap:{name}"


def token_id(name: str) -> str:
    return f"token:{name}"


def role_assignment_id(assignment: str) -> str:
    return f"roleAssignment:{assignment}"


class AccessStore:
    """Typed reads and writes of the identity documents of one registry partition."""

    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    def _container(self) -> Any:
        return self._cosmos.container("registries")

    async def _read(self, registry: str, item: str) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = await self._container().read_item(item, partition_key=registry)
        except ResourceNotFoundError:
            return None
        return doc

    async def _list(self, registry: str, kind: str) -> list[dict[str, Any]]:
        items = self._container().query_items(
            "SELECT * FROM c WHERE c.registry = @r AND c.type = @t ORDER BY c.id",
            parameters=[{"name": "@r", "value": registry}, {"name": "@t", "value": kind}],
            partition_key=registry,
        )
        return [item async for item in items]

    async def upsert(self, doc: Document) -> None:
        await self._container().upsert_item(doc.to_item())

    async def create(self, doc: Document) -> bool:
        try:
            await self._container().create_item(doc.to_item())
        except ResourceExistsError:
            return False
        return True

    async def delete(self, registry: str, item: str) -> bool:
        try:
            await self._container().delete_item(item, partition_key=registry)
        except ResourceNotFoundError:
            return False
        return True

    async def delete_all(self, registry: str) -> None:
        """Every identity document of the registry (when the registry is deleted)."""
        for kind in ("adminUser", "scopeMap", "token", "roleAssignment"):
            for doc in await self._list(registry, kind):
                await self.delete(registry, doc["id"])

    async def admin_user(self, registry: str) -> AdminUserDoc | None:
        doc = await self._read(registry, "adminUser")
        return AdminUserDoc.model_validate(doc) if doc else None

    async def scope_map(self, registry: str, name: str) -> ScopeMapDoc | None:
        doc = await self._read(registry, scope_map_id(name))
        return ScopeMapDoc.model_validate(doc) if doc else None

    async def scope_maps(self, registry: str) -> list[ScopeMapDoc]:
        return [ScopeMapDoc.model_validate(d) for d in await self._list(registry, "scopeMap")]

    async def token(self, registry: str, name: str) -> TokenDoc | None:
        doc = await self._read(registry, token_id(name))
        return TokenDoc.model_validate(doc) if doc else None

    async def tokens(self, registry: str) -> list[TokenDoc]:
        return [TokenDoc.model_validate(d) for d in await self._list(registry, "token")]

    async def role_assignments(self, registry: str) -> list[RoleAssignmentDoc]:
        return [RoleAssignmentDoc.model_validate(d) for d in await self._list(registry, "roleAssignment")]


# --- the request-rate limiter's shared state ------------------------------------------------------------
# Shared state of the request-rate limiter: one small document per bucket, updated optimistically.
#
#     registries [/registry]  ratelimit:<category>:<registry | identity>
#         {type: "ratelimit", state: {capacity, tokens, updated}, ttl: 600}
#
# The limiter (services/auth/ratelimit.py) hands over a pure update function; this adapter reads the
# document, applies it, and writes it back only if nobody else did meanwhile (ETag), retrying otherwise. Idle
# buckets expire (TTL), and start full again, as an idle bucket would have refilled anyway.
BUCKET_TTL_SECONDS = 600
_ATTEMPTS = 8


class SharedStateContended(Exception):
    """Too many concurrent writers on one bucket document."""


class RateLimitStore:
    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    async def update(self, partition: str, item: str, update: Any) -> Any:
        container = self._cosmos.container("registries")
        for _ in range(_ATTEMPTS):
            try:
                doc: dict[str, Any] | None = await container.read_item(item, partition_key=partition)
            except ResourceNotFoundError:
                doc = None
            state, result = update(doc["state"] if doc else None)
            body = {"id": item, "registry": partition, "type": "ratelimit", "state": state, "ttl": BUCKET_TTL_SECONDS}
            try:
                if doc is None:
                    await container.create_item(body)
                else:
                    await container.replace_item(
                        item, body, etag=doc["_etag"], match_condition=MatchConditions.IfNotModified
                    )
            except (ResourceExistsError, CosmosAccessConditionFailedError, ResourceNotFoundError):
                continue  # someone else wrote first: read again
            return result
        raise SharedStateContended(item)
