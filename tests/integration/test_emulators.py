"""The local emulator stack (services/devhost/stack.py) against the real Azure SDKs.

Azurite through azure-storage-blob; the patched, persistent Cosmos DB emulator through azure-cosmos, sync
and aio: the fixes of patches/@vercel+cosmosdb-server+1.0.1.patch (404 on missing items, atomic
transactional batches, partition-scoped queries, TTL, keep-alive) and durability across a clean stop and
a kill -9.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.cosmos import ContainerProxy, CosmosClient, DatabaseProxy, PartitionKey, SSLConfiguration
from azure.cosmos import exceptions as cosmos_errors
from azure.cosmos.aio import CosmosClient as AsyncCosmosClient
from azure.storage.blob import BlobServiceClient

from services.devhost.stack import DEFAULT_NODE_MODULES, LocalStack, StackError, ensure_certificate
from services.platform.settings import COSMOS_EMULATOR_KEY

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js"),
    pytest.mark.skipif(
        not (DEFAULT_NODE_MODULES / "@vercel" / "cosmosdb-server").is_dir(), reason="run `npm ci` first"
    ),
]

APP_CONTAINERS = {"registries": "/registry", "repositories": "/registry", "artifacts": "/repo"}


def ssl_config(stack: LocalStack) -> SSLConfiguration:
    config = SSLConfiguration()
    config.SSLCaCerts = str(stack.cert_file)
    return config


def sync_client(stack: LocalStack, **kwargs: Any) -> CosmosClient:
    return CosmosClient(stack.cosmos_endpoint, credential=COSMOS_EMULATOR_KEY, ssl_config=ssl_config(stack), **kwargs)


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack of this module's own (the session's `stack` fixture only yields its environment)."""
    with LocalStack.on_free_ports(tmp_path_factory.mktemp("emulators")) as running:
        yield running


@pytest.fixture(scope="module")
def client(local_stack: LocalStack) -> Iterator[CosmosClient]:
    with sync_client(local_stack) as cosmos:
        yield cosmos


@pytest.fixture(scope="module")
def database(client: CosmosClient) -> DatabaseProxy:
    database = client.create_database_if_not_exists("registry")
    for name, path in APP_CONTAINERS.items():
        database.create_container_if_not_exists(id=name, partition_key=PartitionKey(path=path), default_ttl=-1)
    return database


@pytest.fixture(scope="module")
def artifacts(database: DatabaseProxy) -> ContainerProxy:
    return database.get_container_client("artifacts")


def new_repo() -> str:
    """A partition of its own for each test."""
    return f"repo-{uuid.uuid4().hex[:8]}"


def absent(container: ContainerProxy, item: str, partition: str) -> bool:
    try:
        container.read_item(item, partition_key=partition)
    except cosmos_errors.CosmosResourceNotFoundError:
        return True
    return False


# --- the stack ---------------------------------------------------------------------------------------


def test_env_points_at_the_stack(local_stack: LocalStack) -> None:
    env = local_stack.env()
    assert env["COSMOS_ENDPOINT"] == f"https://127.0.0.1:{local_stack.cosmos_port}"
    assert env["COSMOS_KEY"] == COSMOS_EMULATOR_KEY
    assert Path(env["COSMOS_CA_FILE"]).is_file()
    assert (
        f"BlobEndpoint=http://127.0.0.1:{local_stack.azurite_blob_port}/devstoreaccount1;"
        in env["BLOB_CONNECTION_STRING"]
    )
    assert f"QueueEndpoint=http://127.0.0.1:{local_stack.azurite_queue_port}/" in env["QUEUE_CONNECTION_STRING"]


def test_certificate_verifies_and_connection_is_kept_alive(local_stack: LocalStack) -> None:
    context = ssl.create_default_context(cafile=str(local_stack.cert_file))  # SAN IP:127.0.0.1 checked
    connection = http.client.HTTPSConnection("127.0.0.1", local_stack.cosmos_port, context=context, timeout=5)
    try:
        peers = set()
        for _ in range(3):
            connection.request("GET", "/")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            assert (response.getheader("connection") or "").lower() != "close"
            assert connection.sock is not None
            peers.add(connection.sock.getsockname())
        assert len(peers) == 1  # one TCP connection (one TLS handshake) for all three requests
    finally:
        connection.close()


