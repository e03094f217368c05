"""The FUSE adapter: the only module that imports pyfuse3.

A thin pyfuse3.Operations over vfs.mount.core.FsCore, in the shape of mountpoint-s3's
fuse.rs: every handler calls the core, converts the answer, or maps the error
through ERRNO_TABLE. No handler lets anything but FUSEError escape, since pyfuse3
would end the mount: an expected error is logged at DEBUG (ENOENT and the like) or
WARNING (EIO from the store), an unexpected one with its traceback at ERROR, and is
answered EIO. Cancellation (trio.Cancelled, a BaseException) still propagates: it
only happens when the mount is shutting down.

Everything that writes answers EROFS (the mount is also made `ro`, so the kernel
refuses most writes before they get here).

Concurrency: handlers run as trio tasks on the one trio thread (pyfuse3.main); the
blocking kernel notifications of `switch` run in a worker thread, since they wait
for requests that the trio thread must keep serving.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import select
import types
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3
import trio

from vfs.errors import (
    AmbiguousRef,
    BackendError,
    CorruptObject,
    NotFound,
    RefConflict,
    UsageError,
    VfsError,
)
from vfs.mount.core import FsCore, SwitchResult
from vfs.mount.errors import (
    BadHandle,
    InvalidArgument,
    IsADirectory,
    NoAttribute,
    NotADirectory,
    ReadOnly,
    XattrsOff,
)
from vfs.mount.namespace import Attr

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

# The one errno table. First match in order wins, so subclasses come before bases.
ERRNO_TABLE: tuple[tuple[type[BaseException], int], ...] = (
    (NotFound, errno.ENOENT),
    (NotADirectory, errno.ENOTDIR),
    (IsADirectory, errno.EISDIR),
    (InvalidArgument, errno.EINVAL),
    (ReadOnly, errno.EROFS),
    (NoAttribute, errno.ENODATA),
    # The kernel remembers ENOSYS for getxattr and listxattr and asks no more, for
    # any name on any inode of the mount: `ls -l` then costs no request per entry.
    (XattrsOff, errno.ENOSYS),
    (BadHandle, errno.EBADF),
    (AmbiguousRef, errno.ENOENT),
    (UsageError, errno.EINVAL),
    (RefConflict, errno.EIO),
    (CorruptObject, errno.EIO),
    (BackendError, errno.EIO),  # includes loader.FetchError: failures and timeouts
    (VfsError, errno.EIO),
)
# Answers that are part of normal operation, not worth a WARNING.
_QUIET = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EINVAL,
        errno.EROFS,
        errno.ENODATA,
        errno.ENOSYS,
    }
)


def errno_for(exc: BaseException) -> int:
    for cls, code in ERRNO_TABLE:
        if isinstance(exc, cls):
            return code
    return errno.EIO


# The requests counted, by handler name; each has its key in Operations.requests from
# the start, so that counting is a plain dict's item update.
_COUNTED: list[str] = ["forget", "flush"]


def _handler(
    fn: Callable[Concatenate[Operations, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[Operations, _P], Coroutine[Any, Any, _T]]:
    """Count the request (Operations.requests, in the stats); call the core; map
    any Exception to a FUSEError through ERRNO_TABLE."""
    name = fn.__name__
    _COUNTED.append(name)

    @functools.wraps(fn)
    async def wrapper(self: Operations, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        self.requests[name] += 1
        try:
            return await fn(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except VfsError as e:
            code = errno_for(e)
            level = logging.DEBUG if code in _QUIET else logging.WARNING
            log.log(level, "%s: %s (answering %s)", fn.__name__, e, errno.errorcode[code])
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("%s failed unexpectedly (answering EIO)", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _entry(a: Attr) -> pyfuse3.EntryAttributes:
    e = pyfuse3.EntryAttributes()
    e.st_ino = a.ino
    e.generation = 0
    e.entry_timeout = a.ttl
    e.attr_timeout = a.ttl
    if a.ino == 0:
        return e  # a negative entry, cached for entry_timeout
    e.st_mode = a.mode
    e.st_nlink = a.nlink
    e.st_uid = a.uid
    e.st_gid = a.gid
    e.st_rdev = 0
    e.st_size = a.size
    e.st_blksize = 1024 * 1024  # tells cp, cat and stdio to read in 1 MiB blocks
    e.st_blocks = a.blocks
    e.st_mtime_ns = a.mtime_ns
    e.st_ctime_ns = a.mtime_ns
    e.st_atime_ns = a.mtime_ns
    return e


def _read_only() -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(errno.EROFS)


class Operations(pyfuse3.Operations):
    """pyfuse3 handlers over an FsCore."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, core: FsCore) -> None:
        super().__init__()
        self.core = core
        # Requests by handler name, counted by _handler; the core shows them in stats.
        self.requests = dict.fromkeys(_COUNTED, 0)
        core.requests = self.requests
        # One reply buffer for every read that spans chunks. pyfuse3 writes a read's
        # reply (fuse_reply_buf) as soon as read() returns, with no checkpoint in
        # between, so no other read runs before its bytes are out. A fresh 1 MiB
        # bytes per reply cost 256 page faults: the daemon mmaps buffers above
        # 128 KiB (mount._tune_malloc), and a read from the local cache spent a
        # third of its time faulting them in.
        self._reply = bytearray()

    @_handler
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return _entry(await self.core.lookup(parent_inode, name))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        self.requests["forget"] += 1
        try:
            self.core.forget(inode_list)
        except Exception:  # forget must not raise at all
            log.exception("forget failed unexpectedly")

    @_handler
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return _entry(await self.core.getattr(inode))

    @_handler
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.core.readlink(inode)

    @_handler
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return await self.core.opendir(inode)

    @_handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        def reply(name: bytes, attr: Attr, nxt: int) -> bool:
            return pyfuse3.readdir_reply(token, name, _entry(attr), nxt)

        await self.core.readdir(fh, start_id, reply)

    @_handler
    async def releasedir(self, fh: int) -> None:
        self.core.releasedir(fh)

    @_handler
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        fh = await self.core.open(inode, flags)
        # Versions never change, so pages the kernel cached for this inode stay valid.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @_handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        parts = await self.core.read_parts(fh, off, size)
        if len(parts) == 1:
            return parts[0]  # type: ignore[return-value]  # pyfuse3 takes any buffer
        n = sum(map(len, parts))
        if len(self._reply) < n:
            self._reply = bytearray(n)  # a new one: a view may still hold the old
        out = memoryview(self._reply)
        at = 0
        for p in parts:
            out[at : at + len(p)] = p
            at += len(p)
        return out[:n]  # type: ignore[return-value]

    async def flush(self, fh: int) -> None:
        # Answered ENOSYS on purpose: the kernel then sends FLUSH no more, which saved
        # a round trip on every close() (warm small-file reads: 8k -> 12.5k files/s,
        # level with a bare passthrough). Counted, to show it comes once per mount.
        self.requests["flush"] += 1
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @_handler
    async def release(self, fh: int) -> None:
        self.core.release(fh)

    @_handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        return None

    @_handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    @_handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = self.core.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = s.block_size
        out.f_frsize = s.block_size
        out.f_blocks = s.blocks
        out.f_bfree = 0
        out.f_bavail = 0
        out.f_files = s.files
        out.f_ffree = 0
        out.f_favail = 0
        out.f_namemax = s.name_max
        return out

    @_handler
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.core.getxattr(inode, name)

    @_handler
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        return self.core.listxattr(inode)

    # -- every write answers EROFS -----------------------------------------------------

    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> Any:
        raise _read_only()

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> Any:
        raise _read_only()

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Any:
        raise _read_only()

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        raise _read_only()

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        raise _read_only()

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Any:
        raise _read_only()

    async def rename(
        self, p_old: int, n_old: bytes, p_new: int, n_new: bytes, flags: int, ctx: Any
    ) -> None:
        raise _read_only()

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
        raise _read_only()

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        raise _read_only()

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any) -> Any:
        raise _read_only()

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        raise _read_only()

    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        raise _read_only()


