"""The data plane's documents and queries: repositories, and what one repository holds.

    repositories [/registry]  one document per repository, so the catalog is one ordered
                              single-partition query (never a walk of storage)
        {id: <name with "/" as "|">, registry, type: "repository", name, created,
         changeableAttributes, updated (of the attributes)}
    artifacts    [/repo]      everything of one repository, partition "<registry>/<name>":
        manifest:<digest>  {type: "manifest", digest, mediaType, size, artifactType, subject,
                            referrer (the descriptor it adds to its subject's referrers index),
                            configMediaType, blobs, children, content (base64, when small), created,
                            updated, timeKey, imageSize, architecture, os (from the config, read once at
                            push), references (an index's children and their platforms),
                            changeableAttributes, quarantineState, quarantineDetails, untaggedSince}
        tag:<tag>          {type: "tag", name, digest, mediaType, size, created, updated, timeKey,
                            changeableAttributes}
                           carries what HEAD needs (and its own read lock), so HEAD by tag is one point
                           read
        blob:<digest>      {type: "blob", digest, size, created}
                           the repository's link to a registry-wide, content-addressed blob
        upload:<uuid>      {type: "upload", offset, blocks, hashState, ...} an upload session; removed
                           with its staged blocks once idle for `UPLOAD_EXPIRY_SECONDS` (its `_ts`: every
                           chunk rewrites it), and by Cosmos's ttl as a backstop
        outbox:<uuid>      the events a change raised (services/events/store.py), in the change's batch
        gcfence, release:<uuid>  the garbage collector's fence and the blobs a delete released
                           (services/registry/ledger.py), written in the batches of pushes and deletes

A manifest and its tags are written in one transactional batch of the repository's partition, so readers
never see a tag pointing at a manifest that is not there; the outbox document of the events the change
raises goes in the same batch, so an event is never lost nor raised for a change that did not happen.
A push patches the tags and manifest that exist only while they are not write-locked (a condition in the
batch), and never writes their attributes; deletes and attribute changes act only on documents unchanged
since they were read (ETag). So a lock set meanwhile (services/registry/locks.py) is never overwritten nor
slipped past: the loser of such a race gets `ConcurrentUpdate` and checks again. Upload sessions are
replaced with an ETag condition.

`timeKey` is `<updated>|<name or digest>` (services/registry/acr_paths.py): time-ordered lists sort and
page on that one property, which the default index serves (two ORDER BY properties would need a composite
index). Documents written before attributes existed have no `timeKey` and are left out of time-ordered
lists until their next push or attribute change; every other read treats missing attributes as enabled.
"""

from __future__ import annotations

import base64
import bisect
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, cast

from azure.core.exceptions import ResourceNotFoundError
from pydantic import Field

from services.events.store import OutboxDoc
from services.platform.cosmos import BatchOperation, ConcurrentUpdate, Cosmos, Document, utcnow
from services.platform.readcache import ChangeMarks, ReadCache, process_marks
from services.registry.acr_paths import Order, time_key
from services.registry.locks import ChangeableAttributes

UPLOAD_TTL_SECONDS = 7 * 24 * 3600  # Blob Storage drops uncommitted blocks after 7 days, too.
KNOWN_REPOSITORY_SECONDS = 60.0
# A repository's tag list, and a registry's catalog, are read whole and kept (read cache) when they hold at
# most this many names, so that paging through them costs one query, not one per page; longer ones are
# paged from the database each time. Few lists are kept per process (`NAME_LISTS_KEPT`): at most a few MiB.
NAME_LIST_CACHE_LIMIT = 5_000
# Documents each read cache keeps per process (tags, manifests without their large fields, blob links,
# repository attributes): about 2 KiB each as pydantic models, so at most ~4 MiB per cache. An entry is
# trusted for READ_CACHE_SECONDS only, so this bounds memory, not the hit rate of a hot working set.
READ_CACHE_ENTRIES = 2_048
NAME_LISTS_KEPT = 64
# The filter that leaves list-disabled documents out (missing attributes mean enabled).
LISTED = "(NOT IS_DEFINED(c.changeableAttributes.listEnabled) OR c.changeableAttributes.listEnabled = true)"


