"""The mount's one loader: every read of the store and the chunk cache a mount makes.

This module owns everything between "a read needs these chunks (or this tree page)"
and "their verified bytes (the decoded page)": the in-memory chunk LRU, the tables of
fetches in flight (chunks and pages), the global in-flight byte budget, retries and
the read-timeout bound, the named thread limiters, and the one writer that puts what
was fetched into the chunk cache behind the readers.

Design of the read path (like mountpoint-s3's prefetcher, smaller)
-------------------------------------------------------------------
`Loader.get(wanted)` answers a read in four steps:

1. Memory: decoded chunks of recent reads sit in an LRU of `mem_bytes`.
2. Single flight: every chunk being fetched has exactly one `_Flight`. A reader that
   wants a chunk already in flight waits for it instead of fetching it again, so
   concurrent readers of one missing chunk share one fetch.
3. The machine's ChunkCache: new flights are looked up in its index first (one
   short LMDB read, inline), and those it has are read in one worker thread per
   batch (ChunkCache.get_views: one pread() per run of neighbouring chunks into a
   reused buffer and an xxh3 check per chunk; each chunk a read-only view of its
   run, not a copy; a bad entry is evicted by the cache and refetched here, never
   served). Those chunks are kept apart from the memory LRU, first in first out,
   for the next reads only (`recent_bytes`): the cache can read them again, and
   their run buffers then go back to the pool for the reads that follow.
4. The store: what the cache lacks is planned into ranged GETs (reader.plan_ranges:
   neighbours in one pack coalesced up to `part_bytes`), each behind
   `remote_limiter` and verified against its BLAKE3 id: a GET of at most
   `inline_bytes` (a small file) on a store with a URL road (S3) by this trio
   thread itself (vfs/mount/http.py, `_fetch_inline`: no thread hand-off there and
   back), anything else, and whatever that road did not answer cleanly, in a
   worker thread (reader.ChunkSource.fetch_span). Its flights resolve at once; the chunks then
   queue for the one cache writer (`_write_behind`), which writes whatever has
   gathered in one ChunkCache.put_many, so a cache write never delays a reader and
   many small spans share one index transaction. Queued chunks also answer reads.

Pack windows (`_widen`, the policy in vfs/mount/windows.py): a demand miss in a pack
that readers sweep fetches an aligned window of the pack around the missing chunks,
snapped to chunk boundaries by the pack's index (Store.load_pack_index: loaded in the
background after the pack's second miss, then kept in memory and in packindex/). The
window's other chunks get flights in the same critical section that found them
neither held, in flight nor cached, so no chunk is fetched by two windows and a
reader asking for one meanwhile waits for it. They are verified like the rest (one
failing is left out, not an error: its place came from a pack index, not from the
version), resolve their flights without entering the memory LRU, and go to the cache
writer as speculative (ChunkCache.put_many(speculative=True)) if its queue has room.

Flights run as tasks of the mount's nursery, not of the reader: a reader that gives
up (timeout, interrupt) never cancels a fetch that others share, and a flight always
ends resolved, with bytes or with an error message.

Tree pages (`Loader.page`) take the same road with less: the store's byte-bounded
page cache (which also reads the chunk cache), one read in flight per page however
many tasks want it, in a worker thread behind `meta_limiter` bounded by the read
timeout, and the same cache writer, which takes every page fetched meanwhile in one
transaction. Pages queue up to PAGE_QUEUE_BYTES and are never waited for: past the
bound a page is not cached, and a later reader fetches it again. Listing a directory
reads its subdirectories' top pages ahead (`warm_pages`, behind `warm_limiter`, at
most MAX_WARMING at a time).

Readahead (vfs/mount/readahead.py decides the window): `Loader.readahead` fetches
the window ahead of a reader in the background in parts of `part_bytes`.

Budget: stored bytes of remote GETs in flight, over all files, never exceed
`budget_bytes`. A demand read waits for room; readahead never waits: it skips, and
the next read tries again. A window is taken only if the budget has room for it
beside its missing chunks now, and the cache writer's queue room for it; each GET
then takes its whole span at once, so no task holds budget while it waits for more.
Budget is released when a GET is done, before its chunks queue for the cache writer.
A raw chunk stays a view of its GET's buffer (reader.ChunkSource.fetch_span, no
copy) and keeps that buffer alive: the memory LRU counts each such buffer once while
it holds a view of it (`ChunkLRU`), chunks asked for that fill less than half of
their GET are copied out before they enter it, and the writer's queue counts chunk
bytes, so the buffers behind its views exceed `write_behind_bytes` by at most the
parts of their spans that were not queued.

Failures: a GET that fails or stalls past `attempt_timeout` is retried with
exponential backoff until `read_timeout` has passed since the flight started; then
its flights fail and every reader waiting on them gets FetchError (EIO), also within
`read_timeout`. Bytes that fail verification are fetched again, but the same failure
CORRUPT_ATTEMPTS times means the pack is damaged in the store: EIO at once, with a
log line naming the pack's key. A stalled thread is abandoned, not killed; it keeps
its limiter token until the stalled call returns, which bounds the threads a dead
remote can hold. Tree pages, locations and refs are retried the same way (`meta`),
so a remote that is away for less than `read_timeout` costs readers time, not
errors.

Shutdown: the cache writer is shielded. On unmount what it has queued (at most
`write_behind_bytes` of chunks and PAGE_QUEUE_BYTES of pages) is written out, and a
cache write in flight ends before the daemon closes the cache.

Concurrency: everything but the calls handed to worker threads runs on the trio
thread. `_mem`, the flight tables, the writer's queues and the budget are touched
only there, so the code between two awaits is a critical section and needs no lock.
Worker threads get inputs nobody changes meanwhile (the writer's batch is swapped
out of its queue, never updated in place), touch only the Store and the ChunkCache
(both thread-safe) and return values.
"""

