"""The stat cache: lets an unchanged file skip being read on re-commit.

Keyed by store and absolute path; valid while (device, inode, size, mtime, ctime) are
unchanged. It holds the file's chunk list, which the committer trusts only if every
chunk is known to be in the store. Losing it costs a re-read, never correctness.
It lives in ``<root>/statcache/`` (vfs.cache.layout).

Concurrency: its LMDB environment comes from the process's one registry
(vfs.cache.lmdbenv: LMDB forbids opening one twice) and stays open for the life of
the process; writes are batched (one transaction per STATCACHE_FLUSH records of a
commit). `record` and `flush` run on one thread (the committer); `lookup_many` may
run on any thread (a read transaction of its own).
"""

from __future__ import annotations

import os
import struct

import lmdb
import xxhash

from vfs import format as fmt
from vfs import perms
from vfs.cache import layout, lmdbenv

__all__ = ["StatCache"]

_HEAD = struct.Struct("<QQQqq")
_REF = struct.Struct("<32sI")
_DIR = struct.Struct("<QQQQ")  # files, bytes, ignored, skipped (not file, dir, symlink)
_SPEC = lmdbenv.EnvSpec(what="stat cache", map_size=4 << 30, max_dbs=1, metasync=False, sync=False)


# LMDB's keys are at most 511 bytes, and paths up to 4,096: a longer key is its
# prefix and a hash of the rest. A collision would only make a record look like
# another file's, and a record holds only while the file's stat matches it.
_MAX_KEY = 511


def _fit(key: bytes) -> bytes:
    if len(key) <= _MAX_KEY:
        return key
    return key[:8] + b"\1" + xxhash.xxh3_128_digest(key)


def _no_setup(env: lmdb.Environment) -> None:
    """The stat cache uses the environment's unnamed database alone."""


def _sig(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class StatCache:
    def __init__(self, cache_dir: str, store_url: str) -> None:
        path = layout.statcache_dir(cache_dir)
        modes = perms.make_dirs(path)
        # Never released: the environment stays open for the process, as it always has.
        self._env = lmdbenv.acquire(path, _SPEC, _no_setup)
        if modes.shared:  # every member of the group commits through it
            for name in ("data.mdb", "lock.mdb"):
                perms.set_mode(os.path.join(path, name), modes.file)
        self._prefix = xxhash.xxh3_64_digest(store_url.encode())
        self._pending: dict[bytes, bytes] = {}

    def _key(self, path: bytes) -> bytes:
        return _fit(self._prefix + path)

    def lookup(self, path: bytes, st: os.stat_result) -> tuple[fmt.ChunkRef, ...] | None:
        key = self._key(path)
        got = self._env.run(lambda txn: txn.get(key), write=False)
        self._env.touched(1)
        return self._decode(got, st)

    def lookup_many(
        self, items: list[tuple[bytes, os.stat_result]]
    ) -> list[tuple[fmt.ChunkRef, ...] | None]:
        """`lookup` of each (path, stat) in one read transaction."""
        keys = [self._key(p) for p, _ in items]

        def fn(txn: lmdb.Transaction[bytes]) -> list[bytes | None]:
            return [txn.get(k) for k in keys]

        got = self._env.run(fn, write=False)
        self._env.touched(len(keys))
        return [self._decode(v, st) for v, (_, st) in zip(got, items, strict=True)]

    @staticmethod
    def _decode(v: bytes | None, st: os.stat_result) -> tuple[fmt.ChunkRef, ...] | None:
        if v is None or len(v) < _HEAD.size or (len(v) - _HEAD.size) % _REF.size:
            return None
        if _HEAD.unpack_from(v) != _sig(st):
            return None
        return tuple(fmt.ChunkRef(i, n) for i, n in _REF.iter_unpack(memoryview(v)[_HEAD.size :]))

    def record(self, path: bytes, st: os.stat_result, chunks: tuple[fmt.ChunkRef, ...]) -> None:
        self._pending[self._key(path)] = _HEAD.pack(*_sig(st)) + b"".join(
            _REF.pack(c.id, c.length) for c in chunks
        )

    # A directory's entry: the signature of its entries' stats (and the rules in
    # force) and the tree they gave. Its key cannot be a file's: paths have no NUL.

    def _dir_key(self, path: bytes) -> bytes:
        return _fit(self._prefix + b"\0" + path)

    def lookup_dir(self, path: bytes, sig: bytes) -> tuple[bytes, int, int, int, int] | None:
        """What was recorded for the directory `path` under signature `sig`: its tree
        id and its own (not its subdirectories') files, bytes, ignored entries and
        skipped ones (a FIFO, a socket, a device). A record of another layout is
        none: the directory is looked at again."""
        key = self._dir_key(path)
        v = self._env.run(lambda txn: txn.get(key), write=False)
        self._env.touched(1)
        n = len(sig)
        if v is None or len(v) != n + fmt.ID_LEN + _DIR.size or v[:n] != sig:
            return None
        files, nbytes, ignored, skipped = _DIR.unpack_from(v, n + fmt.ID_LEN)
        return bytes(v[n : n + fmt.ID_LEN]), files, nbytes, ignored, skipped

    def record_dir(
        self,
        path: bytes,
        sig: bytes,
        tree: bytes,
        files: int,
        nbytes: int,
        ignored: int,
        skipped: int = 0,
    ) -> None:
        self._pending[self._dir_key(path)] = sig + tree + _DIR.pack(files, nbytes, ignored, skipped)

    def pending(self) -> int:
        """Records not yet written."""
        return len(self._pending)

    def flush(self) -> None:
        if not self._pending:
            return
        pending = self._pending

        def fn(txn: lmdb.Transaction[bytes]) -> None:
            for k, v in pending.items():
                txn.put(k, v)

        self._env.run(fn, write=True)
        self._pending.clear()
        # The records go in path order and share leaf pages, but a flush of 4,096 of
        # them still maps its pages: released, as after the known index's folds.
        self._env.release_map()