class RepositoryDoc(Document):
    registry: str
    type: Literal["repository"] = "repository"
    name: str
    created: str = Field(default_factory=utcnow)
    updated: str | None = None  # when its attributes last changed
    changeableAttributes: ChangeableAttributes = Field(default_factory=ChangeableAttributes)


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
    updated: str | None = None  # last push or attribute change (None: never since `created`)
    imageSize: int | None = None  # config + layers (an index: its own size)
    architecture: str | None = None
    os: str | None = None
    references: list[dict[str, str]] | None = None  # an index's children: digest, architecture, os
    changeableAttributes: ChangeableAttributes = Field(default_factory=ChangeableAttributes)
    quarantineState: str | None = None
    quarantineDetails: str | None = None
    untaggedSince: str | None = None  # when the retention timer first found it untagged (retention.py)

    def inline_content(self) -> bytes | None:
        return base64.b64decode(self.content) if self.content is not None else None

    @property
    def last_update(self) -> str:
        return self.updated or self.created

    @property
    def time_key(self) -> str:
        return time_key(self.last_update, self.digest)

    def to_item(self) -> dict[str, Any]:
        return super().to_item() | {"timeKey": self.time_key}


class TagDoc(Document):
    repo: str
    type: Literal["tag"] = "tag"
    name: str
    digest: str
    mediaType: str
    size: int
    updated: str = Field(default_factory=utcnow)
    created: str | None = None  # None: a tag written before this field existed (then `updated` stands in)
    changeableAttributes: ChangeableAttributes = Field(default_factory=ChangeableAttributes)

    @property
    def created_time(self) -> str:
        return self.created or self.updated

    @property
    def time_key(self) -> str:
        return time_key(self.updated, self.name)

    def to_item(self) -> dict[str, Any]:
        return super().to_item() | {"timeKey": self.time_key}


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


