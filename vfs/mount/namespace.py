"""The namespace of a mount: inodes, directories, lookup and readdir.

This module owns what the kernel sees of the tree, with no FUSE in sight:
- the inode table (vfs/mount/inodes.py): a compact record per inode the kernel knows
  (where its entry is, not the entry), dropped when the kernel forgets it and no
  handle holds it. Entries are decoded again from their leaf pages when asked for;
  the store keeps recent pages in memory, bounded in bytes, so a mount's memory does
  not grow with the version's size;
- directories, read lazily page by page from their tree objects (the pages through
  the loader, the descent through vfs.tree.Descent). Listing a directory reads its
  subdirectories' top pages in the background, for the `find` that comes next;
- the root: the version it shows (`vfs mount DS@REF`; `show_root` replaces it on a
  switch) with the names under it the kernel has cached, found or not, or the `@REF`
  directories of every version (`vfs mount DS`);
- directory handles, and the handle numbers that open files share.

Inode numbers are stable: a hash of the parent's inode, the name and the entry's
canonical bytes (mode, mtime, size, chunk list or tree id). The same path shows the
same inode for as long as its content is the same: across forgets, remounts and
switches. A changed file gets a new inode, so the kernel never serves a page it
cached for older bytes, and `keep_cache` and long timeouts are safe. A hash that
collides with a live node of another identity moves to the next free number.

Concurrency: every method runs on the trio thread, so the tables (the inode table,
`dirs`, the root's names, the handles) change only between awaits and need no lock.
Store reads run in worker threads through the loader; those threads get values and
return values and never touch the tables. Record numbers are reused once a record is
removed, so code holds inode numbers across an await and finds their records again
after it.
"""

from __future__ import annotations

import os
import stat
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import xxhash

from vfs import format as fmt
from vfs import refs, tree
from vfs.errors import NotFound
from vfs.mount.errors import BadHandle, InvalidArgument, NotADirectory
from vfs.mount.inodes import NO_VIEW, InodeTable
from vfs.mount.loader import Loader
from vfs.mount.versions import Versions, View

ROOT = 1
REFS_ROOT = 255  # the inode kind of the `@REF` listing root of a multi-version mount
# Names under the root answered "no such file" and cached by the kernel; a switch
# invalidates them. Past this many, root misses are not cached at all.
_MAX_ROOT_NEGATIVES = 65536


@dataclass(frozen=True)
class CoreConfig:
    entry_ttl: float = 86400.0  # versions are immutable: the kernel may keep what it saw
    ref_ttl: float = 5.0  # `@branch` entries of a multi-version root move
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    meta_threads: int = 8
    # Serve the `user.vfs.*` extended attributes (`vfs mount --xattrs`). Off, every
    # getxattr and listxattr answers ENOSYS, which the kernel remembers for the
    # mount: `ls -l` then costs no request per entry (docs/semantics.md).
    xattrs: bool = False


class Attr(NamedTuple):
    """What stat shows for an inode; ino 0 is a cached "no such entry". A NamedTuple,
    not a frozen dataclass: readdir makes one per entry, and a frozen dataclass's
    __init__ (a setattr per field) cost a tenth of a listing's daemon CPU."""

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


class _DirHandle:
    __slots__ = ("ino", "refs")

    def __init__(self, ino: int, refs: list[tuple[bytes, bytes]] | None) -> None:
        self.ino = ino
        self.refs = refs  # the @REF root's listing, fixed at opendir


_S_IFMT = {fmt.FILE: stat.S_IFREG, fmt.DIR: stat.S_IFDIR, fmt.SYMLINK: stat.S_IFLNK}


