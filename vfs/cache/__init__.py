"""The machine-wide local cache: the cache directory and everything in it.

This package owns the cache directory that every mount daemon and command on the
machine shares (``$VFS_CACHE_DIR``, else ``~/.cache/vfs``). Where to find what:

    layout      names every folder and file of the cache directory (stdlib only)
    lmdbenv     the process's one registry of LMDB environments, for every LMDB user
    chunks      ChunkCache: the bounded chunk cache (pins, segment eviction, batched uses)
    index       the chunk cache's LMDB schema, layout version and in-transaction steps
    files       the segment files: the per-cache writer, run reads, the fd table, modes
    evict       whole-segment eviction and the compaction of pinned chunks
    check       verify() and repair of the chunk cache (VerifyReport)
    statcache   StatCache: lets an unchanged file skip being read on re-commit

Concurrency rules, for the whole directory:
- Processes and users: every process on the machine, of every member of a sharing
  group, coordinates through LMDB alone (one writer machine-wide, readers never
  block) and flock() on the segments being written. Files are made usable by the
  group when the root is group-writable or setgid (vfs.cache.files). Ordering rules
  make a kill -9 harmless (vfs.cache.index).
- Within a process: one LMDB environment per path (vfs.cache.lmdbenv), shared by
  every thread and every ChunkCache of that path; ChunkCache is thread-safe.
- Nothing here survives fork(): start workers with multiprocessing 'spawn'.
- On an event loop, see vfs.cache.chunks for what may run inline.

The public names are loaded on first use, not on import, so that a light process
(the parent of `vfs mount`) may import vfs.cache.layout without LMDB.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vfs.cache.check import VerifyReport
    from vfs.cache.chunks import CacheStats, ChunkCache
    from vfs.cache.statcache import StatCache

__all__ = ["CacheStats", "ChunkCache", "StatCache", "VerifyReport"]

_LAZY = {
    "CacheStats": "vfs.cache.chunks",
    "ChunkCache": "vfs.cache.chunks",
    "StatCache": "vfs.cache.statcache",
    "VerifyReport": "vfs.cache.check",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups do not come back here
    return value
