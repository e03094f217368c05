"""The filesystem core of `vfs mount`: inodes, directories, versions and open files.

This module owns the namespace a mount shows, with no FUSE in sight: vfs/fuse.py
adapts it to pyfuse3, and tests drive it directly. It owns
- the inode table (vfs/inodes.py): a compact record per inode the kernel knows
  (where its entry is, not the entry), dropped when the kernel forgets it and no
  handle holds it. Entries are decoded again from their leaf pages when asked for;
  the store keeps recent pages in memory, bounded in bytes, so a mount's memory does
  not grow with the version's size;
- directories, read lazily page by page from their tree objects. Listing a directory
  reads its subdirectories' top pages in the background, for the `find` that comes
  next;
- the versions shown: one version at the root (`vfs mount DS@REF`), which `switch`
  replaces, or every version as `@REF` directories under the root (`vfs mount DS`);
- open files: each keeps the version it was opened in, its chunk list and its
  readahead state; the bytes come from vfs.prefetch.ChunkFetcher.

Inode numbers are stable: a hash of the parent's inode, the name and the entry's
canonical bytes (mode, mtime, size, chunk list or tree id). The same path shows the
same inode for as long as its content is the same: across forgets, remounts and
switches. A changed file gets a new inode, so the kernel never serves a page it
cached for older bytes, and `keep_cache` and long timeouts are safe. A hash that
collides with a live node of another identity moves to the next free number.

Errors are vfs.errors exceptions and the few below; vfs/fuse.py maps them to errno
values in one table.

Concurrency: every method runs on the trio thread, so the tables (the inode table,
`_files`, `_dirs`) change only between awaits and need no lock. Store reads (tree
pages, locations, refs, commits) and cache queries run in worker threads behind
`meta_limiter` (`warm_limiter` for reading ahead); those threads get values and
return values and never touch the tables. Record numbers are reused once a record
is removed, so code holds inode numbers across an await and finds their records
again after it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import stat
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, TypeVar

import blake3
import trio
import xxhash

from vfs import format as fmt
from vfs import refs
from vfs.errors import AmbiguousRef, NotFound, UsageError, VfsError
from vfs.inodes import NO_PAGE, NO_VIEW, InodeTable
from vfs.prefetch import ChunkFetcher, FetchConfig, FetchError, Readahead
from vfs.reader import Version, Wanted, place
from vfs.store import HEADS, LRU, TAGS, Store
from vfs.tree import MAX_DEPTH, Found

log = logging.getLogger(__name__)

ROOT = 1
_REFS_ROOT = 255  # the inode kind of the `@REF` listing root of a multi-version mount
# Names under the root answered "no such file" and cached by the kernel; a switch
# invalidates them. Past this many, root misses are not cached at all.
_MAX_ROOT_NEGATIVES = 65536
_T = TypeVar("_T")


class NotADirectory(VfsError):
    """ENOTDIR."""


class IsADirectory(VfsError):
    """EISDIR."""


class InvalidArgument(VfsError):
    """EINVAL: readlink of a non-symlink and the like."""


class ReadOnly(VfsError):
    """EROFS: every version is immutable."""


class NoAttribute(VfsError):
    """ENODATA: no such extended attribute."""


class BadHandle(VfsError):
    """EBADF: a file or directory handle this mount never gave out."""


@dataclass(frozen=True)
class CoreConfig:
    entry_ttl: float = 86400.0  # versions are immutable: the kernel may keep what it saw
    ref_ttl: float = 5.0  # `@branch` entries of a multi-version root move
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    meta_threads: int = 8


@dataclass(frozen=True, slots=True)
class Attr:
    """What stat shows for an inode; ino 0 is a cached "no such entry"."""

    ino: int
    mode: int
    nlink: int
    size: int
    mtime_ns: int
    uid: int
    gid: int
    ttl: float

    @property
    def blocks(self) -> int:
        return (self.size + 511) // 512


@dataclass(frozen=True)
class FsStats:
    blocks: int
    files: int
    block_size: int = 4096
    name_max: int = fmt.MAX_NAME_LEN


@dataclass(frozen=True)
class SwitchResult:
    old: bytes
    new: bytes
    seconds: float
    invalidate: list[bytes]  # names under the root whose kernel entries are now stale


@dataclass(frozen=True)
class View:
    """One version as the mount shows it."""

    version: Version
    label: str  # the spec as the user wrote it, e.g. ds@v3
    mtime_ns: int

    @property
    def commit(self) -> bytes:
        return self.version.commit_id


class _Dir:
    """What is known of one directory's pages: its top page and, once listed, its
    leaves as (first index, leaf id). `unchecked` holds, by position in `leaves`,
    what a leaf not yet read must be checked against when it is: (its index page,
    its position there, upper bound). The pages themselves live in the store's
    page cache."""

    __slots__ = ("leaves", "top", "unchecked")

    def __init__(self, top: bytes) -> None:
        self.top = top
        self.leaves: list[tuple[int, bytes]] | None = None
        self.unchecked: dict[int, tuple[fmt.TreePage, int, bytes | None]] = {}


class _Layout:
    """Where a file's bytes are: its entry, its chunks placed in packs, and the end
    offset of each chunk. Immutable, like the leaf page it comes from."""

    __slots__ = ("ends", "entry", "wanted")

    def __init__(self, entry: fmt.Entry, wanted: list[Wanted]) -> None:
        self.entry = entry
        self.wanted = wanted
        ends, pos = [], 0
        for w in wanted:
            pos += w.ref.length
            ends.append(pos)
        self.ends = ends


def _layout_weight(v: object) -> int:
    return len(v.wanted) + 1 if isinstance(v, _Layout) else 1


class _File:
    """An open file. Its layout is fixed at open: a switch does not change what an
    open file reads."""

    __slots__ = ("ino", "layout", "readahead")

    def __init__(self, ino: int, layout: _Layout, ra: Readahead) -> None:
        self.ino = ino
        self.layout = layout
        self.readahead = ra


class _DirHandle:
    __slots__ = ("ino", "refs")

    def __init__(self, ino: int, refs: list[tuple[bytes, bytes]] | None) -> None:
        self.ino = ino
        self.refs = refs  # the @REF root's listing, fixed at opendir


def _ns(rfc3339: str) -> int:
    try:
        t = dt.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return 0
    return int(t.timestamp()) * 1_000_000_000


_S_IFMT = {fmt.FILE: stat.S_IFREG, fmt.DIR: stat.S_IFDIR, fmt.SYMLINK: stat.S_IFLNK}
# Subdirectory pages being read ahead of `find` and `ls -R`, at most; past it a
# listing asks for no more.
_MAX_WARMING = 256
# Fetched tree pages waiting to be written to the chunk cache, at most: `find` over a
# million files fetches pages faster than one writer stores them.
_PAGE_QUEUE_BYTES = 8 << 20
# The layouts of files opened lately (FsCore._layout), weighed by chunk: about 100
# bytes each once placed, so this holds ~3 MB, or 16,000 small files.
LAYOUT_CACHE_CHUNKS = 32 * 1024


class FsCore:
    """A mounted dataset: a single version (`DS@REF`) or all of them (`DS`)."""

    def __init__(
        self,
        store: Store,
        dataset: str,
        fetcher: ChunkFetcher,
        config: CoreConfig,
        view: View | None,
        nursery: trio.Nursery,
    ) -> None:
        self.store = store
        self.dataset = dataset
        self.fetcher = fetcher
        self.config = config
        self.multi = view is None
        self.meta_limiter = trio.CapacityLimiter(config.meta_threads)
        # Reading ahead gets threads of its own, so that it never queues a lookup.
        self.warm_limiter = trio.CapacityLimiter(max(1, config.meta_threads // 2))
        self.mounted_ns = time.time_ns()
        self.extra_xattrs: dict[bytes, bytes] = {}  # root diagnostics the mount adds
        self._nursery = nursery
        self._table = InodeTable()
        self._dirs: dict[int, _Dir] = {}  # by inode: directories looked into
        self._names: dict[int, bytes] = {}  # by inode: names of the root's children
        self._ref_commits: dict[int, bytes] = {}  # by inode: the version of an @REF dir
        self._files: dict[int, _File] = {}
        self._layouts = LRU(LAYOUT_CACHE_CHUNKS, weigh=_layout_weight)
        self._handles: dict[int, _DirHandle] = {}
        self._next_fh = 1
        self._views: list[View] = []
        self._view_index: dict[bytes, int] = {}
        self._root_names: Counter[bytes] = Counter()
        self._root_negative: set[bytes] = set()
        self._refs_cache: tuple[float, list[tuple[bytes, bytes]]] | None = None
        self._loading: dict[bytes, trio.Event] = {}  # page id -> set when its read ends
        self._warming = 0
        self._to_cache: dict[bytes, bytes] = {}  # fetched pages not yet in the chunk cache
        self._to_cache_bytes = 0
        self._writing_pages = False
        r = self._table.add_special(ROOT, b"\0" * 16)
        self._table.parent[r] = ROOT
        self._table.kind[r] = _REFS_ROOT if view is None else fmt.DIR
        self._table.lookups[r] = 1
        if view is not None:
            self._table.view[r] = self._add_view(view)
            self._dirs[ROOT] = _Dir(view.version.root)

    @classmethod
    async def create(
        cls,
        store: Store,
        target: str,
        *,
        nursery: trio.Nursery,
        cache: Any = None,
        config: CoreConfig | None = None,
        fetch: FetchConfig | None = None,
    ) -> FsCore:
        """`DS@REF` mounts that version, `DS` every version. Reads the commit and the
        root page (or only checks that the dataset exists): O(1) in the version's size."""
        config = config or CoreConfig()
        fetcher = ChunkFetcher(store, cache, nursery, fetch)
        spec = refs.parse_spec(target)
        if "@" not in target:
            if not await trio.to_thread.run_sync(store.dataset_exists, spec.dataset):
                raise NotFound(f"no dataset {spec.dataset!r} in {store.url}")
            return cls(store, spec.dataset, fetcher, config, None, nursery)
        view = await trio.to_thread.run_sync(_load_view, store, spec)
        return cls(store, spec.dataset, fetcher, config, view, nursery)

    # -- the namespace -------------------------------------------------------------

    async def getattr(self, ino: int) -> Attr:
        entry = await self._entry(ino)
        return self._attr(self._rec(ino), entry)

    async def lookup(self, parent_ino: int, name: bytes) -> Attr:
        """The child `name` of a directory, counted as one kernel lookup; ino 0 if
        there is no such entry (the kernel caches that for Attr.ttl)."""
        t = self._table
        pr = self._rec(parent_ino)
        entry: fmt.Entry | None = None
        if name == b"." or name == b"..":
            ino = parent_ino if name == b"." else self._up(parent_ino)
            entry = await self._entry(ino)
            r = self._rec(ino)
        elif t.kind[pr] == _REFS_ROOT:
            found_ref = await self._resolve_ref_name(name)
            if found_ref is None:
                return self._negative(parent_ino, name)
            r = self._ref_dir(name, found_ref)
        else:
            if t.kind[pr] != fmt.DIR:
                raise NotADirectory(f"inode {parent_ino} is not a directory")
            found = await self._dir_lookup(parent_ino, name)
            if found is None:
                return self._negative(parent_ino, name)
            page, i = found
            entry = page.entry(i)
            r = self._child(parent_ino, page, i, entry)
        t.looked_up(r)
        return self._attr(r, entry)

    def forget(self, items: Iterable[tuple[int, int]]) -> None:
        t = self._table
        for ino, n in items:
            r = t.find(ino)
            if r >= 0 and ino != ROOT:
                t.forgotten(r, n)
                self._maybe_drop(r)

    async def readlink(self, ino: int) -> bytes:
        entry = await self._entry(ino)
        if entry is None or not entry.is_symlink:
            raise InvalidArgument(f"inode {ino} is not a symlink")
        return entry.target

    async def opendir(self, ino: int) -> int:
        kind = self._table.kind[self._rec(ino)]
        listing = None
        if kind == _REFS_ROOT:
            listing = await self._list_refs()
        elif kind != fmt.DIR:
            raise NotADirectory(f"inode {ino} is not a directory")
        fh = self._new_fh()
        self._handles[fh] = _DirHandle(ino, listing)
        self._table.opens[self._rec(ino)] += 1
        return fh

    async def readdir(self, fh: int, start: int, reply: Callable[[bytes, Attr, int], bool]) -> None:
        """Entries from position `start` (0 and 1 are '.' and '..'). `reply(name,
        attr, next)` returns False when the kernel's buffer is full; an entry it
        accepted counts as one lookup, except '.' and '..'."""
        h = self._handles.get(fh)
        if h is None:
            raise BadHandle(f"no open directory {fh}")
        ino = h.ino
        if start == 0 and not reply(b".", await self.getattr(ino), 1):
            return
        if start <= 1 and not reply(b"..", await self.getattr(self._up(ino)), 2):
            return
        k = max(start - 2, 0)
        if h.refs is not None:
            for i in range(k, len(h.refs)):
                name, commit = h.refs[i]
                if not self._offer(self._ref_dir(name, commit), None, name, reply, 3 + i):
                    return
            return
        leaves = await self._leaves(ino)
        starts = [s for s, _ in leaves]
        li = bisect_right(starts, k) - 1
        while 0 <= li < len(leaves):
            first, leaf_id = leaves[li]
            page = await self._leaf(ino, li, leaf_id)
            begin = max(k - first, 0)
            if begin == 0:
                self._warm_subdirs(page)
            for i in range(begin, page.count):
                entry = page.entry(i)
                r = self._child(ino, page, i, entry)
                if not self._offer(r, entry, entry.name, reply, 3 + first + i):
                    return
            li += 1

    def releasedir(self, fh: int) -> None:
        h = self._handles.pop(fh, None)
        if h is not None:
            self._release(h.ino)

    async def open(self, ino: int, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise ReadOnly("a mounted version is read-only")
        t = self._table
        r = self._rec(ino)
        leaf = t.leaf_id(r)
        if leaf is None or t.kind[r] == fmt.DIR:
            raise IsADirectory(f"inode {ino} is a directory")
        if t.kind[r] != fmt.FILE:
            raise InvalidArgument(f"inode {ino} is not a regular file")
        view = self._views[t.view[r]]
        layout = await self._layout(leaf, t.pos[r], view)
        fh = self._new_fh()
        self._files[fh] = _File(ino, layout, Readahead(self.fetcher.config))
        t.opens[self._rec(ino)] += 1
        return fh

    async def _layout(self, leaf: bytes, pos: int, view: View) -> _Layout:
        """Entry `pos` of leaf page `leaf`, placed. Warm reads of small files are an
        open and a release each (the kernel has the bytes), so a file opened again
        reuses its layout, and with the locations in memory no worker thread is
        involved. (Decoding and placing the entry was half of what vfs added to a
        warm small-file read over a bare passthrough.)"""
        key = leaf + pos.to_bytes(4, "little")
        hit = self._layouts.get(key)
        if hit is not None:
            return hit  # type: ignore[return-value]
        page = await self._page(leaf)
        found = Found(page.entry(pos), leaf)
        locs = self.store.cached_locs(leaf)
        if locs is not None:
            wanted = place(found, locs)
        else:
            wanted = await self._meta(view.version.wanted, found)
        layout = _Layout(found.entry, wanted)
        self._layouts.put(key, layout)
        return layout

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        return b"".join(await self.read_parts(fh, offset, size))

    async def read_parts(self, fh: int, offset: int, size: int) -> list[memoryview]:
        """The bytes of read(), as views of the chunks that hold them, in order."""
        f = self._files.get(fh)
        if f is None:
            raise BadHandle(f"no open file {fh}")
        lay = f.layout
        total = lay.entry.size
        end = min(offset + size, total)
        if offset >= end:
            return []
        first = bisect_right(lay.ends, offset)
        last = bisect_left(lay.ends, end)  # the chunk holding byte end-1
        ahead: list[Wanted] = []
        window = f.readahead.advise(offset, end, total)
        if window is not None:
            lo = bisect_right(lay.ends, window[0])
            hi = bisect_left(lay.ends, window[1])
            ahead = lay.wanted[max(lo, last + 1) : hi + 1]
        got = await self.fetcher.get(lay.wanted[first : last + 1], ahead)
        parts = []
        for i in range(first, last + 1):
            data = got[lay.wanted[i].ref.id]
            base = lay.ends[i] - len(data)
            parts.append(memoryview(data)[max(offset - base, 0) : end - base])
        return parts

    def release(self, fh: int) -> None:
        f = self._files.pop(fh, None)
        if f is not None:
            self._release(f.ino)

    def statfs(self) -> FsStats:
        view = self.current
        if view is None:
            return FsStats(blocks=0, files=0)
        c = view.version.commit
        return FsStats(blocks=(c.bytes + 4095) // 4096, files=c.files)

    # -- diagnostics ---------------------------------------------------------------

    def listxattr(self, ino: int) -> list[bytes]:
        t = self._table
        r = self._rec(ino)
        names = [b"user.vfs.dataset"]
        if t.view[r] != NO_VIEW or ino in self._ref_commits:
            names += [b"user.vfs.version", b"user.vfs.ref"]
        if t.leaf[r] != NO_PAGE and t.kind[r] == fmt.FILE:
            names += [b"user.vfs.content_id", b"user.vfs.chunks", b"user.vfs.cached_bytes"]
        if ino == ROOT:
            names += [b"user.vfs.stats", *self.extra_xattrs]
        return names

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        if name not in self.listxattr(ino):
            raise NoAttribute(f"no attribute {name!r}")
        t = self._table
        r = self._rec(ino)
        view = self._view(r)
        if name == b"user.vfs.dataset":
            return self.dataset.encode()
        if name == b"user.vfs.version":
            return (view.commit if view is not None else self._ref_commits[ino]).hex().encode()
        if name == b"user.vfs.ref":
            if view is None or (t.leaf[r] == NO_PAGE and ino != ROOT):  # an @REF directory
                return f"{self.dataset}{self._names[ino].decode()}".encode()
            return view.label.encode()
        if name == b"user.vfs.stats":
            return json.dumps(self.stats(), sort_keys=True).encode()
        if name in self.extra_xattrs:
            return self.extra_xattrs[name]
        e = await self._entry(ino)
        assert e is not None
        if name == b"user.vfs.content_id":
            return content_id(e).hex().encode()
        if name == b"user.vfs.chunks":
            return str(len(e.chunks)).encode()
        return str(await self._cached_bytes(e)).encode()

    def stats(self) -> dict[str, Any]:
        return {
            **asdict(self.fetcher.stats),
            "inodes": len(self._table),
            "inode_table_bytes": self._table.nbytes(),
            "open_files": len(self._files),
            "budget_used": self.fetcher.budget.used,
        }

    # -- switching -----------------------------------------------------------------

    async def switch(self, ref: str) -> SwitchResult:
        """Show another version at the root. New lookups see it; open files keep
        reading theirs. `ref` is REF, @REF or DATASET@REF."""
        if self.multi:
            raise UsageError(
                f"this mount shows every version of {self.dataset} as @REF directories; "
                "switch applies to DATASET@REF mounts"
            )
        t0 = time.monotonic()
        text = ref if "@" in ref[1:] else f"{self.dataset}@{ref.lstrip('@')}"
        spec = refs.parse_spec(text)
        if spec.dataset != self.dataset:
            raise UsageError(f"this mount shows {self.dataset}, not {spec.dataset}")
        view = await self._meta(_load_view, self.store, spec)
        # From here to the return there is no await: the switch is atomic for lookups.
        r = self._rec(ROOT)
        old = self._views[self._table.view[r]].commit
        self._table.view[r] = self._add_view(view)
        self._dirs[ROOT] = _Dir(view.version.root)
        stale = sorted(set(self._root_names) | self._root_negative)
        self._root_negative.clear()
        log.info("switched from %s to %s (%s)", old.hex()[:12], view.commit.hex()[:12], view.label)
        return SwitchResult(old, view.commit, time.monotonic() - t0, stale)

    @property
    def current(self) -> View | None:
        return self._view(self._rec(ROOT))

    # -- internals -----------------------------------------------------------------

    def _rec(self, ino: int) -> int:
        r = self._table.find(ino)
        if r < 0:
            raise NotFound(f"no inode {ino} (forgotten)")
        return r

    def _up(self, ino: int) -> int:
        """A directory's parent: itself for the root, or if the kernel forgot it."""
        up = self._table.parent[self._rec(ino)]
        return up if self._table.find(up) >= 0 else ino

    def _view(self, r: int) -> View | None:
        i = self._table.view[r]
        return None if i == NO_VIEW else self._views[i]

    def _add_view(self, view: View) -> int:
        i = self._view_index.get(view.commit)
        if i is None:
            i = self._view_index[view.commit] = len(self._views)
            self._views.append(view)
        return i

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    async def _meta(
        self, fn: Callable[..., _T], *args: Any, limiter: trio.CapacityLimiter | None = None
    ) -> _T:
        """A store read in a worker thread, bounded by the read timeout."""
        timeout = self.fetcher.config.read_timeout
        with trio.move_on_after(timeout) as scope:
            return await trio.to_thread.run_sync(
                partial(fn, *args), limiter=limiter or self.meta_limiter, abandon_on_cancel=True
            )
        assert scope.cancelled_caught
        raise FetchError(f"the store did not answer within the read timeout of {timeout:g} s")

    async def _entry(self, ino: int) -> fmt.Entry | None:
        """The entry of an inode, decoded again from its leaf page; None for a
        version root, the @REF root and @REF directories."""
        r = self._rec(ino)
        leaf = self._table.leaf_id(r)
        if leaf is None:
            return None
        pos = self._table.pos[r]
        page = await self._page(leaf)
        return page.entry(pos)

    def _attr(self, r: int, e: fmt.Entry | None) -> Attr:
        cfg = self.config
        t = self._table
        ttl = cfg.ref_ttl if t.parent[r] == ROOT and self.multi else cfg.entry_ttl
        if e is None:  # a version root, the @REF root or an @REF directory
            view = self._view(r)
            mtime = view.mtime_ns if view is not None and not self.multi else self.mounted_ns
            return Attr(t.ino[r], stat.S_IFDIR | 0o755, 1, 0, mtime, cfg.uid, cfg.gid, ttl)
        # Only permission bits: setuid, setgid and sticky are stripped.
        perm = 0o777 if e.is_symlink else e.mode & 0o777
        size = 0 if e.is_dir else e.size
        return Attr(t.ino[r], _S_IFMT[e.kind] | perm, 1, size, e.mtime_ns, cfg.uid, cfg.gid, ttl)

    def _negative(self, parent_ino: int, name: bytes) -> Attr:
        multi_root = self._table.kind[self._rec(parent_ino)] == _REFS_ROOT
        ttl = self.config.ref_ttl if multi_root else self.config.entry_ttl
        if parent_ino == ROOT and not self.multi:
            if len(self._root_negative) >= _MAX_ROOT_NEGATIVES:
                ttl = 0.0  # cannot remember it for a switch: do not let the kernel cache it
            else:
                self._root_negative.add(name)
        return Attr(0, 0, 0, 0, 0, 0, 0, ttl)

    def _intern(self, parent_ino: int, name: bytes, identity: bytes | memoryview) -> int:
        """The record for (parent, identity), existing or new (lookups 0)."""
        key = xxhash.xxh3_128_digest(parent_ino.to_bytes(8, "little") + identity)
        r, new = self._table.intern(key)
        if new:
            self._table.parent[r] = parent_ino
            if parent_ino == ROOT:
                ino = self._table.ino[r]
                self._names[ino] = name
                self._root_names[name] += 1
        return r

    def _child(self, parent_ino: int, page: fmt.TreePage, i: int, entry: fmt.Entry) -> int:
        """The record of entry i of a leaf page in directory `parent_ino`. No await
        may come between this and the caller's use of the record."""
        t = self._table
        r = self._intern(parent_ino, entry.name, page.raw_entry(i))
        t.kind[r] = entry.kind
        t.set_leaf(r, page.id)
        t.pos[r] = i
        t.view[r] = t.view[self._rec(parent_ino)]
        return r

    def _ref_dir(self, name: bytes, commit: bytes) -> int:
        t = self._table
        r = self._intern(ROOT, name, b"@" + name + b"\0" + commit)
        t.kind[r] = fmt.DIR
        self._ref_commits[t.ino[r]] = commit
        if t.view[r] == NO_VIEW and commit in self._view_index:
            t.view[r] = self._view_index[commit]
        return r

    def _offer(
        self,
        r: int,
        entry: fmt.Entry | None,
        name: bytes,
        reply: Callable[[bytes, Attr, int], bool],
        nxt: int,
    ) -> bool:
        if not reply(name, self._attr(r, entry), nxt):
            self._maybe_drop(r)
            return False
        self._table.looked_up(r)
        return True

    def _release(self, ino: int) -> None:
        r = self._table.find(ino)
        if r >= 0:
            self._table.opens[r] -= 1
            self._maybe_drop(r)

    def _maybe_drop(self, r: int) -> None:
        t = self._table
        ino = t.ino[r]
        if t.lookups[r] > 0 or t.opens[r] > 0 or ino == ROOT:
            return
        t.remove(r)
        self._dirs.pop(ino, None)
        self._ref_commits.pop(ino, None)
        name = self._names.pop(ino, None)
        if name is not None:
            self._root_names[name] -= 1
            if self._root_names[name] <= 0:
                del self._root_names[name]

    async def _dir_of(self, ino: int) -> _Dir:
        """The directory of an inode, loaded lazily; an @REF directory opens its
        version (commit and root page) on first use."""
        d = self._dirs.get(ino)
        if d is not None:
            return d
        t = self._table
        entry = await self._entry(ino)
        if entry is not None:
            return self._dirs.setdefault(ino, _Dir(entry.tree))
        view = self._view(self._rec(ino))
        if view is None:
            name = self._names[ino]
            spec = refs.Spec(self.dataset, name[1:].decode(), explicit=True)
            loaded = await self._meta(_load_view, self.store, spec, self._ref_commits[ino])
            t.view[self._rec(ino)] = self._add_view(loaded)
            view = self._views[self._view_index[loaded.commit]]
        # Another task may have made it meanwhile.
        return self._dirs.setdefault(ino, _Dir(view.version.root))

    async def _page(self, page_id: bytes, limiter: trio.CapacityLimiter | None = None) -> fmt.TreePage:
        """A tree page from the store's page cache, or read once however many tasks
        ask for it at the same time."""
        while True:
            hit = self.store.cached_page(page_id)
            if hit is not None:
                return hit
            loading = self._loading.get(page_id)
            if loading is None:
                break
            await loading.wait()  # then look again: the read may have failed
        done = self._loading[page_id] = trio.Event()
        try:
            page, fetched = await self._meta(self.store.fetch_page, page_id, limiter=limiter)
        finally:
            del self._loading[page_id]
            done.set()
        if (
            fetched is not None
            and self.fetcher.cache is not None
            and self._to_cache_bytes + len(fetched) <= _PAGE_QUEUE_BYTES
        ):
            # Past the bound the page is not cached: a later reader fetches it again.
            self._to_cache[page_id] = fetched
            self._to_cache_bytes += len(fetched)
            if not self._writing_pages:
                self._writing_pages = True
                self._nursery.start_soon(self._write_pages)
        return page

    async def _write_pages(self) -> None:
        """Write fetched pages to the chunk cache, all that gathered meanwhile in one
        transaction (at most _PAGE_QUEUE_BYTES: the bound of what lies on disk above
        the cache cap, docs/reliability.md section 6, and of the memory they hold),
        until none is left. Never abandoned: a cache write in flight ends before the
        daemon closes the cache."""
        cache = self.fetcher.cache
        assert cache is not None
        try:
            while self._to_cache:
                batch, self._to_cache, self._to_cache_bytes = self._to_cache, {}, 0
                try:
                    await trio.to_thread.run_sync(cache.put_many, batch, limiter=self.warm_limiter)
                except Exception as e:  # the cache is an optimisation: pages stay readable
                    log.warning("could not write %d tree pages to the cache: %s", len(batch), e)
        finally:
            self._writing_pages = False

    def _warm_subdirs(self, page: fmt.TreePage) -> None:
        """Read the top pages of a leaf's subdirectories in the background: whoever
        lists a directory tends to descend into its subdirectories next (`find`,
        `ls -R`, `du`), and then finds their pages read."""
        for tree in page.subdir_trees():
            if self._warming >= _MAX_WARMING:
                return
            if tree not in self._loading and self.store.cached_page(tree) is None:
                self._warming += 1
                self._nursery.start_soon(self._warm, tree)

    async def _warm(self, page_id: bytes) -> None:
        try:
            await self._page(page_id, self.warm_limiter)
        except Exception as e:  # a guess that failed: the reader will ask again and see why
            log.debug("reading page %s ahead failed: %s", page_id.hex()[:16], e)
        finally:
            self._warming -= 1

    async def _dir_lookup(self, ino: int, name: bytes) -> tuple[fmt.TreePage, int] | None:
        d = await self._dir_of(ino)
        page = await self._page(d.top)
        upper: bytes | None = None
        for _ in range(MAX_DEPTH + 1):
            i = page.find(name)
            if page.kind == fmt.LEAF:
                return None if i < 0 else (page, i)
            if i < 0:
                return None
            child = await self._page(page.index_entry(i).page)
            upper = page.check_child(i, child, upper)
            page = child
        raise fmt.CorruptObject(f"tree {d.top.hex()[:16]}: index pages nest too deep")

    async def _leaves(self, ino: int) -> list[tuple[int, bytes]]:
        """The leaf pages of a directory with the index of their first entry, from
        the index pages and their counts: no leaf is read to list them. The index
        pages are checked against each other here, each leaf when it is loaded."""
        d = await self._dir_of(ino)
        if d.leaves is None:
            # (first entry, page id, (index page above, position there, upper bound))
            level: list[tuple[int, bytes, tuple[fmt.TreePage, int, bytes | None] | None]]
            level = [(0, d.top, None)]
            for _ in range(MAX_DEPTH + 1):
                top = await self._page(level[0][1])
                if top.kind == fmt.LEAF:
                    break
                nxt: list[tuple[int, bytes, tuple[fmt.TreePage, int, bytes | None] | None]] = []
                for start, pid, above in level:
                    page = await self._page(pid)
                    upper = above[0].check_child(above[1], page, above[2]) if above else None
                    if page.kind != fmt.INDEX:
                        raise fmt.CorruptObject(f"tree {d.top.hex()[:16]}: leaves at uneven depths")
                    for i, c in enumerate(page.children()):
                        nxt.append((start, c.page, (page, i, upper)))
                        start += c.count
                level = nxt
            else:
                raise fmt.CorruptObject(f"tree {d.top.hex()[:16]}: index pages nest too deep")
            d.unchecked = {li: above for li, (_, _, above) in enumerate(level) if above}
            d.leaves = [(start, pid) for start, pid, _ in level]
        return d.leaves

    async def _leaf(self, ino: int, li: int, leaf_id: bytes) -> fmt.TreePage:
        """Leaf `li` of a directory listed by _leaves, checked against its index page
        the first time it is read."""
        d = await self._dir_of(ino)
        page = await self._page(leaf_id)
        above = d.unchecked.get(li)
        if above is not None:
            if page.kind != fmt.LEAF:
                raise fmt.CorruptObject(f"tree {d.top.hex()[:16]}: leaves at uneven depths")
            above[0].check_child(above[1], page, above[2])
            del d.unchecked[li]
        return page

    async def _list_refs(self) -> list[tuple[bytes, bytes]]:
        now = time.monotonic()
        if self._refs_cache is None or now - self._refs_cache[0] > self.config.ref_ttl:
            listing = await self._meta(_ref_listing, self.store, self.dataset)
            self._refs_cache = (now, listing)
        return self._refs_cache[1]

    async def _resolve_ref_name(self, name: bytes) -> bytes | None:
        if not name.startswith(b"@") or len(name) < 2:
            return None
        try:
            text = name[1:].decode("ascii")
            r = await self._meta(refs.resolve, self.store, f"{self.dataset}@{text}")
        except (UnicodeDecodeError, NotFound, UsageError, AmbiguousRef) as e:
            log.debug("lookup of %r in the @REF root: %s", name, e)
            return None
        return r.commit

    async def _cached_bytes(self, e: fmt.Entry) -> int:
        cache = self.fetcher.cache

        def count() -> int:
            return sum(
                c.length
                for c in {c.id: c for c in e.chunks}.values()
                if cache is not None and cache.contains(c.id)
            )

        return await self._meta(count)


def content_id(e: fmt.Entry) -> bytes:
    """A file's content id: BLAKE3 of its chunk ids in order. Equal bytes, equal id."""
    h = blake3.blake3()
    for c in e.chunks:
        h.update(c.id)
    return h.digest()


def _load_view(store: Store, spec: refs.Spec, commit: bytes = b"") -> View:
    """Worker thread: resolve a spec (unless its commit is known), read the commit
    and the root page (into the store's page cache: a version whose root cannot be
    read fails here, not at the first lookup)."""
    if not commit:
        commit = refs.resolve(store, spec).commit
    version = Version(store, spec.dataset, commit)
    store.get_page(version.root)
    return View(version, str(spec), _ns(version.commit.time))


def _ref_listing(store: Store, dataset: str) -> list[tuple[bytes, bytes]]:
    """Worker thread: `@name` -> commit for every branch and tag; a branch wins a
    name it shares with a tag, as in refs.resolve."""
    out: dict[bytes, bytes] = {}
    for kind in (TAGS, HEADS):
        for name, commit in store.refs(dataset, kind).items():
            out[b"@" + name.encode()] = commit
    return sorted(out.items())