def test_sync_client_verifies_the_certificate(local_stack: LocalStack, tmp_path: Path) -> None:
    """With ssl_config the sync client checks the server against SSLCaCerts, even on 127.0.0.1."""
    wrong_ca, _ = ensure_certificate(tmp_path)
    config = SSLConfiguration()
    config.SSLCaCerts = str(wrong_ca)
    with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
        CosmosClient(
            local_stack.cosmos_endpoint,
            credential=COSMOS_EMULATOR_KEY,
            ssl_config=config,
            retry_total=0,
            retry_connect=0,
        )


def test_ensure_certificate_is_made_once(tmp_path: Path) -> None:
    cert, key = ensure_certificate(tmp_path)
    first = cert.read_bytes()
    assert ensure_certificate(tmp_path) == (cert, key)
    assert cert.read_bytes() == first


def test_blob_upload_and_download(local_stack: LocalStack) -> None:
    service = BlobServiceClient.from_connection_string(local_stack.env()["BLOB_CONNECTION_STRING"])
    container = service.get_container_client(f"c{uuid.uuid4().hex[:12]}")
    container.create_container()
    data = os.urandom(3 * 1024 * 1024 + 17)
    blob = container.get_blob_client("layer")
    blob.upload_blob(data, overwrite=True, max_concurrency=2)
    assert blob.download_blob().readall() == data
    assert blob.get_blob_properties().size == len(data)


# --- Cosmos DB -----------------------------------------------------------------------------------------


def test_create_if_not_exists_is_idempotent(client: CosmosClient, database: DatabaseProxy) -> None:
    again = client.create_database_if_not_exists("registry")
    for name, path in APP_CONTAINERS.items():
        container = again.create_container_if_not_exists(id=name, partition_key=PartitionKey(path=path), default_ttl=-1)
        properties = container.read()
        assert properties["partitionKey"]["paths"] == [path]
        assert properties["defaultTtl"] == -1
    assert {c["id"] for c in database.list_containers()} >= set(APP_CONTAINERS)


def test_missing_item_is_404_for_every_operation(artifacts: ContainerProxy) -> None:
    repo = new_repo()
    with pytest.raises(cosmos_errors.CosmosResourceNotFoundError):
        artifacts.read_item("missing", partition_key=repo)
    with pytest.raises(cosmos_errors.CosmosResourceNotFoundError):
        artifacts.replace_item("missing", {"id": "missing", "repo": repo})
    with pytest.raises(cosmos_errors.CosmosResourceNotFoundError):
        artifacts.delete_item("missing", partition_key=repo)
    with pytest.raises(cosmos_errors.CosmosResourceNotFoundError):
        artifacts.patch_item("missing", partition_key=repo, patch_operations=[{"op": "add", "path": "/a", "value": 1}])
    # an existing id in another partition is not found either
    artifacts.create_item({"id": "here", "repo": repo})
    with pytest.raises(cosmos_errors.CosmosResourceNotFoundError):
        artifacts.read_item("here", partition_key=new_repo())


def test_etag_changes_on_every_write(artifacts: ContainerProxy) -> None:
    repo = new_repo()
    etags = [artifacts.create_item({"id": "doc", "repo": repo, "v": 0})["_etag"]]
    etags.append(artifacts.replace_item("doc", {"id": "doc", "repo": repo, "v": 1})["_etag"])
    etags.append(artifacts.upsert_item({"id": "doc", "repo": repo, "v": 2})["_etag"])
    etags.append(
        artifacts.patch_item("doc", partition_key=repo, patch_operations=[{"op": "incr", "path": "/v", "value": 1}])[
            "_etag"
        ]
    )
    assert len(set(etags)) == len(etags)
    current = artifacts.read_item("doc", partition_key=repo)
    assert current["_etag"] == etags[-1] and current["v"] == 3
    with pytest.raises(cosmos_errors.CosmosAccessConditionFailedError):
        artifacts.replace_item(
            "doc", {"id": "doc", "repo": repo, "v": 9}, etag=etags[0], match_condition=_if_not_modified()
        )
    artifacts.replace_item(
        "doc", {"id": "doc", "repo": repo, "v": 4}, etag=etags[-1], match_condition=_if_not_modified()
    )


def _if_not_modified() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


