"""What an identity may do: repository grants from scope maps, built-in scope maps and roles.

Everything is expressed in the actions of Docker token scopes, which the access tokens carry:

    repository actions   pull, push, delete, metadata_read, metadata_write, deleted_read, deleted_restore
    registry:catalog     *  (list the repositories)
    registry:deleted_catalog  *  (list the soft-deleted repositories)

ACR's scope-map actions map onto them one to one (`content/read` -> pull, `content/write` -> push,
`content/delete` -> delete, `metadata/read`, `metadata/write`). A scope-map entry names a repository
exactly, or a prefix with a trailing `/*`, or every repository with `*`; the grants of every entry that
matches a repository add up (ACR's wildcard rule). Role assignments grant registry-wide actions, or for the
repository roles, actions on repositories whose name equals or starts with the condition's value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

PULL, PUSH, DELETE, METADATA_READ, METADATA_WRITE = "pull", "push", "delete", "metadata_read", "metadata_write"
# Soft delete (services/registry/softdelete.py): list soft-deleted artifacts, restore them. ACR's
# `registries/deleted/read` and `registries/deleted/restore/action`: Owner, Contributor and Reader (read
# only) have them, as ACR's `*` and `*/read` role definitions do; no scope-map action names them.
DELETED_READ, DELETED_RESTORE = "deleted_read", "deleted_restore"
REPOSITORY_ACTIONS = frozenset({PULL, PUSH, DELETE, METADATA_READ, METADATA_WRITE, DELETED_READ, DELETED_RESTORE})
# Quarantine (services/scanning/quarantine.py): pulling a quarantined image, and setting its quarantine state.
# No token request names them: they ride along with pull and metadata_write (`grant_scope`).
QUARANTINE_READ, QUARANTINE_WRITE = "quarantine_read", "quarantine_write"
RIDE_ALONG = {PULL: QUARANTINE_READ, METADATA_WRITE: QUARANTINE_WRITE}

SCOPE_MAP_ACTIONS: dict[str, str] = {
    "content/read": PULL,
    "content/write": PUSH,
    "content/delete": DELETE,
    "metadata/read": METADATA_READ,
    "metadata/write": METADATA_WRITE,
}

# A repository name as the distribution spec allows it, for the exact entries of a scope map.
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")


class ScopeMapActionInvalid(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RepositoryPattern:
    """`name` (exact), `prefix/*` (every repository under the prefix) or `*` (every repository)."""

    kind: Literal["exact", "prefix", "all"]
    value: str = ""

    @classmethod
    def parse(cls, text: str) -> RepositoryPattern:
        if text == "*":
            return cls("all")
        if text.endswith("/*") and _REPOSITORY.fullmatch(text[:-2]):
            return cls("prefix", text[:-1])  # keep the slash: "samples/" does not match "samplesx"
        if _REPOSITORY.fullmatch(text):
            return cls("exact", text)
        raise ScopeMapActionInvalid(f"repository {text!r} is invalid: use a name, a prefix ending in '/*', or '*'")

    def matches(self, repository: str) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "prefix":
            return repository.startswith(self.value)
        return repository == self.value

    def __str__(self) -> str:
        return {"all": "*", "prefix": f"{self.value}*", "exact": self.value}[self.kind]


@dataclass(frozen=True, slots=True)
class Grant:
    pattern: RepositoryPattern
    actions: frozenset[str]


@dataclass(frozen=True, slots=True)
class Permissions:
    """Everything one identity may do on one registry."""

    grants: tuple[Grant, ...] = ()
    catalog: bool = False
    deleted_catalog: bool = False  # an access token's `registry:deleted_catalog:*`

    @property
    def lists_deleted(self) -> bool:
        """May list the soft-deleted repositories: the catalog, and deleted_read everywhere."""
        return self.deleted_catalog or (self.catalog and self.allows_everywhere(DELETED_READ))

    def actions_on(self, repository: str) -> frozenset[str]:
        """The union of the grants of every pattern that matches (wildcards add up)."""
        granted: set[str] = set()
        for grant in self.grants:
            if grant.pattern.matches(repository):
                granted |= grant.actions
        return frozenset(granted)

    def allows(self, action: str, repository: str) -> bool:
        return action in self.actions_on(repository)

    def allows_everywhere(self, action: str) -> bool:
        """Whether `action` is granted on every repository (a `*` grant)."""
        return any(g.pattern.kind == "all" and action in g.actions for g in self.grants)

    def __or__(self, other: Permissions) -> Permissions:
        return Permissions(
            self.grants + other.grants, self.catalog or other.catalog, self.deleted_catalog or other.deleted_catalog
        )


NOTHING = Permissions()
EVERYTHING = Permissions((Grant(RepositoryPattern("all"), REPOSITORY_ACTIONS),), catalog=True)
ANONYMOUS_PULL = Permissions((Grant(RepositoryPattern("all"), frozenset({PULL})),))


# --- scope maps -----------------------------------------------------------------------------------------
def parse_scope_map_action(text: str) -> tuple[RepositoryPattern, str]:
    """`repositories/<pattern>/<content|metadata>/<verb>` -> (pattern, Docker action)."""
    if not text.startswith("repositories/") or text.count("/") < 3:
        raise ScopeMapActionInvalid(f"{text!r} is not repositories/<name>/<content|metadata>/<action>")
    rest = text[len("repositories/") :]
    repository, group, verb = rest.rsplit("/", 2)
    action = SCOPE_MAP_ACTIONS.get(f"{group}/{verb}")
    if action is None:
        raise ScopeMapActionInvalid(f"{text!r}: unknown action {group}/{verb}; use {', '.join(SCOPE_MAP_ACTIONS)}")
    return RepositoryPattern.parse(repository), action


def scope_map_permissions(actions: Iterable[str]) -> Permissions:
    """A scope map's actions as grants; scope maps never grant the catalog (ACR's rule)."""
    by_pattern: dict[RepositoryPattern, set[str]] = {}
    for text in actions:
        pattern, action = parse_scope_map_action(text)
        by_pattern.setdefault(pattern, set()).add(action)
    return Permissions(tuple(Grant(p, frozenset(a)) for p, a in by_pattern.items()))


def _all(*verbs: str) -> tuple[str, ...]:
    return tuple(f"repositories/*/{verb}" for verb in verbs)


@dataclass(frozen=True, slots=True)
class BuiltInScopeMap:
    name: str
    description: str
    actions: tuple[str, ...] = field(default_factory=tuple)


BUILT_IN_SCOPE_MAPS: dict[str, BuiltInScopeMap] = {
    m.name: m
    for m in (
        BuiltInScopeMap(
            "_repositories_admin",
            "Can perform all read, write and delete operations on the registry's repositories",
            _all("content/read", "content/write", "content/delete", "metadata/read", "metadata/write"),
        ),
        BuiltInScopeMap("_repositories_pull", "Can pull any repository of the registry", _all("content/read")),
        BuiltInScopeMap(
            "_repositories_pull_metadata_read",
            "Can pull and read metadata of any repository of the registry",
            _all("content/read", "metadata/read"),
        ),
        BuiltInScopeMap(
            "_repositories_push", "Can push to any repository of the registry", _all("content/read", "content/write")
        ),
        BuiltInScopeMap(
            "_repositories_push_metadata_write",
            "Can push to and write metadata of any repository of the registry",
            _all("content/read", "content/write", "metadata/read", "metadata/write"),
        ),
    )
}


# --- roles ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Role:
    name: str
    actions: frozenset[str]
    catalog: bool
    repository_scoped: bool = False  # takes a repository-name condition (ACR's ABAC roles)


ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        Role("Owner", REPOSITORY_ACTIONS, True),
        Role("Contributor", REPOSITORY_ACTIONS, True),
        Role("Reader", frozenset({PULL, METADATA_READ, DELETED_READ}), True),
        Role("AcrPull", frozenset({PULL, METADATA_READ}), True),
        Role("AcrPush", frozenset({PULL, PUSH, METADATA_READ, METADATA_WRITE}), True),
        Role("AcrDelete", frozenset({DELETE}), False),
        # Signing has no /v2 action of its own: this role alone pulls and pushes nothing.
        Role("AcrImageSigner", frozenset(), False),
        # The scanner's and operators' roles: pull quarantined images (by digest); set quarantine states.
        Role("AcrQuarantineReader", frozenset({PULL, QUARANTINE_READ}), False),
        Role(
            "AcrQuarantineWriter",
            frozenset({PULL, METADATA_READ, METADATA_WRITE, QUARANTINE_READ, QUARANTINE_WRITE}),
            False,
        ),
        Role("Container Registry Repository Reader", frozenset({PULL, METADATA_READ}), False, True),
        Role(
            "Container Registry Repository Writer",
            frozenset({PULL, PUSH, METADATA_READ, METADATA_WRITE}),
            False,
            True,
        ),
        Role("Container Registry Repository Contributor", REPOSITORY_ACTIONS, False, True),
        Role("Container Registry Repository Catalog Lister", frozenset(), True),
    )
}


@dataclass(frozen=True, slots=True)
class RepositoryCondition:
    """ACR's ABAC condition on `repositories:name`: StringEquals or StringStartsWith."""

    operator: Literal["equals", "prefix"]
    values: tuple[str, ...]

    def patterns(self) -> list[RepositoryPattern]:
        if self.operator == "equals":
            return [RepositoryPattern("exact", v) for v in self.values]
        return [RepositoryPattern("prefix", v) if v else RepositoryPattern("all") for v in self.values]


