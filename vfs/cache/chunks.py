"""The machine-wide local chunk cache: ChunkCache, on the segment files of
vfs.cache.files and the LMDB index of vfs.cache.index.

A ChunkCache owns the open handle of the cache directory's index in this process,
its segment writer, the cap and low-water mark, and this process's gathered uses
and hit/miss counts. Chunks are appended to large segment files in the order they
are put; the index maps each id to (segment, offset, size, xxh3). Eviction drops
whole cold segments, least recently used first, down to a low-water mark, and
compacts pinned chunks out of a segment it drops (CernVM-FS's pinned-aware LRU, on
extents rather than files).

Concurrency: processes coordinate through LMDB alone (vfs.cache.lmdbenv: one writer
machine-wide, readers never block) and, for segments being written, flock()
(vfs.cache.files). Within a process:
- ``ChunkCache._lock`` guards the pending touches and hit/miss counts. It is never
  held across an LMDB call, so it cannot deadlock against the writer lock. The
  segment writer's lock is taken inside a write transaction (compaction) but no LMDB
  call is made under it.
- A hit is not written at once: touched ids and counts are flushed in one write
  transaction once FLUSH_EVERY ids or FLUSH_SECONDS have gathered, by the next put
  or eviction of this process, and by close(). A crash loses only recency and counts.
- Eviction runs inside the write transaction of the put that crossed the cap, so the
  index total never exceeds the cap after a commit (pinned chunks excepted: pins win
  over the cap). On disk, only the segments writers still hold come on top. The
  files of dropped segments are unlinked after the commit.
- A ChunkCache does not survive fork(): py-lmdb refuses to reopen in a forked child
  an environment its parent had open, so start workers with 'spawn'.

On an event loop: contains(), contains_many(), pins() and stats() run short read
transactions and may run inline. get(), get_many(), get_views() and put() read or
write segments and now and then wait for the machine-wide writer lock; run them in a
worker thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar, cast

import lmdb
import xxhash

from vfs.cache import check, evict, layout, lmdbenv
from vfs.cache import files as segfiles
from vfs.cache import index as ix
from vfs.cache.check import ORPHAN_GRACE_S, VerifyReport
from vfs.cache.files import SegmentFiles, SegmentWriter
from vfs.defaults import DEFAULT_CACHE_BYTES
from vfs.errors import UsageError, VfsError

__all__ = ["CacheStats", "ChunkCache"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# step(txn, counters, dropped): `dropped` collects the segments to unlink after commit.
_Step = Callable[["lmdb.Transaction[bytes]", ix.Counters, list[int]], _T]

ID_LEN = 32
# A hit costs a dict update; the write transaction that records it is shared by this
# many ids or this much time, whichever comes first.
FLUSH_EVERY = 256
FLUSH_SECONDS = 2.0
# Pin sets may hold millions of ids; pin them in transactions of bounded size.
_PIN_BATCH = 10_000
_MAX_PIN_NAME = 400  # bytes: LMDB keys are at most 511


@dataclass(frozen=True)
class CacheStats:
    """Totals of the whole cache (every process), plus this process's unflushed hits.
    `bytes` are the segments' bytes on disk, dead ones included."""

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
    segments: int
    compacted: int


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
        self._files = files = SegmentFiles(self.root)
        index_dir = layout.index_dir(self.root)
        for d in (files.seg_dir, index_dir):
            files.mkdir(d)
        self._env: ix.Index | None = ix.open_index(
            index_dir, files.file_mode, layout.legacy_data_dir(self.root)
        )
        if files.group:
            for name in ("data.mdb", "lock.mdb"):
                files.chmod(os.path.join(index_dir, name), files.file_mode)
        self._writer = SegmentWriter(files, segfiles.segment_target(max_bytes))
        self._lock = threading.Lock()
        self._touched: dict[bytes, int] = {}
        self._hits = 0
        self._misses = 0
        self._last_flush = time.monotonic()
        self._last_sweep = time.monotonic()
        self._drops_seen = -1
        self._warned_pinned = False

    # -- public API ------------------------------------------------------------------

    def get(self, chunk_id: bytes) -> bytes | None:
        """The chunk's bytes, checked against the index, or None (a miss)."""
        return self.get_many([chunk_id]).get(chunk_id)

    def get_many(self, chunk_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """The checked bytes of every chunk of `chunk_ids` the cache has; a missing or
        bad one is simply absent (a miss, and a bad one is dropped, as by get()).

        One index transaction for them all; the chunks of one segment are read in
        offset order, neighbours with one pread() (a run), each chunk then copied
        out of its run. get_views() does not copy."""
        return cast(dict[bytes, bytes], self._get(chunk_ids, views=False))

    def get_views(self, chunk_ids: Iterable[bytes]) -> dict[bytes, bytes | memoryview]:
        """get_many(), without a copy: the chunks of a run are read-only views of
        the run's one buffer, and each keeps the whole buffer alive (a run is at
        most RUN_BYTES, three quarters of it chunks asked for at least). The buffer
        comes from the pool of run buffers (SegmentFiles.read_lent), which reuses
        it only once no view of it is alive."""
        return self._get(chunk_ids, views=True)

    def _get(self, chunk_ids: Iterable[bytes], views: bool) -> dict[bytes, bytes | memoryview]:
        ids = list(dict.fromkeys(chunk_ids))
        for chunk_id in ids:
            _check_id(chunk_id)
        env = self._live()
        dbs = env.dbs

        def lookup(txn: lmdb.Transaction[bytes]) -> tuple[list[bytes | None], int]:
            drops = ix.read_u64(txn.get(b"segments_dropped", db=dbs.counters))
            return [txn.get(c, db=dbs.entries) for c in ids], drops

        raws, drops = env.run(lookup, write=False)
        self._note_drops(drops)
        by_seg: dict[int, list[tuple[int, int, bytes, bytes]]] = {}
        for chunk_id, raw in zip(ids, raws, strict=True):
            if raw is not None:
                e = ix.Entry.unpack(raw)
                by_seg.setdefault(e.seg, []).append((e.offset, e.size, e.checksum, chunk_id))
        out: dict[bytes, bytes | memoryview] = {}
        bad: list[bytes] = []
        for seg, extents in by_seg.items():
            extents.sort()
            self._read_segment(seg, extents, out, bad, views)
        for chunk_id in bad:
            ix.drop_if_bad(env, self._files, chunk_id, drop=True)
        self._note_many(list(out), len(ids) - len(out))
        return out

    def _read_segment(
        self,
        seg: int,
        extents: list[tuple[int, int, bytes, bytes]],
        out: dict[bytes, bytes | memoryview],
        bad: list[bytes],
        views: bool,
    ) -> None:
        """Read and check `extents` (offset, size, xxh3, id; by offset) of one
        segment; `views`: see get_views()."""
        files = self._files
        try:
            with files.open_fd(seg) as fd:
                i = 0
                while i < len(extents):
                    # A run: neighbours with small holes, read in one call.
                    j = i + 1
                    start = extents[i][0]
                    end = start + extents[i][1]
                    while j < len(extents):
                        off, size = extents[j][0], extents[j][1]
                        if off - end > segfiles.RUN_GAP or off + size - start > segfiles.RUN_BYTES:
                            break
                        end = max(end, off + size)
                        j += 1
                    if views:
                        run = files.read_lent(fd, start, end - start)
                        self._check_run(run, start, extents[i:j], out, bad, views)
                    elif j == i + 1:
                        run = segfiles.pread_all(fd, end - start, start)
                        self._check_run(run, start, extents[i:j], out, bad, views)
                    else:
                        with files.read_run(fd, start, end - start) as buf:
                            self._check_run(buf, start, extents[i:j], out, bad, views)
                    i = j
        except FileNotFoundError:  # dropped since the look-up: a miss, or gone for good
            bad.extend(chunk_id for _, _, _, chunk_id in extents)
        except OSError as e:
            log.warning("chunk cache %s: cannot read segment %x: %s", self.root, seg, e)
            bad.extend(chunk_id for _, _, _, chunk_id in extents if chunk_id not in out)

    @staticmethod
    def _check_run(
        run: bytes | memoryview,
        start: int,
        extents: list[tuple[int, int, bytes, bytes]],
        out: dict[bytes, bytes | memoryview],
        bad: list[bytes],
        views: bool,
    ) -> None:
        """Check the chunks of one run read at `start`. With `views`, `run` is ours
        to keep (a bytes, or a read-only view of a lent buffer: SegmentFiles.read_lent);
        without, only a bytes is (a pooled buffer of read_run is not). A chunk is
        `run` itself if it is the whole run and `run` may be kept; else a view of it
        for `views`, a copy otherwise. A run mostly of holes is copied out even for
        views, so that a held chunk does not keep the holes in memory."""
        useful = sum(size for _, size, _, _ in extents)
        whole = memoryview(run)
        kept = views or type(run) is bytes
        keep = views and useful * 4 >= len(run) * 3
        for off, size, checksum, chunk_id in extents:
            lo = off - start
            with whole[lo : lo + size] as part:
                if segfiles.check(part, size, checksum) is not None:
                    bad.append(chunk_id)
                elif kept and len(run) == size:
                    out[chunk_id] = run
                else:
                    out[chunk_id] = whole[lo : lo + size] if keep else bytes(part)

    def contains(self, chunk_id: bytes) -> bool:
        """Whether the index has the chunk (its bytes are checked only by get())."""
        _check_id(chunk_id)
        env = self._live()
        entries = env.dbs.entries
        return env.run(lambda txn: txn.get(chunk_id, db=entries) is not None, write=False)

    def contains_many(self, chunk_ids: Iterable[bytes]) -> set[bytes]:
        """Those of `chunk_ids` the index has, in one read transaction. Counts
        nothing: a caller that will not get() the others counts them by note_misses()."""
        ids = list(chunk_ids)
        for chunk_id in ids:
            _check_id(chunk_id)
        env = self._live()
        entries = env.dbs.entries
        return env.run(
            lambda txn: {c for c in ids if txn.get(c, db=entries) is not None}, write=False
        )

    def note_misses(self, n: int) -> None:
        """Count `n` misses that were found without get() (by contains_many())."""
        self._note_many([], n)

    def put(self, chunk_id: bytes, data: bytes) -> None:
        """Add a chunk, then evict down to the low-water mark if over the cap."""
        self.put_many({chunk_id: data})

    def put_many(
        self, items: Mapping[bytes, bytes | memoryview], *, speculative: bool = False
    ) -> None:
        """Add chunks: appended to this cache's segment in the order given (one
        pwritev), then one write transaction indexes all of them, then evicts down to
        the low-water mark if over the cap.

        `speculative` chunks were fetched beside the ones a reader asked for (a pack
        window). They are entered as never used, so they are the first to be evicted,
        and only while they fit under the cap: they never evict pinned or used data."""
        env = self._live()
        dbs = env.dbs
        for chunk_id in items:
            _check_id(chunk_id)

        def present(txn: lmdb.Transaction[bytes]) -> tuple[set[bytes], int]:
            out = set()
            for chunk_id, data in items.items():
                raw = txn.get(chunk_id, db=dbs.entries)
                if raw is not None and ix.Entry.unpack(raw).size == len(data):
                    out.add(chunk_id)
            return out, ix.read_u64(txn.get(b"bytes", db=dbs.counters))

        have, used = env.run(present, write=False)
        self._note_many(list(have), 0, hits=False)
        todo: list[tuple[bytes, bytes | memoryview]] = []
        for chunk_id, data in items.items():
            if chunk_id in have:
                continue
            if len(data) > self.max_bytes:
                log.debug("chunk %s (%d bytes) is larger than the cache", chunk_id.hex(), len(data))
                continue
            if speculative:
                if used + len(data) > self.max_bytes:
                    continue  # would not fit: not even written
                used += len(data)
            todo.append((chunk_id, data))
        if not todo:
            return
        try:
            lease = self._writer.append([data for _, data in todo])
        except OSError as e:
            log.warning("chunk cache %s: cannot store %d chunks: %s", self.root, len(todo), e)
            return
        batch = [
            (chunk_id, offset, len(data), xxhash.xxh3_128_digest(data))
            for (chunk_id, data), offset in zip(todo, lease.offsets, strict=True)
        ]

        def insert(txn: lmdb.Transaction[bytes], counters: ix.Counters, dropped: list[int]) -> None:
            if speculative and counters["bytes"] + lease.bytes > self.max_bytes:
                # Other writers filled the cache since the look above: leave the window
                # out rather than evict used data for it, and cut its bytes off the
                # segment. Only if another put of this process appended after them do
                # they stay, counted as dead bytes (and evicted as such).
                if self._writer.take_back(lease):
                    return
                ix.seg_add(txn, dbs, counters, lease.seg, size=lease.bytes)
                self._evict_over_cap(txn, counters, dropped, only_unused=True)
                return
            ix.insert_batch(
                txn, dbs, counters, lease.seg, lease.bytes, batch, self.max_bytes, speculative
            )
            self._evict_over_cap(txn, counters, dropped, only_unused=speculative)

        try:
            self._write(self._take_pending(), insert)
        except OSError as e:  # from a compaction's append inside the transaction
            log.warning("chunk cache %s: cannot store %d chunks: %s", self.root, len(todo), e)
        finally:
            self._writer.done(lease)

    def replace(self, key: bytes, data: bytes) -> None:
        """Put `data` under a key whose cached bytes went stale: a leaf page's
        locations after gc repacked their chunks. Never for a chunk id, whose bytes
        never change. The old entry goes first (put_many keeps an entry of the same
        size), then the new bytes are added like any put."""
        _check_id(key)
        dbs = self._live().dbs

        def drop(txn: lmdb.Transaction[bytes], counters: ix.Counters, dropped: list[int]) -> None:
            raw = txn.get(key, db=dbs.entries)
            if raw is not None:
                ix.remove_entry(txn, dbs, counters, key, ix.Entry.unpack(raw))

        self._write(self._take_pending(), drop)
        self.put(key, data)

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
        dbs = self._live().dbs

        def fn(txn: lmdb.Transaction[bytes], counters: ix.Counters, dropped: list[int]) -> None:
            ix.unpin_set(txn, dbs, counters, key)
            self._evict_over_cap(txn, counters, dropped)

        self._write(self._take_pending(), fn)

    def pins(self) -> dict[str, int]:
        """Pin set name -> number of chunk ids in it (cached or not)."""
        env = self._live()
        return env.run(lambda txn: ix.pin_counts(txn, env.dbs), write=False)

    def stats(self) -> CacheStats:
        env = self._live()

        def fn(txn: lmdb.Transaction[bytes]) -> dict[str, int]:
            db = env.dbs.counters
            return {n: ix.read_u64(txn.get(n.encode(), db=db)) for n in ix.COUNTERS}

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
            segments=c["segments"],
            compacted=c["compacted"],
        )

    def flush(self) -> None:
        """Write this process's pending touches and hit/miss counts to the index."""
        pending = self._take_pending()
        if any(pending):
            self._write(pending, lambda txn, counters, dropped: None)

    def prune(self, target_bytes: int | None = None) -> int:
        """Evict cold segments, oldest use first, down to target_bytes (default: the
        low-water mark); this cache's own segment is closed first so that it may go
        too. Returns the bytes freed."""
        target = int(self.max_bytes * self.low_water) if target_bytes is None else target_bytes
        self._live()  # a closed cache raises before its pending uses are taken
        self._writer.close()
        return self._write(
            self._take_pending(), lambda txn, c, dropped: self._evict(txn, c, target, dropped)
        )

    def clear(self) -> None:
        """Remove every entry and every segment no live writer holds (their entries
        go too). Pin sets stay, and so do the lifetime counters (hits, misses,
        evictions, bytes inserted)."""
        dbs = self._live().dbs
        _, hits, misses = self._take_pending()
        self._writer.close()

        def fn(txn: lmdb.Transaction[bytes], counters: ix.Counters, dropped: list[int]) -> None:
            for db in (dbs.entries, dbs.segments, dbs.seglru, dbs.segchunks):
                txn.drop(db, delete=False)
            for name in ("bytes", "entries", "pinned_entries", "pinned_bytes", "segments"):
                counters.set(name, 0)
            counters.add("segments_dropped", 1)
            segs, _ = self._files.segment_files()
            dropped.extend(s for s in segs if not self._files.in_use(s))

        self._write(({}, hits, misses), fn)

    def verify(self, repair: bool = True, *, orphan_grace: float = ORPHAN_GRACE_S) -> VerifyReport:
        """Re-hash every chunk against the index; with `repair`, drop bad or missing
        entries, delete orphan segments and stray files older than `orphan_grace`
        seconds, and fix the segment records, the LRU index and the totals."""
        env = self._live()
        self.flush()
        return check.verify(env, self._files, repair, orphan_grace)

    def close(self) -> None:
        """Flush pending touches, close this cache's segment and release the index.
        Idempotent."""
        if self._env is None:
            return
        try:
            if self._env.pid == os.getpid():
                self.flush()
                self._writer.close()
                self._files.close()
        finally:
            env, self._env = self._env, None
            if env.pid == os.getpid():
                lmdbenv.release(env)

    def __enter__(self) -> ChunkCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------

    def _live(self) -> ix.Index:
        env = self._env
        if env is None:
            raise VfsError(f"the chunk cache {self.root} is closed")
        if env.pid != os.getpid():
            raise VfsError(
                f"the chunk cache {self.root} was opened before this process forked; "
                "use it from a process started with multiprocessing 'spawn'"
            )
        return env

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

    def _write(self, pending: tuple[dict[bytes, int], int, int], step: _Step[_T]) -> _T:
        """step(txn, counters, dropped) in one write transaction that first records
        `pending` (from _take_pending()) and last saves the counters; then unlink the
        segments the step dropped, once the transaction has committed."""
        env = self._live()
        dbs = env.dbs
        dropped: list[int] = []

        def fn(txn: lmdb.Transaction[bytes]) -> _T:
            dropped.clear()  # a retried transaction starts over
            counters = ix.Counters(txn, dbs.counters)
            ix.apply_pending(txn, dbs, counters, *pending)
            out = step(txn, counters, dropped)
            counters.save()
            drops[0] = counters["segments_dropped"]
            return out

        drops = [self._drops_seen]
        out = env.run(fn, write=True)
        self._note_drops(drops[0])
        for seg in dropped:
            self._files.unlink(seg)
        if dropped and time.monotonic() - self._last_sweep >= ORPHAN_GRACE_S:
            self._last_sweep = time.monotonic()
            check.remove_orphans(env, self._files, ORPHAN_GRACE_S)
        return out

    def _note_drops(self, drops: int) -> None:
        """Close the read fds of segments dropped since the last look (`drops` is the
        index's count of dropped segments), so their disk space is freed."""
        if drops != self._drops_seen:
            self._drops_seen = drops
            self._files.forget_unlinked()

    def _evict_over_cap(
        self,
        txn: lmdb.Transaction[bytes],
        counters: ix.Counters,
        dropped: list[int],
        only_unused: bool = False,
    ) -> None:
        if counters["bytes"] > self.max_bytes:
            target = int(self.max_bytes * self.low_water)
            self._evict(txn, counters, target, dropped, only_unused)

    def _evict(
        self,
        txn: lmdb.Transaction[bytes],
        counters: ix.Counters,
        target: int,
        dropped: list[int],
        only_unused: bool = False,
    ) -> int:
        """ix.evict(), and one warning per cache when pins keep it over the target."""
        freed = evict.evict(
            txn, self._live().dbs, counters, self._files, self._writer, target, dropped, only_unused
        )
        if counters["bytes"] > target and counters["pinned_bytes"] and not self._warned_pinned:
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
        dbs = env.dbs

        def fn(txn: lmdb.Transaction[bytes]) -> None:
            counters = ix.Counters(txn, dbs.counters)
            ix.pin_batch(txn, dbs, counters, key, batch)
            counters.save()

        env.run(fn, write=True)


def _check_id(chunk_id: bytes) -> None:
    if len(chunk_id) != ID_LEN:
        raise UsageError(f"a chunk id is {ID_LEN} bytes, not {len(chunk_id)}")


def _pin_key(name: str) -> bytes:
    key = name.encode()
    if not key or len(key) > _MAX_PIN_NAME:
        raise UsageError(f"a pin name is 1 to {_MAX_PIN_NAME} bytes: {name!r}")
    return key
