"""A registry's identities as resources: admin user, scope maps, tokens, role assignments, and the
registry properties that govern access (admin user, anonymous pull, auth disabled).

The command line (`python -m services.management ...`) calls these; the ARM-shaped management API will
call the same functions. Passwords are returned once, when made, and stored only as hashes. Changes reach
a running registry within `AUTH_CACHE_SECONDS` (and its 30-second registry cache), as ACR's take up to a
minute to replicate.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from services.auth.network import NetworkRuleInvalid, NetworkRuleSet
from services.auth.passwords import generate_password, hash_password
from services.auth.permissions import BUILT_IN_SCOPE_MAPS, ROLES, parse_scope_map_action
from services.auth.store import (
    AccessStore,
    AdminUserDoc,
    PasswordDoc,
    PasswordName,
    RepositoryConditionDoc,
    RoleAssignmentDoc,
    ScopeMapDoc,
    TokenDoc,
    role_assignment_id,
    scope_map_id,
    token_id,
)
from services.management.authorization import CONTROL_PLANE_ROLES
from services.management.store import RegistryDoc, RegistryStore, ScopeRoleAssignmentDoc, scope_partition
from services.platform.cosmos import Cosmos

# ACR: names of tokens and scope maps are 5-50 letters, digits, '-' and '_'; '_' first is the system's.
RESOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{4,49}$")
TOKEN_LIMITS = {"Basic": 100, "Standard": 500, "Premium": 50_000}  # also the scope-map limits
MAX_SCOPE_MAP_ACTIONS = 500


class AccessError(ValueError):
    """A management request that cannot be done (the message says why)."""


@dataclass(frozen=True)
class NewPassword:
    name: PasswordName
    value: str
    expiry: str | None = None


def _name(kind: str, name: str) -> str:
    if not RESOURCE_NAME.fullmatch(name):
        raise AccessError(f"{kind} name {name!r} is invalid: 5-50 letters, digits, '-' or '_', not '_' first")
    return name


async def _registry(metadata: Cosmos, registry: str) -> RegistryDoc:
    doc = await RegistryStore(metadata).get_registry(registry)
    if doc is None:
        raise AccessError(f"registry {registry!r} does not exist")
    return doc


def _expiry(days: int | None) -> str | None:
    if days is None:
        return None
    return (datetime.now(UTC) + timedelta(days=days)).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- registry properties ------------------------------------------------------------------------------
async def update_registry(
    metadata: Cosmos,
    registry: str,
    *,
    anonymous_pull: bool | None = None,
    auth_disabled: bool | None = None,
    default_action: Literal["Allow", "Deny"] | None = None,
    allow_ips: list[str] | None = None,
    storage_quota: int | None = None,
) -> RegistryDoc:
    """Change access properties; `default_action`/`allow_ips` replace the network rules (Premium only);
    `storage_quota` (bytes; 0 removes it) is the operator's storage limit (services/registry/quota.py)."""
    doc = await _registry(metadata, registry)
    if default_action is not None or allow_ips is not None:
        if doc.sku != "Premium":
            raise AccessError("network rules need the Premium tier (as in ACR)")
        current = doc.networkRuleSet or {"defaultAction": "Allow", "ipRules": []}
        wanted = {
            "defaultAction": default_action or current.get("defaultAction", "Allow"),
            "ipRules": [{"action": "Allow", "value": v} for v in allow_ips]
            if allow_ips is not None
            else current.get("ipRules", []),
        }
        try:
            rules = NetworkRuleSet.parse(wanted)
        except NetworkRuleInvalid as exc:
            raise AccessError(str(exc)) from exc
        doc.networkRuleSet = rules.to_doc() if rules is not None else None
    if anonymous_pull is not None:
        if anonymous_pull and doc.sku == "Basic":
            raise AccessError("anonymous pull needs the Standard or Premium tier (as in ACR)")
        doc.anonymousPullEnabled = anonymous_pull
    if auth_disabled is not None:
        doc.authDisabled = auth_disabled
    if storage_quota is not None:
        if storage_quota < 0:
            raise AccessError("the storage quota is a number of bytes (0 removes it)")
        doc.storageQuotaBytes = storage_quota or None
    await AccessStore(metadata).upsert(doc)
    return doc


# --- admin user ---------------------------------------------------------------------------------------
async def enable_admin_user(metadata: Cosmos, registry: str) -> list[NewPassword]:
    """Enable the admin user; make its two passwords if it has none. Returns the passwords made."""
    doc = await _registry(metadata, registry)
    store = AccessStore(metadata)
    admin = await store.admin_user(registry)
    made: list[NewPassword] = []
    if admin is None or not admin.passwords:
        made = [NewPassword("password1", generate_password()), NewPassword("password2", generate_password())]
        admin = AdminUserDoc(
            registry=registry, passwords=[PasswordDoc(name=p.name, hash=hash_password(p.value)) for p in made]
        )
        await store.upsert(admin)
    doc.adminUserEnabled = True
    await store.upsert(doc)
    return made


