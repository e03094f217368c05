"""The segment files of the cache directory: ``segments/`` (see vfs.cache.layout).

This module owns the files and their modes; it knows nothing of the index. Chunks
live in large append-only segment files, written in the order they are put, so that
a file's chunks and a pack window's chunks sit side by side on disk and the kernel's
readahead runs across them.

- Writing: every ChunkCache appends to a segment of its own (SegmentWriter), created
  with O_EXCL under a random 64-bit name that is never reused, so data writes need no
  cross-process lock. The writer holds a shared flock() on the segment while it may
  still index chunks in it; in_use() asks for it, so no one drops a segment that a
  live writer will still name, and a kill -9 releases it. A writer moves to a new
  segment once its current one reaches its target size.
- Large chunks bypass the page cache: a batch of DIRECT_MIN bytes or more whose
  chunks are all DIRECT_CHUNK or larger (a large file read ahead from the store) is
  copied into the writer's one aligned buffer and written with O_DIRECT, at a 4 KiB
  boundary (the hole before it, and the tail of its last block, are dead bytes).
  Through the page cache, each such byte cost the mount a copy into a newly
  allocated page, and the page stayed cached twice: in the segment, and in the
  mounted file that was being read. Small chunks (small files, tree pages), which
  warm reads ask the cache for again soon, go through the page cache as before, as
  does everything where the filesystem refuses O_DIRECT.
- Reading: SegmentFiles keeps a small table of open read fds, leased per read so
  that no fd is closed under a reader; neighbouring chunks of one segment are read
  with one preadv() into a pooled, reused buffer. Every chunk is checked
  against the size and xxh3 its index entry records.

Segment files are not fsynced: after a power loss a segment may be short or
garbage, the xxh3 check on every read catches that, and a cache may lose data.

A group-writable or setgid root is shared by a group: everything created under it
is then made usable by every member, whatever the umask.

Concurrency: SegmentFiles' fd table is guarded by its own lock, held only for dict
updates and open()/close(); a SegmentWriter's lock is held across the append of one
batch (a pwritev) and never across an LMDB call. Which segment may be removed when
is ordered by the index (vfs.cache.index).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import logging
import mmap
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import xxhash

from vfs.cache import layout
from vfs.cache.buffers import RunBuffers

__all__ = [
    "MISSING",
    "SEGMENT_BYTES",
    "Lease",
    "SegmentFiles",
    "SegmentWriter",
    "age",
    "check",
    "pread_all",
    "segment_target",
]

log = logging.getLogger(__name__)

# What a check says of a chunk whose segment is gone.
MISSING = "is missing"
# A writer moves to a new segment past this many bytes: large enough for readahead to
# run across a file's chunks, small enough that eviction frees the cache in steps.
SEGMENT_BYTES = 32 * 1024 * 1024
# A small cache gets smaller segments, so that whole-segment eviction can keep it
# near its cap: about 1/16 of the cap, never below this.
MIN_SEGMENT_BYTES = 64 * 1024
# Read fds kept open per process. An fd keeps the disk space of a segment another
# process dropped until this one notices (at its next read or write of the cache),
# so the table stays small.
MAX_OPEN_SEGMENTS = 16
# Neighbouring chunks of a segment are read in one call when the hole between them
# is at most this, and the call reads at most RUN_BYTES.
RUN_GAP = 128 * 1024
RUN_BYTES = 4 * 1024 * 1024
# Read buffers kept for reuse (RUN_BYTES each): a bound on what reads keep resident,
# however many threads read.
_POOLED_BUFFERS = 4
# Batches written around the page cache (see the module docstring), and the largest
# the writer's aligned buffer grows to (a larger batch goes through the page cache).
DIRECT_MIN = 1024 * 1024
DIRECT_CHUNK = 128 * 1024
DIRECT_MAX = 32 * 1024 * 1024
# O_DIRECT wants the file offset, the length and the memory aligned to the device's
# logical block; a page is a multiple of every common one.
_ALIGN = 4096


def segment_target(max_bytes: int) -> int:
    """The size at which a writer of a cache capped at `max_bytes` moves on."""
    return max(MIN_SEGMENT_BYTES, min(SEGMENT_BYTES, max_bytes // 16))


def check(data: bytes | memoryview, size: int, checksum: bytes) -> str | None:
    """What is wrong with a chunk read as `data`, or None."""
    if len(data) != size:
        return f"has {len(data)} bytes, not {size}"
    if xxhash.xxh3_128_digest(data) != checksum:
        return "fails its checksum"
    return None


@dataclass
class _Fd:
    fd: int
    users: int = 0
    doomed: bool = False


class SegmentFiles:
    """The segment files under `root`/segments, a table of open read fds, and the
    modes of what the cache creates."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.group = bool(os.stat(root).st_mode & (stat.S_IWGRP | stat.S_ISGID))
        self.dir_mode = 0o2775 if self.group else 0o700
        self.file_mode = 0o664 if self.group else 0o600
        self.seg_dir = layout.segments_dir(root)
        self._lock = threading.Lock()
        self._fds: OrderedDict[int, _Fd] = OrderedDict()
        self._buffers: list[bytearray] = []  # guarded by _lock
        self.runs = RunBuffers()  # for runs handed on as views (read_lent)

    def path(self, seg: int) -> str:
        return os.path.join(self.seg_dir, layout.segment_name(seg))

    # -- reading ---------------------------------------------------------------------

    @contextlib.contextmanager
    def open_fd(self, seg: int) -> Iterator[int]:
        """A read fd of the segment, from the table; FileNotFoundError if it is gone."""
        with self._lock:
            h = self._fds.get(seg)
            if h is None:
                h = self._fds[seg] = _Fd(os.open(self.path(seg), os.O_RDONLY | os.O_CLOEXEC))
                while len(self._fds) > MAX_OPEN_SEGMENTS:
                    self._doom(self._fds.popitem(last=False)[1])
            else:
                self._fds.move_to_end(seg)
            h.users += 1
        try:
            yield h.fd
        finally:
            with self._lock:
                h.users -= 1
                if h.doomed and not h.users:
                    os.close(h.fd)

    def forget(self, segs: Sequence[int]) -> None:
        """Close the read fds of dropped segments (once their readers are done), so
        that their disk space is freed."""
        with self._lock:
            for seg in segs:
                h = self._fds.pop(seg, None)
                if h is not None:
                    self._doom(h)

    def forget_unlinked(self) -> None:
        """Close the read fds of segments another process has removed."""
        with self._lock:
            gone = [s for s, h in self._fds.items() if os.fstat(h.fd).st_nlink == 0]
        self.forget(gone)

    def close(self) -> None:
        self.forget(list(self._fds))

    def _doom(self, h: _Fd) -> None:
        h.doomed = True
        if not h.users:
            os.close(h.fd)

    @contextlib.contextmanager
    def read_run(self, fd: int, offset: int, length: int) -> Iterator[memoryview]:
        """`length` bytes at `offset` (fewer at the end of the file), read with one
        preadv() into a pooled buffer, valid within the `with` only."""
        with self._lock:
            buf = self._buffers.pop() if self._buffers else None
        if buf is None or len(buf) < length:
            buf = bytearray(max(length, RUN_BYTES))
        view = memoryview(buf)
        try:
            got = 0
            while got < length:
                n = os.preadv(fd, [view[got:length]], offset + got)
                if n == 0:
                    break
                got += n
            with view[:got] as out:
                yield out
        finally:
            view.release()
            with self._lock:
                if len(self._buffers) < _POOLED_BUFFERS and len(buf) <= RUN_BYTES:
                    self._buffers.append(buf)

    def read_lent(self, fd: int, offset: int, length: int) -> bytes | memoryview:
        """`length` bytes at `offset` (fewer at the end of the file) to keep as views:
        read into a buffer of `runs`, reused once no view of it is alive (a read-only
        view of it), or into a new bytes object if the pool has none for it."""
        view = self.runs.lend(length)
        if view is None:
            return pread_all(fd, length, offset)
        try:
            got = 0
            while got < length:
                n = os.preadv(fd, [view[got:]], offset + got)
                if n == 0:
                    break
                got += n
            return view[:got].toreadonly()
        finally:
            view.release()  # the buffer is free again once the views returned are gone

    def read_checked(
        self, seg: int, offset: int, size: int, checksum: bytes
    ) -> tuple[bytes | None, str | None]:
        """(bytes, None) if the segment holds `size` bytes at `offset` hashing to
        `checksum`, else (None, what is wrong). Reads with a fresh fd."""
        try:
            fd = os.open(self.path(seg), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None, MISSING
        except OSError as e:
            return None, f"cannot be read ({e})"
        try:
            data = pread_all(fd, size, offset)
        except OSError as e:
            return None, f"cannot be read ({e})"
        finally:
            os.close(fd)
        reason = check(data, size, checksum)
        return (data, None) if reason is None else (None, reason)

    # -- the directory ---------------------------------------------------------------

    def exists(self, seg: int) -> bool:
        return os.path.exists(self.path(seg))

    def in_use(self, seg: int) -> bool:
        """Whether a live writer holds the segment (it may still index chunks in it)."""
        try:
            fd = os.open(self.path(seg), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # and with it the probe's lock
        return False

    def size(self, seg: int) -> int:
        try:
            return os.stat(self.path(seg)).st_size
        except FileNotFoundError:
            return -1

    def segment_files(self) -> tuple[dict[int, str], list[str]]:
        """(segment number -> path, other files) of segments/."""
        segs: dict[int, str] = {}
        other: list[str] = []
        with os.scandir(self.seg_dir) as it:
            for f in it:
                seg = layout.parse_segment_name(f.name)
                if seg is None:
                    other.append(f.path)
                else:
                    segs[seg] = f.path
        return segs, other

    def unlink(self, seg: int) -> bool:
        self.forget([seg])
        return unlink(self.path(seg))

    def mkdir(self, path: str) -> None:
        try:
            os.mkdir(path, self.dir_mode)
        except FileExistsError:
            return
        if self.group:
            self.chmod(path, self.dir_mode)

    def chmod(self, path: str, mode: int) -> None:
        try:
            if stat.S_IMODE(os.stat(path).st_mode) != mode:
                os.chmod(path, mode)
        except PermissionError:  # another member owns it; its creator set the mode
            log.debug("cannot chmod %s", path)


@dataclass
class _Open:
    """A segment a writer appends to."""

    seg: int
    fd: int
    dfd: int = -1  # the same file opened with O_DIRECT, if the filesystem allows it
    end: int = 0
    pending: int = 0  # appended batches whose index transaction has not ended
    retired: bool = False


@dataclass
class Lease:
    """Where an append put its chunks: hand it back to SegmentWriter.done() once the
    index transaction naming them has ended (committed or not). `bytes` is what the
    segment grew by: the chunks, and the alignment of a direct write around them."""

    seg: int
    offsets: list[int]
    bytes: int
    _open: _Open = field(repr=False)
    taken_back: bool = False
    start: int = 0  # the segment's end before the append


class SegmentWriter:
    """The segment one ChunkCache appends to. Thread-safe.

    A segment is retired once it reaches `target` bytes, and its fd (with its flock)
    closed once no appended batch awaits its index transaction: until then, in_use()
    keeps others from dropping it."""

    def __init__(self, files: SegmentFiles, target: int) -> None:
        self.files = files
        self.target = target
        self._lock = threading.Lock()
        self._cur: _Open | None = None
        self._direct = True  # until the filesystem refuses O_DIRECT
        self._stage: mmap.mmap | None = None  # the aligned buffer of direct writes

    def append(self, datas: Sequence[bytes | memoryview]) -> Lease:
        """Write `datas` one after another at the end of the current segment."""
        total = sum(len(d) for d in datas)
        with self._lock:
            cur = self._cur
            if cur is None:
                cur = self._cur = self._create()
            try:
                start, end = cur.end, -1
                if cur.dfd >= 0 and _goes_direct(datas, total):
                    start = _aligned(cur.end)
                    end = self._write_direct(cur, datas, total, start)
                if end < 0:  # not direct, or O_DIRECT refused
                    start = cur.end
                    _pwrite_all(cur.fd, datas, start)
                    end = start + total
            except BaseException:
                # Torn bytes, never indexed: leave them and the segment behind.
                self._retire(cur)
                self._cur = None
                raise
            offsets = list(itertools.accumulate((len(d) for d in datas[:-1]), initial=start))
            lease = Lease(cur.seg, offsets if datas else [], end - cur.end, cur, start=cur.end)
            cur.end = end
            cur.pending += 1
            if cur.end >= self.target:  # full: free to go once this batch is indexed
                self._retire(cur)
                self._cur = None
            return lease

    def _write_direct(
        self, cur: _Open, datas: Sequence[bytes | memoryview], total: int, offset: int
    ) -> int:
        """Copy `datas` into the aligned buffer and write it whole at `offset` (aligned)
        with O_DIRECT, its last block filled with zeros; returns where it ended, or
        -1 if the filesystem refused O_DIRECT before a byte moved (EINVAL: an
        alignment it wants larger), and from now on this writer goes without."""
        padded = _aligned(total)
        if self._stage is None or len(self._stage) < padded:
            if self._stage is not None:
                self._stage.close()
            self._stage = mmap.mmap(-1, max(padded, DIRECT_MIN))  # page-aligned
        view = memoryview(self._stage)
        try:
            pos = 0
            for d in datas:
                view[pos : pos + len(d)] = d
                pos += len(d)
            view[total:padded] = bytes(padded - total)
            done = 0
            while done < padded:
                try:
                    n = os.pwritev(cur.dfd, [view[done:padded]], offset + done)
                except OSError as e:
                    if e.errno != errno.EINVAL or done:
                        raise
                    log.info(
                        "chunk cache: O_DIRECT refused (%s): writing through the page cache", e
                    )
                    self._direct = False
                    os.close(cur.dfd)
                    cur.dfd = -1
                    return -1
                if n <= 0 or n % _ALIGN:
                    raise OSError(errno.EIO, f"short direct write: {n} of {padded - done} bytes")
                done += n
        finally:
            view.release()
        return offset + padded

    def take_back(self, lease: Lease) -> bool:
        """Cut the bytes of `lease` off its segment if they are still its tail (no
        append came after them), so that nothing is left of a batch the index will
        not take; False if they are not. Idempotent; call it before done()."""
        with self._lock:
            if lease.taken_back:
                return True
            o = lease._open
            if o.end != lease.start + lease.bytes:
                return False
            os.ftruncate(o.fd, lease.start)
            o.end = lease.start
            lease.taken_back = True
            return True

    def done(self, lease: Lease) -> None:
        with self._lock:
            o = lease._open
            o.pending -= 1
            if o.retired and not o.pending:
                _close(o)

    def close(self) -> None:
        with self._lock:
            if self._cur is not None:
                self._retire(self._cur)
                self._cur = None
            if self._stage is not None:
                self._stage.close()
                self._stage = None

    def _retire(self, o: _Open) -> None:
        o.retired = True
        if not o.pending:
            _close(o)

    def _create(self) -> _Open:
        files = self.files
        while True:
            seg = int.from_bytes(os.urandom(8), "big")
            path = files.path(seg)
            try:
                fd = os.open(
                    path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, files.file_mode
                )
            except FileExistsError:
                continue  # 1 in 2**64: draw again
            except FileNotFoundError:  # segments/ removed under us (clear of a layout)
                files.mkdir(files.seg_dir)
                continue
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if files.group:
                os.fchmod(fd, files.file_mode)
        except BaseException:
            os.close(fd)
            unlink(path)
            raise
        dfd = -1
        if self._direct and hasattr(os, "O_DIRECT"):
            try:
                dfd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
            except OSError as e:  # EINVAL: a filesystem without O_DIRECT (some FUSE ones)
                log.debug("chunk cache: no O_DIRECT on %s: %s", files.seg_dir, e)
                self._direct = False
        return _Open(seg, fd, dfd)


def _aligned(n: int) -> int:
    """`n` rounded up to the alignment of direct writes."""
    return -(-n // _ALIGN) * _ALIGN


def _goes_direct(datas: Sequence[bytes | memoryview], total: int) -> bool:
    """Whether a batch is written around the page cache (see the module docstring)."""
    return DIRECT_MIN <= total <= DIRECT_MAX and all(len(d) >= DIRECT_CHUNK for d in datas)


def _close(o: _Open) -> None:
    os.close(o.fd)
    if o.dfd >= 0:
        os.close(o.dfd)
        o.dfd = -1


def _pwrite_all(fd: int, datas: Sequence[bytes | memoryview], offset: int) -> None:
    views = [memoryview(d) for d in datas if len(d)]
    while views:
        n = os.pwritev(fd, views[:512], offset)  # IOV_MAX is 1024
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def pread_all(fd: int, size: int, offset: int) -> bytes:
    """Up to `size` bytes at `offset`: read on after a short read, until the end."""
    data = os.pread(fd, size, offset)
    if len(data) >= size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size and (more := os.pread(fd, size - got, offset + got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def age(path: str, now: float) -> float:
    try:
        return now - os.stat(path).st_mtime
    except FileNotFoundError:
        return -1.0


def unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        log.warning("chunk cache: cannot remove %s: %s", path, e)
        return False
    return True
