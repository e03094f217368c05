"""The mount's chunk memory: verified chunks by id, bounded by what they keep alive.

A chunk may be a read-only view of a larger buffer: a GET's (reader.ChunkSource.
fetch_span hands raw chunks on without a copy) or a run read from the machine's
cache (vfs/cache/buffers.py). Such a buffer stays alive as long as any view of it,
so a ChunkLRU counts the buffer, once, while it holds a view of it, and its cap
bounds the memory it keeps alive, not just the chunk bytes.

The loader (vfs/mount/loader.py) keeps two: the memory LRU of chunks fetched from
the store, and a first-in-first-out holding of chunks read from the cache.

Concurrency: touched only on the mount's trio thread.
"""

from __future__ import annotations

from collections import OrderedDict

from vfs import format as fmt

__all__ = ["ChunkLRU"]


class _Held:
    """A buffer that views in a chunk LRU keep alive, and how many do."""

    __slots__ = ("buffer", "size", "views")

    def __init__(self, buffer: object, size: int) -> None:
        self.buffer = buffer  # held, so that its id() stays its own
        self.size = size
        self.views = 0


class ChunkLRU:
    """Chunk bytes by id, least recently used first, bounded by `cap` bytes of what
    they keep alive. A chunk may be a view of a larger buffer (a GET's, or a run read
    from the cache), which stays alive as long as any view of it: the LRU counts that
    buffer, once, while it holds a view of it, so `cap` bounds what it keeps alive."""

    __slots__ = ("buffers", "cap", "chunks", "fifo", "used")

    def __init__(self, cap: int, fifo: bool = False) -> None:
        self.cap = cap
        self.fifo = fifo  # a hit does not make a chunk young: first in, first out
        self.chunks: OrderedDict[bytes, fmt.ChunkBytes] = OrderedDict()
        self.used = 0
        self.buffers: dict[int, _Held] = {}  # id(buffer) -> the views of it held here

    def __contains__(self, cid: bytes) -> bool:
        return cid in self.chunks

    def get(self, cid: bytes) -> fmt.ChunkBytes | None:
        data = self.chunks.get(cid)
        if data is not None and not self.fifo:
            self.chunks.move_to_end(cid)
        return data

    def put(self, cid: bytes, data: fmt.ChunkBytes) -> None:
        """Keep a chunk (not one over a quarter of the cap), evicting the oldest."""
        if cid in self.chunks or len(data) > self.cap // 4:
            return
        self.chunks[cid] = data
        self.used += self._enter(data)
        while self.used > self.cap:
            _, old = self.chunks.popitem(last=False)
            self.used -= self._leave(old)

    def pop(self, cid: bytes) -> fmt.ChunkBytes | None:
        """Take a chunk out, if held."""
        data = self.chunks.pop(cid, None)
        if data is not None:
            self.used -= self._leave(data)
        return data

    def _enter(self, data: fmt.ChunkBytes) -> int:
        """The bytes that holding `data` newly keeps alive."""
        if not isinstance(data, memoryview):
            return len(data)
        buffer = data.obj
        held = self.buffers.get(id(buffer))
        if held is None:
            held = self.buffers[id(buffer)] = _Held(buffer, memoryview(buffer).nbytes)
        held.views += 1
        return held.size if held.views == 1 else 0

    def _leave(self, data: fmt.ChunkBytes) -> int:
        """The bytes that a chunk leaving lets go of."""
        if not isinstance(data, memoryview):
            return len(data)
        held = self.buffers[id(data.obj)]
        held.views -= 1
        if held.views:
            return 0
        del self.buffers[id(data.obj)]
        return held.size
