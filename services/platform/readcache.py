"""Point reads kept for a moment, never stale inside one instance: what makes HEAD and GET cheap.

A pull is mostly point reads of documents that rarely change (a tag, a manifest, a blob link, the
repository's attributes). Each costs a Cosmos DB round trip and most of a request's CPU. `ReadCache` keeps
them, with two rules that bound staleness:

- **Inside one instance: never stale.** Every write to a partition (a repository) sets that partition's
  change mark to a new random value *after* the write and before the request that made it returns. A
  cached entry remembers the mark it was read under and is used only while the mark is unchanged. The
  marks live in a small shared-memory table (`ChangeMarks`, a memory-mapped file), so all worker processes
  of an instance see each other's writes: a client's GET after its own PUT or DELETE returned never sees
  the old document, whichever worker serves it.
- **Across instances: at most `ttl` seconds.** Another instance's write is not signalled here; an entry is
  read again once it is `ttl` old (`READ_CACHE_SECONDS`, 1 s by default; 0 turns the cache off).

Why this is safe without locks: a reader takes the mark *before* it reads the database. If a write
commits after that read, the writer sets a new mark after its commit, which differs from the remembered
one (random 64-bit values; concurrent writers each write a new value, so no change is lost the way a
read-modify-write counter could lose one), and the entry is dropped on its next use. Several partitions
may share a slot of the table; that only costs a few extra reads. A torn 8-byte read can only look like a
changed mark, which again costs one read.

Each process keeps at most `max_entries` entries, least recently used out first; callers keep entries
small (no manifest bytes: those have their own byte-bounded cache).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import stat
import struct
import tempfile
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("readcache")

SLOTS = 1 << 16  # 512 KiB of marks
_MARK = struct.Struct("<Q")
DEFAULT_MARKS_FILE = f"registry-change-marks-{os.getuid()}.bin"


class ChangeMarks:
    """A table of 64-bit change marks shared by every process that maps the same file.

    With no file (`path` empty), the table is private to this process: right for a single worker. The file
    may sit in a shared temp directory, so it is opened only if it is a regular file (never through a
    symlink) that this user owns and nobody else may write; otherwise the table is private (each worker then
    relies on READ_CACHE_SECONDS alone for the others' writes) and `shared` is False.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._map: mmap.mmap | bytearray = bytearray(SLOTS * _MARK.size)
        self.shared = False
        if not path:
            return
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as error:
            log.warning("read cache change marks %s not opened (%s): private to this process", file, error)
            return
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
                log.warning("read cache change marks %s is not a file only this user may write: not shared", file)
                return
            if info.st_size < SLOTS * _MARK.size:
                os.ftruncate(fd, SLOTS * _MARK.size)  # zero-filled; never shrunk, so every mapping stays valid
            self._map = mmap.mmap(fd, SLOTS * _MARK.size)
            self.shared = True
        finally:
            os.close(fd)

    @staticmethod
    def slot(partition: str) -> int:
        """The same slot in every process (Python's `hash` is salted per process; CRC-32 is not)."""
        return zlib.crc32(partition.encode()) & (SLOTS - 1)

    def read(self, slot: int) -> int:
        return int(_MARK.unpack_from(self._map, slot * _MARK.size)[0])

    def change(self, slot: int) -> None:
        _MARK.pack_into(self._map, slot * _MARK.size, int.from_bytes(os.urandom(8), "little"))

    def changed(self, partition: str) -> None:
        """Call after every write to `partition` (also one that failed: it may have happened): every cached
        read of it, in every process sharing the table, is read again on its next use."""
        self.change(self.slot(partition))

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            with contextlib.suppress(BufferError):
                self._map.close()


_process_marks: ChangeMarks | None = None


def process_marks() -> ChangeMarks:
    """This process's view of its instance's change marks: the file `READ_CACHE_MARKS_FILE` names, else
    `registry-change-marks.bin` in the temp directory (local to an instance in Azure Functions and shared by
    its worker processes; on a machine running several registries they share it too, which only costs
    extra reads)."""
    global _process_marks
    if _process_marks is None:
        from services.platform.settings import get_settings

        path = get_settings().read_cache_marks_file or str(Path(tempfile.gettempdir()) / DEFAULT_MARKS_FILE)
        _process_marks = ChangeMarks(path)
    return _process_marks


class ReadCache(Generic[T]):
    """Values of point reads by (partition, key); see the module docstring for when they are trusted."""

    def __init__(self, marks: ChangeMarks, ttl: float, max_entries: int = 20_000) -> None:
        self._marks = marks
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, int, T]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    async def get(self, partition: str, key: str, read: Callable[[], Awaitable[T]]) -> T:
        """The cached value, or `read()` now (and kept) when there is none that may be trusted."""
        if self._ttl <= 0:
            return await read()
        mark = self._marks.read(self._marks.slot(partition))
        now = time.monotonic()
        entry = self._entries.get((partition, key))
        if entry is not None:
            expires, entry_mark, value = entry
            if expires > now and entry_mark == mark:
                self._entries.move_to_end((partition, key))
                self.hits += 1
                return value
            del self._entries[(partition, key)]
        self.misses += 1
        value = await read()  # the mark was taken before this read (see the module docstring)
        self._entries[(partition, key)] = (now + self._ttl, mark, value)
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()
