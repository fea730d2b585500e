"""The authorization matrix: every route of `/v2/`, `/acr/v1/` and `/oauth2/` by every kind of identity, from ONE
table.

Each identity works the way real clients do: the request without credentials draws a `401` Bearer
challenge; the client asks `/oauth2/token` for the challenge's scope with its credentials (Basic for the
admin user and tokens; an ACR refresh token, got from `/oauth2/exchange` with an Entra ID token, for role
assignments; none for anonymous) and retries with the access token. `Y` means the route let it through
(any status but 401/403, e.g. a 404 for a manifest that is not there), `.` that it answered 401 or 403.

Repositories: A = samples/team/app, B = other/repo. Identities (columns):

    anon        anonymous; the registry has anonymous pull off
    anonp       anonymous on a Standard registry with anonymous pull on
    admin       the admin user
    tpull tpush tadmin   tokens with the built-in scope maps _repositories_pull / _push / _admin
    tcustom     a token whose scope map says: samples/* content/read, samples/team/* content/write,
                samples/team/app content/delete (wildcards add up)
    toff        a disabled token (its password is right)
    acrpull ... lister   Entra principals with one role each; reporeader: Repository Reader with
                repositories prefix "samples/", repowriter: Writer with name equals A, repocontrib:
                Contributor with prefix "samples/team/"
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from services.management.access import assign_role, create_token, enable_admin_user, put_scope_map, update_registry
from services.management.registries import create_registry
from tests.conftest import Devhost, running_devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, unique_registry_name

A, B = "samples/team/app", "other/repo"
NO_DIGEST = "sha256:" + "0" * 64
SESSION = str(uuid.uuid4())
METRICS_TOKEN = "metrics-" + uuid.uuid4().hex  # GET /metrics's own bearer token (services/platform/metrics_endpoint.py)

# Column codes of the table: an anon, ap anonp, ad admin, t1 tpull, t2 tpush, t3 tadmin, tc tcustom,
# t0 toff, pl acrpull, ps acrpush, dl acrdelete, sg signer, qr qreader, qw qwriter, ow owner,
# co contributor, rd reader, rr reporeader, rw repowriter, rc repocontrib, ls lister.
COLUMNS = "an ap ad t1 t2 t3 tc t0 pl ps dl sg qr qw ow co rd rr rw rc ls".split()  # noqa: SIM905

# fmt: off
MATRIX = """
                                      an ap ad t1 t2 t3 tc t0 pl ps dl sg qr qw ow co rd rr rw rc ls
