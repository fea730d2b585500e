"""Credentials for other registries (`credentials.customRegistries` of a task or a run request), as the runner
resolves them when a run starts: login server -> (username, password) for buildah's auth file.

An `Opaque` value is stored sealed to its task and to its run, and opened here. A `Vaultsecret` value is a Key
Vault secret URI. Locally there is no Key Vault to reach, and the runner holds no identity a vault would
accept, so a URI resolves only through the operator's resolver: the JSON file `TASKS_VAULT_SECRETS_FILE`
mapping secret URIs to values (`{"https://myvault.vault.azure.net/secrets/pull-password": "..."}`), read when
a run needs it. A URI it does not hold fails the run, naming the URI (never a value). Resolved values are
masked in the run log like every secret.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.platform.secrets import SecretBox
from services.tasks.scheduling import open_credentials

MAX_RESOLVER_BYTES = 1024 * 1024


class CredentialsUnavailable(Exception):
    """A credential of the run cannot be resolved (the message names the URI, never a value)."""


class VaultResolver:
    def __init__(self, path: str) -> None:
        self._path = path

    def resolve(self, uri: str) -> str:
        if not self._path:
            raise CredentialsUnavailable(
                f"the Key Vault secret {uri} cannot be resolved: Key Vault is not reachable from this runner and "
                "no TASKS_VAULT_SECRETS_FILE is set"
            )
        file = Path(self._path)
        try:
            if file.stat().st_size > MAX_RESOLVER_BYTES:
                raise CredentialsUnavailable(f"the Key Vault secret {uri} cannot be resolved: the file is too large")
            table = json.loads(file.read_text())
        except (OSError, ValueError) as error:
            problem = f"TASKS_VAULT_SECRETS_FILE cannot be read ({type(error).__name__})"
            raise CredentialsUnavailable(f"the Key Vault secret {uri} cannot be resolved: {problem}") from error
        value = table.get(uri) if isinstance(table, dict) else None
        if value is None and isinstance(table, dict):
            value = table.get(uri.rstrip("/"))
        if not isinstance(value, str) or not value:
            raise CredentialsUnavailable(f"the Key Vault secret {uri} is not in TASKS_VAULT_SECRETS_FILE")
        return value


def resolve_credentials(
    registries: dict[str, Any], box: SecretBox, context: str, resolver: VaultResolver
) -> dict[str, tuple[str, str]]:
    """login server -> (username, password), every value opened or resolved."""
    opened = open_credentials(registries, box, context)
    resolved: dict[str, tuple[str, str]] = {}
    for server, entry in opened.items():
        values: list[str] = []
        for key in ("userName", "password"):
            secret = entry.get(key) or {}
            value = str(secret.get("value") or "")
            if secret.get("type") == "Vaultsecret":
                value = resolver.resolve(value)
            if not value:
                raise CredentialsUnavailable(f"the {key} for {server} is empty")
            values.append(value)
        resolved[server.lower()] = (values[0], values[1])
    return resolved
