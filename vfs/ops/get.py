"""`vfs get`: materialise a version (or a part of it) as plain files, in parallel.

Safety: every path is built from names the tree decoder has already checked (no '/',
'.', '..', NUL); a directory that already exists under OUT must be a real directory
(never a symlink), and every file and symlink is created with O_EXCL / O_NOFOLLOW
semantics, so nothing, not even a symlink that the version carries, can make us
write outside OUT.

Interrupting is safe and a rerun resumes. A file is written under a temporary name
beside its final one (`.vfsget.<hash of the name>`) and renamed into place only once
every chunk of it has been verified (BLAKE3, as every read does) and written, with
its mode and mtime. So a file under its final name is complete. A rerun into the
same OUT keeps each file whose bytes hash to the version's chunk ids (the check reads
the local file, no network), drops leftover temporary files, and fetches the rest.
A file that differs from the version is refused unless `force`, which replaces it.

Work is cut into units of at most UNIT_BYTES (many small files, or a slice of a big
one) in path order, which is pack order, so one unit is usually one ranged GET. The
tree is walked a batch of files at a time (BATCH_FILES, BATCH_BYTES), each planned,
fetched and renamed into place before the next is read: a get of 200,000 files
holds one batch, not the whole version, and has one batch of temporary files.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from vfs import format as fmt
from vfs import tree
from vfs.errors import CorruptObject, UsageError
from vfs.reader import Version, Wanted

UNIT_BYTES = 16 * 1024 * 1024
# Files taken together: planned, created under temporary names and fetched before the
# next batch is read from the tree, so that a get of 200,000 files holds one batch.
BATCH_FILES = 4096
BATCH_BYTES = 512 * 1024 * 1024
TEMP_PREFIX = ".vfsget."


@dataclass
class GetResult:
    files: int
    dirs: int
    symlinks: int
    bytes: int
    kept: int = 0  # files (and symlinks) already in place from an earlier run, verified
    kept_bytes: int = 0
    # Files not written because their bytes are damaged in the store: (path, why).
    damaged: list[tuple[str, str]] = field(default_factory=list)
    # With --force, paths not replaced (a directory with files where the version has
    # a file): the rest of the get is done, then these are named.
    left_alone: list[str] = field(default_factory=list)


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


def _temp_name(final: str) -> str:
    """The temporary name of `final`, in its directory: fixed length, whatever the
    name's length (a name may already be 255 bytes)."""
    head, name = os.path.split(final)
    digest = fmt.object_id(os.fsencode(name)).hex()[:24]
    return os.path.join(head, TEMP_PREFIX + digest)


def _real_dir(path: str) -> bool:
    """Whether `path` is a directory itself, not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _make_dir(path: str, force: bool = False) -> None:
    """A directory at `path` to fill: made 0700, or an existing one opened to its
    owner (a version's 0555 or 0000 directory, from an earlier get, must take the
    rerun's files; its mode is set again at the end). With `force`, a file or
    symlink there is replaced."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.mkdir(path, 0o700)
        return
    if not stat.S_ISDIR(st.st_mode):
        if not force:
            raise UsageError(
                f"{path} exists and is not a directory; --force replaces it with the "
                "version's directory"
            )
        os.unlink(path)
        os.mkdir(path, 0o700)
        return
    if st.st_mode & 0o700 != 0o700:
        os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700)


def _drop_leftovers(directory: str) -> None:
    """Remove the temporary files an interrupted get left in `directory`."""
    with os.scandir(directory) as it:
        for d in it:
            if d.name.startswith(TEMP_PREFIX) and d.is_file(follow_symlinks=False):
                os.unlink(d.path)


