"""Reading image layers as they stream from Blob Storage, safely, keeping only the files an inventory needs.

A layer is a tar archive, gzip- or zstd-compressed or plain (told apart by its first bytes, whatever its
media type claims). It is read front to back in one pass, never extracted anywhere: each entry's path is
normalised and checked, and only the package databases and manifests `wanted` names are kept (each
within a size limit). Layers apply in order with their whiteouts (`.wh.<name>` removes a path and what is
under it, `.wh..wh..opq` empties a directory of what lower layers put there), so `ImageFiles` holds what
the image's root file system would show for those paths.

A layer is hostile, and the scan ends `Failed` with the reason, when it: names a path outside the root
(`../`), links a symlink or hard link outside the root by a relative target, expands beyond
`max_layer_bytes` or by more than `max_ratio` times its compressed size (a decompression bomb), has
extended headers larger than `max_header_bytes`, more than `max_entries` entries, or is malformed or cut
short (a corrupt compressed stream, a tar without its end-of-archive block). Memory stays bounded
whatever the layer's size: the stream is read in chunks, tarfile's member list is dropped as it goes, and
the kept files are capped in all.
"""

from __future__ import annotations

import asyncio
import io
import posixpath
import re
import tarfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any

import zstandard

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
READ_SIZE = 256 * 1024
WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"


class HostileLayer(Exception):
    """The layer cannot be read safely; `reason` says why (shown in the scan's state)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ScanLimits:
    max_layer_bytes: int = 16 * 1024**3  # uncompressed bytes of one layer
    max_ratio: int = 200  # uncompressed / compressed, checked once past `ratio_floor_bytes`
    ratio_floor_bytes: int = 64 * 1024**2
    max_entries: int = 2_000_000
    max_header_bytes: int = 1024 * 1024  # pax / GNU long-name headers
    max_database_bytes: int = 64 * 1024**2  # dpkg status, apk installed, rpmdb
    max_manifest_bytes: int = 1024 * 1024  # METADATA, package.json, os-release, one status.d file
    max_kept_bytes: int = 256 * 1024**2  # all kept files of an image together


# --- which files an inventory needs ---------------------------------------------------------------
DATABASES = frozenset({"var/lib/dpkg/status", "lib/apk/db/installed", "var/lib/rpm/rpmdb.sqlite"})
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
_STATUS_D = re.compile(r"^var/lib/dpkg/status\.d/[^/]+$")
_PYTHON = re.compile(r"^(?:.*/)?[^/]+\.(?:dist-info/METADATA|egg-info/PKG-INFO|egg-info)$")
_NPM = re.compile(r"^(?:.*/)?node_modules/(?:@[^/]+/)?[^/@][^/]*/package\.json$")


def wanted(path: str, limits: ScanLimits) -> int | None:
    """The size limit of a file the inventory reads, or None for a file it ignores."""
    if path in DATABASES:
        return limits.max_database_bytes
    if path in OS_RELEASE or _PYTHON.match(path) or _NPM.match(path):
        return limits.max_manifest_bytes
    if _STATUS_D.match(path) and not path.endswith(".md5sums"):
        return limits.max_manifest_bytes
    return None


def normalise(name: str) -> str:
    """An entry's path relative to the root ("" for the root itself); HostileLayer when it leaves the root."""
    path = posixpath.normpath("/" + name.lstrip("/")) if name else "/"
    relative = posixpath.normpath(name.lstrip("/")) if name.strip("/") else "."
    if relative == ".." or relative.startswith("../"):
        raise HostileLayer(f"path traversal: entry {name[:200]!r} leaves the image root")
    return path.lstrip("/")


def _check_link(path: str, member: tarfile.TarInfo) -> None:
    target = member.linkname
    if member.issym():
        if target.startswith("/"):
            return  # absolute targets resolve inside the image's own root
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        if resolved == ".." or resolved.startswith("../"):
            raise HostileLayer(f"symlink escape: {path[:200]!r} -> {target[:200]!r} leaves the image root")
    elif member.islnk():
        relative = posixpath.normpath(target.lstrip("/")) if target.strip("/") else "."
        if relative == ".." or relative.startswith("../"):
            raise HostileLayer(f"hard link escape: {path[:200]!r} -> {target[:200]!r} leaves the image root")


