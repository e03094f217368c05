"""Reused buffers for runs of chunks read from the cache and handed on as views.

A read of the cache that hands its chunks on without a copy (ChunkCache.get_views)
reads each run of neighbouring chunks into one of these buffers rather than into a
new bytes object. A new object of a few MiB is fresh memory from the kernel: every
4 KiB page of it faults when the read fills it, which was about a quarter of the
mount's CPU when it read a file from the cache. A buffer used before takes no fault.

A buffer is lent out by lend() as a view and comes back by itself once
nothing refers to it: every view of a buffer (and every slice of a view) holds a
reference to it, so a buffer whose reference count is down to the pool's own is
free to reuse. Buffers are anonymous mappings in power-of-two sizes from MIN_BYTES
to MAX_BYTES, and a run gets the smallest idle one that fits; runs outside those
sizes get None (the caller reads into a bytes object, as before). At most
MAX_LENT buffers are out at once, and at most IDLE_BYTES wait idle: past those, a
run is read into fresh memory as before, and a returned buffer goes back to the
allocator.

Concurrency: the pool is shared by the cache's reading threads; its lists are
guarded by one lock, and a buffer's first view is made under that lock, so no other
thread can find it unreferenced between lend() and its caller.
"""

from __future__ import annotations

import mmap
import sys
import threading

__all__ = ["MAX_BYTES", "MIN_BYTES", "RunBuffers"]

MIN_BYTES = 256 * 1024
MAX_BYTES = 4 * 1024 * 1024
MAX_LENT = 32
IDLE_BYTES = 16 * 1024 * 1024
# Private anonymous memory (a shared mapping would be shmem, slower to fault in).
_PRIVATE = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS


def _refs(bufs: list[mmap.mmap], i: int) -> int:
    return sys.getrefcount(bufs[i])


# The count of a buffer only the pool's list refers to, measured the way _reclaim
# measures it (so that it holds on any interpreter that counts differently).
_UNREFERENCED = _refs([mmap.mmap(-1, 1, flags=_PRIVATE)], 0)


class RunBuffers:
    """A pool of reusable read buffers (see the module docstring). The bounds are
    the module's by default; the S3 backend keeps a pool of its own, of larger
    buffers, for the bodies of ranged GETs (vfs/backends/s3.py)."""

    def __init__(
        self,
        min_bytes: int = MIN_BYTES,
        max_bytes: int = MAX_BYTES,
        max_lent: int = MAX_LENT,
        idle_bytes: int = IDLE_BYTES,
    ) -> None:
        self.min_bytes, self.max_bytes = min_bytes, max_bytes
        self.max_lent, self.idle_bytes = max_lent, idle_bytes
        self._lock = threading.Lock()
        self._lent: list[mmap.mmap] = []
        self._idle: dict[int, list[mmap.mmap]] = {}
        self._idle_bytes = 0
        self.reused = 0  # buffers lent again: reads that took no fresh memory

    def lend(self, n: int) -> memoryview | None:
        """A writable view of the first `n` bytes of a buffer lent out until no view
        of it is alive, or None if `n` is outside the pooled sizes or too many are out.
        The buffer is the smallest idle one that fits, else a new one."""
        if not self.min_bytes // 2 < n <= self.max_bytes:
            return None
        size = max(self.min_bytes, 1 << (n - 1).bit_length())
        with self._lock:
            self._reclaim()
            fits = [s for s, bufs in self._idle.items() if s >= size and bufs]
            if fits:
                buf = self._idle[min(fits)].pop()
                self._idle_bytes -= len(buf)
                self.reused += 1
            elif len(self._lent) < self.max_lent:
                buf = mmap.mmap(-1, size, flags=_PRIVATE)  # untouched until read into
            else:
                return None
            self._lent.append(buf)
            return memoryview(buf)[:n]

    def _reclaim(self) -> None:
        """Move every lent buffer that nothing refers to any more back to idle."""
        lent = self._lent
        i = 0
        while i < len(lent):
            if _refs(lent, i) > _UNREFERENCED:
                i += 1
                continue
            buf = lent[i]
            lent[i] = lent[-1]
            lent.pop()
            if self._idle_bytes + len(buf) <= self.idle_bytes:
                self._idle.setdefault(len(buf), []).append(buf)
                self._idle_bytes += len(buf)
            else:
                buf.close()  # unreferenced: its memory goes back now

    def counts(self) -> tuple[int, int]:
        """(buffers lent out, bytes idle)."""
        with self._lock:
            return len(self._lent), self._idle_bytes