def test_batch_applies_every_kind_of_operation(artifacts: ContainerProxy) -> None:
    repo = new_repo()
    old = artifacts.create_item({"id": "old", "repo": repo, "v": 1})
    artifacts.create_item({"id": "gone", "repo": repo})
    artifacts.create_item({"id": "counter", "repo": repo, "n": 1})
    results = artifacts.execute_item_batch(
        [
            ("create", ({"id": "new", "repo": repo, "v": 1},)),
            ("upsert", ({"id": "up", "repo": repo, "v": 1},)),
            ("replace", ("old", {"id": "old", "repo": repo, "v": 2}), {"if_match_etag": old["_etag"]}),
            ("read", ("new",)),
            ("delete", ("gone",)),
            ("patch", ("counter", [{"op": "incr", "path": "/n", "value": 41}])),
        ],
        partition_key=repo,
    )
    assert [r["statusCode"] for r in results] == [201, 201, 200, 200, 204, 200]
    assert results[3]["resourceBody"]["id"] == "new"
    assert artifacts.read_item("old", partition_key=repo)["v"] == 2
    assert artifacts.read_item("up", partition_key=repo)["v"] == 1
    assert artifacts.read_item("counter", partition_key=repo)["n"] == 42
    assert absent(artifacts, "gone", repo)


def _assert_batch_fails(
    artifacts: ContainerProxy, repo: str, operations: list[Any], index: int, status: int
) -> cosmos_errors.CosmosBatchOperationError:
    with pytest.raises(cosmos_errors.CosmosBatchOperationError) as raised:
        artifacts.execute_item_batch(operations, partition_key=repo)
    error = raised.value
    assert error.error_index == index
    assert error.status_code == status
    statuses = [r["statusCode"] for r in error.operation_responses]
    assert statuses == [status if i == index else 424 for i in range(len(operations))]
    return error


def test_batch_conflict_rolls_back_everything(artifacts: ContainerProxy) -> None:
    repo = new_repo()
    artifacts.create_item({"id": "existing", "repo": repo, "v": 1})
    artifacts.create_item({"id": "keep", "repo": repo})
    _assert_batch_fails(
        artifacts,
        repo,
        [
            ("upsert", ({"id": "existing", "repo": repo, "v": 2},)),
            ("create", ({"id": "fresh", "repo": repo},)),
            ("delete", ("keep",)),
            ("create", ({"id": "existing", "repo": repo},)),  # 409
            ("create", ({"id": "after", "repo": repo},)),
        ],
        index=3,
        status=409,
    )
    assert artifacts.read_item("existing", partition_key=repo)["v"] == 1
    assert not absent(artifacts, "keep", repo)
    assert absent(artifacts, "fresh", repo)
    assert absent(artifacts, "after", repo)


def test_batch_stale_etag_rolls_back_everything(artifacts: ContainerProxy) -> None:
    repo = new_repo()
    first = artifacts.create_item({"id": "doc", "repo": repo, "v": 1})
    current = artifacts.replace_item("doc", {"id": "doc", "repo": repo, "v": 2})
    _assert_batch_fails(
        artifacts,
        repo,
        [
            ("create", ({"id": "tag", "repo": repo},)),
            ("replace", ("doc", {"id": "doc", "repo": repo, "v": 3}), {"if_match_etag": first["_etag"]}),
        ],
        index=1,
        status=412,
    )
    after = artifacts.read_item("doc", partition_key=repo)
    assert after["v"] == 2 and after["_etag"] == current["_etag"]
    assert absent(artifacts, "tag", repo)


def test_batch_missing_item_rolls_back(artifacts: ContainerProxy) -> None:
    repo = new_repo()
    artifacts.create_item({"id": "doc", "repo": repo})
    _assert_batch_fails(artifacts, repo, [("delete", ("doc",)), ("delete", ("missing",))], index=1, status=404)
    _assert_batch_fails(artifacts, repo, [("delete", ("doc",)), ("read", ("missing",))], index=1, status=404)
    assert not absent(artifacts, "doc", repo)


def test_batch_item_of_another_partition_is_refused(artifacts: ContainerProxy) -> None:
    repo = new_repo()
    _assert_batch_fails(
        artifacts,
        repo,
        [("create", ({"id": "a", "repo": repo},)), ("create", ({"id": "b", "repo": "elsewhere"},))],
        index=1,
        status=400,
    )
    assert absent(artifacts, "a", repo)


