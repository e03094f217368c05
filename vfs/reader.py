"""Reading versions: the store layer's reader that `vfs cat`, `vfs get`, the mount and
the user-facing Python API (vfs.api, `vfs.open_version`) stand on.

    from vfs.reader import open_version
    with open_version("imagenet@v3") as v:
        for path, found in v.walk():
            ...
        with v.open("train/0001.jpg") as f:
            f.seek(100); f.read(10)

Chunks are found through the locations object of the leaf page that holds the file,
fetched by ranged GETs of their packs (neighbours coalesced into one request),
verified against their BLAKE3 ids, and kept in the machine's chunk cache if one is
given. Nothing is trusted before it is verified.

Concurrency: a Version and its ChunkSource may be used from many threads; the
store's caches are locked, the chunk cache is process- and thread-safe.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from bisect import bisect_right
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, TypeVar

from vfs import format as fmt
from vfs import refs, tree
from vfs.errors import CorruptObject, IsADirectory, NotFound, UsageError
from vfs.store import LRU, Store

if TYPE_CHECKING:
    from vfs.cache import ChunkCache

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_R = TypeVar("_R")

# Two chunks of one pack whose bytes lie at most MAX_GAP apart are fetched in one
# request, up to MAX_RANGE bytes: a wasted gap is cheaper than a round trip.
MAX_GAP = 1024 * 1024
MAX_RANGE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Wanted:
    ref: fmt.ChunkRef
    loc: fmt.Location
    leaf: bytes = b""  # the leaf page whose locations placed it ("" for a pack window)


def place(found: tree.Found, locs: dict[bytes, fmt.Location]) -> list[Wanted]:
    """A file's chunks with their locations (the locations of its leaf page), in
    file order."""
    out = []
    for c in found.entry.chunks:
        loc = locs.get(c.id)
        if loc is None:
            raise CorruptObject(
                f"locations of tree {found.leaf.hex()[:16]} do not place chunk {c.id.hex()[:16]}"
            )
        out.append(Wanted(c, loc, found.leaf))
    return out


# The pack of a chunk placed nowhere yet (unplaced): no pack id is empty.
NOWHERE = b""


def unplaced(found: tree.Found) -> list[Wanted]:
    """A file's chunks without their locations, for a file whose chunks are all in the
    machine's cache: read from there, they need none, and the store need not answer.
    A reader that must fetch one after all (evicted since) places it then."""
    return [
        Wanted(c, fmt.Location(NOWHERE, 0, c.length, fmt.CODEC_RAW), found.leaf)
        for c in found.entry.chunks
    ]


@dataclass(slots=True)
class Span:
    """One ranged GET: bytes [start, end) of a pack, holding the chunks `items`."""

    pack: bytes
    start: int
    end: int
    items: list[Wanted]


def plan_ranges(
    wanted: Iterable[Wanted], max_gap: int = MAX_GAP, max_range: int = MAX_RANGE
) -> list[Span]:
    """Group chunk fetches into as few ranged GETs as the gap and size bounds allow."""
    by_pack: dict[bytes, list[Wanted]] = {}
    for w in wanted:
        by_pack.setdefault(w.loc.pack, []).append(w)
    spans: list[Span] = []
    for pack, items in by_pack.items():
        items.sort(key=lambda w: w.loc.offset)
        cur: Span | None = None
        for w in items:
            start, end = w.loc.offset, w.loc.offset + w.loc.stored_length
            if cur is not None and start - cur.end <= max_gap and end - cur.start <= max_range:
                cur.end = max(cur.end, end)
                cur.items.append(w)
            else:
                cur = Span(pack, start, end, [w])
                spans.append(cur)
    return spans


# The threads that help a fetch thread verify (and decompress) the chunks of its span:
# BLAKE3 and zstd release the GIL, so a span's chunks are checked side by side.
VERIFY_THREADS = max(1, min(4, os.cpu_count() or 1))
_helpers: ThreadPoolExecutor | None = None
_helpers_lock = threading.Lock()


def _map_helped(fn: Callable[[_T], _R], items: Sequence[_T], threads: int) -> list[_R]:
    """[fn(x) for x in items], run by the calling thread and up to threads - 1 helper
    threads of a shared pool. The caller works too and never waits for a helper
    that has not started (busy with another span): it then does that share itself."""
    if threads <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    global _helpers
    with _helpers_lock:
        if _helpers is None:
            _helpers = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="vfs-verify")
        pool = _helpers
    results: list[_R | None] = [None] * len(items)
    indexes = iter(range(len(items)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                i = next(indexes, None)
            if i is None:
                return
            results[i] = fn(items[i])

    helping = [pool.submit(work) for _ in range(min(threads, len(items)) - 1)]
    work()
    for f in helping:
        if not f.cancel():
            f.result()
    return results  # type: ignore[return-value]  # every slot was filled


class ChunkSource:
    """Verified chunks by id: from the cache, else from the store's packs."""

    def __init__(
        self,
        store: Store,
        cache: ChunkCache | None = None,
        workers: int = 8,
        verify_threads: int = VERIFY_THREADS,
    ) -> None:
        self.store = store
        self.cache = cache
        self.workers = workers
        self.verify_threads = verify_threads
        self.bytes_fetched = 0
        self.requests = 0
        # Fetches already on their way for these ids (an order prefetch, vfs.api.order):
        # fetch() waits for them rather than asking the store a second time.
        self.in_flight: Callable[[Iterable[bytes]], list[Future[object]]] | None = None
        self.relocations = 0  # times fetch found a pack gone and placed chunks again
        # Chunks this process read lately, by id, weighed by their length: the page
        # cache of a reader that is not a mount (vfs.api gives one per process). A
        # chunk id is its content's hash, so one memory serves every version.
        self.memory: LRU | None = None

    def fetch_span(
        self, span: Span, cache: bool = True, optional: Container[bytes] = ()
    ) -> dict[bytes, fmt.ChunkBytes]:
        """One ranged GET; every chunk in it verified, cached and returned. A chunk
        of `optional` (fetched beside the wanted ones: a pack window) that fails
        verification is left out instead of failing the span: its place came from
        a pack index, not from the version's own locations.

        Raw chunks come back as read-only views of the GET's one buffer, not
        copies: each keeps the whole span's buffer alive while it is held."""
        data = self.store.read_pack_range(span.pack, span.start, span.end - span.start)
        self.requests += 1
        self.bytes_fetched += len(data)
        out = self.decode_span(span, data, optional, self.verify_threads)
        if cache and self.cache is not None:
            self.cache.put_many(out)
        return out

    def decode_span(
        self,
        span: Span,
        data: bytes | memoryview,
        optional: Container[bytes] = (),
        threads: int = 1,
    ) -> dict[bytes, fmt.ChunkBytes]:
        """The chunks of `span` out of `data`, its GET's answer (checked for length),
        each verified, on this thread and up to `threads` - 1 helpers; as fetch_span
        says for `optional`. Raises CorruptObject."""
        view = memoryview(data)
        todo: list[tuple[Wanted, bytes | memoryview]] = []
        seen: set[bytes] = set()
        for w in span.items:
            if w.ref.id in seen:
                continue
            seen.add(w.ref.id)
            lo = w.loc.offset - span.start
            # A chunk that is the whole answer (a readahead part of one chunk, a big
            # chunk) is the GET's own bytes object, not a view of it.
            whole = lo == 0 and w.loc.stored_length == len(data)
            todo.append((w, data if whole else view[lo : lo + w.loc.stored_length]))
        what = f"pack {span.pack.hex()[:16]}"

        def decode(job: tuple[Wanted, bytes | memoryview]) -> fmt.ChunkBytes | CorruptObject:
            w, stored = job
            try:
                return fmt.decode_chunk(stored, w.loc.codec, w.ref.length, w.ref.id, what)
            except CorruptObject as e:
                return e

        out: dict[bytes, fmt.ChunkBytes] = {}
        for (w, _), raw in zip(todo, _map_helped(decode, todo, threads), strict=True):
            if isinstance(raw, CorruptObject):
                if w.ref.id not in optional:
                    raise raw
                log.debug("left out a chunk fetched beside the wanted ones: %s", raw)
                continue
            out[w.ref.id] = raw
        return out

    def fetch(
        self, wanted: Iterable[Wanted], parallel: bool = False
    ) -> dict[bytes, fmt.ChunkBytes]:
        wanted = list(wanted)
        out: dict[bytes, fmt.ChunkBytes] = {}
        memory = self.memory
        if memory is not None:
            for w in wanted:
                hit = memory.get(w.ref.id)
                if hit is not None:
                    out[w.ref.id] = hit  # type: ignore[assignment]  # only chunk bytes go in
            if len(out) == len({w.ref.id for w in wanted}):
                return out
            wanted = [w for w in wanted if w.ref.id not in out]
        if self.cache is not None:
            out.update(self.cache.get_many(w.ref.id for w in wanted))
        missing: dict[bytes, Wanted] = {}
        for w in wanted:
            if w.ref.id not in out:
                missing.setdefault(w.ref.id, w)
        if missing and self.in_flight is not None and self.cache is not None:
            coming = self.in_flight(missing)
            if coming:
                wait_futures(coming)
                out.update(self.cache.get_many(missing))
                missing = {k: w for k, w in missing.items() if k not in out}
        try:
            self._fetch_spans(plan_ranges(missing.values()), parallel, out)
        except NotFound:
            # A pack is gone: gc repacked its live chunks elsewhere and rewrote the
            # leaves' locations. Ours may be old (memory, the machine's cache), so
            # fetch them again from the store, past every cache, and retry once.
            left = [w for cid, w in missing.items() if cid not in out]
            if not left or any(not w.leaf for w in left):
                raise
            self.relocations += 1
            fresh = {leaf: self.store.fetch_locs(leaf) for leaf in {w.leaf for w in left}}
            again = []
            for w in left:
                loc = fresh[w.leaf].get(w.ref.id)
                if loc is None:
                    raise CorruptObject(
                        f"locations of tree {w.leaf.hex()[:16]} do not place chunk "
                        f"{w.ref.id.hex()[:16]}"
                    ) from None
                again.append(Wanted(w.ref, loc, w.leaf))
            log.info("a pack is gone; placed %d chunks again from fresh locations", len(again))
            self._fetch_spans(plan_ranges(again), parallel, out)
        if memory is not None:
            for w in wanted:
                data = out[w.ref.id]
                # A view of a GET's buffer would keep the whole buffer alive: keep a copy.
                memory.put(w.ref.id, data if isinstance(data, bytes) else bytes(data))
        return out

    def _fetch_spans(
        self, spans: list[Span], parallel: bool, out: dict[bytes, fmt.ChunkBytes]
    ) -> None:
        if parallel and len(spans) > 1:
            with ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="vfs-fetch"
            ) as pool:
                for got in pool.map(self.fetch_span, spans):
                    out.update(got)
        else:
            for span in spans:
                out.update(self.fetch_span(span))


