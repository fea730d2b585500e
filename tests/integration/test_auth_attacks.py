"""The attacks of issue 8 on authentication, replayed against a devhost (and, where the attack is about what
happens inside one request, against the auth service in-process on the same emulators).

    item 3   wrong passwords: verified off the event loop, the same cost for names that do not exist, and a
             failed-sign-in budget per client address and per username spent before any hashing
    item 4   refresh tokens die with the credential that made them: regenerated passwords, a disabled or
             deleted token, a token re-created under the same name, the admin user disabled, the registry
             deleted and re-created under the same name
    item 11  a registry name no registry can have in `Host` is a clean 400, never a 500
    item 12  the challenge's realm is the registry's login server, not what `Host` says
    item 13  a registry that does not exist answers exactly as a real one does to a stranger
    item 15  the token service never signs a scope for a name no repository can have

The devhost here trusts nothing it has cached (`AUTH_CACHE_SECONDS=0`), so a revocation shows on the next
request; its default registry is one of this module's own that requires credentials; and it believes
`X-Forwarded-For` from 127.0.0.1, so that each test spends the failed-sign-in budget of addresses of its own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import re
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from services.auth import passwords
from services.auth.service import AuthService, unknown_registry
from services.auth.signing import unverified_payload
from services.management.access import (
    create_token,
    delete_token,
    disable_admin_user,
    enable_admin_user,
    regenerate_admin_password,
    regenerate_token_password,
    update_token,
)
from services.management.registries import create_registry, delete_registry
from services.management.store import RegistryDoc, RegistryStore
from services.registry.errors import RegistryError
from tests.conftest import Devhost, running_devhost
from tests.integration.conftest import Stores, basic, unique_registry_name

REFRESH_USER = "00000000-0000-0000-0000-000000000000"
PER_ADDRESS, PER_USERNAME = 3, 5
_addresses = (f"198.18.{n // 250}.{n % 250 + 1}" for n in itertools.count())


def fresh_address() -> dict[str, str]:
    """A client address no other request of this module has used (its own failed-sign-in budget)."""
    return {"X-Forwarded-For": next(_addresses)}


def challenge(reply: httpx.Response) -> dict[str, str]:
    header = reply.headers["WWW-Authenticate"]
    assert header.startswith("Bearer "), header
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


@dataclass(frozen=True)
class Attacked:
    devhost: Devhost
    default: str  # the devhost's default registry (requires credentials)

    @property
    def port(self) -> int:
        return int(self.devhost.host.rsplit(":", 1)[1])

    def host(self, name: str) -> str:
        return f"{name}.azurecr.localhost:{self.port}"


@pytest.fixture(scope="module")
def attacked(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attacked]:
    default = unique_registry_name()
    env = stack | {
        "AUTH_CACHE_SECONDS": "0",
        "DEFAULT_REGISTRY": default,
        "DEFAULT_REGISTRY_AUTH_DISABLED": "false",
        "TRUSTED_PROXIES": "127.0.0.1",
        "AUTH_FAILURES_PER_ADDRESS_PER_MINUTE": str(PER_ADDRESS),
        "AUTH_FAILURES_PER_USERNAME_PER_MINUTE": str(PER_USERNAME),
    }
    with running_devhost(env, tmp_path_factory.mktemp("attacks")) as host:
        yield Attacked(host, default)


@pytest.fixture
async def http(attacked: Attacked) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=attacked.devhost.url, timeout=60) as client:
        yield client


@dataclass
class Reg:
    name: str
    host: str
    login_server: str
    admin: list[str]  # password1, password2
    token: list[str]  # token "reader" (_repositories_pull): password1, password2


async def new_registry(attacked: Attacked, stores: Stores, name: str | None = None) -> Reg:
    name = name or unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name, "Premium")
    admin = await enable_admin_user(stores.metadata, name)
    _, token = await create_token(stores.metadata, name, "reader", "_repositories_pull")
    return Reg(
        name,
        attacked.host(name),
        f"{name}.azurecr.localhost",
        [p.value for p in admin],
        [p.value for p in token],
    )


# --- item 3: wrong passwords ---------------------------------------------------------------------------------


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread of every argon2 verification the process makes while the test runs."""
    threads: list[int] = []
    real = passwords.verify_password

    def counting(password_hash: str, password: str) -> bool:
        threads.append(threading.get_ident())
        return real(password_hash, password)

    monkeypatch.setattr(passwords, "verify_password", counting)
    return threads


