"""Blob uploads: sessions that any instance can continue, streamed into staged blocks.

An upload session lives in Cosmos DB (offset, staged block ids, the resumable hash state) and its bytes are
staged as uncommitted blocks in Blob Storage, so each chunk of a chunked upload may reach a different
instance. Request bodies are streamed: one upload holds at most `upload_concurrency` + 2 blocks of
`block_size` bytes (staging, hashing, filling), whatever the blob's size, in buffers reused from upload to
upload (services/registry/buffers.py); an instance stages at most `max_concurrent_uploads` bodies at once
and answers further ones 503 with Retry-After. The blob becomes visible only after its digest is verified.

A client that goes away mid-body leaves the session as it was: its document is only replaced once a
chunk is wholly staged, and the blocks staged so far carry this request's writer id, which no session
document ever names (uncommitted blocks expire with the blob's staging area). Sessions idle longer than
`UPLOAD_EXPIRY_SECONDS` (24 h) are removed with their staged blocks by a timer (`expire_uploads`).

Hashing: sha256 is computed as the bytes arrive and its state saved with the session. A client that
announces a sha512 digest only at the end (or a machine without a resumable hasher) is verified by reading
the committed upload back once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from services.platform.blobs import BlobStore
from services.platform.cosmos import ConcurrentUpdate
from services.platform.settings import Settings
from services.registry.buffers import Block, BlockBuffers
from services.registry.collector import BlobGone, Rewrite, keep_blob
from services.registry.digest import Digest
from services.registry.errors import ErrorCode, RegistryError
from services.registry.hashing import ResumableHasher
from services.registry.ledger import BlobLedger
from services.registry.store import ArtifactStore, BlobLinkDoc, UploadDoc, repo_key

MAX_BLOCKS = 50_000  # Blob Storage's limit of blocks in one blob
DEFAULT_ALGORITHM = "sha256"
EXPIRY_PAGE = 500  # idle sessions expired per query
# Uploads are refused only while the instance is full, and one finishes within seconds: retry soon.
BUSY_RETRY_AFTER_SECONDS = 1


def block_id(index: int, writer: str) -> str:
    """The id of a staged block: its position, and which request staged it.

    Every block id of one blob must have the same length. The writer part keeps two requests racing for the
    same offset from overwriting each other's blocks: only the winner's ids enter the session document,
    so the loser's bytes can never be committed.
    """
    return base64.b64encode(f"{index:08d}-{writer}".encode()).decode()


# Refuses (RegistryError) storing this many bytes more, of this digest when known: the storage quota.
Room = Callable[[int, str | None], Awaitable[None]]


class StagedStream:
    """What staging a request body produced: blocks staged, bytes seen, and a small tail kept in memory."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.size = 0
        self.tail = b""