GET    /v2/                           .  Y  Y  Y  Y  Y  Y  .  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y
GET    /v2/_catalog                   .  .  Y  .  .  .  .  .  Y  Y  .  .  .  .  Y  Y  Y  .  .  .  Y
GET    /v2/A/tags/list                .  Y  Y  Y  Y  Y  Y  .  Y  Y  .  .  Y  Y  Y  Y  Y  Y  Y  Y  .
GET    /v2/A/manifests/latest         .  Y  Y  Y  Y  Y  Y  .  Y  Y  .  .  Y  Y  Y  Y  Y  Y  Y  Y  .
HEAD   /v2/A/manifests/latest         .  Y  Y  Y  Y  Y  Y  .  Y  Y  .  .  Y  Y  Y  Y  Y  Y  Y  Y  .
PUT    /v2/A/manifests/latest         .  .  Y  .  Y  Y  Y  .  .  Y  .  .  .  .  Y  Y  .  .  Y  Y  .
DELETE /v2/A/manifests/DIGEST         .  .  Y  .  .  Y  Y  .  .  .  Y  .  .  .  Y  Y  .  .  .  Y  .
GET    /v2/A/blobs/DIGEST             .  Y  Y  Y  Y  Y  Y  .  Y  Y  .  .  Y  Y  Y  Y  Y  Y  Y  Y  .
HEAD   /v2/A/blobs/DIGEST             .  Y  Y  Y  Y  Y  Y  .  Y  Y  .  .  Y  Y  Y  Y  Y  Y  Y  Y  .
DELETE /v2/A/blobs/DIGEST             .  .  Y  .  .  Y  Y  .  .  .  Y  .  .  .  Y  Y  .  .  .  Y  .
POST   /v2/A/blobs/uploads/           .  .  Y  .  Y  Y  Y  .  .  Y  .  .  .  .  Y  Y  .  .  Y  Y  .
GET    /v2/A/blobs/uploads/SESSION    .  .  Y  .  Y  Y  Y  .  .  Y  .  .  .  .  Y  Y  .  .  Y  Y  .
PATCH  /v2/A/blobs/uploads/SESSION    .  .  Y  .  Y  Y  Y  .  .  Y  .  .  .  .  Y  Y  .  .  Y  Y  .
PUT    /v2/A/blobs/uploads/SESSION    .  .  Y  .  Y  Y  Y  .  .  Y  .  .  .  .  Y  Y  .  .  Y  Y  .
DELETE /v2/A/blobs/uploads/SESSION    .  .  Y  .  Y  Y  Y  .  .  Y  .  .  .  .  Y  Y  .  .  Y  Y  .
GET    /v2/A/referrers/DIGEST         .  Y  Y  Y  Y  Y  Y  .  Y  Y  .  .  Y  Y  Y  Y  Y  Y  Y  Y  .
GET    /v2/B/tags/list                .  Y  Y  Y  Y  Y  .  .  Y  Y  .  .  Y  Y  Y  Y  Y  .  .  .  .
GET    /v2/B/manifests/latest         .  Y  Y  Y  Y  Y  .  .  Y  Y  .  .  Y  Y  Y  Y  Y  .  .  .  .
HEAD   /v2/B/manifests/latest         .  Y  Y  Y  Y  Y  .  .  Y  Y  .  .  Y  Y  Y  Y  Y  .  .  .  .
PUT    /v2/B/manifests/latest         .  .  Y  .  Y  Y  .  .  .  Y  .  .  .  .  Y  Y  .  .  .  .  .
DELETE /v2/B/manifests/DIGEST         .  .  Y  .  .  Y  .  .  .  .  Y  .  .  .  Y  Y  .  .  .  .  .
GET    /v2/B/blobs/DIGEST             .  Y  Y  Y  Y  Y  .  .  Y  Y  .  .  Y  Y  Y  Y  Y  .  .  .  .
HEAD   /v2/B/blobs/DIGEST             .  Y  Y  Y  Y  Y  .  .  Y  Y  .  .  Y  Y  Y  Y  Y  .  .  .  .
DELETE /v2/B/blobs/DIGEST             .  .  Y  .  .  Y  .  .  .  .  Y  .  .  .  Y  Y  .  .  .  .  .
POST   /v2/B/blobs/uploads/           .  .  Y  .  Y  Y  .  .  .  Y  .  .  .  .  Y  Y  .  .  .  .  .
GET    /v2/B/blobs/uploads/SESSION    .  .  Y  .  Y  Y  .  .  .  Y  .  .  .  .  Y  Y  .  .  .  .  .
PATCH  /v2/B/blobs/uploads/SESSION    .  .  Y  .  Y  Y  .  .  .  Y  .  .  .  .  Y  Y  .  .  .  .  .
PUT    /v2/B/blobs/uploads/SESSION    .  .  Y  .  Y  Y  .  .  .  Y  .  .  .  .  Y  Y  .  .  .  .  .
DELETE /v2/B/blobs/uploads/SESSION    .  .  Y  .  Y  Y  .  .  .  Y  .  .  .  .  Y  Y  .  .  .  .  .
GET    /v2/B/referrers/DIGEST         .  Y  Y  Y  Y  Y  .  .  Y  Y  .  .  Y  Y  Y  Y  Y  .  .  .  .
GET    /acr/v1/_catalog               .  .  Y  .  .  .  .  .  Y  Y  .  .  .  .  Y  Y  Y  .  .  .  Y
GET    /acr/v1/A                      .  .  Y  .  .  Y  .  .  Y  Y  .  .  .  Y  Y  Y  Y  Y  Y  Y  .
PATCH  /acr/v1/A                      .  .  Y  .  .  Y  .  .  .  Y  .  .  .  Y  Y  Y  .  .  Y  Y  .
DELETE /acr/v1/A                      .  .  Y  .  .  Y  Y  .  .  .  Y  .  .  .  Y  Y  .  .  .  Y  .
GET    /acr/v1/A/_tags                .  .  Y  .  .  Y  .  .  Y  Y  .  .  .  Y  Y  Y  Y  Y  Y  Y  .
GET    /acr/v1/A/_tags/latest         .  .  Y  .  .  Y  .  .  Y  Y  .  .  .  Y  Y  Y  Y  Y  Y  Y  .
PATCH  /acr/v1/A/_tags/latest         .  .  Y  .  .  Y  .  .  .  Y  .  .  .  Y  Y  Y  .  .  Y  Y  .
DELETE /acr/v1/A/_tags/latest         .  .  Y  .  .  Y  Y  .  .  .  Y  .  .  .  Y  Y  .  .  .  Y  .
GET    /acr/v1/A/_manifests           .  .  Y  .  .  Y  .  .  Y  Y  .  .  .  Y  Y  Y  Y  Y  Y  Y  .
GET    /acr/v1/A/_manifests/DIGEST    .  .  Y  .  .  Y  .  .  Y  Y  .  .  .  Y  Y  Y  Y  Y  Y  Y  .
PATCH  /acr/v1/A/_manifests/DIGEST    .  .  Y  .  .  Y  .  .  .  Y  .  .  .  Y  Y  Y  .  .  Y  Y  .
POST   /acr/v1/A/_manifests/DIGEST/_scan .  .  Y  .  .  Y  .  .  .  Y  .  .  .  Y  Y  Y  .  .  Y  Y  .
DELETE /acr/v1/A/_manifests/DIGEST    .  .  Y  .  .  Y  Y  .  .  .  Y  .  .  .  Y  Y  .  .  .  Y  .
GET    /acr/v1/B/_tags                .  .  Y  .  .  Y  .  .  Y  Y  .  .  .  Y  Y  Y  Y  .  .  .  .
PATCH  /acr/v1/B                      .  .  Y  .  .  Y  .  .  .  Y  .  .  .  Y  Y  Y  .  .  .  .  .
POST   /acr/v1/B/_manifests/DIGEST/_scan .  .  Y  .  .  Y  .  .  .  Y  .  .  .  Y  Y  Y  .  .  .  .  .
DELETE /acr/v1/B/_manifests/DIGEST    .  .  Y  .  .  Y  .  .  .  .  Y  .  .  .  Y  Y  .  .  .  .  .
GET    /acr/v1/_deleted/_catalog      .  .  Y  .  .  .  .  .  .  .  .  .  .  .  Y  Y  Y  .  .  .  .
GET    /acr/v1/_deleted/A/_manifests  .  .  Y  .  .  .  .  .  .  .  .  .  .  .  Y  Y  Y  .  .  Y  .
GET    /acr/v1/_deleted/A/_tags       .  .  Y  .  .  .  .  .  .  .  .  .  .  .  Y  Y  Y  .  .  Y  .
POST   /acr/v1/_deleted/A/_manifests/DIGEST .  .  Y  .  .  .  .  .  .  .  .  .  .  .  Y  Y  .  .  .  Y  .
GET    /acr/v1/_deleted/B/_tags       .  .  Y  .  .  .  .  .  .  .  .  .  .  .  Y  Y  Y  .  .  .  .
POST   /acr/v1/_deleted/B/_manifests/DIGEST .  .  Y  .  .  .  .  .  .  .  .  .  .  .  Y  Y  .  .  .  .  .
GET    /oauth2/token                  .  Y  Y  Y  Y  Y  Y  .  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y
POST   /oauth2/token                  .  Y  Y  Y  Y  Y  Y  .  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y
POST   /oauth2/exchange               .  .  .  .  .  .  .  .  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y  Y
"""
# fmt: on

ROLES = {
    "pl": ("AcrPull", None),
    "ps": ("AcrPush", None),
    "dl": ("AcrDelete", None),
    "sg": ("AcrImageSigner", None),
    "qr": ("AcrQuarantineReader", None),
    "qw": ("AcrQuarantineWriter", None),
    "ow": ("Owner", None),
    "co": ("Contributor", None),
    "rd": ("Reader", None),
    "rr": ("Container Registry Repository Reader", ("prefix", ["samples/"])),
    "rw": ("Container Registry Repository Writer", ("equals", [A])),
    "rc": ("Container Registry Repository Contributor", ("prefix", ["samples/team/"])),
    "ls": ("Container Registry Repository Catalog Lister", None),
}


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    expected: dict[str, bool]


def parse_matrix(text: str) -> list[Row]:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    header = lines[0].split()
    assert header == COLUMNS, "the matrix header must list COLUMNS in order"
    rows = []
    for line in lines[1:]:
        method, path, *cells = line.split()
        assert len(cells) == len(COLUMNS), f"row {method} {path} has {len(cells)} cells"
        assert set(cells) <= {"Y", "."}, line
        path = re.sub(r"/A(?=/|$)", f"/{A}", re.sub(r"/B(?=/|$)", f"/{B}", path))
        path = path.replace("DIGEST", NO_DIGEST).replace("SESSION", SESSION)
        rows.append(Row(method, path, {c: v == "Y" for c, v in zip(COLUMNS, cells, strict=True)}))
    return rows


ROWS = parse_matrix(MATRIX)


@dataclass
class Identity:
    host: str  # the Host header: which registry
    login_server: str
    username: str = ""
    password: str = ""
    entra_token: str = ""
    refresh_token: str = ""
    tokens: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class World:
    devhost: Devhost
    identities: dict[str, Identity]


@pytest.fixture(scope="module")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture(scope="module")
def auth_devhost(
    stack: dict[str, str], issuer: TestIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Devhost]:
    """A devhost that trusts the test's Entra issuer."""
    env = stack | {"ENTRA_ISSUERS": issuer.setting(), "METRICS_ENDPOINT": "true", "METRICS_TOKEN": METRICS_TOKEN}
    with running_devhost(env, tmp_path_factory.mktemp("auth")) as host:
        yield host


