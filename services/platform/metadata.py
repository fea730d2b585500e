"""Cosmos DB adapter: the registry's metadata, and the only module that speaks to Cosmos.

Document model (database `registry`; partition key in brackets)::

    registries   [/registry]  one document per registry resource
        {id: <registry>, registry: <registry>, type: "registry", loginServer, sku, created,
         adminUserEnabled, anonymousPullEnabled, authDisabled, networkRuleSet}
                              plus the registry's identities (admin user, tokens, scope maps, role
                              assignments) in its partition: see platform/access.py
    repositories [/registry]  one document per repository, so the catalog is one ordered
                              single-partition query (never a walk of storage)
        {id: <name with "/" as "|">, registry, type: "repository", name, created}
    artifacts    [/repo]      everything of one repository, partition "<registry>/<name>":
        manifest:<digest>  {type: "manifest", digest, mediaType, size, artifactType, subject,
                            referrer (the descriptor it adds to its subject's referrers index),
                            configMediaType, blobs, children, content (base64, when small), created}
        tag:<tag>          {type: "tag", name, digest, mediaType, size, updated}
                           carries what HEAD needs, so HEAD by tag is exactly one point read
        blob:<digest>      {type: "blob", digest, size, created}
                           the repository's link to a registry-wide, content-addressed blob
        upload:<uuid>      {type: "upload", offset, blocks, hashState, ...} an upload session;
                           expires (ttl) when abandoned
        outbox:<uuid>      {type: "outbox", registry, events: [ACR payloads], outbox: "pending" |
                            "published", created, published, ttl} the events of one change, written in
                           the same batch as the change; marked and expiring once on the bus
    registries (children)  webhook:<name> {type: "webhook", name, serviceUri, customHeaders, actions,
                           status, scope, ...} in the registry's partition
    deliveries   [/webhook]  webhook delivery records, partition "<registry>/<webhook>":
        delivery:<event id>  {type: "delivery", eventId, state, attempts: [request, response, status,
                              duration], event, created, ttl 30 days}; the id makes delivery idempotent

A manifest and its tags are written in one transactional batch of the repository's partition, so readers
never see a tag pointing at a manifest that is not there; the outbox document of the events the change
raises goes in the same batch, so an event is never lost nor raised for a change that did not happen.
Read-modify-write documents (upload sessions, delivery records) are replaced with an ETag condition.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy
from azure.cosmos.exceptions import CosmosAccessConditionFailedError, CosmosBatchOperationError
from pydantic import BaseModel, ConfigDict, Field

from services.platform.availability import COSMOS, DependencyTransport
from services.platform.settings import Settings

UPLOAD_TTL_SECONDS = 7 * 24 * 3600  # Blob Storage drops uncommitted blocks after 7 days, too.
DELIVERY_TTL_SECONDS = 30 * 24 * 3600  # webhook delivery records are kept 30 days
KNOWN_REPOSITORY_SECONDS = 60.0


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Document(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str
    etag: str | None = Field(default=None, alias="_etag", exclude=True)

    def to_item(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class RegistryDoc(Document):
    registry: str
    type: Literal["registry"] = "registry"
    loginServer: str
    sku: Literal["Basic", "Standard", "Premium"] = "Standard"
    created: str = Field(default_factory=utcnow)
    # Identity and access (services/auth): ACR's registry properties, plus `authDisabled`, which is ours
    # and for development and test registries only (no authentication; every caller has every right).
    adminUserEnabled: bool = False
    anonymousPullEnabled: bool = False
    authDisabled: bool = False
    networkRuleSet: dict[str, Any] | None = None


class RepositoryDoc(Document):
    registry: str
    type: Literal["repository"] = "repository"
    name: str
    created: str = Field(default_factory=utcnow)


class ManifestDoc(Document):
    repo: str
    type: Literal["manifest"] = "manifest"
    digest: str
    mediaType: str
    size: int
    artifactType: str | None = None
    subject: str | None = None
    referrer: dict[str, Any] | None = None
    configMediaType: str | None = None
    chartName: str | None = None  # a Helm chart's name and version (from its config), for chart events
    chartVersion: str | None = None
    blobs: list[str] = Field(default_factory=list)
    children: list[str] = Field(default_factory=list)
    content: str | None = None  # base64 of the manifest bytes when small enough to keep inline
    created: str = Field(default_factory=utcnow)

    def inline_content(self) -> bytes | None:
        return base64.b64decode(self.content) if self.content is not None else None


class TagDoc(Document):
    repo: str
    type: Literal["tag"] = "tag"
    name: str
    digest: str
    mediaType: str
    size: int
    updated: str = Field(default_factory=utcnow)


class BlobLinkDoc(Document):
    repo: str
    type: Literal["blob"] = "blob"
    digest: str
    size: int
    created: str = Field(default_factory=utcnow)


class UploadDoc(Document):
    repo: str
    type: Literal["upload"] = "upload"
    uploadId: str
    offset: int = 0
    blocks: list[str] = Field(default_factory=list)
    hashState: str | None = None  # base64 of the resumable hasher's state
    created: str = Field(default_factory=utcnow)
    ttl: int = UPLOAD_TTL_SECONDS


class OutboxDoc(Document):
    """The events one change raised (ACR payloads), committed with the change, published after it."""

    repo: str
    type: Literal["outbox"] = "outbox"
    registry: str
    events: list[dict[str, Any]]
    outbox: Literal["pending", "published"] = "pending"
    created: str = Field(default_factory=utcnow)
    published: str | None = None
    ttl: int | None = None


class WebhookDoc(Document):
    """A webhook of a registry (a child resource in the registry's partition)."""

    registry: str
    type: Literal["webhook"] = "webhook"
    name: str
    location: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    serviceUri: str
    customHeaders: dict[str, str] = Field(default_factory=dict)
    actions: list[str]
    status: Literal["enabled", "disabled"] = "enabled"
    scope: str = ""
    signingSecret: str | None = None
    payloadFormat: Literal["acr", "cloudevents"] = "acr"
    created: str = Field(default_factory=utcnow)
    # customHeaders and signingSecret as stored: sealed (services/webhooks/resources.py), both then empty.
    sealedSecrets: str | None = None


class DeliveryDoc(Document):
    """Every attempt to deliver one event to one webhook; at most one per (event, webhook)."""

    webhook: str  # partition: "<registry>/<webhook name>"
    type: Literal["delivery"] = "delivery"
    eventId: str
    event: dict[str, Any]
    state: Literal["pending", "delivered", "failed", "deadlettered"] = "pending"
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    created: str = Field(default_factory=utcnow)
    updated: str = Field(default_factory=utcnow)
    ttl: int = DELIVERY_TTL_SECONDS


def repo_key(registry: str, name: str) -> str:
    return f"{registry}/{name}"


def manifest_id(digest: str) -> str:
    return f"manifest:{digest}"


def tag_id(tag: str) -> str:
    return f"tag:{tag}"


def blob_id(digest: str) -> str:
    return f"blob:{digest}"


def upload_id(uuid: str) -> str:
    return f"upload:{uuid}"


def repository_id(name: str) -> str:
    # Cosmos ids may not contain "/"; "|" never occurs in a repository name, so this is reversible.
    return name.replace("/", "|")


# Cosmos answers 429 with how long to wait (usually milliseconds), so a throttled call is retried after
# exactly that, bounded in time by `cosmos_throttle_wait_seconds`. Not the SDK's 9 attempts: a query runs
# that policy at two levels (each page fetch inside the query's own retry), so attempts multiply there.
THROTTLE_RETRY_ATTEMPTS = 3


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


class ConcurrentUpdate(Exception):
    """A conditional write lost against another writer (stale ETag)."""


class MetadataStore:
    """Typed access to the three containers; every hot path is a point read or a one-partition query."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: CosmosClient | None = None
        self._db: DatabaseProxy | None = None
        self._containers: dict[str, ContainerProxy] = {}
        self._known_repositories: dict[tuple[str, str], float] = {}
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
        client = CosmosClient(self._settings.cosmos_endpoint, credential=self._settings.cosmos_key, **kwargs)
        try:
            db = await client.create_database_if_not_exists(self._settings.cosmos_database)
            containers = (
                ("registries", "/registry"),
                ("repositories", "/registry"),
                ("artifacts", "/repo"),
                ("deliveries", "/webhook"),
            )
            for name, key in containers:
                self._containers[name] = await db.create_container_if_not_exists(
                    id=name, partition_key=PartitionKey(path=key), default_ttl=-1
                )
        except BaseException:
            # Cosmos unreachable at start: the next request opens again; leave no session behind each time.
            self._containers.clear()
            await client.close()
            raise
        self._client, self._db = client, db

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._containers.clear()

    def _container(self, name: str) -> ContainerProxy:
        if not self._containers:
            raise RuntimeError("MetadataStore.open() was not awaited")
        return self._containers[name]

    def container(self, name: str) -> ContainerProxy:
        """A container, for the adapters that keep documents of their own in it (platform/access.py)."""
        return self._container(name)

    async def _read(self, container: str, item: str, partition: str) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = await self._container(container).read_item(item, partition_key=partition)
        except ResourceNotFoundError:
            return None
        return doc

    async def _query(
        self, container: str, sql: str, params: dict[str, Any], partition: str, page: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        items = self._container(container).query_items(
            sql,
            parameters=[{"name": k, "value": v} for k, v in params.items()],
            partition_key=partition,
            max_item_count=page,
        )
        async for item in items:
            yield item

    # --- registries -------------------------------------------------------------------------------
    async def get_registry(self, name: str) -> RegistryDoc | None:
        doc = await self._read("registries", name, name)
        return RegistryDoc.model_validate(doc) if doc else None

    async def create_registry(self, doc: RegistryDoc) -> bool:
        """Create the registry document; False when it already exists."""
        try:
            await self._container("registries").create_item(doc.to_item())
        except ResourceExistsError:
            return False
        return True

    async def list_registries(self) -> list[RegistryDoc]:
        items = self._container("registries").query_items(
            "SELECT * FROM c WHERE c.type = 'registry' ORDER BY c.id"
        )
        return [RegistryDoc.model_validate(doc) async for doc in items]

    async def delete_registry(self, name: str) -> bool:
        """Delete the registry, its repositories and their artifacts."""
        if await self.get_registry(name) is None:
            return False
        async for repo in self._query(
            "repositories", "SELECT c.id, c.name FROM c WHERE c.registry = @r", {"@r": name}, name
        ):
            await self.delete_repository(name, repo["name"])
        await self._container("registries").delete_item(name, partition_key=name)
        return True

    # --- repositories -----------------------------------------------------------------------------
    async def ensure_repository(self, registry: str, name: str) -> None:
        """Create the repository document if missing. Every push calls this, so remember for a while what
        exists (a repository deleted through another instance is re-created by the next push after that)."""
        now = time.monotonic()
        if self._known_repositories.get((registry, name), 0.0) > now:
            return
        doc = RepositoryDoc(id=repository_id(name), registry=registry, name=name)
        try:
            await self._container("repositories").create_item(doc.to_item())
        except ResourceExistsError:
            pass
        self._known_repositories[(registry, name)] = now + KNOWN_REPOSITORY_SECONDS

    async def repository_exists(self, registry: str, name: str) -> bool:
        return await self._read("repositories", repository_id(name), registry) is not None

    async def list_repositories(self, registry: str, last: str, limit: int) -> list[str]:
        """Up to `limit` repository names after `last`, in lexical order."""
        sql = (
            "SELECT c.name FROM c WHERE c.registry = @r AND c.type = 'repository' AND c.name > @last "
            "ORDER BY c.name"
        )
        return await self._first_names(
            self._query("repositories", sql, {"@r": registry, "@last": last}, registry, limit), limit
        )

    async def delete_repository(self, registry: str, name: str) -> None:
        self._known_repositories.pop((registry, name), None)
        repo = repo_key(registry, name)
        async for doc in self._query("artifacts", "SELECT c.id FROM c WHERE c.repo = @p", {"@p": repo}, repo):
            try:
                await self._container("artifacts").delete_item(doc["id"], partition_key=repo)
            except ResourceNotFoundError:
                pass
        try:
            await self._container("repositories").delete_item(repository_id(name), partition_key=registry)
        except ResourceNotFoundError:
            pass

    @staticmethod
    async def _first_names(items: AsyncIterator[dict[str, Any]], limit: int) -> list[str]:
        names: list[str] = []
        async for item in items:
            names.append(item["name"])
            if len(names) >= limit:
                break
        return names

    # --- blob links -------------------------------------------------------------------------------
    async def get_blob_link(self, repo: str, digest: str) -> BlobLinkDoc | None:
        doc = await self._read("artifacts", blob_id(digest), repo)
        return BlobLinkDoc.model_validate(doc) if doc else None

    async def put_blob_link(self, link: BlobLinkDoc) -> None:
        await self._container("artifacts").upsert_item(link.to_item())

    async def delete_blob_link(self, repo: str, digest: str) -> bool:
        try:
            await self._container("artifacts").delete_item(blob_id(digest), partition_key=repo)
        except ResourceNotFoundError:
            return False
        return True

    # --- upload sessions --------------------------------------------------------------------------
    async def create_upload(self, upload: UploadDoc) -> UploadDoc:
        doc = await self._container("artifacts").create_item(upload.to_item())
        return UploadDoc.model_validate(doc)

    async def get_upload(self, repo: str, uuid: str) -> UploadDoc | None:
        doc = await self._read("artifacts", upload_id(uuid), repo)
        return UploadDoc.model_validate(doc) if doc else None

    async def replace_upload(self, upload: UploadDoc) -> UploadDoc:
        """Write the session back only if nobody else did since it was read."""
        try:
            doc = await self._container("artifacts").replace_item(
                upload.id, upload.to_item(), etag=upload.etag, match_condition=MatchConditions.IfNotModified
            )
        except (CosmosAccessConditionFailedError, ResourceNotFoundError) as exc:
            raise ConcurrentUpdate(upload.id) from exc
        return UploadDoc.model_validate(doc)

    async def claim_upload(self, upload: UploadDoc) -> bool:
        """Delete the session only if it is still as read (ETag): True for exactly one of racing callers."""
        try:
            await self._container("artifacts").delete_item(
                upload.id, partition_key=upload.repo, etag=upload.etag, match_condition=MatchConditions.IfNotModified
            )
        except (CosmosAccessConditionFailedError, ResourceNotFoundError):
            return False
        return True

    async def delete_upload(self, repo: str, uuid: str) -> bool:
        try:
            await self._container("artifacts").delete_item(upload_id(uuid), partition_key=repo)
        except ResourceNotFoundError:
            return False
        return True

    # --- manifests and tags -----------------------------------------------------------------------
    async def get_manifest(self, repo: str, digest: str) -> ManifestDoc | None:
        doc = await self._read("artifacts", manifest_id(digest), repo)
        return ManifestDoc.model_validate(doc) if doc else None

    async def get_tag(self, repo: str, tag: str) -> TagDoc | None:
        doc = await self._read("artifacts", tag_id(tag), repo)
        return TagDoc.model_validate(doc) if doc else None

    async def commit_manifest(
        self, manifest: ManifestDoc, tags: Iterable[TagDoc], outbox: OutboxDoc | None = None
    ) -> None:
        """The manifest, its tags and the outbox of its events, all or nothing, in one transactional batch."""
        operations: list[tuple[str, tuple[Any, ...]]] = [("upsert", (manifest.to_item(),))]
        operations += [("upsert", (tag.to_item(),)) for tag in tags]
        if outbox is not None:
            operations.append(("create", (outbox.to_item(),)))
        await self._batch(manifest.repo, operations)

    async def delete_tag(self, repo: str, tag: str, outbox: OutboxDoc | None = None) -> bool:
        """Delete a tag (with the outbox of its events in the same batch, when given)."""
        try:
            if outbox is None:
                await self._container("artifacts").delete_item(tag_id(tag), partition_key=repo)
            else:
                await self._batch(repo, [("delete", (tag_id(tag),)), ("create", (outbox.to_item(),))])
        except ResourceNotFoundError:
            return False
        return True

    async def delete_manifest(self, repo: str, digest: str, outbox: OutboxDoc | None = None) -> bool:
        """Delete a manifest and every tag that points at it (and write the outbox of its events), in one
        batch."""
        tags = [
            item["id"]
            async for item in self._query(
                "artifacts",
                "SELECT c.id FROM c WHERE c.repo = @p AND c.type = 'tag' AND c.digest = @d",
                {"@p": repo, "@d": digest},
                repo,
            )
        ]
        operations: list[tuple[str, tuple[Any, ...]]] = [("delete", (manifest_id(digest),))]
        operations += [("delete", (tag,)) for tag in tags]
        if outbox is not None:
            operations.append(("create", (outbox.to_item(),)))
        try:
            await self._batch(repo, operations)
        except ResourceNotFoundError:
            return False
        return True

    async def list_tags(self, repo: str, last: str, limit: int) -> list[str]:
        sql = "SELECT c.name FROM c WHERE c.repo = @p AND c.type = 'tag' AND c.name > @last ORDER BY c.name"
        return await self._first_names(
            self._query("artifacts", sql, {"@p": repo, "@last": last}, repo, limit), limit
        )

    async def list_referrers(self, repo: str, subject: str) -> list[dict[str, Any]]:
        sql = "SELECT c.referrer FROM c WHERE c.repo = @p AND c.type = 'manifest' AND c.subject = @s"
        return [
            item["referrer"]
            async for item in self._query("artifacts", sql, {"@p": repo, "@s": subject}, repo)
            if item.get("referrer")
        ]

    # --- the event outbox -------------------------------------------------------------------------
    async def pending_outbox(self, written_before: str, limit: int = 100) -> list[OutboxDoc]:
        """Outbox documents still unpublished that were written before `written_before` (cross-partition:
        the relay's query, every few seconds, over an index of one field)."""
        items = self._container("artifacts").query_items(
            "SELECT * FROM c WHERE c.type = 'outbox' AND c.outbox = 'pending' AND c.created < @before",
            parameters=[{"name": "@before", "value": written_before}],
            max_item_count=limit,
        )
        found: list[OutboxDoc] = []
        async for item in items:
            found.append(OutboxDoc.model_validate(item))
            if len(found) >= limit:
                break
        return found

    async def mark_outbox_published(self, outbox: OutboxDoc, ttl_seconds: int) -> None:
        """Mark the outbox published; it expires `ttl_seconds` later."""
        operations: list[dict[str, Any]] = [
            {"op": "set", "path": "/outbox", "value": "published"},
            {"op": "set", "path": "/published", "value": utcnow()},
            {"op": "set", "path": "/ttl", "value": ttl_seconds},
        ]
        try:
            await self._container("artifacts").patch_item(
                outbox.id, partition_key=outbox.repo, patch_operations=operations
            )
        except ResourceNotFoundError:
            pass  # already expired: published long ago

    # --- webhooks (children of a registry) ---------------------------------------------------------
    async def list_webhooks(self, registry: str) -> list[WebhookDoc]:
        sql = "SELECT * FROM c WHERE c.registry = @r AND c.type = 'webhook' ORDER BY c.name"
        return [
            WebhookDoc.model_validate(item)
            async for item in self._query("registries", sql, {"@r": registry}, registry)
        ]

    async def get_webhook(self, registry: str, name: str) -> WebhookDoc | None:
        doc = await self._read("registries", f"webhook:{name}", registry)
        return WebhookDoc.model_validate(doc) if doc else None

    async def put_webhook(self, webhook: WebhookDoc) -> WebhookDoc:
        doc = await self._container("registries").upsert_item(webhook.to_item())
        return WebhookDoc.model_validate(doc)

    async def delete_webhook(self, registry: str, name: str) -> bool:
        try:
            await self._container("registries").delete_item(f"webhook:{name}", partition_key=registry)
        except ResourceNotFoundError:
            return False
        return True

    # --- webhook deliveries ------------------------------------------------------------------------
    async def get_delivery(self, webhook: str, event_id: str) -> DeliveryDoc | None:
        doc = await self._read("deliveries", f"delivery:{event_id}", webhook)
        return DeliveryDoc.model_validate(doc) if doc else None

    async def create_delivery(self, delivery: DeliveryDoc) -> DeliveryDoc | None:
        """Create the delivery record; None when one exists already (the event was seen before)."""
        try:
            doc = await self._container("deliveries").create_item(delivery.to_item())
        except ResourceExistsError:
            return None
        return DeliveryDoc.model_validate(doc)

    async def replace_delivery(self, delivery: DeliveryDoc) -> DeliveryDoc:
        """Write the record back only if nobody else did since it was read."""
        delivery.updated = utcnow()
        try:
            doc = await self._container("deliveries").replace_item(
                delivery.id,
                delivery.to_item(),
                etag=delivery.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (CosmosAccessConditionFailedError, ResourceNotFoundError) as exc:
            raise ConcurrentUpdate(delivery.id) from exc
        return DeliveryDoc.model_validate(doc)

    async def list_deliveries(
        self, webhook: str, state: str | None = None, limit: int = 1000
    ) -> list[DeliveryDoc]:
        """The webhook's deliveries, newest first (optionally only those in one state)."""
        sql = "SELECT * FROM c WHERE c.webhook = @w AND c.type = 'delivery'"
        params: dict[str, Any] = {"@w": webhook}
        if state is not None:
            sql += " AND c.state = @s"
            params["@s"] = state
        sql += " ORDER BY c.created DESC"
        found: list[DeliveryDoc] = []
        async for item in self._query("deliveries", sql, params, webhook, limit):
            found.append(DeliveryDoc.model_validate(item))
            if len(found) >= limit:
                break
        return found

    async def _batch(self, partition: str, operations: list[tuple[str, tuple[Any, ...]]]) -> None:
        try:
            await self._container("artifacts").execute_item_batch(
                batch_operations=operations, partition_key=partition
            )
        except CosmosBatchOperationError as exc:
            status = exc.error_index is not None and exc.operation_responses[exc.error_index].get(
                "statusCode"
            )
            if status == 404:
                raise ResourceNotFoundError(str(exc)) from exc
            if status == 412:
                raise ConcurrentUpdate(str(exc)) from exc
            raise
