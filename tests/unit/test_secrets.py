"""Secrets at rest (services/platform/secrets.py) and webhooks stored sealed (issue 8, item 10)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from services.platform.secrets import SealedValueInvalid, SecretBox, SecretKey, ensure_keys_file, keys_json, parse_keys
from services.webhooks.resources import opened, sealed
from services.webhooks.store import WebhookDoc


def _hook(name: str = "hookone", **values: object) -> WebhookDoc:
    return WebhookDoc(
        id=f"webhook:{name}", registry="reg01", name=name, serviceUri="https://x.example/", actions=["push"], **values
    )  # type: ignore[arg-type]


def test_a_sealed_value_opens_only_in_its_own_context() -> None:
    box = SecretBox([SecretKey.generate()])
    value = box.seal(b"Bearer secret", "webhook:reg01/a")
    assert b"secret" not in value.encode() and value.startswith("v1.")
    assert box.open(value, "webhook:reg01/a") == b"Bearer secret"
    with pytest.raises(SealedValueInvalid):
        box.open(value, "webhook:reg01/b")  # copied into another webhook's document
    tampered = value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB")
    with pytest.raises(SealedValueInvalid):
        box.open(tampered, "webhook:reg01/a")
    with pytest.raises(SealedValueInvalid):
        SecretBox([SecretKey.generate()]).open(value, "webhook:reg01/a")  # a key not in the ring


def test_rotation_seals_with_the_first_key_and_opens_with_all() -> None:
    old, new = SecretKey.generate(), SecretKey.generate()
    value = SecretBox([old]).seal(b"x", "c")
    rotated = SecretBox([new, old])
    assert rotated.open(value, "c") == b"x"
    assert rotated.seal(b"x", "c").split(".")[1] == new.kid


def test_the_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "secrets-keys.json"
    ensure_keys_file(path)
    first = path.read_text()
    ensure_keys_file(path)
    assert path.read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(parse_keys(first)) == 1


def test_a_bad_key_ring_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_keys(json.dumps([{"kid": "k", "key": "c2hvcnQ="}]))  # 5 bytes
    with pytest.raises(ValueError):
        parse_keys("[]")
    assert parse_keys(keys_json([SecretKey("k1", bytes(32))]))[0].kid == "k1"


def test_a_webhook_is_stored_without_its_secrets_in_clear() -> None:
    box = SecretBox([SecretKey.generate()])
    hook = _hook(customHeaders={"Authorization": "Bearer s3cret-value"}, signingSecret="hmac-s3cret")
    stored = sealed(hook, box)
    text = stored.model_dump_json()
    assert "s3cret" not in text and stored.customHeaders == {} and stored.signingSecret is None
    back = opened(stored, box)
    assert back.customHeaders == {"Authorization": "Bearer s3cret-value"} and back.signingSecret == "hmac-s3cret"
    moved = stored.model_copy(update={"name": "hooktwo", "id": "webhook:hooktwo"})
    with pytest.raises(SealedValueInvalid):
        opened(moved, box)


def test_a_webhook_stored_before_sealing_reads_as_it_is() -> None:
    legacy = _hook(customHeaders={"X-Key": "v"})
    assert opened(legacy, SecretBox([SecretKey.generate()])) == legacy