def role_permissions(role_name: str, condition: RepositoryCondition | None = None) -> Permissions:
    role = ROLES.get(role_name)
    if role is None:
        return NOTHING
    if not role.actions:
        return Permissions(catalog=role.catalog)
    patterns = condition.patterns() if (role.repository_scoped and condition) else [RepositoryPattern("all")]
    return Permissions(tuple(Grant(p, role.actions) for p in patterns), role.catalog)


# --- what each /v2/ route needs ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Need:
    """What a request needs: a repository action, the catalog, or only a known caller (the base route).

    `source` is the repository a cross-repository mount reads from (`POST .../uploads/?mount=&from=`): pull
    there is wanted, not required (without it the mount falls back to an upload), but the challenge asks
    for it, as CNCF distribution's does, so that a token client's next token allows the mount.
    """

    kind: Literal["repository", "catalog", "deleted_catalog", "base"]
    repository: str = ""
    action: str = ""
    route: str = ""  # the route kind (what the rate limits count it as)
    source: str = ""  # a valid repository name, or empty

    def scope(self) -> str:
        """The scope a challenge names for this need (empty for the base route).

        A mount names `repository:<target>:pull,push repository:<from>:pull`: several scopes in the one
        space-separated `scope` parameter, as CNCF distribution writes them (RFC 6750 section 3), and pull
        on the target too, which is what docker and distribution ask for a push.
        """
        if self.kind == "catalog":
            return "registry:catalog:*"
        if self.kind == "deleted_catalog":
            return "registry:deleted_catalog:*"
        if self.kind == "repository" and self.source:
            target = f"repository:{self.repository}:{PULL},{self.action}"
            return target if self.source == self.repository else f"{target} repository:{self.source}:{PULL}"
        if self.kind == "repository":
            return f"repository:{self.repository}:{self.action}"
        return ""


