"""`vfs ls` and `vfs cat`: a version's entries and file bytes, read without a mount.

The dataset listing of a bare `vfs ls` is vfs.ops.history's.
"""

from __future__ import annotations

import stat as stat_mod
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from vfs import format as fmt
from vfs import tree
from vfs.ops.base import resolve, version_of
from vfs.reader import VersionFile
from vfs.store import Store

if TYPE_CHECKING:
    from vfs.cache import ChunkCache


def entries(store: Store, spec: str, path: str, recursive: bool) -> Iterator[tuple[str, fmt.Entry]]:
    """(path, entry) of what `ls` lists at `path` of the version `spec` names: a
    file itself, a directory's entries, or with `recursive` everything below it.
    The version and path are checked here; the entries come page by page as they
    are taken, so a listing of 200,000 starts at once and holds one page."""
    v = version_of(store, resolve(store, spec))
    found = v.stat(path)
    if found is not None and not found.entry.is_dir:
        return iter([(path, found.entry)])
    if recursive:
        return ((p.decode("utf-8", "surrogateescape"), f.entry) for p, f in v.walk(path))
    top = found.entry.tree if found is not None else v.root
    return (
        (f.entry.name.decode("utf-8", "surrogateescape"), f.entry) for f in tree.DirView(store, top)
    )


def mode_string(e: fmt.Entry) -> str:
    """The entry's type and permissions as `ls -l` writes them: drwxr-xr-x."""
    kind = {fmt.DIR: stat_mod.S_IFDIR, fmt.FILE: stat_mod.S_IFREG, fmt.SYMLINK: stat_mod.S_IFLNK}[
        e.kind
    ]
    return stat_mod.filemode(kind | (e.mode & 0o7777))  # as stored: setuid too


def entry_doc(path: str, e: fmt.Entry) -> dict[str, Any]:
    """An entry as `vfs ls --json` prints it."""
    doc: dict[str, Any] = {
        "path": path,
        "type": fmt.KIND_NAMES[e.kind],
        "size": e.size,
        "mode": f"{e.mode & 0o7777:04o}",
        "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.mtime_ns / 1e9)),
    }
    if e.is_symlink:
        doc["target"] = e.target.decode("utf-8", "surrogateescape")
    if e.is_dir:
        doc["files"] = e.nfiles
    return doc


def open_file(store: Store, spec: str, path: str, cache: ChunkCache | None = None) -> VersionFile:
    """The file at `path` of the version `spec` names, open for reading (through the
    chunk `cache`, if given): a seekable binary file. A bad spec or path fails here,
    before anything is written."""
    v = version_of(store, resolve(store, spec), cache)
    return v.open(path)
