"""`vfs get`: materialise a version (or a part of it) as plain files, in parallel.

Safety: OUT must not exist or be an empty directory, every path is built from names
the tree decoder has already checked (no '/', '.', '..', NUL), and every file and
symlink is created with O_EXCL / O_NOFOLLOW semantics, so nothing, not even a
symlink that the version carries, can make us write outside OUT.

Work is cut into units of at most UNIT_BYTES (many small files, or a slice of a big
one) in path order, which is pack order, so one unit is usually one ranged GET.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from vfs import format as fmt
from vfs import tree
from vfs.errors import UsageError
from vfs.reader import Version, Wanted

UNIT_BYTES = 16 * 1024 * 1024


@dataclass
class GetResult:
    files: int
    dirs: int
    symlinks: int
    bytes: int


@dataclass
class _Slice:
    path: str
    offset: int
    wanted: list[Wanted]


def _is_zero(data: bytes | memoryview) -> bool:
    # A raw chunk comes as a view of its GET's buffer (no strip()); most chunks have
    # a non-zero byte at an end and are judged without a copy.
    if data and (data[0] or data[-1]):
        return False
    return not bytes(data).strip(b"\0")


def _prepare_out(out: str) -> None:
    if os.path.lexists(out):
        if not os.path.isdir(out) or os.path.islink(out):
            raise UsageError(f"{out} exists and is not a directory")
        if os.listdir(out):
            raise UsageError(
                f"{out} is not empty; vfs get writes only into a new or empty directory"
            )
    else:
        os.makedirs(out)


def _create_file(path: str, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _finish(path: str, e: fmt.Entry) -> None:
    os.chmod(path, e.mode & 0o777, follow_symlinks=False)
    os.utime(path, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)


def get(
    version: Version,
    path: str,
    out: str,
    *,
    workers: int = 8,
    on_bytes: Callable[[int], None] | None = None,
) -> GetResult:
    found = version.stat(path)
    if found is not None and not found.entry.is_dir:
        # One file or symlink: OUT is its new name, or a directory to put it in.
        dest = (
            os.path.join(out, found.entry.name.decode("utf-8", "surrogateescape"))
            if os.path.isdir(out)
            else out
        )
        if os.path.lexists(dest):
            raise UsageError(f"{dest} already exists")
        entries = [(dest, found)]
        dirs: list[tuple[str, fmt.Entry]] = []
    else:
        _prepare_out(out)
        entries = []
        dirs = []
        for rel, f in version.walk(path):
            p = os.path.join(out, os.fsdecode(rel))
            if f.entry.is_dir:
                os.mkdir(p, 0o700)
                dirs.append((p, f.entry))
            else:
                entries.append((p, f))

    slices: list[_Slice] = []
    result = GetResult(0, len(dirs), 0, 0)
    group: list[tuple[str, tree.Found]] = []
    for p, f in entries:
        e = f.entry
        if e.is_symlink:
            os.symlink(e.target, p)
            result.symlinks += 1
            continue
        _create_file(p, e.size)
        result.files += 1
        result.bytes += e.size
        wanted = version.wanted(f)
        offset = 0
        cur: list[Wanted] = []
        cur_bytes = 0
        for w in wanted:
            if cur and cur_bytes + w.ref.length > UNIT_BYTES:
                slices.append(_Slice(p, offset, cur))
                offset += cur_bytes
                cur, cur_bytes = [], 0
            cur.append(w)
            cur_bytes += w.ref.length
        if cur:
            slices.append(_Slice(p, offset, cur))
        group.append((p, f))

    # Small files' slices side by side in path order form one unit of fetching.
    units: list[list[_Slice]] = []
    unit_bytes = 0
    for s in slices:
        size = sum(w.ref.length for w in s.wanted)
        if not units or unit_bytes + size > UNIT_BYTES:
            units.append([])
            unit_bytes = 0
        units[-1].append(s)
        unit_bytes += size

    def run(unit: list[_Slice]) -> None:
        got = version.chunks.fetch([w for s in unit for w in s.wanted])
        for s in unit:
            fd = os.open(s.path, os.O_WRONLY | os.O_NOFOLLOW)
            try:
                pos = s.offset
                for w in s.wanted:
                    data = got[w.ref.id]
                    if not _is_zero(data):  # leave holes where the source had zeros
                        os.pwrite(fd, data, pos)
                    pos += len(data)
            finally:
                os.close(fd)
            if on_bytes:
                on_bytes(pos - s.offset)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vfs-get") as pool:
        for _ in pool.map(run, units):
            pass

    for p, f in group:
        _finish(p, f.entry)
    for p, e in reversed(dirs):  # children first, so their writes don't bump our mtime
        _finish(p, e)
    return result
