"""Directories as Merkle trees of pages: building them on commit, walking them on read.

A directory is one leaf page, or (past format.LEAF_SPLIT_AT entries) leaves under index
pages, cut at content-defined names so an edit in a huge directory rewrites one leaf
and the index pages above it. The top page's id is the directory's id. Each leaf page
has a locations object beside it (`locs/<leaf id>`) that says where its files'
chunks live; it is not part of any id, so repacking can rewrite it.

This module owns the descent through a directory's pages: `Descent` (one name, one
page at a time, each page checked against the index entry above it) and
`check_depth` (the bound on nesting). DirView, the reader, vfs verify and the mount
(vfs/mount/namespace.py, which awaits each page) all drive these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

from vfs import format as fmt
from vfs.errors import CorruptObject, NotFound


class PageSource(Protocol):
    def get_page(self, page_id: bytes) -> fmt.TreePage: ...


class PageSink(Protocol):
    def put_page(self, canonical: bytes) -> bytes:
        """Store a tree page (if new) and return its id."""
        ...

    def put_locs(self, leaf_id: bytes, locs: dict[bytes, fmt.Location]) -> None: ...


@dataclass(frozen=True, slots=True)
class Found:
    """An entry and the leaf page it sits in (whose locs place its chunks)."""

    entry: fmt.Entry
    leaf: bytes


def write_dir(
    entries: list[fmt.Entry],
    sink: PageSink,
    locate: Callable[[bytes], fmt.Location],
) -> bytes:
    """Write one directory (entries sorted by name, unique) and return its id.

    Write order per leaf: locations, then the page, so a page that exists always has
    its locations (and, before them, its packs).
    """
    for a, b in pairwise(entries):
        if a.name >= b.name:
            # The format wants one entry per name, in byte order: refuse to write a
            # directory that every reader would refuse to read.
            raise CorruptObject(f"names not sorted or duplicated: {a.name!r}, {b.name!r}")
    encoded = [fmt.encode_entry(e) for e in entries]
    if len(entries) <= fmt.LEAF_SPLIT_AT:
        ranges = [(0, len(entries))]
    else:
        ranges = fmt.cut_pages([e.name for e in entries])
    level: list[fmt.IndexEntry] = []
    for start, end in ranges:
        locs: dict[bytes, fmt.Location] = {}
        for e in entries[start:end]:
            for c in e.chunks:
                if c.id not in locs:
                    locs[c.id] = locate(c.id)
        canonical = fmt.encode_page(fmt.LEAF, encoded[start:end])
        page_id = fmt.object_id(canonical)
        sink.put_locs(page_id, locs)
        sink.put_page(canonical)
        level.append(
            fmt.IndexEntry(entries[start].name if end > start else b"", page_id, end - start)
        )
    return _write_index(level, sink.put_page)


def _write_index(level: list[fmt.IndexEntry], put_index: Callable[[bytes], bytes]) -> bytes:
    """The index pages over a directory's leaves (`level`, in order), level by level
    up to one page; returns the directory's id. `put_index` stores a page, returns its id."""
    while len(level) > 1:
        ranges = (
            fmt.cut_pages([c.first for c in level])
            if len(level) > fmt.LEAF_SPLIT_AT
            else [(0, len(level))]
        )
        upper = []
        for start, end in ranges:
            group = level[start:end]
            enc = [fmt._encode_index_entry(c) for c in group]
            page_id = put_index(fmt.encode_page(fmt.INDEX, enc))
            upper.append(fmt.IndexEntry(group[0].first, page_id, sum(c.count for c in group)))
        level = upper
    return level[0].page