@pytest.fixture(scope="module")
async def world(auth_devhost: Devhost, stores: Stores, issuer: TestIssuer) -> AsyncIterator[World]:
    port = auth_devhost.host.rsplit(":", 1)[1]
    main, anon = unique_registry_name(), unique_registry_name()
    for name, sku in ((main, "Premium"), (anon, "Standard")):
        await create_registry(stores.metadata, stores.blobs, stores.settings, name, sku)
    await update_registry(stores.metadata, anon, anonymous_pull=True)
    host = f"{main}.azurecr.localhost:{port}"
    login_server = f"{main}.azurecr.localhost"
    identities = {
        "an": Identity(host, login_server),
        "ap": Identity(f"{anon}.azurecr.localhost:{port}", f"{anon}.azurecr.localhost"),
    }
    admin = await enable_admin_user(stores.metadata, main)
    identities["ad"] = Identity(host, login_server, main, admin[0].value)
    await put_scope_map(
        stores.metadata,
        main,
        "custom-map",
        [
            "repositories/samples/*/content/read",
            "repositories/samples/team/*/content/write",
            f"repositories/{A}/content/delete",
        ],
    )
    for column, scope_map in (
        ("t1", "_repositories_pull"),
        ("t2", "_repositories_push"),
        ("t3", "_repositories_admin"),
        ("tc", "custom-map"),
        ("t0", "_repositories_admin"),
    ):
        status = "disabled" if column == "t0" else "enabled"
        _, passwords = await create_token(stores.metadata, main, f"token-{column}", scope_map, status=status)
        identities[column] = Identity(host, login_server, f"token-{column}", passwords[1].value)
    for column, (role, condition) in ROLES.items():
        principal = str(uuid.uuid4())
        await assign_role(stores.metadata, main, principal, role, tenant=issuer.tenant, condition=condition)  # type: ignore[arg-type]
        identities[column] = Identity(host, login_server, entra_token=issuer.token(principal))
    yield World(auth_devhost, identities)


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _challenge_params(header: str) -> dict[str, str]:
    assert header.startswith("Bearer "), header
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def _refresh_token(http: httpx.Client, who: Identity) -> str:
    if not who.refresh_token:
        reply = http.post(
            "/oauth2/exchange",
            headers={"Host": who.host},
            data={"grant_type": "access_token", "service": who.login_server, "access_token": who.entra_token},
        )
        assert reply.status_code == 200, reply.text
        who.refresh_token = reply.json()["refresh_token"]
    return who.refresh_token