def test_query_with_partition_key_and_no_predicate(artifacts: ContainerProxy) -> None:
    mine, other = new_repo(), new_repo()
    for i in range(3):
        artifacts.create_item({"id": f"m{i}", "repo": mine, "type": "tag"})
        artifacts.create_item({"id": f"o{i}", "repo": other, "type": "tag"})
    ids = {item["id"] for item in artifacts.query_items("SELECT * FROM c", partition_key=mine)}
    assert ids == {"m0", "m1", "m2"}
    typed = artifacts.query_items(
        "SELECT c.id FROM c WHERE c.type = @t",
        parameters=[{"name": "@t", "value": "tag"}],
        partition_key=other,
    )
    assert {item["id"] for item in typed} == {"o0", "o1", "o2"}
    count: list[Any] = list(artifacts.query_items("SELECT VALUE COUNT(1) FROM c", partition_key=mine))
    assert count == [3]
    # a predicate on another partition inside a partition-scoped query finds nothing
    crossed = artifacts.query_items(
        "SELECT * FROM c WHERE c.repo = @r", parameters=[{"name": "@r", "value": other}], partition_key=mine
    )
    assert list(crossed) == []


def test_order_by_with_continuation_paging(artifacts: ContainerProxy) -> None:
    repo = new_repo()
    names = [f"v{i:03d}" for i in range(25)]
    for name in reversed(names):
        artifacts.create_item({"id": f"tag-{name}", "repo": repo, "type": "tag", "name": name})
    query = "SELECT c.name FROM c WHERE c.repo = @p AND c.type = 'tag' AND c.name > @last ORDER BY c.name"
    params: list[dict[str, object]] = [{"name": "@p", "value": repo}, {"name": "@last", "value": ""}]
    pager = artifacts.query_items(query, parameters=params, partition_key=repo, max_item_count=10).by_page()
    first = [item["name"] for item in next(pager)]
    assert first == names[:10]
    token = pager.continuation_token  # type: ignore[attr-defined]
    assert token
    resumed = artifacts.query_items(query, parameters=params, partition_key=repo, max_item_count=10).by_page(token)
    rest = [[item["name"] for item in page] for page in resumed]
    assert rest == [names[10:20], names[20:]]
    descending = artifacts.query_items(
        "SELECT VALUE c.name FROM c ORDER BY c.name DESC", partition_key=repo, max_item_count=7
    )
    assert list[Any](descending) == list(reversed(names))


def test_cross_partition_query(artifacts: ContainerProxy) -> None:
    marker = uuid.uuid4().hex
    for repo in (new_repo(), new_repo()):
        artifacts.create_item({"id": "x", "repo": repo, "marker": marker})
    found = artifacts.query_items(
        "SELECT * FROM c WHERE c.marker = @m ORDER BY c.repo",
        parameters=[{"name": "@m", "value": marker}],
        enable_cross_partition_query=True,
    )
    assert len(list(found)) == 2


def test_ttl_expires_items(database: DatabaseProxy, artifacts: ContainerProxy) -> None:
    repo = new_repo()
    # container default_ttl=-1 (the app's setting): only items with a ttl of their own expire
    artifacts.create_item({"id": "upload", "repo": repo, "ttl": 1})
    artifacts.create_item({"id": "manifest", "repo": repo})
    # default_ttl=1: everything expires unless it says ttl=-1
    short = database.create_container_if_not_exists(
        id="short-lived", partition_key=PartitionKey(path="/repo"), default_ttl=1
    )
    short.create_item({"id": "temp", "repo": repo})
    short.create_item({"id": "forever", "repo": repo, "ttl": -1})
    # no default_ttl: TTL is off for the container, as in Cosmos DB; an item's ttl is ignored
    plain = database.create_container_if_not_exists(id="no-ttl", partition_key=PartitionKey(path="/repo"))
    plain.create_item({"id": "stays", "repo": repo, "ttl": 1})
    assert not absent(artifacts, "upload", repo)
    time.sleep(2.2)
    assert absent(artifacts, "upload", repo)
    assert not absent(artifacts, "manifest", repo)
    assert [i["id"] for i in artifacts.query_items("SELECT * FROM c", partition_key=repo)] == ["manifest"]
    assert absent(short, "temp", repo)
    assert [i["id"] for i in short.query_items("SELECT * FROM c", partition_key=repo)] == ["forever"]
    assert not absent(plain, "stays", repo)
    # an expired id can be created again
    artifacts.create_item({"id": "upload", "repo": repo, "ttl": 60})
    # a write restarts the clock
    short.create_item({"id": "touched", "repo": repo})
    time.sleep(0.6)
    short.upsert_item({"id": "touched", "repo": repo, "v": 2})
    time.sleep(0.6)
    assert short.read_item("touched", partition_key=repo)["v"] == 2


