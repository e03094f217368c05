"""The machine-wide local chunk cache: chunk files on disk, indexed by LMDB.

This module owns the cache directory that every mount daemon and command on the
machine shares (``$VFS_CACHE_DIR``, else ``~/.cache/vfs``): its layout, its index,
eviction, pins and self-repair. The model is CernVM-FS's cache: write a temp file,
rename it to its content address, and evict least recently used unpinned chunks
down to a low-water mark.

Layout (only ``index/`` and ``data/`` belong to this module; other tools may keep
their own subdirectories beside them)::

    <root>/index/                 the LMDB environment (data.mdb, lock.mdb)
    <root>/data/tmp/              files being written: <64 hex>.<pid>.<random>.tmp
    <root>/data/<2 hex>/<64 hex>  one file per chunk, named by its BLAKE3 id

Index, one named LMDB database each (integers big-endian). Chunk bytes are never
LMDB values: big values fragment LMDB, and files let the page cache do the work::

    entries   id -> size u64 | xxh3_128 of the bytes (16) | last use, ns u64 | flags u8
    lru       last use, ns u64 | id -> b""   unpinned entries only, oldest first
    pinsets   pin name (utf-8) -> id         dupsort: the members of each pin set
    pinrefs   id -> u32                      how many pin sets hold the id
    counters  name -> u64                    see _COUNTERS
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
drop it). Chunk files are not fsynced: after a power loss a file may be short or
garbage, the xxh3 check on every get() catches that, and a cache may lose data, so
an fsync per chunk would buy only latency. For the same reason the index runs with
LMDB's metasync off, which keeps its integrity and may lose the last transactions.

Concurrency: processes coordinate through LMDB alone (one writer machine-wide,
readers never block). Within a process:
- ``_SharedEnv`` is the single LMDB environment of an index in this process (LMDB
  forbids opening one twice). Every transaction passes its gate; growing the map
  waits until none is open, as LMDB requires.
- ``ChunkCache._lock`` guards the pending touches and hit/miss counts. It is never
  held across an LMDB call, so it cannot deadlock against the writer lock.
- A hit is not written at once: touched ids and counts are flushed in one write
  transaction once FLUSH_EVERY ids or FLUSH_SECONDS have gathered, by the next put
  or eviction of this process, and by close(). A crash loses only recency and counts.
- Eviction runs inside the write transaction of the put that crossed the cap, so the
  index total never exceeds the cap after a commit (pinned chunks excepted: pins win
  over the cap). On disk, only the files of puts in flight come on top. An eviction
  holds the writer lock for one unlink per evicted chunk; readers are not blocked.
- A ChunkCache does not survive fork(): py-lmdb refuses to reopen in a forked child
  an environment its parent had open, so start workers with 'spawn'.

On an event loop: contains(), contains_many(), pins() and stats() run short read
transactions and may run inline. get(), get_many() and put() read or write chunk
files of up to 8 MiB and now and then wait for the machine-wide writer lock; run
them in a worker thread.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import lmdb
import xxhash

from vfs.defaults import DEFAULT_CACHE_BYTES
from vfs.errors import UsageError, VfsError

__all__ = [
    "CacheStats",
    "ChunkCache",
    "VerifyReport",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

FORMAT_VERSION = b"1"
ID_LEN = 32
# A hit costs a dict update; the write transaction that records it is shared by this
# many ids or this much time, whichever comes first.
FLUSH_EVERY = 256
FLUSH_SECONDS = 2.0
# A renamed file gets its entry milliseconds later; a minute covers any stall.
ORPHAN_GRACE_S = 60.0
# No put of 8 MiB takes an hour; an older temp file belongs to a dead process.
TEMP_GRACE_S = 3600.0
# The map is virtual address space, not disk: 16 GiB indexes tens of millions of chunks.
_MAP_SIZE = 16 * 1024**3
# Fixed when lock.mdb is created. Every read transaction of every thread of every
# process on the machine holds a slot, and LMDB's default of 126 is easy to exhaust.
_MAX_READERS = 1024
_MAX_RESIZES = 8
# Pin sets may hold millions of ids; pin them in transactions of bounded size.
_PIN_BATCH = 10_000
_MAX_PIN_NAME = 400  # bytes: LMDB keys are at most 511

_ENTRY = struct.Struct(">Q16sQB")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_PINNED = 0x01
_MISSING = "is missing"
_COUNTERS = (
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


@dataclass(frozen=True)
class CacheStats:
    """Totals of the whole cache (every process), plus this process's unflushed hits."""

    root: str
    max_bytes: int
    bytes: int
    entries: int
    pinned_entries: int
    hits: int
    misses: int
    evictions: int
    bytes_inserted: int
    corrupt_evicted: int
    pinned_bytes: int


