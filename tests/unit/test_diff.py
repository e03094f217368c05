"""diff_trees in a directory split over many pages: the same changes as comparing
every entry, reading only the pages an edit rewrote."""

from __future__ import annotations

import random

from tests.support.pages import MemoryPages
from vfs import format as fmt
from vfs.ops.diff import diff_trees
from vfs.tree import write_dir

_NOWHERE = fmt.Location(b"\0" * 32, 0, 0, fmt.CODEC_RAW)


def _file(name: str, content: str) -> fmt.Entry:
    ref = fmt.ChunkRef(fmt.chunk_id(content.encode()), len(content))
    return fmt.Entry(name.encode(), fmt.FILE, 0o644, 0, len(content), chunks=(ref,))


def test_an_edit_in_a_huge_directory_reads_the_pages_it_rewrote() -> None:
    rnd = random.Random(7)
    old = {f"img-{i:06d}.png": f"v1 {i}" for i in range(40_000)}
    new = dict(old)
    for name in rnd.sample(sorted(old), 5):
        new[name] = "edited " + name
    for name in rnd.sample(sorted(old), 2):
        del new[name]
    new["img-000000a.png"] = "added"
    new["zzz.txt"] = "added too"
    src = MemoryPages()
    a = write_dir([_file(n, old[n]) for n in sorted(old)], src, lambda _: _NOWHERE)
    b = write_dir([_file(n, new[n]) for n in sorted(new)], src, lambda _: _NOWHERE)
    leaves = sum(1 for p in src.pages.values() if fmt.TreePage(p).kind == fmt.LEAF)
    assert leaves > 40  # ~40 a version, most shared

    src.reads = 0
    got = {(c.path, c.status) for c in diff_trees(src, a, b)}  # type: ignore[arg-type]
    want = {(n, "modified") for n in old if n in new and old[n] != new[n]}
    want |= {(n, "removed") for n in old if n not in new}
    want |= {(n, "added") for n in new if n not in old}
    assert got == want and len(want) == 9
    # Per side: the index page and the first leaf (to find the leaves), the leaves the
    # 9 changes rewrote, and the first leaf again if it is one of them. Reading every
    # entry read 82 pages here.
    assert src.reads <= 2 * (2 + 9 + 1), src.reads


def _dir(name: str, tree: bytes, mode: int = 0o755, mtime: int = 0) -> fmt.Entry:
    return fmt.Entry(name.encode(), fmt.DIR, mode, mtime, 0, tree=tree)


def test_directories_that_change_alone_are_changes() -> None:
    """An empty directory added or removed, a directory's mode, a directory touched
    with nothing below it changed, and a file that became a symlink: each is a change,
    so `diff --exit-code` says the versions differ (it said they were the same)."""
    src = MemoryPages()

    def tree(entries: list[fmt.Entry]) -> bytes:
        return write_dir(entries, src, lambda _: _NOWHERE)

    empty = tree([])
    full = tree([_file("f", "hi")])
    link = fmt.Entry(b"x", fmt.SYMLINK, 0o777, 0, 1, target=b"f")
    a = tree([_dir("a", full), _dir("b", empty), _dir("t", full), _file("x", "y")])
    b = tree([_dir("a", full, mode=0o700), _dir("n", empty), _dir("t", full, mtime=5), link])
    got = {(c.path, c.status, c.kind, c.fields) for c in diff_trees(src, a, b)}  # type: ignore[arg-type]
    assert got == {
        ("a", "modified", "dir", ("mode",)),
        ("b", "removed", "dir", ()),
        ("n", "added", "dir", ()),
        ("t", "modified", "dir", ("mtime",)),
        ("x", "modified", "symlink", ("content", "type", "mode")),
    }
    # A directory whose files changed brings no line of its own, mtime or not.
    c = tree([_dir("a", tree([_file("f", "changed")]), mtime=9), _dir("b", empty)])
    d = tree([_dir("a", full), _dir("b", empty), _dir("t", full), _file("x", "y")])
    assert [(ch.path, ch.kind) for ch in diff_trees(src, c, d)] == [  # type: ignore[arg-type]
        ("a/f", "file"),
        ("t/f", "file"),
        ("x", "file"),
    ]
