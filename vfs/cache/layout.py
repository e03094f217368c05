"""The layout of the cache directory: every folder and file in it is named here.

The cache directory (``$VFS_CACHE_DIR``, else ``~/.cache/vfs``: the root itself is
chosen by `vfs.defaults.default_cache_dir`, which processes that never open a cache
need too) is shared by every mount daemon and command of the machine. This module
names what lives inside it, and says who writes each part::

    <root>/index/                 the chunk cache's LMDB index          vfs.cache.chunks
                                  (data.mdb, lock.mdb; schema and layout
                                  version in vfs.cache.index)
    <root>/segments/<16 hex>.seg  append-only segment files of chunks,  vfs.cache.files
                                  each written by one ChunkCache, named
                                  by a random 64-bit id never reused
    <root>/data/                  layout 1 (one file per chunk): removed
                                  when a cache of that layout is opened
    <root>/statcache/             the stat cache's LMDB environment     vfs.cache.statcache
    <root>/known/                 chunk id -> location per store, from  vfs.cache.known
                                  the pack indexes (LMDB)
    <root>/packindex/<64 hex>     pack indexes fetched from stores,     vfs.ops.commit
                                  by pack id
    <root>/spool/                 packs being written by a commit       vfs.ops.commit, vfs.packer
    <root>/logs/mount-*.log       the mount daemons' logs               vfs.mount.control
    <root>/offline/<24 hex>.json  per store: its config and the refs    vfs.cache.offline
                                  that pinned versions were pinned by

A new folder of the cache directory gets its name here first. (The mount daemons'
control sockets live in the runtime directory, not here: see vfs.mount.control.)

Standard library only, and `vfs.cache` loads its heavy modules lazily, so a process
that must stay light (the parent of `vfs mount`, which names the daemon's log file)
can import this module without importing LMDB.
"""

from __future__ import annotations

import os

__all__ = [
    "index_dir",
    "known_dir",
    "legacy_data_dir",
    "logs_dir",
    "offline_dir",
    "packindex_dir",
    "parse_segment_name",
    "segment_name",
    "segments_dir",
    "spool_dir",
    "statcache_dir",
]

_SEGMENT_SUFFIX = ".seg"
_SEGMENT_HEX = 16


def index_dir(root: str) -> str:
    return os.path.join(root, "index")


def segments_dir(root: str) -> str:
    return os.path.join(root, "segments")


def legacy_data_dir(root: str) -> str:
    """Where layout 1 kept one file per chunk; cleared when such a cache is opened."""
    return os.path.join(root, "data")


def statcache_dir(root: str) -> str:
    return os.path.join(root, "statcache")


def known_dir(root: str) -> str:
    return os.path.join(root, "known")


def packindex_dir(root: str) -> str:
    return os.path.join(root, "packindex")


def spool_dir(root: str) -> str:
    return os.path.join(root, "spool")


def logs_dir(root: str) -> str:
    return os.path.join(root, "logs")


def offline_dir(root: str) -> str:
    return os.path.join(root, "offline")


def segment_name(seg: int) -> str:
    """The file name (no folder) of the segment numbered `seg` (a u64)."""
    return f"{seg:0{_SEGMENT_HEX}x}{_SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The segment number a file name of segments_dir() names, or None if none."""
    stem, suffix = name[: -len(_SEGMENT_SUFFIX)], name[-len(_SEGMENT_SUFFIX) :]
    if suffix != _SEGMENT_SUFFIX or len(stem) != _SEGMENT_HEX:
        return None
    try:
        seg = int(stem, 16)
    except ValueError:
        return None
    return seg if segment_name(seg) == name else None
