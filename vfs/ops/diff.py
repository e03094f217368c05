"""`vfs diff`: what changed between two versions, file by file, with bytes.

Both trees are walked side by side in name order; a subdirectory whose id is the same
on both sides is skipped without being read, so the cost follows the size of the
change, not of the dataset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

from vfs import format as fmt
from vfs import refs, tree
from vfs.store import Store

ADDED = "added"
REMOVED = "removed"
MODIFIED = "modified"


@dataclass(frozen=True)
class Change:
    path: str
    status: str  # added, removed, modified
    kind: str  # file, dir, symlink (the new kind where it changed)
    old_size: int
    new_size: int
    # For modified files: bytes of content in chunks the old version did not have,
    # which is what storing the new version cost.
    changed_bytes: int
    # For modified entries, what differs: "content" (bytes, or a symlink's target),
    # "mode", "mtime". A tree copied with new mtimes is "mtime" alone.
    fields: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _name(path: bytes) -> str:
    return path.decode("utf-8", "surrogateescape")


def _all_files(store: Store, e: fmt.Entry, path: bytes, status: str) -> Iterator[Change]:
    """Every file and symlink below (or at) `e`, and every directory with nothing in
    it: an empty directory added or removed is a change too (--exit-code)."""
    if not e.is_dir:
        size = e.size
        yield Change(
            _name(path),
            status,
            fmt.KIND_NAMES[e.kind],
            size if status == REMOVED else 0,
            size if status == ADDED else 0,
            size if status == ADDED else 0,
        )
        return
    empty = True
    for f in tree.DirView(store, e.tree):
        empty = False
        yield from _all_files(store, f.entry, path + b"/" + f.entry.name, status)
    if empty:
        yield Change(_name(path), status, fmt.KIND_NAMES[fmt.DIR], 0, 0, 0)


def _entries_outside(store: Store, leaves: list[bytes], skip: set[bytes]) -> Iterator[tree.Found]:
    """The entries of `leaves` (one directory's, in order) but those in `skip`."""
    for leaf in leaves:
        if leaf not in skip:
            yield from tree.DirView(store, leaf)


def diff_trees(store: Store, old: bytes, new: bytes, prefix: bytes = b"") -> Iterator[Change]:
    """The changes from directory `old` to `new`. A leaf page both have (the same id)
    holds the same entries in both, so only the others are read: an edit in a
    directory of 200,000 entries reads the pages it rewrote, not every entry."""
    if old == new:
        return
    a_leaves = tree.DirView(store, old).leaves()
    b_leaves = tree.DirView(store, new).leaves()
    same = set(a_leaves).intersection(b_leaves)
    a = _entries_outside(store, a_leaves, same)
    b = _entries_outside(store, b_leaves, same)
    x = next(a, None)
    y = next(b, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x.entry.name < y.entry.name):
            assert x is not None
            yield from _all_files(store, x.entry, prefix + x.entry.name, REMOVED)
            x = next(a, None)
        elif x is None or y.entry.name < x.entry.name:
            yield from _all_files(store, y.entry, prefix + y.entry.name, ADDED)
            y = next(b, None)
        else:
            yield from _diff_entry(store, x.entry, y.entry, prefix + x.entry.name)
            x, y = next(a, None), next(b, None)


def _diff_entry(store: Store, e: fmt.Entry, f: fmt.Entry, path: bytes) -> Iterator[Change]:
    if e.is_dir and f.is_dir:
        # A directory's own mode is a change; its mtime only where nothing below it
        # changed (else every changed file would bring its directories along).
        fields = tuple(
            name
            for name, differs in (
                ("mode", e.mode != f.mode),
                ("mtime", e.mtime_ns != f.mtime_ns and e.tree == f.tree),
            )
            if differs
        )
        if fields:
            yield Change(_name(path), MODIFIED, fmt.KIND_NAMES[fmt.DIR], 0, 0, 0, fields)
        yield from diff_trees(store, e.tree, f.tree, path + b"/")
    elif e.is_dir or f.is_dir:
        yield from _all_files(store, e, path, REMOVED)
        yield from _all_files(store, f, path, ADDED)
    elif e != f:
        old_ids = {c.id for c in e.chunks}
        changed = sum(c.length for c in f.chunks if c.id not in old_ids)
        fields = tuple(
            name
            for name, differs in (
                ("content", (e.kind, e.chunks, e.target) != (f.kind, f.chunks, f.target)),
                ("type", e.kind != f.kind),  # a file became a symlink, or back
                ("mode", e.mode != f.mode),
                ("mtime", e.mtime_ns != f.mtime_ns),
            )
            if differs
        )
        yield Change(_name(path), MODIFIED, fmt.KIND_NAMES[f.kind], e.size, f.size, changed, fields)


@dataclass
class Summary:
    added: int = 0
    removed: int = 0
    modified: int = 0
    bytes_added: int = 0
    bytes_removed: int = 0
    changed_bytes: int = 0


def summarize(changes: list[Change]) -> Summary:
    s = Summary()
    for c in changes:
        if c.status == ADDED:
            s.added += 1
            s.bytes_added += c.new_size
        elif c.status == REMOVED:
            s.removed += 1
            s.bytes_removed += c.old_size
        else:
            s.modified += 1
        s.changed_bytes += c.changed_bytes
    return s


@dataclass
class VersionDiff:
    a: refs.Resolved
    b: refs.Resolved
    changes: list[Change]
    summary: Summary


def diff_versions(store: Store, a: str, b: str) -> VersionDiff:
    """Compare the versions specs `a` and `b` name; `b` may be '@REF' for a's dataset."""
    if b.startswith("@"):
        b = refs.parse_spec(a).dataset + b
    ra = refs.resolve(store, a)
    rb = refs.resolve(store, b)
    ta, tb = store.get_commit(ra.commit).tree, store.get_commit(rb.commit).tree
    changes = list(diff_trees(store, ta, tb))
    return VersionDiff(ra, rb, changes, summarize(changes))