from __future__ import annotations

import functools
import itertools
import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from vfs import format as fmt
from vfs.backends import curl
from vfs.cache.layout import packindex_dir
from vfs.errors import BackendError, CorruptObject, NotFound, NotPinned, PermissionDenied
from vfs.mount.http import MultiGetter
from vfs.mount.memory import ChunkLRU
from vfs.mount.windows import MAX_WINDOW_CHUNKS, PackWindows
from vfs.reader import NOWHERE, ChunkSource, Wanted, plan_ranges

if TYPE_CHECKING:
    from vfs.cache import ChunkCache
    from vfs.reader import Span
    from vfs.store import Store

log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
# Chunks per cache write transaction of the mount's writer, at most; a batch also
# stops at `part_bytes` (a single larger chunk goes alone). Each batch is appended to
# its segment before the transaction that may evict for it, so max(part_bytes, the
# largest chunk) is what a mount can hold on disk above the cache cap
# (docs/reliability.md, section 6). Small files need the count this high: with 8
# chunks of ~50 KB a batch, the writer fell behind a cold epoch, pack windows were
# skipped for want of queue room and their dropped chunks were fetched twice.
WRITE_BATCH = 256
# Fetches of one range that returned bytes failing verification before it is judged
# damaged in the store (EIO) rather than garbled on the way.
CORRUPT_ATTEMPTS = 3
# Fetched tree pages waiting to be written to the chunk cache, at most: `find` over a
# million files fetches pages faster than one writer stores them.
PAGE_QUEUE_BYTES = 8 << 20
# Subdirectory pages being read ahead of `find` and `ls -R`, at most; past it a
# listing asks for no more.
MAX_WARMING = 256
_T = TypeVar("_T")


def _offset(e: fmt.PackEntry) -> int:
    return e.offset


class FetchError(BackendError):
    """Chunks that could not be fetched within the read-timeout bound (EIO)."""


class PackGone(FetchError):
    """A pack the locations name is not in the store: `vfs gc` may have moved its live
    chunks into new packs and rewritten the locations (vfs/ops/repack.py). The caller
    fetches the leaf's locations again and retries (vfs/mount/files.py)."""


@dataclass(frozen=True)
class FetchConfig:
    read_timeout: float = 30.0
    attempt_timeout: float = 10.0
    backoff: float = 0.1
    mem_bytes: int = 128 * MiB
    # Chunks read from the machine's cache, kept for the reads right after (a
    # sequential read asks for a chunk's tail again, in the next request) and
    # read ahead, at most `cache_ahead` ahead of the reader (vfs/mount/readahead.py).
    recent_bytes: int = 16 * MiB
    cache_ahead: int = 8 * MiB
    budget_bytes: int = 256 * MiB
    remote_threads: int = 16
    cache_threads: int = 8
    part_bytes: int = 8 * MiB
    # Verified chunks waiting for the cache writer; a fetch that would pass this
    # waits (its readahead budget held) until the writer has caught up.
    write_behind_bytes: int = 64 * MiB
    readahead_min: int = 1 * MiB
    readahead_max: int = 64 * MiB
    # Pack windows of cold misses (vfs/mount/windows.py): first and largest size.
    window_min: int = 1 * MiB
    window_max: int = 8 * MiB
    # GETs of at most this many bytes are made by the trio thread itself and
    # verified there (vfs/mount/http.py), where the store has a URL road (S3);
    # larger ones, and every GET on other stores, by worker threads.
    inline_bytes: int = 256 * KiB


@dataclass
class FetchStats:
    """Counters of one mount; `user.vfs.stats` on the mount root shows them."""

    mem_hits: int = 0
    shared: int = 0  # chunks a reader got by waiting on another reader's flight
    cache_hits: int = 0
    cache_misses: int = 0
    requests: int = 0
    bytes_fetched: int = 0
    retries: int = 0
    failures: int = 0
    readahead_chunks: int = 0
    readahead_skipped: int = 0
    cache_writes: int = 0  # write transactions of the cache writer (each a batch)
    window_chunks: int = 0  # chunks fetched beside missing ones (pack windows)
    window_bytes: int = 0  # their stored bytes
    window_skipped: int = 0  # windows not fetched for want of in-flight budget
    pack_indexes: int = 0  # pack indexes loaded (from packindex/ or the store)
    chunks_fetched: int = 0  # chunks that came verified from the store, each time
    inline_gets: int = 0  # GETs made by the trio thread (vfs/mount/http.py)
    inline_fallbacks: int = 0  # of them, asked again by a worker thread