async def disable_admin_user(metadata: Cosmos, registry: str) -> None:
    """Disable the admin user and revoke its refresh tokens (re-enabling keeps the passwords, not those)."""
    doc = await _registry(metadata, registry)
    store = AccessStore(metadata)
    admin = await store.admin_user(registry)
    if admin is not None:
        admin.generation += 1
        await store.upsert(admin)
    doc.adminUserEnabled = False
    await store.upsert(doc)


async def regenerate_admin_password(metadata: Cosmos, registry: str, which: PasswordName) -> NewPassword:
    await _registry(metadata, registry)
    store = AccessStore(metadata)
    admin = await store.admin_user(registry) or AdminUserDoc(registry=registry)
    new = NewPassword(which, generate_password())
    admin.passwords = [p for p in admin.passwords if p.name != which]
    admin.passwords.append(PasswordDoc(name=which, hash=hash_password(new.value)))
    admin.passwords.sort(key=lambda p: p.name)
    await store.upsert(admin)
    return new


# --- scope maps ---------------------------------------------------------------------------------------
def check_actions(actions: list[str]) -> list[str]:
    if not actions:
        raise AccessError("a scope map needs at least one action")
    if len(actions) > MAX_SCOPE_MAP_ACTIONS:
        raise AccessError(f"a scope map holds at most {MAX_SCOPE_MAP_ACTIONS} actions")
    for action in actions:
        try:
            parse_scope_map_action(action)
        except ValueError as exc:
            raise AccessError(str(exc)) from exc
    return list(dict.fromkeys(actions))


async def put_scope_map(
    metadata: Cosmos, registry: str, name: str, actions: list[str], description: str = ""
) -> ScopeMapDoc:
    """Create or replace a scope map (`repositories/<name|prefix/*|*>/<content|metadata>/<verb>`)."""
    doc = await _registry(metadata, registry)
    _name("scope map", name)
    store = AccessStore(metadata)
    existing = await store.scope_map(registry, name)
    if existing is None and len(await store.scope_maps(registry)) >= TOKEN_LIMITS[doc.sku]:
        raise AccessError(f"the {doc.sku} tier allows {TOKEN_LIMITS[doc.sku]} scope maps")
    scope_map = ScopeMapDoc(
        id=scope_map_id(name), registry=registry, name=name, description=description, actions=check_actions(actions)
    )
    await store.upsert(scope_map)
    return scope_map


async def delete_scope_map(metadata: Cosmos, registry: str, name: str) -> bool:
    store = AccessStore(metadata)
    users = [t.name for t in await store.tokens(registry) if t.scopeMap == name]
    if users:
        raise AccessError(f"scope map {name!r} is used by token(s) {', '.join(users)}")
    return await store.delete(registry, scope_map_id(name))


async def list_scope_maps(metadata: Cosmos, registry: str) -> list[ScopeMapDoc]:
    built_in = [
        ScopeMapDoc(
            id=scope_map_id(m.name), registry=registry, name=m.name, description=m.description, actions=list(m.actions)
        )
        for m in BUILT_IN_SCOPE_MAPS.values()
    ]
    return built_in + await AccessStore(metadata).scope_maps(registry)


# --- tokens -------------------------------------------------------------------------------------------
async def create_token(
    metadata: Cosmos,
    registry: str,
    name: str,
    scope_map: str,
    *,
    status: Literal["enabled", "disabled"] = "enabled",
    expiry_days: int | None = None,
    with_passwords: bool = True,
) -> tuple[TokenDoc, list[NewPassword]]:
    """A token with a scope map and two new passwords (returned once); through ARM, with none until
    generateCredentials makes them (`with_passwords=False`), as in ACR."""
    doc = await _registry(metadata, registry)
    _name("token", name)
    store = AccessStore(metadata)
    if scope_map not in BUILT_IN_SCOPE_MAPS and await store.scope_map(registry, scope_map) is None:
        raise AccessError(f"scope map {scope_map!r} does not exist")
    if await store.token(registry, name) is not None:
        raise AccessError(f"token {name!r} already exists")
    if len(await store.tokens(registry)) >= TOKEN_LIMITS[doc.sku]:
        raise AccessError(f"the {doc.sku} tier allows {TOKEN_LIMITS[doc.sku]} tokens")
    expiry = _expiry(expiry_days)
    made = (
        [NewPassword("password1", generate_password(), expiry), NewPassword("password2", generate_password(), expiry)]
        if with_passwords
        else []
    )
    token = TokenDoc(
        id=token_id(name),
        registry=registry,
        name=name,
        scopeMap=scope_map,
        status=status,
        passwords=[PasswordDoc(name=p.name, hash=hash_password(p.value), expiry=p.expiry) for p in made],
    )
    await store.upsert(token)
    return token, made