def _access_token(http: httpx.Client, who: Identity, scope: str) -> str | None:
    """What a client does on a challenge: ask the token service for the scope with its credentials."""
    if scope in who.tokens:
        return who.tokens[scope]
    params = {"service": who.login_server, **({"scope": scope} if scope else {})}
    if who.entra_token:
        data = {"grant_type": "refresh_token", "refresh_token": _refresh_token(http, who), **params}
        reply = http.post("/oauth2/token", headers={"Host": who.host}, data=data)
    else:
        headers = {"Host": who.host} | ({"Authorization": _basic(who.username, who.password)} if who.username else {})
        reply = http.get("/oauth2/token", headers=headers, params=params)
    token = reply.json()["access_token"] if reply.status_code == 200 else None
    assert reply.status_code in (200, 401), reply.text
    who.tokens[scope] = token
    return token


def _send(http: httpx.Client, who: Identity, row: Row, authorization: str | None) -> httpx.Response:
    headers = {"Host": who.host} | ({"Authorization": authorization} if authorization else {})
    content = b"{}" if row.method in ("PUT", "PATCH") else None
    if row.path.endswith("/manifests/latest") and row.method == "PUT":
        headers["Content-Type"] = "application/vnd.oci.image.manifest.v1+json"
    params = {"digest": NO_DIGEST} if row.method == "PUT" and "/uploads/" in row.path else None
    return http.request(row.method, row.path, headers=headers, content=content, params=params)


