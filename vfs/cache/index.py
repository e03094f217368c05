"""The chunk cache's LMDB index: its schema, and the steps that keep it and the
segment files consistent, each inside one transaction the caller runs.

Index, one named LMDB database each (integers big-endian), in ``<root>/index/``.
Chunk bytes are never LMDB values: big values fragment LMDB, and files let the page
cache and its readahead do the work::

    entries    id -> segment u64 | offset u64 | size u32 | xxh3_128 (16) | last use,
                     ns u64 | flags u8
    segments   segment u64 -> bytes u64 | live bytes u64 | live chunks u32 |
                     pinned bytes u64 | newest use, ns u64
    seglru     newest use u64 | segment u64 -> b""    every segment, coldest first
    segchunks  segment u64 | id -> b""                 the chunks of each segment
    pinsets    pin name (utf-8) -> id                  dupsort: each pin set's members
    pinrefs    id -> u32                               how many pin sets hold the id
    counters   name -> u64                             see COUNTERS
    meta       b"format" -> FORMAT_VERSION             the layout of the directory

A segment's size is all the bytes its writer appended and indexed a batch for, live
or dead (a chunk dropped as bad, or a duplicate another process put first);
the `bytes` counter is their sum, so it counts disk use. A chunk put speculatively
(fetched beside the wanted ones) has last use 0, and so does a segment of such
chunks only: eviction takes it first.

Ordering rules, which make a kill -9 at any moment harmless:
- A chunk's bytes are written to its segment before the transaction that names
  them commits, so a crash leaves only unindexed bytes, never an entry pointing at
  missing or torn data.
- A segment is appended to only by its writer, which holds a flock() on it while a
  batch it appended may still be indexed (vfs.cache.files). Eviction, clear() and
  verify() skip a segment so held; a segment is dropped from the index in one write
  transaction, and its file unlinked after that commits. A crash in between leaves
  an orphan file, which verify() and the next eviction remove after a grace period.
- Totals change only in the transaction that changes entries and segments.
For the same reason as segments are not fsynced (a cache may lose data), the index
runs with LMDB's metasync off, which keeps its integrity and may lose the last
transactions; the xxh3 check on every read catches a segment that lost bytes.

Layout versions: 1 was one file per chunk under data/; 2 is segment files. Opening
a cache of layout 1 clears it (its pin sets stay) with one log line.

Concurrency: the functions here hold no state; they run inside the transaction of
their caller, and a write transaction holds LMDB's machine-wide writer lock.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import lmdb

from vfs.cache import lmdbenv
from vfs.cache.files import MISSING, SegmentFiles
from vfs.errors import VfsError

__all__ = [
    "COUNTERS",
    "FORMAT_VERSION",
    "Counters",
    "Entry",
    "Index",
    "IndexDbs",
    "SegRec",
    "apply_pending",
    "drop_if_bad",
    "drop_segment",
    "index_entry",
    "insert_batch",
    "open_index",
    "parse_seglru_key",
    "pin_batch",
    "pin_counts",
    "read_u64",
    "remove_entry",
    "seg_add",
    "seg_chunks",
    "seg_key",
    "segchunk_key",
    "seglru_key",
    "unpin_set",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = b"2"
_LEGACY_FORMATS = (b"1",)
# The map is virtual address space, not disk: 16 GiB indexes tens of millions of chunks.
_MAP_SIZE = 16 * 1024**3
# Fixed when lock.mdb is created. Every read transaction of every thread of every
# process on the machine holds a slot, and LMDB's default of 126 is easy to exhaust.
_MAX_READERS = 1024

_ENTRY = struct.Struct(">QQI16sQB")
_SEG = struct.Struct(">QQIQQ")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_PINNED = 0x01
COUNTERS = (
    "bytes",
    "entries",
    "pinned_entries",
    "pinned_bytes",
    "segments",
    "hits",
    "misses",
    "evictions",
    "bytes_inserted",
    "corrupt_evicted",
    "compacted",
    "segments_dropped",
)


class Entry(NamedTuple):
    seg: int
    offset: int
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


class SegRec(NamedTuple):
    size: int
    live_bytes: int
    live_count: int
    pinned_bytes: int
    newest: int

    @classmethod
    def unpack(cls, raw: bytes) -> SegRec:
        return cls(*_SEG.unpack(raw))

    def pack(self) -> bytes:
        return _SEG.pack(*self)


_NO_SEG = SegRec(0, 0, 0, 0, 0)


def seg_key(seg: int) -> bytes:
    return _U64.pack(seg)


def seglru_key(newest: int, seg: int) -> bytes:
    return _U64.pack(newest) + _U64.pack(seg)


def parse_seglru_key(key: bytes) -> tuple[int, int]:
    """(newest use, segment) of a seglru key."""
    return _U64.unpack(key[:8])[0], _U64.unpack(key[8:])[0]


def segchunk_key(seg: int, chunk_id: bytes) -> bytes:
    return _U64.pack(seg) + chunk_id


def read_u64(raw: bytes | None) -> int:
    return _U64.unpack(raw)[0] if raw is not None else 0


@dataclass(frozen=True)
class IndexDbs:
    """The named databases of an index."""

    entries: lmdb._Database
    segments: lmdb._Database
    seglru: lmdb._Database
    segchunks: lmdb._Database
    pinsets: lmdb._Database
    pinrefs: lmdb._Database
    counters: lmdb._Database


Index = lmdbenv.SharedEnv[IndexDbs]


def open_index(path: str, file_mode: int, legacy_dir: str) -> Index:
    """The index at `path`, from the process's registry; lmdbenv.release() it. An
    index of layout 1 is cleared, with the chunk files under `legacy_dir`."""
    spec = lmdbenv.EnvSpec(
        what="chunk cache index",
        map_size=_MAP_SIZE,
        max_dbs=12,
        max_readers=_MAX_READERS,
        mode=file_mode,
        metasync=False,
    )

    def setup(env: lmdb.Environment) -> IndexDbs:
        with env.begin(write=True) as txn:
            meta = env.open_db(b"meta", txn=txn)
            found = txn.get(b"format", db=meta)
            if found in _LEGACY_FORMATS:
                _clear_legacy(env, txn, path, found, legacy_dir)
            dbs = IndexDbs(
                entries=env.open_db(b"entries", txn=txn),
                segments=env.open_db(b"segments", txn=txn),
                seglru=env.open_db(b"seglru", txn=txn),
                segchunks=env.open_db(b"segchunks", txn=txn),
                pinsets=env.open_db(b"pinsets", txn=txn, dupsort=True, dupfixed=True),
                pinrefs=env.open_db(b"pinrefs", txn=txn),
                counters=env.open_db(b"counters", txn=txn),
            )
            if found is None or found in _LEGACY_FORMATS:
                txn.put(b"format", FORMAT_VERSION, db=meta)
            elif found != FORMAT_VERSION:
                raise VfsError(
                    f"the chunk cache index {os.path.realpath(path)} has format {found!r}, "
                    f"this vfs reads {FORMAT_VERSION!r}: remove the cache directory or set "
                    "VFS_CACHE_DIR"
                )
        return dbs

    return lmdbenv.acquire(path, spec, setup)


def _clear_legacy(
    env: lmdb.Environment, txn: lmdb.Transaction[bytes], path: str, found: bytes, legacy_dir: str
) -> None:
    """Clear a layout-1 index and its chunk files, inside the writer lock, so that
    of several processes opening it at once exactly one clears and logs. Pin sets
    (ids only) stay; lifetime counters stay."""
    counters_db = env.open_db(b"counters", txn=txn)
    entries = read_u64(txn.get(b"entries", db=counters_db))
    size = read_u64(txn.get(b"bytes", db=counters_db))
    txn.drop(env.open_db(b"entries", txn=txn), delete=True)
    txn.drop(env.open_db(b"lru", txn=txn), delete=True)
    for name in ("bytes", "entries", "pinned_entries", "pinned_bytes"):
        txn.put(name.encode(), _U64.pack(0), db=counters_db)
    shutil.rmtree(legacy_dir, ignore_errors=True)
    log.warning(
        "chunk cache %s: cleared a cache of layout %s (%d chunks, %d bytes, one file each); "
        "this vfs keeps chunks in segment files (layout %s)",
        os.path.dirname(os.path.realpath(path)),
        found.decode(),
        entries,
        size,
        FORMAT_VERSION.decode(),
    )


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


def seg_add(
    txn: lmdb.Transaction[bytes],
    dbs: IndexDbs,
    counters: Counters,
    seg: int,
    *,
    size: int = 0,
    live: int = 0,
    count: int = 0,
    pinned: int = 0,
    newest: int | None = None,
) -> SegRec:
    """Add to the record of segment `seg` (creating it), and keep seglru and the
    `bytes` and `segments` totals in step."""
    key = seg_key(seg)
    raw = txn.get(key, db=dbs.segments)
    old = SegRec.unpack(raw) if raw is not None else None
    base = old or _NO_SEG
    new = SegRec(
        base.size + size,
        base.live_bytes + live,
        base.live_count + count,
        base.pinned_bytes + pinned,
        base.newest if newest is None else max(base.newest, newest),
    )
    txn.put(key, new.pack(), db=dbs.segments)
    if old is None:
        counters.add("segments", 1)
        txn.put(seglru_key(new.newest, seg), b"", db=dbs.seglru)
    elif old.newest != new.newest:
        txn.delete(seglru_key(old.newest, seg), db=dbs.seglru)
        txn.put(seglru_key(new.newest, seg), b"", db=dbs.seglru)
    if size:
        counters.add("bytes", size)
    return new


def seg_chunks(txn: lmdb.Transaction[bytes], dbs: IndexDbs, seg: int) -> list[bytes]:
    """The ids of the chunks indexed in segment `seg`."""
    prefix = _U64.pack(seg)
    out: list[bytes] = []
    with txn.cursor(db=dbs.segchunks) as cur:
        if cur.set_range(prefix):
            for key in cur.iternext(keys=True, values=False):
                if key[:8] != prefix:
                    break
                out.append(key[8:])
    return out


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
        if raw is not None:
            touch(txn, dbs, counters, chunk_id, Entry.unpack(raw), when)
    if hits:
        counters.add("hits", hits)
    if misses:
        counters.add("misses", misses)


def touch(
    txn: lmdb.Transaction[bytes],
    dbs: IndexDbs,
    counters: Counters,
    chunk_id: bytes,
    entry: Entry,
    when: int,
) -> None:
    """A use of the chunk at `when`: its last use, and its segment's newest."""
    if entry.last_use >= when:
        return
    txn.put(chunk_id, entry._replace(last_use=when).pack(), db=dbs.entries)
    seg_add(txn, dbs, counters, entry.seg, newest=when)


