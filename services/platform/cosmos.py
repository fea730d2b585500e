"""The one Cosmos DB adapter: the client, the containers, and the few operations every store uses (point
read, single-partition query, create, upsert, replace and delete with ETag conditions, patch, transactional
batch). It knows no document shapes: each domain keeps its documents and queries in its own store module,
next to its rules:

    registries   [/registry]  the registry resource (services/management/store.py) and its children in the
                              registry's partition: identities (services/auth/store.py), rate-limit buckets
                              (services/auth/store.py), webhooks (services/webhooks/store.py)
    repositories [/registry]  one document per repository (services/registry/store.py)
    artifacts    [/repo]      manifests, tags, blob links and upload sessions of one repository
                              (services/registry/store.py) and the outbox of the events its changes raise
                              (services/events/store.py), partition "<registry>/<repository>"
    deliveries   [/webhook]   webhook delivery records (services/webhooks/store.py)

Read-modify-write documents are replaced with an ETag condition; a lost race is `ConcurrentUpdate`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy
from azure.cosmos.exceptions import CosmosAccessConditionFailedError, CosmosBatchOperationError
from pydantic import BaseModel, ConfigDict, Field

from services.platform.availability import COSMOS, DependencyTransport
from services.platform.settings import Settings

CONTAINERS = (
    ("registries", "/registry"),
    ("repositories", "/registry"),
    ("artifacts", "/repo"),
    ("deliveries", "/webhook"),
)
# Cosmos answers 429 with how long to wait (usually milliseconds), so a throttled call is retried after
# exactly that, bounded in time by `cosmos_throttle_wait_seconds`. Not the SDK's 9 attempts: a query runs
# that policy at two levels (each page fetch inside the query's own retry), so attempts multiply there.
THROTTLE_RETRY_ATTEMPTS = 3

# (operation, arguments[, options]): options such as {"if_match_etag": etag} make an operation conditional.
BatchOperation = tuple[str, tuple[Any, ...]] | tuple[str, tuple[Any, ...], dict[str, Any]]


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Document(BaseModel):
    """A Cosmos document: every store's models derive from this."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str
    etag: str | None = Field(default=None, alias="_etag", exclude=True)

    def to_item(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class ConcurrentUpdate(Exception):
    """A conditional write lost against another writer (stale ETag). From a batch, `index` is the operation
    that lost (None otherwise)."""

    def __init__(self, message: str = "", *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class OperationNotFound(ResourceNotFoundError):
    """A batch operation's document was not there (a ResourceNotFoundError): `index` is that operation."""

    def __init__(self, message: str, *, index: int) -> None:
        super().__init__(message)
        self.index = index


def cosmos_retry_options(settings: Settings) -> dict[str, Any]:
    """The CosmosClient's retry and timeout keywords: bounded so one call gives up within a request's budget
    (the SDK's defaults: 65 s read timeout, up to 30 s of throttling waits) and the API answers 503.

    Failed connections are retried for every operation (nothing reached Cosmos); a request that was sent and
    got no answer is retried only when it reads (`retry_write` stays off), so a create is never repeated
    blindly. Our read-modify-write documents carry ETags, so a lost race shows as ConcurrentUpdate.
    """
    return {
        "retry_total": settings.dependency_retry_total,
        "retry_connect": settings.dependency_retry_total,
        "retry_read": settings.dependency_retry_total,
        "retry_backoff_max": settings.dependency_retry_backoff_seconds,
        "retry_backoff_factor": settings.dependency_retry_backoff_seconds,
        "retry_throttle_total": THROTTLE_RETRY_ATTEMPTS,
        "retry_throttle_backoff_max": settings.cosmos_throttle_wait_seconds,
        "connection_timeout": settings.dependency_connect_timeout_seconds,
        "read_timeout": settings.cosmos_read_timeout_seconds,
    }


class Cosmos:
    """The client and containers of the registry's database, shared by every domain's store."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: CosmosClient | None = None
        self._db: DatabaseProxy | None = None
        self._containers: dict[str, ContainerProxy] = {}
        # The API and its readiness probe may both open at once: one client, not two.
        self._opening = asyncio.Lock()

    @property
    def settings(self) -> Settings:
        return self._settings

    async def open(self) -> None:
        """Create the client (it makes network calls, hence not in __init__) and the containers."""
        async with self._opening:
            if self._client is None:
                await self._open()

    async def _open(self) -> None:
        kwargs: dict[str, Any] = {}
        if self._settings.cosmos_ca_file:
            # The aio transport (aiohttp) takes a CA bundle path as `connection_verify`.
            kwargs["connection_verify"] = self._settings.cosmos_ca_file
        if self._settings.cosmos_endpoint.startswith("http://"):
            kwargs["enable_endpoint_discovery"] = False
        kwargs["transport"] = DependencyTransport(COSMOS, use_env_settings=self._settings.proxy_from_environment)
        kwargs.update(cosmos_retry_options(self._settings))
        client = CosmosClient(self._settings.cosmos_endpoint, credential=self._credential(), **kwargs)
        try:
            db = await client.create_database_if_not_exists(self._settings.cosmos_database)
            for name, key in CONTAINERS:
                self._containers[name] = await db.create_container_if_not_exists(
                    id=name, partition_key=PartitionKey(path=key), default_ttl=-1
                )
        except BaseException:
            # Cosmos unreachable at start: the next request opens again; leave no session behind each time.
            self._containers.clear()
            await client.close()
            raise
        self._client, self._db = client, db

    def _credential(self) -> Any:
        """The account key, or in Azure the managed identity (AZURE_CLIENT_ID names the user-assigned one)."""
        if self._settings.cosmos_auth == "identity":
            from azure.identity.aio import DefaultAzureCredential

            return DefaultAzureCredential()
        return self._settings.cosmos_key

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._containers.clear()

    def container(self, name: str) -> ContainerProxy:
        if not self._containers:
            raise RuntimeError("Cosmos.open() was not awaited")
        return self._containers[name]

    # --- the operations the stores use ------------------------------------------------------------------
    async def read(self, container: str, item: str, partition: str) -> dict[str, Any] | None:
        """A point read; None when the document does not exist."""
        try:
            doc: dict[str, Any] = await self.container(container).read_item(item, partition_key=partition)
        except ResourceNotFoundError:
            return None
        return doc

    async def query(
        self, container: str, sql: str, params: dict[str, Any], partition: str, page: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """A query of one partition (the partition also appears in the SQL's predicate)."""
        items = self.container(container).query_items(
            sql,
            parameters=[{"name": k, "value": v} for k, v in params.items()],
            partition_key=partition,
            max_item_count=page,
        )
        async for item in items:
            yield item

    async def query_across(
        self, container: str, sql: str, params: dict[str, Any] | None = None, page: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """A cross-partition query (background jobs and listings of everything only, never a hot path)."""
        items = self.container(container).query_items(
            sql, parameters=[{"name": k, "value": v} for k, v in (params or {}).items()], max_item_count=page
        )
        async for item in items:
            yield item

    async def create(self, container: str, doc: Document) -> dict[str, Any] | None:
        """Create the document; None when one with its id exists already."""
        try:
            created: dict[str, Any] = await self.container(container).create_item(doc.to_item())
        except ResourceExistsError:
            return None
        return created

    async def upsert(self, container: str, doc: Document) -> dict[str, Any]:
        written: dict[str, Any] = await self.container(container).upsert_item(doc.to_item())
        return written

    async def replace(self, container: str, doc: Document) -> dict[str, Any]:
        """Write the document back only if nobody else did since it was read (its ETag)."""
        try:
            written: dict[str, Any] = await self.container(container).replace_item(
                doc.id, doc.to_item(), etag=doc.etag, match_condition=MatchConditions.IfNotModified
            )
        except (CosmosAccessConditionFailedError, ResourceNotFoundError) as exc:
            raise ConcurrentUpdate(doc.id) from exc
        return written

    async def delete(self, container: str, item: str, partition: str, etag: str | None = None) -> bool:
        """Delete the document (only if still as read, when an ETag is given); False when it was not there
        (or had changed)."""
        conditions: dict[str, Any] = {}
        if etag is not None:
            conditions = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        try:
            await self.container(container).delete_item(item, partition_key=partition, **conditions)
        except (CosmosAccessConditionFailedError, ResourceNotFoundError):
            return False
        return True

    async def patch(self, container: str, item: str, partition: str, operations: list[dict[str, Any]]) -> bool:
        """Patch the document; False when it is not there."""
        try:
            await self.container(container).patch_item(item, partition_key=partition, patch_operations=operations)
        except ResourceNotFoundError:
            return False
        return True

    async def batch(self, container: str, partition: str, operations: list[BatchOperation]) -> list[dict[str, Any]]:
        """All operations or none, in one partition (ResourceNotFoundError / ConcurrentUpdate as a single
        operation would raise them; a conditional create or replace that lost a race is ConcurrentUpdate; both
        carry the `index` of the operation that failed: OperationNotFound is the ResourceNotFoundError).
        The operations' results, in order (`resourceBody`: the document as written)."""
        try:
            results = await self.container(container).execute_item_batch(
                batch_operations=operations, partition_key=partition
            )
        except CosmosBatchOperationError as exc:
            index = exc.error_index
            status = index is not None and exc.operation_responses[index].get("statusCode")
            if status == 404 and index is not None:
                raise OperationNotFound(str(exc), index=index) from exc
            if status in (409, 412):  # created meanwhile, or changed since read: both a lost race
                raise ConcurrentUpdate(str(exc), index=index) from exc
            raise
        return list(results)
