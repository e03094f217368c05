"""The local-directory backend: each key is a regular file under a root directory.

This module owns the on-disk layout of a file:// store and the rules that make it
safe to share between threads and processes on one machine:

* Every write goes to a temp file in the target's own directory (name starting
  with '.tmp-'), is fsynced, then renamed over the target with os.replace. A
  reader therefore opens the old object, no object, or the new one, never a part.
  The directory is fsynced after the rename so that a written object survives a
  crash.
* put_if serialises on an exclusive flock of a per-key lock file under
  '<root>/.locks/'. flock locks belong to the open file description, so two
  threads of one process exclude each other as well as two processes do. Lock
  files are never deleted: removing one while another process waits on it would
  let two writers hold "the" lock at once.
* Plain put and delete take no lock: the contract makes put_if atomic only against
  other put_ifs, and the store layer writes refs (the only compare-and-swap
  objects) with put_if alone.

Temp files left by a crash and the '.locks' directory are invisible to list and
list_dirs. Names starting with '.tmp-' and a top-level '.locks' are therefore
reserved and rejected as keys.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

import xxhash

from vfs import perms
from vfs.backends.base import Backend, ObjectInfo, Versioned
from vfs.errors import BackendError, NotFound, PermissionDenied, VfsError

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
LOCK_DIR = ".locks"
_COPY_BUFSIZE = 1 << 20

# Objects get the permissions a plain open() would give them (mkstemp creates 0600,
# which would make a store unreadable to everyone but the writer), and in a store
# shared by a group (its root group-writable or setgid) everything is made usable by
# every member, whatever the writer's umask: vfs.perms has the rule.


def content_token(data: bytes) -> str:
    """The token put_if compares: the hex xxh3_128 of the content. A content digest
    (not an mtime) so that the token is the same for every reader of the same
    bytes and needs no extra metadata file."""
    return xxhash.xxh3_128_hexdigest(data)


def _map_oserror(exc: OSError, what: str, key: str | None) -> VfsError:
    """The one table from OSError to vfs errors. `what` is the path the message
    names; `key` is given when ENOENT means "no such object"."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR) and key is not None:
        return NotFound(f"no such object: {key} (at {what})")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"permission denied: {what}")
    return BackendError(f"cannot access {what}: {exc.strerror or exc}")


