"""The chunk cache's LMDB index: its schema, and the steps that keep it and the chunk
files consistent, each inside one transaction the caller runs.

Index, one named LMDB database each (integers big-endian), in ``<root>/index/``.
Chunk bytes are never LMDB values: big values fragment LMDB, and files let the page
cache do the work::

    entries   id -> size u64 | xxh3_128 of the bytes (16) | last use, ns u64 | flags u8
    lru       last use, ns u64 | id -> b""   unpinned entries only, oldest first
    pinsets   pin name (utf-8) -> id         dupsort: the members of each pin set
    pinrefs   id -> u32                      how many pin sets hold the id
    counters  name -> u64                    see COUNTERS
    meta      b"format" -> FORMAT_VERSION

Ordering rules, which make a kill -9 at any moment harmless:
- A chunk's file is complete and renamed to its final name before the entry that
  points to it commits.
- A file is unlinked only inside the write transaction that deletes its entry, and an
  insert checks the file inside its own write transaction, so LMDB's machine-wide
  writer lock orders every removal against every insert.
- Totals change only in the transaction that changes entries.
A crash can therefore leave only: a temp file or a renamed file without an entry
(verify() deletes them once they are old enough to belong to no running put), and
an entry whose file an uncommitted eviction had already unlinked (get() and verify()
drop it). For the same reason as the chunk files are not fsynced (a cache may lose
data), the index runs with LMDB's metasync off, which keeps its integrity and may
lose the last transactions.

Concurrency: the functions here hold no state; they run inside the transaction of
their caller, and a write transaction holds LMDB's machine-wide writer lock.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from dataclasses import dataclass
from typing import NamedTuple

import lmdb

from vfs.cache import lmdbenv
from vfs.cache.files import ChunkFiles, unlink
from vfs.errors import VfsError

__all__ = [
    "COUNTERS",
    "FORMAT_VERSION",
    "Counters",
    "Entry",
    "Index",
    "IndexDbs",
    "apply_pending",
    "drop_if_bad",
    "evict",
    "insert",
    "lru_key",
    "open_index",
    "pin_batch",
    "pin_counts",
    "read_u64",
    "remove_entry",
    "set_last_use",
    "unpin_set",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = b"1"
# The map is virtual address space, not disk: 16 GiB indexes tens of millions of chunks.
_MAP_SIZE = 16 * 1024**3
# Fixed when lock.mdb is created. Every read transaction of every thread of every
# process on the machine holds a slot, and LMDB's default of 126 is easy to exhaust.
_MAX_READERS = 1024

_ENTRY = struct.Struct(">Q16sQB")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_PINNED = 0x01
COUNTERS = (
    "bytes",
    "entries",
    "pinned_entries",
    "pinned_bytes",
    "hits",
    "misses",
    "evictions",
    "bytes_inserted",
    "corrupt_evicted",
)


class Entry(NamedTuple):
    size: int
    checksum: bytes
    last_use: int
    flags: int

    @classmethod
    def unpack(cls, raw: bytes) -> Entry:
        return cls(*_ENTRY.unpack(raw))

    def pack(self) -> bytes:
        return _ENTRY.pack(*self)

    @property
    def pinned(self) -> bool:
        return bool(self.flags & _PINNED)

    def with_pin(self, pinned: bool) -> Entry:
        return self._replace(flags=_PINNED if pinned else 0)


def lru_key(last_use: int, chunk_id: bytes) -> bytes:
    return _U64.pack(last_use) + chunk_id


def read_u64(raw: bytes | None) -> int:
    return _U64.unpack(raw)[0] if raw is not None else 0


@dataclass(frozen=True)
class IndexDbs:
    """The named databases of an index."""

    entries: lmdb._Database
    lru: lmdb._Database
    pinsets: lmdb._Database
    pinrefs: lmdb._Database
    counters: lmdb._Database


Index = lmdbenv.SharedEnv[IndexDbs]


def open_index(path: str, file_mode: int) -> Index:
    """The index at `path`, from the process's registry; lmdbenv.release() it."""
    spec = lmdbenv.EnvSpec(
        what="chunk cache index",
        map_size=_MAP_SIZE,
        max_dbs=8,
        max_readers=_MAX_READERS,
        mode=file_mode,
        metasync=False,
    )

    def setup(env: lmdb.Environment) -> IndexDbs:
        with env.begin(write=True) as txn:
            dbs = IndexDbs(
                entries=env.open_db(b"entries", txn=txn),
                lru=env.open_db(b"lru", txn=txn),
                pinsets=env.open_db(b"pinsets", txn=txn, dupsort=True, dupfixed=True),
                pinrefs=env.open_db(b"pinrefs", txn=txn),
                counters=env.open_db(b"counters", txn=txn),
            )
            meta = env.open_db(b"meta", txn=txn)
            found = txn.get(b"format", db=meta)
            if found is None:
                txn.put(b"format", FORMAT_VERSION, db=meta)
            elif found != FORMAT_VERSION:
                raise VfsError(
                    f"the chunk cache index {os.path.realpath(path)} has format {found!r}, "
                    f"this vfs reads {FORMAT_VERSION!r}: remove the cache directory or set "
                    "VFS_CACHE_DIR"
                )
        return dbs

    return lmdbenv.acquire(path, spec, setup)