class Version:
    """One committed version of a dataset, read lazily."""

    def __init__(
        self,
        store: Store,
        dataset: str,
        commit_id: bytes,
        cache: ChunkCache | None = None,
        owns_store: bool = False,
    ) -> None:
        self.store = store
        self.dataset = dataset
        self.commit_id = commit_id
        self.commit = store.get_commit(commit_id)
        self.root = self.commit.tree
        self.chunks = ChunkSource(store, cache)
        self._owns_store = owns_store

    def __enter__(self) -> Version:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    @property
    def id(self) -> str:
        return self.commit_id.hex()

    def stat(self, path: str | bytes) -> tree.Found | None:
        """The entry at `path`; None for the root. Raises NotFound."""
        return tree.resolve(self.store, self.root, path)

    def _dir_id(self, path: str | bytes) -> bytes:
        found = self.stat(path)
        if found is None:
            return self.root
        if not found.entry.is_dir:
            raise UsageError(f"not a directory: {path!r}")
        return found.entry.tree

    def listdir(self, path: str | bytes = "") -> list[tree.Found]:
        return list(tree.DirView(self.store, self._dir_id(path)))

    def walk(self, path: str | bytes = "") -> Iterator[tuple[bytes, tree.Found]]:
        """Every entry below `path`, depth-first in name order, paths relative to it."""
        return tree.walk(self.store, self._dir_id(path))

    def wanted(self, found: tree.Found) -> list[Wanted]:
        """The chunks of a file with their locations, in file order."""
        return place(found, self.store.get_locs(found.leaf))

    def open(self, path: str | bytes) -> VersionFile:
        found = self.stat(path)
        if found is None or found.entry.is_dir:
            where = path if isinstance(path, str) else path.decode("utf-8", "surrogateescape")
            raise IsADirectory(f"is a directory: {path!r}", where)
        if found.entry.is_symlink:
            raise UsageError(
                f"is a symlink (to {found.entry.target.decode(errors='replace')}): {path!r}"
            )
        return VersionFile(self, found)

    def read_file(self, path: str | bytes) -> bytes:
        with self.open(path) as f:
            return f.read()


