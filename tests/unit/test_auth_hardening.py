"""Pure rules behind the security-hardening fixes of services/auth (issue 8, items 3, 4, 12, 15).

- failed sign-ins: a budget per client address and per username, reserved before any hashing (item 3);
- a wrong password costs the same verifications whether the credential exists or not (item 3);
- the registry identity and credential versions that tokens are bound to (item 4);
- the challenge's realm is built from the login server, never from `Host` (item 12);
- scopes naming what no repository can be called are never granted (item 15).
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.auth import passwords
from services.auth.credentials import credential_version, live_slots, registry_identity
from services.auth.failures import FailureKey, FailureLimiter, address_key, failure_keys
from services.auth.scopes import parse_scopes
from services.auth.service import realm_authority
from services.auth.store import PasswordDoc
from services.management.store import RegistryDoc

# --- failed sign-ins (item 3) --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_address_budget_is_spent_then_refused_with_the_wait() -> None:
    clock = Clock()
    limiter = FailureLimiter(clock)
    keys = failure_keys(ipaddress.ip_address("192.0.2.7"), "reg", "bob", per_address=3, per_username=100)
    assert [limiter.reserve(keys) for _ in range(3)] == [None, None, None]
    wait = limiter.reserve(keys)
    assert wait is not None and 19 < wait <= 20  # 3 per minute: one every 20 s
    clock.now += 20
    assert limiter.reserve(keys) is None
    # Another address still has its own budget.
    other = failure_keys(ipaddress.ip_address("192.0.2.8"), "reg", "bob", per_address=3, per_username=100)
    assert limiter.reserve(other) is None


def test_the_username_budget_holds_across_addresses() -> None:
    limiter = FailureLimiter(Clock())
    for n in range(5):
        keys = failure_keys(ipaddress.ip_address(f"198.51.100.{n}"), "reg", "bob", per_address=10, per_username=5)
        assert limiter.reserve(keys) is None
    sixth = failure_keys(ipaddress.ip_address("198.51.100.99"), "reg", "bob", per_address=10, per_username=5)
    assert limiter.reserve(sixth) is not None
    # The same name on another registry is another bucket.
    elsewhere = failure_keys(ipaddress.ip_address("198.51.100.99"), "other", "bob", per_address=10, per_username=5)
    assert limiter.reserve(elsewhere) is None


def test_a_refused_attempt_spends_nothing_and_a_right_password_gives_its_reservation_back() -> None:
    limiter = FailureLimiter(Clock())
    address = ipaddress.ip_address("192.0.2.7")
    bob = failure_keys(address, "reg", "bob", per_address=2, per_username=1)
    alice = failure_keys(address, "reg", "alice", per_address=2, per_username=1)
    assert limiter.reserve(bob) is None
    assert limiter.reserve(bob) is not None  # bob's name is spent; the address's second failure is not taken
    assert limiter.reserve(alice) is None  # ... so alice still gets it
    limiter.refund(alice)  # alice's password was right
    assert limiter.reserve(failure_keys(address, "reg", "carol", per_address=2, per_username=1)) is None


def test_ipv6_clients_share_their_64_and_limits_of_zero_are_off() -> None:
    assert address_key(ipaddress.ip_address("2001:db8:1:2::1")) == address_key(ipaddress.ip_address("2001:db8:1:2::ff"))
    assert address_key(ipaddress.ip_address("2001:db8:1:3::1")) != address_key(ipaddress.ip_address("2001:db8:1:2::1"))
    assert address_key(None) == "unknown"
    assert failure_keys(None, "reg", "bob", per_address=0, per_username=0) == []
    assert failure_keys(None, "reg", "x" * 10_000, 1, 1)[1].value == "reg\0" + "x" * 256


def test_the_limiter_forgets_the_least_recently_used_beyond_its_size() -> None:
    limiter = FailureLimiter(Clock(), max_keys=2)
    first, second, third = (FailureKey("address", v, 1) for v in ("a", "b", "c"))
    assert limiter.reserve([first]) is None and limiter.reserve([second]) is None
    assert limiter.reserve([third]) is None  # `a` is dropped: memory stays bounded
    assert limiter.reserve([second]) is not None


# --- the same cost for every wrong password (item 3) ---------------------------------------------------------


@pytest.fixture(scope="module")
def known_hash() -> str:
    return passwords.hash_password("right")


@pytest.mark.parametrize("slots", [[], [None, None], ["known"], ["known", None], ["known", "known"]])
def test_a_wrong_password_is_always_verified_against_two_slots(
    slots: list[str | None], known_hash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = passwords.verify_password

    def counting(password_hash: str, password: str) -> bool:
        calls.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(passwords, "verify_password", counting)
    hashes = [known_hash if s == "known" else None for s in slots]
    assert passwords.verify_slots(hashes, "wrong") is None
    assert len(calls) == passwords.SLOTS == 2
    assert passwords.verify_slots([None, known_hash], "right") == 1


# --- what tokens are bound to (item 4) -----------------------------------------------------------------------


def _registry(created: str) -> RegistryDoc:
    return RegistryDoc(id="myreg", registry="myreg", loginServer="myreg.azurecr.localhost", created=created)


def test_a_recreated_registry_has_another_identity_and_credential_versions() -> None:
    old, new = _registry("2024-01-01T00:00:00.000Z"), _registry("2024-01-01T00:00:00.001Z")
    assert registry_identity(old) != registry_identity(new)
    assert registry_identity(old) == registry_identity(_registry("2024-01-01T00:00:00.000Z"))
    assert credential_version(old, "token", "t", 0, "h") != credential_version(new, "token", "t", 0, "h")


def test_credential_versions_change_with_the_password_hash_and_the_generation() -> None:
    registry = _registry("2024-01-01T00:00:00.000Z")
    base = credential_version(registry, "token", "reader", 0, "hash-1")
    assert base == credential_version(registry, "token", "reader", 0, "hash-1")
    assert base != credential_version(registry, "token", "reader", 1, "hash-1")  # disabled once since
    assert base != credential_version(registry, "token", "reader", 0, "hash-2")  # regenerated
    assert base != credential_version(registry, "token", "writer", 0, "hash-1")
    assert base != credential_version(registry, "admin", "reader", 0, "hash-1")


def test_live_slots_leave_out_expired_passwords() -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    expired = PasswordDoc(name="password1", hash="h1", expiry=(now - timedelta(days=1)).isoformat())
    live = PasswordDoc(name="password2", hash="h2", expiry=(now + timedelta(days=1)).isoformat())
    assert live_slots([live, expired], now) == [None, live]
    assert live_slots([], now) == [None, None]
    assert live_slots([PasswordDoc(name="password1", hash="h", expiry="garbage")], now) == [None, None]


# --- the realm (item 12) -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "realm"),
    [
        ("myreg.azurecr.localhost:5000", "myreg.azurecr.localhost:5000"),
        ("MyReg.AzureCR.localhost", "myreg.azurecr.localhost"),
        ("x@attacker.example", "myreg.azurecr.localhost"),
        ("attacker.example:5000", "myreg.azurecr.localhost:5000"),
        ('myreg.azurecr.localhost:5000"x', "myreg.azurecr.localhost"),
        ("myreg.azurecr.localhost:99999", "myreg.azurecr.localhost"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("[::1]:5443", "[::1]:5443"),
        ("[0:0::1]", "[::1]"),
        ("localhost:5000", "localhost:5000"),
        ("", "myreg.azurecr.localhost"),
        ("a b", "myreg.azurecr.localhost"),
    ],
)
def test_the_realm_is_the_login_server_with_the_clients_port(host: str, realm: str) -> None:
    assert realm_authority(host, "myreg.azurecr.localhost") == realm


@given(st.text(max_size=80))
def test_the_realm_never_carries_what_a_header_cannot_hold(host: str) -> None:
    authority = realm_authority(host, "myreg.azurecr.localhost")
    assert all(c.isascii() and (c.isalnum() or c in ".-:[]") for c in authority)


# --- scopes (item 15) ----------------------------------------------------------------------------------------


def test_scopes_naming_no_valid_repository_are_dropped() -> None:
    scopes = parse_scopes(
        [
            "repository:team/../secret/repo:pull repository:team/app:pull,push",
            "repository:Team/App:pull repository:a//b:pull repository:/a:pull repository:a/:push",
            "repository:" + "a" * 256 + ":pull registry:catalog:*",
        ]
    )
    assert [str(s) for s in scopes] == ["repository:team/app:pull,push", "registry:catalog:*"]