def _same_file(path: str, e: fmt.Entry) -> bool:
    """Whether the regular file at `path` holds exactly the entry's bytes: its size,
    then each chunk's BLAKE3 against the chunk ids the version names."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != e.size:
            return False
        pos = 0
        for ref in e.chunks:  # a chunk is at most 4 MiB: one read, one hash
            block = os.pread(fd, ref.length, pos)
            if len(block) != ref.length or fmt.chunk_id(block) != ref.id:
                return False
            pos += ref.length
        return True
    finally:
        os.close(fd)


class _LeftAlone(Exception):
    """A path --force will not replace (a directory with files in it)."""


def _existing(path: str, e: fmt.Entry, force: bool) -> bool:
    """For an entry whose final name is taken: True to keep what is there (it is the
    entry's content), False to write it anew (nothing there, or `force`)."""
    if not os.path.lexists(path):
        return False
    if e.is_symlink:
        if os.path.islink(path) and os.fsencode(os.readlink(path)) == e.target:
            return True
    elif _same_file(path, e):
        return True
    if _real_dir(path):
        if force and not os.listdir(path):
            os.rmdir(path)  # an empty directory: nothing of the user's is lost
            return False
        what = f"{path} is a directory; the version has a {fmt.KIND_NAMES[e.kind]} there"
        if force:  # the rest of the get goes on; this one is named at the end
            raise _LeftAlone(f"{what}; it is not empty, so --force leaves it to you")
        raise UsageError(what)
    if force:
        return False
    raise UsageError(f"{path} exists and differs from the version; --force replaces such files")


def _create_file(path: str, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _mode(e: fmt.Entry) -> int:
    """The mode a get gives: the permission bits, and a directory's setgid and sticky
    bits (a group's shared directory, a /tmp-like one). A file's setuid and setgid
    are dropped, as the mount drops them: data from a store makes no privileged
    program."""
    return e.mode & (0o3777 if e.is_dir else 0o777)


def _finish(path: str, e: fmt.Entry) -> None:
    try:
        os.chmod(path, _mode(e), follow_symlinks=False)
    except PermissionError:  # setgid on a directory of a group we are not in
        os.chmod(path, e.mode & 0o777, follow_symlinks=False)
    os.utime(path, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)


def _link(final: str, e: fmt.Entry) -> None:
    """A symlink at `final` with the entry's target and mtime, replacing a file there
    atomically (rename over it)."""
    temp = _temp_name(final)
    os.symlink(e.target, temp)
    os.utime(temp, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)
    os.replace(temp, final)


def get(
    version: Version,
    path: str,
    out: str,
    *,
    workers: int = 8,
    force: bool = False,
    on_bytes: Callable[[int], None] | None = None,
) -> GetResult:
    """Write `path` of `version` into `out` (a directory, created if missing; or, for
    one file, its new name). Resumes into an `out` that an interrupted get left."""
    found = version.stat(path)
    result = GetResult(0, 0, 0, 0)
    dirs: list[tuple[str, fmt.Entry]] = []
    top: fmt.Entry | None = None  # OUT's entry, when it is a directory of the version
    entries: Iterable[tuple[str, tree.Found]]
    if found is not None and not found.entry.is_dir:
        # One file or symlink: OUT is its new name, or a directory to put it in.
        dest = (
            os.path.join(out, found.entry.name.decode("utf-8", "surrogateescape"))
            if _real_dir(out)
            else out
        )
        entries = [(dest, found)]
    else:
        if found is not None:  # a directory of the version: its mode and mtime at the end
            top = found.entry
            _make_dir(out)  # 0700 while it fills
        elif not os.path.lexists(out):
            # The version's root has neither: what mkdir gives, from the start, so
            # that a rerun after an interruption cannot leave it 0700.
            os.mkdir(out, 0o777)
        else:
            _make_dir(out)  # checks that it is a real directory
        _drop_leftovers(out)
        entries = _files_below(version, path, out, dirs, force)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vfs-get")
    try:
        batch: list[tuple[str, tree.Found]] = []
        size = 0
        for p, f in entries:  # a batch at a time: memory and temp files stay bounded
            batch.append((p, f))
            size += f.entry.size if f.entry.is_file else 0
            if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
                _get_batch(version, batch, pool, force, result, on_bytes)
                batch, size = [], 0
        _get_batch(version, batch, pool, force, result, on_bytes)
    except BaseException:
        # Cut short: the directories made so far get their modes now (not 0700 until
        # a rerun); their mtimes are set by the run that completes them.
        for p, e in dirs:
            with contextlib.suppress(OSError):
                os.chmod(p, _mode(e))
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    result.dirs = len(dirs)

    for p, e in reversed(dirs):  # children first, so their writes don't bump our mtime
        _finish(p, e)
    if top is not None:
        _finish(out, top)
    return result


def _files_below(
    version: Version, path: str, out: str, dirs: list[tuple[str, fmt.Entry]], force: bool
) -> Iterator[tuple[str, tree.Found]]:
    """The files and symlinks below `path`, in path order, with their place in OUT;
    each directory is made (0700 while it fills) as the walk reaches it, and noted in
    `dirs` for its mode and mtime at the end."""
    for rel, f in version.walk(path):
        p = os.path.join(out, os.fsdecode(rel))
        if f.entry.is_dir:
            _make_dir(p, force)
            _drop_leftovers(p)
            dirs.append((p, f.entry))
        else:
            yield p, f


def _get_batch(
    version: Version,
    entries: list[tuple[str, tree.Found]],
    pool: ThreadPoolExecutor,
    force: bool,
    result: GetResult,
    on_bytes: Callable[[int], None] | None,
) -> None:
    """Write one batch of files and symlinks (in path order): keep what is in place,
    fetch the rest by units, rename each file into place once it is whole."""
    todo: list[tuple[str, tree.Found]] = []
    for p, f in entries:
        e = f.entry
        try:
            kept = _existing(p, e, force)
        except _LeftAlone as why:
            result.left_alone.append(str(why))
            continue
        if kept:
            # The bytes are the version's; its mode and mtime may not be (a get of
            # another version into the same OUT): they are set as for a new file.
            if e.is_symlink:
                os.utime(p, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)
            else:
                _finish(p, e)
            result.kept += 1
            result.kept_bytes += e.size if not e.is_symlink else 0
            if on_bytes and not e.is_symlink:
                on_bytes(e.size)
        elif e.is_symlink:
            _link(p, e)
            result.symlinks += 1
        else:
            todo.append((p, f))

    slices: list[_Slice] = []
    # A file's slices still to write; at 0 it is finished and renamed into place.
    remaining: dict[str, int] = {}
    entry_of: dict[str, fmt.Entry] = {}
    for p, f in todo:
        e = f.entry
        temp = _temp_name(p)
        if os.path.lexists(temp):  # a leftover of a single-file get
            os.unlink(temp)
        result.files += 1
        result.bytes += e.size
        entry_of[temp] = e
        first = len(slices)
        offset = 0
        cur: list[Wanted] = []
        cur_bytes = 0
        for w in version.wanted(f):
            if cur and cur_bytes + w.ref.length > UNIT_BYTES:
                slices.append(_Slice(temp, offset, cur))
                offset += cur_bytes
                cur, cur_bytes = [], 0
            cur.append(w)
            cur_bytes += w.ref.length
        if cur:
            slices.append(_Slice(temp, offset, cur))
        remaining[temp] = len(slices) - first
    final_of = {_temp_name(p): p for p, _ in todo}

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

    lock = threading.Lock()
    # Temporary files are made when their first bytes come, not for the whole batch
    # up front: an interrupt leaves only those of the units under way, which go.
    created: set[str] = set()
    damaged: dict[str, str] = {}  # temp -> why: damaged in the store, not written

    def create(temp: str) -> None:
        with lock:  # held while it is made: another slice of it may be about to write
            if temp not in created:
                _create_file(temp, entry_of[temp].size)
                created.add(temp)

    def done(temp: str) -> None:
        create(temp)  # an empty file has no slice to make it
        _finish(temp, entry_of[temp])
        os.replace(temp, final_of[temp])
        with lock:
            created.discard(temp)

    stop = threading.Event()  # set on an interrupt: units in flight write no more

    def run(unit: list[_Slice]) -> None:
        if stop.is_set():
            return
        try:
            got = version.chunks.fetch([w for s in unit for w in s.wanted])
        except CorruptObject as e:
            # Damaged bytes in the store: the unit's other files are fetched on their
            # own and written; those the damage is in are named at the end.
            if len(unit) > 1:
                for s in unit:
                    run([s])
            else:
                with lock:
                    damaged.setdefault(unit[0].path, str(e))
            return
        for s in unit:
            if stop.is_set():
                return
            create(s.path)
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
            with lock:
                remaining[s.path] -= 1
                last = remaining[s.path] == 0 and s.path not in damaged
            if last:
                done(s.path)
            if on_bytes:
                on_bytes(pos - s.offset)

    futures = []
    try:
        for temp, left in remaining.items():
            if left == 0:  # empty files have no slices
                done(temp)
        futures = [pool.submit(run, unit) for unit in units]
        for fut in futures:
            fut.result()
    except BaseException:
        # Interrupted or failed: let the units in flight end, start no other. What
        # is under a final name is complete; the temporary files of the rest go (a
        # rerun would drop them too).
        stop.set()
        for fut in futures:
            fut.cancel()
        wait(futures)  # the ones under way end (without raising here)
        raise
    finally:
        for temp in list(created):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
    if damaged:
        result.files -= len(damaged)
        result.bytes -= sum(entry_of[t].size for t in damaged)
        result.damaged.extend((final_of[t], why) for t, why in sorted(damaged.items()))