def in_process(stores: Stores, per_address: int = 0, per_username: int = 0) -> AuthService:
    settings = stores.settings.model_copy(
        update={
            "auth_failures_per_address_per_minute": per_address,
            "auth_failures_per_username_per_minute": per_username,
            "auth_cache_seconds": 0.0,
        }
    )
    return AuthService(settings, stores.metadata)


async def test_a_wrong_password_costs_the_same_whether_the_name_exists_or_not(
    attacked: Attacked, stores: Stores, verifications: list[int]
) -> None:
    reg = await new_registry(attacked, stores)
    await create_token(stores.metadata, reg.name, "switched-off", "_repositories_pull", status="disabled")
    await create_token(stores.metadata, reg.name, "run-out", "_repositories_pull", expiry_days=-1)
    doc = await RegistryStore(stores.metadata).get_registry(reg.name)
    assert doc is not None
    no_admin = await RegistryStore(stores.metadata).get_registry(attacked.default)  # admin user never enabled there
    assert no_admin is not None and not no_admin.adminUserEnabled
    ghost = unknown_registry("nosuch" + uuid.uuid4().hex[:10], "ghost.azurecr.localhost")
    auth = in_process(stores)
    attempts: dict[str, tuple[RegistryDoc, str]] = {
        "a token, wrong password": (doc, "reader"),
        "no such token": (doc, "nosuchtoken"),
        "a disabled token": (doc, "switched-off"),
        "a token whose passwords expired": (doc, "run-out"),
        "the admin user, wrong password": (doc, reg.name),
        "the admin user of a registry without one": (no_admin, no_admin.registry),
        "the admin user of a registry that does not exist": (ghost, ghost.registry),
        "a token of a registry that does not exist": (ghost, "reader"),
    }
    costs = {}
    for what, (registry, username) in attempts.items():
        before = len(verifications)
        assert await auth.authenticate(registry, username, "not-the-password") is None, what
        costs[what] = len(verifications) - before
    # Every failure is two argon2 verifications (one per password slot), whatever the name: the time
    # it takes no longer tells which names exist (before: 0 verifications for unknown and disabled names).
    assert costs == dict.fromkeys(attempts, 2), costs
    assert await auth.authenticate(doc, "reader", reg.token[1]) is not None
    # ... and none of them ran on the event loop's thread.
    assert threading.get_ident() not in verifications