def test_replacing_a_container_keeps_its_items(database: DatabaseProxy) -> None:
    container = database.create_container_if_not_exists(id="replaced", partition_key=PartitionKey(path="/repo"))
    container.upsert_item({"id": "doc", "repo": "r"})
    database.replace_container(container, partition_key=PartitionKey(path="/repo"), default_ttl=-1)
    assert container.read()["defaultTtl"] == -1
    assert container.read_item("doc", partition_key="r")["id"] == "doc"


async def test_async_client_batch_and_read(local_stack: LocalStack, database: DatabaseProxy) -> None:
    repo = new_repo()
    # No ssl_config here: azure-cosmos 4.17.1's aio client crashes with one that has only SSLCaCerts
    # (it hands aiohttp the client-certificate pair (None, None): "certfile should be a valid filesystem
    # path"); without one it skips verification for 127.0.0.1, as the sync client does.
    async with AsyncCosmosClient(local_stack.cosmos_endpoint, credential=COSMOS_EMULATOR_KEY) as client:
        db = await client.create_database_if_not_exists("registry")
        container = await db.create_container_if_not_exists(
            id="artifacts", partition_key=PartitionKey(path="/repo"), default_ttl=-1
        )
        results = await container.execute_item_batch(
            [
                ("upsert", ({"id": "manifest", "repo": repo},)),
                ("upsert", ({"id": "tag-latest", "repo": repo},)),
            ],
            partition_key=repo,
        )
        assert [r["statusCode"] for r in results] == [201, 201]
        assert (await container.read_item("tag-latest", partition_key=repo))["id"] == "tag-latest"
        with pytest.raises(cosmos_errors.CosmosBatchOperationError) as raised:
            await container.execute_item_batch(
                [
                    ("upsert", ({"id": "other", "repo": repo},)),
                    ("create", ({"id": "manifest", "repo": repo},)),
                ],
                partition_key=repo,
            )
        assert raised.value.error_index == 1
        with pytest.raises(cosmos_errors.CosmosResourceNotFoundError):
            await container.read_item("other", partition_key=repo)
        names = [i["id"] async for i in container.query_items("SELECT c.id FROM c", partition_key=repo)]
        assert sorted(names) == ["manifest", "tag-latest"]


# --- durability ----------------------------------------------------------------------------------------


def _write_everything(stack: LocalStack) -> dict[str, Any]:
    """Writes of every kind; returns what must be found after a restart."""
    with sync_client(stack) as client:
        database = client.create_database_if_not_exists("registry")
        container = database.create_container_if_not_exists(
            id="artifacts", partition_key=PartitionKey(path="/repo"), default_ttl=-1
        )
        dropped = database.create_container_if_not_exists(id="dropped", partition_key=PartitionKey(path="/repo"))
        dropped.create_item({"id": "lost", "repo": "r"})
        database.delete_container("dropped")
        container.create_item({"id": "created", "repo": "r", "v": 1})
        container.create_item({"id": "deleted", "repo": "r"})
        container.delete_item("deleted", partition_key="r")
        container.create_item({"id": "replaced", "repo": "r", "v": 1})
        replaced = container.replace_item("replaced", {"id": "replaced", "repo": "r", "v": 2})
        container.upsert_item({"id": "patched", "repo": "r", "n": 1})
        container.patch_item("patched", partition_key="r", patch_operations=[{"op": "incr", "path": "/n", "value": 1}])
        container.execute_item_batch(
            [("create", ({"id": "batch-1", "repo": "r"},)), ("create", ({"id": "batch-2", "repo": "r"},))],
            partition_key="r",
        )
        with pytest.raises(cosmos_errors.CosmosBatchOperationError):
            container.execute_item_batch(
                [("create", ({"id": "never", "repo": "r"},)), ("create", ({"id": "created", "repo": "r"},))],
                partition_key="r",
            )
        container.create_item({"id": "expiring", "repo": "r", "ttl": 1})
        for i in range(200):
            container.upsert_item({"id": f"bulk-{i}", "repo": f"p{i % 7}", "i": i})
        last = container.upsert_item({"id": "last", "repo": "r", "payload": "x" * 10_000})
    return {"replaced_etag": replaced["_etag"], "last_etag": last["_etag"]}