def _oauth(http: httpx.Client, who: Identity, row: Row) -> httpx.Response:
    host = {"Host": who.host}
    if row.path == "/oauth2/exchange":
        token = who.entra_token or who.password
        data = {"grant_type": "access_token", "service": who.login_server, "access_token": token}
        return http.post(row.path, headers=host, data=data)
    scope = {"scope": f"repository:{A}:pull"}
    if who.entra_token:  # ACR's convention: this username with a refresh token as the password
        username, password = "00000000-0000-0000-0000-000000000000", _refresh_token(http, who)
    else:
        username, password = who.username, who.password
    if row.method == "GET":
        auth = {"Authorization": _basic(username, password)} if username else {}
        return http.get(row.path, headers=host | auth, params={"service": who.login_server} | scope)
    form = {"grant_type": "password", "service": who.login_server, "username": username, "password": password}
    return http.post(row.path, headers=host, data=form | scope)


def attempt(http: httpx.Client, who: Identity, row: Row) -> httpx.Response:
    if row.path.startswith("/oauth2/"):
        return _oauth(http, who, row)
    first = _send(http, who, row, None)
    if first.status_code != 401:
        return first
    params = _challenge_params(first.headers["WWW-Authenticate"])
    assert params["realm"] == f"http://{who.host}/oauth2/token" and params["service"] == who.login_server
    token = _access_token(http, who, params.get("scope", ""))
    return first if token is None else _send(http, who, row, f"Bearer {token}")


