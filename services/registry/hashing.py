"""Resumable SHA-256 / SHA-512: a running hash whose mid-stream state can be saved and resumed elsewhere.

A chunked upload arrives as PATCH requests that may land on different Function instances. To verify the
final digest without reading the whole blob back, each request resumes the hash where the previous one
stopped. `hashlib` cannot export its state, so we drive OpenSSL's legacy `SHA256_*` / `SHA512_*` API
through ctypes: its contexts are plain, documented C structs (`<openssl/sha.h>`), which we can read and
rebuild. OpenSSL 3 still exports these functions (deprecated, not removed), and they run the same
assembly block functions as `hashlib`, so the speed is the same; ctypes releases the GIL around each
call, so hashing a large chunk does not stall the event loop's other threads.

The saved state is our own canonical encoding, not a memory dump of the struct: the chaining values in
big-endian order, the byte count, and the partial block. The struct's bit counters are derived from the
byte count on restore, so a state can be checked for consistency, and it does not depend on the host's
byte order or on struct padding. A CRC guards against a truncated or corrupted stored state.

If libcrypto cannot be loaded, or lacks the legacy functions, or fails the self-test run at load time,
`ResumableHasher.available()` is False and callers verify a finished upload by reading it back instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from services.registry.digest import Digest


@dataclass(frozen=True, slots=True)
class _Algorithm:
    name: str
    ident: int  # the algorithm's byte in the serialised state
    digest_size: int
    block_size: int
    # Layout of the C context: h[8], Nl, Nh, data block, num, md_len (sizes checked in the self-test).
    ctx_format: str
    word: str  # struct code of one chaining word


_ALGORITHMS: Final[dict[str, _Algorithm]] = {
    # SHA256_CTX: SHA_LONG h[8]; SHA_LONG Nl, Nh; SHA_LONG data[16]; unsigned int num, md_len;  (112 bytes)
    "sha256": _Algorithm("sha256", 1, 32, 64, "=8I2I64s2I", "I"),
    # SHA512_CTX: SHA_LONG64 h[8]; SHA_LONG64 Nl, Nh; union {d[16]; p[128]} u; unsigned int num, md_len;
    # (216 bytes)
    "sha512": _Algorithm("sha512", 2, 64, 128, "=8Q2Q128s2I", "Q"),
}
_BY_IDENT: Final[dict[int, _Algorithm]] = {a.ident: a for a in _ALGORITHMS.values()}

_MAGIC: Final = b"RHS1"
# magic, algorithm, total bytes hashed, bytes buffered in the partial block; then the chaining words,
# the buffered bytes and a CRC32 of everything before it.
_HEADER: Final = struct.Struct("!4sBQB")
_CRC: Final = struct.Struct("!I")
# The context buffer is larger than either struct, so a libcrypto whose layout differed from the header
# we read could not write past it before the self-test rejects it.
_CTX_ALLOC: Final = 512
_UNAVAILABLE: Final = "resumable hashing is unavailable: libcrypto's legacy SHA API could not be used"


class _Py_buffer(ctypes.Structure):
    """CPython's Py_buffer, to get the address of any contiguous buffer without copying it."""

    _fields_: ClassVar[list[tuple[str, Any]]] = [
        ("buf", ctypes.c_void_p),
        # A plain pointer: ctypes must not try to manage the reference PyBuffer_Release drops.
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.POINTER(ctypes.c_ssize_t)),
        ("strides", ctypes.POINTER(ctypes.c_ssize_t)),
        ("suboffsets", ctypes.POINTER(ctypes.c_ssize_t)),
        ("internal", ctypes.c_void_p),
    ]


_PyBUF_SIMPLE: Final = 0  # contiguous bytes, read-only access is enough

_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_Py_buffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_Py_buffer)]
_release_buffer.restype = None


@dataclass(frozen=True, slots=True)
class _Functions:
    init: Any
    update: Any
    final: Any


