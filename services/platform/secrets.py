"""Secrets at rest: values the service must read back (webhook custom headers and signing secrets, later
task secrets) are sealed with AES-256-GCM before they reach Cosmos DB, never stored in clear.

The keys form a ring (`SECRETS_KEYS`: JSON `[{"kid", "key": <base64 of 32 bytes>}, ...]`, the first one seals,
all of them open; in Azure an app setting that is a Key Vault reference, so rotation is a new secret version
with the new key first and the old ones after). Locally `SECRETS_KEYS_FILE` (`.local/auth/secrets-keys.json`,
0600) is made on first use. A sealed value is `v1.<kid>.<base64url(nonce || ciphertext+tag)>`; its
associated data names the document and field it belongs to, so a sealed value copied into another webhook's
document does not open there.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("secrets")

PREFIX = "v1"
_NONCE_BYTES = 12


class SealedValueInvalid(ValueError):
    """A sealed value that does not open: tampered with, another document's, or sealed with a key not in the ring."""


@dataclass(frozen=True, slots=True)
class SecretKey:
    kid: str
    key: bytes

    @classmethod
    def generate(cls) -> SecretKey:
        return cls(secrets.token_hex(8), AESGCM.generate_key(bit_length=256))


def parse_keys(text: str) -> list[SecretKey]:
    items = json.loads(text)
    keys = [SecretKey(str(item["kid"]), base64.b64decode(item["key"])) for item in items]
    if not keys or any(len(k.key) != 32 or not k.kid or "." in k.kid for k in keys):
        raise ValueError("the secrets key ring needs at least one key; each a kid without '.' and 32 bytes")
    return keys


def keys_json(keys: list[SecretKey]) -> str:
    return json.dumps([{"kid": k.kid, "key": base64.b64encode(k.key).decode()} for k in keys], indent=2)


def ensure_keys_file(path: Path) -> None:
    """Make a ring with one new key if there is none (0600, folder 0700; never overwrites another's)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Written whole under a name of this process, then linked into place (fails if another process won):
    # a process starting meanwhile (the devhost and a task runner) never reads a half-written ring.
    staged = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(keys_json([SecretKey.generate()]))
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(staged, path)
    finally:
        staged.unlink(missing_ok=True)


class SecretBox:
    def __init__(self, keys: list[SecretKey]) -> None:
        self._sealing = keys[0]
        self._keys = {k.kid: k for k in keys}

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(self._sealing.key).encrypt(nonce, plaintext, context.encode())
        return f"{PREFIX}.{self._sealing.kid}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, value: str, context: str) -> bytes:
        version, _, rest = value.partition(".")
        kid, _, data = rest.partition(".")
        key = self._keys.get(kid)
        if version != PREFIX or key is None:
            raise SealedValueInvalid(f"sealed with a key this service does not have ({kid!r})")
        try:
            raw = base64.urlsafe_b64decode(data)
            return AESGCM(key.key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError) as error:
            raise SealedValueInvalid("the sealed value does not open (tampered with, or another's)") from error


@lru_cache(maxsize=8)
def secret_box(inline: str, file: str) -> SecretBox:
    """The process's box for these settings (`settings.secrets_keys`, `settings.secrets_keys_file`)."""
    if inline:
        return SecretBox(parse_keys(inline))
    if file:
        path = Path(file)
        ensure_keys_file(path)
        return SecretBox(parse_keys(path.read_text()))
    # No ring configured: a key of this process only. Sealed values then die with the process, which is
    # only acceptable for throw-away runs; deployments set SECRETS_KEYS (infra does).
    log.warning("no SECRETS_KEYS(_FILE) configured: secrets are sealed with a key of this process only")
    return SecretBox([SecretKey.generate()])