@pytest.mark.parametrize("column", COLUMNS)
def test_metrics_endpoint_admits_no_registry_identity(world: World, column: str) -> None:
    """GET /metrics is no registry's route: whoever a caller is in a registry (its admin, a token, an Entra
    role, anonymous; with that registry's Host or another's), only METRICS_TOKEN reads the metrics."""
    who = world.identities[column]
    other_host = world.identities["ap"].host if column != "ap" else world.identities["an"].host
    with httpx.Client(base_url=world.devhost.url, timeout=30) as http:
        access = _access_token(http, who, f"repository:{A}:pull")
        credentials = [
            None,
            f"Bearer {access}" if access else None,
            _basic(who.username, who.password) if who.username else None,
            f"Bearer {who.entra_token}" if who.entra_token else None,
            f"Bearer {_refresh_token(http, who)}" if who.entra_token else None,
        ]
        for host in (who.host, other_host):
            for authorization in credentials:
                headers = {"Host": host} | ({"Authorization": authorization} if authorization else {})
                response = http.get("/metrics", headers=headers)
                assert response.status_code == 401, (host, authorization, response.text)
                assert "totalpullcount" not in response.text
            scraped = http.get("/metrics", headers={"Host": host, "Authorization": f"Bearer {METRICS_TOKEN}"})
            assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("column", COLUMNS)
def test_authorization_matrix(world: World, column: str) -> None:
    who = world.identities[column]
    wrong: list[str] = []
    with httpx.Client(base_url=world.devhost.url, timeout=30) as http:
        for row in ROWS:
            reply = attempt(http, who, row)
            assert reply.status_code < 500, f"{row.method} {row.path}: {reply.status_code} {reply.text}"
            allowed = reply.status_code not in (401, 403)
            if allowed != row.expected[column]:
                wrong.append(f"{row.method} {row.path}: {reply.status_code} {reply.text[:200]}")
    assert not wrong, f"{column}: {len(wrong)} cells differ:\n" + "\n".join(wrong)


def test_matrix_size() -> None:
    assert len(ROWS) * len(COLUMNS) == 56 * 21


# --- the management API (ARM-shaped, /subscriptions/...) --------------------------------------------------
# Only Entra tokens for the management endpoint count there; data-plane credentials (admin user, tokens) are
# refused as unauthenticated. `401`/`403` are the exact answers expected, `Y` that the call went through.
# Extra column xo: the Owner of ANOTHER registry (same tenant and issuer), nothing on this one.
MANAGEMENT_COLUMNS = "an ad t3 pl ps ow co rd rc xo".split()  # noqa: SIM905

# fmt: off
MANAGEMENT_MATRIX = """
                                         an  ad  t3  pl  ps  ow  co  rd  rc  xo
GET    webhooks                          401 401 401 403 403 Y   Y   Y   403 403
GET    webhooks/matrixhook               401 401 401 403 403 Y   Y   Y   403 403
PUT    webhooks/matrixhook               401 401 401 403 403 Y   Y   403 403 403
PATCH  webhooks/matrixhook               401 401 401 403 403 Y   Y   403 403 403
POST   webhooks/matrixhook/ping          401 401 401 403 403 Y   Y   403 403 403
POST   webhooks/matrixhook/listEvents    401 401 401 403 403 Y   Y   403 403 403
POST   webhooks/matrixhook/getCallbackConfig 401 401 401 403 403 Y Y  403 403 403
DELETE webhooks/nosuchhook               401 401 401 403 403 Y   Y   403 403 403
GET    .                                 401 401 401 403 403 Y   Y   Y   403 403
PATCH  .                                 401 401 401 403 403 Y   Y   403 403 403
GET    listUsages                        401 401 401 403 403 Y   Y   Y   403 403
POST   listCredentials                   401 401 401 403 403 Y   Y   403 403 403
GET    scopeMaps                         401 401 401 403 403 Y   Y   Y   403 403
PUT    scopeMaps/matrixmap               401 401 401 403 403 Y   Y   403 403 403
GET    tokens                            401 401 401 403 403 Y   Y   Y   403 403
PATCH  tokens/matrixtok                  401 401 401 403 403 Y   Y   403 403 403
POST   generateCredentials               401 401 401 403 403 Y   Y   403 403 403
DELETE tokens/nosuchtoken                401 401 401 403 403 Y   Y   403 403 403
POST   collectGarbage                    401 401 401 403 403 Y   Y   403 403 403
POST   recountUsage                      401 401 401 403 403 Y   Y   403 403 403
"""
# fmt: on

