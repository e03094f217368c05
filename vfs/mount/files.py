"""The open files of a mount: their layouts, their readahead, and reads.

This module owns the table of open files (a file handle -> the file's inode, its
layout fixed at open, its readahead state) and the LRU of recent layouts. A layout
says where a file's bytes are: its chunks placed in packs and the end offset of each
chunk. An open file keeps the version it was opened in: a switch does not change
what an open file reads. The bytes come from the loader (vfs/mount/loader.py).

With an access recorder (`vfs mount --record-access`), an open file also carries
its (dataset, commit, path), found once at open by walking its parents up to the
version's root, and each read served adds its range: a dict lookup and an append.

Concurrency: every method runs on the trio thread, so the tables change only between
awaits and need no lock; placing an entry whose locations are not in memory runs in
a worker thread through the loader.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
from bisect import bisect_left, bisect_right

from vfs import format as fmt
from vfs.access import AccessRecorder
from vfs.mount.errors import BadHandle, InvalidArgument, IsADirectory, ReadOnly
from vfs.mount.loader import Loader, PackGone
from vfs.mount.namespace import ROOT, Namespace
from vfs.mount.readahead import Readahead
from vfs.mount.versions import View
from vfs.reader import Wanted, place, unplaced
from vfs.store import LRU, Store
from vfs.tree import Found

log = logging.getLogger(__name__)

# The layouts of files opened lately (OpenFiles._layout), weighed by chunk: about 100
# bytes each once placed, so this holds ~3 MB, or 16,000 small files.
LAYOUT_CACHE_CHUNKS = 32 * 1024


class _PyBuffer(ctypes.Structure):
    """CPython's Py_buffer (stable ABI since 3.11)."""

    _fields_ = (
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    )


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int)
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = (ctypes.POINTER(_PyBuffer),)


def _address(view: memoryview) -> int:
    """Where a contiguous view's first byte is in memory."""
    b = _PyBuffer()
    _get_buffer(view, ctypes.byref(b), 0)  # PyBUF_SIMPLE; raises on failure
    try:
        return b.buf or 0
    finally:
        _release_buffer(ctypes.byref(b))


def _joined(parts: list[memoryview]) -> list[memoryview]:
    """`parts` as one view if they lie end to end in one buffer (chunks the cache
    read in one run, vfs/cache/chunks.py get_views), else as they are. A read
    spanning chunks is then answered without copying them into a reply buffer."""
    obj = parts[0].obj
    if type(obj) not in (bytes, mmap.mmap) or any(p.obj is not obj for p in parts):
        return parts
    whole = memoryview(obj).toreadonly()
    base = _address(whole)
    start = at = _address(parts[0])
    for p in parts:
        if _address(p) != at:
            return parts
        at += len(p)
    return [whole[start - base : at - base]]


class _Layout:
    """Where a file's bytes are: its entry, its chunks placed in packs, and the end
    offset of each chunk. Immutable, like the leaf page it comes from."""

    __slots__ = ("ends", "entry", "key", "leaf", "wanted")

    def __init__(self, entry: fmt.Entry, wanted: list[Wanted], leaf: bytes, key: bytes) -> None:
        self.entry = entry
        self.wanted = wanted
        self.leaf = leaf
        self.key = key  # in the layout LRU
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

    __slots__ = ("ino", "layout", "readahead", "recorded")

    def __init__(
        self, ino: int, layout: _Layout, ra: Readahead, recorded: tuple[str, bytes, str] | None
    ) -> None:
        self.ino = ino
        self.layout = layout
        self.readahead = ra
        self.recorded = recorded  # (dataset, commit, path) when reads are recorded