class UploadService:
    def __init__(self, settings: Settings, artifacts: ArtifactStore, blobs: BlobStore, ledger: BlobLedger) -> None:
        self._settings = settings
        self._artifacts = artifacts
        self._ledger = ledger
        self._blobs = blobs
        self.buffers = BlockBuffers(settings.block_size, keep=settings.upload_concurrency + 2)
        self.active = 0  # request bodies being staged now

    # --- sessions ---------------------------------------------------------------------------------
    async def start(self, registry: str, name: str) -> UploadDoc:
        session = uuid.uuid4().hex
        hasher = ResumableHasher(DEFAULT_ALGORITHM) if ResumableHasher.available() else None
        doc = UploadDoc(
            id=f"upload:{session}",
            repo=repo_key(registry, name),
            uploadId=session,
            hashState=_encode_state(hasher),
        )
        return await self._artifacts.create_upload(doc)

    async def get(self, registry: str, name: str, session: str) -> UploadDoc:
        doc = await self._artifacts.get_upload(repo_key(registry, name), session) if _is_session(session) else None
        if doc is None:
            raise RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, detail={"uuid": session})
        return doc

    async def cancel(self, registry: str, name: str, session: str) -> None:
        await self.get(registry, name, session)
        await self._artifacts.delete_upload(repo_key(registry, name), session)
        await self._blobs.discard_upload(registry, session)

    async def append(
        self,
        registry: str,
        name: str,
        session: str,
        body: AsyncIterator[bytes],
        *,
        start: int | None,
        length: int | None,
        room: Room | None = None,
    ) -> UploadDoc:
        """Stage one chunk (PATCH). `start` is where the client says it begins; it must be our offset.
        `room` refuses a chunk whose announced length would take the registry past its storage quota."""
        doc = await self.get(registry, name, session)
        if start is not None and start != doc.offset:
            raise RegistryError(
                ErrorCode.BLOB_UPLOAD_INVALID,
                f"chunk starts at {start} but the upload has {doc.offset} bytes; send chunks in order",
                status=416,
                headers=upload_headers(name, doc),
            )
        if room is not None and length is not None:
            await room(doc.offset + length, None)
        hasher = _decode_state(doc.hashState)
        staged = await self._stage(registry, doc, body, hasher, keep_tail=False)
        if length is not None and staged.size != length:
            raise RegistryError(
                ErrorCode.BLOB_UPLOAD_INVALID,
                f"chunk announced {length} bytes but {staged.size} arrived",
                status=416 if start is not None else 400,
            )
        doc.blocks += staged.blocks
        doc.offset += staged.size
        doc.hashState = _encode_state(hasher)
        try:
            return await self._artifacts.replace_upload(doc)
        except ConcurrentUpdate as exc:
            raise RegistryError(
                ErrorCode.BLOB_UPLOAD_INVALID,
                "another chunk of this upload was written at the same time; retry from the current offset",
                status=416,
            ) from exc

    async def finish(
        self,
        registry: str,
        name: str,
        session: str,
        digest: Digest,
        body: AsyncIterator[bytes],
        room: Room | None = None,
        length: int | None = None,
    ) -> int:
        """Take the optional last chunk (of `length` bytes, when announced), verify the digest, and make the
        blob visible (PUT). `room` refuses a blob that would take the registry past its storage quota: before
        the chunk is staged when its length is announced, else once the size is known."""
        doc = await self.get(registry, name, session)
        if room is not None and length is not None:
            await room(doc.offset + length, str(digest))
        hasher = _decode_state(doc.hashState)
        staged = await self._stage(registry, doc, body, hasher, keep_tail=not doc.blocks)
        blocks = doc.blocks + staged.blocks
        size = doc.offset + staged.size
        if room is not None and length is None:
            try:
                await room(size, str(digest))
            except RegistryError:
                await self._blobs.discard_upload(registry, session)
                await self._artifacts.delete_upload(doc.repo, session)
                raise
        # One closing PUT finishes a session: it claims the session by deleting its document, on condition
        # that nobody changed it since it was read. A racing PUT finds it gone.
        if not await self._artifacts.claim_upload(doc):
            raise RegistryError(
                ErrorCode.BLOB_UPLOAD_UNKNOWN,
                "this upload was finished, cancelled or changed by another request",
                detail={"uuid": session},
            )
        await self._store_and_link(registry, name, session, digest, hasher, blocks, staged.tail, size)
        return size

    async def upload_whole(
        self,
        registry: str,
        name: str,
        digest: Digest,
        body: AsyncIterator[bytes],
        room: Room | None = None,
        length: int | None = None,
    ) -> int:
        """A monolithic upload (POST with ?digest= and the body): no session document is needed. `room`
        refuses it past the registry's storage quota: before staging when `length` is announced, else once
        the body is staged."""
        if room is not None and length is not None:
            await room(length, str(digest))
        session = uuid.uuid4().hex
        hasher = ResumableHasher(digest.algorithm) if ResumableHasher.available() else None
        doc = UploadDoc(id=f"upload:{session}", repo=repo_key(registry, name), uploadId=session)
        staged = await self._stage(registry, doc, body, hasher, keep_tail=True)
        if room is not None and length is None:
            try:
                await room(staged.size, str(digest))
            except RegistryError:
                await self._blobs.discard_upload(registry, session)
                raise
        await self._store_and_link(registry, name, session, digest, hasher, staged.blocks, staged.tail, staged.size)
        return staged.size

    async def mount(self, registry: str, name: str, digest: Digest, source: str | None) -> int | None:
        """Link a blob the registry already holds into `name`; None when it cannot be mounted.

        With `from`, the blob must be linked in that repository. Without it, any blob of this registry
        can be mounted (the spec's automatic content discovery): repositories of one registry share
        their storage, and knowing a digest is what a push of that content would prove anyway.
        """
        if source is not None:
            link = await self._artifacts.get_blob_link(repo_key(registry, source), str(digest))
            size = link.size if link else None
        else:
            size = await self._blobs.size(registry, str(digest))
        if size is None:
            return None
        try:
            await keep_blob(
                self._ledger,
                registry,
                str(digest),
                size,
                link=lambda: self._link(registry, name, digest, size),
                rewrite=None,
                wrote=True,
            )
        except BlobGone:
            # Being garbage collected: take the link back (through the fence, so that no push commits past
            # it) and let the client upload the blob instead.
            await self._unlink(registry, name, digest)
            return None
        return size

    # --- internals --------------------------------------------------------------------------------
    async def _store_and_link(
        self,
        registry: str,
        name: str,
        session: str,
        digest: Digest,
        hasher: ResumableHasher | None,
        blocks: list[str],
        tail: bytes,
        size: int,
    ) -> None:
        """Verify and store the bytes, link them in the repository and pin them against the collector
        (services/registry/collector.py); the staged upload is dropped only then, since the pin may need
        the bytes again."""
        try:
            try:
                stored = await self._verify_and_store(registry, session, digest, hasher, blocks, tail)
            except RegistryError:
                await self._blobs.discard_upload(registry, session)
                raise
            await keep_blob(
                self._ledger,
                registry,
                str(digest),
                size,
                link=lambda: self._link(registry, name, digest, size),
                rewrite=stored.rewrite,
                wrote=stored.wrote,
            )
        finally:
            if blocks:
                await self._blobs.discard_upload(registry, session)

    async def _unlink(self, registry: str, name: str, digest: Digest) -> None:
        repo = repo_key(registry, name)
        link = await self._artifacts.get_blob_link(repo, str(digest))
        if link is not None:
            fence = await self._ledger.fence(repo)
            await self._ledger.delete_link_fenced(fence, link)

    async def _link(self, registry: str, name: str, digest: Digest, size: int) -> None:
        await self._artifacts.ensure_repository(registry, name)
        await self._artifacts.put_blob_link(
            BlobLinkDoc(id=f"blob:{digest}", repo=repo_key(registry, name), digest=str(digest), size=size)
        )

    def _admit(self) -> None:
        """Count one more body being staged, or refuse it while the instance stages its maximum."""
        limit = self._settings.max_concurrent_uploads
        if self.active >= limit:
            raise _busy(limit)
        self.active += 1

    async def _stage(
        self,
        registry: str,
        doc: UploadDoc,
        body: AsyncIterator[bytes],
        hasher: ResumableHasher | None,
        *,
        keep_tail: bool,
    ) -> StagedStream:
        """Stream `body` into blocks of `block_size`, hashing in order while blocks upload concurrently.

        With `keep_tail`, a body smaller than one block is kept in memory instead (a small blob then costs
        one write instead of stage + commit + copy). A body is admitted (counted against
        `max_concurrent_uploads`) when its first byte arrives: an empty one holds no buffer.
        """
        staged = StagedStream()
        writer = secrets.token_hex(4)
        block_size = self._settings.block_size
        slots = asyncio.Semaphore(self._settings.upload_concurrency)
        uploads: set[asyncio.Task[None]] = set()
        hashing: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        current: Block | None = None
        filled = 0
        admitted = False

        first = len(doc.blocks)

        def hash_block(view: memoryview, block: Block) -> None:
            assert hasher is not None
            try:
                hasher.update(view)
            finally:
                # Given back from the thread itself: the buffer is free exactly when the hashing is.
                loop.call_soon_threadsafe(block.done)

        async def stage_block(index: int, view: memoryview, block: Block) -> None:
            spoiled = True
            try:
                await self._blobs.stage_block(registry, doc.uploadId, staged.blocks[index - first], view)
                spoiled = False
            finally:
                slots.release()
                block.done(spoiled=spoiled)

        async def flush(block: Block, length: int) -> None:
            # Takes over the caller's share of `block`; if it fails before handing it on, the buffer is
            # simply not reused.
            nonlocal hashing
            index = len(doc.blocks) + len(staged.blocks)
            if index >= MAX_BLOCKS:
                raise RegistryError(ErrorCode.BLOB_UPLOAD_INVALID, "too many chunks; send larger chunks")
            staged.blocks.append(block_id(index, writer))
            view = memoryview(block.buffer)[:length]
            if hasher is not None:
                if hashing is not None:
                    await hashing
                block.share()
                hashing = loop.run_in_executor(None, hash_block, view, block)
            await slots.acquire()
            task = asyncio.create_task(stage_block(index, view, block))
            uploads.add(task)
            task.add_done_callback(uploads.discard)
            failed = [t for t in uploads if t.done() and t.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]

        try:
            async for chunk in body:
                if not chunk:
                    continue
                if not admitted:
                    self._admit()
                    admitted = True
                staged.size += len(chunk)
                rest = memoryview(chunk)
                while rest:
                    if current is None:
                        current, filled = self.buffers.take(), 0
                    taken = min(block_size - filled, len(rest))
                    current.buffer[filled : filled + taken] = rest[:taken]
                    filled += taken
                    rest = rest[taken:]
                    if filled == block_size:
                        block, current = current, None
                        await flush(block, filled)
            if current is not None:
                block, current = current, None
                if keep_tail and not staged.blocks:
                    staged.tail = bytes(block.buffer[:filled])
                    block.done()
                    if hasher is not None:
                        hasher.update(staged.tail)
                else:
                    await flush(block, filled)
            if hashing is not None:
                await hashing
            await asyncio.gather(*uploads)
        except BaseException:
            if current is not None:
                current.done()  # only this loop had it
            for task in uploads:
                task.cancel()
            raise
        finally:
            if admitted:
                self.active -= 1
        return staged

    async def _verify_and_store(
        self,
        registry: str,
        session: str,
        digest: Digest,
        hasher: ResumableHasher | None,
        blocks: list[str],
        tail: bytes,
    ) -> StoredBytes:
        """Verify the bytes and put them at their content address unless they are there already; the
        staged upload stays (the caller drops it)."""
        blobs, key = self._blobs, str(digest)
        if not blocks:
            # Small enough to have stayed in memory: verify and write it in one go.
            if Digest.of(tail, digest.algorithm) != digest:
                raise _mismatch(digest)

            async def put_tail() -> None:
                await blobs.put(registry, key, tail)

            if await blobs.size(registry, key) is not None:
                return StoredBytes(put_tail, wrote=False)
            await put_tail()
            return StoredBytes(put_tail, wrote=True)
        committed = False

        async def copy_staged() -> None:
            nonlocal committed
            if not committed:
                await blobs.commit_staged(registry, session, blocks)
                committed = True
            await blobs.copy_upload(registry, session, key)

        if hasher is not None and hasher.algorithm == digest.algorithm:
            if hasher.digest() != digest:
                raise _mismatch(digest)
            if await blobs.size(registry, key) is not None:
                return StoredBytes(copy_staged, wrote=False)  # deduplicated: already stored
            await copy_staged()
            return StoredBytes(copy_staged, wrote=True)
        # No usable running hash: commit, then verify by reading the upload back before it is copied.
        await blobs.commit_staged(registry, session, blocks)
        committed = True
        actual = hashlib.new(digest.algorithm)
        async for chunk in blobs.read_upload(registry, session):
            actual.update(chunk)
        if actual.hexdigest() != digest.hex:
            raise _mismatch(digest)
        await copy_staged()
        return StoredBytes(copy_staged, wrote=True)


