"""Several worker processes per instance, and the read cache they share (issue 10).

The devhost runs `FUNCTIONS_WORKER_PROCESS_COUNT` forked workers on one port (services/devhost/workers.py);
each keeps its own read cache of tags, manifests and blob links (services/platform/readcache.py). What a
client must never see: its own tag move or delete not taken into account by the next request, whichever
worker serves it. Every request below opens a new connection (`Connection: close`), so the kernel spreads
them over the workers (SO_REUSEPORT); with 24 of them, all landing on one worker has odds of 2^-23.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from services.management.access import update_registry
from services.management.registries import create_registry
from tests.conftest import Devhost, running_devhost
from tests.integration.conftest import Stores, registry_client, unique_registry_name

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
FRESH_CONNECTIONS = 24


def children_of(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


@pytest.fixture(scope="module")
def workers_devhost(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    state = tmp_path_factory.mktemp("workers")
    env = stack | {"FUNCTIONS_WORKER_PROCESS_COUNT": "2", "READ_CACHE_MARKS_FILE": str(state / "marks")}
    with running_devhost(env, state) as host:
        yield host


@pytest.fixture
async def client(workers_devhost: Devhost, stores: Stores) -> AsyncIterator[httpx.Client]:
    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name)
    await update_registry(stores.metadata, name, auth_disabled=True)
    with registry_client(workers_devhost, name) as http:
        http.headers["Connection"] = "close"  # a new connection, so a worker the kernel picks, every time
        yield http


def push(http: httpx.Client, repository: str, tag: str, label: str) -> str:
    """A one-config image whose config says `label`; returns the manifest digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"v": label}}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    upload = http.post(f"/v2/{repository}/blobs/uploads/", params={"digest": config_digest}, content=config)
    assert upload.status_code == 201, upload.text
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    put = http.put(f"/v2/{repository}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert put.status_code == 201, put.text
    return put.headers["Docker-Content-Digest"]


def heads(http: httpx.Client, path: str) -> list[tuple[int, str | None]]:
    answers = []
    for _ in range(FRESH_CONNECTIONS):
        reply = http.head(path, headers={"Accept": OCI_MANIFEST})
        answers.append((reply.status_code, reply.headers.get("Docker-Content-Digest")))
    return answers


def test_the_devhost_runs_the_worker_processes_it_is_asked_for(workers_devhost: Devhost) -> None:
    workers = children_of(workers_devhost.pid)
    assert len(workers) == 2 and all(alive(pid) for pid in workers)


def test_a_tag_moved_or_deleted_is_seen_at_once_by_every_worker(client: httpx.Client) -> None:
    first = push(client, "team/app", "stable", "one")
    assert set(heads(client, "/v2/team/app/manifests/stable")) == {(200, first)}  # both workers cache it
    assert set(heads(client, f"/v2/team/app/manifests/{first}")) == {(200, first)}

    second = push(client, "team/app", "stable", "two")
    assert set(heads(client, "/v2/team/app/manifests/stable")) == {(200, second)}

    deleted = client.delete(f"/v2/team/app/manifests/{second}")
    assert deleted.status_code == 202, deleted.text
    assert set(heads(client, "/v2/team/app/manifests/stable")) == {(404, None)}
    assert set(heads(client, f"/v2/team/app/manifests/{second}")) == {(404, None)}
    assert set(heads(client, f"/v2/team/app/manifests/{first}")) == {(200, first)}  # untagged, still there


def test_a_blob_unlinked_is_unknown_at_once_to_every_worker(client: httpx.Client) -> None:
    data = b"layer bytes for the read cache"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert client.post("/v2/team/blobs/blobs/uploads/", params={"digest": digest}, content=data).status_code == 201
    assert {client.head(f"/v2/team/blobs/blobs/{digest}").status_code for _ in range(FRESH_CONNECTIONS)} == {200}
    assert client.delete(f"/v2/team/blobs/blobs/{digest}").status_code == 202
    assert {client.head(f"/v2/team/blobs/blobs/{digest}").status_code for _ in range(FRESH_CONNECTIONS)} == {404}


def test_a_read_lock_is_enforced_at_once_by_every_worker(client: httpx.Client) -> None:
    digest = push(client, "team/locked", "v1", "locked")
    assert set(heads(client, "/v2/team/locked/manifests/v1")) == {(200, digest)}
    locked = client.patch("/acr/v1/team/locked", json={"readEnabled": False})
    assert locked.status_code == 200, locked.text
    assert {status for status, _ in heads(client, "/v2/team/locked/manifests/v1")} == {405}  # ACR: not allowed


def test_a_killed_worker_is_started_again_and_the_port_keeps_answering(
    workers_devhost: Devhost, client: httpx.Client
) -> None:
    digest = push(client, "team/restart", "v1", "restart")
    before = children_of(workers_devhost.pid)
    os.kill(before[-1], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = children_of(workers_devhost.pid)
        if len(now) == 2 and before[-1] not in now:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the worker was not started again: {children_of(workers_devhost.pid)}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the new worker listens once it has started
        answers = heads(client, "/v2/team/restart/manifests/v1")
        if set(answers) == {(200, digest)}:
            break
        time.sleep(0.2)
    assert set(heads(client, "/v2/team/restart/manifests/v1")) == {(200, digest)}


def test_sigterm_stops_the_supervisor_and_every_worker(stack: dict[str, str], tmp_path: Path) -> None:
    env = stack | {"FUNCTIONS_WORKER_PROCESS_COUNT": "2", "READ_CACHE_MARKS_FILE": str(tmp_path / "marks")}
    with running_devhost(env, tmp_path) as host:
        workers = children_of(host.pid)
        assert len(workers) == 2
        os.kill(host.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (alive(host.pid) or any(alive(pid) for pid in workers)):
            time.sleep(0.1)
        assert not any(alive(pid) for pid in workers)
        assert not alive(host.pid)


@pytest.fixture
async def open_registry(stores: Stores) -> str:
    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name)
    await update_registry(stores.metadata, name, auth_disabled=True)
    return name


def test_another_instance_sees_a_tag_move_once_its_read_cache_time_is_up(
    workers_devhost: Devhost, stack: dict[str, str], open_registry: str, tmp_path: Path
) -> None:
    """Instances share no change marks (here: a marks file each): another instance's write is seen once the
    cached read is older than READ_CACHE_SECONDS."""
    env = stack | {"READ_CACHE_MARKS_FILE": str(tmp_path / "other-marks"), "READ_CACHE_SECONDS": "0.5"}
    with (
        running_devhost(env, tmp_path) as other,
        registry_client(workers_devhost, open_registry) as here,
        registry_client(other, open_registry) as there,
    ):
        first = push(here, "team/app", "v1", "one")
        assert there.head("/v2/team/app/manifests/v1").headers["Docker-Content-Digest"] == first
        second = push(here, "team/app", "v1", "two")
        deadline = time.monotonic() + 30
        seen = None
        while time.monotonic() < deadline:
            seen = there.head("/v2/team/app/manifests/v1").headers.get("Docker-Content-Digest")
            if seen == second:
                break
            time.sleep(0.05)
        assert seen == second


def test_tag_lists_and_the_catalog_change_at_once_for_every_worker(client: httpx.Client) -> None:
    """Tag lists and the catalog are read whole and kept (paging then costs no query); a new tag, a hidden
    tag and a new repository show at once, whichever worker serves the next page."""
    first = push(client, "team/listed", "v1", "one")
    assert {tuple(client.get("/v2/team/listed/tags/list").json()["tags"]) for _ in range(8)} == {("v1",)}
    catalog = {tuple(client.get("/v2/_catalog").json()["repositories"]) for _ in range(8)}
    assert catalog == {("team/listed",)}

    push(client, "team/listed", "v2", "two")
    push(client, "team/other", "v1", "three")
    pages = {tuple(client.get("/v2/team/listed/tags/list", params={"n": 1}).json()["tags"]) for _ in range(8)}
    assert pages == {("v1",)}
    second_pages = {
        tuple(client.get("/v2/team/listed/tags/list", params={"n": 1, "last": "v1"}).json()["tags"]) for _ in range(8)
    }
    assert second_pages == {("v2",)}
    catalog = {tuple(client.get("/v2/_catalog").json()["repositories"]) for _ in range(8)}
    assert catalog == {("team/listed", "team/other")}

    hidden = client.patch("/acr/v1/team/listed/_tags/v1", json={"listEnabled": False})
    assert hidden.status_code == 200, hidden.text
    assert {tuple(client.get("/v2/team/listed/tags/list").json()["tags"]) for _ in range(8)} == {("v2",)}
    assert client.head(f"/v2/team/listed/manifests/{first}", headers={"Accept": OCI_MANIFEST}).status_code == 200
