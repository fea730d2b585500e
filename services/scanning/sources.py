"""Where the advisory database comes from (`ADVISORY_DB`), and knowing when it changed.

    ADVISORY_DB=""                         no database: every report lists no findings
    ADVISORY_DB=/srv/osv                   a directory: every *.json (one OSV record each) and *.zip (osv.dev's
                                           per-ecosystem all.zip) under it, recursively
    ADVISORY_DB=/srv/osv/Debian-all.zip    one such file
    ADVISORY_DB=blob:advisories[/prefix]   the *.json and *.zip blobs of a container of the registry's storage
                                           account (upload osv.dev's archives there to update every instance)

The database's `version` is a digest of its listing (names with sizes and modification times, or ETags), so
an update is noticed by listing alone, reloaded once, and the timer re-matches stored SBOMs against it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path

from services.platform.blobs import BlobStore
from services.scanning.advisories import AdvisoryDatabase

log = logging.getLogger("scanning")

BLOB_SCHEME = "blob:"
MAX_RECORD_BYTES = 16 * 1024 * 1024  # one OSV record (the largest real ones are a few hundred KiB)
SUFFIXES = (".json", ".zip")


def _documents_of(name: str, data: bytes) -> Iterator[object]:
    """The OSV records in one file: a record, a JSON list of records, or a zip of record files."""
    if name.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.infolist():
                if member.filename.endswith(".json") and member.file_size <= MAX_RECORD_BYTES:
                    yield from _documents_of(member.filename, archive.read(member))
        return
    try:
        document = json.loads(data)
    except ValueError:
        log.warning("advisory database: %s is not JSON; skipped", name)
        return
    if isinstance(document, list):
        yield from document
    else:
        yield document


def _records_in(name: str, data: bytes) -> list[object]:
    return list(_documents_of(name, data))


def _local_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))


def _signature(entries: list[tuple[str, str]]) -> str:
    text = "\n".join(f"{name}\t{mark}" for name, mark in sorted(entries))
    return "osv-" + hashlib.sha256(text.encode()).hexdigest()[:16]


class AdvisorySource:
    """The configured database, reloaded only when its listing changes."""

    def __init__(self, spec: str, blobs: BlobStore | None = None) -> None:
        self.spec = spec.strip()
        self._blobs = blobs
        self._database = AdvisoryDatabase()
        self._loading = asyncio.Lock()

    async def listing(self) -> list[tuple[str, str]]:
        """(name, change mark) of every file of the database."""
        if not self.spec:
            return []
        if self.spec.startswith(BLOB_SCHEME):
            container, prefix = self._blob_location()
            assert self._blobs is not None, "a blob: advisory database needs the blob store"
            named = await self._blobs.list_named(container, prefix)
            return [(name, f"{etag}/{size}") for name, etag, size in named if name.endswith(SUFFIXES)]
        root = Path(self.spec)
        files = await asyncio.to_thread(_local_files, root)
        marks = []
        for path in files:
            stat = path.stat()
            marks.append((str(path), f"{stat.st_size}/{stat.st_mtime_ns}"))
        return marks

    def _blob_location(self) -> tuple[str, str]:
        container, _, prefix = self.spec[len(BLOB_SCHEME) :].partition("/")
        return container, prefix

    async def current(self) -> AdvisoryDatabase:
        """The database as it is now: the one already loaded unless its files changed."""
        async with self._loading:
            listing = await self.listing()
            version = _signature(listing) if listing else "empty"
            if version != self._database.version:
                self._database = await self._load(listing, version)
                log.info("advisory database %s loaded: %d records", version, self._database.records)
            return self._database

    async def _load(self, listing: list[tuple[str, str]], version: str) -> AdvisoryDatabase:
        database = AdvisoryDatabase(version=version)
        for name, _ in listing:
            if self.spec.startswith(BLOB_SCHEME):
                assert self._blobs is not None
                data = await self._blobs.read_named(self._blob_location()[0], name)
            else:
                data = await asyncio.to_thread(Path(name).read_bytes)
            for document in await asyncio.to_thread(_records_in, name, data):
                database.add(document)
        return database