class _Flight:
    __slots__ = ("data", "done", "error", "gone", "placed_by_index", "started")

    def __init__(self) -> None:
        self.started = trio.current_time()
        self.done = trio.Event()
        self.data: fmt.ChunkBytes | None = None
        self.error: str | None = None
        self.gone = False  # it failed because its pack is not in the store
        # It failed where a pack index (a window), not the version, placed the chunk:
        # a reader waiting on it fetches the chunk again by its own location.
        self.placed_by_index = False


class _ByteBudget:
    """Bytes of remote GETs in flight. Demand waits for room, readahead skips."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._waiters: list[trio.Event] = []

    @property
    def free(self) -> int:
        return self.total - self.used

    def try_acquire(self, n: int) -> bool:
        if self.used + n > self.total:
            return False
        self.used += n
        return True

    async def acquire(self, n: int) -> int:
        n = min(n, self.total)  # one GET larger than the budget still runs, alone
        while self.used + n > self.total:
            ev = trio.Event()
            self._waiters.append(ev)
            await ev.wait()
        self.used += n
        return n

    def release(self, n: int) -> None:
        self.used -= n
        waiters, self._waiters = self._waiters, []
        for ev in waiters:
            ev.set()


class Loader:
    """Everything a mount reads from its store and its chunk cache: verified chunk
    bytes (memory, single flight, cache, store) and tree pages (the store's page
    cache, single flight), with one cache writer behind both."""

    def __init__(
        self,
        store: Store,
        cache: ChunkCache | None,
        nursery: trio.Nursery,
        config: FetchConfig | None = None,
        meta_threads: int = 8,
    ) -> None:
        self.config = config or FetchConfig()
        self.store = store
        self.cache = cache
        self.source = ChunkSource(store, cache)
        self.stats = FetchStats()
        self.budget = _ByteBudget(self.config.budget_bytes)
        # Named limiters: remote GETs (boto3 or file reads of the store), cache reads,
        # and the one cache writer, which must never hold up a cache read.
        self.remote_limiter = trio.CapacityLimiter(self.config.remote_threads)
        self.cache_limiter = trio.CapacityLimiter(self.config.cache_threads)
        self.cache_write_limiter = trio.CapacityLimiter(1)
        # Store reads of metadata (pages, locations, refs, commits) and cache queries;
        # reading ahead gets threads of its own, so that it never queues a lookup.
        self.meta_limiter = trio.CapacityLimiter(meta_threads)
        self.warm_limiter = trio.CapacityLimiter(max(1, meta_threads // 2))
        self._nursery = nursery
        # Chunks fetched from the store and read recently; and, apart, chunks read
        # from the machine's cache, which it can read again at little cost: they are
        # kept only for the next few reads, first in first out (a sequential reader
        # is done with the oldest), so that the buffers of their runs go back to the
        # cache's pool (vfs/cache/buffers.py) instead of piling up.
        self._mem = ChunkLRU(self.config.mem_bytes)
        self._recent = ChunkLRU(self.config.recent_bytes, fifo=True)
        self._flights: dict[bytes, _Flight] = {}
        self._unwritten: dict[bytes, fmt.ChunkBytes] = {}
        self._unwritten_speculative: set[bytes] = set()  # of _unwritten: from windows
        self._unwritten_bytes = 0
        # The chunk batch being written: still answers reads, and is no reason to
        # fetch, until the cache's index has it.
        self._in_write: dict[bytes, fmt.ChunkBytes] = {}
        self.windows = PackWindows(self.config.window_min, self.config.window_max)
        self.http: MultiGetter | None = None  # started at the first small GET
        self._indexes_loading: set[bytes] = set()
        self._writing = False
        self._write_room: list[trio.Event] = []
        self._pages_loading: dict[bytes, trio.Event] = {}  # page id -> set when its read ends
        self._warming = 0
        self._unwritten_pages: dict[bytes, fmt.ChunkBytes] = {}  # fetched pages, not yet cached
        self._unwritten_page_bytes = 0

    async def get(
        self, wanted: Sequence[Wanted], readahead: Sequence[Wanted] = ()
    ) -> dict[bytes, fmt.ChunkBytes]:
        """The bytes of `wanted` by chunk id; starts `readahead` in the background
        once the demand fetches are under way. Raises FetchError within read_timeout.
        A chunk read from the cache is a read-only view (ChunkCache.get_views)."""
        began = trio.current_time()
        out: dict[bytes, fmt.ChunkBytes] = {}
        waits: list[tuple[Wanted, _Flight]] = []
        new: dict[bytes, Wanted] = {}
        for w in wanted:
            cid = w.ref.id
            if cid in out or cid in new:
                continue
            self.windows.asked(cid)
            data = self._held(cid)
            if data is not None:
                self.stats.mem_hits += 1
                out[cid] = data
                continue
            flight = self._flights.get(cid)
            if flight is None:
                flight = self._flights[cid] = _Flight()
                new[cid] = w
            else:
                self.stats.shared += 1
            waits.append((w, flight))
        if new:
            mine = {cid: self._flights[cid] for cid in new}
            self._nursery.start_soon(self._run, list(new.values()), mine, 0)
        if readahead:
            self.readahead(readahead)
        if waits:
            with trio.move_on_after(self.config.read_timeout) as scope:
                for w, flight in waits:
                    while flight.error is not None or not flight.done.is_set():
                        await flight.done.wait()
                        if flight.error is None:
                            break
                        if flight.started >= began and not flight.placed_by_index:
                            raise (PackGone if flight.gone else FetchError)(flight.error)
                        # It failed before this read began (in an outage that may be
                        # over): fetch again, within this read's own time.
                        flight = self._again(w)
                    assert flight.data is not None
                    out[w.ref.id] = flight.data
            if scope.cancelled_caught:
                raise FetchError(
                    f"no data within the read timeout of {self.config.read_timeout:g} s"
                )
        return out

    def _again(self, w: Wanted) -> _Flight:
        """The chunk's flight now: one in flight, its bytes if they arrived
        meanwhile, or a new fetch."""
        flight = self._flights.get(w.ref.id)
        if flight is None:
            flight = _Flight()
            data = self._held(w.ref.id)
            if data is not None:
                flight.data = data
                flight.done.set()
                return flight
            self._flights[w.ref.id] = flight
            self._nursery.start_soon(self._run, [w], {w.ref.id: flight}, 0)
        return flight

    def readahead(self, wanted: Sequence[Wanted]) -> bool:
        """Start fetching chunks not yet in memory or in flight, as many (in order)
        as the free in-flight budget admits; never waits. False if it admitted none."""
        items: dict[bytes, Wanted] = {}
        need = 0
        for w in wanted:
            cid = w.ref.id
            if cid in items or self._coming(cid):
                continue
            if need + w.loc.stored_length > self.budget.free:
                break
            items[cid] = w
            need += w.loc.stored_length
        if not items:
            if not all(self._coming(w.ref.id) for w in wanted):
                self.stats.readahead_skipped += 1
                return False
            return True
        self.budget.try_acquire(need)
        self.stats.readahead_chunks += len(items)
        # One flight group per part, so the window's parts are fetched side by side
        # and each resolves as soon as its own GET is in, not the whole window's.
        groups: list[list[Wanted]] = [[]]
        size = 0
        for w in items.values():
            if groups[-1] and size + w.loc.stored_length > self.config.part_bytes:
                groups.append([])
                size = 0
            groups[-1].append(w)
            size += w.loc.stored_length
        for group in groups:
            mine = {g.ref.id: _Flight() for g in group}
            self._flights.update(mine)
            self._nursery.start_soon(
                self._run, group, mine, sum(g.loc.stored_length for g in group)
            )
        return True

    def passed(self, cids: Iterable[bytes]) -> None:
        """A sequential reader is past these chunks: those fetched from the store
        move from the memory LRU to the first-in-first-out holding of the next few
        reads, so that the GET buffers behind them go back to the backend's pool
        (vfs/backends/s3.py, _BODIES) once the cache writer has them, instead of
        staying alive, and resident, until `mem_bytes` of newer chunks push them out."""
        mem, recent = self._mem, self._recent
        for cid in cids:
            data = mem.pop(cid)
            if data is not None:
                recent.put(cid, data)

    def all_cached(self, chunks: Sequence[fmt.ChunkRef]) -> bool:
        """Whether every one of these chunks is in memory or in the machine's cache (a
        short LMDB read, on the calling thread, as _run's lookup)."""
        if self.cache is None:
            return False
        ids = [c.id for c in chunks if self._held(c.id) is None]
        try:
            return len(self.cache.contains_many(ids)) == len(set(ids))
        except Exception as e:  # a broken cache: the store places and serves the file
            log.warning("chunk cache lookup failed: %s", e)
            return False

    def from_store(self, cid: bytes) -> bool:
        """Whether a chunk just read came from the store (it is in the memory LRU or
        queued for the cache writer), rather than from the machine's cache."""
        return cid in self._mem or cid in self._unwritten or cid in self._in_write

    def _held(self, cid: bytes) -> fmt.ChunkBytes | None:
        """A chunk's bytes if this mount holds them: read recently, or verified and
        waiting for the cache writer."""
        data = self._mem.get(cid)
        if data is not None:
            return data
        data = self._recent.get(cid)
        if data is not None:
            return data
        data = self._unwritten.get(cid)
        return self._in_write.get(cid) if data is None else data

    def _coming(self, cid: bytes) -> bool:
        """Whether a chunk is held or in flight: nothing to start for it."""
        return (
            cid in self._mem
            or cid in self._recent
            or cid in self._unwritten
            or cid in self._flights
            or cid in self._in_write
        )

    # -- flights -------------------------------------------------------------------

    async def _run(self, items: list[Wanted], mine: dict[bytes, _Flight], reserved: int) -> None:
        """Resolve `mine`, the flights of `items`: from the cache, else from the
        store. `reserved` is budget the caller (readahead) already holds for them."""
        demand = reserved == 0
        try:
            hits: dict[bytes, bytes | memoryview] = {}
            if self.cache is not None:
                try:
                    # The index lookup is a short LMDB read, done here: a cold read
                    # then goes to the store without a worker thread round trip.
                    ids = list(mine)
                    indexed = self.cache.contains_many(ids)
                    self.cache.note_misses(len(ids) - len(indexed))
                    if indexed:
                        hits = await trio.to_thread.run_sync(
                            self.cache.get_views,
                            [cid for cid in ids if cid in indexed],
                            limiter=self.cache_limiter,
                        )
                except Exception as e:  # a broken cache must not fail a read the store can serve
                    log.warning("chunk cache lookup failed, fetching from the store: %s", e)
            for cid, data in hits.items():
                self._resolve(cid, mine[cid], data, self._recent)
            self.stats.cache_hits += len(hits)
            missing = [w for w in items if w.ref.id not in hits]
            self.stats.cache_misses += len(missing)
            placed = []
            for w in missing:  # an unplaced chunk: the reader places it (files._relocate)
                if w.loc.pack != NOWHERE:
                    placed.append(w)
                else:
                    why = f"chunk {w.ref.id.hex()[:16]} left the cache of a file opened from it"
                    self._fail(w.ref.id, mine[w.ref.id], why, gone=True)
            missing = placed
            if missing:
                # A demand miss may bring a window of its pack; readahead is wide already.
                widen = demand and self.cache is not None
                speculative = self._widen(missing, mine) if widen else {}
                wanted = [*missing, *speculative.values()]
                later: list[dict[bytes, fmt.ChunkBytes]] = []
                async with trio.open_nursery() as nursery:
                    for span in plan_ranges(wanted, max_range=self.config.part_bytes):
                        nursery.start_soon(self._fetch_span, span, mine, demand, speculative, later)
                # The GETs are done: their budget is free before the chunks queue for
                # the cache writer, so a slow disk never holds up the next GETs.
                self.budget.release(reserved)
                reserved = 0
                for got in later:
                    await self._cache_later(got)
        except Exception:
            log.exception("fetching %d chunks failed unexpectedly", len(mine))
        finally:
            for cid, flight in mine.items():
                if not flight.done.is_set():
                    self._fail(cid, flight, "the fetch was cancelled")
            if reserved:
                self.budget.release(reserved)

    def _widen(self, missing: list[Wanted], mine: dict[bytes, _Flight]) -> dict[bytes, Wanted]:
        """Chunks to fetch beside `missing` (pack windows, vfs/mount/windows.py), each
        given a flight in `mine` and the tables; by chunk id.

        Per pack with an index in memory and a window size: the aligned window of the
        pack around the missing chunks, snapped to the chunks that start in it, less
        what this mount holds or has in flight and what the cache has. No await in
        here: the flights are made in the same critical section that saw them absent,
        so no two windows ever fetch one chunk. A window is taken only if the in-flight
        budget has room now for its whole extent with the missing chunks; its GETs then take
        their budget as demand GETs do (each span its whole size at once, so no task
        holds budget while it waits for more)."""
        by_pack: dict[bytes, list[Wanted]] = {}
        for w in missing:
            by_pack.setdefault(w.loc.pack, []).append(w)
        out: dict[bytes, Wanted] = {}
        for pack, items in by_pack.items():
            if not self.windows.missed(pack, len(items), sum(w.loc.stored_length for w in items)):
                continue
            entries = self.store.cached_pack_index(pack)
            if entries is None:
                self._load_index_soon(pack)
                continue
            size = self.windows.size(pack, len(entries))
            if not size:
                continue
            lo = min(w.loc.offset for w in items)
            hi = max(w.loc.offset + w.loc.stored_length for w in items)
            start = lo // size * size
            stop = max(-(-hi // size) * size, start + size)
            picked: list[fmt.PackEntry] = []
            first = bisect_left(entries, start, key=_offset)
            end = bisect_left(entries, stop, key=_offset, lo=first)
            if end - first > MAX_WINDOW_CHUNKS:  # the chunks around the missing ones
                near = bisect_left(entries, lo, key=_offset, lo=first, hi=end)
                first = max(first, min(near - MAX_WINDOW_CHUNKS // 2, end - MAX_WINDOW_CHUNKS))
                end = first + MAX_WINDOW_CHUNKS
            for e in entries[first:end]:  # at most MAX_WINDOW_CHUNKS
                # An entry larger than the window is no small file's chunk (or a
                # forged index): never let it turn a window into a huge GET.
                if e.stored_length <= size and e.id not in out and not self._coming(e.id):
                    picked.append(e)
            if picked and self.cache is not None:
                try:
                    cached = self.cache.contains_many([e.id for e in picked])
                except Exception as err:  # then fetch them: a cache fault costs bytes only
                    log.debug("chunk cache lookup for a window failed: %s", err)
                    cached = set()
                picked = [e for e in picked if e.id not in cached]
            need = sum(e.stored_length for e in picked)
            allowed = self.windows.allowance()
            if need > allowed:  # the chunks nearest the missing ones, then
                picked.sort(key=lambda e: abs(e.offset - lo))
                n = 0
                for k, e in enumerate(picked):
                    n += e.stored_length
                    if n > allowed:
                        picked = picked[:k]
                        break
                picked.sort(key=lambda e: e.offset)
                need = sum(e.stored_length for e in picked)
            if not picked:
                continue
            # The GETs' extent (gaps between chunks included) is what will be in flight.
            extent = max(max(e.offset + e.stored_length for e in picked), hi) - min(
                picked[0].offset, lo
            )
            if (
                extent > self.budget.free
                or self._unwritten_bytes + self.budget.used + need > self.config.write_behind_bytes
            ):
                # No room in flight, or none in the cache writer's queue for what is
                # in flight and this window: it would be fetched only to be dropped.
                self.stats.window_skipped += 1
                continue
            for e in picked:
                w = Wanted(
                    fmt.ChunkRef(e.id, e.raw_length),
                    fmt.Location(pack, e.offset, e.stored_length, e.codec),
                )
                out[e.id] = w
                mine[e.id] = self._flights[e.id] = _Flight()
            self.windows.fetched(pack, ((e.id, e.stored_length) for e in picked))
            self.stats.window_chunks += len(picked)
            self.stats.window_bytes += need
        return out

    def _load_index_soon(self, pack: bytes) -> None:
        if pack not in self._indexes_loading:
            self._indexes_loading.add(pack)
            self._nursery.start_soon(self._load_index, pack)

    async def _load_index(self, pack: bytes) -> None:
        """Load a pack's index in the background: the miss that asked for it goes on
        without a window, the next ones in the pack get one."""
        assert self.cache is not None
        try:
            await self.meta(
                self.store.load_pack_index,
                pack,
                packindex_dir(self.cache.root),
                limiter=self.warm_limiter,
            )
            self.stats.pack_indexes += 1
        except Exception as e:  # windows are an optimisation: reads go on without
            log.debug("index of pack %s not loaded: %s", pack.hex()[:16], e)
        finally:
            self._indexes_loading.discard(pack)

    async def _fetch_span(
        self,
        span: Span,
        mine: dict[bytes, _Flight],
        wait_for_budget: bool,
        speculative: dict[bytes, Wanted],
        later: list[dict[bytes, fmt.ChunkBytes]],
    ) -> None:
        """One GET of `span`: its flights resolved, the chunks asked for added to
        `later` (for the cache writer, queued by the caller once all its GETs are
        done), those of a window queued at once if there is room."""
        held = await self.budget.acquire(span.end - span.start) if wait_for_budget else 0
        try:
            got = await self._fetch_with_retries(span, speculative)
        except FetchError as e:
            self.stats.failures += 1
            log.warning("%s", e)
            for w in span.items:
                self._fail(w.ref.id, mine[w.ref.id], str(e), isinstance(e, PackGone))
            return
        finally:
            if held:
                self.budget.release(held)
        self.stats.requests += 1
        self.stats.bytes_fetched += span.end - span.start
        self.stats.chunks_fetched += len(got)
        asked: dict[bytes, fmt.ChunkBytes] = {}
        beside: dict[bytes, fmt.ChunkBytes] = {}
        # Raw chunks are views of the GET's one buffer, which each keeps alive. Those
        # asked for go to the memory LRU: if they fill less than half of the buffer (a
        # small file in a pack window), they are copied out, so that the LRU does not
        # keep a whole window for them; the window's own chunks live only until
        # the cache writer has them.
        kept = sum(len(d) for cid, d in got.items() if cid not in speculative)
        copy_out = 2 * kept < span.end - span.start
        for w in span.items:
            cid = w.ref.id
            data = got.get(cid)
            if data is None:  # a window's chunk that failed verification: left out
                mine[cid].placed_by_index = True
                self._fail(cid, mine[cid], "fetched beside others, it failed verification")
            elif cid in speculative:
                self._resolve(cid, mine[cid], data, None)
                beside[cid] = data
            else:
                if copy_out and isinstance(data, memoryview):
                    data = bytes(data)
                self._resolve(cid, mine[cid], data, self._mem)
                asked[cid] = data
        if self.cache is not None:
            if beside:
                self._cache_beside(beside)
            if asked:
                later.append(asked)

    # -- tree pages and other metadata ---------------------------------------------

    async def meta(
        self,
        fn: Callable[..., _T],
        *args: Any,
        limiter: trio.CapacityLimiter | None = None,
        timeout: float | None = None,
    ) -> _T:
        """A store read in a worker thread, retried as chunk GETs are: a try that fails
        to reach the store or stalls past `attempt_timeout` is tried again with
        backoff until `read_timeout` (or `timeout`, when the caller has an answer to
        fall back on) has passed, so an outage shorter than that is invisible to
        readers. An answer (NotFound, a damaged object, a refusal) is not retried."""
        cfg = self.config
        deadline = trio.current_time() + (cfg.read_timeout if timeout is None else timeout)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - trio.current_time()
            wait = max(0.01, min(cfg.attempt_timeout, remaining))
            try:
                with trio.fail_after(wait):
                    return await trio.to_thread.run_sync(
                        partial(fn, *args),
                        limiter=limiter or self.meta_limiter,
                        abandon_on_cancel=True,
                    )
            except trio.TooSlowError:
                why = f"no answer within {wait:g} s"
            except PermissionDenied:
                raise
            except NotPinned as e:  # offline: no try will find it until the store is back
                raise FetchError(f"store read: {e}") from None
            except (BackendError, OSError) as e:
                why = str(e)
            await self._back_off("store read", why, attempt, deadline, timeout)

    async def page(
        self, page_id: bytes, limiter: trio.CapacityLimiter | None = None
    ) -> fmt.TreePage:
        """A tree page from the store's page cache, or read once however many tasks
        ask for it at the same time."""
        while True:
            hit = self.store.cached_page(page_id)
            if hit is not None:
                return hit
            loading = self._pages_loading.get(page_id)
            if loading is None:
                break
            await loading.wait()  # then look again: the read may have failed
        done = self._pages_loading[page_id] = trio.Event()
        try:
            page, fetched = await self.meta(self.store.fetch_page, page_id, limiter=limiter)
        finally:
            del self._pages_loading[page_id]
            done.set()
        if (
            fetched is not None
            and self.cache is not None
            and self._unwritten_page_bytes + len(fetched) <= PAGE_QUEUE_BYTES
        ):
            # Past the bound the page is not cached: a later reader fetches it again.
            self._unwritten_pages[page_id] = fetched
            self._unwritten_page_bytes += len(fetched)
            self._start_writer()
        return page

    def warm_pages(self, page_ids: Iterable[bytes]) -> None:
        """Read pages in the background, at most MAX_WARMING at a time: whoever lists
        a directory tends to descend into its subdirectories next (`find`, `ls -R`,
        `du`), and then finds their top pages read."""
        for page_id in page_ids:
            if self._warming >= MAX_WARMING:
                return
            if page_id not in self._pages_loading and self.store.cached_page(page_id) is None:
                self._warming += 1
                self._nursery.start_soon(self._warm, page_id)

    async def _warm(self, page_id: bytes) -> None:
        try:
            await self.page(page_id, self.warm_limiter)
        except Exception as e:  # a guess that failed: the reader will ask again and see why
            log.debug("reading page %s ahead failed: %s", page_id.hex()[:16], e)
        finally:
            self._warming -= 1

    async def cached_bytes(self, chunks: Sequence[fmt.ChunkRef]) -> int:
        """How many bytes of these chunks the chunk cache holds (each chunk once)."""
        cache = self.cache

        def count() -> int:
            return sum(
                c.length
                for c in {c.id: c for c in chunks}.values()
                if cache is not None and cache.contains(c.id)
            )

        return await self.meta(count)

    def counters(self) -> dict[str, int]:
        """The fetch counters and the in-flight budget, for `user.vfs.stats`."""
        return {**asdict(self.stats), "budget_used": self.budget.used}

    # -- the cache writer ----------------------------------------------------------

    def _cache_beside(self, got: dict[bytes, fmt.ChunkBytes]) -> None:
        """Queue chunks of a window for the cache writer as speculative, if there is
        room: they never wait for it (and are refetched if someone asks later)."""
        if self._unwritten_bytes >= self.config.write_behind_bytes:
            return
        for cid, data in got.items():
            if cid not in self._unwritten:
                self._unwritten[cid] = data
                self._unwritten_speculative.add(cid)
                self._unwritten_bytes += len(data)
        self._start_writer()

    async def _cache_later(self, got: dict[bytes, fmt.ChunkBytes]) -> None:
        """Queue verified chunks for the cache writer, once there is room."""
        while self._unwritten_bytes >= self.config.write_behind_bytes:
            ev = trio.Event()
            self._write_room.append(ev)
            await ev.wait()
        for cid, data in got.items():
            if cid not in self._unwritten:
                self._unwritten[cid] = data
                self._unwritten_bytes += len(data)
        self._start_writer()

    async def _write_behind(self) -> None:
        """Write queued pages and chunks to the cache until nothing is left: all the
        pages that gathered in one put_many (at most PAGE_QUEUE_BYTES), chunks oldest
        first up to WRITE_BATCH chunks or `part_bytes` per put_many (one index
        transaction each). One writer, so that what arrives while it writes shares the
        next transaction, and LMDB's one writer lock and its fsync are paid per batch,
        not per span or page. The bound on a batch bounds what lies on disk ahead of
        the index (and so above the cache cap) while a batch is written.

        Shielded: on unmount the queue (at most write_behind_bytes of chunks and
        PAGE_QUEUE_BYTES of pages) is written out rather than lost, as the thread of
        a running put could not be stopped anyway."""
        assert self.cache is not None
        try:
            with trio.CancelScope(shield=True):
                while self._unwritten or self._unwritten_pages:
                    if self._unwritten_pages:
                        batch, self._unwritten_pages = self._unwritten_pages, {}
                        self._unwritten_page_bytes = 0
                        what = "tree pages"
                        speculative = False
                    else:
                        batch, speculative = self._chunk_batch()
                        self._in_write = batch
                        what = "chunks"
                    self.stats.cache_writes += 1
                    try:
                        await trio.to_thread.run_sync(
                            partial(self.cache.put_many, batch, speculative=speculative),
                            limiter=self.cache_write_limiter,
                        )
                    except Exception as e:  # the cache is an optimisation: reads go on
                        log.warning("chunk cache write of %d %s failed: %s", len(batch), what, e)
                    finally:
                        self._in_write = {}
        finally:
            self._writing = False

    def _chunk_batch(self) -> tuple[dict[bytes, fmt.ChunkBytes], bool]:
        """The oldest queued chunks, WRITE_BATCH or `part_bytes` at most, all asked
        for or all speculative (from windows), taken out of the queue, and which of
        the two they are; wakes fetches that waited for room."""
        batch: dict[bytes, fmt.ChunkBytes] = {}
        size = 0
        spec = self._unwritten_speculative
        speculative = next(iter(self._unwritten)) in spec
        for cid, data in itertools.islice(self._unwritten.items(), WRITE_BATCH):
            if batch and (
                size + len(data) > self.config.part_bytes or (cid in spec) != speculative
            ):
                break
            batch[cid] = data
            size += len(data)
        for cid in batch:
            del self._unwritten[cid]
            spec.discard(cid)
        self._unwritten_bytes -= size
        if self._unwritten_bytes < self.config.write_behind_bytes:
            waiters, self._write_room = self._write_room, []
            for ev in waiters:
                ev.set()
        return batch, speculative

    def _start_writer(self) -> None:
        if not self._writing:
            self._writing = True
            self._nursery.start_soon(self._write_behind)

    async def _fetch_with_retries(
        self, span: Span, optional: dict[bytes, Wanted] | None = None
    ) -> dict[bytes, fmt.ChunkBytes]:
        cfg = self.config
        # The full key, so that a log line names the object to look at (vfs verify).
        what = f"{self.source.store.pack_key(span.pack)} bytes {span.start}-{span.end}"
        deadline = trio.current_time() + cfg.read_timeout
        attempt = 0
        corrupt = 0
        inline = span.end - span.start <= cfg.inline_bytes
        while True:
            attempt += 1
            remaining = deadline - trio.current_time()
            try:
                with trio.fail_after(max(0.01, min(cfg.attempt_timeout, remaining))):
                    if inline:
                        got = await self._fetch_inline(span, optional or {})
                        if got is not None:
                            return got
                    return await trio.to_thread.run_sync(
                        functools.partial(
                            self.source.fetch_span, cache=False, optional=optional or {}
                        ),
                        span,
                        limiter=self.remote_limiter,
                        abandon_on_cancel=True,
                    )
            except trio.TooSlowError:
                why = f"no answer within {min(cfg.attempt_timeout, remaining):g} s"
            except NotFound as e:  # the store lacks the pack: retrying will not help
                raise PackGone(f"{what}: {e}") from None
            except CorruptObject as e:
                # A bad answer may be a glitch on the way (retry it), but the same bad
                # bytes again mean a damaged object: fail now, not at the read timeout.
                corrupt += 1
                why = str(e)
                if corrupt >= CORRUPT_ATTEMPTS:
                    raise FetchError(
                        f"{what}: {why}; the same after {corrupt} attempts: damaged in the store"
                    ) from None
            except (BackendError, OSError) as e:
                why = str(e)
            await self._back_off(what, why, attempt, deadline)

    async def _fetch_inline(
        self, span: Span, optional: dict[bytes, Wanted]
    ) -> dict[bytes, fmt.ChunkBytes] | None:
        """fetch_span's work for a small span, done by the trio thread: one GET by the
        store's URL road, verified here. None if there is no such road or it did not
        answer cleanly: then a worker thread asks again, by every road it knows."""
        n = span.end - span.start
        read = self.store.pack_url_read(span.pack, span.start, n)
        if read is None:
            return None
        if self.http is None:
            self.http = MultiGetter()
            self._nursery.start_soon(self.http.run)
        self.stats.inline_gets += 1
        async with self.remote_limiter:
            try:
                status, body = await self.http.get(
                    read.url, read.headers, read.silence, read.connect_timeout, read.ca_file
                )
            except curl.Failed as e:
                log.debug("GET on the trio thread failed (%s); asking again", e)
                self.stats.inline_fallbacks += 1
                return None
        data = read.answer(status, body)  # NotFound: the pack is gone
        if data is None:
            self.stats.inline_fallbacks += 1
            return None
        return self.source.decode_span(span, data, optional)

    async def _back_off(
        self, what: str, why: str, attempt: int, deadline: float, timeout: float | None = None
    ) -> None:
        """After failed try number `attempt` of a store read (a chunk span, a page, the
        locations): wait the backoff, or FetchError if that would pass `deadline` (the
        read timeout, or the caller's `timeout`, after the first try). The one retry
        rule of the mount."""
        cfg = self.config
        delay = min(cfg.backoff * 2 ** (attempt - 1), 2.0)
        if trio.current_time() + delay >= deadline:
            bound = "read timeout" if timeout is None else "a known answer's wait"
            raise FetchError(
                f"{what}: {why}; gave up after {attempt} attempts "
                f"({bound} {cfg.read_timeout if timeout is None else timeout:g} s)"
            )
        self.stats.retries += 1
        log.warning("%s: %s; retrying in %.2f s (attempt %d)", what, why, delay, attempt)
        await trio.sleep(delay)

    def _resolve(
        self, cid: bytes, flight: _Flight, data: fmt.ChunkBytes, keep: ChunkLRU | None
    ) -> None:
        """End a flight with its bytes, and `keep` them in that LRU (None for the
        chunks of a window: they must not push out what was read)."""
        if keep is not None:
            keep.put(cid, data)
        if self._flights.get(cid) is flight:
            del self._flights[cid]
        flight.data = data
        flight.done.set()

    def _fail(self, cid: bytes, flight: _Flight, error: str, gone: bool = False) -> None:
        if flight.done.is_set():
            return
        if self._flights.get(cid) is flight:
            del self._flights[cid]
        flight.error = error
        flight.gone = gone
        flight.done.set()