# --- one layer --------------------------------------------------------------------------------------
@dataclass(slots=True)
class LayerFiles:
    """What one layer changes among the wanted paths."""

    files: dict[str, bytes] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)  # whiteouts: the path and everything under it
    opaque: set[str] = field(default_factory=set)  # directories emptied of lower layers' content
    skipped: list[str] = field(default_factory=list)  # wanted files over their size limit
    entries: int = 0


@dataclass(slots=True)
class ImageFiles:
    """The wanted files of the image's root file system, layers applied in order."""

    limits: ScanLimits = field(default_factory=ScanLimits)
    files: dict[str, bytes] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def apply(self, layer: LayerFiles) -> None:
        hidden = [*layer.removed, *layer.opaque]
        if hidden:
            for path in list(self.files):
                if any(h == "" or path == h or path.startswith(h + "/") for h in hidden):
                    del self.files[path]
        self.files.update(layer.files)
        self.skipped.extend(layer.skipped)
        if sum(len(data) for data in self.files.values()) > self.limits.max_kept_bytes:
            raise HostileLayer(f"the image's package databases exceed {self.limits.max_kept_bytes} bytes")


class _SafeTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses oversized extended headers before tarfile reads them whole into memory."""

    header_limit = ScanLimits().max_header_bytes

    def _proc_member(self, tarfile_: Any) -> Any:
        extended = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE)
        if self.type in extended and self.size > self.header_limit:
            raise HostileLayer(f"an extended tar header of {self.size} bytes (limit {self.header_limit})")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


class _Counted(io.RawIOBase):
    """The compressed side of a layer, counting the bytes read from it."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._source.read(len(view))
        view[: len(data)] = data
        self.count += len(data)
        return len(data)


class DecompressedStream(io.RawIOBase):
    """The uncompressed bytes of a layer (gzip, zstd or plain, by magic number), counted against the limits;
    each read produces at most what was asked, so a bomb is caught before it fills memory."""

    def __init__(self, source: IO[bytes], limits: ScanLimits) -> None:
        self._counted = _Counted(source)
        self._source = io.BufferedReader(self._counted, buffer_size=READ_SIZE)
        self._limits = limits
        self.total = 0
        head = self._source.peek(4)[:4]
        self.kind = "gzip" if head.startswith(GZIP_MAGIC) else "zstd" if head.startswith(ZSTD_MAGIC) else "tar"
        self._gzip = zlib.decompressobj(wbits=31) if self.kind == "gzip" else None
        self._zstd = (
            zstandard.ZstdDecompressor().stream_reader(self._source, read_size=READ_SIZE, read_across_frames=True)
            if self.kind == "zstd"
            else None
        )
        self._ended = False

    @property
    def compressed(self) -> int:
        return self._counted.count

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._ended:
            data = self._next(min(len(view), READ_SIZE))
            if data:
                view[: len(data)] = data
                self._count(len(data))
                return len(data)
        return 0

    def _next(self, size: int) -> bytes:
        """Up to `size` uncompressed bytes; b"" when more input is needed first or at the end (`_ended`)."""
        if self.kind == "tar":
            data = self._source.read(size)
            self._ended = not data
            return data
        if self._zstd is not None:
            try:
                data = self._zstd.read(size)
            except zstandard.ZstdError as exc:
                raise HostileLayer(f"malformed layer: corrupt zstd stream ({exc})") from None
            self._ended = not data
            return data
        return self._next_gzip(size)

    def _next_gzip(self, size: int) -> bytes:
        assert self._gzip is not None
        gz = self._gzip
        if gz.unconsumed_tail:
            return self._inflate(gz.unconsumed_tail, size)
        if gz.eof:
            rest = gz.unused_data or self._source.read(READ_SIZE)
            if not rest:
                self._ended = True
                return b""
            if not rest.strip(b"\0"):  # zero padding after the last member (some writers add it)
                while rest and not rest.strip(b"\0"):
                    rest = self._source.read(READ_SIZE)
                if rest:
                    raise HostileLayer("malformed layer: data after the gzip stream's padding")
                self._ended = True
                return b""
            self._gzip = zlib.decompressobj(wbits=31)  # another gzip member follows
            return self._inflate(rest, size)
        data = self._source.read(READ_SIZE)
        if not data:
            raise HostileLayer("malformed layer: the gzip stream is cut short")
        return self._inflate(data, size)

    def _inflate(self, data: bytes, size: int) -> bytes:
        assert self._gzip is not None
        try:
            return self._gzip.decompress(data, size)
        except zlib.error as exc:
            raise HostileLayer(f"malformed layer: corrupt gzip stream ({exc})") from None

    def _count(self, produced: int) -> None:
        self.total += produced
        limits = self._limits
        if self.total > limits.max_layer_bytes:
            raise HostileLayer(f"decompression bomb: the layer expands beyond {limits.max_layer_bytes} bytes")
        if self.total > limits.ratio_floor_bytes and self.total > limits.max_ratio * max(self.compressed, 1):
            raise HostileLayer(
                f"decompression bomb: {self.compressed} compressed bytes expand to more than "
                f"{self.total} (over {limits.max_ratio} times)"
            )