class ArtifactStore:
    """Repositories and their manifests, tags, blob links and upload sessions; every hot path is a point read
    or a one-partition query.

    Reads for pulls (`cached=True`, and `repository_attributes`) may come from a `ReadCache`
    (services/platform/readcache.py) for `read_seconds`: never stale within the instance, since every write
    here marks its repository changed for all worker processes (`_writing`); at most `read_seconds` stale for
    another instance's writes. Read-modify-write paths (pushes, deletes, attribute changes) never use it.
    """

    def __init__(self, cosmos: Cosmos, read_seconds: float = 0.0, marks: ChangeMarks | None = None) -> None:
        self._cosmos = cosmos
        self._marks = marks or process_marks()
        self._known_repositories: dict[tuple[str, str], float] = {}
        self._tags: ReadCache[TagDoc | None] = ReadCache(self._marks, read_seconds, READ_CACHE_ENTRIES)
        self._manifests: ReadCache[ManifestDoc | None] = ReadCache(self._marks, read_seconds, READ_CACHE_ENTRIES)
        self._links: ReadCache[BlobLinkDoc | None] = ReadCache(self._marks, read_seconds, READ_CACHE_ENTRIES)
        self._attributes: ReadCache[ChangeableAttributes] = ReadCache(self._marks, read_seconds, READ_CACHE_ENTRIES)
        self._name_lists: ReadCache[list[str] | None] = ReadCache(self._marks, read_seconds, NAME_LISTS_KEPT)

    @contextmanager
    def _writing(self, repo: str, catalog: str | None = None) -> Iterator[None]:
        """Around every write to a repository: afterwards (even when it failed, as it may have happened),
        whatever this instance cached of the repository is read again; with `catalog` (the registry), its
        catalog too (the write adds, removes or hides a repository)."""
        try:
            yield
        finally:
            self._marks.changed(repo)
            if catalog is not None:
                self._marks.changed(_catalog_partition(catalog))

    async def ensure_repository(self, registry: str, name: str) -> None:
        """Create the repository document if missing. Every push calls this, so remember for a while what
        exists (a repository deleted through another instance is re-created by the next push after that)."""
        now = time.monotonic()
        if self._known_repositories.get((registry, name), 0.0) > now:
            return
        doc = RepositoryDoc(id=repository_id(name), registry=registry, name=name)
        with self._writing(repo_key(registry, name), registry):
            await self._cosmos.create("repositories", doc)  # None when it exists: fine
        self._known_repositories[(registry, name)] = now + KNOWN_REPOSITORY_SECONDS

    async def repository_exists(self, registry: str, name: str) -> bool:
        return await self._cosmos.read("repositories", repository_id(name), registry) is not None

    async def get_repository(self, registry: str, name: str) -> RepositoryDoc | None:
        doc = await self._cosmos.read("repositories", repository_id(name), registry)
        return RepositoryDoc.model_validate(doc) if doc else None

    async def create_repository(self, registry: str, name: str) -> RepositoryDoc:
        """The repository document, created now unless someone else just did."""
        doc = RepositoryDoc(id=repository_id(name), registry=registry, name=name)
        with self._writing(repo_key(registry, name), registry):
            created = await self._cosmos.create("repositories", doc)
        if created is None:
            return await self.get_repository(registry, name) or doc
        self._known_repositories[(registry, name)] = time.monotonic() + KNOWN_REPOSITORY_SECONDS
        return RepositoryDoc.model_validate(created)

    async def repository_attributes(self, registry: str, name: str) -> ChangeableAttributes:
        """The repository's attributes for a read (pull, list), from the read cache. A repository that does
        not exist has the defaults (what is asked for in it will not be found)."""

        async def read() -> ChangeableAttributes:
            doc = await self.get_repository(registry, name)
            return doc.changeableAttributes if doc is not None else ChangeableAttributes()

        return await self._attributes.get(repo_key(registry, name), "", read)

    async def replace_repository(self, doc: RepositoryDoc) -> RepositoryDoc:
        """Write the repository document back only if unchanged since read (ConcurrentUpdate otherwise)."""
        with self._writing(repo_key(doc.registry, doc.name), doc.registry):
            return RepositoryDoc.model_validate(await self._cosmos.replace("repositories", doc))

    async def list_repositories(self, registry: str, last: str, limit: int) -> list[str]:
        """Up to `limit` repository names after `last`, in lexical order; list-disabled ones are left out."""
        sql = (
            "SELECT c.name FROM c WHERE c.registry = @r AND c.type = 'repository' AND c.name > @last "
            f"AND {LISTED} ORDER BY c.name"
        )
        params = {"@r": registry, "@last": ""}
        if self._name_lists.enabled:
            whole = await self._name_lists.get(
                _catalog_partition(registry), "", lambda: self._whole_list("repositories", sql, params, registry)
            )
            if whole is not None:
                return _page_of(whole, last, limit)
        return await self._first_names(
            self._cosmos.query("repositories", sql, params | {"@last": last}, registry, limit), limit
        )

    async def _whole_list(self, container: str, sql: str, params: dict[str, Any], partition: str) -> list[str] | None:
        """All the names the query lists (it starts from "" and is ordered), or None when there are more than
        `NAME_LIST_CACHE_LIMIT` (then pages are read from the database)."""
        names = await self._first_names(
            self._cosmos.query(container, sql, params, partition, NAME_LIST_CACHE_LIMIT + 1), NAME_LIST_CACHE_LIMIT + 1
        )
        return names if len(names) <= NAME_LIST_CACHE_LIMIT else None

    async def all_repositories(self, registry: str) -> list[str]:
        sql = "SELECT c.name FROM c WHERE c.registry = @r AND c.type = 'repository'"
        return [item["name"] async for item in self._cosmos.query("repositories", sql, {"@r": registry}, registry)]

    async def delete_repository(self, registry: str, name: str) -> None:
        self._known_repositories.pop((registry, name), None)
        repo = repo_key(registry, name)
        sql = "SELECT c.id FROM c WHERE c.repo = @p"
        with self._writing(repo, registry):
            async for doc in self._cosmos.query("artifacts", sql, {"@p": repo}, repo):
                await self._cosmos.delete("artifacts", doc["id"], repo)
            await self._cosmos.delete("repositories", repository_id(name), registry)

    @staticmethod
    async def _first_names(items: AsyncIterator[dict[str, Any]], limit: int) -> list[str]:
        names: list[str] = []
        async for item in items:
            names.append(item["name"])
            if len(names) >= limit:
                break
        return names

    async def get_blob_link(self, repo: str, digest: str, *, cached: bool = False) -> BlobLinkDoc | None:
        async def read() -> BlobLinkDoc | None:
            doc = await self._cosmos.read("artifacts", blob_id(digest), repo)
            return BlobLinkDoc.model_validate(doc) if doc else None

        return await self._links.get(repo, digest, read) if cached else await read()

    async def put_blob_link(self, link: BlobLinkDoc) -> None:
        with self._writing(link.repo):
            await self._cosmos.upsert("artifacts", link)

    async def delete_blob_link(self, repo: str, digest: str, release: Document) -> bool:
        """Delete the link, with the release of the blob for the collector (services/registry/ledger.py) in
        the same batch; False when there was no link."""
        try:
            with self._writing(repo):
                await self._cosmos.batch(
                    "artifacts", repo, [("delete", (blob_id(digest),)), ("create", (release.to_item(),))]
                )
        except ResourceNotFoundError:
            return False
        return True

    async def create_upload(self, upload: UploadDoc) -> UploadDoc:
        doc = await self._cosmos.create("artifacts", upload)
        if doc is None:
            raise ConcurrentUpdate(upload.id)  # a random id taken twice: never in practice
        return UploadDoc.model_validate(doc)

    async def get_upload(self, repo: str, uuid: str) -> UploadDoc | None:
        doc = await self._cosmos.read("artifacts", upload_id(uuid), repo)
        return UploadDoc.model_validate(doc) if doc else None

    async def replace_upload(self, upload: UploadDoc) -> UploadDoc:
        """Write the session back only if nobody else did since it was read."""
        return UploadDoc.model_validate(await self._cosmos.replace("artifacts", upload))

    async def idle_uploads(self, before: int, limit: int) -> list[UploadDoc]:
        """Upload sessions of every registry last written before `before` (epoch seconds; cross-partition:
        the expiry timer only)."""
        sql = "SELECT * FROM c WHERE c.type = 'upload' AND c._ts < @before"
        found: list[UploadDoc] = []
        async for item in self._cosmos.query_across("artifacts", sql, {"@before": before}, limit):
            found.append(UploadDoc.model_validate(item))
            if len(found) >= limit:
                break
        return found

    async def claim_upload(self, upload: UploadDoc) -> bool:
        """Delete the session only if it is still as read (ETag): True for exactly one of racing callers."""
        return await self._cosmos.delete("artifacts", upload.id, upload.repo, etag=upload.etag or "*")

    async def delete_upload(self, repo: str, uuid: str) -> bool:
        return await self._cosmos.delete("artifacts", upload_id(uuid), repo)

    async def get_manifest(self, repo: str, digest: str, *, cached: bool = False) -> ManifestDoc | None:
        """The manifest document. `cached`: for a pull, from the read cache, and then without what can be
        large (`content`: the manifest bytes have their own byte-bounded cache, services/registry/app.py;
        `blobs`, `children`, `references`, `referrer`: up to thousands of descriptors), so that an entry
        stays small whatever the manifest."""

        async def read() -> ManifestDoc | None:
            doc = await self._cosmos.read("artifacts", manifest_id(digest), repo)
            return ManifestDoc.model_validate(doc) if doc else None

        if not cached:
            return await read()

        async def read_lean() -> ManifestDoc | None:
            doc = await read()
            if doc is None:
                return None
            return doc.model_copy(
                update={"content": None, "blobs": [], "children": [], "references": None, "referrer": None}
            )

        return await self._manifests.get(repo, digest, read_lean)

    async def get_tag(self, repo: str, tag: str, *, cached: bool = False) -> TagDoc | None:
        async def read() -> TagDoc | None:
            doc = await self._cosmos.read("artifacts", tag_id(tag), repo)
            return TagDoc.model_validate(doc) if doc else None

        return await self._tags.get(repo, tag, read) if cached else await read()

    async def commit_manifest(
        self,
        manifest: ManifestDoc,
        tags: Iterable[TagDoc],
        outbox: OutboxDoc | None = None,
        fence: BatchOperation | None = None,
    ) -> None:
        """The manifest, its tags and the outbox of its events, all or nothing, in one transactional batch.

        A document that was there when read (it carries an ETag) is patched with what a push changes (a tag:
        its target; a manifest: its times) only while it is still not write-locked: its attributes are never
        written here, so a lock set meanwhile is neither lost nor passed, and pushes of one tag do not
        conflict with each other (the patches apply in turn, the last one wins, as before locks). A
        document that was not there is created, so one made meanwhile is not overwritten. A failed
        condition, or a document deleted meanwhile, is `ConcurrentUpdate`: read, check the locks, try
        again. `fence` is the collector's guard (services/registry/collector.py): the batch fails, as
        ConcurrentUpdate, when a blob link was deleted in the repository since the links were checked."""
        operations = [_write(manifest), *(_write(tag) for tag in tags)]
        if outbox is not None:
            operations.append(("create", (outbox.to_item(),)))
        if fence is not None:
            operations.append(fence)
        try:
            with self._writing(manifest.repo):
                await self._cosmos.batch("artifacts", manifest.repo, operations)
        except ResourceNotFoundError as exc:
            raise ConcurrentUpdate(str(exc)) from exc

    async def replace_artifact(self, doc: TagDoc | ManifestDoc) -> dict[str, Any]:
        """Write a tag or manifest back only if unchanged since read (ConcurrentUpdate otherwise)."""
        with self._writing(doc.repo):
            return await self._cosmos.replace("artifacts", doc)

    async def replace_manifest(self, doc: ManifestDoc, outbox: OutboxDoc | None) -> None:
        """Write a manifest back only if unchanged since read, with the outbox of the events the change raises
        (a quarantine release) in the same batch: ConcurrentUpdate when it changed or went meanwhile."""
        if outbox is None:
            await self.replace_artifact(doc)
            return
        operations: list[BatchOperation] = [
            ("replace", (doc.id, doc.to_item()), {"if_match_etag": doc.etag}),
            ("create", (outbox.to_item(),)),
        ]
        with self._writing(doc.repo):
            try:
                await self._cosmos.batch("artifacts", doc.repo, operations)
            except ResourceNotFoundError as exc:
                raise ConcurrentUpdate(str(exc)) from exc

    async def delete_tag(self, repo: str, tag: str, outbox: OutboxDoc | None = None, etag: str | None = None) -> bool:
        """Delete a tag (with the outbox of its events in the same batch, when given). With `etag`, only if
        unchanged since read: `ConcurrentUpdate` otherwise."""
        with self._writing(repo):
            if outbox is None:
                return await self._cosmos.delete("artifacts", tag_id(tag), repo, etag=etag)
            condition = {"if_match_etag": etag} if etag else {}
            try:
                await self._cosmos.batch(
                    "artifacts", repo, [("delete", (tag_id(tag),), condition), ("create", (outbox.to_item(),))]
                )
            except ResourceNotFoundError:
                return False
            return True

    async def delete_manifest(
        self,
        manifest: ManifestDoc,
        tags: list[TagDoc],
        outbox: OutboxDoc | None = None,
        release: Document | None = None,
    ) -> bool:
        """Delete a manifest and its tags, as read, and write the outbox of its events and the release of
        its blobs for the collector (services/registry/ledger.py): one batch, each document only if
        unchanged since read (`ConcurrentUpdate` otherwise; False when already gone).

        One batch holds 100 operations: the tags beyond what fits go first, in batches of their own (a
        manifest with that many tags is rare; those deletes then precede the manifest's)."""
        repo = manifest.repo
        room = BATCH_LIMIT - 3
        with self._writing(repo):
            for start in range(room, len(tags), BATCH_LIMIT):
                await self._cosmos.batch("artifacts", repo, [_delete(tag) for tag in tags[start : start + BATCH_LIMIT]])
            operations = [_delete(manifest), *(_delete(tag) for tag in tags[:room])]
            if outbox is not None:
                operations.append(("create", (outbox.to_item(),)))
            if release is not None:
                operations.append(("create", (release.to_item(),)))
            try:
                await self._cosmos.batch("artifacts", repo, operations)
            except ResourceNotFoundError:
                return False
            return True

    async def tags_of(self, repo: str, digest: str) -> list[TagDoc]:
        """Every tag pointing at `digest`, listed or not."""
        sql = "SELECT * FROM c WHERE c.repo = @p AND c.type = 'tag' AND c.digest = @d"
        return [
            TagDoc.model_validate(item)
            async for item in self._cosmos.query("artifacts", sql, {"@p": repo, "@d": digest}, repo)
        ]

    async def tag_names_by_digest(self, repo: str, digests: list[str]) -> dict[str, list[str]]:
        """The names of the tags pointing at each of `digests` (a page of a manifest list), sorted."""
        found: dict[str, list[str]] = {digest: [] for digest in digests}
        if not digests:
            return found
        sql = "SELECT c.name, c.digest FROM c WHERE c.repo = @p AND c.type = 'tag' AND ARRAY_CONTAINS(@ds, c.digest)"
        async for item in self._cosmos.query("artifacts", sql, {"@p": repo, "@ds": digests}, repo):
            found.setdefault(item["digest"], []).append(item["name"])
        return {digest: sorted(names) for digest, names in found.items()}

    async def list_tag_docs(
        self, repo: str, order: Order, after: str, limit: int, digest: str | None = None
    ) -> list[TagDoc]:
        """Up to `limit` listed tags after `after` (a name, or a time key for the time orders)."""
        items = self._list("tag", repo, order, after, limit, {"c.digest": digest} if digest else {})
        return [TagDoc.model_validate(item) async for item in items]

    async def list_manifest_docs(self, repo: str, order: Order, after: str, limit: int) -> list[ManifestDoc]:
        """Up to `limit` listed manifests after `after` (a digest, or a time key for the time orders)."""
        return [
            ManifestDoc.model_validate(item) async for item in self._list("manifest", repo, order, after, limit, {})
        ]

    async def _list(
        self, kind: Literal["tag", "manifest"], repo: str, order: Order, after: str, limit: int, equal: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        field = ("c.name" if kind == "tag" else "c.digest") if order is Order.NAME else "c.timeKey"
        direction, comparison = ("DESC", "<") if order is Order.TIME_DESC else ("ASC", ">")
        conditions = ["c.repo = @p", f"c.type = '{kind}'", LISTED]
        params: dict[str, Any] = {"@p": repo}
        for index, (path, value) in enumerate(equal.items()):
            conditions.append(f"{path} = @v{index}")
            params[f"@v{index}"] = value
        if after:
            conditions.append(f"{field} {comparison} @after")
            params["@after"] = after
        sql = f"SELECT * FROM c WHERE {' AND '.join(conditions)} ORDER BY {field} {direction}"
        count = 0
        async for item in self._cosmos.query("artifacts", sql, params, repo, limit):
            yield item
            count += 1
            if count >= limit:
                return

    async def all_of(self, repo: str, kind: Literal["tag", "manifest"]) -> list[dict[str, Any]]:
        """Every tag or manifest document of a repository (a repository delete, which must see them all)."""
        sql = "SELECT * FROM c WHERE c.repo = @p AND c.type = @t"
        return [item async for item in self._cosmos.query("artifacts", sql, {"@p": repo, "@t": kind}, repo)]

    async def count(self, repo: str, kind: Literal["tag", "manifest"]) -> int:
        sql = "SELECT VALUE COUNT(1) FROM c WHERE c.repo = @p AND c.type = @t"
        async for value in self._cosmos.query("artifacts", sql, {"@p": repo, "@t": kind}, repo):
            return int(cast(int, value))
        return 0

    async def last_update(self, repo: str) -> str | None:
        """The latest `updated` of the repository's tags and manifests."""
        sql = "SELECT VALUE MAX(c.updated) FROM c WHERE c.repo = @p AND (c.type = 'tag' OR c.type = 'manifest')"
        async for value in self._cosmos.query("artifacts", sql, {"@p": repo}, repo):
            return cast(str, value) if isinstance(value, str) else None
        return None

    async def locked_holders_of_blob(self, repo: str, digest: str) -> tuple[str, str] | None:
        """("manifest", digest) or ("tag", name) of a locked manifest needing the blob, or of a locked tag
        pointing at a manifest that needs it; None when nothing locked needs it."""
        sql = (
            "SELECT c.digest, c.changeableAttributes FROM c "
            "WHERE c.repo = @p AND c.type = 'manifest' AND ARRAY_CONTAINS(c.blobs, @b)"
        )
        users: list[str] = []
        async for item in self._cosmos.query("artifacts", sql, {"@p": repo, "@b": digest}, repo):
            if _locked(item):
                return "manifest", str(item["digest"])
            users.append(str(item["digest"]))
        if users:
            sql = (
                "SELECT c.name, c.changeableAttributes FROM c "
                "WHERE c.repo = @p AND c.type = 'tag' AND ARRAY_CONTAINS(@ds, c.digest)"
            )
            async for item in self._cosmos.query("artifacts", sql, {"@p": repo, "@ds": users}, repo):
                if _locked(item):
                    return "tag", str(item["name"])
        return None

    async def delete_repository_rest(
        self, registry: str, name: str, release: Callable[[list[str]], Document], keep_links: bool = False
    ) -> None:
        """After its manifests and tags: the repository's blob links (released for the collector first) and
        upload sessions, then its document. Its outbox documents stay: they are events still to be
        published (they expire once published). `keep_links`: its manifests were soft-deleted
        (services/registry/softdelete.py), so their links stay for a restore; the collector takes them
        once the records are purged."""
        repo = repo_key(registry, name)
        kinds = "c.type = 'upload'" if keep_links else "(c.type = 'blob' OR c.type = 'upload')"
        sql = f"SELECT c.id, c.type, c.digest FROM c WHERE c.repo = @p AND {kinds}"
        with self._writing(repo, registry):
            found = [item async for item in self._cosmos.query("artifacts", sql, {"@p": repo}, repo)]
            linked = [str(item["digest"]) for item in found if item["type"] == "blob"]
            for start in range(0, len(linked), RELEASE_DIGESTS):
                await self._cosmos.create("artifacts", release(linked[start : start + RELEASE_DIGESTS]))
            for item in found:
                await self._cosmos.delete("artifacts", item["id"], repo)
            await self._cosmos.delete("repositories", repository_id(name), registry)
        self._known_repositories.pop((registry, name), None)

    async def list_tags(self, repo: str, last: str, limit: int) -> list[str]:
        """Up to `limit` names of listed tags after `last`, in lexical order (`/v2/<name>/tags/list`)."""
        sql = (
            f"SELECT c.name FROM c WHERE c.repo = @p AND c.type = 'tag' AND c.name > @last AND {LISTED} ORDER BY c.name"
        )
        params = {"@p": repo, "@last": ""}
        if self._name_lists.enabled:
            whole = await self._name_lists.get(repo, "tags", lambda: self._whole_list("artifacts", sql, params, repo))
            if whole is not None:
                return _page_of(whole, last, limit)
        page = self._cosmos.query("artifacts", sql, params | {"@last": last}, repo, limit)
        return await self._first_names(page, limit)

    async def list_referrers(self, repo: str, subject: str) -> list[dict[str, Any]]:
        sql = "SELECT c.referrer FROM c WHERE c.repo = @p AND c.type = 'manifest' AND c.subject = @s"
        return [
            item["referrer"]
            async for item in self._cosmos.query("artifacts", sql, {"@p": repo, "@s": subject}, repo)
            if item.get("referrer")
        ]


BATCH_LIMIT = 100  # operations in one transactional batch (Cosmos DB's limit)
RELEASE_DIGESTS = 1000  # digests in one release document


def _catalog_partition(registry: str) -> str:
    """The change-mark partition of a registry's catalog (repository keys are `<registry>/<name>`)."""
    return f"catalog:{registry}"


def _page_of(names: list[str], last: str, limit: int) -> list[str]:
    """The names after `last` (lexical order, as the database sorts these ASCII names), at most `limit`."""
    start = bisect.bisect_right(names, last)
    return names[start : start + limit]


# A conditional patch applies only to a document that is not write-locked (missing attributes: unlocked).
WRITABLE = (
    "FROM c WHERE NOT IS_DEFINED(c.changeableAttributes.writeEnabled) OR c.changeableAttributes.writeEnabled = true"
)
# What a push changes in a tag that exists (where it points), and in a manifest that exists (the same bytes
# again: only its times, and what manifests pushed before these fields existed lack). Cosmos DB allows ten
# operations in one patch.
_TAG_PUSH_FIELDS = ("digest", "mediaType", "size", "updated", "timeKey")
_MANIFEST_PUSH_FIELDS = ("updated", "timeKey", "imageSize", "architecture", "os", "references")


def _write(doc: ManifestDoc | TagDoc) -> BatchOperation:
    """A push's write of a tag or manifest: create it if it was not there when read, else patch what a push
    changes, on the condition that it is (still) not write-locked."""
    item = doc.to_item()
    if not doc.etag:
        return ("create", (item,))
    fields = _TAG_PUSH_FIELDS if isinstance(doc, TagDoc) else _MANIFEST_PUSH_FIELDS
    changes = [{"op": "set", "path": f"/{field}", "value": item[field]} for field in fields if field in item]
    return ("patch", (doc.id, changes), {"filter_predicate": WRITABLE})


def _delete(doc: ManifestDoc | TagDoc) -> BatchOperation:
    return ("delete", (doc.id,), {"if_match_etag": doc.etag} if doc.etag else {})


def _locked(item: dict[str, Any]) -> bool:
    attributes = ChangeableAttributes.model_validate(item.get("changeableAttributes") or {})
    return not (attributes.writeEnabled and attributes.deleteEnabled)