def _check_everything(stack: LocalStack, expected: dict[str, Any]) -> None:
    with sync_client(stack) as client:
        database = client.get_database_client("registry")
        assert {c["id"] for c in database.list_containers()} == {"artifacts"}
        container = database.get_container_client("artifacts")
        assert container.read()["defaultTtl"] == -1
        assert container.read_item("created", partition_key="r")["v"] == 1
        assert absent(container, "deleted", "r")
        replaced = container.read_item("replaced", partition_key="r")
        assert replaced["v"] == 2 and replaced["_etag"] == expected["replaced_etag"]
        assert container.read_item("patched", partition_key="r")["n"] == 2
        assert not absent(container, "batch-1", "r") and not absent(container, "batch-2", "r")
        assert absent(container, "never", "r")
        last = container.read_item("last", partition_key="r")
        assert last["_etag"] == expected["last_etag"] and len(last["payload"]) == 10_000
        count = list(container.query_items("SELECT VALUE COUNT(1) FROM c", enable_cross_partition_query=True))
        assert sum(count) == 200 + 6  # bulk + created, replaced, patched, batch-1, batch-2, last
        # "expiring" (ttl 1 s) was written before "last": 2 s after last's _ts (whole seconds) it is gone
        time.sleep(max(0.0, last["_ts"] + 2.05 - time.time()))
        assert absent(container, "expiring", "r")
        # ids and rids keep working after the restart
        container.create_item({"id": "after-restart", "repo": "r"})
        with pytest.raises(cosmos_errors.CosmosResourceExistsError):
            container.create_item({"id": "created", "repo": "r"})


def _restart(state_dir: Path) -> LocalStack:
    again = LocalStack.on_free_ports(state_dir)
    again.start()
    return again


def test_data_survives_a_clean_restart(tmp_path: Path) -> None:
    with LocalStack.on_free_ports(tmp_path) as first:
        expected = _write_everything(first)
    second = _restart(tmp_path)
    try:
        _check_everything(second, expected)
    finally:
        second.stop()
    # and again, after a compaction of a journal with writes on top of a compacted one
    third = _restart(tmp_path)
    try:
        with sync_client(third) as client:
            container = client.get_database_client("registry").get_container_client("artifacts")
            assert not absent(container, "after-restart", "r")
    finally:
        third.stop()


def test_data_survives_kill_9(tmp_path: Path) -> None:
    first = LocalStack.on_free_ports(tmp_path)
    first.start()
    try:
        expected = _write_everything(first)
        pids = first.pids
    finally:
        first.kill()
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # the crash left the pid file of the dead server behind: the next one must start anyway
    assert (tmp_path / "cosmos" / "server.pid").exists()
    second = _restart(tmp_path)
    try:
        _check_everything(second, expected)
    finally:
        second.stop()


def test_acknowledged_writes_survive_kill_9_under_load(tmp_path: Path) -> None:
    """kill -9 amid a stream of writes: every acknowledged one is there, batches all or nothing."""
    stack = LocalStack.on_free_ports(tmp_path)
    stack.start()
    acknowledged: list[int] = []
    failures: list[BaseException] = []
    try:
        with sync_client(stack, retry_total=0, retry_connect=0) as client:
            database = client.create_database_if_not_exists("registry")
            container = database.create_container_if_not_exists(
                id="artifacts", partition_key=PartitionKey(path="/repo"), default_ttl=-1
            )

            def write() -> None:
                try:
                    for i in range(1_000_000):
                        if i % 2:
                            container.upsert_item({"id": f"doc-{i}", "repo": f"p{i % 5}", "i": i})
                        else:
                            container.execute_item_batch(
                                [
                                    ("create", ({"id": f"doc-{i}", "repo": "p0", "i": i},)),
                                    ("create", ({"id": f"pair-{i}", "repo": "p0", "i": i},)),
                                ],
                                partition_key="p0",
                            )
                        acknowledged.append(i)
                except BaseException as error:  # the server went away
                    failures.append(error)

            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            deadline = time.monotonic() + 60
            while len(acknowledged) < 300 and writer.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert writer.is_alive() and len(acknowledged) >= 300, failures
            stack.kill()  # while the writer is busy
            writer.join(30)
            assert not writer.is_alive() and failures
    finally:
        stack.kill()
    done = list(acknowledged)
    second = _restart(tmp_path)
    try:
        with sync_client(second) as client:
            container = client.get_database_client("registry").get_container_client("artifacts")
            found = {
                item["id"]: item["i"]
                for item in container.query_items("SELECT c.id, c.i FROM c", enable_cross_partition_query=True)
            }
    finally:
        second.stop()
    for i in done:
        assert found[f"doc-{i}"] == i
        if i % 2 == 0:
            assert found[f"pair-{i}"] == i
    in_flight = done[-1] + 1  # written or not, but a batch is never half there
    assert (f"doc-{in_flight}" in found) == (f"pair-{in_flight}" in found) or in_flight % 2
    assert set(found) <= {f"doc-{i}" for i in range(in_flight + 1)} | {f"pair-{i}" for i in range(in_flight + 1)}