class VersionFile(io.RawIOBase):
    """A file of a version as a binary, seekable, read-only file object."""

    def __init__(self, version: Version, found: tree.Found) -> None:
        super().__init__()
        self.version = version
        self.entry = found.entry
        self.name = found.entry.name.decode("utf-8", "surrogateescape")
        self._found = found
        self._wanted = version.wanted(found)
        self._relocations = version.chunks.relocations
        self._ends = list(accumulate(c.length for c in found.entry.chunks))
        self._pos = 0
        self._held: dict[int, fmt.ChunkBytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.entry.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def _chunk(self, i: int) -> fmt.ChunkBytes:
        data = self._held.get(i)
        if data is None:
            # A reader moving forward gets the next few chunks in the same request.
            batch = self._wanted[i : i + 4]
            got = self.version.chunks.fetch(batch)
            if self.version.chunks.relocations != self._relocations:
                # The fetch found a pack gone and placed chunks again: the store now
                # holds the fresh locations in memory, so place the file by them.
                self._relocations = self.version.chunks.relocations
                self._wanted = self.version.wanted(self._found)
            self._held = {i + k: got[w.ref.id] for k, w in enumerate(batch)}
            data = self._held[i]
        return data

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        n = 0
        while n < len(view) and self._pos < self.entry.size:
            i = bisect_right(self._ends, self._pos)
            start = self._ends[i - 1] if i else 0
            data = self._chunk(i)
            lo = self._pos - start
            take = min(len(data) - lo, len(view) - n)
            view[n : n + take] = data[lo : lo + take]
            n += take
            self._pos += take
        return n


def open_version(
    spec: str, store: Store | str | None = None, cache: ChunkCache | None = None
) -> Version:
    """Open `dataset@ref` in a store (a Store, a URL, or the default store)."""
    owns = not isinstance(store, Store)
    st = store if isinstance(store, Store) else Store.open(store)
    try:
        st.check_config()
        r = refs.resolve(st, spec)
        return Version(st, r.spec.dataset, r.commit, cache, owns_store=owns)
    except BaseException:
        if owns:
            st.close()
        raise


__all__ = [
    "ChunkSource",
    "NotFound",
    "Version",
    "VersionFile",
    "Wanted",
    "open_version",
    "plan_ranges",
]
