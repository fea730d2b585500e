"""The token service and the challenge, against a devhost: what clients see, and every bad token -> 401.

The devhost here signs with a key ring in a file the test can read (`AUTH_SIGNING_KEYS_FILE`), so the
test can forge tokens the way an attacker could not: expired, for another registry, `alg: none`, from a
rotated-out key, tampered. None of them may ever get through, nor cause a 500.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.auth.credentials import registry_identity
from services.auth.signing import KeyRing, SigningKey, new_claims, parse_ring, unverified_payload
from services.management.access import (
    assign_role,
    create_token,
    enable_admin_user,
    put_scope_map,
    update_registry,
    update_token,
)
from services.management.registries import create_registry
from tests.conftest import Devhost, running_devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, basic, unique_registry_name

ISSUER = "acr-serverless"
REFRESH_USER = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Registry:
    name: str
    host: str
    login_server: str
    admin_password: str
    token_password: str  # token "reader": scope map samples/* content/read
    keys: Path
    http: httpx.Client
    rid: str  # the registry's identity, which every token of ours carries (services/auth/credentials.py)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Host": self.host} | (extra or {})


@pytest.fixture(scope="module")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture(scope="module")
def keyed_devhost(
    stack: dict[str, str], issuer: TestIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Devhost, Path]]:
    folder = tmp_path_factory.mktemp("keys")
    keys = folder / "signing-keys.json"
    env = stack | {"ENTRA_ISSUERS": issuer.setting(), "AUTH_SIGNING_KEYS_FILE": str(keys)}
    with running_devhost(env, folder) as host:
        yield host, keys


async def _registry(devhost: Devhost, keys: Path, stores: Stores, sku: str = "Premium") -> Registry:
    name = unique_registry_name()
    doc, _ = await create_registry(stores.metadata, stores.blobs, stores.settings, name, sku)  # type: ignore[arg-type]
    admin = await enable_admin_user(stores.metadata, name)
    await put_scope_map(stores.metadata, name, "samples-read", ["repositories/samples/*/content/read"])
    _, passwords = await create_token(stores.metadata, name, "reader", "samples-read")
    port = devhost.host.rsplit(":", 1)[1]
    http = httpx.Client(base_url=devhost.url, timeout=30)
    return Registry(
        name,
        f"{name}.azurecr.localhost:{port}",
        f"{name}.azurecr.localhost",
        admin[0].value,
        passwords[0].value,
        keys,
        http,
        registry_identity(doc),
    )


@pytest.fixture(scope="module")
async def reg(keyed_devhost: tuple[Devhost, Path], stores: Stores) -> AsyncIterator[Registry]:
    registry = await _registry(*keyed_devhost, stores)
    yield registry
    registry.http.close()


@pytest.fixture(scope="module")
async def other(keyed_devhost: tuple[Devhost, Path], stores: Stores) -> AsyncIterator[Registry]:
    registry = await _registry(*keyed_devhost, stores)
    yield registry
    registry.http.close()


def challenge(reply: httpx.Response) -> dict[str, str]:
    header = reply.headers["WWW-Authenticate"]
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def token_for(reg: Registry, scope: list[str], creds: dict[str, str]) -> dict[str, object]:
    reply = reg.http.get(
        "/oauth2/token", headers=reg.headers(creds), params={"service": reg.login_server, "scope": scope}
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, object] = reply.json()
    return body


# --- the challenge -------------------------------------------------------------------------------------------


def test_unauthenticated_requests_get_the_acr_challenge(reg: Registry) -> None:
    reply = reg.http.get("/v2/samples/app/manifests/v1", headers=reg.headers())
    assert reply.status_code == 401 and reply.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert reply.headers["WWW-Authenticate"] == (
        f'Bearer realm="http://{reg.host}/oauth2/token",service="{reg.login_server}",'
        'scope="repository:samples/app:pull"'
    )
    assert challenge(reg.http.get("/v2/_catalog", headers=reg.headers()))["scope"] == "registry:catalog:*"
    assert challenge(reg.http.put("/v2/a/manifests/v1", headers=reg.headers()))["scope"] == "repository:a:push"
    assert challenge(reg.http.delete(f"/v2/a/blobs/sha256:{'0' * 64}", headers=reg.headers()))["scope"] == (
        "repository:a:delete"
    )
    base = reg.http.get("/v2/", headers=reg.headers())
    assert base.status_code == 401 and "scope" not in challenge(base)
    head = reg.http.head("/v2/samples/app/manifests/v1", headers=reg.headers())
    assert head.status_code == 401 and head.content == b"" and "WWW-Authenticate" in head.headers


# --- Basic directly on /v2/ ------------------------------------------------------------------------------------


def test_basic_auth_on_v2(reg: Registry) -> None:
    assert reg.http.get("/v2/", headers=reg.headers(basic(reg.name, reg.admin_password))).status_code == 200
    assert reg.http.get("/v2/_catalog", headers=reg.headers(basic(reg.name, reg.admin_password))).status_code == 200
    tags = reg.http.get("/v2/samples/app/tags/list", headers=reg.headers(basic("reader", reg.token_password)))
    assert tags.status_code == 404  # allowed; the repository is just not there
    denied = reg.http.put("/v2/samples/app/manifests/v1", headers=reg.headers(basic("reader", reg.token_password)))
    assert denied.status_code == 403 and denied.json()["errors"][0]["code"] == "DENIED"
    wrong = reg.http.get("/v2/", headers=reg.headers(basic(reg.name, reg.admin_password + "x")))
    assert wrong.status_code == 401 and "WWW-Authenticate" in wrong.headers
    for garbage in ("Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(), "Digest x", "Bearer"):
        assert reg.http.get("/v2/", headers=reg.headers({"Authorization": garbage})).status_code == 401


# --- /oauth2/token ------------------------------------------------------------------------------------------------


def test_token_grants_only_what_the_identity_may(reg: Registry) -> None:
    body = token_for(
        reg,
        ["repository:samples/app:pull,push", "repository:other:pull", "registry:catalog:*"],
        basic("reader", reg.token_password),
    )
    assert body["token"] == body["access_token"] and body["expires_in"] == 75 * 60
    claims = unverified_payload(str(body["access_token"]))
    assert claims["access"] == [{"type": "repository", "name": "samples/app", "actions": ["pull"]}]
    assert claims["aud"] == reg.login_server and claims["exp"] - claims["iat"] == 75 * 60
    admin = token_for(reg, ["repository:x:pull,push,delete", "registry:catalog:*"], basic(reg.name, reg.admin_password))
    assert unverified_payload(str(admin["access_token"]))["access"] == [
        {"type": "repository", "name": "x", "actions": ["pull", "push", "delete"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    bearer = {"Authorization": f"Bearer {admin['access_token']}"}
    assert reg.http.get("/v2/_catalog", headers=reg.headers(bearer)).status_code == 200
    lacking = reg.http.get("/v2/y/tags/list", headers=reg.headers(bearer))
    assert lacking.status_code == 401 and challenge(lacking)["error"] == "insufficient_scope"


def test_soft_delete_scopes_are_granted_by_role_and_bound_to_their_registry(reg: Registry, other: Registry) -> None:
    """`/acr/v1/_deleted/...` (soft delete): the challenge names the scope `az acr` asks for; the admin's
    token carries it and works here only; a scope-map token gets none of it."""
    digest = f"sha256:{'0' * 64}"
    listing = reg.http.get("/acr/v1/_deleted/samples/app/_manifests", headers=reg.headers())
    assert challenge(listing)["scope"] == "repository:samples/app:deleted_read"
    restore = reg.http.post(f"/acr/v1/_deleted/samples/app/_manifests/{digest}", headers=reg.headers())
    assert challenge(restore)["scope"] == "repository:samples/app:deleted_restore"
    catalog = reg.http.get("/acr/v1/_deleted/_catalog", headers=reg.headers())
    assert challenge(catalog)["scope"] == "registry:deleted_catalog:*"
    scopes = ["repository:samples/app:deleted_read,deleted_restore", "registry:deleted_catalog:*"]
    admin = token_for(reg, scopes, basic(reg.name, reg.admin_password))
    assert unverified_payload(str(admin["access_token"]))["access"] == [
        {"type": "repository", "name": "samples/app", "actions": ["deleted_read", "deleted_restore"]},
        {"type": "registry", "name": "deleted_catalog", "actions": ["*"]},
    ]
    bearer = {"Authorization": f"Bearer {admin['access_token']}"}
    assert reg.http.get("/acr/v1/_deleted/_catalog", headers=reg.headers(bearer)).json() == {"repositories": []}
    assert reg.http.get("/acr/v1/_deleted/samples/app/_tags", headers=reg.headers(bearer)).status_code == 404
    assert (
        reg.http.post(f"/acr/v1/_deleted/samples/app/_manifests/{digest}", headers=reg.headers(bearer)).status_code
        == 404
    )
    # not at another registry, whatever it grants; nor another registry's admin here
    elsewhere = other.http.get("/acr/v1/_deleted/_catalog", headers=other.headers(bearer))
    assert elsewhere.status_code == 401
    stranger = basic(other.name, other.admin_password)
    assert reg.http.get("/acr/v1/_deleted/samples/app/_tags", headers=reg.headers(stranger)).status_code == 401
    # a scope map names no soft-delete action: its token carries none
    reader = token_for(reg, scopes, basic("reader", reg.token_password))
    assert unverified_payload(str(reader["access_token"]))["access"] == []


def test_password_and_refresh_grants(reg: Registry) -> None:
    form = {
        "grant_type": "password",
        "service": reg.login_server,
        "username": reg.name,
        "password": reg.admin_password,
        "access_type": "offline",
        "client_id": "docker",
        "scope": "repository:a:pull",
    }
    reply = reg.http.post("/oauth2/token", headers=reg.headers(), data=form)
    assert reply.status_code == 200, reply.text
    refresh = reply.json()["refresh_token"]
    payload = refresh.split(".")[1]
    assert "-" not in payload and "_" not in payload and len(payload) % 4 == 0  # the Azure SDK's decoder
    claims = unverified_payload(refresh)
    assert claims["grant_type"] == "refresh_token" and claims["exp"] - claims["iat"] == 3 * 3600
    again = reg.http.post(
        "/oauth2/token",
        headers=reg.headers(),
        content=f"grant_type=refresh_token&service={reg.login_server}&refresh_token={refresh}"
        "&scope=repository:a:pull&scope=repository:b:push",
        # a raw body: two `scope` fields, as the Azure SDK and docker send them
    )
    assert again.status_code == 200, again.text
    assert [e["name"] for e in unverified_payload(again.json()["access_token"])["access"]] == ["a", "b"]
    # ACR's convention: username 00000000-... with a refresh token as password (docker login).
    body = token_for(reg, ["repository:c:pull"], basic(REFRESH_USER, refresh))
    assert unverified_payload(str(body["access_token"]))["access"][0]["name"] == "c"
    assert reg.http.get("/v2/", headers=reg.headers(basic(REFRESH_USER, refresh))).status_code == 200
    # An access token is not a refresh token, nor the other way round.
    bad = {"grant_type": "refresh_token", "service": reg.login_server, "refresh_token": again.json()["access_token"]}
    assert reg.http.post("/oauth2/token", headers=reg.headers(), data=bad).status_code == 401
    bearer = {"Authorization": f"Bearer {refresh}"}
    assert reg.http.get("/v2/a/tags/list", headers=reg.headers(bearer)).status_code == 401


def test_token_endpoint_refusals(reg: Registry, other: Registry) -> None:
    def get(creds: dict[str, str], **params: str) -> httpx.Response:
        return reg.http.get("/oauth2/token", headers=reg.headers(creds), params={"scope": "repository:a:pull"} | params)

    assert get(basic(reg.name, "wrong")).status_code == 401
    assert get({}).status_code == 401  # anonymous pull is off
    assert get(basic(reg.name, reg.admin_password), service=other.login_server).status_code == 401
    assert get(basic(other.name, other.admin_password)).status_code == 401  # another registry's admin
    unsupported = reg.http.post("/oauth2/token", headers=reg.headers(), data={"grant_type": "client_credentials"})
    assert unsupported.status_code == 400
    assert reg.http.post("/oauth2/token", headers=reg.headers(), content=b"\xff\x00=%%").status_code in (400, 401)


async def test_disabled_tokens_and_expired_passwords_get_nothing(reg: Registry, stores: Stores) -> None:
    _, passwords = await create_token(stores.metadata, reg.name, "soon-off", "_repositories_pull")
    await update_token(stores.metadata, reg.name, "soon-off", status="disabled")
    creds = basic("soon-off", passwords[0].value)
    assert reg.http.get("/oauth2/token", headers=reg.headers(creds)).status_code == 401
    assert reg.http.get("/v2/", headers=reg.headers(creds)).status_code == 401
    _, expired = await create_token(stores.metadata, reg.name, "expired", "_repositories_pull", expiry_days=-1)
    assert reg.http.get("/v2/", headers=reg.headers(basic("expired", expired[0].value))).status_code == 401


async def test_anonymous_pull(keyed_devhost: tuple[Devhost, Path], stores: Stores) -> None:
    devhost, keys = keyed_devhost
    basic_tier = await _registry(devhost, keys, stores, "Basic")
    with pytest.raises(ValueError, match="Standard or Premium"):
        await update_registry(stores.metadata, basic_tier.name, anonymous_pull=True)
    standard = await _registry(devhost, keys, stores, "Standard")
    await update_registry(stores.metadata, standard.name, anonymous_pull=True)
    # The ping still challenges (clients decide there whether to use token auth at all); anonymous
    # clients then get an anonymous token.
    ping = standard.http.get("/v2/", headers=standard.headers())
    assert ping.status_code == 401 and "scope" not in challenge(ping)
    anonymous = token_for(standard, [], {})
    ping = standard.http.get("/v2/", headers=standard.headers({"Authorization": f"Bearer {anonymous['token']}"}))
    assert ping.status_code == 200
    assert standard.http.get("/v2/any/tags/list", headers=standard.headers()).status_code == 404
    push = standard.http.post("/v2/any/blobs/uploads/", headers=standard.headers())
    assert push.status_code == 401 and challenge(push)["scope"] == "repository:any:push"
    body = token_for(standard, ["repository:any:pull,push", "registry:catalog:*"], {})
    assert unverified_payload(str(body["access_token"]))["access"] == [
        {"type": "repository", "name": "any", "actions": ["pull"]}
    ]
    basic_tier.http.close()
    standard.http.close()


# --- bad tokens: always 401, never a 500, never access ----------------------------------------------------------


def _forge(reg: Registry, key: SigningKey | None = None, **overrides: object) -> str:
    ring_keys = parse_ring(reg.keys.read_text())
    signer = KeyRing([key or ring_keys[0]])
    claims = (
        new_claims(
            issuer=ISSUER,
            audience=reg.login_server,
            subject=reg.name,
            lifetime=600,
            grant_type="access_token",
            idt="admin",
            access=[{"type": "repository", "name": "x", "actions": ["pull", "push", "delete"]}],
            rid=reg.rid,
        )
        | overrides
    )
    return signer.sign(claims)


def test_bad_access_tokens_are_401(reg: Registry, other: Registry) -> None:
    good = _forge(reg)
    assert reg.http.get("/v2/x/tags/list", headers=reg.headers({"Authorization": f"Bearer {good}"})).status_code == 404
    now = int(time.time())
    header, payload, signature = good.split(".")
    none_header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    bad = {
        "expired": _forge(reg, exp=now - 3600, iat=now - 7200, nbf=now - 7200),
        "not yet valid": _forge(reg, nbf=now + 3600),
        "other registry": _forge(reg, aud=other.login_server),
        "other issuer": _forge(reg, iss="someone-else"),
        "rotated-out key": _forge(reg, key=SigningKey.generate()),
        "alg none": f"{none_header}.{payload}.",
        "tampered payload": f"{header}.{base64.urlsafe_b64encode(b'{}').rstrip(b'=').decode()}.{signature}",
        "tampered signature": f"{header}.{payload}.{flipped}",
        "refresh token": _forge(reg, grant_type="refresh_token"),
        "no registry identity": _forge(reg, rid=None),
        "another registry's identity (deleted, re-created)": _forge(reg, rid=other.rid),
        "garbage": "not-a-jwt",
    }
    for what, token in bad.items():
        reply = reg.http.get("/v2/x/tags/list", headers=reg.headers({"Authorization": f"Bearer {token}"}))
        assert reply.status_code == 401, f"{what}: {reply.status_code} {reply.text}"
        assert challenge(reply)["error"] == "invalid_token", what
    # A token for this registry is no good at another one (audience), whatever it grants.
    at_other = other.http.get("/v2/x/tags/list", headers=other.headers({"Authorization": f"Bearer {good}"}))
    assert at_other.status_code == 401


# --- /oauth2/exchange (Entra ID) -------------------------------------------------------------------------------


async def test_exchange_verifies_entra_tokens(reg: Registry, stores: Stores, issuer: TestIssuer) -> None:
    await assign_role(stores.metadata, reg.name, "principal-1", "AcrPull", tenant=issuer.tenant)

    def exchange(token: str, **extra: str) -> httpx.Response:
        form = {"grant_type": "access_token", "service": reg.login_server, "access_token": token} | extra
        return reg.http.post("/oauth2/exchange", headers=reg.headers(), data=form)

    ok = exchange(issuer.token("principal-1"), tenant=issuer.tenant)
    assert ok.status_code == 200, ok.text
    refresh = ok.json()["refresh_token"]
    body = token_for(reg, ["repository:a:pull,push"], basic(REFRESH_USER, refresh))
    assert unverified_payload(str(body["access_token"]))["access"] == [
        {"type": "repository", "name": "a", "actions": ["pull"]}
    ]
    stranger = TestIssuer()
    refusals = {
        "expired": issuer.token("principal-1", lifetime=-600),
        "wrong audience": issuer.token("principal-1", audience="https://vault.azure.net"),
        "untrusted issuer": stranger.token("principal-1"),
        "wrong key": issuer.token("principal-1", key=stranger.key),
        "no oid": issuer.token("", oid="", sub=""),
        "garbage": "abc",
    }
    for what, token in refusals.items():
        reply = exchange(token)
        assert reply.status_code == 401, f"{what}: {reply.status_code} {reply.text}"
    assert exchange(issuer.token("principal-1"), tenant="another-tenant").status_code == 401
    assert reg.http.post("/oauth2/exchange", headers=reg.headers(), data={"grant_type": "password"}).status_code == 400
