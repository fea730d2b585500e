"""The buffers uploads stage their blocks from: allocated once per instance, reused by upload after upload.

Staging used to copy each block into a new 4 MiB `bytes`. Freed, those went back to malloc's heap rather
than to the system (glibc raises its mmap threshold after the first large free), so every concurrent
upload left ~26 MiB behind. A buffer here is an anonymous memory map of `block_size` bytes: it never
passes through malloc, its pages become resident only once written (a 100 KiB blob touches 25 pages of
its buffer), and it goes back to the pool when the block is staged and hashed. How many exist at once is
bounded by the uploads an instance admits at once (`max_concurrent_uploads`) times what one upload holds
(`upload_concurrency` blocks being staged, one being hashed, one being filled). The pool keeps `keep` idle
buffers (one upload's worth) for the next blocks; the others are unmapped, so the memory of a burst of
uploads goes back to the system when the burst is over.
"""

from __future__ import annotations

import mmap


class BlockBuffers:
    """A pool of `block_size` buffers; `take()` one, and `Block.done()` gives it back."""

    def __init__(self, block_size: int, keep: int) -> None:
        self.block_size = block_size
        self.keep = keep
        self._idle: list[mmap.mmap] = []
        self.allocated = 0  # buffers that exist now: idle or in use
        self.peak = 0  # the most that existed at once

    @property
    def idle(self) -> int:
        return len(self._idle)

    def take(self) -> Block:
        if self._idle:
            return Block(self, self._idle.pop())
        self.allocated += 1
        self.peak = max(self.peak, self.allocated)
        return Block(self, mmap.mmap(-1, self.block_size))

    def _give(self, buffer: mmap.mmap) -> None:
        if len(self._idle) < self.keep:
            self._idle.append(buffer)
        else:
            # Not closed here: views of it may still be alive for a moment. The map is unmapped when the
            # last reference goes, which is as soon as they do.
            self._drop()

    def _drop(self) -> None:
        self.allocated -= 1


class Block:
    """One buffer on loan, with a count of who still reads it (the filler, then the stager and the hasher).

    It returns to the pool when the last user is done. A user that may still have the bytes in flight (a
    staging request that was cancelled or failed: its connection can still be sending them) spoils it:
    it is then never reused, and the memory map is freed once nothing refers to it any more.
    """

    __slots__ = ("_pool", "_spoiled", "_users", "buffer")

    def __init__(self, pool: BlockBuffers, buffer: mmap.mmap) -> None:
        self._pool = pool
        self.buffer = buffer
        self._users = 1
        self._spoiled = False

    def share(self) -> None:
        self._users += 1

    def done(self, *, spoiled: bool = False) -> None:
        self._spoiled = self._spoiled or spoiled
        self._users -= 1
        if self._users == 0:
            if self._spoiled:
                self._pool._drop()
            else:
                self._pool._give(self.buffer)
