"""What a token of ours is bound to, so that rotating or removing it revokes what it issued.

Two claims, both opaque digests (they name nothing and reveal no hash):

- `rid`, the registry's identity: its name and the time its document was created. Every token we sign
  carries it, and a token whose `rid` is not the registry's as it stands now is refused, so a registry
  deleted and re-created under the same name does not honour the old one's tokens (the audience, the
  login server, is the same for both).
- `cv`, the credential version of a password identity (the admin user, a token): a digest of the
  registry's identity, the credential's kind, name and generation, and the stored hash of the password
  that signed in. A refresh token made from a password sign-in carries it; it is honoured only while that
  password is still one of the credential's live passwords. So regenerating a password revokes the refresh
  tokens it made, and only those (the other password's clients keep working, which is what the two slots
  are for); re-creating a token under the same name makes new hashes; and disabling bumps the
  generation, so re-enabling does not bring old refresh tokens back.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from services.auth.store import PasswordDoc
from services.management.store import RegistryDoc


def registry_identity(registry: RegistryDoc) -> str:
    return hashlib.sha256(f"registry\0{registry.registry}\0{registry.created}".encode()).hexdigest()[:32]


def credential_version(registry: RegistryDoc, kind: str, subject: str, generation: int, password_hash: str) -> str:
    text = f"credential\0{registry_identity(registry)}\0{kind}\0{subject}\0{generation}\0{password_hash}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def password_live(password: PasswordDoc, now: datetime) -> bool:
    if password.expiry is None:
        return True
    try:
        expiry = datetime.fromisoformat(password.expiry.replace("Z", "+00:00"))
    except ValueError:
        return False
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=UTC)
    return expiry > now


def live_slots(passwords: list[PasswordDoc], now: datetime) -> list[PasswordDoc | None]:
    """The credential's passwords by slot (password1, password2); None where a slot is empty or expired."""
    by_name = {p.name: p for p in passwords}
    return [
        p if p is not None and password_live(p, now) else None
        for p in (by_name.get("password1"), by_name.get("password2"))
    ]