class Namespace:
    """The inodes and directories of one mount, and its root."""

    def __init__(
        self,
        dataset: str,
        loader: Loader,
        versions: Versions,
        config: CoreConfig,
        view: View | None,
    ) -> None:
        self.dataset = dataset
        self.loader = loader
        self.versions = versions
        self.config = config
        self.multi = view is None
        self.mounted_ns = time.time_ns()
        self.table = InodeTable()
        self.dirs: dict[int, _Dir] = {}  # by inode: directories looked into
        self.names: dict[int, bytes] = {}  # by inode: names of the root's children
        self.ref_commits: dict[int, bytes] = {}  # by inode: the version of an @REF dir
        self._handles: dict[int, _DirHandle] = {}
        self._next_fh = 1
        self._root_names: Counter[bytes] = Counter()
        self._root_negative: set[bytes] = set()
        # Requests counted for the stats (vfs info): whether a listing program's
        # stat calls come up as lookups, or the kernel answers them from readdirplus.
        self.lookup_requests = 0
        self.readdir_requests = 0
        r = self.table.add_special(ROOT, b"\0" * 16)
        self.table.parent[r] = ROOT
        self.table.kind[r] = REFS_ROOT if view is None else fmt.DIR
        self.table.lookups[r] = 1
        if view is not None:
            self.table.view[r] = versions.add(view)
            self.dirs[ROOT] = _Dir(view.version.root)

    async def getattr(self, ino: int) -> Attr:
        entry = await self.entry(ino)
        return self._attr(self.rec(ino), entry)

    async def lookup(self, parent_ino: int, name: bytes) -> Attr:
        """The child `name` of a directory, counted as one kernel lookup; ino 0 if
        there is no such entry (the kernel caches that for Attr.ttl)."""
        self.lookup_requests += 1
        t = self.table
        pr = self.rec(parent_ino)
        entry: fmt.Entry | None = None
        if name == b"." or name == b"..":
            ino = parent_ino if name == b"." else self._up(parent_ino)
            entry = await self.entry(ino)
            r = self.rec(ino)
        elif t.kind[pr] == REFS_ROOT:
            found_ref = await self.versions.resolve_ref_name(name)
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
            r = self._child(parent_ino, page, i, entry.name, entry.kind)
        t.looked_up(r)
        return self._attr(r, entry)

    def forget(self, items: Iterable[tuple[int, int]]) -> None:
        t = self.table
        for ino, n in items:
            r = t.find(ino)
            if r >= 0 and ino != ROOT:
                t.forgotten(r, n)
                self._maybe_drop(r)

    async def readlink(self, ino: int) -> bytes:
        entry = await self.entry(ino)
        if entry is None or not entry.is_symlink:
            raise InvalidArgument(f"inode {ino} is not a symlink")
        return entry.target

    async def opendir(self, ino: int) -> int:
        kind = self.table.kind[self.rec(ino)]
        listing = None
        if kind == REFS_ROOT:
            listing = await self.versions.list_refs()
        elif kind != fmt.DIR:
            raise NotADirectory(f"inode {ino} is not a directory")
        fh = self.new_fh()
        self._handles[fh] = _DirHandle(ino, listing)
        self.table.opens[self.rec(ino)] += 1
        return fh

    async def readdir(self, fh: int, start: int, reply: Callable[[bytes, Attr, int], bool]) -> None:
        """Entries from position `start` (0 and 1 are '.' and '..'). `reply(name,
        attr, next)` returns False when the kernel's buffer is full; an entry it
        accepted counts as one lookup, except '.' and '..'."""
        self.readdir_requests += 1
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
        t = self.table
        while 0 <= li < len(leaves):
            first, leaf_id = leaves[li]
            page = await self._leaf(ino, li, leaf_id)
            begin = max(k - first, 0)
            if begin == 0:
                self.loader.warm_pages(page.subdir_trees())
            # The loop below runs once per entry of every listing: no await, so the
            # directory's record and view found here stay valid through it.
            # Each entry's head only (TreePage.stat): a listing shows no more, and
            # what later uses an entry decodes and checks all of it.
            view = t.view[self.rec(ino)]
            for i in range(begin, page.count):
                kind, name, mode, mtime_ns, size = page.stat(i)
                r = self._child(ino, page, i, name, kind, view)
                attr = self._attr_of(r, kind, mode, mtime_ns, size)
                if not reply(name, attr, 3 + first + i):
                    self._maybe_drop(r)
                    return
                t.looked_up(r)
            li += 1

    def releasedir(self, fh: int) -> None:
        h = self._handles.pop(fh, None)
        if h is not None:
            self.release_ino(h.ino)

    def show_root(self, view: View) -> tuple[bytes, list[bytes]]:
        """Show another version at the root (a switch): new lookups see it. Returns
        the old commit and the names under the root whose kernel entries are now
        stale. No await: the switch is atomic for lookups."""
        r = self.rec(ROOT)
        old = self.versions.views[self.table.view[r]].commit
        self.table.view[r] = self.versions.add(view, relabel=True)
        self.dirs[ROOT] = _Dir(view.version.root)
        stale = sorted(set(self._root_names) | self._root_negative)
        self._root_negative.clear()
        return old, stale

    @property
    def current(self) -> View | None:
        return self.view(self.rec(ROOT))

    # -- internals -----------------------------------------------------------------

    def rec(self, ino: int) -> int:
        r = self.table.find(ino)
        if r < 0:
            raise NotFound(f"no inode {ino} (forgotten)")
        return r

    def _up(self, ino: int) -> int:
        """A directory's parent: itself for the root, or if the kernel forgot it."""
        up = self.table.parent[self.rec(ino)]
        return up if self.table.find(up) >= 0 else ino

    def view(self, r: int) -> View | None:
        i = self.table.view[r]
        return None if i == NO_VIEW else self.versions.views[i]

    def new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    async def entry(self, ino: int) -> fmt.Entry | None:
        """The entry of an inode, decoded again from its leaf page; None for a
        version root, the @REF root and @REF directories."""
        r = self.rec(ino)
        leaf = self.table.leaf_id(r)
        if leaf is None:
            return None
        pos = self.table.pos[r]
        page = await self.loader.page(leaf)
        return page.entry(pos)

    def _attr(self, r: int, e: fmt.Entry | None) -> Attr:
        cfg = self.config
        t = self.table
        ttl = cfg.ref_ttl if t.parent[r] == ROOT and self.multi else cfg.entry_ttl
        if e is None:  # a version root, the @REF root or an @REF directory
            view = self.view(r)
            mtime = view.mtime_ns if view is not None and not self.multi else self.mounted_ns
            return Attr(t.ino[r], stat.S_IFDIR | 0o755, 1, 0, mtime, cfg.uid, cfg.gid, ttl)
        return self._attr_of(r, e.kind, e.mode, e.mtime_ns, e.size)

    def _attr_of(self, r: int, kind: int, mode: int, mtime_ns: int, size: int) -> Attr:
        """The Attr of record r, an entry with these head fields."""
        cfg = self.config
        ttl = cfg.ref_ttl if self.multi and self.table.parent[r] == ROOT else cfg.entry_ttl
        # Only permission bits: setuid, setgid and sticky are stripped.
        perm = 0o777 if kind == fmt.SYMLINK else mode & 0o777
        return Attr(
            self.table.ino[r],
            _S_IFMT[kind] | perm,
            1,
            0 if kind == fmt.DIR else size,
            mtime_ns,
            cfg.uid,
            cfg.gid,
            ttl,
        )

    def _negative(self, parent_ino: int, name: bytes) -> Attr:
        multi_root = self.table.kind[self.rec(parent_ino)] == REFS_ROOT
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
        r, new = self.table.intern(key)
        if new:
            self.table.parent[r] = parent_ino
            if parent_ino == ROOT:
                ino = self.table.ino[r]
                self.names[ino] = name
                self._root_names[name] += 1
        return r

    def _child(
        self, parent_ino: int, page: fmt.TreePage, i: int, name: bytes, kind: int, view: int = -1
    ) -> int:
        """The record of entry i (`name`, of `kind`) of a leaf page in directory
        `parent_ino`, whose view is `view` (-1: look it up). No await may come between
        this and the caller's use of the record."""
        t = self.table
        r = self._intern(parent_ino, name, page.raw_entry(i))
        t.kind[r] = kind
        t.set_leaf(r, page.id)
        t.pos[r] = i
        t.view[r] = t.view[self.rec(parent_ino)] if view < 0 else view
        return r

    def _ref_dir(self, name: bytes, commit: bytes) -> int:
        t = self.table
        r = self._intern(ROOT, name, b"@" + name + b"\0" + commit)
        t.kind[r] = fmt.DIR
        self.ref_commits[t.ino[r]] = commit
        if t.view[r] == NO_VIEW:
            i = self.versions.position(commit)
            if i is not None:
                t.view[r] = i
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
        self.table.looked_up(r)
        return True

    def release_ino(self, ino: int) -> None:
        r = self.table.find(ino)
        if r >= 0:
            self.table.opens[r] -= 1
            self._maybe_drop(r)

    def _maybe_drop(self, r: int) -> None:
        t = self.table
        ino = t.ino[r]
        if t.lookups[r] > 0 or t.opens[r] > 0 or ino == ROOT:
            return
        t.remove(r)
        self.dirs.pop(ino, None)
        self.ref_commits.pop(ino, None)
        name = self.names.pop(ino, None)
        if name is not None:
            self._root_names[name] -= 1
            if self._root_names[name] <= 0:
                del self._root_names[name]

    async def _dir_of(self, ino: int) -> _Dir:
        """The directory of an inode, loaded lazily; an @REF directory opens its
        version (commit and root page) on first use."""
        d = self.dirs.get(ino)
        if d is not None:
            return d
        t = self.table
        entry = await self.entry(ino)
        if entry is not None:
            return self.dirs.setdefault(ino, _Dir(entry.tree))
        view = self.view(self.rec(ino))
        if view is None:
            name = self.names[ino]
            spec = refs.Spec(self.dataset, name[1:].decode(), explicit=True)
            loaded = await self.versions.load(spec, self.ref_commits[ino])
            i = t.view[self.rec(ino)] = self.versions.add(loaded)
            view = self.versions.views[i]
        # Another task may have made it meanwhile.
        return self.dirs.setdefault(ino, _Dir(view.version.root))

    async def _dir_lookup(self, ino: int, name: bytes) -> tuple[fmt.TreePage, int] | None:
        d = await self._dir_of(ino)
        descent = tree.Descent(d.top, name)
        nxt: bytes | None = d.top
        while nxt is not None:
            nxt = descent.step(await self.loader.page(nxt))
        page = descent.page
        return None if page is None or descent.index < 0 else (page, descent.index)

    async def _leaves(self, ino: int) -> list[tuple[int, bytes]]:
        """The leaf pages of a directory with the index of their first entry, from
        the index pages and their counts: no leaf is read to list them. The index
        pages are checked against each other here, each leaf when it is loaded."""
        d = await self._dir_of(ino)
        if d.leaves is None:
            # (first entry, page id, (index page above, position there, upper bound))
            level: list[tuple[int, bytes, tuple[fmt.TreePage, int, bytes | None] | None]]
            level = [(0, d.top, None)]
            depth = 0
            while True:
                tree.check_depth(d.top, depth)
                top = await self.loader.page(level[0][1])
                if top.kind == fmt.LEAF:
                    break
                nxt: list[tuple[int, bytes, tuple[fmt.TreePage, int, bytes | None] | None]] = []
                for start, pid, above in level:
                    page = await self.loader.page(pid)
                    upper = above[0].check_child(above[1], page, above[2]) if above else None
                    if page.kind != fmt.INDEX:
                        raise fmt.CorruptObject(f"tree {d.top.hex()[:16]}: leaves at uneven depths")
                    for i, c in enumerate(page.children()):
                        nxt.append((start, c.page, (page, i, upper)))
                        start += c.count
                level = nxt
                depth += 1
            d.unchecked = {li: above for li, (_, _, above) in enumerate(level) if above}
            d.leaves = [(start, pid) for start, pid, _ in level]
        return d.leaves

    async def _leaf(self, ino: int, li: int, leaf_id: bytes) -> fmt.TreePage:
        """Leaf `li` of a directory listed by _leaves, checked against its index page
        the first time it is read."""
        d = await self._dir_of(ino)
        page = await self.loader.page(leaf_id)
        above = d.unchecked.get(li)
        if above is not None:
            if page.kind != fmt.LEAF:
                raise fmt.CorruptObject(f"tree {d.top.hex()[:16]}: leaves at uneven depths")
            above[0].check_child(above[1], page, above[2])
            del d.unchecked[li]
        return page