# --- running a mount ---------------------------------------------------------------------


def mount_options(fsname: str, allow_other: bool) -> set[str]:
    # nosuid and nodev are libfuse's defaults too; said here so that no setuid bit
    # or device a forged version might carry can ever take effect.
    opts = {"ro", "nosuid", "nodev", "default_permissions", "noatime"}
    opts |= {f"fsname={fsname}", "subtype=vfs"}
    if allow_other:
        opts.add("allow_other")
    return opts


class _ForgottenReplies(logging.Filter):
    """pyfuse3 logs ERROR when the kernel no longer waits for an answer (the request
    was interrupted, or a lazily unmounted filesystem went away with a read or
    release in flight): libfuse then fails the reply with ENOENT. Nothing is lost
    and nothing is wrong with the mount, so that one message is DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "fuse_reply_* failed with No such file" in (
            record.getMessage()
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger("pyfuse3").isEnabledFor(logging.DEBUG)
        return True


def mount(ops: Operations, mountpoint: str, options: set[str]) -> None:
    """Mount (the mount(2) happens here); requests are served once `serve` runs."""
    pyfuse3_log = logging.getLogger("pyfuse3")
    if not any(isinstance(f, _ForgottenReplies) for f in pyfuse3_log.filters):
        pyfuse3_log.addFilter(_ForgottenReplies())
    try:
        pyfuse3.init(ops, mountpoint, options)
    except RuntimeError as e:  # fusermount3 has printed why to stderr (the log)
        hint = (
            "; --allow-other needs user_allow_other in /etc/fuse.conf"
            if "allow_other" in options and os.geteuid() != 0
            else ""
        )
        raise VfsError(f"cannot mount {mountpoint}: {e}{hint}") from None


class _ReaderLock:
    """The lock pyfuse3's worker tasks take in turn to wait for the next request on
    /dev/fuse, without trio.Lock's costs. Every request passes through it once, and
    trio.Lock's acquire and release were 21% of the daemon's Python time while it
    answered warm opens and releases (py-spy --gil): a free acquire is a trip through
    the scheduler (cancel_shielded_checkpoint), and each acquire and release updates
    the global parking-lot breakers (a WeakKeyDictionary). Here a free acquire is a
    flag, and a release with tasks waiting hands the lock to the first of them, which
    wakes holding it, as trio.Lock does.

    Cancellation is as with trio.Lock: a task cancelled while parked never held the
    lock; one woken by a release holds it and gives it back at its `async with`'s
    end. pyfuse3 uses the lock only as `async with`, on the trio thread."""

    __slots__ = ("_held", "_lot")

    def __init__(self) -> None:
        self._held = False
        self._lot = trio.lowlevel.ParkingLot()

    async def __aenter__(self) -> None:
        if self._held:
            await self._lot.park()  # woken by __aexit__, holding the lock
        else:
            self._held = True

    @property
    def waiting(self) -> bool:
        """Whether a task is parked for the lock (it gets it at the next release)."""
        return bool(self._lot)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._lot:
            self._lot.unpark()  # the first waiter now holds it
        else:
            self._held = False


class _Requests:
    """pyfuse3's wait for the next request on /dev/fuse (its only use of
    `trio.lowlevel.wait_readable`), answered at once when a request is already
    queued. trio's wait arms the descriptor in its epoll set (an epoll_ctl), parks
    the task, and wakes it from the next epoll_wait: for a request that is already
    there, about a fifth of the daemon's CPU on a warm open or release. Under load the
    queue is rarely empty (a `release` is sent while its reader goes on to the next
    `open`), so a zero-timeout poll(2) answers most waits. Only the task holding
    pyfuse3's reader lock waits, and it reads the request before anything else
    runs, so a request seen here is the one it reads. Anything but a plain POLLIN
    (an error, a closed descriptor) is left to trio's wait, which reports it as
    before.

    A steady stream of requests must not starve the mount's other tasks (the
    fetches' drivers, the control socket). With other pyfuse3 tasks parked on the
    reader lock, the task returns at once: releasing the lock hands it to the first
    of them, so this task parks when it comes back for the next request, whatever
    its handler does, and everything runnable runs then. With none parked it
    yields once here (a checkpoint, also a cancel point, as trio's wait is).

    Measured (4,000 cached files of 10-30 KB, open, read, close, two mounts of
    one cache interleaved, 6 passes each): daemon CPU per file, median 215 -> 170 us
    with 4 threads, 237 -> 218 us with 1. Without the checkpoint while others
    park (the same files, 3 pairs): 184 -> 101 us with 4 threads, 5,436 -> 9,846
    files/s."""

    __slots__ = ("_fd", "_poll", "lock")

    def __init__(self) -> None:
        self._poll = select.poll()
        self._fd = -1
        self.lock: _ReaderLock | None = None  # pyfuse3's reader lock, once made

    def new_lock(self) -> _ReaderLock:
        """pyfuse3's `trio.Lock()`: it makes one, its reader lock."""
        self.lock = _ReaderLock()
        return self.lock

    async def wait_readable(self, fd: int) -> None:
        if fd != self._fd:  # the first wait of a session
            if self._fd >= 0:
                self._poll.unregister(self._fd)
            self._poll.register(fd, select.POLLIN)
            self._fd = fd
        ready = self._poll.poll(0)
        if ready and ready[0][1] == select.POLLIN:
            if self.lock is None or not self.lock.waiting:
                await trio.lowlevel.checkpoint()
            return
        await trio.lowlevel.wait_readable(fd)


def _trio_for_pyfuse3() -> types.ModuleType:
    """What pyfuse3 sees as its `trio` module: trio, with a _ReaderLock as Lock and
    _Requests' wait, which knows that lock, as `lowlevel.wait_readable`.
    pyfuse3 looks `trio` up as a module global (pyfuse3.asyncio swaps it the same
    way) and uses it for its lock, wait_readable, the nursery of its workers and
    notify_closing. A copy of trio's namespace, so that each of those lookups stays
    a plain dict hit on the request path (no __getattr__ fallback)."""
    shim = types.ModuleType("trio")
    shim.__dict__.update(vars(trio))
    requests = _Requests()
    shim.__dict__["Lock"] = requests.new_lock
    lowlevel = types.ModuleType("trio.lowlevel")
    lowlevel.__dict__.update(vars(trio.lowlevel))
    lowlevel.__dict__["wait_readable"] = requests.wait_readable
    shim.__dict__["lowlevel"] = lowlevel
    return shim


async def serve() -> None:
    """Serve requests until the filesystem is unmounted or `stop` is called."""
    pyfuse3.trio = _trio_for_pyfuse3()  # type: ignore[attr-defined]
    await pyfuse3.main(min_tasks=4, max_tasks=64)


def stop() -> None:
    """End `serve` (from the trio thread)."""
    pyfuse3.terminate()


def close(unmount: bool) -> None:
    pyfuse3.close(unmount=unmount)


async def switch(core: FsCore, ref: str) -> SwitchResult:
    """Switch the core's version and make the kernel forget the root's entries, so
    its next lookups come to the new version. Returns after the kernel has dropped
    them."""
    res = await core.switch(ref)
    await trio.to_thread.run_sync(_invalidate, res.invalidate)
    return res


def _invalidate(names: Iterable[bytes]) -> None:
    """Worker thread: drop the kernel's entries (and cached misses) under the root."""
    for name in names:
        try:
            pyfuse3.invalidate_entry(pyfuse3.ROOT_INODE, name)
        except OSError as e:
            if e.errno != errno.ENOENT:  # the kernel had already dropped it
                log.warning("cannot invalidate %r: %s", name, e)
    try:
        pyfuse3.invalidate_inode(pyfuse3.ROOT_INODE, attr_only=False)
    except OSError as e:
        if e.errno != errno.ENOENT:
            log.warning("cannot invalidate the root inode: %s", e)


def raise_read_ahead(mountpoint: str, kib: int = 1024) -> bool:
    """Worker thread, as root: make the kernel read ahead `kib` KiB on this mount, so
    reads arrive as 1 MiB requests. False if it could not."""
    try:
        dev = os.stat(mountpoint).st_dev
        path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
        with open(path, "w") as f:
            f.write(str(kib))
    except OSError as e:
        log.info("cannot raise read_ahead_kb of %s: %s", mountpoint, e)
        return False
    return True