@dataclass(frozen=True, slots=True)
class StoredBytes:
    """Verified bytes at their content address: how to write them there again, and whether this request
    wrote them (False: they were there already)."""

    rewrite: Rewrite
    wrote: bool


async def expire_uploads(artifacts: ArtifactStore, blobs: BlobStore, idle_seconds: float) -> int:
    """Remove upload sessions idle for longer than `idle_seconds`, with their staged blocks; how many.
    A session is claimed (deleted under its ETag) before its blocks go, so a chunk arriving meanwhile
    finds it either whole or gone, never half."""
    expired = 0
    before = int(time.time() - idle_seconds)
    while True:
        idle = await artifacts.idle_uploads(before, EXPIRY_PAGE)
        claimed = 0
        for doc in idle:
            if not await artifacts.claim_upload(doc):
                continue  # written meanwhile: not idle after all
            claimed += 1
            await blobs.discard_staged(doc.repo.split("/", 1)[0], doc.uploadId)
        expired += claimed
        if len(idle) < EXPIRY_PAGE or not claimed:
            return expired


def _busy(limit: int) -> RegistryError:
    return RegistryError(
        ErrorCode.UNAVAILABLE,
        f"this instance is staging its maximum of {limit} uploads; retry in {BUSY_RETRY_AFTER_SECONDS} s",
        headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
    )


def _mismatch(digest: Digest) -> RegistryError:
    return RegistryError(
        ErrorCode.DIGEST_INVALID,
        f"the uploaded content does not match {digest}",
        detail={"digest": str(digest)},
    )


def _is_session(session: str) -> bool:
    return len(session) == 32 and all(c in "0123456789abcdef" for c in session)


def _encode_state(hasher: ResumableHasher | None) -> str | None:
    return base64.b64encode(hasher.state()).decode() if hasher is not None else None


def _decode_state(state: str | None) -> ResumableHasher | None:
    return ResumableHasher.restore(base64.b64decode(state)) if state else None


def upload_headers(name: str, doc: UploadDoc) -> dict[str, str]:
    """Location, Range and Docker-Upload-UUID, as every upload response carries them."""
    return {
        "Location": f"/v2/{name}/blobs/uploads/{doc.uploadId}",
        "Range": f"0-{max(doc.offset - 1, 0)}",
        "Docker-Upload-UUID": doc.uploadId,
    }
