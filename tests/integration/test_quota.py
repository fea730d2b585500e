"""Storage quotas (services/registry/quota.py) over HTTP: refused before staging where the size is announced,
at the closing PUT otherwise, never for a blob already stored; listUsages reports the quota as the limit."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import httpx
import pytest

from services.management.access import update_registry
from services.management.registries import STORAGE_INCLUDED, create_registry, storage_limit, usages
from services.management.store import RegistryStore
from services.registry.ledger import BlobLedger
from tests.conftest import Devhost, running_devhost
from tests.integration.conftest import Stores, registry_client, unique_registry_name

pytestmark = pytest.mark.integration

QUOTA = 10_000


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def fresh_devhost(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    """A devhost that reads registry documents afresh on each request, so a quota set now applies now."""
    with running_devhost(stack | {"AUTH_CACHE_SECONDS": "0"}, tmp_path_factory.mktemp("quota")) as host:
        yield host


@pytest.fixture
async def quota_registry(fresh_devhost: Devhost, stores: Stores) -> tuple[str, httpx.Client]:
    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name)
    await update_registry(stores.metadata, name, auth_disabled=True, storage_quota=QUOTA)
    return name, registry_client(fresh_devhost, name)


def denied(reply: httpx.Response) -> str:
    assert reply.status_code == 403, reply.text
    error = reply.json()["errors"][0]
    assert error["code"] == "DENIED" and error["detail"]["limit"] == QUOTA
    return str(error["message"])


async def test_pushes_past_the_quota_are_refused(quota_registry: tuple[str, httpx.Client], stores: Stores) -> None:
    name, http = quota_registry
    ledger = BlobLedger(stores.metadata)
    first = os.urandom(6_000)
    assert http.post("/v2/q/a/blobs/uploads/", params={"digest": digest_of(first)}, content=first).status_code == 201
    # a monolithic upload announcing its length: refused before anything is staged
    second = os.urandom(6_000)
    message = denied(http.post("/v2/q/a/blobs/uploads/", params={"digest": digest_of(second)}, content=second))
    assert "storage quota exceeded" in message and str(QUOTA) in message
    assert await stores.blobs.size(name, digest_of(second)) is None
    # the same bytes again add nothing: never refused
    assert http.post("/v2/q/b/blobs/uploads/", params={"digest": digest_of(first)}, content=first).status_code == 201
    assert await ledger.storage_bytes(name) == 6_000

    # a chunked upload: each PATCH is checked with the session's bytes so far
    session = http.post("/v2/q/c/blobs/uploads/").headers["Location"]
    part = os.urandom(3_000)
    fits = http.patch(session, content=part, headers={"Content-Range": "0-2999"})
    assert fits.status_code == 202, fits.text
    denied(http.patch(fits.headers["Location"], content=part, headers={"Content-Range": "3000-5999"}))
    done = http.put(fits.headers["Location"], params={"digest": digest_of(part)})
    assert done.status_code == 201, done.text
    assert await ledger.storage_bytes(name) == 9_000

    # a body without Content-Length is checked at the closing PUT, once its size is known
    session = http.post("/v2/q/d/blobs/uploads/").headers["Location"]
    late = os.urandom(2_000)
    streamed = http.put(session, params={"digest": digest_of(late)}, content=iter([late[:1_000], late[1_000:]]))
    denied(streamed)
    assert http.get(session).status_code == 404  # the session went with its bytes
    assert await ledger.storage_bytes(name) == 9_000

    # the operator lifts the quota: the tier's included storage is the limit again
    await update_registry(stores.metadata, name, storage_quota=0)
    assert http.post("/v2/q/a/blobs/uploads/", params={"digest": digest_of(second)}, content=second).status_code == 201
    doc = await RegistryStore(stores.metadata).get_registry(name)
    assert doc is not None and storage_limit(doc) == STORAGE_INCLUDED[doc.sku]


async def test_list_usages_reports_the_quota_as_the_limit(
    quota_registry: tuple[str, httpx.Client], stores: Stores
) -> None:
    name, _ = quota_registry
    doc = await RegistryStore(stores.metadata).get_registry(name)
    assert doc is not None
    size = next(u for u in await usages(stores.metadata, doc) if u.name == "Size")
    assert size.limit == QUOTA and size.current == 0
