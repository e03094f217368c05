"""The "passthrough ceiling" of `make bench`: a minimal read-only pyfuse3 mirror.

`python scripts/passthrough.py SOURCE MOUNTPOINT` mounts SOURCE read-only at
MOUNTPOINT and serves until unmounted (fusermount3 -u) or sent SIGTERM/SIGINT.

It does the least a Python FUSE filesystem can do per request: inode numbers are the
source's, `read` is one os.pread on the trio thread, `open` answers keep_cache (so a
second read of a file is served from the kernel page cache, never reaching this
process), and entries and attributes may be cached by the kernel for a day, as vfs
does. The benchmark compares vfs's mount against it: it is the limit of the pyfuse3
path on the machine, so it shows how close vfs gets, not what FUSE in C could do.

Only what reading needs is implemented; everything else answers ENOSYS or EROFS.
Concurrency: one trio thread; the tables change only on it.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
from typing import Any

import pyfuse3
import trio

log = logging.getLogger("passthrough")

TTL = 86400.0


class Passthrough(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = os.path.abspath(source)
        self._path: dict[int, str] = {pyfuse3.ROOT_INODE: self.source}
        self._src_root = os.lstat(self.source).st_ino
        self._dirs: dict[int, tuple[str, list[bytes]]] = {}
        self._next_dh = 1

    # Source inode numbers are kept, except the source root's, which is ROOT_INODE.
    def _ino(self, st: os.stat_result) -> int:
        return pyfuse3.ROOT_INODE if st.st_ino == self._src_root else st.st_ino

    def _attr(self, st: os.stat_result) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = self._ino(st)
        e.generation = 0
        e.entry_timeout = TTL
        e.attr_timeout = TTL
        e.st_mode = st.st_mode
        e.st_nlink = st.st_nlink
        e.st_uid = st.st_uid
        e.st_gid = st.st_gid
        e.st_rdev = 0
        e.st_size = st.st_size
        e.st_blksize = 1024 * 1024
        e.st_blocks = st.st_blocks
        e.st_atime_ns = st.st_atime_ns
        e.st_mtime_ns = st.st_mtime_ns
        e.st_ctime_ns = st.st_ctime_ns
        return e

    def _stat(self, path: str) -> os.stat_result:
        try:
            return os.lstat(path)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None

    def _of(self, inode: int) -> str:
        try:
            return self._path[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._of(parent_inode)
        path = os.path.normpath(os.path.join(parent, os.fsdecode(name)))
        st = self._stat(path)
        self._path.setdefault(self._ino(st), path)
        return self._attr(st)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(self._stat(self._of(inode)))

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(os.readlink(self._of(inode)))

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        path = self._of(inode)
        try:
            with os.scandir(path) as it:
                names = sorted(os.fsencode(d.name) for d in it)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        dh = self._next_dh
        self._next_dh += 1
        self._dirs[dh] = (path, names)
        return dh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        parent, names = self._dirs[fh]
        for i in range(start_id, len(names)):
            path = os.path.join(parent, os.fsdecode(names[i]))
            st = self._stat(path)
            if not pyfuse3.readdir_reply(token, names[i], self._attr(st), i + 1):
                return
            self._path.setdefault(self._ino(st), path)

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        try:
            fd = os.open(self._of(inode), os.O_RDONLY)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(fh, size, off)

    async def release(self, fh: int) -> None:
        os.close(fh)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = os.statvfs(self.source)
        out = pyfuse3.StatvfsData()
        for attr in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files"):
            setattr(out, attr, getattr(s, attr))
        out.f_ffree = s.f_ffree
        out.f_favail = s.f_favail
        out.f_namemax = s.f_namemax
        return out

    async def forget(self, inode_list: Any) -> None:
        return None  # the path table only grows; fine for a benchmark's lifetime


async def _serve() -> None:
    async with trio.open_nursery() as nursery:

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(on_signal)
        await pyfuse3.main(min_tasks=4, max_tasks=64)
        nursery.cancel_scope.cancel()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} SOURCE MOUNTPOINT", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    ops = Passthrough(argv[1])
    opts = {"ro", "default_permissions", "noatime", "fsname=bench-passthrough", "subtype=pt"}
    pyfuse3.init(ops, argv[2], opts)
    try:
        trio.run(_serve)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
