"""Docker token-auth scopes: `repository:<name>:<action>[,<action>...]` and `registry:catalog:*`.

The grammar follows the Docker token specification: `resourcetype[(resourceclass)]:resourcename:actions`,
where the name may itself contain colons (a registry host with a port), so the actions are what follows
the *last* colon and the type what precedes the *first*.

A scope is what a token service *grants*, so `parse_scopes` keeps only repository scopes whose name `/v2/`
would accept (`reference.validate_repository_name`): a token must never be signed for a name like
`team/../secret/repo` that no repository can have, whatever a client or a later change of the routes
makes of it. Like CNCF distribution's token server, it drops such a scope rather than refusing the request,
as it drops every scope it cannot read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.registry.errors import RegistryError
from services.registry.reference import validate_repository_name

_TYPE = re.compile(r"^[a-z0-9]+(?:\([a-z0-9]+\))?$")
_ACTION = re.compile(r"^(?:\*|[a-z][a-z_]*)$")


class ScopeInvalid(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Scope:
    """One resource and the actions asked for (or granted) on it."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope:
        if text.count(":") < 2:
            raise ScopeInvalid(f"scope {text!r} is not type:name:actions")
        kind, rest = text.split(":", 1)
        name, actions_text = rest.rsplit(":", 1)
        kind = kind.split("(", 1)[0] if _TYPE.fullmatch(kind) else ""
        if not kind or not name:
            raise ScopeInvalid(f"scope {text!r} has no type or name")
        actions = tuple(dict.fromkeys(a for a in actions_text.split(",") if a))
        if not actions or not all(_ACTION.fullmatch(a) for a in actions):
            raise ScopeInvalid(f"scope {text!r} has invalid actions")
        return cls(kind, name, actions)

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def claim(self) -> dict[str, object]:
        """The scope as an entry of an access token's `access` claim."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def valid_name(scope: Scope) -> bool:
    """Whether a repository scope names a repository `/v2/` accepts (other types have their own rules)."""
    if scope.type != "repository":
        return True
    try:
        validate_repository_name(scope.name)
    except RegistryError:
        return False
    return True


def parse_scopes(values: list[str]) -> list[Scope]:
    """Every scope in the request (`scope` may repeat and each may hold several, space-separated).

    Unparseable scopes, and repository scopes whose name is not a valid repository name, are skipped: the
    token spec leaves out what is not granted, and what cannot exist cannot be granted.
    """
    scopes: list[Scope] = []
    for value in values:
        for text in value.split():
            try:
                scope = Scope.parse(text)
            except ScopeInvalid:
                continue
            if valid_name(scope):
                scopes.append(scope)
    return scopes