def _candidate_paths() -> list[str]:
    paths: list[str] = []
    # Prefer the libcrypto Python's own _hashlib already loaded: same build, no second copy in memory.
    try:
        import _hashlib  # noqa: F401  (imported for its side effect of loading libcrypto)

        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                if "libcrypto" in os.path.basename(path) and path not in paths:
                    paths.append(path)
    except (ImportError, OSError):
        pass
    found = ctypes.util.find_library("crypto")
    if found:
        paths.append(found)
    return paths


def _bind(lib: ctypes.CDLL, prefix: str) -> _Functions:
    init = getattr(lib, f"{prefix}_Init")
    init.argtypes = [ctypes.c_void_p]
    init.restype = ctypes.c_int
    update = getattr(lib, f"{prefix}_Update")
    update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    update.restype = ctypes.c_int
    final = getattr(lib, f"{prefix}_Final")
    final.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    final.restype = ctypes.c_int
    return _Functions(init, update, final)


def _load() -> dict[str, _Functions] | None:
    for path in _candidate_paths():
        try:
            lib = ctypes.CDLL(path)
            functions = {"sha256": _bind(lib, "SHA256"), "sha512": _bind(lib, "SHA512")}
        except (OSError, AttributeError):
            continue
        return functions
    return None


_FUNCTIONS: dict[str, _Functions] | None = _load()