class DirBuilder:
    """`write_dir` for a directory whose entries arrive one at a time, in name order,
    with the same pages and the same id, while holding at most one leaf's entries.

    Pages are cut as write_dir cuts them: one leaf up to LEAF_SPLIT_AT entries; past
    that, content-defined cuts (format.cut_pages), which depend only on each name and
    the count since the last cut, so they can be made as names arrive. Until the
    count passes LEAF_SPLIT_AT no cut is made, because a directory that ends first is
    one leaf. Leaves go to `put_leaf(page id, canonical, entries)`; index pages to
    `put_index(canonical)`, which returns the id.
    """

    __slots__ = ("_buf", "_last", "_level", "_put_index", "_put_leaf", "_split")

    def __init__(
        self,
        put_leaf: Callable[[bytes, bytes, list[fmt.Entry]], None],
        put_index: Callable[[bytes], bytes],
    ) -> None:
        self._put_leaf = put_leaf
        self._put_index = put_index
        self._buf: list[fmt.Entry] = []
        self._level: list[fmt.IndexEntry] = []
        self._split = False
        self._last: bytes | None = None

    def add(self, e: fmt.Entry) -> None:
        if self._last is not None and self._last >= e.name:
            raise CorruptObject(f"names not sorted or duplicated: {self._last!r}, {e.name!r}")
        self._last = e.name
        buf = self._buf
        buf.append(e)
        if self._split:
            if fmt.boundary(e.name) or len(buf) >= fmt.MAX_PAGE_ENTRIES:
                self._leaf(buf)
                self._buf = []
        elif len(buf) > fmt.LEAF_SPLIT_AT:
            self._split = True
            start = 0
            for i, x in enumerate(buf):
                if fmt.boundary(x.name) or i + 1 - start >= fmt.MAX_PAGE_ENTRIES:
                    self._leaf(buf[start : i + 1])
                    start = i + 1
            self._buf = buf[start:]

    def _leaf(self, entries: list[fmt.Entry]) -> None:
        canonical = fmt.encode_page(fmt.LEAF, [fmt.encode_entry(e) for e in entries])
        page_id = fmt.object_id(canonical)
        self._put_leaf(page_id, canonical, entries)
        self._level.append(
            fmt.IndexEntry(entries[0].name if entries else b"", page_id, len(entries))
        )

    def finish(self) -> bytes:
        """Write what is left and the index pages; returns the directory's id."""
        if self._buf or not self._split:
            self._leaf(self._buf)
            self._buf = []
        return _write_index(self._level, self._put_index)


# Index pages above a leaf: three cover a billion entries; more is a forged tree.
MAX_DEPTH = 16


def check_depth(top: bytes, depth: int) -> None:
    """Refuse a page `depth` index levels below the top page `top` of its directory
    when that is deeper than any honest tree nests (MAX_DEPTH)."""
    if depth > MAX_DEPTH:
        raise CorruptObject(f"tree {top.hex()[:16]}: index pages nest too deep")


class Descent:
    """The lookup of one name in one directory, one page at a time: the one place
    that checks each page against the index entry above it and the depth bound.

    Step-wise, so that a caller with pages at hand (DirView, the reader) and one that
    must await each page (the mount) drive the same checks: `step(page)` takes the
    next page, first the top, and returns the id of the page to read next, or None
    when the descent ended; then `page` is the leaf and `index` the entry's position
    in it, or -1 if the directory has no such name."""

    __slots__ = ("_at", "_upper", "depth", "index", "name", "page", "top")

    def __init__(self, top: bytes, name: bytes) -> None:
        self.top = top
        self.name = name
        self.depth = 0
        self.page: fmt.TreePage | None = None
        self.index = -1
        self._at = -1  # the position of the page expected next in `page`, an index page
        self._upper: bytes | None = None

    def step(self, page: fmt.TreePage) -> bytes | None:
        above = self.page
        if above is not None:
            self._upper = above.check_child(self._at, page, self._upper)
            self.depth += 1
            check_depth(self.top, self.depth)
        self.page = page
        i = page.find(self.name)
        if page.kind == fmt.LEAF or i < 0:
            self.index = i  # -1 if the name is not there
            return None
        self._at = i
        return page.index_entry(i).page

    def found(self) -> Found | None:
        """The entry the descent ended at, once `step` returned None."""
        page = self.page
        if page is None or self.index < 0:
            return None
        return Found(page.entry(self.index), page.id)


