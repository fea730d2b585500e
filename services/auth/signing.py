"""Signed JWTs for the token service: the key ring, and access/refresh token encoding.

Keys are ES256 (P-256) key pairs, each with a key id (`kid` in the JWT header). The ring's first key
signs; every key in it verifies, so a rotation puts a new key first and keeps the old one until the tokens
it signed have expired (refresh lifetime), then drops it. A token whose `kid` is not in the ring is refused.

Where keys come from (settings): `AUTH_SIGNING_KEYS`, the ring as JSON (in Azure an app setting, which may
be a Key Vault reference), or `AUTH_SIGNING_KEYS_FILE`, a file holding it (locally; made on first use and
re-read when it changes). Format: `{"keys": [{"kid": "...", "privateKeyPem": "..."}, ...]}`.

Payload encoding: the azure-containerregistry SDK decodes a refresh token's payload with the standard
base64 alphabet (not base64url), so a payload whose encoding contains `-` or `_` breaks it. ASCII JSON
only produces those sextets for a few characters at certain offsets (`/?O_o` at offset 1 mod 3, `>?~` at
offset 2 mod 3); `sdk_safe_json` writes such a character inside a string as its `\\u00XX` escape and pads
the document with trailing spaces to a multiple of three bytes, so the encoding is also unpadded.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger("auth")

ALGORITHM = "ES256"
_RELOAD_CHECK_SECONDS = 5.0


class TokenInvalid(Exception):
    """A token that must not be honoured (bad signature, unknown key, expired, wrong audience...)."""


def _unsafe(char: str, offset: int) -> bool:
    """Whether this ASCII character at this byte offset yields a base64url sextet of 62 or 63."""
    code = ord(char)
    if offset % 3 == 1:
        return code & 0x0F == 0x0F
    if offset % 3 == 2:
        return code & 0x3F >= 62
    return False


def sdk_safe_json(claims: dict[str, Any]) -> bytes:
    """Compact JSON of `claims` whose base64url encoding has neither `-` nor `_` nor padding."""
    text = json.dumps(claims, separators=(",", ":"), ensure_ascii=True)
    out: list[str] = []
    length = 0
    in_string = escaped = False
    for char in text:
        if in_string and not escaped and char not in '"\\' and _unsafe(char, length):
            piece = f"\\u{ord(char):04x}"
        elif not in_string and _unsafe(char, length):
            # Unreachable for json.dumps output (no structural character is unsafe); kept for safety.
            pad = 1 if not _unsafe(char, length + 1) else 2
            piece = " " * pad + char
        else:
            piece = char
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        out.append(piece)
        length += len(piece)
    out.append(" " * (-length % 3))
    return "".join(out).encode("ascii")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(f"k{time.strftime('%Y%m%d')}-{secrets.token_hex(4)}", ec.generate_private_key(ec.SECP256R1()))

    def to_json(self) -> dict[str, str]:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return {"kid": self.kid, "privateKeyPem": pem.decode()}

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> SigningKey:
        key = serialization.load_pem_private_key(str(item["privateKeyPem"]).encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"signing key {item.get('kid')!r} is not an EC key")
        return cls(str(item["kid"]), key)


def parse_ring(text: str) -> list[SigningKey]:
    data = json.loads(text)
    keys = [SigningKey.from_json(item) for item in data.get("keys", [])]
    if not keys:
        raise ValueError("the signing key ring has no keys")
    return keys


def ring_json(keys: list[SigningKey]) -> str:
    return json.dumps({"keys": [k.to_json() for k in keys]}, indent=2)


def ensure_key_file(path: Path) -> None:
    """Make a key ring file with one new key if there is none (atomically; never overwrites)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(ring_json([SigningKey.generate()]))
    temporary.chmod(0o600)
    try:
        os.link(temporary, path)  # fails if another process made it first: theirs wins
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


def rotate_key_file(path: Path, keep: int = 2) -> SigningKey:
    """Put a new signing key first; keep at most `keep` keys in all (the newest). Returns the new key."""
    keys = parse_ring(path.read_text()) if path.exists() else []
    new = SigningKey.generate()
    ring = [new, *keys][: max(keep, 1)]
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(ring_json(ring))
    temporary.chmod(0o600)
    os.replace(temporary, path)
    return new


class KeyRing:
    """Signs with the first key, verifies with any; re-reads its file when the file changes."""

    def __init__(self, keys: list[SigningKey], path: Path | None = None) -> None:
        self._keys = {k.kid: k for k in keys}
        self._active = keys[0]
        self._path = path
        self._mtime = path.stat().st_mtime_ns if path is not None else 0
        self._checked = time.monotonic()

    @classmethod
    def from_settings(cls, inline: str, file: str) -> KeyRing:
        if inline:
            return cls(parse_ring(inline))
        if file:
            path = Path(file)
            ensure_key_file(path)
            return cls(parse_ring(path.read_text()), path)
        log.warning("no AUTH_SIGNING_KEYS(_FILE) configured: tokens are signed with a key of this process only")
        return cls([SigningKey.generate()])

    @property
    def active_kid(self) -> str:
        return self._active.kid

    def _maybe_reload(self) -> None:
        if self._path is None or time.monotonic() - self._checked < _RELOAD_CHECK_SECONDS:
            return
        self._checked = time.monotonic()
        try:
            mtime = self._path.stat().st_mtime_ns
            if mtime != self._mtime:
                keys = parse_ring(self._path.read_text())
                self._keys, self._active, self._mtime = {k.kid: k for k in keys}, keys[0], mtime
        except (OSError, ValueError) as exc:
            log.warning("could not re-read the signing keys (%s); keeping the ones loaded", exc)

    def sign(self, claims: dict[str, Any]) -> str:
        self._maybe_reload()
        return jwt.api_jws.encode(
            sdk_safe_json(claims),
            self._active.private_key,
            algorithm=ALGORITHM,
            headers={"kid": self._active.kid, "typ": "JWT"},
        )

    def verify(self, token: str, *, audience: str, issuer: str) -> dict[str, Any]:
        """The claims of a token this ring signed, else TokenInvalid (never another exception)."""
        self._maybe_reload()
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.get(str(header.get("kid", "")))
            if key is None:
                raise TokenInvalid("the token was signed by a key this registry does not know")
            claims: dict[str, Any] = jwt.decode(
                token,
                key.private_key.public_key(),
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=issuer,
                options={"require": ["exp", "iat", "aud", "iss", "sub"]},
                leeway=30,
            )
        except jwt.PyJWTError as exc:
            raise TokenInvalid(str(exc)) from exc
        return claims


def new_claims(
    *, issuer: str, audience: str, subject: str, lifetime: int, grant_type: str, **extra: Any
) -> dict[str, Any]:
    now = int(time.time())
    return {
        "jti": str(uuid.uuid4()),
        "sub": subject,
        "nbf": now - 5,
        "exp": now + lifetime,
        "iat": now,
        "iss": issuer,
        "aud": audience,
        "version": "1.0",
        "grant_type": grant_type,
        **extra,
    }


def unverified_payload(token: str) -> dict[str, Any]:
    """For tests and diagnostics only: the payload decoded as the Azure SDK does (standard alphabet)."""
    value = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.b64decode(value + "=" * (-len(value) % 4)))
    return decoded
