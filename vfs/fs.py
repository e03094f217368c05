"""The filesystem core of `vfs mount`: inodes, directories, versions and open files.

This module owns the namespace a mount shows, with no FUSE in sight: vfs/fuse.py
adapts it to pyfuse3, and tests drive it directly. It owns
- the inode table: a Node per name the kernel knows, dropped when the kernel forgets
  it and no handle holds it;
- directories, loaded lazily page by page from their tree objects and kept with their
  Node, so `lookup` and `getattr` never touch the network once a directory is loaded;
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

Concurrency: every method runs on the trio thread, so the tables (`_nodes`,
`_files`, `_dirs`, the per-directory pages) change only between awaits and need no
lock. Store reads (tree pages, locations, refs, commits) and cache queries run in
worker threads behind `meta_limiter`; those threads get values and return values and
never touch the tables. A lookup that awaits a page re-reads the table after the
await, since another task may have added the same node meanwhile.
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
from vfs.prefetch import ChunkFetcher, FetchConfig, FetchError, Readahead
from vfs.reader import Version, Wanted
from vfs.store import HEADS, TAGS, Store
from vfs.tree import MAX_DEPTH, Found

log = logging.getLogger(__name__)

ROOT = 1
_REFS_ROOT = -1  # Node.kind of the `@REF` listing root of a multi-version mount
_INO_MASK = (1 << 63) - 1
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
    """The pages of one directory loaded so far; `leaves` are (first index, leaf id).
    `unchecked` holds, by position in `leaves`, what a leaf not yet loaded must be
    checked against when it is: (its index page, its position there, upper bound)."""

    __slots__ = ("leaves", "pages", "top", "unchecked")

    def __init__(self, top: bytes) -> None:
        self.top = top
        self.pages: dict[bytes, fmt.TreePage] = {}
        self.leaves: list[tuple[int, bytes]] | None = None
        self.unchecked: dict[int, tuple[fmt.TreePage, int, bytes | None]] = {}


class Node:
    __slots__ = (
        "commit",
        "dir",
        "entry",
        "ino",
        "key",
        "kind",
        "leaf",
        "lookups",
        "name",
        "opens",
        "parent",
        "view",
        "wanted",
    )

    def __init__(self, ino: int, parent: int, name: bytes, kind: int, key: bytes) -> None:
        self.ino = ino
        self.parent = parent
        self.name = name
        self.kind = kind
        self.key = key
        self.entry: fmt.Entry | None = None  # None: a version root (or the @REF root)
        self.leaf = b""
        self.view: View | None = None  # None only for an @REF dir not yet opened
        self.commit = b""  # the version of an @REF dir
        self.dir: _Dir | None = None
        self.wanted: list[Wanted] | None = None
        self.lookups = 0
        self.opens = 0


class _File:
    __slots__ = ("ends", "entry", "node", "readahead", "view", "wanted")

    def __init__(self, node: Node, view: View, wanted: list[Wanted], ra: Readahead) -> None:
        assert node.entry is not None
        self.node = node
        self.view = view  # kept: a switch does not change what an open file reads
        self.entry = node.entry
        self.wanted = wanted
        ends, pos = [], 0
        for w in wanted:
            pos += w.ref.length
            ends.append(pos)
        self.ends = ends
        self.readahead = ra


class _DirHandle:
    __slots__ = ("node", "refs")

    def __init__(self, node: Node, refs: list[tuple[bytes, bytes]] | None) -> None:
        self.node = node
        self.refs = refs  # the @REF root's listing, fixed at opendir


def _ns(rfc3339: str) -> int:
    try:
        t = dt.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return 0
    return int(t.timestamp()) * 1_000_000_000


class FsCore:
    """A mounted dataset: a single version (`DS@REF`) or all of them (`DS`)."""

    def __init__(
        self,
        store: Store,
        dataset: str,
        fetcher: ChunkFetcher,
        config: CoreConfig,
        view: View | None,
        root_page: fmt.TreePage | None,
    ) -> None:
        self.store = store
        self.dataset = dataset
        self.fetcher = fetcher
        self.config = config
        self.multi = view is None
        self.meta_limiter = trio.CapacityLimiter(config.meta_threads)
        self.mounted_ns = time.time_ns()
        self.extra_xattrs: dict[bytes, bytes] = {}  # root diagnostics the mount adds
        self._nodes: dict[int, Node] = {}
        self._files: dict[int, _File] = {}
        self._dirs: dict[int, _DirHandle] = {}
        self._next_fh = 1
        self._views: dict[bytes, View] = {}
        self._root_names: Counter[bytes] = Counter()
        self._root_negative: set[bytes] = set()
        self._refs_cache: tuple[float, list[tuple[bytes, bytes]]] | None = None
        root = Node(ROOT, ROOT, b"", _REFS_ROOT if view is None else fmt.DIR, b"")
        root.lookups = 1
        if view is not None:
            root.view = view
            root.dir = _Dir(view.version.root)
            assert root_page is not None
            root.dir.pages[root_page.id] = root_page
            self._views[view.commit] = view
        self._nodes[ROOT] = root

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
        if "@" not in target:
            spec = refs.parse_spec(target)
            if not await trio.to_thread.run_sync(store.dataset_exists, spec.dataset):
                raise NotFound(f"no dataset {spec.dataset!r} in {store.url}")
            return cls(store, spec.dataset, fetcher, config, None, None)
        spec = refs.parse_spec(target)
        view, page = await trio.to_thread.run_sync(_load_view, store, spec)
        return cls(store, spec.dataset, fetcher, config, view, page)

    # -- the namespace -------------------------------------------------------------

    def getattr(self, ino: int) -> Attr:
        return self._attr(self._node(ino))

    async def lookup(self, parent_ino: int, name: bytes) -> Attr:
        """The child `name` of a directory, counted as one kernel lookup; ino 0 if
        there is no such entry (the kernel caches that for Attr.ttl)."""
        parent = self._node(parent_ino)
        if name == b".":
            node = parent
        elif name == b"..":
            node = self._nodes.get(parent.parent, parent)
        elif parent.kind == _REFS_ROOT:
            found_ref = await self._resolve_ref_name(name)
            if found_ref is None:
                return self._negative(parent, name)
            node = self._ref_dir(name, found_ref)
        else:
            if parent.kind != fmt.DIR:
                raise NotADirectory(f"inode {parent_ino} is not a directory")
            found = await self._dir_lookup(parent, name)
            if found is None:
                return self._negative(parent, name)
            node = self._child(parent, found.entry, found.leaf)
        node.lookups += 1
        return self._attr(node)

    def forget(self, items: Iterable[tuple[int, int]]) -> None:
        for ino, n in items:
            node = self._nodes.get(ino)
            if node is not None and ino != ROOT:
                node.lookups -= n
                self._maybe_drop(node)

    def readlink(self, ino: int) -> bytes:
        node = self._node(ino)
        if node.entry is None or not node.entry.is_symlink:
            raise InvalidArgument(f"inode {ino} is not a symlink")
        return node.entry.target

    async def opendir(self, ino: int) -> int:
        node = self._node(ino)
        listing = None
        if node.kind == _REFS_ROOT:
            listing = await self._list_refs()
        elif node.kind != fmt.DIR:
            raise NotADirectory(f"inode {ino} is not a directory")
        fh = self._new_fh()
        self._dirs[fh] = _DirHandle(node, listing)
        node.opens += 1
        return fh

    async def readdir(self, fh: int, start: int, reply: Callable[[bytes, Attr, int], bool]) -> None:
        """Entries from position `start` (0 and 1 are '.' and '..'). `reply(name,
        attr, next)` returns False when the kernel's buffer is full; an entry it
        accepted counts as one lookup, except '.' and '..'."""
        h = self._dirs.get(fh)
        if h is None:
            raise BadHandle(f"no open directory {fh}")
        node = h.node
        if start == 0 and not reply(b".", self._attr(node), 1):
            return
        if start <= 1:
            up = self._nodes.get(node.parent, node)
            if not reply(b"..", self._attr(up), 2):
                return
        k = max(start - 2, 0)
        if h.refs is not None:
            for i in range(k, len(h.refs)):
                name, commit = h.refs[i]
                if not self._offer(self._ref_dir(name, commit), reply, 3 + i):
                    return
            return
        leaves = await self._leaves(node)
        starts = [s for s, _ in leaves]
        li = bisect_right(starts, k) - 1
        while 0 <= li < len(leaves):
            first, leaf_id = leaves[li]
            page = await self._leaf(node, li, leaf_id)
            for i in range(max(k - first, 0), page.count):
                child = self._child(node, page.entry(i), page.id)
                if not self._offer(child, reply, 3 + first + i):
                    return
            li += 1

    def releasedir(self, fh: int) -> None:
        h = self._dirs.pop(fh, None)
        if h is not None:
            h.node.opens -= 1
            self._maybe_drop(h.node)

    async def open(self, ino: int, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise ReadOnly("a mounted version is read-only")
        node = self._node(ino)
        if node.entry is None or node.entry.is_dir:
            raise IsADirectory(f"inode {ino} is a directory")
        if not node.entry.is_file:
            raise InvalidArgument(f"inode {ino} is not a regular file")
        view = node.view
        assert view is not None
        if node.wanted is None:
            found = Found(node.entry, node.leaf)
            node.wanted = await self._meta(view.version.wanted, found)
        fh = self._new_fh()
        self._files[fh] = _File(node, view, node.wanted, Readahead(self.fetcher.config))
        node.opens += 1
        return fh

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        f = self._files.get(fh)
        if f is None:
            raise BadHandle(f"no open file {fh}")
        total = f.entry.size
        end = min(offset + size, total)
        if offset >= end:
            return b""
        first = bisect_right(f.ends, offset)
        last = bisect_left(f.ends, end)  # the chunk holding byte end-1
        ahead: list[Wanted] = []
        window = f.readahead.advise(offset, end, total)
        if window is not None:
            lo = bisect_right(f.ends, window[0])
            hi = bisect_left(f.ends, window[1])
            ahead = f.wanted[max(lo, last + 1) : hi + 1]
        got = await self.fetcher.get(f.wanted[first : last + 1], ahead)
        parts = []
        for i in range(first, last + 1):
            data = got[f.wanted[i].ref.id]
            base = f.ends[i] - len(data)
            parts.append(memoryview(data)[max(offset - base, 0) : end - base])
        return b"".join(parts)

    def release(self, fh: int) -> None:
        f = self._files.pop(fh, None)
        if f is not None:
            f.node.opens -= 1
            self._maybe_drop(f.node)

    def statfs(self) -> FsStats:
        root = self._nodes[ROOT]
        if root.view is None:
            return FsStats(blocks=0, files=0)
        c = root.view.version.commit
        return FsStats(blocks=(c.bytes + 4095) // 4096, files=c.files)

    # -- diagnostics ---------------------------------------------------------------

    def listxattr(self, ino: int) -> list[bytes]:
        node = self._node(ino)
        names = [b"user.vfs.dataset"]
        if node.view is not None or node.commit:
            names += [b"user.vfs.version", b"user.vfs.ref"]
        if node.entry is not None and node.entry.is_file:
            names += [b"user.vfs.content_id", b"user.vfs.chunks", b"user.vfs.cached_bytes"]
        if ino == ROOT:
            names += [b"user.vfs.stats", *self.extra_xattrs]
        return names

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        node = self._node(ino)
        if name not in self.listxattr(ino):
            raise NoAttribute(f"no attribute {name!r}")
        if name == b"user.vfs.dataset":
            return self.dataset.encode()
        if name == b"user.vfs.version":
            return (node.view.commit if node.view is not None else node.commit).hex().encode()
        if name == b"user.vfs.ref":
            if node.view is None or (node.entry is None and node.ino != ROOT):
                return f"{self.dataset}{node.name.decode()}".encode()  # an @REF directory
            return node.view.label.encode()
        if name == b"user.vfs.stats":
            return json.dumps(self.stats(), sort_keys=True).encode()
        if name in self.extra_xattrs:
            return self.extra_xattrs[name]
        e = node.entry
        assert e is not None
        if name == b"user.vfs.content_id":
            return content_id(e).hex().encode()
        if name == b"user.vfs.chunks":
            return str(len(e.chunks)).encode()
        return str(await self._cached_bytes(e)).encode()

    def stats(self) -> dict[str, Any]:
        return {
            **asdict(self.fetcher.stats),
            "inodes": len(self._nodes),
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
        view, page = await self._meta(_load_view, self.store, spec)
        # From here to the return there is no await: the switch is atomic for lookups.
        root = self._nodes[ROOT]
        assert root.view is not None
        old = root.view.commit
        root.view = view
        root.dir = _Dir(view.version.root)
        root.dir.pages[page.id] = page
        self._views[view.commit] = view
        stale = sorted(set(self._root_names) | self._root_negative)
        self._root_negative.clear()
        log.info("switched from %s to %s (%s)", old.hex()[:12], view.commit.hex()[:12], view.label)
        return SwitchResult(old, view.commit, time.monotonic() - t0, stale)

    @property
    def current(self) -> View | None:
        return self._nodes[ROOT].view

    # -- internals -----------------------------------------------------------------

    def _node(self, ino: int) -> Node:
        node = self._nodes.get(ino)
        if node is None:
            raise NotFound(f"no inode {ino} (forgotten)")
        return node

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    async def _meta(self, fn: Callable[..., _T], *args: Any) -> _T:
        """A store read in a worker thread, bounded by the read timeout."""
        timeout = self.fetcher.config.read_timeout
        with trio.move_on_after(timeout) as scope:
            return await trio.to_thread.run_sync(
                partial(fn, *args), limiter=self.meta_limiter, abandon_on_cancel=True
            )
        assert scope.cancelled_caught
        raise FetchError(f"the store did not answer within the read timeout of {timeout:g} s")

    def _attr(self, node: Node) -> Attr:
        cfg = self.config
        e = node.entry
        ttl = cfg.ref_ttl if node.parent == ROOT and self.multi else cfg.entry_ttl
        if e is None:  # a version root or the @REF root
            view = node.view
            mtime = view.mtime_ns if view is not None and not self.multi else self.mounted_ns
            return Attr(node.ino, stat.S_IFDIR | 0o755, 1, 0, mtime, cfg.uid, cfg.gid, ttl)
        kind = {fmt.FILE: stat.S_IFREG, fmt.DIR: stat.S_IFDIR, fmt.SYMLINK: stat.S_IFLNK}[e.kind]
        # Only permission bits: setuid, setgid and sticky are stripped.
        perm = 0o777 if e.is_symlink else e.mode & 0o777
        size = 0 if e.is_dir else e.size
        return Attr(node.ino, kind | perm, 1, size, e.mtime_ns, cfg.uid, cfg.gid, ttl)

    def _negative(self, parent: Node, name: bytes) -> Attr:
        ttl = self.config.ref_ttl if parent.kind == _REFS_ROOT else self.config.entry_ttl
        if parent.ino == ROOT and not self.multi:
            if len(self._root_negative) >= _MAX_ROOT_NEGATIVES:
                ttl = 0.0  # cannot remember it for a switch: do not let the kernel cache it
            else:
                self._root_negative.add(name)
        return Attr(0, 0, 0, 0, 0, 0, 0, ttl)

    def _intern(self, parent: Node, name: bytes, kind: int, identity: bytes) -> Node:
        """The node for (parent, name, identity), existing or new (lookups 0)."""
        key = xxhash.xxh3_128_digest(parent.ino.to_bytes(8, "little") + identity)
        ino = int.from_bytes(key[:8], "little") & _INO_MASK
        while True:
            if ino <= ROOT:
                ino += 2
            node = self._nodes.get(ino)
            if node is None:
                node = self._nodes[ino] = Node(ino, parent.ino, name, kind, key)
                if parent.ino == ROOT:
                    self._root_names[name] += 1
                return node
            if node.key == key:
                return node
            ino = (ino + 1) & _INO_MASK  # a collision with another identity

    def _child(self, parent: Node, entry: fmt.Entry, leaf: bytes) -> Node:
        node = self._intern(parent, entry.name, entry.kind, fmt.encode_entry(entry))
        node.entry = entry
        node.leaf = leaf
        node.view = parent.view
        return node

    def _ref_dir(self, name: bytes, commit: bytes) -> Node:
        node = self._intern(self._nodes[ROOT], name, fmt.DIR, b"@" + name + b"\0" + commit)
        node.commit = commit
        if node.view is None:
            node.view = self._views.get(commit)
            if node.view is not None:
                node.dir = _Dir(node.view.version.root)
        return node

    def _offer(self, node: Node, reply: Callable[[bytes, Attr, int], bool], nxt: int) -> bool:
        if not reply(node.name, self._attr(node), nxt):
            self._maybe_drop(node)
            return False
        node.lookups += 1
        return True

    def _maybe_drop(self, node: Node) -> None:
        if node.lookups > 0 or node.opens > 0 or node.ino == ROOT:
            return
        if self._nodes.pop(node.ino, None) is not None and node.parent == ROOT:
            self._root_names[node.name] -= 1
            if self._root_names[node.name] <= 0:
                del self._root_names[node.name]

    async def _dir_of(self, node: Node) -> _Dir:
        """The directory of a node, loaded lazily; an @REF directory opens its
        version (commit and root page) on first use."""
        if node.dir is None:
            if node.entry is not None:
                node.dir = _Dir(node.entry.tree)
                return node.dir
            view = self._views.get(node.commit)
            if view is None:
                spec = refs.Spec(self.dataset, node.name[1:].decode(), explicit=True)
                loaded, _ = await self._meta(_load_view, self.store, spec, node.commit)
                view = self._views.setdefault(loaded.commit, loaded)
            node.view = view
            if node.dir is None:  # another task may have opened it meanwhile
                node.dir = _Dir(view.version.root)
        return node.dir

    async def _page(self, node: Node, page_id: bytes) -> fmt.TreePage:
        d = await self._dir_of(node)
        page = d.pages.get(page_id)
        if page is None:
            page = await self._meta(self.store.get_page, page_id)
            d.pages[page_id] = page
        return page

    async def _dir_lookup(self, node: Node, name: bytes) -> Found | None:
        d = await self._dir_of(node)
        page = await self._page(node, d.top)
        upper: bytes | None = None
        for _ in range(MAX_DEPTH + 1):
            i = page.find(name)
            if page.kind == fmt.LEAF:
                return None if i < 0 else Found(page.entry(i), page.id)
            if i < 0:
                return None
            child = await self._page(node, page.index_entry(i).page)
            upper = page.check_child(i, child, upper)
            page = child
        raise fmt.CorruptObject(f"tree {d.top.hex()[:16]}: index pages nest too deep")

    async def _leaves(self, node: Node) -> list[tuple[int, bytes]]:
        """The leaf pages of a directory with the index of their first entry, from
        the index pages and their counts: no leaf is read to list them. The index
        pages are checked against each other here, each leaf when it is loaded."""
        d = await self._dir_of(node)
        if d.leaves is None:
            # (first entry, page id, (index page above, position there, upper bound))
            level: list[tuple[int, bytes, tuple[fmt.TreePage, int, bytes | None] | None]]
            level = [(0, d.top, None)]
            for _ in range(MAX_DEPTH + 1):
                top = await self._page(node, level[0][1])
                if top.kind == fmt.LEAF:
                    break
                nxt: list[tuple[int, bytes, tuple[fmt.TreePage, int, bytes | None] | None]] = []
                for start, pid, above in level:
                    page = await self._page(node, pid)
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

    async def _leaf(self, node: Node, li: int, leaf_id: bytes) -> fmt.TreePage:
        """Leaf `li` of a directory listed by _leaves, checked against its index page
        the first time it is read."""
        d = await self._dir_of(node)
        page = await self._page(node, leaf_id)
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


def _load_view(store: Store, spec: refs.Spec, commit: bytes = b"") -> tuple[View, fmt.TreePage]:
    """Worker thread: resolve a spec (unless its commit is known), read the commit
    and the root page."""
    if not commit:
        commit = refs.resolve(store, spec).commit
    version = Version(store, spec.dataset, commit)
    page = store.get_page(version.root)
    return View(version, str(spec), _ns(version.commit.time)), page


def _ref_listing(store: Store, dataset: str) -> list[tuple[bytes, bytes]]:
    """Worker thread: `@name` -> commit for every branch and tag; a branch wins a
    name it shares with a tag, as in refs.resolve."""
    out: dict[bytes, bytes] = {}
    for kind in (TAGS, HEADS):
        for name, commit in store.refs(dataset, kind).items():
            out[b"@" + name.encode()] = commit
    return sorted(out.items())