_ROUTE_ACTIONS: dict[tuple[str, str], str] = {
    ("tags", "GET"): PULL,
    ("manifest", "GET"): PULL,
    ("manifest", "HEAD"): PULL,
    ("manifest", "PUT"): PUSH,
    ("manifest", "DELETE"): DELETE,
    ("blob", "GET"): PULL,
    ("blob", "HEAD"): PULL,
    ("blob", "DELETE"): DELETE,
    ("upload", "POST"): PUSH,
    ("upload_session", "GET"): PUSH,
    ("upload_session", "PATCH"): PUSH,
    ("upload_session", "PUT"): PUSH,
    ("upload_session", "DELETE"): PUSH,
    ("referrers", "GET"): PULL,
    # The /acr/v1/ metadata API (services/registry/acr_paths.py): reads are metadata/read, attribute
    # changes metadata/write, deletes content/delete; these are the scopes ACR's clients ask tokens for
    # (`repository:<name>:metadata_read`, `metadata_write`, `delete`). AcrPull and Reader include
    # metadata_read, as in ACR's role table; the `_repositories_pull` scope map does not.
    ("acr_repository", "GET"): METADATA_READ,
    ("acr_repository", "PATCH"): METADATA_WRITE,
    ("acr_repository", "DELETE"): DELETE,
    ("acr_tags", "GET"): METADATA_READ,
    ("acr_tag", "GET"): METADATA_READ,
    ("acr_tag", "PATCH"): METADATA_WRITE,
    ("acr_tag", "DELETE"): DELETE,
    ("acr_manifests", "GET"): METADATA_READ,
    ("acr_manifest", "GET"): METADATA_READ,
    ("acr_manifest", "PATCH"): METADATA_WRITE,
    ("acr_manifest", "DELETE"): DELETE,
    ("acr_manifest_scan", "POST"): METADATA_WRITE,  # ours: ask for a rescan (services/scanning)
    ("acr_deleted_manifests", "GET"): DELETED_READ,
    ("acr_deleted_tags", "GET"): DELETED_READ,
    ("acr_deleted_manifest", "POST"): DELETED_RESTORE,
}