class DirView:
    """One directory of a version, read page by page as needed."""

    __slots__ = ("_src", "top")

    def __init__(self, src: PageSource, top: bytes) -> None:
        self._src = src
        self.top = top

    def lookup(self, name: bytes) -> Found | None:
        d = Descent(self.top, name)
        nxt: bytes | None = self.top
        while nxt is not None:
            nxt = d.step(self._src.get_page(nxt))
        return d.found()

    def __iter__(self) -> Iterator[Found]:
        yield from self._iter_page(self._src.get_page(self.top), None, 0)

    def _iter_page(self, page: fmt.TreePage, upper: bytes | None, depth: int) -> Iterator[Found]:
        check_depth(self.top, depth)
        if page.kind == fmt.LEAF:
            for e in page.entries():
                yield Found(e, page.id)
        else:
            for i, c in enumerate(page.children()):
                child = self._src.get_page(c.page)
                bound = page.check_child(i, child, upper)
                yield from self._iter_page(child, bound, depth + 1)

    def leaves(self) -> list[bytes]:
        """The ids of the directory's leaf pages in name order, reading its index pages
        and one leaf: an honest tree has every leaf at one depth (DirBuilder writes
        index levels whole), so the first page of a level says whether it is the
        leaves. A forged tree may not; a caller that reads a page it was given here
        must take an index page too (iterating DirView(src, id) does)."""
        level, depth = [self.top], 0
        while self._src.get_page(level[0]).kind != fmt.LEAF:
            depth += 1
            check_depth(self.top, depth)
            level = [c.page for pid in level for c in self._src.get_page(pid).children()]
        return level

    def __len__(self) -> int:
        page = self._src.get_page(self.top)
        if page.kind == fmt.LEAF:
            return len(page)
        return sum(c.count for c in page.children())


def pages(src: PageSource, root: bytes) -> Iterator[fmt.TreePage]:
    """Every page of the tree `root`, index pages and leaves, of every directory
    below it, each checked against the index page above it; depth first."""

    def below(page: fmt.TreePage, upper: bytes | None, depth: int) -> Iterator[fmt.TreePage]:
        check_depth(root, depth)
        yield page
        if page.kind == fmt.LEAF:
            for e in page.entries():
                if e.is_dir:
                    yield from below(src.get_page(e.tree), None, 0)
        else:
            for i, c in enumerate(page.children()):
                child = src.get_page(c.page)
                yield from below(child, page.check_child(i, child, upper), depth + 1)

    yield from below(src.get_page(root), None, 0)


def split_path(path: str | bytes) -> list[bytes]:
    """A path inside a version as its components; '' and '/' are the root."""
    raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
    parts = [p for p in raw.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise NotFound(f"path {raw.decode('utf-8', 'replace')!r} may not contain '..'")
    return parts


def resolve(src: PageSource, root: bytes, path: str | bytes) -> Found | None:
    """The entry at `path` below the tree `root`; None for the root itself.

    Symlinks inside the path are not followed: a version is data, not a namespace
    to escape from.
    """
    parts = split_path(path)
    found: Found | None = None
    top = root

    def shown(n: int) -> str:
        return b"/".join(parts[:n]).decode("utf-8", "replace")

    for i, name in enumerate(parts):
        found = DirView(src, top).lookup(name)
        # The whole path, as ls and cat name it, and the part that is not there.
        missing = f" ({shown(i + 1)} is not there)" if i + 1 < len(parts) else ""
        if found is None:
            raise NotFound(f"no such file or directory: {shown(len(parts))}{missing}")
        if i + 1 < len(parts):
            if not found.entry.is_dir:
                raise NotFound(f"not a directory: {shown(i + 1)} (in {shown(len(parts))})")
            top = found.entry.tree
    return found


def walk(src: PageSource, root: bytes, prefix: bytes = b"") -> Iterator[tuple[bytes, Found]]:
    """Every entry below `root` depth-first in name order, with its path."""
    for f in DirView(src, root):
        path = prefix + f.entry.name
        yield path, f
        if f.entry.is_dir:
            yield from walk(src, f.entry.tree, path + b"/")
