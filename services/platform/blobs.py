"""Blob Storage adapter: where the bytes live, and the only module that speaks to Blob Storage.

Layout, one container per registry (``reg-<registry>``)::

    reg-<registry>/
        blobs/<algorithm>/<first two hex>/<hex>   content-addressed blob: layers, configs and manifests,
                                                  shared by every repository of the registry (dedupe);
                                                  which repository may serve it is decided in Cosmos DB
        uploads/<session id>                      an upload in progress: its chunks staged as uncommitted
                                                  blocks, committed and copied to blobs/ once the digest
                                                  is verified, then deleted
        tasks/sources/<yyyymmdd>/<uuid>.tar.gz    a build context a client uploaded through a write-only
                                                  SAS URL (listBuildSourceUploadUrl), read by the task runner
        tasks/logs/<run id>.log                   a task run's log, an append blob written as the run goes

Nothing under ``blobs/`` is ever written before its digest is verified, so an interrupted or failed upload
leaves nothing visible. Downloads are served by short-lived, read-only SAS URLs (the API answers 307).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobSasPermissions, UserDelegationKey, generate_blob_sas
from azure.storage.blob.aio import BlobClient, BlobServiceClient, ContainerClient, LinearRetry

from services.platform.availability import STORAGE, DependencyTransport
from services.platform.settings import Settings


def container_name(registry: str) -> str:
    return f"reg-{registry}"


def blob_path(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"blobs/{algorithm}/{hexpart[:2]}/{hexpart}"


def upload_path(session: str) -> str:
    return f"uploads/{session}"


# The index tag of a committed upload not yet copied to its content address (the lifecycle rule's match).
STAGED_UPLOAD_TAG = {"stage": "upload"}


def _connection_values(connection_string: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    return {key.strip(): value.strip() for key, value in pairs}


class _Backoff(LinearRetry):
    """Storage's linear retry with a backoff of a fraction of a second (its own takes whole seconds)."""

    def __init__(self, backoff: float, retry_total: int) -> None:
        super().__init__(retry_total=retry_total, retry_to_secondary=False)
        self._backoff = backoff

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        return random.uniform(self._backoff / 2, self._backoff * 1.5)


def storage_client_options(settings: Settings) -> dict[str, Any]:
    """Transport and retry policy of the BlobServiceClient, bounded so one call gives up within a request's
    budget and the API answers 503 (the SDK's defaults: 3 retries 15-30 s apart, 300 s timeouts with our own
    transport; a refused connection took 80 s).

    Every write we make is idempotent (blocks by id, content-addressed blobs with overwrite, block-list
    commits, copies, deletes), so Storage's retries of writes are safe; bodies are bytes, so they replay.
    """
    transport = DependencyTransport(
        STORAGE,
        use_env_settings=settings.proxy_from_environment,
        connection_timeout=settings.dependency_connect_timeout_seconds,
        read_timeout=settings.storage_read_timeout_seconds,
    )
    retry = _Backoff(settings.dependency_retry_backoff_seconds, settings.dependency_retry_total)
    return {"transport": transport, "retry_policy": retry}


