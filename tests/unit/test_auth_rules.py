"""Pure rules of services/auth: scopes, scope maps and wildcards, roles, route needs, token encoding."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.auth import permissions as perms
from services.auth.passwords import generate_password, hash_password, verify_password
from services.auth.scopes import Scope, ScopeInvalid, parse_scopes
from services.auth.signing import KeyRing, SigningKey, TokenInvalid, new_claims, sdk_safe_json, unverified_payload

# --- scopes ----------------------------------------------------------------------------------------------


def test_scope_parses_names_with_colons_and_several_actions() -> None:
    scope = Scope.parse("repository:host:5000/samples/app:pull,push")
    assert scope == Scope("repository", "host:5000/samples/app", ("pull", "push"))
    assert Scope.parse("registry:catalog:*") == Scope("registry", "catalog", ("*",))
    assert Scope.parse("repository(plugin):x:pull").type == "repository"


@pytest.mark.parametrize("text", ["", "repository", "repository:x", "repository::pull", ":x:pull", "repository:x:"])
def test_bad_scopes_are_refused(text: str) -> None:
    with pytest.raises(ScopeInvalid):
        Scope.parse(text)


def test_parse_scopes_takes_repeated_and_space_separated_and_skips_garbage() -> None:
    scopes = parse_scopes(["repository:a:pull repository:b:push", "junk", "registry:catalog:*"])
    assert [str(s) for s in scopes] == ["repository:a:pull", "repository:b:push", "registry:catalog:*"]


@given(st.text(max_size=60))
def test_scope_parser_never_raises_anything_else(text: str) -> None:
    try:
        scope = Scope.parse(text)
    except ScopeInvalid:
        return
    assert Scope.parse(str(scope)) == scope


# --- scope maps, wildcards, roles ----------------------------------------------------------------------------


def test_wildcard_grants_add_up_as_in_acr() -> None:
    permissions = perms.scope_map_permissions(
        [
            "repositories/sample/*/content/read",
            "repositories/sample/teama/*/content/write",
            "repositories/sample/teama/projectb/content/delete",
        ]
    )
    assert permissions.actions_on("sample/teama/projectb") == {"pull", "push", "delete"}
    assert permissions.actions_on("sample/teama/projectc") == {"pull", "push"}
    assert permissions.actions_on("sample/x") == {"pull"}
    assert permissions.actions_on("samplex/y") == frozenset()
    assert permissions.actions_on("sample") == frozenset()  # `sample/*` is what is under sample/
    assert not permissions.catalog


def test_root_wildcard_and_built_in_scope_maps() -> None:
    pull = perms.scope_map_permissions(perms.BUILT_IN_SCOPE_MAPS["_repositories_pull"].actions)
    push = perms.scope_map_permissions(perms.BUILT_IN_SCOPE_MAPS["_repositories_push"].actions)
    admin = perms.scope_map_permissions(perms.BUILT_IN_SCOPE_MAPS["_repositories_admin"].actions)
    assert pull.actions_on("any/repo") == {"pull"}
    assert push.actions_on("any/repo") == {"pull", "push"}
    # every content and metadata action; soft-deleted artifacts are for roles only (no scope-map action names them)
    assert admin.actions_on("x") == perms.REPOSITORY_ACTIONS - {perms.DELETED_READ, perms.DELETED_RESTORE}
    assert not admin.catalog and not admin.lists_deleted  # scope maps never list the catalog (ACR)


@pytest.mark.parametrize(
    "action",
    [
        "repositories/*/content/nope",
        "repositories/a/*/b/content/read",  # wildcard in the middle
        "repositories/a*/content/read",  # wildcard not after a slash
        "repositories/content/read",
        "registry/x/content/read",
        "repositories/UPPER/content/read",
    ],
)
def test_invalid_scope_map_actions(action: str) -> None:
    with pytest.raises(perms.ScopeMapActionInvalid):
        perms.parse_scope_map_action(action)


_segment = st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)
_repository = st.lists(_segment, min_size=1, max_size=4).map("/".join)


@given(_repository, _repository)
def test_prefix_pattern_matches_exactly_the_names_under_it(prefix: str, name: str) -> None:
    pattern, _ = perms.parse_scope_map_action(f"repositories/{prefix}/*/content/read")
    assert pattern.matches(name) == name.startswith(prefix + "/")
    assert perms.RepositoryPattern.parse(str(pattern)) == pattern


@given(st.text(max_size=80))
def test_scope_map_action_parser_raises_only_its_error(text: str) -> None:
    try:
        perms.parse_scope_map_action(text)
    except perms.ScopeMapActionInvalid:
        pass


def test_repository_roles_honour_their_condition() -> None:
    reader = perms.role_permissions(
        "Container Registry Repository Reader", perms.RepositoryCondition("prefix", ("team/",))
    )
    assert reader.allows("pull", "team/app") and not reader.allows("pull", "other/app")
    writer = perms.role_permissions("Container Registry Repository Writer", perms.RepositoryCondition("equals", ("a",)))
    assert writer.allows("push", "a") and not writer.allows("push", "a/b") and not writer.allows("delete", "a")
    assert perms.role_permissions("Container Registry Repository Catalog Lister").catalog
    assert perms.role_permissions("AcrPull").allows("pull", "x") and not perms.role_permissions("AcrPull").allows(
        "push", "x"
    )
    assert perms.role_permissions("AcrImageSigner") == perms.Permissions()
    assert perms.role_permissions("NoSuchRole") == perms.NOTHING


def test_route_needs_and_granting() -> None:
    assert perms.route_need("manifest", "HEAD", "a").action == "pull"
    assert perms.route_need("upload_session", "PATCH", "a").action == "push"
    assert perms.route_need("blob", "DELETE", "a").action == "delete"
    assert perms.route_need("catalog", "GET", "").scope() == "registry:catalog:*"
    assert perms.route_need("tags", "GET", "x/y").scope() == "repository:x/y:pull"
    # A mount's challenge asks for pull on `from` too (issue 10); `from` means nothing on other routes.
    mount = perms.route_need("upload", "POST", "dst", "src")
    assert mount.action == "push" and mount.source == "src"
    assert mount.scope() == "repository:dst:pull,push repository:src:pull"
    assert perms.route_need("upload", "POST", "dst", "dst").scope() == "repository:dst:pull,push"
    assert perms.route_need("upload", "POST", "dst").scope() == "repository:dst:push"
    assert perms.route_need("upload_session", "PUT", "dst", "src").scope() == "repository:dst:push"
    push = perms.scope_map_permissions(perms.BUILT_IN_SCOPE_MAPS["_repositories_push"].actions)
    assert perms.grant_scope(push, "repository", "r", ["pull", "push", "delete"]) == ["pull", "push"]
    assert perms.grant_scope(push, "registry", "catalog", ["*"]) == []
    assert perms.grant_scope(perms.EVERYTHING, "registry", "catalog", ["*"]) == ["*"]
    back = perms.permissions_from_access([{"type": "repository", "name": "r", "actions": ["pull"]}])
    assert back.allows("pull", "r") and not back.allows("pull", "r/s")


# --- passwords ---------------------------------------------------------------------------------------------


def test_passwords_are_salted_hashes_verified_in_constant_time() -> None:
    password = generate_password()
    first, second = hash_password(password), hash_password(password)
    assert first != second and password not in first
    assert verify_password(first, password) and not verify_password(first, password + "x")
    assert not verify_password("not a hash", password)


def test_generated_passwords_never_start_with_a_dash_so_command_lines_accept_them() -> None:
    # one in 64 URL-safe strings starts with "-"; az/docker then read it as an option
    passwords = [generate_password() for _ in range(2000)]
    assert all(len(p) == 43 and not p.startswith("-") for p in passwords)
    assert len(set(passwords)) == len(passwords)


# --- tokens --------------------------------------------------------------------------------------------------

_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=12), _json_value, max_size=8))
def test_payload_encoding_is_safe_for_the_azure_sdk(claims: dict[str, object]) -> None:
    payload = sdk_safe_json(claims)
    encoded = base64.urlsafe_b64encode(payload).decode()
    assert "-" not in encoded and "_" not in encoded and "=" not in encoded
    assert json.loads(base64.b64decode(encoded)) == claims  # the SDK's (standard) alphabet reads it


def test_signed_tokens_verify_and_bad_ones_never_do() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    ring = KeyRing([old])
    claims = new_claims(issuer="iss", audience="reg.example", subject="s", lifetime=60, grant_type="refresh_token")
    token = ring.sign(claims)
    assert unverified_payload(token)["sub"] == "s"
    assert ring.verify(token, audience="reg.example", issuer="iss")["grant_type"] == "refresh_token"
    rotated = KeyRing([new, old])  # rotation: the old key still verifies what it signed
    assert rotated.verify(token, audience="reg.example", issuer="iss")["sub"] == "s"
    with pytest.raises(TokenInvalid):  # rotated out
        KeyRing([new]).verify(token, audience="reg.example", issuer="iss")
    with pytest.raises(TokenInvalid):
        ring.verify(token, audience="other.example", issuer="iss")
    with pytest.raises(TokenInvalid):
        ring.verify(
            token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"), audience="reg.example", issuer="iss"
        )
    expired = ring.sign({**claims, "exp": claims["iat"] - 120})
    with pytest.raises(TokenInvalid):
        ring.verify(expired, audience="reg.example", issuer="iss")
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": old.kid}).encode()).rstrip(b"=").decode()
    unsigned = f"{header}.{token.split('.')[1]}."
    with pytest.raises(TokenInvalid):
        ring.verify(unsigned, audience="reg.example", issuer="iss")
    for garbage in ("", "a.b", "a.b.c", "🙂"):
        with pytest.raises(TokenInvalid):
            ring.verify(garbage, audience="reg.example", issuer="iss")


# --- Entra ID tokens through a JWKS URI ---------------------------------------------------------------------------


async def test_entra_verifier_fetches_the_issuers_jwks_over_http() -> None:
    import http.server
    import threading

    from services.auth.entra import EntraTokenInvalid, EntraVerifier, IssuerConfig
    from tests.entra_issuer import TestIssuer

    issuer, fetched = TestIssuer(), []

    class Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            body = json.dumps(issuer.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}/discovery/v2.0/keys"
        verifier = EntraVerifier({issuer.issuer: IssuerConfig(issuer=issuer.issuer, jwksUri=uri)})
        principal = await verifier.verify(issuer.token("object-1"))
        assert (principal.object_id, principal.tenant_id) == ("object-1", issuer.tenant)
        await verifier.verify(issuer.token("object-2"))
        assert len(fetched) == 1  # cached
        with pytest.raises(EntraTokenInvalid):
            await verifier.verify(TestIssuer().token("x"))  # another issuer
    finally:
        server.shutdown()
        server.server_close()