def route_need(kind: str, method: str, repository: str, mount_source: str = "") -> Need:
    """The access a `/v2/` route needs; an unknown (kind, method) needs everything a push needs.

    `mount_source` is the valid `from` of a mount request (the caller validates it: it is written into
    the challenge header); it is ignored on every other route.
    """
    if kind == "base":
        return Need("base", route=kind)
    if kind == "catalog":
        return Need("catalog", route=kind)
    if kind == "acr_catalog":  # /acr/v1/_catalog: the same registry:catalog:* as /v2/_catalog
        return Need("catalog", route=kind)
    if kind == "acr_deleted_catalog":
        return Need("deleted_catalog", route=kind)
    method = "GET" if method == "HEAD" and (kind, "HEAD") not in _ROUTE_ACTIONS else method
    source = mount_source if (kind, method) == ("upload", "POST") else ""
    return Need("repository", repository, _ROUTE_ACTIONS.get((kind, method), PUSH), kind, source)


def satisfies(permissions: Permissions, need: Need) -> bool:
    if need.kind == "base":
        return True
    if need.kind == "catalog":
        return permissions.catalog
    if need.kind == "deleted_catalog":
        return permissions.lists_deleted
    return permissions.allows(need.action, need.repository)


def grant_scope(permissions: Permissions, scope_type: str, name: str, actions: Iterable[str]) -> list[str]:
    """The actions of a requested scope that `permissions` grant (in the order asked; `*` expanded)."""
    asked = list(actions)
    if scope_type == "registry":
        if name == "deleted_catalog":
            return ["*"] if permissions.lists_deleted and asked else []
        return ["*"] if name == "catalog" and permissions.catalog and asked else []
    if scope_type != "repository":
        return []
    held = permissions.actions_on(name)
    if "*" in asked:
        return sorted(held)
    granted = [a for a in asked if a in held]
    return granted + [RIDE_ALONG[a] for a in granted if a in RIDE_ALONG and RIDE_ALONG[a] in held]


def permissions_from_access(access: Iterable[dict[str, object]]) -> Permissions:
    """An access token's `access` claim as permissions (exact repository names only)."""
    grants: list[Grant] = []
    catalog = deleted_catalog = False
    for entry in access:
        kind, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
        if not isinstance(name, str) or not isinstance(actions, list):
            continue
        if kind == "registry" and name == "catalog" and "*" in actions:
            catalog = True
        elif kind == "registry" and name == "deleted_catalog" and "*" in actions:
            deleted_catalog = True
        elif kind == "repository":
            grants.append(Grant(RepositoryPattern("exact", name), frozenset(a for a in actions if isinstance(a, str))))
    return Permissions(tuple(grants), catalog, deleted_catalog)