async def test_the_event_loop_keeps_serving_while_a_password_is_verified(
    attacked: Attacked, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Structural, not a timing threshold: each verification waits until the event loop has run another
    coroutine. On the loop's own thread that coroutine could never run, and the wait would time out."""
    reg = await new_registry(attacked, stores)
    doc = await RegistryStore(stores.metadata).get_registry(reg.name)
    assert doc is not None
    started, loop_ran = threading.Event(), threading.Event()
    served: list[bool] = []
    real = passwords.verify_password

    def waits_for_the_loop(password_hash: str, password: str) -> bool:
        loop_ran.clear()
        started.set()
        served.append(loop_ran.wait(timeout=5))
        return real(password_hash, password)

    async def other_request() -> None:
        while True:
            await asyncio.sleep(0)
            if started.is_set():
                started.clear()
                loop_ran.set()

    monkeypatch.setattr(passwords, "verify_password", waits_for_the_loop)
    auth = in_process(stores)
    other = asyncio.create_task(other_request())
    try:
        assert await auth.authenticate(doc, reg.name, "wrong") is None
    finally:
        other.cancel()
    assert served == [True, True]


async def test_failed_sign_ins_are_refused_before_any_hashing(
    attacked: Attacked, stores: Stores, verifications: list[int]
) -> None:
    reg = await new_registry(attacked, stores)
    doc = await RegistryStore(stores.metadata).get_registry(reg.name)
    assert doc is not None
    auth = in_process(stores, per_address=2, per_username=100)
    address = ipaddress.ip_address("203.0.113.9")
    for _ in range(2):
        assert await auth.authenticate(doc, "reader", "wrong", address) is None
    spent = len(verifications)
    for password in ("wrong", reg.token[0]):  # the right password is refused too: it is never looked at
        with pytest.raises(RegistryError) as refused:
            await auth.authenticate(doc, "reader", password, address)
        assert refused.value.code.wire_code == "TOOMANYREQUESTS" and int(refused.value.headers["Retry-After"]) >= 1
    assert len(verifications) == spent


async def test_failed_sign_ins_per_address_over_http(
    attacked: Attacked, stores: Stores, http: httpx.AsyncClient
) -> None:
    reg = await new_registry(attacked, stores)
    me = fresh_address()
    host = {"Host": reg.host} | me
    for _ in range(PER_ADDRESS):
        wrong = await http.get("/v2/", headers=host | basic(reg.name, "wrong"))
        assert wrong.status_code == 401 and "WWW-Authenticate" in wrong.headers
    for endpoint, credentials in (
        ("/v2/", basic(reg.name, "wrong")),
        ("/v2/", basic(reg.name, reg.admin[0])),  # right, but the budget is spent: not even verified
        ("/oauth2/token", basic("reader", reg.token[0])),
    ):
        refused = await http.get(endpoint, headers=host | credentials)
        assert refused.status_code == 429, (endpoint, refused.text)
        assert refused.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert int(refused.headers["Retry-After"]) >= 1
    form = {"grant_type": "password", "service": reg.login_server, "username": reg.name, "password": reg.admin[0]}
    assert (await http.post("/oauth2/token", headers=host, data=form)).status_code == 429
    # Another client is not held back, and right passwords never spend the budget.
    other = {"Host": reg.host} | fresh_address()
    for _ in range(PER_ADDRESS + 2):
        assert (await http.get("/v2/", headers=other | basic(reg.name, reg.admin[1]))).status_code == 200


async def test_failed_sign_ins_per_username_over_http(
    attacked: Attacked, stores: Stores, http: httpx.AsyncClient
) -> None:
    reg = await new_registry(attacked, stores)
    for _ in range(PER_USERNAME):  # a spray from as many addresses, one attempt each
        reply = await http.get("/v2/", headers={"Host": reg.host} | fresh_address() | basic("reader", "guess"))
        assert reply.status_code == 401
    for password in ("guess", reg.token[0]):
        reply = await http.get("/v2/", headers={"Host": reg.host} | fresh_address() | basic("reader", password))
        assert reply.status_code == 429 and int(reply.headers["Retry-After"]) >= 1
    # Other names of the registry are not affected.
    admin = await http.get("/v2/", headers={"Host": reg.host} | fresh_address() | basic(reg.name, reg.admin[0]))
    assert admin.status_code == 200


# --- item 4: refresh tokens die with their credential ------------------------------------------------------------


async def refresh_token(http: httpx.AsyncClient, reg: Reg, username: str, password: str) -> str:
    form = {
        "grant_type": "password",
        "service": reg.login_server,
        "username": username,
        "password": password,
        "access_type": "offline",
        "scope": "repository:samples/app:pull",
    }
    reply = await http.post("/oauth2/token", headers={"Host": reg.host} | fresh_address(), data=form)
    assert reply.status_code == 200, reply.text
    token: str = reply.json()["refresh_token"]
    return token


async def renewed(http: httpx.AsyncClient, reg: Reg, refresh: str) -> str:
    """`/oauth2/exchange` renewing a refresh token (what the Azure SDK does)."""
    form = {"grant_type": "refresh_token", "service": reg.login_server, "refresh_token": refresh}
    reply = await http.post("/oauth2/exchange", headers={"Host": reg.host}, data=form)
    assert reply.status_code == 200, reply.text
    token: str = reply.json()["refresh_token"]
    return token


async def honoured(http: httpx.AsyncClient, reg: Reg, refresh: str) -> dict[str, int]:
    """What each way of using a refresh token answers."""
    host = {"Host": reg.host} | fresh_address()
    grant = {"grant_type": "refresh_token", "service": reg.login_server, "refresh_token": refresh}
    token = await http.post("/oauth2/token", headers=host, data=grant | {"scope": "repository:samples/app:pull"})
    exchange = await http.post("/oauth2/exchange", headers=host, data=grant)
    ping = await http.get("/v2/", headers=host | basic(REFRESH_USER, refresh))
    return {"token": token.status_code, "exchange": exchange.status_code, "basic": ping.status_code}


ALIVE = {"token": 200, "exchange": 200, "basic": 200}
REVOKED = {"token": 401, "exchange": 401, "basic": 401}


async def test_regenerating_the_admin_passwords_revokes_their_refresh_tokens(
    attacked: Attacked, stores: Stores, http: httpx.AsyncClient
) -> None:
    reg = await new_registry(attacked, stores)
    first = await refresh_token(http, reg, reg.name, reg.admin[0])
    second = await refresh_token(http, reg, reg.name, reg.admin[1])
    first_renewed = await renewed(http, reg, first)
    await regenerate_admin_password(stores.metadata, reg.name, "password2")
    # The two passwords are for rotation: regenerating one leaves the clients of the other working.
    assert await honoured(http, reg, second) == REVOKED
    assert await honoured(http, reg, first) == ALIVE
    assert await honoured(http, reg, first_renewed) == ALIVE
    await regenerate_admin_password(stores.metadata, reg.name, "password1")
    assert await honoured(http, reg, first) == REVOKED
    assert await honoured(http, reg, first_renewed) == REVOKED  # a renewal is bound like its original


async def test_regenerating_both_token_passwords_revokes_their_refresh_tokens(
    attacked: Attacked, stores: Stores, http: httpx.AsyncClient
) -> None:
    reg = await new_registry(attacked, stores)
    tokens = [await refresh_token(http, reg, "reader", password) for password in reg.token]
    assert [await honoured(http, reg, t) for t in tokens] == [ALIVE, ALIVE]
    for which in ("password1", "password2"):
        await regenerate_token_password(stores.metadata, reg.name, "reader", which)  # type: ignore[arg-type]
    assert [await honoured(http, reg, t) for t in tokens] == [REVOKED, REVOKED]


async def test_disabling_or_deleting_a_token_revokes_for_good(
    attacked: Attacked, stores: Stores, http: httpx.AsyncClient
) -> None:
    reg = await new_registry(attacked, stores)
    before = await refresh_token(http, reg, "reader", reg.token[0])
    await update_token(stores.metadata, reg.name, "reader", status="disabled")
    assert await honoured(http, reg, before) == REVOKED
    await update_token(stores.metadata, reg.name, "reader", status="enabled")
    assert await honoured(http, reg, before) == REVOKED  # re-enabling does not bring it back
    after = await refresh_token(http, reg, "reader", reg.token[0])
    assert await honoured(http, reg, after) == ALIVE
    await delete_token(stores.metadata, reg.name, "reader")
    assert await honoured(http, reg, after) == REVOKED
    # Re-created under the same name, with more rights: the old refresh token gets none of them.
    _, made = await create_token(stores.metadata, reg.name, "reader", "_repositories_admin")
    assert await honoured(http, reg, after) == REVOKED
    assert await honoured(http, reg, await refresh_token(http, reg, "reader", made[0].value)) == ALIVE


async def test_disabling_the_admin_user_revokes_for_good(
    attacked: Attacked, stores: Stores, http: httpx.AsyncClient
) -> None:
    reg = await new_registry(attacked, stores)
    before = await refresh_token(http, reg, reg.name, reg.admin[0])
    await disable_admin_user(stores.metadata, reg.name)
    assert await honoured(http, reg, before) == REVOKED
    assert await enable_admin_user(stores.metadata, reg.name) == []  # the same passwords as before
    assert await honoured(http, reg, before) == REVOKED
    assert await honoured(http, reg, await refresh_token(http, reg, reg.name, reg.admin[0])) == ALIVE


async def test_a_registry_recreated_under_the_same_name_honours_no_old_token(
    attacked: Attacked, stores: Stores, http: httpx.AsyncClient
) -> None:
    old = await new_registry(attacked, stores)
    refresh = await refresh_token(http, old, old.name, old.admin[0])
    access = await http.get(
        "/oauth2/token",
        headers={"Host": old.host} | basic(old.name, old.admin[0]),
        params={"service": old.login_server, "scope": "registry:catalog:*"},
    )
    assert access.status_code == 200
    bearer = {"Authorization": f"Bearer {access.json()['access_token']}"}
    assert (await http.get("/v2/_catalog", headers={"Host": old.host} | bearer)).status_code == 200
    await delete_registry(stores.metadata, stores.blobs, old.name)
    new = await new_registry(attacked, stores, old.name)
    assert await honoured(http, new, refresh) == REVOKED
    refused = await http.get("/v2/_catalog", headers={"Host": new.host} | bearer)
    assert refused.status_code == 401 and challenge(refused)["error"] == "invalid_token"
    assert await honoured(http, new, await refresh_token(http, new, new.name, new.admin[0])) == ALIVE


# --- item 11: invalid registry names in Host -------------------------------------------------------------------


async def test_a_host_naming_no_possible_registry_is_a_clean_400(attacked: Attacked, http: httpx.AsyncClient) -> None:
    long_name = "a" * 5000
    for name in ("a/b", "", "abc", "a_b-c", long_name, "ab%2fcd", "x.y"):
        host = {"Host": f"{name}.azurecr.localhost:{attacked.port}"}
        for method, path in (
            ("GET", "/v2/"),
            ("GET", "/v2/samples/app/tags/list"),
            ("GET", "/oauth2/token"),
            ("POST", "/oauth2/token"),
            ("POST", "/oauth2/exchange"),
        ):
            reply = await http.request(method, path, headers=host)
            assert reply.status_code == 400, (name[:20], method, path, reply.status_code, reply.text[:200])
            assert reply.json()["errors"][0]["code"] == "NAME_INVALID"
            assert long_name[:64] not in reply.text  # never echoed back
        head = await http.head("/v2/samples/app/manifests/v1", headers=host)
        assert head.status_code == 400 and head.content == b""


# --- item 12: the realm ----------------------------------------------------------------------------------------


async def test_the_realm_is_never_copied_from_host(attacked: Attacked, stores: Stores, http: httpx.AsyncClient) -> None:
    # Any Host that is not a registry's goes to the default registry, which requires credentials here.
    default_server = f"{attacked.default}.azurecr.localhost"
    for host in ("x@attacker.example", "attacker.example", 'evil"quote'):
        reply = await http.get("/v2/samples/app/tags/list", headers={"Host": host})
        assert reply.status_code == 401, (host, reply.text)
        assert reply.headers["WWW-Authenticate"] == (
            f'Bearer realm="http://{default_server}/oauth2/token",service="{default_server}",'
            'scope="repository:samples/app:pull"'
        )
    # A registry's Host with something after the port: the realm stays well-formed, on the login server.
    reg = await new_registry(attacked, stores)
    reply = await http.get("/v2/", headers={"Host": f'{reg.host}"x,error="y'})
    assert reply.status_code == 401
    assert (
        reply.headers["WWW-Authenticate"]
        == f'Bearer realm="http://{reg.login_server}/oauth2/token",service="{reg.login_server}"'
    )
    # What clients send keeps working: the login server with its port, and the bare address of a local run.
    assert challenge(await http.get("/v2/", headers={"Host": reg.host}))["realm"] == f"http://{reg.host}/oauth2/token"
    bare = await http.get("/v2/")
    assert challenge(bare)["realm"] == f"http://{attacked.devhost.host}/oauth2/token"
    assert challenge(bare)["service"] == default_server


# --- item 13: unknown registries answer like real ones ---------------------------------------------------------


async def test_unknown_registries_cannot_be_told_from_real_ones(
    attacked: Attacked, stores: Stores, http: httpx.AsyncClient
) -> None:
    real = await new_registry(attacked, stores)
    ghost = unique_registry_name()  # the same shape of name, never created

    def requests(name: str) -> list[tuple[str, str, dict[str, str], dict[str, str] | None]]:
        server = f"{name}.azurecr.localhost"
        garbage_jwt = "eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl"
        return [
            ("GET", "/v2/", {}, None),
            ("GET", "/v2/_catalog", {}, None),
            ("GET", "/v2/samples/app/tags/list", {}, None),
            ("HEAD", "/v2/samples/app/manifests/v1", {}, None),
            ("PUT", "/v2/samples/app/manifests/v1", {}, None),
            ("POST", "/v2/samples/app/blobs/uploads/", {}, None),
            ("GET", "/v2/", basic(name, "wrong"), None),
            ("GET", "/v2/", basic("reader", "wrong"), None),
            ("GET", "/v2/", basic(REFRESH_USER, garbage_jwt), None),
            ("GET", "/v2/samples/app/tags/list", {"Authorization": f"Bearer {garbage_jwt}"}, None),
            ("GET", "/v2/Bad..Name/tags/list", {}, None),
            ("GET", "/oauth2/token", {}, None),
            ("GET", "/oauth2/token", basic(name, "wrong"), None),
            (
                "POST",
                "/oauth2/token",
                {},
                {"grant_type": "password", "service": server, "username": "reader", "password": "wrong"},
            ),
            (
                "POST",
                "/oauth2/token",
                {},
                {"grant_type": "refresh_token", "service": server, "refresh_token": garbage_jwt},
            ),
            ("POST", "/oauth2/token", {}, {"grant_type": "client_credentials"}),
            (
                "POST",
                "/oauth2/exchange",
                {},
                {"grant_type": "access_token", "service": server, "access_token": garbage_jwt},
            ),
        ]

    async def answers(name: str) -> list[tuple[int, str, str]]:
        seen = []
        for method, path, headers, form in requests(name):
            reply = await http.request(
                method, path, headers={"Host": attacked.host(name)} | fresh_address() | headers, data=form
            )
            # The registry's own name appears where a real registry's does (service=, the realm); the
            # answers are compared with it written as NAME.
            seen.append(
                (
                    reply.status_code,
                    reply.headers.get("WWW-Authenticate", "").replace(name, "NAME"),
                    reply.text.replace(name, "NAME"),
                )
            )
        return seen

    real_answers, ghost_answers = await answers(real.name), await answers(ghost)
    assert all(status in (400, 401) for status, _, _ in real_answers), real_answers
    assert ghost_answers == real_answers
    assert await RegistryStore(stores.metadata).get_registry(ghost) is None  # and asking made nothing


# --- item 15: scopes for names no repository can have ----------------------------------------------------------


async def test_the_token_service_never_signs_invalid_repository_names(
    attacked: Attacked, stores: Stores, http: httpx.AsyncClient
) -> None:
    reg = await new_registry(attacked, stores)
    scopes = [
        "repository:team/../secret/repo:pull,push",
        "repository:team/app:pull",
        "repository:Team/App:pull",
        "repository:./x:pull",
        "repository:a//b:push",
        "repository:" + "a" * 300 + ":pull",
    ]
    params = {"service": reg.login_server, "scope": scopes}
    reply = await http.get("/oauth2/token", headers={"Host": reg.host} | basic(reg.name, reg.admin[0]), params=params)
    assert reply.status_code == 200, reply.text
    assert unverified_payload(reply.json()["access_token"])["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull"]}
    ]
    form = {"grant_type": "password", "service": reg.login_server, "username": "reader", "password": reg.token[0]}
    posted = await http.post("/oauth2/token", headers={"Host": reg.host}, data=form | {"scope": " ".join(scopes)})
    assert posted.status_code == 200, posted.text
    assert [e["name"] for e in unverified_payload(posted.json()["access_token"])["access"]] == ["team/app"]