def index_entry(
    txn: lmdb.Transaction[bytes], dbs: IndexDbs, counters: Counters, chunk_id: bytes, entry: Entry
) -> None:
    """Enter `entry` (no entry of `chunk_id` exists): entries, segchunks, its
    segment's record and the totals (but not the segment's bytes)."""
    pinned = txn.get(chunk_id, db=dbs.pinrefs) is not None
    entry = entry.with_pin(pinned)
    txn.put(chunk_id, entry.pack(), db=dbs.entries)
    txn.put(segchunk_key(entry.seg, chunk_id), b"", db=dbs.segchunks)
    seg_add(
        txn,
        dbs,
        counters,
        entry.seg,
        live=entry.size,
        count=1,
        pinned=entry.size if pinned else 0,
        newest=entry.last_use,
    )
    counters.add("entries", 1)
    if pinned:
        counters.add("pinned_entries", 1)
        counters.add("pinned_bytes", entry.size)


def insert_batch(
    txn: lmdb.Transaction[bytes],
    dbs: IndexDbs,
    counters: Counters,
    seg: int,
    written: int,
    items: Sequence[tuple[bytes, int, int, bytes]],
    max_bytes: int,
    speculative: bool = False,
) -> int:
    """Index a batch of (id, offset, size, xxh3) that a writer appended to `seg`,
    `written` bytes in all; returns how many were entered. A chunk another process
    entered meanwhile is kept there (the copy here is dead bytes). A speculative
    chunk is entered as never used, and only while the cache is within `max_bytes`."""
    now = time.time_ns()
    seg_add(txn, dbs, counters, seg, size=written)
    entered = 0
    for chunk_id, offset, size, checksum in items:
        raw = txn.get(chunk_id, db=dbs.entries)
        if raw is not None:
            old = Entry.unpack(raw)
            if old.size == size:
                if not speculative:
                    touch(txn, dbs, counters, chunk_id, old, now)
                continue
            remove_entry(txn, dbs, counters, chunk_id, old)
        if speculative and counters["bytes"] > max_bytes:
            continue
        index_entry(
            txn,
            dbs,
            counters,
            chunk_id,
            Entry(seg, offset, size, checksum, 0 if speculative else now, 0),
        )
        counters.add("bytes_inserted", size)
        entered += 1
    return entered