@dataclass
class VerifyReport:
    """What verify() found; `repaired` counts the fixes it made."""

    checked: int = 0
    bad: int = 0
    missing_files: int = 0
    orphan_files: int = 0
    repaired: int = 0
    stale_temp_files: int = 0
    index_errors: int = 0

    @property
    def clean(self) -> bool:
        return not (self.bad or self.missing_files or self.orphan_files or self.index_errors)


class _Entry(NamedTuple):
    size: int
    checksum: bytes
    last_use: int
    flags: int

    @classmethod
    def unpack(cls, raw: bytes) -> _Entry:
        return cls(*_ENTRY.unpack(raw))

    def pack(self) -> bytes:
        return _ENTRY.pack(*self)

    @property
    def pinned(self) -> bool:
        return bool(self.flags & _PINNED)


def _lru_key(last_use: int, chunk_id: bytes) -> bytes:
    return _U64.pack(last_use) + chunk_id


class _SharedEnv:
    """The one LMDB environment of an index directory in this process."""

    def __init__(self, path: str, file_mode: int) -> None:
        self.path = path
        self.pid = os.getpid()
        self.users = 0
        self._cond = threading.Condition()
        self._active = 0
        self._resizing = False
        self.env = lmdb.open(
            path,
            map_size=_MAP_SIZE,
            subdir=True,
            max_dbs=8,
            max_readers=_MAX_READERS,
            lock=True,
            metasync=False,
            mode=file_mode,
        )
        try:
            with self.env.begin(write=True) as txn:
                self.entries = self.env.open_db(b"entries", txn=txn)
                self.lru = self.env.open_db(b"lru", txn=txn)
                self.pinsets = self.env.open_db(b"pinsets", txn=txn, dupsort=True, dupfixed=True)
                self.pinrefs = self.env.open_db(b"pinrefs", txn=txn)
                self.counters = self.env.open_db(b"counters", txn=txn)
                meta = self.env.open_db(b"meta", txn=txn)
                found = txn.get(b"format", db=meta)
                if found is None:
                    txn.put(b"format", FORMAT_VERSION, db=meta)
                elif found != FORMAT_VERSION:
                    raise VfsError(
                        f"the chunk cache index {path} has format {found!r}, this vfs reads "
                        f"{FORMAT_VERSION!r}: remove the cache directory or set VFS_CACHE_DIR"
                    )
            # Reader slots of killed processes pin old pages and grow the file.
            self.env.reader_check()
        except BaseException:
            self.env.close()
            raise
        self._map_size = self.env.info()["map_size"]

    def run(self, fn: Callable[[lmdb.Transaction[bytes]], _T], write: bool) -> _T:
        """fn(txn) in a transaction; grows the map and retries fn when LMDB asks."""
        for _ in range(_MAX_RESIZES):
            seen = self._enter()
            try:
                with self.env.begin(write=write) as txn:
                    return fn(txn)
            except lmdb.MapResizedError:  # another process grew the map
                adopt = True
            except lmdb.MapFullError:
                adopt = False
            finally:
                self._leave()
            self._resize(seen, adopt)
        raise VfsError(f"the chunk cache index {self.path} cannot grow its map")

    def _enter(self) -> int:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._active += 1
            return self._map_size

    def _leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self._resizing:
                self._cond.notify_all()

    def _resize(self, seen: int, adopt: bool) -> None:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            if self._map_size != seen:
                return  # another thread resized while we waited
            self._resizing = True
            while self._active:
                self._cond.wait()
        try:
            # set_mapsize(0) adopts the size another process has set.
            self.env.set_mapsize(0 if adopt else seen * 2)
            size = self.env.info()["map_size"]
            log.info("chunk cache index %s: map size %d -> %d", self.path, seen, size)
        finally:
            with self._cond:
                self._map_size = self.env.info()["map_size"]
                self._resizing = False
                self._cond.notify_all()


_envs: dict[str, _SharedEnv] = {}
_envs_lock = threading.Lock()


def _acquire_env(path: str, file_mode: int) -> _SharedEnv:
    with _envs_lock:
        shared = _envs.get(path)
        if shared is not None and shared.pid != os.getpid():
            raise VfsError(
                f"the chunk cache index {path} was opened before this process forked; "
                "open the cache in a fresh process (multiprocessing 'spawn')"
            )
        if shared is None:
            shared = _envs[path] = _SharedEnv(path, file_mode)
        shared.users += 1
        return shared


def _release_env(shared: _SharedEnv) -> None:
    with _envs_lock:
        shared.users -= 1
        if shared.users == 0:
            del _envs[shared.path]
            shared.env.close()


