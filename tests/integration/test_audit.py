"""The audit records (services/platform/audit.py), read from a running devhost's log as an operator would
read them: push, pull, untag and delete, and sign-ins that succeed and fail, each give exactly the record
they should; hostile input (a password in the username field, a token in a repository name, CR/LF in a
user agent) cannot forge or split a record and never puts a secret in one. Retention's deletions name the
system as their identity; management changes name their caller and never the secrets they carry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.management.access import assign_scope_role, create_token, enable_admin_user
from services.management.registries import create_registry
from services.management.store import RegistryStore
from services.platform import audit
from services.registry.retention import apply_retention
from services.registry.softdelete import purge_expired
from services.registry.store import ArtifactStore
from tests.conftest import Devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import RegistryClient, Stores, basic, unique_registry_name
from tests.integration.test_soft_delete import enable, push_image

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Reg:
    name: str
    host: str
    login_server: str
    admin_password: str
    token_password: str  # token "pusher": _repositories_admin
    http: httpx.Client

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Host": self.host} | (extra or {})


class AuditLog:
    """The audit records the devhost has written to its log since `mark()`."""

    def __init__(self, devhost: Devhost) -> None:
        self.path = devhost.log
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def text(self) -> str:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode("utf-8", "replace")

    def records(self, login_server: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.text().splitlines():
            if " audit: " not in line:
                continue
            record = json.loads(line.split(" audit: ", 1)[1])  # every audit line is one whole JSON object
            if login_server is None or record.get("LoginServer") == login_server:
                found.append(record)
        return found


@pytest.fixture
def audit_log(devhost: Devhost) -> AuditLog:
    log = AuditLog(devhost)
    log.mark()
    return log


@pytest.fixture(scope="module")
async def reg(devhost: Devhost, stores: Stores) -> AsyncIterator[Reg]:
    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name, "Premium")
    admin = await enable_admin_user(stores.metadata, name)
    _, passwords = await create_token(stores.metadata, name, "pusher", "_repositories_admin")
    port = devhost.host.rsplit(":", 1)[1]
    with httpx.Client(base_url=devhost.url, timeout=30) as http:
        yield Reg(
            name,
            f"{name}.azurecr.localhost:{port}",
            f"{name}.azurecr.localhost",
            admin[0].value,
            passwords[0].value,
            http,
        )


def bearer(reg: Reg, username: str, password: str, scope: str) -> dict[str, str]:
    reply = reg.http.get(
        "/oauth2/token",
        headers=reg.headers(basic(username, password) | {"User-Agent": "audit-test/1.0"}),
        params={"service": reg.login_server, "scope": scope},
    )
    assert reply.status_code == 200, reply.text
    return {"Authorization": "Bearer " + reply.json()["access_token"]}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload(reg: Reg, auth: dict[str, str], repository: str, data: bytes) -> str:
    digest = sha256(data)
    reply = reg.http.post(
        f"/v2/{repository}/blobs/uploads/", params={"digest": digest}, content=data, headers=reg.headers(auth)
    )
    assert reply.status_code == 201, reply.text
    return digest


def image(reg: Reg, auth: dict[str, str], repository: str) -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": uuid.uuid4().hex}).encode()
    layer = uuid.uuid4().bytes * 64
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": upload(reg, auth, repository, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": upload(reg, auth, repository, layer),
                "size": len(layer),
            }
        ],
    }
    return json.dumps(manifest).encode()


def assert_request_fields(record: dict[str, Any], user_agent: str = "audit-test/1.0") -> None:
    assert record["CallerIpAddress"] == "127.0.0.1"
    assert record["UserAgent"] == user_agent
    assert isinstance(record["DurationMs"], int) and record["DurationMs"] >= 0
    assert record["CorrelationId"]
    assert datetime.fromisoformat(record["TimeGenerated"]).tzinfo is not None


def test_push_pull_untag_delete_each_give_one_repository_record(reg: Reg, audit_log: AuditLog) -> None:
    auth = bearer(reg, "pusher", reg.token_password, "repository:team/app:pull,push,delete")
    agent = {"User-Agent": "audit-test/1.0"}
    body = image(reg, auth, "team/app")
    digest = sha256(body)
    pushed = reg.http.put(
        "/v2/team/app/manifests/v1", content=body, headers=reg.headers(auth | agent | {"Content-Type": OCI_MANIFEST})
    )
    assert pushed.status_code == 201, pushed.text
    pulled = reg.http.get("/v2/team/app/manifests/v1", headers=reg.headers(auth | agent | {"Accept": OCI_MANIFEST}))
    assert pulled.status_code == 200
    assert reg.http.head("/v2/team/app/manifests/v1", headers=reg.headers(auth | agent)).status_code == 200
    assert reg.http.delete("/v2/team/app/manifests/v1", headers=reg.headers(auth | agent)).status_code == 202
    missing = reg.http.get("/v2/team/app/manifests/v1", headers=reg.headers(auth | agent))
    assert missing.status_code == 404
    assert reg.http.delete(f"/v2/team/app/manifests/{digest}", headers=reg.headers(auth | agent)).status_code == 202

    records = audit_log.records(reg.login_server)
    logins = [r for r in records if r["Category"] == "ContainerRegistryLoginEvents"]
    events = [r for r in records if r["Category"] == "ContainerRegistryRepositoryEvents"]
    assert [r["OperationName"] for r in logins] == ["Login"]  # the token request; bearer requests are not sign-ins
    assert logins[0]["Identity"] == "pusher" and logins[0]["IdentityType"] == "token"
    assert logins[0]["ResultDescription"] == "200"
    assert [(r["OperationName"], r["ResultDescription"]) for r in events] == [
        ("Push", "201"),
        ("Pull", "200"),  # HEAD is not a pull
        ("Untag", "202"),
        ("Pull", "404"),
        ("Delete", "202"),
    ]
    push, pull, untag, failed, delete = events
    for record in events:
        assert record["Identity"] == "pusher" and record["Repository"] == "team/app"
        assert record["ResultType"] == "HttpStatusCode"
        assert_request_fields(record)
    assert (push["Tag"], push["Digest"], push["MediaType"], push["Size"]) == ("v1", digest, OCI_MANIFEST, len(body))
    assert (pull["Tag"], pull["Digest"], pull["MediaType"], pull["Size"]) == ("v1", digest, OCI_MANIFEST, len(body))
    assert (untag["Tag"], delete["Tag"], delete["Digest"]) == ("v1", "", digest)
    assert (failed["Tag"], failed["Digest"], failed["Size"]) == ("", "", 0)  # a failure names no unknown tag
    assert pulled.headers["X-Ms-Correlation-Request-Id"] == pull["CorrelationId"]
    assert len({r["CorrelationId"] for r in records}) == len(records)


def test_acr_v1_deletes_are_untag_and_delete(reg: Reg, audit_log: AuditLog) -> None:
    auth = bearer(reg, "pusher", reg.token_password, "repository:team/old:pull,push,delete")
    body = image(reg, auth, "team/old")
    digest = sha256(body)
    headers = reg.headers(auth | {"Content-Type": OCI_MANIFEST})
    assert (
        reg.http.put(f"/v2/team/old/manifests/{digest}?tag=a1&tag=a2", content=body, headers=headers).status_code == 201
    )
    assert reg.http.delete("/acr/v1/team/old/_tags/a1", headers=reg.headers(auth)).status_code == 202
    assert reg.http.delete(f"/acr/v1/team/old/_manifests/{digest}", headers=reg.headers(auth)).status_code == 202
    assert reg.http.delete("/acr/v1/team/old", headers=reg.headers(auth)).status_code == 202
    events = [r for r in audit_log.records(reg.login_server) if r["Category"] == "ContainerRegistryRepositoryEvents"]
    assert [(r["OperationName"], r["Repository"], r["Tag"], r["Digest"]) for r in events] == [
        ("Push", "team/old", "", digest),  # by digest: its tags are the ?tag= parameters
        ("Untag", "team/old", "a1", ""),
        ("Delete", "team/old", "", digest),
        ("Delete", "team/old", "", ""),  # the repository
    ]
    assert all(r["Identity"] == "pusher" and r["ResultDescription"] in ("201", "202") for r in events)


def test_sign_ins_that_fail_are_recorded_without_the_secret(reg: Reg, audit_log: AuditLog) -> None:
    port = reg.host.rsplit(":", 1)[1]
    params = {"service": reg.login_server, "scope": "repository:team/app:pull"}
    wrong = reg.http.get("/oauth2/token", headers=reg.headers(basic(reg.name, "not-the-password")), params=params)
    # The admin password typed as the username (with the token's as the password): neither may be written.
    swapped = reg.http.post(
        "/oauth2/token",
        headers=reg.headers(),
        data={"grant_type": "password", "username": reg.admin_password, "password": reg.token_password}
        | {"service": reg.login_server},
    )
    refresh = reg.http.post(
        "/oauth2/token",
        headers=reg.headers(),
        data={"grant_type": "refresh_token", "refresh_token": "e30.e30.forged", "service": reg.login_server},
    )
    on_v2 = reg.http.get("/v2/team/app/tags/list", headers=reg.headers(basic("pusher", "wrong-" + port)))
    good_v2 = reg.http.get("/v2/_catalog", headers=reg.headers(basic(reg.name, reg.admin_password)))
    assert [r.status_code for r in (wrong, swapped, refresh, on_v2, good_v2)] == [401, 401, 401, 401, 200]

    logins = [r for r in audit_log.records(reg.login_server) if r["Category"] == "ContainerRegistryLoginEvents"]
    assert [(r["Identity"], r["IdentityType"], r["ResultDescription"]) for r in logins] == [
        (reg.name, "password", "401"),  # the admin user's name: it names an identity
        ("", "password", "401"),  # a password in the username field names nothing: not written
        ("", "refresh_token", "401"),
        ("pusher", "basic", "401"),  # Basic on /v2: a token's name
        (reg.name, "admin", "200"),
    ]
    for record in logins:
        assert record["OperationName"] == "Login" and record["LoginServer"] == reg.login_server
        assert record["CallerIpAddress"] == "127.0.0.1" and record["CorrelationId"]
    everything = audit_log.text()
    for secret in (reg.admin_password, reg.token_password, "not-the-password", "wrong-" + port, "e30.e30.forged"):
        assert secret not in everything


def raw_request(devhost: Devhost, lines: list[bytes]) -> int:
    """The status of a request written byte for byte (httpx refuses control characters in headers)."""
    host, port = devhost.host.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(b"\r\n".join([*lines, b"Connection: close", b"", b""]))
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def test_hostile_input_cannot_split_forge_or_leak_into_a_record(
    devhost: Devhost, reg: Reg, audit_log: AuditLog
) -> None:
    auth = bearer(reg, "pusher", reg.token_password, "repository:team/app:pull")
    token = auth["Authorization"].removeprefix("Bearer ")
    forged = '{"Category":"ContainerRegistryLoginEvents","Identity":"admin","ResultDescription":"200"}'
    # What a header can carry past the HTTP parser: quotes, braces, tabs and bytes over 0x7f (U+2028 and U+0085
    # in UTF-8 end a line for some readers); other control characters are refused with 400 before any route.
    agent = f'evil"}}\t\u2028\x85 INFO audit: {forged}, "Identity": "admin'
    host = reg.host.encode()
    before = len(audit_log.records())
    statuses = [
        raw_request(
            devhost,
            [
                b"GET /v2/team/app/manifests/v1 HTTP/1.1",
                b"Host: " + host,
                b"Authorization: " + auth["Authorization"].encode(),
                b"User-Agent: " + agent.encode("utf-8"),
            ],
        ),
        reg.http.get(f"/v2/{token}/manifests/latest", headers=reg.headers(auth)).status_code,  # token as repository
        reg.http.get(f"/v2/team/app/manifests/{token}", headers=reg.headers(auth)).status_code,  # ... as reference
        reg.http.get(
            "/oauth2/token",
            headers=reg.headers(basic(reg.name, "x") | {"X-Ms-Correlation-Request-Id": forged}),
            params={"service": reg.login_server},
        ).status_code,
        # CR LF in a header ends it: whatever follows is a malformed header, and the request goes nowhere.
        raw_request(
            devhost,
            [b"GET /v2/team/app/manifests/v1 HTTP/1.1", b"Host: " + host, b"User-Agent: a\r\n" + forged.encode()],
        ),
    ]
    assert statuses == [404, 400, 404, 401, 400]  # the token as a tag names no manifest
    records = audit_log.records()
    assert len(records) == before + 4  # four answers, four records: none split, none added
    ours = [r for r in records[before:] if r.get("LoginServer") == reg.login_server]
    assert [r["OperationName"] for r in ours] == ["Pull", "Pull", "Pull", "Login"]
    assert ours[0]["UserAgent"] == agent.encode("utf-8").decode("latin-1")  # kept whole, as one JSON string
    assert ours[1]["Repository"] == "" and ours[2]["Tag"] == "" and ours[2]["Digest"] == ""
    assert ours[3]["CorrelationId"] != forged  # a correlation id that is not one is replaced
    assert not any(r["Identity"] == "admin" for r in records)
    text = audit_log.text()
    assert token not in text
    assert all(line.isascii() for line in text.splitlines() if " audit: " in line)


def test_a_record_is_one_line_whatever_its_values(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="audit"):
        fields: dict[str, str | int] = {"UserAgent": "a\r\nb\u2028c\x00d", "Identity": 'x"}, "Identity": "admin'}
        audit.emit(audit.LOGIN_EVENTS, "Login", fields)
    (record,) = [r.getMessage() for r in caplog.records if r.name == "audit"]
    assert len(record.splitlines()) == 1 and record.isascii()
    parsed = json.loads(record)
    assert parsed["UserAgent"] == "a\r\nb\u2028c\x00d" and parsed["Identity"] == 'x"}, "Identity": "admin'


async def test_retention_deletions_name_the_system(
    devhost: Devhost, stores: Stores, reg: Reg, caplog: pytest.LogCaptureFixture
) -> None:
    auth = bearer(reg, "pusher", reg.token_password, "repository:kept/app:pull,push")
    body = image(reg, auth, "kept/app")
    reply = reg.http.put(
        f"/v2/kept/app/manifests/{sha256(body)}",
        content=body,
        headers=reg.headers(auth | {"Content-Type": OCI_MANIFEST}),
    )
    assert reply.status_code == 201
    registries = RegistryStore(stores.metadata)
    doc = await registries.get_registry(reg.name)
    assert doc is not None
    doc.policies["retentionPolicy"] = {"status": "enabled", "days": 0}
    with caplog.at_level(logging.INFO, logger="audit"):
        report = await apply_retention(ArtifactStore(stores.metadata), doc, datetime.now(UTC) + timedelta(days=1))
    assert report.deleted == [f"kept/app@{sha256(body)}"]
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "audit"]
    assert len(records) == 1
    record = records[0]
    assert record["Category"] == "ContainerRegistryRepositoryEvents" and record["OperationName"] == "Delete"
    assert record["Identity"] == "system:retention-policy"
    assert (record["Repository"], record["Digest"], record["MediaType"]) == ("kept/app", sha256(body), OCI_MANIFEST)
    assert record["LoginServer"] == reg.login_server and record["Size"] == len(body)


async def test_management_changes_name_their_caller_never_their_secrets(
    devhost: Devhost, stores: Stores, entra_issuer: TestIssuer, audit_log: AuditLog
) -> None:
    registry, owner = unique_registry_name(), str(uuid.uuid4())
    await create_registry(stores.metadata, stores.blobs, stores.settings, registry, "Premium")
    await assign_scope_role(
        stores.metadata, f"/subscriptions/{SUBSCRIPTION}", owner, "Owner", tenant=entra_issuer.tenant
    )
    base = (
        f"{devhost.url}/subscriptions/{SUBSCRIPTION}/resourceGroups/local-rg/providers/"
        f"Microsoft.ContainerRegistry/registries/{registry}"
    )
    secret = "Bearer hook-secret-" + uuid.uuid4().hex
    hook = {
        "location": "westeurope",
        "properties": {
            "serviceUri": "http://127.0.0.1:9/hook",
            "actions": ["push"],
            "customHeaders": {"Authorization": secret},
        },
    }
    api = {"api-version": "2025-11-01"}
    async with httpx.AsyncClient(timeout=30) as http:
        good = {"Authorization": "Bearer " + entra_issuer.token(owner), "User-Agent": "audit-test/1.0"}
        created = await http.put(f"{base}/webhooks/audithook", params=api, json=hook, headers=good)
        listed = await http.get(f"{base}/webhooks", params=api, headers=good)  # a read: no record
        nope = {"Authorization": "Bearer nope"}
        refused = await http.delete(f"{base}/webhooks/audithook", params=api, headers=nope)
        removed = await http.delete(f"{base}/webhooks/audithook", params=api, headers=good)
    assert [r.status_code for r in (created, listed, refused)] == [201, 200, 401]
    assert removed.status_code in (200, 202, 204)
    records = [r for r in audit_log.records() if r["Category"] == "RegistryManagementEvents"]
    records = [r for r in records if registry in r["ResourceId"]]
    assert [(r["OperationName"], r["Identity"], r["ResultDescription"]) for r in records] == [
        ("Microsoft.ContainerRegistry/registries/webhooks/write", owner, "201"),
        ("DELETE Microsoft.ContainerRegistry/registries/webhooks", "", "401"),
        ("Microsoft.ContainerRegistry/registries/webhooks/delete", owner, str(removed.status_code)),
    ]
    assert records[0]["UserTenantId"] == entra_issuer.tenant and records[0]["UserAgent"] == "audit-test/1.0"
    assert records[0]["ResourceId"].endswith(f"/registries/{registry}/webhooks/audithook")
    text = audit_log.text()
    assert secret not in text and "hook-secret" not in text


def test_make_run_also_appends_the_records_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "audit.log"
    audit.write_to(path)
    try:
        audit.emit(audit.REPOSITORY_EVENTS, "Pull", {"Repository": "team/app", "Size": 3})
    finally:
        for handler in [h for h in audit.log.handlers if isinstance(h, logging.FileHandler)]:
            audit.log.removeHandler(handler)
            handler.close()
    (line,) = path.read_text().splitlines()
    record = json.loads(line)  # the line is the record alone: no level, no logger name
    assert (record["OperationName"], record["Repository"], record["Size"]) == ("Pull", "team/app", 3)


async def test_a_restore_and_the_soft_delete_purge_are_recorded(
    registry: RegistryClient, stores: Stores, caplog: pytest.LogCaptureFixture, audit_log: AuditLog
) -> None:
    doc = await enable(stores, registry.name, days=1)
    digest, _, _ = push_image(registry.http, "app", "v1")
    assert registry.http.delete(f"/v2/app/manifests/{digest}").status_code == 202
    assert registry.http.post(f"/acr/v1/_deleted/app/_manifests/{digest}", json={"tag": "v1"}).status_code == 200
    assert registry.http.delete(f"/v2/app/manifests/{digest}").status_code == 202
    login_server = f"{registry.name}.azurecr.localhost"
    events = [r for r in audit_log.records(login_server) if r["Category"] == "ContainerRegistryRepositoryEvents"]
    assert [(r["OperationName"], r["Digest"], r["ResultDescription"]) for r in events] == [
        ("Push", digest, "201"),
        ("Delete", digest, "202"),
        ("Restore", digest, "200"),
        ("Delete", digest, "202"),
    ]
    with caplog.at_level(logging.INFO, logger="audit"):
        purged = await purge_expired(stores.metadata, doc, datetime.now(UTC) + timedelta(days=1, minutes=1))
    assert purged.manifests == [f"app@{digest}"]
    (record,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "audit"]
    assert (record["OperationName"], record["Identity"], record["Repository"], record["Digest"]) == (
        "Delete",
        "system:soft-delete-purge",
        "app",
        digest,
    )