class Counters:
    """The counters database, read and written back within one write transaction."""

    def __init__(self, txn: lmdb.Transaction[bytes], db: lmdb._Database) -> None:
        self._txn = txn
        self._db = db
        self._values: dict[str, int] = {}

    def __getitem__(self, name: str) -> int:
        if name not in self._values:
            self._values[name] = read_u64(self._txn.get(name.encode(), db=self._db))
        return self._values[name]

    def add(self, name: str, delta: int) -> None:
        self._values[name] = self[name] + delta

    def set(self, name: str, value: int) -> None:
        self._values[name] = value

    def save(self) -> None:
        for name, value in self._values.items():
            if value < 0:
                log.error(
                    "chunk cache counter %s went negative (%d); verify() recounts", name, value
                )
                value = 0
            self._txn.put(name.encode(), _U64.pack(value), db=self._db)


def apply_pending(
    txn: lmdb.Transaction[bytes],
    dbs: IndexDbs,
    counters: Counters,
    touched: dict[bytes, int],
    hits: int,
    misses: int,
) -> None:
    """Record a process's gathered uses (id -> when) and hit/miss counts."""
    for chunk_id, when in touched.items():
        raw = txn.get(chunk_id, db=dbs.entries)
        if raw is not None and Entry.unpack(raw).last_use < when:
            set_last_use(txn, dbs, chunk_id, Entry.unpack(raw), when)
    if hits:
        counters.add("hits", hits)
    if misses:
        counters.add("misses", misses)


def set_last_use(
    txn: lmdb.Transaction[bytes], dbs: IndexDbs, chunk_id: bytes, entry: Entry, when: int
) -> None:
    txn.put(chunk_id, entry._replace(last_use=when).pack(), db=dbs.entries)
    if not entry.pinned:
        txn.delete(lru_key(entry.last_use, chunk_id), db=dbs.lru)
        txn.put(lru_key(when, chunk_id), b"", db=dbs.lru)


def insert(
    txn: lmdb.Transaction[bytes],
    dbs: IndexDbs,
    counters: Counters,
    files: ChunkFiles,
    chunk_id: bytes,
    data: bytes,
    checksum: bytes,
    path: str,
    max_bytes: int,
    speculative: bool = False,
) -> bool:
    """Add the entry of a chunk whose file put() has written to `path`. A speculative
    chunk (fetched beside one that was asked for) is entered as never used, so it is
    the first to go, and only where it fits under `max_bytes` without evicting
    anything: False if it was left out (its file is then the caller's to remove)."""
    now = time.time_ns()
    raw = txn.get(chunk_id, db=dbs.entries)
    if raw is not None:
        old = Entry.unpack(raw)
        if old.size == len(data):  # another process inserted it meanwhile: keep one
            if not speculative:
                set_last_use(txn, dbs, chunk_id, old, max(now, old.last_use))
            return True
        remove_entry(txn, dbs, counters, chunk_id, old)
    if speculative:
        if counters["bytes"] + len(data) > max_bytes:
            return False
        now = 0
    try:
        on_disk = os.stat(path).st_size
    except FileNotFoundError:
        on_disk = -1
    if on_disk != len(data):
        # Evicted and unlinked between our rename and this transaction: write it
        # again, here, where no other process can remove it.
        files.write(path, data)
    pinned = txn.get(chunk_id, db=dbs.pinrefs) is not None
    entry = Entry(len(data), checksum, now, _PINNED if pinned else 0)
    txn.put(chunk_id, entry.pack(), db=dbs.entries)
    if pinned:
        counters.add("pinned_entries", 1)
        counters.add("pinned_bytes", entry.size)
    else:
        txn.put(lru_key(now, chunk_id), b"", db=dbs.lru)
    counters.add("bytes", entry.size)
    counters.add("entries", 1)
    counters.add("bytes_inserted", entry.size)
    return True


def remove_entry(
    txn: lmdb.Transaction[bytes], dbs: IndexDbs, counters: Counters, chunk_id: bytes, entry: Entry
) -> None:
    txn.delete(chunk_id, db=dbs.entries)
    if entry.pinned:
        counters.add("pinned_entries", -1)
        counters.add("pinned_bytes", -entry.size)
    else:
        txn.delete(lru_key(entry.last_use, chunk_id), db=dbs.lru)
    counters.add("bytes", -entry.size)
    counters.add("entries", -1)


