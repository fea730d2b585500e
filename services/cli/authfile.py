"""The credentials file podman, skopeo, buildah and docker read: `acr login` writes its entry there.

Which file, first found:

1. `--auth-file PATH`,
2. `$REGISTRY_AUTH_FILE` (what podman, skopeo and buildah themselves honour),
3. `$XDG_RUNTIME_DIR/containers/auth.json` (where `podman login` writes; docker does not read it),
4. `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (docker's; podman and skopeo fall back to it).

The entry is the one `docker login -u 00000000-0000-0000-0000-000000000000 -p <refresh token>` writes: ACR's
convention for signing in with a refresh token, which every client turns into access tokens by itself. A
password given to `acr login` is traded for a refresh token first, so it never reaches the disk; the
refresh token expires (3 hours by default) and `acr login` is run again. Other entries are kept as they are;
the file is replaced atomically and is 0600.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.cli.errors import CliError, ExitCode


def default_auth_file(env: Mapping[str, str]) -> Path:
    if env.get("REGISTRY_AUTH_FILE"):
        return Path(env["REGISTRY_AUTH_FILE"])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json"
    docker = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else Path.home() / ".docker"
    return docker / "config.json"


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError) as error:
        raise CliError(ExitCode.BAD_INPUT, f"{path} is not a readable JSON auth file: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("auths", {}), dict):
        raise CliError(ExitCode.BAD_INPUT, f'{path} is not an auth file (no "auths" object)')
    return data


def store_login(path: Path, server: str, username: str, secret: str) -> list[str]:
    """Write `server`'s entry; returns warnings (a credential helper that would shadow the entry)."""
    data = _read(path)
    auths: dict[str, Any] = data.setdefault("auths", {})
    auths[server] = {"auth": base64.b64encode(f"{username}:{secret}".encode()).decode()}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    temporary.replace(path)
    warnings = []
    helper = (data.get("credHelpers") or {}).get(server) if isinstance(data.get("credHelpers"), dict) else None
    if helper or data.get("credsStore"):
        # docker asks the helper instead of reading "auths"; podman and skopeo read "auths" first.
        warnings.append(
            f"{path} names a credential helper ({helper or data.get('credsStore')}); docker will ask it, not "
            f"this entry: use --auth-file with another file for docker"
        )
    return warnings
