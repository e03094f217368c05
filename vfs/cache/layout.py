"""The layout of the cache directory: every folder and file in it is named here.

The cache directory (``$VFS_CACHE_DIR``, else ``~/.cache/vfs``: the root itself is
chosen by `vfs.defaults.default_cache_dir`, which processes that never open a cache
need too) is shared by every mount daemon and command of the machine. This module
names what lives inside it, and says who writes each part::

    <root>/index/                 the chunk cache's LMDB index          vfs.cache.chunks
                                  (data.mdb, lock.mdb; schema in vfs.cache.index)
    <root>/data/tmp/              chunk files being written:            vfs.cache.files
                                  <64 hex>.<pid>.<random>.tmp
    <root>/data/<2 hex>/<64 hex>  one file per chunk, named by its BLAKE3 id
    <root>/statcache/             the stat cache's LMDB environment     vfs.cache.statcache
    <root>/packindex/<64 hex>     pack indexes fetched from stores,     vfs.ops.commit
                                  by pack id
    <root>/spool/                 packs being written by a commit       vfs.ops.commit, vfs.packer
    <root>/logs/mount-*.log       the mount daemons' logs               vfs.mount.control

A new folder of the cache directory gets its name here first. (The mount daemons'
control sockets live in the runtime directory, not here: see vfs.mount.control.)

Standard library only, and `vfs.cache` loads its heavy modules lazily, so a process
that must stay light (the parent of `vfs mount`, which names the daemon's log file)
can import this module without importing LMDB.
"""

from __future__ import annotations

import os

__all__ = [
    "CHUNK_NAME_LEN",
    "chunk_path",
    "data_dir",
    "index_dir",
    "is_chunk_folder",
    "logs_dir",
    "packindex_dir",
    "parse_chunk_path",
    "spool_dir",
    "statcache_dir",
    "temp_dir",
    "temp_name",
]

# A chunk file's name: the 32-byte chunk id in lower-case hex.
CHUNK_NAME_LEN = 64
_TEMP = "tmp"


def index_dir(root: str) -> str:
    return os.path.join(root, "index")


def data_dir(root: str) -> str:
    return os.path.join(root, "data")


def temp_dir(data: str) -> str:
    """The temp folder inside `data` (a data_dir()): on the same file system as the
    chunk files, so a rename publishes a finished file atomically."""
    return os.path.join(data, _TEMP)


def statcache_dir(root: str) -> str:
    return os.path.join(root, "statcache")


def packindex_dir(root: str) -> str:
    return os.path.join(root, "packindex")


def spool_dir(root: str) -> str:
    return os.path.join(root, "spool")


def logs_dir(root: str) -> str:
    return os.path.join(root, "logs")


def chunk_path(data: str, chunk_id: bytes) -> str:
    """Where the chunk `chunk_id` lives under `data` (a data_dir())."""
    h = chunk_id.hex()
    return os.path.join(data, h[:2], h)


def temp_name(final_path: str) -> str:
    """A fresh temp file name (no folder) for a file to be renamed to `final_path`.
    The pid tells verify() whose it was; the random part keeps threads apart."""
    return f"{os.path.basename(final_path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp"


def is_chunk_folder(name: str) -> bool:
    """Whether a folder of data_dir() may hold chunk files (every one but the temp folder)."""
    return name != _TEMP


def parse_chunk_path(path: str) -> bytes | None:
    """The chunk id a chunk file's path names, or None if it names none."""
    name = os.path.basename(path)
    if len(name) != CHUNK_NAME_LEN or os.path.basename(os.path.dirname(path)) != name[:2]:
        return None
    try:
        chunk_id = bytes.fromhex(name)
    except ValueError:
        return None
    return chunk_id if chunk_id.hex() == name else None