class _Counters:
    """The counters database, read and written back within one write transaction."""

    def __init__(self, txn: lmdb.Transaction[bytes], db: lmdb._Database) -> None:
        self._txn = txn
        self._db = db
        self._values: dict[str, int] = {}

    def __getitem__(self, name: str) -> int:
        if name not in self._values:
            raw = self._txn.get(name.encode(), db=self._db)
            self._values[name] = _U64.unpack(raw)[0] if raw is not None else 0
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


class ChunkCache:
    """A bounded, shared, self-healing cache of chunks by id. Thread-safe.

    get() counts a miss itself whenever it returns None, so callers count nothing.
    put() trusts its caller to have verified the bytes against the id, and is best
    effort: a full or failing disk is logged, never raised, as a cache must not fail
    a read that the store can serve. close() it, or use it as a context manager:
    close() writes this process's pending touches and counts.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        max_bytes: int = DEFAULT_CACHE_BYTES,
        low_water: float = 0.8,
    ) -> None:
        if max_bytes <= 0:
            raise UsageError(f"cache size must be positive, not {max_bytes}")
        if not 0.0 < low_water <= 1.0:
            raise UsageError(f"cache low-water mark must be in (0, 1], not {low_water}")
        self.root = os.path.abspath(os.fspath(root))
        self.max_bytes = max_bytes
        self.low_water = low_water
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        # A group-writable or setgid root is shared by a group: everything we create
        # must then be usable by every member, whatever our umask.
        self._group = bool(os.stat(self.root).st_mode & (stat.S_IWGRP | stat.S_ISGID))
        self._dir_mode = 0o2775 if self._group else 0o700
        self._file_mode = 0o664 if self._group else 0o600
        self._data_dir = os.path.join(self.root, "data")
        self._tmp_dir = os.path.join(self._data_dir, "tmp")
        index_dir = os.path.join(self.root, "index")
        for d in (self._data_dir, self._tmp_dir, index_dir):
            self._mkdir(d)
        self._env: _SharedEnv | None = _acquire_env(os.path.realpath(index_dir), self._file_mode)
        if self._group:
            for name in ("data.mdb", "lock.mdb"):
                self._chmod(os.path.join(index_dir, name), self._file_mode)
        self._lock = threading.Lock()
        self._touched: dict[bytes, int] = {}
        self._hits = 0
        self._misses = 0
        self._last_flush = time.monotonic()
        self._warned_pinned = False

    # -- public API ------------------------------------------------------------------

    def get(self, chunk_id: bytes) -> bytes | None:
        """The chunk's bytes, checked against the index, or None (a miss)."""
        return self.get_many([chunk_id]).get(chunk_id)

    def get_many(self, chunk_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """The checked bytes of every chunk of `chunk_ids` the cache has; a missing or
        bad one is simply absent (a miss, and a bad one is dropped, as by get()).

        Cheaper per chunk than get() in a loop: one index transaction for them all
        and one read() per file. (Starting every file's read first with
        POSIX_FADV_WILLNEED was tried: faster alone, slower under a mount, where
        several batches already read side by side and readers wait on the first.)"""
        ids = list(dict.fromkeys(chunk_ids))
        for chunk_id in ids:
            _check_id(chunk_id)
        env = self._live()
        raws = env.run(lambda txn: [txn.get(c, db=env.entries) for c in ids], write=False)
        out: dict[bytes, bytes] = {}
        bad: list[bytes] = []
        for chunk_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                continue
            data, _ = self._read_checked(chunk_id, _Entry.unpack(raw))
            if data is None:
                bad.append(chunk_id)  # re-checked under the writer lock below
            else:
                out[chunk_id] = data
        for chunk_id in bad:
            self._drop_if_bad(chunk_id, drop=True)
        self._note_many(list(out), len(ids) - len(out))
        return out

    def contains(self, chunk_id: bytes) -> bool:
        """Whether the index has the chunk (its file is checked only by get())."""
        _check_id(chunk_id)
        env = self._live()
        return env.run(lambda txn: txn.get(chunk_id, db=env.entries) is not None, write=False)

    def contains_many(self, chunk_ids: Iterable[bytes]) -> set[bytes]:
        """Those of `chunk_ids` the index has, in one read transaction. Counts
        nothing: a caller that will not get() the others counts them by note_misses()."""
        ids = list(chunk_ids)
        for chunk_id in ids:
            _check_id(chunk_id)
        env = self._live()
        return env.run(
            lambda txn: {c for c in ids if txn.get(c, db=env.entries) is not None}, write=False
        )

    def note_misses(self, n: int) -> None:
        """Count `n` misses that were found without get() (by contains_many())."""
        self._note_many([], n)

    def put(self, chunk_id: bytes, data: bytes) -> None:
        """Add a chunk, then evict down to the low-water mark if over the cap."""
        self.put_many({chunk_id: data})

    def put_many(self, items: dict[bytes, bytes]) -> None:
        """Add chunks: their files first, then one write transaction for all of them
        (a span of a pack is one commit, not one per chunk), then evict down to the
        low-water mark if over the cap."""
        env = self._live()
        for chunk_id in items:
            _check_id(chunk_id)

        def present(txn: lmdb.Transaction[bytes]) -> set[bytes]:
            out = set()
            for chunk_id, data in items.items():
                raw = txn.get(chunk_id, db=env.entries)
                if raw is not None and _Entry.unpack(raw).size == len(data):
                    out.add(chunk_id)
            return out

        have = env.run(present, write=False)
        self._note_many(list(have), 0, hits=False)
        todo = []
        for chunk_id, data in items.items():
            if chunk_id in have:
                continue
            if len(data) > self.max_bytes:
                log.debug("chunk %s (%d bytes) is larger than the cache", chunk_id.hex(), len(data))
                continue
            path = self._path(chunk_id)
            try:
                self._write_file(path, data)
            except OSError as e:
                log.warning(
                    "chunk cache %s: cannot store chunk %s: %s", self.root, chunk_id.hex(), e
                )
                continue
            todo.append((chunk_id, data, xxhash.xxh3_128_digest(data), path))
        if not todo:
            return
        touched, hits, misses = self._take_pending()

        def insert(txn: lmdb.Transaction[bytes]) -> None:
            counters = _Counters(txn, env.counters)
            self._apply_pending(txn, counters, touched, hits, misses)
            for chunk_id, data, checksum, path in todo:
                self._insert(txn, counters, chunk_id, data, checksum, path)
            if counters["bytes"] > self.max_bytes:
                self._evict(txn, counters, int(self.max_bytes * self.low_water))
            counters.save()

        try:
            env.run(insert, write=True)
        except OSError as e:  # from the rare rewrite inside the transaction
            log.warning("chunk cache %s: cannot store %d chunks: %s", self.root, len(todo), e)

    def pin(self, name: str, chunk_ids: Iterable[bytes]) -> None:
        """Add ids to the pin set `name`. A pinned id is never evicted, whether it is
        cached now or later, until every pin set holding it is unpinned."""
        key = _pin_key(name)
        batch: list[bytes] = []
        for chunk_id in chunk_ids:
            _check_id(chunk_id)
            batch.append(chunk_id)
            if len(batch) >= _PIN_BATCH:
                self._pin_batch(key, batch)
                batch = []
        if batch:
            self._pin_batch(key, batch)

    def unpin(self, name: str) -> None:
        """Drop the pin set `name`; its chunks become evictable unless pinned elsewhere."""
        key = _pin_key(name)
        env = self._live()
        touched, hits, misses = self._take_pending()

        def fn(txn: lmdb.Transaction[bytes]) -> None:
            counters = _Counters(txn, env.counters)
            self._apply_pending(txn, counters, touched, hits, misses)
            with txn.cursor(db=env.pinsets) as cur:
                members = list(cur.iternext_dup()) if cur.set_key(key) else []
            for chunk_id in members:
                refs = _U32.unpack(txn.get(chunk_id, db=env.pinrefs) or _U32.pack(1))[0]
                if refs > 1:
                    txn.put(chunk_id, _U32.pack(refs - 1), db=env.pinrefs)
                    continue
                txn.delete(chunk_id, db=env.pinrefs)
                raw = txn.get(chunk_id, db=env.entries)
                if raw is not None and _Entry.unpack(raw).pinned:
                    entry = _Entry.unpack(raw)._replace(flags=0)
                    txn.put(chunk_id, entry.pack(), db=env.entries)
                    txn.put(_lru_key(entry.last_use, chunk_id), b"", db=env.lru)
                    counters.add("pinned_entries", -1)
                    counters.add("pinned_bytes", -entry.size)
            txn.delete(key, db=env.pinsets)
            if counters["bytes"] > self.max_bytes:
                self._evict(txn, counters, int(self.max_bytes * self.low_water))
            counters.save()

        env.run(fn, write=True)

    def pins(self) -> dict[str, int]:
        """Pin set name -> number of chunk ids in it (cached or not)."""
        env = self._live()

        def fn(txn: lmdb.Transaction[bytes]) -> dict[str, int]:
            out: dict[str, int] = {}
            with txn.cursor(db=env.pinsets) as cur:
                more = cur.first()
                while more:
                    out[cur.key().decode()] = cur.count()
                    more = cur.next_nodup()
            return out

        return env.run(fn, write=False)

    def stats(self) -> CacheStats:
        env = self._live()

        def fn(txn: lmdb.Transaction[bytes]) -> dict[str, int]:
            raws = {n: txn.get(n.encode(), db=env.counters) for n in _COUNTERS}
            return {n: _U64.unpack(r)[0] if r is not None else 0 for n, r in raws.items()}

        c = env.run(fn, write=False)
        with self._lock:
            hits, misses = c["hits"] + self._hits, c["misses"] + self._misses
        return CacheStats(
            root=self.root,
            max_bytes=self.max_bytes,
            bytes=c["bytes"],
            entries=c["entries"],
            pinned_entries=c["pinned_entries"],
            hits=hits,
            misses=misses,
            evictions=c["evictions"],
            bytes_inserted=c["bytes_inserted"],
            corrupt_evicted=c["corrupt_evicted"],
            pinned_bytes=c["pinned_bytes"],
        )

    def flush(self) -> None:
        """Write this process's pending touches and hit/miss counts to the index."""
        touched, hits, misses = self._take_pending()
        if not (touched or hits or misses):
            return
        env = self._live()

        def fn(txn: lmdb.Transaction[bytes]) -> None:
            counters = _Counters(txn, env.counters)
            self._apply_pending(txn, counters, touched, hits, misses)
            counters.save()

        env.run(fn, write=True)

    def prune(self, target_bytes: int | None = None) -> int:
        """Evict unpinned chunks, oldest use first, down to target_bytes (default: the
        low-water mark). Returns the bytes freed."""
        target = int(self.max_bytes * self.low_water) if target_bytes is None else target_bytes
        env = self._live()
        touched, hits, misses = self._take_pending()

        def fn(txn: lmdb.Transaction[bytes]) -> int:
            counters = _Counters(txn, env.counters)
            self._apply_pending(txn, counters, touched, hits, misses)
            freed = self._evict(txn, counters, target)
            counters.save()
            return freed

        return env.run(fn, write=True)

    def clear(self) -> None:
        """Remove every entry and chunk file. Pin sets stay, and so do the lifetime
        counters (hits, misses, evictions, bytes inserted)."""
        env = self._live()
        _, hits, misses = self._take_pending()

        def fn(txn: lmdb.Transaction[bytes]) -> None:
            for path in self._chunk_files():
                _unlink(path)
            txn.drop(env.entries, delete=False)
            txn.drop(env.lru, delete=False)
            counters = _Counters(txn, env.counters)
            self._apply_pending(txn, counters, {}, hits, misses)
            for name in ("bytes", "entries", "pinned_entries", "pinned_bytes"):
                counters.set(name, 0)
            counters.save()

        env.run(fn, write=True)

    def verify(
        self,
        repair: bool = True,
        *,
        orphan_grace: float = ORPHAN_GRACE_S,
        temp_grace: float = TEMP_GRACE_S,
    ) -> VerifyReport:
        """Re-hash every chunk file against the index; with `repair`, drop bad or
        missing entries, delete orphan files older than `orphan_grace` seconds and
        temp files older than `temp_grace`, and fix the LRU index and totals."""
        env = self._live()
        self.flush()
        env.env.reader_check()
        report = VerifyReport()
        snapshot = env.run(lambda txn: list(txn.cursor(db=env.entries)), write=False)
        for chunk_id, raw in snapshot:
            report.checked += 1
            if self._read_checked(chunk_id, _Entry.unpack(raw))[1] is None:
                continue
            # Confirm under the writer lock: it may have been evicted or healed meanwhile.
            reason = self._drop_if_bad(chunk_id, drop=repair)
            if reason is None:
                continue
            if reason == _MISSING:
                report.missing_files += 1
            else:
                report.bad += 1
            report.repaired += int(repair)
        self._collect_orphans(report, repair, orphan_grace, temp_grace)
        report.index_errors = env.run(lambda txn: self._reconcile(txn, repair), write=repair)
        if repair:
            report.repaired += report.index_errors
        if not report.clean:
            log.warning("chunk cache %s: verify found %s", self.root, report)
        return report

    def close(self) -> None:
        """Flush pending touches and release the index. Idempotent."""
        if self._env is None:
            return
        try:
            if self._env.pid == os.getpid():
                self.flush()
        finally:
            env, self._env = self._env, None
            if env.pid == os.getpid():
                _release_env(env)

    def __enter__(self) -> ChunkCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------

    def _live(self) -> _SharedEnv:
        env = self._env
        if env is None:
            raise VfsError(f"the chunk cache {self.root} is closed")
        if env.pid != os.getpid():
            raise VfsError(
                f"the chunk cache {self.root} was opened before this process forked; "
                "use it from a process started with multiprocessing 'spawn'"
            )
        return env

    def _path(self, chunk_id: bytes) -> str:
        h = chunk_id.hex()
        return os.path.join(self._data_dir, h[:2], h)

    def _note_many(self, used: list[bytes], misses: int, hits: bool = True) -> None:
        """Record uses of chunks (hits, unless `hits` is False: a put of a chunk the
        cache had) and misses; one lock, and a flush when enough has gathered."""
        if not used and not misses:
            return
        now = time.monotonic()
        when = time.time_ns()
        with self._lock:
            self._misses += misses
            if hits:
                self._hits += len(used)
            for chunk_id in used:
                self._touched[chunk_id] = when
            due = len(self._touched) >= FLUSH_EVERY or now - self._last_flush >= FLUSH_SECONDS
            if due:
                self._last_flush = now  # one flusher per period, not every thread at once
        if due:
            self.flush()

    def _take_pending(self) -> tuple[dict[bytes, int], int, int]:
        with self._lock:
            out = (self._touched, self._hits, self._misses)
            self._touched, self._hits, self._misses = {}, 0, 0
            self._last_flush = time.monotonic()
        return out

    def _apply_pending(
        self,
        txn: lmdb.Transaction[bytes],
        counters: _Counters,
        touched: dict[bytes, int],
        hits: int,
        misses: int,
    ) -> None:
        env = self._live()
        for chunk_id, when in touched.items():
            raw = txn.get(chunk_id, db=env.entries)
            if raw is not None and _Entry.unpack(raw).last_use < when:
                self._set_last_use(txn, chunk_id, _Entry.unpack(raw), when)
        if hits:
            counters.add("hits", hits)
        if misses:
            counters.add("misses", misses)

    def _set_last_use(
        self, txn: lmdb.Transaction[bytes], chunk_id: bytes, entry: _Entry, when: int
    ) -> None:
        env = self._live()
        txn.put(chunk_id, entry._replace(last_use=when).pack(), db=env.entries)
        if not entry.pinned:
            txn.delete(_lru_key(entry.last_use, chunk_id), db=env.lru)
            txn.put(_lru_key(when, chunk_id), b"", db=env.lru)

    def _insert(
        self,
        txn: lmdb.Transaction[bytes],
        counters: _Counters,
        chunk_id: bytes,
        data: bytes,
        checksum: bytes,
        path: str,
    ) -> None:
        env = self._live()
        now = time.time_ns()
        raw = txn.get(chunk_id, db=env.entries)
        if raw is not None:
            old = _Entry.unpack(raw)
            if old.size == len(data):  # another process inserted it meanwhile: keep one
                self._set_last_use(txn, chunk_id, old, max(now, old.last_use))
                return
            self._remove_entry(txn, counters, chunk_id, old)
        try:
            on_disk = os.stat(path).st_size
        except FileNotFoundError:
            on_disk = -1
        if on_disk != len(data):
            # Evicted and unlinked between our rename and this transaction: write it
            # again, here, where no other process can remove it.
            self._write_file(path, data)
        pinned = txn.get(chunk_id, db=env.pinrefs) is not None
        entry = _Entry(len(data), checksum, now, _PINNED if pinned else 0)
        txn.put(chunk_id, entry.pack(), db=env.entries)
        if pinned:
            counters.add("pinned_entries", 1)
            counters.add("pinned_bytes", entry.size)
        else:
            txn.put(_lru_key(now, chunk_id), b"", db=env.lru)
        counters.add("bytes", entry.size)
        counters.add("entries", 1)
        counters.add("bytes_inserted", entry.size)

    def _remove_entry(
        self, txn: lmdb.Transaction[bytes], counters: _Counters, chunk_id: bytes, entry: _Entry
    ) -> None:
        env = self._live()
        txn.delete(chunk_id, db=env.entries)
        if entry.pinned:
            counters.add("pinned_entries", -1)
            counters.add("pinned_bytes", -entry.size)
        else:
            txn.delete(_lru_key(entry.last_use, chunk_id), db=env.lru)
        counters.add("bytes", -entry.size)
        counters.add("entries", -1)

    def _evict(self, txn: lmdb.Transaction[bytes], counters: _Counters, target: int) -> int:
        """Evict unpinned entries, least recently used first, until bytes <= target."""
        env = self._live()
        freed = 0
        victims: list[tuple[bytes, _Entry | None]] = []
        with txn.cursor(db=env.lru) as cur:
            for key in cur.iternext(keys=True, values=False):
                if counters["bytes"] - freed <= target:
                    break
                chunk_id = key[8:]
                raw = txn.get(chunk_id, db=env.entries)
                entry = _Entry.unpack(raw) if raw is not None else None
                if entry is not None and (
                    entry.pinned or _lru_key(entry.last_use, chunk_id) != key
                ):
                    entry = None  # a stale LRU key: drop the key, keep the entry
                victims.append((key, entry))
                freed += entry.size if entry is not None else 0
        for key, entry in victims:
            txn.delete(key, db=env.lru)
            if entry is not None:
                chunk_id = key[8:]
                _unlink(self._path(chunk_id))  # inside the txn: see the module docstring
                txn.delete(chunk_id, db=env.entries)
                counters.add("bytes", -entry.size)
                counters.add("entries", -1)
                counters.add("evictions", 1)
        if counters["bytes"] > target and not self._warned_pinned:
            self._warned_pinned = True
            log.warning(
                "chunk cache %s: %d bytes remain over the %d-byte target because %d bytes "
                "are pinned",
                self.root,
                counters["bytes"],
                target,
                counters["pinned_bytes"],
            )
        return freed

    def _pin_batch(self, key: bytes, batch: list[bytes]) -> None:
        env = self._live()

        def fn(txn: lmdb.Transaction[bytes]) -> None:
            counters = _Counters(txn, env.counters)
            for chunk_id in batch:
                if not txn.put(key, chunk_id, dupdata=False, db=env.pinsets):
                    continue  # already in this set
                raw_refs = txn.get(chunk_id, db=env.pinrefs)
                refs = _U32.unpack(raw_refs)[0] if raw_refs is not None else 0
                txn.put(chunk_id, _U32.pack(refs + 1), db=env.pinrefs)
                raw = txn.get(chunk_id, db=env.entries)
                if refs or raw is None or _Entry.unpack(raw).pinned:
                    continue
                entry = _Entry.unpack(raw)
                txn.delete(_lru_key(entry.last_use, chunk_id), db=env.lru)
                txn.put(
                    chunk_id, entry._replace(flags=entry.flags | _PINNED).pack(), db=env.entries
                )
                counters.add("pinned_entries", 1)
                counters.add("pinned_bytes", entry.size)
            counters.save()

        env.run(fn, write=True)

    def _read_checked(self, chunk_id: bytes, entry: _Entry) -> tuple[bytes | None, str | None]:
        """(bytes, None) if the file matches the entry, else (None, what is wrong)."""
        try:
            fd = os.open(self._path(chunk_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None, _MISSING
        except OSError as e:
            return None, f"cannot be read ({e})"
        try:
            return _read_fd_checked(fd, entry)
        finally:
            os.close(fd)

    def _drop_if_bad(self, chunk_id: bytes, drop: bool) -> str | None:
        """Re-check a chunk that looked bad, under the writer lock if `drop`, and drop
        it if it still is. Returns what is wrong, or None if nothing (any more)."""
        env = self._live()

        def fn(txn: lmdb.Transaction[bytes]) -> str | None:
            raw = txn.get(chunk_id, db=env.entries)
            if raw is None:
                return None  # evicted by someone else: a plain miss
            entry = _Entry.unpack(raw)
            reason = self._read_checked(chunk_id, entry)[1]
            if reason is not None and drop:
                _unlink(self._path(chunk_id))
                counters = _Counters(txn, env.counters)
                self._remove_entry(txn, counters, chunk_id, entry)
                counters.add("corrupt_evicted", 1)
                counters.save()
            return reason

        reason = env.run(fn, write=drop)
        if reason is not None and drop:
            log.warning(
                "chunk cache %s: chunk %s %s; dropped it", self.root, chunk_id.hex(), reason
            )
        return reason

    def _chunk_files(self) -> list[str]:
        """Every file under data/ except temp files."""
        out: list[str] = []
        with os.scandir(self._data_dir) as dirs:
            for d in dirs:
                if d.name != "tmp" and d.is_dir(follow_symlinks=False):
                    with os.scandir(d.path) as files:
                        out.extend(f.path for f in files)
        return out

    def _collect_orphans(
        self, report: VerifyReport, repair: bool, orphan_grace: float, temp_grace: float
    ) -> None:
        env = self._live()
        now = time.time()
        with os.scandir(self._tmp_dir) as temps:
            for f in temps:
                if _age(f.path, now) >= temp_grace:
                    report.stale_temp_files += 1
                    if repair and _unlink(f.path):
                        report.repaired += 1
        candidates = [p for p in self._chunk_files() if _age(p, now) >= orphan_grace]

        def fn(txn: lmdb.Transaction[bytes]) -> tuple[int, int]:
            found = removed = 0
            for path in candidates:
                chunk_id = _parse_chunk_path(path)
                if chunk_id is not None and txn.get(chunk_id, db=env.entries) is not None:
                    continue
                if _age(path, now) < orphan_grace:
                    continue  # gone, or a put renamed a new file here since the scan
                found += 1
                # Unlinked under the writer lock, so no insert can claim it meanwhile.
                removed += repair and _unlink(path)
            return found, removed

        found, removed = env.run(fn, write=repair)
        report.orphan_files += found
        report.repaired += removed

    def _reconcile(self, txn: lmdb.Transaction[bytes], repair: bool) -> int:
        """Check the LRU index, pin flags and totals against the entries; count (and
        with `repair`, fix) every disagreement."""
        env = self._live()
        errors = 0
        totals = dict.fromkeys(("bytes", "entries", "pinned_entries", "pinned_bytes"), 0)
        expected_lru: set[bytes] = set()
        for chunk_id, raw in list(txn.cursor(db=env.entries)):
            entry = _Entry.unpack(raw)
            pinned = txn.get(chunk_id, db=env.pinrefs) is not None
            if pinned != entry.pinned:
                errors += 1
                entry = entry._replace(flags=_PINNED if pinned else 0)
                if repair:
                    txn.put(chunk_id, entry.pack(), db=env.entries)
            totals["bytes"] += entry.size
            totals["entries"] += 1
            if pinned:
                totals["pinned_entries"] += 1
                totals["pinned_bytes"] += entry.size
            else:
                expected_lru.add(_lru_key(entry.last_use, chunk_id))
        found_lru = set(txn.cursor(db=env.lru).iternext(keys=True, values=False))
        for key in found_lru - expected_lru:
            errors += 1
            if repair:
                txn.delete(key, db=env.lru)
        for key in expected_lru - found_lru:
            errors += 1
            if repair:
                txn.put(key, b"", db=env.lru)
        counters = _Counters(txn, env.counters)
        for name, value in totals.items():
            if counters[name] != value:
                log.warning(
                    "chunk cache %s: counter %s was %d, recounted %d",
                    self.root,
                    name,
                    counters[name],
                    value,
                )
                errors += 1
                counters.set(name, value)
        if repair:
            counters.save()
        return errors

    def _write_file(self, path: str, data: bytes) -> None:
        """Write `data` to a temp file, then rename it to `path`."""
        tmp = os.path.join(
            self._tmp_dir, f"{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self._file_mode)
        try:
            try:
                if self._group:
                    os.fchmod(fd, self._file_mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            try:
                os.rename(tmp, path)
            except FileNotFoundError:  # the first chunk under this prefix
                self._mkdir(os.path.dirname(path))
                os.rename(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise

    def _mkdir(self, path: str) -> None:
        try:
            os.mkdir(path, self._dir_mode)
        except FileExistsError:
            return
        if self._group:
            self._chmod(path, self._dir_mode)

    def _chmod(self, path: str, mode: int) -> None:
        try:
            if stat.S_IMODE(os.stat(path).st_mode) != mode:
                os.chmod(path, mode)
        except PermissionError:  # another member owns it; its creator set the mode
            log.debug("cannot chmod %s", path)


def _read_fd_checked(fd: int, entry: _Entry) -> tuple[bytes | None, str | None]:
    """The file's bytes if they match the entry (size and xxh3), else (None, why).

    One read() of size + 1 bytes is the usual case: a regular file answers short only
    at its end, so the extra byte shows a file that grew without a second call. Fewer
    than size bytes are read again until the end, in case a read was interrupted."""
    want = entry.size + 1
    try:
        data = os.read(fd, want)
        if 0 < len(data) < entry.size:
            parts = [data]
            got = len(data)
            while got < want and (more := os.read(fd, want - got)):
                parts.append(more)
                got += len(more)
            data = b"".join(parts) if len(parts) > 1 else data
    except OSError as e:
        return None, f"cannot be read ({e})"
    if len(data) != entry.size:
        got_s = f"more than {entry.size}" if len(data) > entry.size else str(len(data))
        return None, f"has {got_s} bytes, not {entry.size}"
    if xxhash.xxh3_128_digest(data) != entry.checksum:
        return None, "fails its checksum"
    return data, None


def _check_id(chunk_id: bytes) -> None:
    if len(chunk_id) != ID_LEN:
        raise UsageError(f"a chunk id is {ID_LEN} bytes, not {len(chunk_id)}")


def _pin_key(name: str) -> bytes:
    key = name.encode()
    if not key or len(key) > _MAX_PIN_NAME:
        raise UsageError(f"a pin name is 1 to {_MAX_PIN_NAME} bytes: {name!r}")
    return key


def _parse_chunk_path(path: str) -> bytes | None:
    name = os.path.basename(path)
    if len(name) != 2 * ID_LEN or os.path.basename(os.path.dirname(path)) != name[:2]:
        return None
    try:
        chunk_id = bytes.fromhex(name)
    except ValueError:
        return None
    return chunk_id if chunk_id.hex() == name else None


def _age(path: str, now: float) -> float:
    try:
        return now - os.stat(path).st_mtime
    except FileNotFoundError:
        return -1.0


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        log.warning("chunk cache: cannot remove %s: %s", path, e)
        return False
    return True
