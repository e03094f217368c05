"""Fetching ahead in a known order: the reader's half of a loader's order hint.

A training loader knows each epoch's order before it reads a byte of it
(vfs.torch.OrderHintSampler). OrderPrefetch takes that order and fills the machine's
chunk cache in exactly that order, a bounded number of bytes ahead of where the
reader is, so that each read finds its chunks cached and the cache is never flooded
with files the epoch will not need for a long while.

Design: one planning thread walks the order. It takes the next files up to a batch of
BATCH_BYTES (and no more than the budget), leaves out the chunks the cache already
holds, groups the rest into ranged GETs (vfs.reader.plan_ranges) and submits them,
sorted by their first file's place in the order, to a pool of fetch threads, which
run them first in, first out. So batches go in the order, and within a batch each
GET goes by the earliest file it holds: the file the loader reads first is fetched
first, and its neighbours in the pack come in the same request. Before
each batch it waits until the bytes issued ahead of the reader's position
(`note_read`) fall under `ahead_bytes`.

A reader of the same Version that wants a chunk whose GET is on its way waits for
that GET (ChunkSource.in_flight) instead of issuing its own.

Stopping: a fetch that fails stops the prefetch (the reader meets the failure itself
and reports it), and so does the end of the process: ThreadPoolExecutor's threads
are joined at exit, so a failed training job whose store stalls would otherwise wait
for every queued GET to time out in turn before it exits (minutes, measured). What
is queued is then dropped; only the GETs under way finish.

Concurrency: ``_cond`` guards the reader's position, the issued count, the stop flag
and the table of fetches in flight; the planning thread waits on it. Fetches go through a ChunkSource of their own
(its counters are this object's), which is thread-safe with the cache under it.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from vfs.errors import VfsError
from vfs.reader import MAX_GAP, ChunkSource, Span, Version, Wanted, plan_ranges

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# A batch of the order planned together (and never more than the byte budget): big
# enough that its files' chunks, dense in their packs, coalesce into few large GETs,
# as `vfs prefetch` and the mount's pack windows do. Measured by hand (2,000 files of
# ~50 KB, shuffled, SeaweedFS, 16 threads): batches of 64 files and a 256 KiB gap
# read a cold epoch at 166 files/s, batches of 1,024 files and a 1 MiB gap at 784.
BATCH_BYTES = 32 * MiB
BATCH_FILES = 1024
# Chunks of one pack at most this far apart are fetched in one GET (the reader's own
# bound: a gap this small costs less than a round trip).
ORDER_GAP = MAX_GAP

_running: weakref.WeakSet[OrderPrefetch] = weakref.WeakSet()


def _stop_all() -> None:
    for prefetch in list(_running):
        prefetch.stop()


# Called before the interpreter joins ThreadPoolExecutor threads (atexit is later).
getattr(threading, "_register_atexit", lambda f: None)(_stop_all)


class OrderPrefetch:
    """Fetches the files `paths` of `version` into its chunk cache in that order."""

    def __init__(
        self,
        version: Version,
        paths: Sequence[str],
        *,
        ahead_bytes: int = 256 * MiB,
        threads: int = 8,
    ) -> None:
        self.version = version
        self.paths = list(paths)
        self.ahead_bytes = max(1, ahead_bytes)
        self.threads = max(1, threads)
        self.source = ChunkSource(version.store, version.chunks.cache)
        self._cond = threading.Condition()
        self._read = 0  # places of the order the reader has reached
        self._ends: list[int] = []  # bytes of the order up to and including each place
        self._issued = 0  # places of the order whose fetches are submitted
        self._stopped = False
        self._in_flight: dict[bytes, Future[object]] = {}  # guarded by _cond
        self._thread: threading.Thread | None = None
        self.done = threading.Event()

    def start(self) -> None:
        if self.source.cache is None:
            log.info("no chunk cache: the order hint of %d files is ignored", len(self.paths))
            self.done.set()
            return
        self._thread = threading.Thread(target=self._run, name="vfs-order-plan", daemon=True)
        _running.add(self)
        self._thread.start()

    def note_read(self, place: int) -> None:
        """The reader has reached place `place` of the order (0-based)."""
        with self._cond:
            if place + 1 > self._read:
                self._read = place + 1
                self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Until every file of the order is fetched (or the prefetch stopped)."""
        return self.done.wait(timeout)

    @property
    def requests(self) -> int:
        return self.source.requests

    @property
    def bytes_fetched(self) -> int:
        return self.source.bytes_fetched

    def _ahead(self) -> int:
        issued = self._ends[self._issued - 1] if self._issued else 0
        read = self._ends[min(self._read, self._issued) - 1] if min(self._read, self._issued) else 0
        return issued - read

    def _run(self) -> None:
        pending: list[Future[object]] = []
        try:
            with ThreadPoolExecutor(self.threads, thread_name_prefix="vfs-order") as pool:
                place = 0
                while place < len(self.paths):
                    with self._cond:
                        while not self._stopped and self._ahead() >= self.ahead_bytes:
                            self._cond.wait()
                        if self._stopped:
                            break
                    place = self._batch(pool, place, pending)
                for f in pending:
                    if not f.cancelled():
                        f.result()
        except VfsError as e:  # a fetch the reader will meet and report itself
            log.info("order prefetch stopped: %s", e)
        except Exception:
            log.exception("order prefetch failed")
        finally:
            self.done.set()

    def _batch(self, pool: ThreadPoolExecutor, place: int, pending: list[Future[object]]) -> int:
        """Plan and submit the fetches of the next batch from `place`; the next place."""
        cache = self.source.cache
        assert cache is not None
        order: dict[bytes, int] = {}
        todo: list[Wanted] = []
        size = 0
        first = place
        limit = min(BATCH_BYTES, self.ahead_bytes)  # a small budget: small batches
        while place < len(self.paths) and size < limit and place - first < BATCH_FILES:
            path = self.paths[place]
            try:
                found = self.version.stat(path)
            except VfsError as e:
                log.debug("order prefetch skips %s: %s", path, e)
                found = None
            if found is not None and found.entry.is_file:
                size += found.entry.size
                for w in self.version.wanted(found):
                    if w.ref.id not in order:
                        order[w.ref.id] = place
                        todo.append(w)
            prev = self._ends[-1] if self._ends else 0
            self._ends.append(prev + (found.entry.size if found and found.entry.is_file else 0))
            place += 1
        have = cache.contains_many(order)
        todo = [w for w in todo if w.ref.id not in have]
        spans = plan_ranges(todo, max_gap=ORDER_GAP)
        spans.sort(key=lambda s: min(order[w.ref.id] for w in s.items))
        for span in spans:
            fut = pool.submit(self._fetch, span)
            with self._cond:
                for w in span.items:
                    self._in_flight[w.ref.id] = fut
            fut.add_done_callback(functools.partial(self._landed, span.items))
            pending.append(fut)
        pending[:] = [f for f in pending if not f.done()]
        with self._cond:
            self._issued = place
        return place

    def in_flight(self, chunk_ids: Iterable[bytes]) -> list[Future[object]]:
        """The fetches on their way for any of `chunk_ids` (ChunkSource.in_flight):
        a reader waits for them instead of asking the store a second time."""
        with self._cond:
            found = {id(f): f for c in chunk_ids if (f := self._in_flight.get(c)) is not None}
        return list(found.values())

    def _landed(self, items: list[Wanted], _: Future[object]) -> None:
        with self._cond:
            for w in items:
                self._in_flight.pop(w.ref.id, None)

    def _fetch(self, span: Span) -> object:
        with self._cond:
            if self._stopped:
                return None
        try:
            return self.source.fetch_span(span)
        except VfsError:
            self.stop()  # the store fails: the GETs queued behind this one would too
            raise