def read_layer(source: IO[bytes], limits: ScanLimits | None = None) -> LayerFiles:
    """Read one layer (compressed or not) from `source` to its end; HostileLayer when it is unsafe."""
    limits = limits if limits is not None else ScanLimits()
    header_limit = limits.max_header_bytes
    stream = DecompressedStream(source, limits)
    layer = LayerFiles()
    reader = io.BufferedReader(stream, buffer_size=READ_SIZE)

    info = type("LimitedTarInfo", (_SafeTarInfo,), {"header_limit": header_limit})

    try:
        with tarfile.open(fileobj=reader, mode="r|", tarinfo=info) as tar:
            for member in tar:
                tar.members = []  # type: ignore[attr-defined]  # stream mode would keep every entry's header in memory
                layer.entries += 1
                if layer.entries > limits.max_entries:
                    raise HostileLayer(f"the layer has more than {limits.max_entries} entries")
                _read_member(tar, member, layer, limits)
            end = tar.offset
        while reader.read(READ_SIZE):
            pass
    except HostileLayer:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if "unexpected end of data" in str(exc):
            raise HostileLayer("malformed layer: the tar archive is cut short (unexpected end of data)") from None
        raise HostileLayer(f"malformed layer: {exc}") from None
    if stream.total < end + tarfile.BLOCKSIZE:
        raise HostileLayer("malformed layer: the tar archive is cut short (no end-of-archive block)")
    return layer


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, layer: LayerFiles, limits: ScanLimits) -> None:
    path = normalise(member.name)
    if member.issym() or member.islnk():
        _check_link(path, member)
    directory, base = posixpath.split(path)
    if base == OPAQUE_WHITEOUT:
        layer.opaque.add(directory)
        return
    if base.startswith(WHITEOUT_PREFIX):
        layer.removed.add(posixpath.join(directory, base[len(WHITEOUT_PREFIX) :]))
        return
    limit = wanted(path, limits)
    if limit is None:
        return
    if member.islnk():
        target = normalise(member.linkname)
        if target in layer.files:
            layer.files[path] = layer.files[target]
        return
    if not member.isreg():
        return
    if member.size > limit:
        layer.skipped.append(f"{path} ({member.size} bytes, over {limit})")
        return
    content = tar.extractfile(member)
    if content is None:
        return
    data = content.read(limit + 1)
    if len(data) != member.size:
        raise HostileLayer(f"malformed layer: {path[:200]!r} is cut short")
    layer.files[path] = data


# --- from Blob Storage's async chunks to the reader's blocking reads -------------------------------------
class ChunkedSource(io.RawIOBase):
    """A blocking file over an async iterator of chunks, for a reader running in a worker thread: each read
    waits for the event loop to fetch the next chunk, so one chunk at a time is in memory."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._chunks = chunks
        self._loop = loop
        self._buffer = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._buffer and not self._done:
            future = asyncio.run_coroutine_threadsafe(_next_chunk(self._chunks), self._loop)
            chunk = future.result()
            if chunk is None:
                self._done = True
            else:
                self._buffer = chunk
        size = min(len(view), len(self._buffer))
        view[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


async def _next_chunk(chunks: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None


async def read_layer_stream(chunks: AsyncIterator[bytes], limits: ScanLimits | None = None) -> LayerFiles:
    """Read a layer from an async stream of chunks (Blob Storage's download), parsing in a worker thread."""
    loop = asyncio.get_running_loop()
    source = ChunkedSource(chunks, loop)
    return await asyncio.to_thread(read_layer, io.BufferedReader(source, buffer_size=READ_SIZE), limits)
