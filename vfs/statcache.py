"""The stat cache: lets an unchanged file skip being read on re-commit.

Keyed by store and absolute path; valid while (device, inode, size, mtime, ctime) are
unchanged. It holds the file's chunk list, which the committer trusts only if every
chunk is known to be in the store. Losing it costs a re-read, never correctness.

Concurrency: one LMDB environment per process (LMDB forbids opening one twice);
writes are batched into one transaction per commit.
"""

from __future__ import annotations

import os
import struct
import threading

import lmdb
import xxhash

from vfs import format as fmt

_HEAD = struct.Struct("<QQQqq")
_REF = struct.Struct("<32sI")
_envs: dict[str, lmdb.Environment] = {}
_envs_lock = threading.Lock()


def _env(path: str) -> lmdb.Environment:
    with _envs_lock:
        env = _envs.get(path)
        if env is None:
            os.makedirs(path, exist_ok=True)
            env = lmdb.open(path, map_size=4 << 30, max_dbs=1, metasync=False, sync=False)
            _envs[path] = env
        return env


def _sig(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class StatCache:
    def __init__(self, cache_dir: str, store_url: str) -> None:
        self._env = _env(os.path.join(cache_dir, "statcache"))
        self._prefix = xxhash.xxh3_64_digest(store_url.encode())
        self._pending: dict[bytes, bytes] = {}

    def _key(self, path: bytes) -> bytes:
        return self._prefix + path

    def lookup(self, path: bytes, st: os.stat_result) -> tuple[fmt.ChunkRef, ...] | None:
        with self._env.begin() as txn:
            v = txn.get(self._key(path))
        if v is None or len(v) < _HEAD.size or (len(v) - _HEAD.size) % _REF.size:
            return None
        if _HEAD.unpack_from(v) != _sig(st):
            return None
        return tuple(fmt.ChunkRef(i, n) for i, n in _REF.iter_unpack(memoryview(v)[_HEAD.size :]))

    def record(self, path: bytes, st: os.stat_result, chunks: tuple[fmt.ChunkRef, ...]) -> None:
        self._pending[self._key(path)] = _HEAD.pack(*_sig(st)) + b"".join(
            _REF.pack(c.id, c.length) for c in chunks
        )

    def flush(self) -> None:
        if not self._pending:
            return
        with self._env.begin(write=True) as txn:
            for k, v in self._pending.items():
                txn.put(k, v)
        self._pending.clear()