class LocalBackend(Backend):
    """A store in a local (or NFS-mounted) directory. The directory is created on
    the first write, so a default store needs no set-up; reading from a root that
    does not exist yet simply finds nothing."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.url = "file://" + self.root

    def __repr__(self) -> str:
        return f"LocalBackend({self.root!r})"

    # -- paths ----------------------------------------------------------------

    def _path(self, key: str) -> str:
        """The file of `key`. Keys come from the store layer, never from a user, so a
        malformed one is a programming error (ValueError). The check still matters:
        '..' in a key would write outside the store."""
        parts = key.split("/")
        if (
            not key
            or key.startswith("/")
            or any(p in ("", ".", "..") or p.startswith(TMP_PREFIX) for p in parts)
            or parts[0] == LOCK_DIR
        ):
            raise ValueError(f"invalid object key {key!r}")
        return os.path.join(self.root, *parts)

    def _dir_of_prefix(self, prefix: str) -> tuple[str, str]:
        """The directory to scan for keys starting with `prefix`, and its key prefix
        (ending in '/', or empty for the root)."""
        if prefix.startswith("/") or ".." in prefix.split("/"):
            raise ValueError(f"invalid key prefix {prefix!r}")
        head = prefix.rpartition("/")[0]
        if not head:
            return self.root, ""
        return os.path.join(self.root, *head.split("/")), head + "/"

    # -- writing --------------------------------------------------------------

    def _write_atomic(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        """Run `write` on a temp file beside the key's file, make it durable, then
        rename it into place."""
        path = self._path(key)
        directory = os.path.dirname(path)
        try:
            modes = perms.make_dirs(directory)
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory)
        except OSError as exc:
            raise _map_oserror(exc, directory, None) from exc
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), modes.file)
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise _map_oserror(exc, path, None) from exc
            raise
        self._fsync_dir(directory)

    @staticmethod
    def _fsync_dir(directory: str) -> None:
        # The rename is only durable once the directory entry is; without this a
        # crash can lose an object whose write already returned.
        try:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            log.debug("cannot open %s to fsync it: %s", directory, exc)
            return
        try:
            os.fsync(dfd)
        except OSError as exc:
            # Some filesystems (and some network ones) refuse fsync on a directory;
            # the data itself is already synced, so this is not worth failing for.
            log.debug("fsync of directory %s failed: %s", directory, exc)
        finally:
            os.close(dfd)

    def put(self, key: str, data: bytes) -> None:
        self._write_atomic(key, lambda f: f.write(data))

    def put_file(self, key: str, path: str) -> None:
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed below, after the copy
        except OSError as exc:
            raise BackendError(f"cannot read {path}: {exc.strerror or exc}") from exc
        with src:
            self._write_atomic(key, lambda f: shutil.copyfileobj(src, f, _COPY_BUFSIZE))

    # -- reading --------------------------------------------------------------

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise _map_oserror(exc, path, key) from exc

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"invalid range offset={offset} length={length}")
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise _map_oserror(exc, path, key) from exc
        try:
            parts: list[bytes] = []
            remaining = length
            # pread returns short counts for huge requests (Linux caps one read near
            # 2 GiB), so loop until the length is met or the file ends.
            while remaining > 0:
                chunk = os.pread(fd, remaining, offset + length - remaining)
                if not chunk:
                    break
                parts.append(chunk)
                remaining -= len(chunk)
            return b"".join(parts)
        except OSError as exc:
            raise _map_oserror(exc, path, key) from exc
        finally:
            os.close(fd)

    def _stat(self, key: str) -> os.stat_result | None:
        path = self._path(key)
        try:
            st = os.stat(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise _map_oserror(exc, path, None) from exc
        return st if stat.S_ISREG(st.st_mode) else None

    def exists(self, key: str) -> bool:
        return self._stat(key) is not None

    def size(self, key: str) -> int:
        st = self._stat(key)
        if st is None:
            raise NotFound(f"no such object: {key} (at {self._path(key)})")
        return st.st_size

    # -- listing --------------------------------------------------------------

    def list(self, prefix: str) -> Iterator[str]:
        directory, dir_key = self._dir_of_prefix(prefix)
        yield from (k for k in self._walk(directory, dir_key, prefix) if k.startswith(prefix))

    def list_info(self, prefix: str) -> Iterator[ObjectInfo]:
        for key in self.list(prefix):
            st = self._stat(key)
            if st is not None:  # else deleted since it was listed
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    def _walk(self, directory: str, dir_key: str, prefix: str = "") -> Iterator[str]:
        """Every key below `directory` (whose key prefix is `dir_key`), depth first,
        skipping subdirectories that cannot hold a key starting with `prefix`."""
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return
            raise _map_oserror(exc, directory, None) from exc
        for entry in entries:
            if entry.name.startswith(TMP_PREFIX) or (not dir_key and entry.name == LOCK_DIR):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    sub_key = f"{dir_key}{entry.name}/"
                    if sub_key.startswith(prefix) or prefix.startswith(sub_key):
                        yield from self._walk(entry.path, sub_key, prefix)
                elif entry.is_file(follow_symlinks=False):
                    yield dir_key + entry.name
            except OSError as exc:
                raise _map_oserror(exc, entry.path, None) from exc

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"list_dirs prefix must end in '/': {prefix!r}")
        directory, dir_key = self._dir_of_prefix(prefix)
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return []
            raise _map_oserror(exc, directory, None) from exc
        names = []
        for entry in entries:
            if entry.name.startswith(TMP_PREFIX) or (not dir_key and entry.name == LOCK_DIR):
                continue
            # A directory emptied by deletes has no keys below it; S3 would not
            # report it as a common prefix, so neither do we.
            if entry.is_dir(follow_symlinks=False) and next(
                self._walk(entry.path, f"{dir_key}{entry.name}/"), None
            ):
                names.append(entry.name)
        return sorted(names)

    # -- deleting -------------------------------------------------------------

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except OSError as exc:
            # EISDIR: the key names a directory, so there is no such object.
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
                return
            raise _map_oserror(exc, path, None) from exc

    # -- compare-and-swap -----------------------------------------------------

    def get_versioned(self, key: str) -> Versioned:
        data = self.get(key)
        return Versioned(data, content_token(data))

    def _lock_path(self, key: str) -> str:
        # Named by a hash so that any key maps to one flat, fixed-length file name.
        return os.path.join(self.root, LOCK_DIR, xxhash.xxh3_128_hexdigest(key.encode()) + ".lock")

    def _open_lock(self, key: str) -> int:
        lock_path = self._lock_path(key)
        try:
            modes = perms.make_dirs(os.path.dirname(lock_path))
            lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise _map_oserror(exc, lock_path, None) from exc
        if modes.shared:  # the next member must open it for writing too
            perms.set_mode(lock_fd, modes.file)
        return lock_fd

    def put_if(self, key: str, data: bytes, token: str | None) -> bool:
        path = self._path(key)
        lock_fd = self._open_lock(key)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise _map_oserror(exc, self._lock_path(key), None) from exc
            try:
                current: str | None = self.get_versioned(key).token
            except NotFound:
                current = None
            if current != token:
                log.debug("put_if %s: token %s is stale (now %s)", key, token, current)
                return False
            self._write_atomic(key, lambda f: f.write(data))
            log.debug("put_if %s: written (%d bytes)", path, len(data))
            return True
        finally:
            # Closing the descriptor releases the flock.
            os.close(lock_fd)

    def delete_if(self, key: str, token: str) -> bool:
        # Under the same per-key flock as put_if, so the two are atomic to each other.
        lock_fd = self._open_lock(key)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise _map_oserror(exc, self._lock_path(key), None) from exc
            try:
                current = self.get_versioned(key).token
            except NotFound:
                return False
            if current != token:
                return False
            self.delete(key)
            return True
        finally:
            os.close(lock_fd)
