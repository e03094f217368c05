"""The process's one registry of LMDB environments, for every LMDB user of the cache
directory (the chunk cache's index, the stat cache).

LMDB forbids opening one environment twice in a process: a second open would share,
then break, the first one's locks. So every user acquires its environment here, by
path, and the last release closes it.

Concurrency: processes coordinate through LMDB alone (one writer machine-wide,
readers never block). Within a process:
- ``_envs_lock`` guards the registry and each environment's count of users.
- A ``SharedEnv`` is the single environment of a path in this process. Every
  transaction passes its gate (``run``); growing the map waits until none is open,
  as LMDB requires, and a transaction that meets a grown or full map is retried.
- An environment does not survive fork(): py-lmdb refuses to reopen in a forked
  child an environment its parent had open, so acquire() refuses in the child, and
  users start their workers with multiprocessing 'spawn'.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import lmdb

from vfs.errors import VfsError

__all__ = ["EnvSpec", "SharedEnv", "acquire", "release", "release_maps"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_D = TypeVar("_D")

_MAX_RESIZES = 8
# Keys read between two releases of an environment's map (`SharedEnv.touched`). A
# read faults in its pages and, by the kernel's fault-around, their cached
# neighbours: ~128 KiB a random read measured here, so 512 reads map ~64 MiB.
RELEASE_KEYS = 512


@dataclass(frozen=True)
class EnvSpec:
    """How to open an environment. The first user of a path opens it, so every user
    of one path passes the same spec."""

    what: str  # names the environment in messages: "chunk cache index"
    map_size: int
    max_dbs: int
    max_readers: int = 126  # LMDB's default
    mode: int = 0o755  # py-lmdb's default
    sync: bool = True
    metasync: bool = True


class SharedEnv(Generic[_D]):
    """The one LMDB environment of a path in this process; `dbs` is what the setup
    of its first user returned (its database handles)."""

    def __init__(self, path: str, spec: EnvSpec, setup: Callable[[lmdb.Environment], _D]) -> None:
        self.path = path
        self.what = spec.what
        self.pid = os.getpid()
        self.users = 0
        self._cond = threading.Condition()
        self._active = 0
        self._resizing = False
        try:
            self.env = lmdb.open(
                path,
                map_size=spec.map_size,
                subdir=True,
                max_dbs=spec.max_dbs,
                max_readers=spec.max_readers,
                lock=True,
                sync=spec.sync,
                metasync=spec.metasync,
                mode=spec.mode,
            )
        except lmdb.Error as e:
            # A shared cache whose group this user is not in (or not yet, in this
            # login): an OSError naming the path, which the CLI prints as one line.
            if isinstance(e, lmdb.ReadonlyError) or "Permission denied" in str(e):
                raise PermissionError(errno.EACCES, f"{spec.what} {path}: {e}", path) from None
            raise
        try:
            self.dbs = setup(self.env)
            # Reader slots of killed processes pin old pages and grow the file.
            self.env.reader_check()
        except BaseException:
            self.env.close()
            raise
        self._map_size = self.env.info()["map_size"]
        self._touched = 0

    def touched(self, keys: int) -> None:
        """`keys` were read at random: past RELEASE_KEYS since the last time, release
        this process's pages of the map (release_maps). For users whose RSS must not
        grow with the database (a commit's known-chunks index and stat cache): a page
        of the map read once stays in RSS until released, and at 5M files a commit's
        reads touched the whole 675 MB index between two releases at settled files."""
        self._touched += keys  # a lost update under a race only delays a release
        if self._touched >= RELEASE_KEYS:
            self.release_map()

    def release_map(self) -> None:
        """Release this process's pages of the map now (release_maps): after a write
        transaction at many keys, which `touched` does not count."""
        self._touched = 0
        release_maps([self.path])

    def run(self, fn: Callable[[lmdb.Transaction[bytes]], _T], write: bool) -> _T:
        """fn(txn) in a transaction; grows the map and retries fn when LMDB asks."""
        for _ in range(_MAX_RESIZES):
            seen = self._enter()
            try:
                with self.env.begin(write=write) as txn:
                    return fn(txn)
            except lmdb.MapResizedError:  # another process grew the map
                adopt = True
            except lmdb.MapFullError:
                adopt = False
            finally:
                self._leave()
            self._resize(seen, adopt)
        raise VfsError(f"the {self.what} {self.path} cannot grow its map")

    def _enter(self) -> int:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._active += 1
            return self._map_size

    def _leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self._resizing:
                self._cond.notify_all()

    def _resize(self, seen: int, adopt: bool) -> None:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            if self._map_size != seen:
                return  # another thread resized while we waited
            self._resizing = True
            while self._active:
                self._cond.wait()
        try:
            # set_mapsize(0) adopts the size another process has set.
            self.env.set_mapsize(0 if adopt else seen * 2)
            size = self.env.info()["map_size"]
            log.info("%s %s: map size %d -> %d", self.what, self.path, seen, size)
        finally:
            with self._cond:
                self._map_size = self.env.info()["map_size"]
                self._resizing = False
                self._cond.notify_all()


_envs: dict[str, SharedEnv[Any]] = {}
_envs_lock = threading.Lock()


def acquire(path: str, spec: EnvSpec, setup: Callable[[lmdb.Environment], _D]) -> SharedEnv[_D]:
    """The environment at `path` (its real path), opened with `spec` and `setup` by
    its first user in this process; release() it when done."""
    path = os.path.realpath(path)
    with _envs_lock:
        shared = _envs.get(path)
        if shared is not None and shared.pid != os.getpid():
            raise VfsError(
                f"the {spec.what} {path} was opened before this process forked; "
                "open the cache in a fresh process (multiprocessing 'spawn')"
            )
        if shared is None:
            shared = _envs[path] = SharedEnv(path, spec, setup)
        shared.users += 1
        return cast(SharedEnv[_D], shared)


def release(shared: SharedEnv[Any]) -> None:
    """Drop one use of `shared`; the last one closes the environment."""
    with _envs_lock:
        shared.users -= 1
        if shared.users == 0:
            del _envs[shared.path]
            shared.env.close()


_MADV_DONTNEED = 4


def release_maps(dirs: Iterable[str]) -> int:
    """Drop this process's page-table entries for the memory maps of the LMDB files
    in `dirs`; returns the bytes of mapping released.

    A long commit's lookups touch, over time, every page of the known-chunks index
    and the stat cache, and each touched page of a map counts in the process's RSS
    although it is page cache. The maps are read-only (LMDB writes with pwrite), so
    MADV_DONTNEED loses nothing: the next access faults the page in again from the
    page cache. Linux only; elsewhere (or if anything fails) it does nothing."""
    files = {os.path.realpath(os.path.join(d, "data.mdb")) for d in dirs}
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/self/maps") as f:
            lines = f.readlines()
    except (OSError, AttributeError):
        return 0
    released = 0
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or parts[5].strip() not in files:
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED) == 0:
            released += end - start
    return released