MATRIX_HOOK = {"serviceUri": "http://127.0.0.1:9/matrix", "actions": ["push"], "customHeaders": {"X-Key": "k"}}
MATRIX_MAP = {"properties": {"actions": ["repositories/matrix/content/read"]}}


def _management_rows() -> list[tuple[str, str, dict[str, str]]]:
    lines = [line for line in MANAGEMENT_MATRIX.strip().splitlines() if line.strip()]
    assert lines[0].split() == MANAGEMENT_COLUMNS
    rows = []
    for line in lines[1:]:
        method, path, *cells = line.split()
        assert len(cells) == len(MANAGEMENT_COLUMNS) and set(cells) <= {"Y", "401", "403"}, line
        rows.append((method, path, dict(zip(MANAGEMENT_COLUMNS, cells, strict=True))))
    return rows


@pytest.fixture(scope="module")
async def outsider(world: World, stores: Stores, issuer: TestIssuer) -> Identity:
    """The Owner of the other registry of the world (the anonymous-pull one)."""
    other = world.identities["ap"].login_server.split(".", 1)[0]
    principal = str(uuid.uuid4())
    await assign_role(stores.metadata, other, principal, "Owner", tenant=issuer.tenant)
    return Identity(
        world.identities["an"].host, world.identities["an"].login_server, entra_token=issuer.token(principal)
    )


def _management_authorization(who: Identity) -> dict[str, str]:
    if who.entra_token:
        return {"Authorization": f"Bearer {who.entra_token}"}
    if who.username:
        return {"Authorization": _basic(who.username, who.password)}
    return {}


@pytest.mark.parametrize("column", MANAGEMENT_COLUMNS)
def test_management_authorization_matrix(world: World, outsider: Identity, column: str) -> None:
    who = outsider if column == "xo" else world.identities[column]
    registry = world.identities["an"].login_server.split(".", 1)[0]
    base = (
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local-rg/providers/"
        f"Microsoft.ContainerRegistry/registries/{registry}/"
    )
    wrong: list[str] = []
    with httpx.Client(base_url=world.devhost.url, timeout=30) as http:
        made = http.put(
            f"{base}webhooks/matrixhook?api-version=2025-11-01",
            json={"location": "westeurope", "properties": MATRIX_HOOK},
            headers=_management_authorization(world.identities["ow"]),
        )
        assert made.status_code in (200, 201), made.text
        owner = _management_authorization(world.identities["ow"])
        made_map = http.put(f"{base}scopeMaps/matrixmap?api-version=2025-11-01", json=MATRIX_MAP, headers=owner)
        assert made_map.status_code in (200, 201), made_map.text
        token = {"properties": {"scopeMapId": made_map.json()["id"]}}
        made_token = http.put(f"{base}tokens/matrixtok?api-version=2025-11-01", json=token, headers=owner)
        assert made_token.status_code in (200, 201), made_token.text
        bodies: dict[str, dict[str, object]] = {
            "webhooks/matrixhook": {"location": "westeurope", "properties": MATRIX_HOOK},
            ".": {"tags": {"matrix": "yes"}},
            "scopeMaps/matrixmap": MATRIX_MAP,
            "tokens/matrixtok": {"properties": {"status": "enabled"}},
            "generateCredentials": {"tokenId": made_token.json()["id"], "name": "password2"},
            "collectGarbage": {"dryRun": True},
        }
        for method, path, expected in _management_rows():
            body = bodies.get(path) if method in ("PUT", "PATCH", "POST") else None
            reply = http.request(
                method,
                f"{base}{path}?api-version=2025-11-01".replace("/.?", "?"),
                json=body,
                headers=_management_authorization(who),
            )
            assert reply.status_code < 500, f"{method} {path}: {reply.status_code} {reply.text}"
            got = str(reply.status_code) if reply.status_code in (401, 403) else "Y"
            if got != expected[column]:
                wrong.append(
                    f"{method} {path}: expected {expected[column]}, got {reply.status_code} {reply.text[:200]}"
                )
    assert not wrong, f"{column}: {len(wrong)} cells differ:\n" + "\n".join(wrong)