class OpenFiles:
    """The open files of one mount, by file handle."""

    __slots__ = ("_files", "_layouts", "loader", "ns", "recorder", "store")

    def __init__(
        self, store: Store, ns: Namespace, loader: Loader, recorder: AccessRecorder | None = None
    ) -> None:
        self.store = store
        self.ns = ns
        self.loader = loader
        self.recorder = recorder
        self._files: dict[int, _File] = {}
        self._layouts = LRU(LAYOUT_CACHE_CHUNKS, weigh=_layout_weight)

    def __len__(self) -> int:
        return len(self._files)

    async def open(self, ino: int, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise ReadOnly("a mounted version is read-only")
        t = self.ns.table
        r = self.ns.rec(ino)
        leaf = t.leaf_id(r)
        if leaf is None or t.kind[r] == fmt.DIR:
            raise IsADirectory(f"inode {ino} is a directory")
        if t.kind[r] != fmt.FILE:
            raise InvalidArgument(f"inode {ino} is not a regular file")
        view = self.ns.versions.views[t.view[r]]
        layout = await self._layout(leaf, t.pos[r], view)
        recorded = None
        if self.recorder is not None:
            recorded = (self.ns.dataset, view.commit, await self._path_of(ino))
        fh = self.ns.new_fh()
        self._files[fh] = _File(ino, layout, Readahead(self.loader.config), recorded)
        t.opens[self.ns.rec(ino)] += 1
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
        page = await self.loader.page(leaf)
        found = Found(page.entry(pos), leaf)
        locs = self.store.cached_locs(leaf)
        if locs is not None:
            wanted = place(found, locs)
        elif self.loader.all_cached(found.entry.chunks):
            # Its bytes are here (read through another version, or brought by a pack
            # window), its leaf's locations perhaps not: they are asked for only if
            # a chunk must come from the store after all, so that a store that is
            # down does not stop a file this machine holds.
            wanted = unplaced(found)
        else:
            wanted = await self.loader.meta(view.version.wanted, found)
        layout = _Layout(found.entry, wanted, leaf, key)
        self._layouts.put(key, layout)
        return layout

    async def _relocate(self, f: _File) -> _Layout:
        """The file's layout placed again by its leaf's locations fresh from the store,
        past the memory and the machine's cache: gc repacked a pack they named, or the
        file was opened unplaced and a chunk has left the cache since."""
        old = f.layout
        locs = await self.loader.meta(self.store.fetch_locs, old.leaf)
        layout = _Layout(old.entry, place(Found(old.entry, old.leaf), locs), old.leaf, old.key)
        self._layouts.put(old.key, layout)
        f.layout = layout
        return layout

    async def _path_of(self, ino: int) -> str:
        """The path of an open inode from its version's root: the names of it and its
        parents, read from their leaf pages (in memory: the kernel just looked them
        up). Stops at the root, or at an @REF directory of a multi-version mount."""
        t = self.ns.table
        names = []
        while ino != ROOT:
            r = self.ns.rec(ino)
            leaf = t.leaf_id(r)
            if leaf is None:
                break
            page = await self.loader.page(leaf)
            names.append(page.entry(t.pos[r]).name)
            ino = t.parent[r]
        return b"/".join(reversed(names)).decode("utf-8", "surrogateescape")

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
        if f.recorded is not None:
            assert self.recorder is not None
            self.recorder.add(*f.recorded, offset, end - offset)
        first = bisect_right(lay.ends, offset)
        last = bisect_left(lay.ends, end)  # the chunk holding byte end-1
        ahead: list[Wanted] = []
        window = f.readahead.advise(offset, end, total)
        if window is not None:
            lo = bisect_right(lay.ends, window[0])
            hi = bisect_left(lay.ends, window[1])
            ahead = lay.wanted[max(lo, last + 1) : hi + 1]
        try:
            got = await self.loader.get(lay.wanted[first : last + 1], ahead)
        except PackGone as e:
            # Once per read: a second miss means the store lost the pack for real.
            log.info("%s; reloading the locations of the file's directory page", e)
            lay = await self._relocate(f)
            ahead = []
            got = await self.loader.get(lay.wanted[first : last + 1])
        f.readahead.cached = not self.loader.from_store(lay.wanted[last].ref.id)
        if f.readahead.window and last > first:  # sequential: done with all but the last
            self.loader.passed(w.ref.id for w in lay.wanted[first:last])
        parts = []
        for i in range(first, last + 1):
            data = got[lay.wanted[i].ref.id]
            base = lay.ends[i] - len(data)
            parts.append(memoryview(data)[max(offset - base, 0) : end - base])
        if len(parts) > 1:
            return _joined(parts)
        return parts

    def release(self, fh: int) -> None:
        f = self._files.pop(fh, None)
        if f is not None:
            self.ns.release_ino(f.ino)
