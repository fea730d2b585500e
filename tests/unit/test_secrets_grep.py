"""The secrets grep of a whole run (tests/secrets_grep.py): what it registers, and what it finds where."""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.secrets_grep import PUBLIC_KEYS, SecretRegistry, log_files, scan

PASSWORD = "q7Xv0-Rk_2mYwZpLs9TnB4uE6hJcDaFgHiKlMoNpQrS"
JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJwdXNoZXIifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Outside the session's temporary folder: the logs these tests write are not the run's own."""
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def registry_of(*secrets: str) -> SecretRegistry:
    registry = SecretRegistry()
    for secret in secrets:
        registry.register(secret, "unit")
    return registry


def test_it_finds_a_secret_as_is_and_in_base64_in_any_log_under_the_folder(tmp_path: Path) -> None:
    (tmp_path / "devhost").mkdir()
    (tmp_path / "devhost" / "devhost-1.log").write_text(f"INFO auth: signing in with password={PASSWORD}\n")
    (tmp_path / "runner.log").write_text(f"token {base64.b64encode(JWT.encode()).decode()} in base64\n")
    (tmp_path / "clean.log").write_text('INFO audit: {"Identity":"pusher"}\n' + PASSWORD[:20] + "\n")
    (tmp_path / "credentials.json").write_text(PASSWORD)  # not a log: tests keep credentials in files
    findings = scan(log_files(tmp_path), registry_of(PASSWORD, JWT))
    assert sorted((f.path.name, f.form) for f in findings) == [("devhost-1.log", "as is"), ("runner.log", "in base64")]
    assert all(PASSWORD not in str(f) and JWT not in str(f) for f in findings)  # the report does not leak it


def test_a_secret_with_characters_outside_the_alphabets_is_found_too(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text('headers {"Authorization": "Bearer victims own secret"}\n')
    assert len(scan([tmp_path / "a.log"], registry_of("Bearer victims own secret"))) == 1


def test_short_values_and_the_public_emulator_keys_are_not_secrets(tmp_path: Path) -> None:
    registry = registry_of("x", "password", *PUBLIC_KEYS)
    assert len(registry) == 0
    (tmp_path / "a.log").write_text("x invalid username or password " + " ".join(PUBLIC_KEYS))
    assert scan([tmp_path / "a.log"], registry) == []


def test_what_tests_send_and_receive_registers_its_secrets() -> None:
    registry = SecretRegistry()
    basic = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    registry.observe_headers({"authorization": f"Basic {basic}"}, "request")
    registry.observe_headers({"Authorization": f"Bearer {JWT}"}, "request")
    registry.observe_headers({"location": "http://127.0.0.1/c/b?sv=2024&sig=abc%2Bdef%3D%3Dxyz0&se=1"}, "reply")
    registry.observe_body(
        json.dumps({"passwords": [{"name": "password", "value": "token-password-1"}], "username": "reader"}),
        "application/json",
        "reply",
    )
    registry.observe_body(
        json.dumps(
            {
                "properties": {"customHeaders": {"Authorization": "Bearer hook-secret-123"}},
                "values": [{"name": "TOKEN", "value": "s3cr3t-value", "isSecret": True}],
            }
        ),
        "application/json",
        "request",
    )
    registry.observe_body(
        "grant_type=refresh_token&refresh_token=refresh-0123456789&service=x",
        "application/x-www-form-urlencoded",
        "request",
    )
    assert set(registry.secrets) == {
        basic,
        PASSWORD,
        JWT,
        "abc%2Bdef%3D%3Dxyz0",
        "abc+def==xyz0",
        "token-password-1",
        "Bearer hook-secret-123",
        "hook-secret-123",
        "s3cr3t-value",
        "refresh-0123456789",
    }
