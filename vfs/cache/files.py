"""The chunk files of the cache directory: ``data/`` (see vfs.cache.layout).

This module owns the files and their modes; it knows nothing of the index. A chunk
file is written to a temp file, then renamed to its content address (CernVM-FS's
rule), so a reader never sees half a file under a final name. A file is read back
whole and checked against the size and xxh3 its index entry records.

Chunk files are not fsynced: after a power loss a file may be short or garbage, the
xxh3 check on every read catches that, and a cache may lose data, so an fsync per
chunk would buy only latency.

A group-writable or setgid root is shared by a group: everything created under it
is then made usable by every member, whatever the umask.

Concurrency: a ChunkFiles holds no mutable state after construction; any thread may
use it. Which file may be removed when is ordered by the index (vfs.cache.index).
"""

from __future__ import annotations

import logging
import os
import stat

import xxhash

from vfs.cache import layout

__all__ = ["MISSING", "ChunkFiles", "age", "read_fd_checked", "unlink"]

log = logging.getLogger(__name__)

# What read_checked() says of a chunk whose file is gone.
MISSING = "is missing"


class ChunkFiles:
    """The chunk files under `root`/data, and the modes of what the cache creates."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.group = bool(os.stat(root).st_mode & (stat.S_IWGRP | stat.S_ISGID))
        self.dir_mode = 0o2775 if self.group else 0o700
        self.file_mode = 0o664 if self.group else 0o600
        self.data_dir = layout.data_dir(root)
        self.tmp_dir = layout.temp_dir(self.data_dir)

    def path(self, chunk_id: bytes) -> str:
        return layout.chunk_path(self.data_dir, chunk_id)

    def read_checked(
        self, chunk_id: bytes, size: int, checksum: bytes
    ) -> tuple[bytes | None, str | None]:
        """(bytes, None) if the file has `size` bytes hashing to `checksum`, else
        (None, what is wrong)."""
        try:
            fd = os.open(layout.chunk_path(self.data_dir, chunk_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None, MISSING
        except OSError as e:
            return None, f"cannot be read ({e})"
        try:
            return read_fd_checked(fd, size, checksum)
        finally:
            os.close(fd)

    def write(self, path: str, data: bytes) -> None:
        """Write `data` to a temp file, then rename it to `path`."""
        tmp = os.path.join(self.tmp_dir, layout.temp_name(path))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self.file_mode)
        try:
            try:
                if self.group:
                    os.fchmod(fd, self.file_mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            try:
                os.rename(tmp, path)
            except FileNotFoundError:  # the first chunk under this prefix
                self.mkdir(os.path.dirname(path))
                os.rename(tmp, path)
        except BaseException:
            unlink(tmp)
            raise

    def chunk_files(self) -> list[str]:
        """Every file under data/ except temp files."""
        out: list[str] = []
        with os.scandir(self.data_dir) as dirs:
            for d in dirs:
                if layout.is_chunk_folder(d.name) and d.is_dir(follow_symlinks=False):
                    with os.scandir(d.path) as files:
                        out.extend(f.path for f in files)
        return out

    def temp_files(self) -> list[str]:
        with os.scandir(self.tmp_dir) as temps:
            return [f.path for f in temps]

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


def read_fd_checked(fd: int, size: int, checksum: bytes) -> tuple[bytes | None, str | None]:
    """The file's bytes if they match `size` and the xxh3 `checksum`, else (None, why).

    One read() of size + 1 bytes is the usual case: a regular file answers short only
    at its end, so the extra byte shows a file that grew without a second call. Fewer
    than size bytes are read again until the end, in case a read was interrupted."""
    want = size + 1
    try:
        data = os.read(fd, want)
        if 0 < len(data) < size:
            parts = [data]
            got = len(data)
            while got < want and (more := os.read(fd, want - got)):
                parts.append(more)
                got += len(more)
            data = b"".join(parts) if len(parts) > 1 else data
    except OSError as e:
        return None, f"cannot be read ({e})"
    if len(data) != size:
        got_s = f"more than {size}" if len(data) > size else str(len(data))
        return None, f"has {got_s} bytes, not {size}"
    if xxhash.xxh3_128_digest(data) != checksum:
        return None, "fails its checksum"
    return data, None


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