class BlobStore:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._service: BlobServiceClient | None = None
        self._account_name = ""
        self._account_key = ""
        self._delegation: UserDelegationKey | None = None
        self._delegation_until = datetime.min.replace(tzinfo=UTC)

    async def open(self) -> None:
        if self._service is not None:
            return
        if self._settings.blob_account_url:
            from azure.identity.aio import DefaultAzureCredential

            self._service = BlobServiceClient(
                self._settings.blob_account_url,
                credential=DefaultAzureCredential(),
                **storage_client_options(self._settings),
            )
        else:
            values = _connection_values(self._settings.blob_connection_string)
            self._account_name = values.get("AccountName", "")
            self._account_key = values.get("AccountKey", "")
            self._service = BlobServiceClient.from_connection_string(
                self._settings.blob_connection_string,
                max_block_size=self._settings.block_size,
                max_single_put_size=self._settings.block_size,
                **storage_client_options(self._settings),
            )

    async def close(self) -> None:
        if self._service is not None:
            await self._service.close()
            self._service = None

    def _container(self, registry: str) -> ContainerClient:
        if self._service is None:
            raise RuntimeError("BlobStore.open() was not awaited")
        return self._service.get_container_client(container_name(registry))

    async def create_registry_container(self, registry: str) -> None:
        try:
            await self._container(registry).create_container()
        except ResourceExistsError:
            pass

    async def delete_registry_container(self, registry: str) -> None:
        try:
            await self._container(registry).delete_container()
        except ResourceNotFoundError:
            pass

    # --- named blobs of other containers (the advisory database container, services/scanning/sources.py) --
    async def list_named(self, container: str, prefix: str = "") -> list[tuple[str, str, int]]:
        """(name, ETag, size) of every blob of `container` under `prefix`."""
        if self._service is None:
            raise RuntimeError("BlobStore.open() was not awaited")
        client = self._service.get_container_client(container)
        return [
            (blob.name, str(blob.etag), int(blob.size or 0))
            async for blob in client.list_blobs(name_starts_with=prefix or None)
        ]

    async def read_named(self, container: str, name: str) -> bytes:
        if self._service is None:
            raise RuntimeError("BlobStore.open() was not awaited")
        stream = await self._service.get_container_client(container).get_blob_client(name).download_blob()
        return await stream.readall()

    # --- content-addressed blobs ------------------------------------------------------------------
    async def size(self, registry: str, digest: str) -> int | None:
        """Size of the stored blob, or None when the registry does not hold it."""
        try:
            props = await self._container(registry).get_blob_client(blob_path(digest)).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return int(props.size)

    async def put(self, registry: str, digest: str, data: bytes) -> None:
        """Store verified bytes under their digest (content-addressed: rewriting is harmless)."""
        await self._container(registry).get_blob_client(blob_path(digest)).upload_blob(data, overwrite=True)

    async def read_all(self, registry: str, digest: str) -> bytes:
        stream = await self._container(registry).get_blob_client(blob_path(digest)).download_blob()
        return await stream.readall()

    async def read(
        self, registry: str, digest: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        stream = (
            await self._container(registry)
            .get_blob_client(blob_path(digest))
            .download_blob(offset=offset, length=length, max_concurrency=2)
        )
        async for chunk in stream.chunks():
            yield chunk

    async def read_in_chunks(
        self, registry: str, digest: str, chunk_size: int = 4 * 1024 * 1024
    ) -> AsyncIterator[bytes]:
        """The blob as consecutive ranged reads of `chunk_size` bytes, the next one fetched while the current
        one is used: what a reader that must hold little (the scanner) wants. `read` lets the SDK fetch the
        first 32 MiB in one piece and run ahead; this never holds more than two chunks."""
        size = await self.size(registry, digest)
        if size is None:
            raise ResourceNotFoundError(f"blob {digest} is not in storage")
        client = self._container(registry).get_blob_client(blob_path(digest))

        async def fetch(offset: int) -> bytes:
            stream = await client.download_blob(offset=offset, length=min(chunk_size, size - offset))
            return await stream.readall()

        pending = asyncio.ensure_future(fetch(0)) if size else None
        try:
            for offset in range(0, size, chunk_size):
                assert pending is not None
                chunk = await pending
                following = offset + chunk_size
                pending = asyncio.ensure_future(fetch(following)) if following < size else None
                yield chunk
        finally:
            if pending is not None:
                pending.cancel()

    async def read_url(self, registry: str, digest: str, ttl_seconds: int | None = None) -> str:
        """A short-lived, read-only SAS URL of the blob."""
        blob = self._container(registry).get_blob_client(blob_path(digest))
        ttl = timedelta(seconds=ttl_seconds or self._settings.sas_ttl_seconds)
        sas = await self._read_sas(registry, blob_path(digest), ttl)
        return f"{blob.url}?{sas}"

    async def _read_sas(self, registry: str, path: str, ttl: timedelta, *, write: bool = False) -> str:
        """Account-key SAS locally; user-delegation SAS under a managed identity (no key exists). `write`:
        create and write only (the client cannot read back or list anything)."""
        permission = BlobSasPermissions(create=True, write=True) if write else BlobSasPermissions(read=True)
        now = datetime.now(UTC)
        start = now - timedelta(minutes=5)  # tolerate clock skew between us and Storage
        expiry = now + ttl
        if self._account_key:
            return generate_blob_sas(
                account_name=self._account_name,
                container_name=container_name(registry),
                blob_name=path,
                account_key=self._account_key,
                permission=permission,
                start=start,
                expiry=expiry,
            )
        delegation = await self._user_delegation_key(now)
        assert self._service is not None
        return generate_blob_sas(
            account_name=self._service.account_name or "",
            container_name=container_name(registry),
            blob_name=path,
            user_delegation_key=delegation,
            permission=permission,
            start=start,
            expiry=expiry,
        )

    async def _user_delegation_key(self, now: datetime) -> UserDelegationKey:
        # One key serves every SAS for a day; ask for a new one well before it lapses.
        if self._delegation is None or self._delegation_until - now < timedelta(hours=2):
            assert self._service is not None
            self._delegation_until = now + timedelta(days=1)
            self._delegation = await self._service.get_user_delegation_key(
                key_start_time=now - timedelta(minutes=5), key_expiry_time=self._delegation_until
            )
        return self._delegation

    async def etag(self, registry: str, digest: str) -> str | None:
        """The ETag of the stored blob (it changes whenever the blob is written), None when not stored."""
        try:
            props = await self._container(registry).get_blob_client(blob_path(digest)).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return str(props.etag)

    async def delete_if_unchanged(self, registry: str, digest: str, etag: str) -> bool:
        """Delete the blob only if it was not written since `etag` was read; False when it was (or is gone)."""
        blob = self._container(registry).get_blob_client(blob_path(digest))
        try:
            await blob.delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            return False
        return True

    async def copy_in(self, registry: str, digest: str, source_url: str, pending_seconds: float = 600.0) -> None:
        """Geo-replication: copy a blob from another account (`source_url`, a read SAS) to its content
        address here, server-side. The copy goes to a staging name first and is moved to `blobs/` only once
        complete, so a half-copied blob is never visible; the staging blob is dropped either way."""
        container = self._container(registry)
        staging = container.get_blob_client(f"replicating/{uuid.uuid4()}")
        try:
            await self._copy(staging, source_url, pending_seconds)
            await self._copy(container.get_blob_client(blob_path(digest)), staging.url, pending_seconds)
        finally:
            try:
                await staging.delete_blob()
            except ResourceNotFoundError:
                pass

    @staticmethod
    async def _copy(target: BlobClient, source_url: str, pending_seconds: float) -> None:
        """Start a server-side copy and poll its status until it ends (Azure may answer `pending`)."""
        copy = await target.start_copy_from_url(source_url)
        status, copy_id = copy.get("copy_status"), str(copy.get("copy_id") or "")
        deadline = asyncio.get_running_loop().time() + pending_seconds
        while status == "pending":
            if asyncio.get_running_loop().time() > deadline:
                await target.abort_copy(copy_id)
                raise TimeoutError(f"the copy to {target.blob_name} was pending for over {pending_seconds:.0f} s")
            await asyncio.sleep(0.2)
            status = (await target.get_blob_properties()).copy.status
        if status != "success":
            raise RuntimeError(f"the copy to {target.blob_name} ended {status}")

    async def delete(self, registry: str, digest: str) -> None:
        try:
            await self._container(registry).get_blob_client(blob_path(digest)).delete_blob()
        except ResourceNotFoundError:
            pass

    # --- uploads in progress ----------------------------------------------------------------------
    async def stage_block(self, registry: str, session: str, block_id: str, data: bytes | memoryview) -> None:
        """`data` may be a view of a reused buffer (uploads.py): it is sent as it is, never copied."""
        blob = self._container(registry).get_blob_client(upload_path(session))
        length = data.nbytes if isinstance(data, memoryview) else len(data)
        # The SDK's hint omits memoryview; it passes the body to aiohttp, which sends any bytes-like object.
        await blob.stage_block(block_id, data, length=length)  # type: ignore[arg-type]

    async def commit_upload(self, registry: str, session: str, block_ids: list[str], digest: str) -> None:
        """Commit the staged blocks and move the result to its content address."""
        await self.commit_staged(registry, session, block_ids)
        await self.move_upload(registry, session, digest)

    async def commit_staged(self, registry: str, session: str, block_ids: list[str]) -> None:
        """Commit the staged blocks as the upload's blob, index-tagged `stage=upload`: if the process dies
        before the copy and the upload is never touched again, the storage account's lifecycle rule
        (infra: `staged-uploads`) deletes it. The copy at the content address does not carry the tag."""
        await (
            self._container(registry)
            .get_blob_client(upload_path(session))
            .commit_block_list([BlobBlock(block_id=b) for b in block_ids], tags=STAGED_UPLOAD_TAG)
        )

    async def read_upload(self, registry: str, session: str) -> AsyncIterator[bytes]:
        staging = self._container(registry).get_blob_client(upload_path(session))
        stream = await staging.download_blob(max_concurrency=2)
        async for chunk in stream.chunks():
            yield chunk

    async def move_upload(self, registry: str, session: str, digest: str) -> None:
        """Server-side copy of a committed upload to its content address, then drop the upload.

        Source and target share the account, so the request's own authorization covers the source: no SAS
        (Azurite would fetch a SAS source over HTTP byte by byte; same-account copies are metadata-only).
        """
        await self.copy_upload(registry, session, digest)
        await self.discard_upload(registry, session)

    async def copy_upload(self, registry: str, session: str, digest: str) -> None:
        """Server-side copy of a committed upload to its content address (the upload stays)."""
        container = self._container(registry)
        staging = container.get_blob_client(upload_path(session))
        target = container.get_blob_client(blob_path(digest))
        copy = await target.start_copy_from_url(staging.url)
        status = copy.get("copy_status")
        while status == "pending":  # real Storage may copy asynchronously; Azurite never does
            await asyncio.sleep(0.2)
            status = (await target.get_blob_properties()).copy.status
        if status != "success":
            raise RuntimeError(f"copy of upload {session} to {digest} ended {status}")

    async def discard_staged(self, registry: str, session: str) -> None:
        """Drop a session's bytes including blocks staged but never committed: committing an empty block list
        discards them at once (Storage would keep them for up to 7 days), then the empty blob goes."""
        blob = self._container(registry).get_blob_client(upload_path(session))
        try:
            await blob.commit_block_list([])
        except ResourceNotFoundError:
            return  # the registry's container is gone
        await self.discard_upload(registry, session)

    async def discard_upload(self, registry: str, session: str) -> None:
        """Drop a session's bytes. Uncommitted blocks alone leave no blob behind (Storage expires them)."""
        try:
            await self._container(registry).get_blob_client(upload_path(session)).delete_blob()
        except ResourceNotFoundError:
            pass

    # --- task sources and logs (services/tasks) ----------------------------------------------------
    async def path_url(self, registry: str, path: str, ttl_seconds: int, *, write: bool = False) -> str:
        """A SAS URL of one blob under `tasks/`: read-only, or create-and-write-only (an upload target)."""
        blob = self._container(registry).get_blob_client(path)
        sas = await self._read_sas(registry, path, timedelta(seconds=ttl_seconds), write=write)
        return f"{blob.url}?{sas}"

    async def path_size(self, registry: str, path: str) -> int | None:
        try:
            props = await self._container(registry).get_blob_client(path).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return int(props.size)

    async def read_path(self, registry: str, path: str, offset: int = 0) -> AsyncIterator[bytes]:
        stream = await self._container(registry).get_blob_client(path).download_blob(offset=offset)
        async for chunk in stream.chunks():
            yield chunk

    async def create_append(self, registry: str, path: str) -> None:
        """An empty append blob (kept if it exists: a run picked up again appends to its log)."""
        blob = self._container(registry).get_blob_client(path)
        try:
            await blob.get_blob_properties()
        except ResourceNotFoundError:
            await blob.create_append_blob()

    async def append(self, registry: str, path: str, data: bytes) -> None:
        await self._container(registry).get_blob_client(path).append_block(data)

    async def list_paths(self, registry: str, prefix: str) -> AsyncIterator[tuple[str, datetime]]:
        """(name, last modified) of the registry's blobs under `prefix` (e.g. `tasks/sources/`)."""
        async for blob in self._container(registry).list_blobs(name_starts_with=prefix):
            yield blob.name, blob.last_modified

    async def delete_path(self, registry: str, path: str) -> None:
        try:
            await self._container(registry).get_blob_client(path).delete_blob()
        except ResourceNotFoundError:
            pass