def evict(
    txn: lmdb.Transaction[bytes],
    dbs: IndexDbs,
    counters: Counters,
    files: ChunkFiles,
    target: int,
) -> int:
    """Evict unpinned entries, least recently used first, until bytes <= target."""
    freed = 0
    victims: list[tuple[bytes, Entry | None]] = []
    with txn.cursor(db=dbs.lru) as cur:
        for key in cur.iternext(keys=True, values=False):
            if counters["bytes"] - freed <= target:
                break
            chunk_id = key[8:]
            raw = txn.get(chunk_id, db=dbs.entries)
            entry = Entry.unpack(raw) if raw is not None else None
            if entry is not None and (entry.pinned or lru_key(entry.last_use, chunk_id) != key):
                entry = None  # a stale LRU key: drop the key, keep the entry
            victims.append((key, entry))
            freed += entry.size if entry is not None else 0
    for key, entry in victims:
        txn.delete(key, db=dbs.lru)
        if entry is not None:
            chunk_id = key[8:]
            unlink(files.path(chunk_id))  # inside the txn: see the module docstring
            txn.delete(chunk_id, db=dbs.entries)
            counters.add("bytes", -entry.size)
            counters.add("entries", -1)
            counters.add("evictions", 1)
    return freed


def pin_batch(
    txn: lmdb.Transaction[bytes], dbs: IndexDbs, counters: Counters, key: bytes, batch: list[bytes]
) -> None:
    """Add the ids of `batch` to the pin set `key`, and pin the entries they gain."""
    for chunk_id in batch:
        if not txn.put(key, chunk_id, dupdata=False, db=dbs.pinsets):
            continue  # already in this set
        raw_refs = txn.get(chunk_id, db=dbs.pinrefs)
        refs = _U32.unpack(raw_refs)[0] if raw_refs is not None else 0
        txn.put(chunk_id, _U32.pack(refs + 1), db=dbs.pinrefs)
        raw = txn.get(chunk_id, db=dbs.entries)
        if refs or raw is None or Entry.unpack(raw).pinned:
            continue
        entry = Entry.unpack(raw)
        txn.delete(lru_key(entry.last_use, chunk_id), db=dbs.lru)
        txn.put(chunk_id, entry._replace(flags=entry.flags | _PINNED).pack(), db=dbs.entries)
        counters.add("pinned_entries", 1)
        counters.add("pinned_bytes", entry.size)


def unpin_set(txn: lmdb.Transaction[bytes], dbs: IndexDbs, counters: Counters, key: bytes) -> None:
    """Drop the pin set `key`; entries no other set holds become evictable."""
    with txn.cursor(db=dbs.pinsets) as cur:
        members = list(cur.iternext_dup()) if cur.set_key(key) else []
    for chunk_id in members:
        refs = _U32.unpack(txn.get(chunk_id, db=dbs.pinrefs) or _U32.pack(1))[0]
        if refs > 1:
            txn.put(chunk_id, _U32.pack(refs - 1), db=dbs.pinrefs)
            continue
        txn.delete(chunk_id, db=dbs.pinrefs)
        raw = txn.get(chunk_id, db=dbs.entries)
        if raw is not None and Entry.unpack(raw).pinned:
            entry = Entry.unpack(raw)._replace(flags=0)
            txn.put(chunk_id, entry.pack(), db=dbs.entries)
            txn.put(lru_key(entry.last_use, chunk_id), b"", db=dbs.lru)
            counters.add("pinned_entries", -1)
            counters.add("pinned_bytes", -entry.size)
    txn.delete(key, db=dbs.pinsets)


def pin_counts(txn: lmdb.Transaction[bytes], dbs: IndexDbs) -> dict[str, int]:
    """Pin set name -> number of chunk ids in it."""
    out: dict[str, int] = {}
    with txn.cursor(db=dbs.pinsets) as cur:
        more = cur.first()
        while more:
            out[cur.key().decode()] = cur.count()
            more = cur.next_nodup()
    return out


def drop_if_bad(index: Index, files: ChunkFiles, chunk_id: bytes, drop: bool) -> str | None:
    """Re-check a chunk that looked bad, under the writer lock if `drop`, and drop
    it if it still is. Returns what is wrong, or None if nothing (any more)."""
    dbs = index.dbs

    def fn(txn: lmdb.Transaction[bytes]) -> str | None:
        raw = txn.get(chunk_id, db=dbs.entries)
        if raw is None:
            return None  # evicted by someone else: a plain miss
        entry = Entry.unpack(raw)
        reason = files.read_checked(chunk_id, entry.size, entry.checksum)[1]
        if reason is not None and drop:
            unlink(files.path(chunk_id))
            counters = Counters(txn, dbs.counters)
            remove_entry(txn, dbs, counters, chunk_id, entry)
            counters.add("corrupt_evicted", 1)
            counters.save()
        return reason

    reason = index.run(fn, write=drop)
    if reason is not None and drop:
        log.warning("chunk cache %s: chunk %s %s; dropped it", files.root, chunk_id.hex(), reason)
    return reason