async def _token(store: AccessStore, registry: str, name: str) -> TokenDoc:
    token = await store.token(registry, name)
    if token is None:
        raise AccessError(f"token {name!r} does not exist")
    return token


async def update_token(
    metadata: Cosmos,
    registry: str,
    name: str,
    *,
    status: Literal["enabled", "disabled"] | None = None,
    scope_map: str | None = None,
) -> TokenDoc:
    store = AccessStore(metadata)
    token = await _token(store, registry, name)
    if scope_map is not None:
        if scope_map not in BUILT_IN_SCOPE_MAPS and await store.scope_map(registry, scope_map) is None:
            raise AccessError(f"scope map {scope_map!r} does not exist")
        token.scopeMap = scope_map
    if status is not None:
        if status == "disabled" and token.status != "disabled":
            token.generation += 1  # revokes the refresh tokens made so far, also once it is enabled again
        token.status = status
    await store.upsert(token)
    return token


async def regenerate_token_password(
    metadata: Cosmos, registry: str, name: str, which: PasswordName, expiry_days: int | None = None
) -> NewPassword:
    store = AccessStore(metadata)
    token = await _token(store, registry, name)
    new = NewPassword(which, generate_password(), _expiry(expiry_days))
    token.passwords = [p for p in token.passwords if p.name != which]
    token.passwords.append(PasswordDoc(name=which, hash=hash_password(new.value), expiry=new.expiry))
    token.passwords.sort(key=lambda p: p.name)
    await store.upsert(token)
    return new


async def delete_token(metadata: Cosmos, registry: str, name: str) -> bool:
    return await AccessStore(metadata).delete(registry, token_id(name))


async def list_tokens(metadata: Cosmos, registry: str) -> list[TokenDoc]:
    return await AccessStore(metadata).tokens(registry)


# --- role assignments ---------------------------------------------------------------------------------
async def assign_role(
    metadata: Cosmos,
    registry: str,
    principal: str,
    role: str,
    *,
    tenant: str = "",
    condition: tuple[Literal["equals", "prefix"], list[str]] | None = None,
) -> RoleAssignmentDoc:
    await _registry(metadata, registry)
    known = ROLES.get(role)
    if known is None:
        raise AccessError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    if condition is not None and not known.repository_scoped:
        raise AccessError(f"role {role!r} takes no repository condition")
    assignment = RoleAssignmentDoc(
        id=role_assignment_id(str(uuid.uuid4())),
        registry=registry,
        principalId=principal,
        tenantId=tenant,
        role=role,
        condition=RepositoryConditionDoc(operator=condition[0], values=condition[1]) if condition else None,
    )
    await AccessStore(metadata).upsert(assignment)
    return assignment


async def delete_role_assignment(metadata: Cosmos, registry: str, assignment: str) -> bool:
    item = assignment if assignment.startswith("roleAssignment:") else role_assignment_id(assignment)
    return await AccessStore(metadata).delete(registry, item)


async def list_role_assignments(metadata: Cosmos, registry: str) -> list[RoleAssignmentDoc]:
    return await AccessStore(metadata).role_assignments(registry)


async def assign_scope_role(
    metadata: Cosmos, scope: str, principal: str, role: str, *, tenant: str = ""
) -> ScopeRoleAssignmentDoc:
    """A control-plane role at subscription (`/subscriptions/<id>`) or resource group
    (`/subscriptions/<id>/resourceGroups/<name>`) scope; idempotent for the same principal, role and scope."""
    parts = scope.strip("/").split("/")
    if not (len(parts) == 2 and parts[0] == "subscriptions") and not (
        len(parts) == 4 and parts[0] == "subscriptions" and parts[2].lower() == "resourcegroups"
    ):
        raise AccessError(
            f"scope {scope!r} is neither /subscriptions/<id> nor /subscriptions/<id>/resourceGroups/<name>"
        )
    if role not in CONTROL_PLANE_ROLES:
        raise AccessError(f"role {role!r} is not a control-plane role; known: {', '.join(sorted(CONTROL_PLANE_ROLES))}")
    store = RegistryStore(metadata)
    for existing in await store.scope_role_assignments(parts[1]):
        if (existing.scope.lower(), existing.principalId, existing.role) == (scope.lower(), principal, role):
            return existing
    assignment = ScopeRoleAssignmentDoc(
        id=role_assignment_id(str(uuid.uuid4())),
        registry=scope_partition(parts[1]),
        scope="/" + "/".join(parts),
        principalId=principal,
        tenantId=tenant,
        role=role,
    )
    await store.put_scope_role_assignment(assignment)
    return assignment
