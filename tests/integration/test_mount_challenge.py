"""Cross-repository mounts by token clients (issue 10): the challenge asks for pull on `from`, never in a loop.

Each test drives the devhost over HTTP exactly as docker and podman do: send the request with the bearer
token held; on a 401 read the Bearer challenge, fetch a token from its realm for its service and scopes
(each scope a `scope` parameter, Basic credentials), and send the request again with the new token.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest

from services.auth.signing import unverified_payload
from services.management.access import create_token, enable_admin_user, put_scope_map
from services.management.registries import create_registry
from tests.conftest import Devhost
from tests.integration.conftest import Stores, basic, unique_registry_name

pytestmark = pytest.mark.integration

SOURCE, TARGET = "team/src", "team/dst"


def challenge(reply: httpx.Response) -> dict[str, str]:
    header = reply.headers["WWW-Authenticate"]
    assert header.startswith("Bearer "), header
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


@dataclass
class TokenClient:
    """A client that learns its scopes from challenges, as docker and podman do."""

    http: httpx.Client
    host: str
    credentials: dict[str, str]
    token: str = ""
    challenges: list[dict[str, str]] = field(default_factory=list)
    token_claims: list[dict[str, object]] = field(default_factory=list)

    def fetch_token(self, realm: str, service: str, scopes: list[str]) -> None:
        path = urlsplit(realm).path  # the realm names this devhost; the test client speaks to it directly
        reply = self.http.get(
            path, headers={"Host": self.host} | self.credentials, params={"service": service, "scope": scopes}
        )
        assert reply.status_code == 200, reply.text
        self.token = reply.json()["token"]
        self.token_claims.append(unverified_payload(self.token))

    def send(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        reply = self._once(method, url, **kwargs)
        if reply.status_code != 401:
            return reply
        params = challenge(reply)
        self.challenges.append(params)
        self.fetch_token(params["realm"], params["service"], params.get("scope", "").split())
        return self._once(method, url, **kwargs)  # docker retries once, then reports the 401

    def _once(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        headers = {"Host": self.host} | ({"Authorization": f"Bearer {self.token}"} if self.token else {})
        return self.http.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class MountRegistry:
    name: str
    host: str
    login_server: str
    http: httpx.Client
    admin: dict[str, str]  # Basic credentials of the admin user
    passwords: dict[str, str]  # token name -> password

    def client(self, token: str) -> TokenClient:
        return TokenClient(self.http, self.host, basic(token, self.passwords[token]))

    def push_source_blob(self) -> str:
        data = os.urandom(2048)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        reply = self.http.post(
            f"/v2/{SOURCE}/blobs/uploads/",
            params={"digest": digest},
            content=data,
            headers={"Host": self.host} | self.admin,
        )
        assert reply.status_code == 201, reply.text
        return digest

    def head_as_admin(self, repository: str, digest: str) -> int:
        reply = self.http.head(f"/v2/{repository}/blobs/{digest}", headers={"Host": self.host} | self.admin)
        return reply.status_code


@pytest.fixture
async def mount_registry(devhost: Devhost, stores: Stores) -> AsyncIterator[MountRegistry]:
    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name, "Premium")
    admin = await enable_admin_user(stores.metadata, name)
    rw = ["content/read", "content/write"]
    await put_scope_map(
        stores.metadata, name, "pushboth", [f"repositories/{r}/{a}" for r in (SOURCE, TARGET) for a in rw]
    )
    await put_scope_map(stores.metadata, name, "target-only", [f"repositories/{TARGET}/{a}" for a in rw])
    passwords: dict[str, str] = {}
    for token, scope_map in (("pushboth", "pushboth"), ("pushtarget", "target-only")):
        _, made = await create_token(stores.metadata, name, token, scope_map)
        passwords[token] = made[0].value
    port = devhost.host.rsplit(":", 1)[1]
    with httpx.Client(base_url=devhost.url, timeout=30) as http:
        yield MountRegistry(
            name,
            f"{name}.azurecr.localhost:{port}",
            f"{name}.azurecr.localhost",
            http,
            basic(name, admin[0].value),
            passwords,
        )


def holding_a_target_token(registry: MountRegistry, token: str) -> TokenClient:
    """A client in the middle of a push to TARGET: it holds a token for that repository only (what the
    push's first challenge gave it), as docker does when it then tries to mount a shared layer."""
    client = registry.client(token)
    client.fetch_token(
        f"http://{registry.host}/oauth2/token", registry.login_server, [f"repository:{TARGET}:pull,push"]
    )
    return client


MOUNT_SCOPES = f"repository:{TARGET}:pull,push repository:{SOURCE}:pull"


def test_the_challenge_asks_for_pull_on_from_and_the_mount_happens(mount_registry: MountRegistry) -> None:
    digest = mount_registry.push_source_blob()
    client = holding_a_target_token(mount_registry, "pushboth")
    reply = client.send("POST", f"/v2/{TARGET}/blobs/uploads/", params={"mount": digest, "from": SOURCE})
    assert len(client.challenges) == 1
    assert client.challenges[0]["scope"] == MOUNT_SCOPES
    assert client.challenges[0]["error"] == "insufficient_scope"
    assert reply.status_code == 201, reply.text  # mounted with the second token, not uploaded again
    assert reply.headers["Docker-Content-Digest"] == digest
    assert mount_registry.head_as_admin(TARGET, digest) == 200
    granted = client.token_claims[-1]["access"]
    assert {"type": "repository", "name": SOURCE, "actions": ["pull"]} in granted  # type: ignore[operator]
    assert "refused" not in client.token_claims[-1]


def test_an_identity_without_pull_on_from_falls_back_to_upload_without_a_loop(
    mount_registry: MountRegistry,
) -> None:
    digest = mount_registry.push_source_blob()
    client = holding_a_target_token(mount_registry, "pushtarget")
    url = f"/v2/{TARGET}/blobs/uploads/"
    reply = client.send("POST", url, params={"mount": digest, "from": SOURCE})
    assert [c["scope"] for c in client.challenges] == [MOUNT_SCOPES]  # asked once
    assert client.token_claims[-1]["refused"] == [{"type": "repository", "name": SOURCE, "actions": ["pull"]}]
    assert reply.status_code == 202, reply.text  # the token asked for pull on `from` and was refused it
    location = reply.headers["Location"]
    assert urlsplit(location).path.startswith(f"/v2/{TARGET}/blobs/uploads/")
    # Again with the same token: still the fallback, never another challenge.
    again = client.send("POST", url, params={"mount": digest, "from": SOURCE})
    assert again.status_code == 202 and len(client.challenges) == 1
    assert mount_registry.head_as_admin(TARGET, digest) == 404  # nothing was mounted
    # The fallback is an ordinary upload session.
    data = os.urandom(10)
    done = client.send(
        "PUT", urlsplit(location).path, params={"digest": "sha256:" + hashlib.sha256(data).hexdigest()}, content=data
    )
    assert done.status_code == 201, done.text


def test_a_client_that_asks_for_from_up_front_is_never_challenged(mount_registry: MountRegistry) -> None:
    """podman and docker ask for pull on the mount's source in their token request themselves."""
    digest = mount_registry.push_source_blob()
    for token, status in (("pushboth", 201), ("pushtarget", 202)):
        client = mount_registry.client(token)
        client.fetch_token(
            f"http://{mount_registry.host}/oauth2/token", mount_registry.login_server, MOUNT_SCOPES.split()
        )
        reply = client.send("POST", f"/v2/{TARGET}/blobs/uploads/", params={"mount": digest, "from": SOURCE})
        assert reply.status_code == status, (token, reply.text)
        assert client.challenges == [], token


def test_basic_and_anonymous_callers(mount_registry: MountRegistry) -> None:
    digest = mount_registry.push_source_blob()
    url = f"/v2/{TARGET}/blobs/uploads/"
    params = {"mount": digest, "from": SOURCE}
    host = {"Host": mount_registry.host}
    # Basic credentials cannot be narrowed or widened by a challenge: without pull on `from`, 202 as before.
    creds = basic("pushtarget", mount_registry.passwords["pushtarget"])
    assert mount_registry.http.post(url, params=params, headers=host | creds).status_code == 202
    creds = basic("pushboth", mount_registry.passwords["pushboth"])
    assert mount_registry.http.post(url, params=params, headers=host | creds).status_code == 201
    # Anonymous: the challenge names every scope the mount wants, from the first request.
    anonymous = mount_registry.http.post(url, params=params, headers=host)
    assert anonymous.status_code == 401
    assert challenge(anonymous)["scope"] == MOUNT_SCOPES
    # An invalid `from` is not named in the challenge (it is written into a header), and a push needs only push.
    bad = mount_registry.http.post(url, params={"mount": digest, "from": "Bad//Name"}, headers=host)
    assert challenge(bad)["scope"] == f"repository:{TARGET}:push"
