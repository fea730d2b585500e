"""Geo-replication under faults (issue 12, step 6), each through devhosts of three regions:

- one region's Storage account unreachable during replication (a TCP relay in front of its Azurite account,
  stopped): its copies stay pending with the reason and are retried while the others complete; once it is
  reachable again it catches up;
- the worker SIGKILLed in the middle of copying an image: after a restart the copy completes;
- a delete racing the replication: no region is left with a manifest whose blobs are missing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from services.devhost.stack import LocalStack, free_port
from services.events.models import EventTarget, RegistryEvent
from services.events.outbox import EventPublisher, bus_message
from services.management.store import RegistryStore
from services.platform.settings import azurite_connection_string
from services.registry.store import repo_key
from services.replication.resources import ReplicationChanges, put_replication
from services.replication.store import ImageStatusStore
from tests.conftest import GEO_REGIONS, Devhost, running_devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, registry_client, settings_from_env
from tests.integration.geo import (
    OCI_INDEX,
    geo_devhost_env,
    geo_registry,
    push_multi_platform,
    regional_blobs,
    wait_replicated,
)

pytestmark = pytest.mark.integration


class Relay:
    """A TCP relay to Azurite's blob port that can be cut and restored (an account's network). It rewrites
    the requests' Host to Azurite's own address: Azurite copies between its accounts only when the request
    names the host the copy source names."""

    def __init__(self, target_port: int) -> None:
        self.port, self._target = free_port(), target_port
        while len(str(self.port)) != len(str(target_port)):  # the rewrite keeps the bytes' length
            self.port = free_port()
        self._host = (b"Host: 127.0.0.1:%d\r\n" % self.port, b"Host: 127.0.0.1:%d\r\n" % target_port)
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            with suppress(OSError):
                self._server.close()
            self._server = None
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
            self._sockets.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, self._host), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, rewrite: tuple[bytes, bytes] | None) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data.replace(*rewrite) if rewrite else data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="module")
def relay(local_stack: LocalStack) -> Iterator[Relay]:
    instance = Relay(local_stack.azurite_blob_port)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def relayed_devhost(
    local_stack: LocalStack, entra_issuer: TestIssuer, relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Devhost]:
    """A devhost whose japaneast account is reached through `relay`, retrying a failed copy 20 times."""
    env = geo_devhost_env(local_stack, entra_issuer) | {"BUS_MAX_DELIVERIES": "20"}
    accounts = json.loads(env["REGION_STORAGE"])
    accounts["japaneast"] = azurite_connection_string(relay.port, account="acrjapaneast")
    env["REGION_STORAGE"] = json.dumps(accounts)
    with running_devhost(env, tmp_path_factory.mktemp("geo-relayed")) as host:
        yield host


async def test_an_unreachable_region_catches_up_when_it_is_back(
    relayed_devhost: Devhost, relay: Relay, stores: Stores
) -> None:
    registry = await geo_registry(stores)
    relay.stop()
    try:
        with registry_client(relayed_devhost, registry) as http:
            pushed = push_multi_platform(http, "app", "v1")
        statuses, repo = ImageStatusStore(stores.metadata), repo_key(registry, "app")
        for _ in range(600):
            status = await statuses.get(repo, pushed.index)
            japan = status.regions.get("japaneast") if status else None
            if status and status.regions["eastus"].state == "copied" and japan and japan.attempts >= 1:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the reachable regions did not go on: {status}")
        assert japan.state == "pending" and japan.reason  # retried, not failed
    finally:
        relay.start()
    await wait_replicated(stores, registry, "app", pushed.index, seconds=90)  # redelivered: it catches up
    found = await regional_blobs(settings_from_env(relayed_devhost.env), registry, list(pushed.blobs))
    assert all(found[region] == pushed.blobs for region in GEO_REGIONS)


def _wait_dead(devhost: Devhost, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{devhost.url}/health/live", timeout=1)
        except httpx.HTTPError:
            return
        time.sleep(0.1)
    raise AssertionError("the devhost did not die")


async def test_a_worker_killed_mid_copy_completes_the_copy_after_a_restart(
    local_stack: LocalStack, entra_issuer: TestIssuer, stores: Stores, tmp_path: Path
) -> None:
    env = geo_devhost_env(local_stack, entra_issuer) | {"BUS_VISIBILITY_TIMEOUT_SECONDS": "3"}
    settings = settings_from_env(env)
    registry = await geo_registry(stores, regions=("westeurope",))  # no replica yet: the pushes copy nothing
    (tmp_path / "first").mkdir()
    with running_devhost(env | {"FAULT_KILL_MID_COPY": "true"}, tmp_path / "first") as first:
        with registry_client(first, registry) as http:
            pushed = push_multi_platform(http, "app", "v1")
        doc = await RegistryStore(stores.metadata).get_registry(registry)
        assert doc is not None
        for region in ("eastus", "japaneast"):
            await put_replication(stores.metadata, doc, region, ReplicationChanges(location=region))
        # the index's push event once more, now that there are regions to copy it to (as a push would)
        target = EventTarget(
            mediaType=OCI_INDEX, size=len(pushed.blobs[pushed.index]), digest=pushed.index, repository="app", tag="v1"
        )
        publisher = EventPublisher(settings, stores.metadata)
        await publisher.open()
        try:
            await publisher.bus.publish(bus_message(registry, RegistryEvent(action="push", target=target)))
        finally:
            await publisher.close()
        await asyncio.to_thread(_wait_dead, first)  # the worker killed itself after its first copy
    found = await regional_blobs(settings, registry, list(pushed.blobs))
    missing = [(r, d) for r in ("eastus", "japaneast") for d, data in found[r].items() if data is None]
    assert missing  # the image was half copied when it died (and nothing half-copied is under blobs/)
    assert all(data is None or data == pushed.blobs[d] for r in GEO_REGIONS for d, data in found[r].items())
    (tmp_path / "second").mkdir()
    with running_devhost(env, tmp_path / "second"):  # restarted: the message comes back after its lock lapses
        await wait_replicated(stores, registry, "app", pushed.index, seconds=90)
    found = await regional_blobs(settings, registry, list(pushed.blobs))
    assert all(found[region] == pushed.blobs for region in GEO_REGIONS)


async def test_a_delete_racing_replication_leaves_no_manifest_without_its_blobs(
    relayed_devhost: Devhost, stores: Stores
) -> None:
    registry = await geo_registry(stores)
    with registry_client(relayed_devhost, registry) as http:
        doomed = push_multi_platform(http, "app", "doomed")
        kept = push_multi_platform(http, "app", "kept")
        for digest in [doomed.index, *doomed.manifests]:  # at once, while both are being replicated
            assert http.delete(f"/v2/app/manifests/{digest}").status_code == 202
    for digest in [kept.index, *kept.manifests]:
        await wait_replicated(stores, registry, "app", digest, seconds=90)
    statuses, repo = ImageStatusStore(stores.metadata), repo_key(registry, "app")
    for _ in range(300):  # the deleted image's status goes too, whichever came first
        if all([await statuses.get(repo, d) is None for d in [doomed.index, *doomed.manifests]]):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("a deleted image still has a replication status")
    found = await regional_blobs(settings_from_env(relayed_devhost.env), registry, list(kept.blobs))
    for region in GEO_REGIONS:
        with registry_client(relayed_devhost, registry) as http:
            http.headers["Host"] = http.headers["Host"].replace(registry, f"{registry}.{region}.geo")
            assert http.get("/v2/app/tags/list").json()["tags"] == ["kept"]
            assert http.head(f"/v2/app/manifests/{doomed.index}").status_code == 404
        assert found[region] == kept.blobs, region  # what is left is whole in every region