def test_paging_without_order_by_sees_every_item_once(artifacts: ContainerProxy) -> None:
    repo = new_repo()
    for i in range(30):
        artifacts.create_item({"id": f"d{i:02d}", "repo": repo, "v": 0})
    for i in range(0, 30, 3):  # replaced items keep their place
        artifacts.replace_item(f"d{i:02d}", {"id": f"d{i:02d}", "repo": repo, "v": 1})
    pages = artifacts.query_items("SELECT c.id FROM c", partition_key=repo, max_item_count=7).by_page()
    seen = [item["id"] for page in pages for item in page]
    assert sorted(seen) == [f"d{i:02d}" for i in range(30)]


def test_torn_last_journal_line_is_dropped(tmp_path: Path) -> None:
    with LocalStack.on_free_ports(tmp_path) as first, sync_client(first) as client:
        database = client.create_database_if_not_exists("registry")
        container = database.create_container_if_not_exists(id="c", partition_key=PartitionKey(path="/repo"))
        container.create_item({"id": "acknowledged", "repo": "r"})
    journal = tmp_path / "cosmos" / "journal.log"
    line = json.loads(journal.read_text().splitlines()[-1])
    line["d"] = {**line["d"], "id": "torn", "_rid": "torn-rid"}
    with journal.open("a") as out:
        out.write(json.dumps(line)[:-10])  # a write cut short by a kill: no newline
    with LocalStack.on_free_ports(tmp_path) as second, sync_client(second) as client:
        container = client.get_database_client("registry").get_container_client("c")
        assert not absent(container, "acknowledged", "r")
        assert absent(container, "torn", "r")


def test_stop_leaves_no_process_and_one_server_per_data_dir(tmp_path: Path) -> None:
    stack = LocalStack.on_free_ports(tmp_path)
    stack.start()
    try:
        intruder = LocalStack.on_free_ports(tmp_path)
        with pytest.raises(StackError, match="in use"):
            intruder.start(timeout=20)
        assert not intruder.running
        pids = stack.pids
    finally:
        stack.stop()
    assert not stack.running
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_start_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        stack = LocalStack.on_free_ports(tmp_path)
        stack.cosmos_port = taken.getsockname()[1]
        with pytest.raises(StackError, match="already in use"):
            stack.start()
        assert not stack.running


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_cosmos_journal_is_private(tmp_path: Path) -> None:
    """The journal holds password hashes and webhook headers: 0600 in a 0700 folder, even when an older
    stack left them world-readable and whatever the umask of whoever runs `make run`."""
    old_umask = os.umask(0o022)
    try:
        legacy = tmp_path / "cosmos"
        legacy.mkdir(mode=0o755)
        (legacy / "journal.log").write_text("")
        (legacy / "journal.log").chmod(0o644)
        with LocalStack.on_free_ports(tmp_path) as stack, sync_client(stack) as client:
            database = client.create_database_if_not_exists("registry")
            container = database.create_container_if_not_exists(id="c", partition_key=PartitionKey(path="/repo"))
            container.create_item({"id": "secret", "repo": "r", "hash": "$argon2id$..."})
            assert _mode(legacy) == 0o700
            assert _mode(legacy / "journal.log") == 0o600  # compacted on start: a new file replaced it
            assert _mode(legacy / "server.pid") == 0o600
            assert _mode(tmp_path / "azurite") == 0o700
        # the journal a restart compacts into is made private as well
        with LocalStack.on_free_ports(tmp_path):
            assert _mode(legacy / "journal.log") == 0o600
            assert sorted(p.name for p in legacy.iterdir() if _mode(p) & 0o077) == []
    finally:
        os.umask(old_umask)
