"""Known chunks: which chunks a store already holds, and where, without a store-sized
dict in memory.

An LMDB environment in ``<root>/known/`` (vfs.cache.layout) maps, per store, chunk id
to its location, and records which packs have been folded in. It is filled per pack
from the local pack-index copies (``store.local_pack_index``), so a commit reads only
the indexes of packs it has not seen before, and shared by every commit of the
machine. It is a cache: a commit that loses it rebuilds it from the pack indexes.

A location is trusted only while its pack is in the store's current ``index/``
listing, which every commit fetches: a pack that gc deleted is not listed any more,
so its stale entries answer "unknown" (the chunk is uploaded again), never a location
in a missing pack.

Concurrency: the environment comes from the process's registry (vfs.cache.lmdbenv).
Lookups are short read transactions that any thread may run; `fold` (write) runs on
the committer's thread. `listed` is a set that only grows during a commit (packs
this commit uploaded); Python's set operations are atomic under the GIL.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import lmdb
import xxhash

from vfs import format as fmt
from vfs import perms
from vfs.cache import layout, lmdbenv
from vfs.store import Store

__all__ = ["KnownChunks"]

log = logging.getLogger(__name__)

_LOC = struct.Struct("<32sQIB")  # pack id, offset, stored length, codec
_SPEC = lmdbenv.EnvSpec(what="known-chunks index", map_size=1 << 30, max_dbs=2, sync=False)
_FOLD_BATCH = 64  # pack indexes read per fold
# Chunk entries per write transaction, the map released after each: a put at a random
# key reads its leaf through the map, with the kernel's fault-around (~128 KiB a
# page), so a slice maps up to ~64 MiB (lmdbenv.RELEASE_KEYS is the same bound for
# reads). 4,096 a slice let a 5M-file commit map 240 MB of the index in one fold.
FOLD_SLICE = 512


def _setup(env: lmdb.Environment) -> tuple[lmdb._Database, lmdb._Database]:
    return env.open_db(b"chunks"), env.open_db(b"packs")


class KnownChunks:
    """The chunks of one store's indexed packs (`listed`), looked up in LMDB."""

    def __init__(self, store: Store, cache_dir: str, pack_ids: Iterable[bytes]) -> None:
        path = layout.known_dir(cache_dir)
        modes = perms.make_dirs(path)
        self._env = lmdbenv.acquire(path, _SPEC, _setup)
        if modes.shared:
            for name in ("data.mdb", "lock.mdb"):
                perms.set_mode(os.path.join(path, name), modes.file)
        self._chunks, self._packs = self._env.dbs
        self._prefix = xxhash.xxh3_64_digest(store.url.encode())
        self.store = store
        self.listed: set[bytes] = set(pack_ids)
        self.index_dir = layout.packindex_dir(cache_dir)

    def close(self) -> None:
        lmdbenv.release(self._env)

    def __enter__(self) -> KnownChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sync(self, workers: int = 16) -> int:
        """Fold in every listed pack not folded yet; returns how many were."""
        prefix = self._prefix
        pdb = self._packs

        def missing(txn: lmdb.Transaction[bytes]) -> list[bytes]:
            return [p for p in self.listed if txn.get(prefix + p, db=pdb) is None]

        todo = self._env.run(missing, write=False)
        if not todo:
            return 0
        perms.make_dirs(self.index_dir)

        def load(pack_id: bytes) -> list[fmt.PackEntry]:
            return self.store.local_pack_index(pack_id, self.index_dir)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vfs-index") as pool:
            for start in range(0, len(todo), _FOLD_BATCH):
                batch = todo[start : start + _FOLD_BATCH]
                self.fold(list(zip(batch, pool.map(load, batch), strict=True)))
        log.info("known chunks: folded in %d pack indexes", len(todo))
        return len(todo)

    def fold(self, packs: Sequence[tuple[bytes, Sequence[fmt.PackEntry]]]) -> None:
        """Record the chunks of `packs` (each listed in the store now).

        Written in transactions of FOLD_SLICE entries, the map's pages released after
        each: a pack of 256-byte files has ~130,000 entries at random keys, and one
        transaction for all of them touched nearly every page of the index, each
        counted in the process's RSS. A pack is marked folded in the transaction of
        its last entries, so an interrupted fold is done again, never half-trusted."""
        prefix = self._prefix
        cdb, pdb = self._chunks, self._packs
        rows: list[tuple[bytes, bytes]] = []
        marks: list[bytes] = []

        def fn(txn: lmdb.Transaction[bytes]) -> None:
            for k, v in rows:
                txn.put(k, v, db=cdb)
            for pack_id in marks:
                txn.put(prefix + pack_id, b"", db=pdb)

        for pack_id, entries in packs:
            for e in entries:
                rows.append((prefix + e.id, _LOC.pack(pack_id, e.offset, e.stored_length, e.codec)))
                if len(rows) >= FOLD_SLICE:
                    self._env.run(fn, write=True)
                    rows.clear()
                    self._env.release_map()
            marks.append(pack_id)
        self._env.run(fn, write=True)
        self._env.release_map()
        for pack_id, _ in packs:
            self.listed.add(pack_id)

    def _decode(self, v: bytes | None) -> fmt.Location | None:
        if v is None:
            return None
        pack, off, stored, codec = _LOC.unpack(v)
        if pack not in self.listed:  # gc deleted it (or it never got its index)
            return None
        return fmt.Location(pack, off, stored, codec)

    def get(self, cid: bytes) -> fmt.Location | None:
        key = self._prefix + cid
        cdb = self._chunks
        got = self._env.run(lambda txn: txn.get(key, db=cdb), write=False)
        self._env.touched(1)
        return self._decode(got)

    def get_many(self, cids: Sequence[bytes]) -> list[fmt.Location | None]:
        """Locations of `cids` (None where unknown) in one read transaction."""
        prefix, cdb = self._prefix, self._chunks

        def fn(txn: lmdb.Transaction[bytes]) -> list[bytes | None]:
            return [txn.get(prefix + c, db=cdb) for c in cids]

        got = self._env.run(fn, write=False)
        self._env.touched(len(cids))
        return [self._decode(v) for v in got]

    def has_all(self, cids: Iterable[bytes]) -> bool:
        ids = list(cids)
        return all(loc is not None for loc in self.get_many(ids))

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, bytes) and self.get(cid) is not None