class ResumableHasher:
    """A running SHA-256 or SHA-512 whose state survives a process boundary via `state()` / `restore()`."""

    __slots__ = ("_algo", "_ctx", "_fn", "_size")

    def __init__(self, algorithm: str) -> None:
        algo = _ALGORITHMS.get(algorithm)
        if algo is None:
            raise ValueError(f"unsupported algorithm {algorithm!r}; use one of {sorted(_ALGORITHMS)}")
        if not _AVAILABLE:
            raise RuntimeError(_UNAVAILABLE)
        self._setup(algo)

    def _setup(self, algo: _Algorithm) -> None:
        assert _FUNCTIONS is not None
        self._algo = algo
        self._fn = _FUNCTIONS[algo.name]
        self._ctx = ctypes.create_string_buffer(_CTX_ALLOC)
        self._size = 0
        if self._fn.init(self._ctx) != 1:
            raise RuntimeError(f"{algo.name.upper()}_Init failed")

    @classmethod
    def _unchecked(cls, algo: _Algorithm) -> ResumableHasher:
        # For restore() and the load-time self-test, which runs before availability is known.
        hasher = object.__new__(cls)
        hasher._setup(algo)
        return hasher

    @staticmethod
    def available() -> bool:
        """True if libcrypto's legacy SHA API was found and passed the load-time self-test."""
        return _AVAILABLE

    @property
    def algorithm(self) -> str:
        return self._algo.name

    @property
    def size(self) -> int:
        """Bytes hashed so far."""
        return self._size

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Hash `data`. Any C-contiguous buffer is hashed in place, without a copy."""
        if isinstance(data, bytes):
            # ctypes passes a bytes object's own storage for a c_void_p argument.
            if data:
                self._call_update(data, len(data))
            return
        view = _Py_buffer()
        if _get_buffer(data, ctypes.byref(view), _PyBUF_SIMPLE) != 0:  # pragma: no cover - raises instead
            raise TypeError("update() needs a contiguous bytes-like object")
        try:
            if view.len:
                self._call_update(view.buf, view.len)
        finally:
            _release_buffer(ctypes.byref(view))

    def _call_update(self, pointer: bytes | int, length: int) -> None:
        if self._fn.update(self._ctx, pointer, length) != 1:
            raise RuntimeError(f"{self._algo.name.upper()}_Update failed")
        self._size += length

    def digest_bytes(self) -> bytes:
        """The raw digest of everything hashed so far; the hasher stays usable."""
        # Final() wipes the context it is given, so finish a copy and keep ours running.
        ctx = ctypes.create_string_buffer(self._ctx.raw, len(self._ctx))
        out = ctypes.create_string_buffer(self._algo.digest_size)
        if self._fn.final(out, ctx) != 1:
            raise RuntimeError(f"{self._algo.name.upper()}_Final failed")
        return out.raw

    def hexdigest(self) -> str:
        return self.digest_bytes().hex()

    def digest(self) -> Digest:
        return Digest(self._algo.name, self.hexdigest())

    def copy(self) -> ResumableHasher:
        clone = object.__new__(ResumableHasher)
        clone._algo = self._algo
        clone._fn = self._fn
        clone._ctx = ctypes.create_string_buffer(self._ctx.raw, len(self._ctx))
        clone._size = self._size
        return clone

    def state(self) -> bytes:
        """An opaque, self-checking encoding of the mid-stream state: algorithm, byte count, partial block."""
        algo = self._algo
        words = struct.unpack_from(algo.ctx_format, self._ctx.raw)
        chaining = words[:8]
        block: bytes = words[10]
        num: int = words[11]
        header = _HEADER.pack(_MAGIC, algo.ident, self._size, num)
        body = header + struct.pack(f"!8{algo.word}", *chaining) + block[:num]
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def restore(cls, state: bytes) -> ResumableHasher:
        """Rebuild a hasher from `state()`; raises ValueError if the state is corrupt or inconsistent."""
        if not _AVAILABLE:
            raise RuntimeError(_UNAVAILABLE)
        return cls._restore_unchecked(state)

    @classmethod
    def _restore_unchecked(cls, state: bytes) -> ResumableHasher:
        state = bytes(state)
        if len(state) < _HEADER.size + _CRC.size:
            raise ValueError("hash state is truncated")
        body, (crc,) = state[: -_CRC.size], _CRC.unpack(state[-_CRC.size :])
        if zlib.crc32(body) != crc:
            raise ValueError("hash state is corrupt (checksum mismatch)")
        magic, ident, size, num = _HEADER.unpack_from(body)
        if magic != _MAGIC:
            raise ValueError("not a resumable hash state")
        algo = _BY_IDENT.get(ident)
        if algo is None:
            raise ValueError(f"hash state names unknown algorithm {ident}")
        words_size = struct.calcsize(f"!8{algo.word}")
        if len(body) != _HEADER.size + words_size + num:
            raise ValueError("hash state has the wrong length")
        if size >= 1 << 61:  # the C struct counts bits in 64 bits (SHA-256: two 32-bit words)
            raise ValueError("hash state claims an impossible byte count")
        # The partial block holds exactly the bytes past the last full block; anything else is corrupt.
        if num != size % algo.block_size:
            raise ValueError("hash state is inconsistent: buffered bytes do not match the byte count")
        chaining = struct.unpack_from(f"!8{algo.word}", body, _HEADER.size)
        buffered = body[_HEADER.size + words_size :]
        bits = size * 8
        half = 32 if algo.name == "sha256" else 64
        low, high = bits & ((1 << half) - 1), bits >> half
        hasher = cls._unchecked(algo)
        ctx = struct.pack(
            algo.ctx_format,
            *chaining,
            low,
            high,
            buffered.ljust(algo.block_size, b"\0"),
            num,
            algo.digest_size,
        )
        ctypes.memmove(hasher._ctx, ctx, len(ctx))
        hasher._size = size
        return hasher


def _self_test() -> bool:
    """Check the struct layouts against hashlib, including a save/restore mid-block, before trusting them."""
    if _FUNCTIONS is None:
        return False
    try:
        data = bytes(range(256)) * 5 + b"tail"
        for algo in _ALGORITHMS.values():
            hasher = ResumableHasher._unchecked(algo)
            hasher.update(data[:77])
            hasher = ResumableHasher._restore_unchecked(hasher.state())
            hasher.update(memoryview(data)[77:1000])
            hasher = ResumableHasher._restore_unchecked(hasher.state())
            hasher.update(bytearray(data[1000:]))
            if hasher.hexdigest() != hashlib.new(algo.name, data).hexdigest():
                return False
            if ResumableHasher._unchecked(algo).hexdigest() != hashlib.new(algo.name).hexdigest():
                return False
        return True
    except (OSError, ValueError, RuntimeError, struct.error, ctypes.ArgumentError):
        return False


_AVAILABLE: Final[bool] = _self_test()
