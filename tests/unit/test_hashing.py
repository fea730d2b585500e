"""Resumable hashing against hashlib, with state saved and restored mid-stream."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import threading
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.registry.digest import Digest
from services.registry.hashing import ResumableHasher

pytestmark = pytest.mark.skipif(not ResumableHasher.available(), reason="libcrypto's legacy SHA API is missing")

ALGORITHMS = ["sha256", "sha512"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_empty(algorithm: str) -> None:
    hasher = ResumableHasher(algorithm)
    assert hasher.size == 0
    assert hasher.algorithm == algorithm
    assert hasher.hexdigest() == hashlib.new(algorithm).hexdigest()
    assert hasher.digest() == Digest(algorithm, hashlib.new(algorithm).hexdigest())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_block_boundaries(algorithm: str) -> None:
    # Lengths around the 64- and 128-byte block sizes, and the padding edge (block - 9 bytes).
    for length in (1, 55, 56, 63, 64, 65, 111, 112, 119, 127, 128, 129, 1000):
        data = os.urandom(length)
        hasher = ResumableHasher(algorithm)
        hasher.update(data)
        assert hasher.hexdigest() == hashlib.new(algorithm, data).hexdigest(), length
        restored = ResumableHasher.restore(hasher.state())
        assert restored.hexdigest() == hashlib.new(algorithm, data).hexdigest(), length
        assert restored.size == length


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hexdigest_does_not_disturb_the_stream(algorithm: str) -> None:
    hasher = ResumableHasher(algorithm)
    hasher.update(b"hello ")
    assert hasher.hexdigest() == hashlib.new(algorithm, b"hello ").hexdigest()
    assert hasher.hexdigest() == hashlib.new(algorithm, b"hello ").hexdigest()
    hasher.update(b"world")
    assert hasher.hexdigest() == hashlib.new(algorithm, b"hello world").hexdigest()
    assert hasher.size == 11


def test_accepts_every_buffer_kind_without_copying_semantics_changing() -> None:
    data = os.urandom(10_000)
    hasher = ResumableHasher("sha256")
    hasher.update(data[:1000])
    hasher.update(bytearray(data[1000:2000]))
    hasher.update(memoryview(data)[2000:3000])
    hasher.update(memoryview(bytearray(data))[3000:4000])
    # A memoryview of a wider item type is hashed as its bytes.
    hasher.update(memoryview(data[4000:8000]).cast("I"))
    hasher.update(b"")
    hasher.update(memoryview(b""))
    hasher.update(data[8000:])
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    assert hasher.size == len(data)


def test_rejects_non_buffers_and_non_contiguous_views() -> None:
    hasher = ResumableHasher("sha256")
    with pytest.raises(TypeError):
        hasher.update("text")  # type: ignore[arg-type]
    with pytest.raises(BufferError):
        hasher.update(memoryview(b"abcdef")[::2])
    assert hasher.size == 0


def test_unsupported_algorithm() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        ResumableHasher("md5")


def test_copy_is_independent() -> None:
    hasher = ResumableHasher("sha512")
    hasher.update(b"abc")
    clone = hasher.copy()
    clone.update(b"def")
    assert hasher.hexdigest() == hashlib.sha512(b"abc").hexdigest()
    assert clone.hexdigest() == hashlib.sha512(b"abcdef").hexdigest()
    assert clone.size == 6


def test_large_input() -> None:
    data = os.urandom(64 * 1024 * 1024 + 17)
    hasher = ResumableHasher("sha256")
    hasher.update(memoryview(data))
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    assert hasher.size == len(data)


def test_state_is_compact() -> None:
    hasher = ResumableHasher("sha256")
    hasher.update(os.urandom(10_000_063))
    # header + 8 words + partial block + CRC; never a memory dump of the struct.
    assert len(hasher.state()) <= 18 + 32 + 63 + 4
    hasher = ResumableHasher("sha512")
    hasher.update(os.urandom(127))
    assert len(hasher.state()) <= 18 + 64 + 127 + 4


def _corrupt(state: bytes, index: int) -> bytes:
    flipped = bytearray(state)
    flipped[index] ^= 0x01
    return bytes(flipped)


def _resign(body: bytes) -> bytes:
    return body + struct.pack("!I", zlib.crc32(body))


def test_restore_rejects_corruption() -> None:
    hasher = ResumableHasher("sha256")
    hasher.update(b"x" * 100)
    state = hasher.state()
    for index in range(len(state)):
        with pytest.raises(ValueError):
            ResumableHasher.restore(_corrupt(state, index))
    for cut in range(len(state)):
        with pytest.raises(ValueError):
            ResumableHasher.restore(state[:cut])
    with pytest.raises(ValueError):
        ResumableHasher.restore(state + b"\0")


def test_restore_rejects_consistent_checksums_with_bad_content() -> None:
    hasher = ResumableHasher("sha256")
    hasher.update(b"x" * 100)
    body = hasher.state()[:-4]
    # Wrong magic, unknown algorithm, byte count that disagrees with the buffered bytes, absurd count.
    with pytest.raises(ValueError, match="not a resumable"):
        ResumableHasher.restore(_resign(b"XXXX" + body[4:]))
    with pytest.raises(ValueError, match="unknown algorithm"):
        ResumableHasher.restore(_resign(body[:4] + b"\x09" + body[5:]))
    with pytest.raises(ValueError, match="inconsistent"):
        ResumableHasher.restore(_resign(body[:5] + struct.pack("!Q", 101) + body[13:]))
    with pytest.raises(ValueError, match="impossible"):
        ResumableHasher.restore(_resign(body[:5] + struct.pack("!Q", (1 << 64) - 28) + body[13:]))


@given(
    data=st.binary(max_size=5000),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=8),
    algorithm=st.sampled_from(ALGORITHMS),
)
@settings(max_examples=300)
def test_split_and_resumed_hash_equals_hashlib(data: bytes, cuts: list[int], algorithm: str) -> None:
    """Hash in pieces cut at random points, saving and restoring the state between every piece."""
    points = sorted({min(c, len(data)) for c in cuts})
    hasher = ResumableHasher(algorithm)
    start = 0
    for point in [*points, len(data)]:
        hasher.update(memoryview(data)[start:point])
        hasher = ResumableHasher.restore(hasher.state())
        assert hasher.size == point
        assert hasher.hexdigest() == hashlib.new(algorithm, data[:point]).hexdigest()
        start = point
    assert hasher.digest() == Digest.of(data, algorithm)


@given(st.binary(max_size=300))
def test_restore_of_arbitrary_bytes_never_crashes(state: bytes) -> None:
    try:
        hasher = ResumableHasher.restore(state)
    except ValueError:
        return
    hasher.update(b"still usable")
    assert len(hasher.hexdigest()) in (64, 128)


def test_state_resumes_in_another_process() -> None:
    data = os.urandom(300_001)
    hasher = ResumableHasher("sha256")
    hasher.update(data[:123_457])
    script = (
        "import sys\n"
        "from services.registry.hashing import ResumableHasher\n"
        "h = ResumableHasher.restore(bytes.fromhex(sys.argv[1]))\n"
        "h.update(sys.stdin.buffer.read())\n"
        "print(h.hexdigest(), h.size)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(
        [sys.executable, "-c", script, hasher.state().hex()],
        input=data[123_457:],
        capture_output=True,
        check=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    ).stdout.decode()
    assert out.split() == [hashlib.sha256(data).hexdigest(), str(len(data))]


def test_hashers_run_in_parallel_threads() -> None:
    # Correctness under concurrency (each thread its own hasher); the GIL is released by ctypes.
    data = [os.urandom(2_000_000) for _ in range(4)]
    results: dict[int, str] = {}

    def work(i: int) -> None:
        hasher = ResumableHasher("sha256")
        for offset in range(0, len(data[i]), 65536):
            hasher.update(memoryview(data[i])[offset : offset + 65536])
        results[i] = hasher.hexdigest()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: hashlib.sha256(d).hexdigest() for i, d in enumerate(data)}