def remove_entry(
    txn: lmdb.Transaction[bytes], dbs: IndexDbs, counters: Counters, chunk_id: bytes, entry: Entry
) -> None:
    """Remove one chunk's entry; its bytes stay in its segment, dead."""
    txn.delete(chunk_id, db=dbs.entries)
    txn.delete(segchunk_key(entry.seg, chunk_id), db=dbs.segchunks)
    if txn.get(seg_key(entry.seg), db=dbs.segments) is not None:
        seg_add(
            txn,
            dbs,
            counters,
            entry.seg,
            live=-entry.size,
            count=-1,
            pinned=-entry.size if entry.pinned else 0,
        )
    counters.add("entries", -1)
    if entry.pinned:
        counters.add("pinned_entries", -1)
        counters.add("pinned_bytes", -entry.size)


def drop_segment(
    txn: lmdb.Transaction[bytes], dbs: IndexDbs, counters: Counters, seg: int, why: str
) -> int:
    """Remove segment `seg` and every chunk entry in it from the index, counting each
    chunk in the counter `why`; the caller unlinks the file once this commits.
    Returns the segment's bytes."""
    for chunk_id in seg_chunks(txn, dbs, seg):
        txn.delete(segchunk_key(seg, chunk_id), db=dbs.segchunks)
        raw = txn.get(chunk_id, db=dbs.entries)
        if raw is None:
            continue
        entry = Entry.unpack(raw)
        if entry.seg != seg:
            continue  # a stale segchunks key
        txn.delete(chunk_id, db=dbs.entries)
        counters.add("entries", -1)
        counters.add(why, 1)
        if entry.pinned:
            counters.add("pinned_entries", -1)
            counters.add("pinned_bytes", -entry.size)
    raw = txn.get(seg_key(seg), db=dbs.segments)
    if raw is None:
        return 0
    rec = SegRec.unpack(raw)
    txn.delete(seg_key(seg), db=dbs.segments)
    txn.delete(seglru_key(rec.newest, seg), db=dbs.seglru)
    counters.add("bytes", -rec.size)
    counters.add("segments", -1)
    counters.add("segments_dropped", 1)
    return rec.size


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
        txn.put(chunk_id, entry.with_pin(True).pack(), db=dbs.entries)
        seg_add(txn, dbs, counters, entry.seg, pinned=entry.size)
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
            entry = Entry.unpack(raw).with_pin(False)
            txn.put(chunk_id, entry.pack(), db=dbs.entries)
            seg_add(txn, dbs, counters, entry.seg, pinned=-entry.size)
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


def drop_if_bad(index: Index, files: SegmentFiles, chunk_id: bytes, drop: bool) -> str | None:
    """Re-check a chunk that looked bad, under the writer lock if `drop`, and drop
    it if it still is: its entry, or, if its segment is gone, every entry of that
    segment. Returns what is wrong, or None if nothing (any more)."""
    dbs = index.dbs

    def fn(txn: lmdb.Transaction[bytes]) -> str | None:
        raw = txn.get(chunk_id, db=dbs.entries)
        if raw is None:
            return None  # evicted by someone else: a plain miss
        entry = Entry.unpack(raw)
        reason = files.read_checked(entry.seg, entry.offset, entry.size, entry.checksum)[1]
        if reason is not None and drop:
            counters = Counters(txn, dbs.counters)
            if reason == MISSING:
                drop_segment(txn, dbs, counters, entry.seg, "corrupt_evicted")
            else:
                remove_entry(txn, dbs, counters, chunk_id, entry)
                counters.add("corrupt_evicted", 1)
            counters.save()
        return reason

    reason = index.run(fn, write=drop)
    if reason is not None and drop:
        log.warning("chunk cache %s: chunk %s %s; dropped it", files.root, chunk_id.hex(), reason)
    return reason
