"""The Pythonic API: a version of a dataset as a read-only, os-like file tree.

    import vfs
    v = vfs.open_version("imagenet@v3")
    for dirpath, dirnames, filenames in v.walk():
        ...
    with v.open("train/0001.jpg") as f:
        f.seek(100); f.read(10)

This module owns what a user of `import vfs` holds: `Version` (walk, listdir, stat,
exists, open, read_bytes, read_text) and `File`. Paths are str, '/'-separated and
relative to the version's root; a name that is not UTF-8 comes back with
surrogateescape, as os does. Errors are OSErrors with their errno (vfs.errors:
PathNotFound, NotADirectory, IsADirectory).

A Version names its version by value, (store URL, dataset, commit id, cache dir),
and opens the store and the machine's chunk cache lazily, once per process and
shared by every Version and File of that store there. So a Version and an open File
pickle small and reopen in the receiving process, under spawn and under fork. The
chunk cache opens on the first read of file bytes, so a parent that only lists
leaves it to its forked children. Reads
are the reader's (vfs.reader.ChunkSource): whole chunks, verified, from the shared
chunk cache or by ranged GETs that then fill it; the tree pages and locations are
kept in that cache too (Store.use_cache), as the mount keeps them.

Concurrency: ``_handles_lock`` guards the per-process registry of opened stores; a
Version's own lock guards its lazy opening; a File's lock guards its position and
buffer, so one File may be shared by threads (each read is atomic). The Store and
the ChunkCache are thread-safe themselves. After fork, a child cannot reuse the
parent's LMDB environment (vfs.cache.lmdbenv): it reads without the chunk cache
when the parent had it open (had read file bytes), and says so at INFO.
"""

from __future__ import annotations

import atexit
import errno
import io
import logging
import os
import stat as stat_mod
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vfs import access, config, refs, tree
from vfs import format as fmt
from vfs.defaults import parse_size
from vfs.errors import (
    BackendError,
    IsADirectory,
    NotADirectory,
    PathNotFound,
    Unreachable,
    VfsError,
)
from vfs.reader import Version as ReaderVersion
from vfs.reader import VersionFile
from vfs.store import LRU, Store

if TYPE_CHECKING:
    from vfs.api.order import OrderPrefetch
    from vfs.cache import ChunkCache

log = logging.getLogger(__name__)

__all__ = ["File", "Stat", "Version", "open_version"]


# -- the per-process registry of opened stores ---------------------------------------


class _Handle:
    """A store and its chunk cache, opened in this process, shared by every Version
    of the same (store URL, cache dir) here. The cache opens on the first read of
    file bytes, not before: a process that only resolves and lists (the parent of a
    forking DataLoader) leaves the cache for its forked children to open."""

    def __init__(self, url: str, cache_dir: str | None, endpoint_url: str | None = None) -> None:
        self.pid = os.getpid()
        self.store = Store.open(url, endpoint_url)
        self.cache_dir = cache_dir
        # Chunks read lately, kept in this process (ChunkSource.memory): what the page
        # cache is to a mount, so that a second epoch reads memory, not the disk cache.
        budget = memory_budget()
        self.memory: LRU | None = LRU(budget, len) if budget else None  # type: ignore[arg-type]
        self.cache: ChunkCache | None = None
        self.cache_error = ""  # why the cache could not be opened here
        self._cache_tried = cache_dir is None
        self._lock = threading.Lock()

    def open_cache(self) -> ChunkCache | None:
        """The chunk cache, opened on first use (None without one)."""
        if self._cache_tried:
            return self.cache
        with self._lock:
            if not self._cache_tried:
                from vfs.cache import ChunkCache
                from vfs.config import resolve_cache_size

                assert self.cache_dir is not None
                try:
                    self.cache = ChunkCache(self.cache_dir, resolve_cache_size())
                except VfsError as e:  # opened before fork(): the child reads past it
                    log.info("reading without the chunk cache: %s", e)
                    self.cache_error = str(e)
                if self.cache is not None:
                    self.store.use_cache(self.cache)
                self._cache_tried = True
            return self.cache

    def reach(self) -> bool:
        """Check the store's config (Store.check_config); when the store cannot be
        reached, read the versions pinned in the chunk cache, offline. True if
        offline. The cache opens only then: see the class docstring. Once offline,
        the handle stays so (the store is not asked again in this process)."""
        if self.store.offline is not None:
            return True
        try:
            self.store.check_config()
            return False
        except Unreachable as e:
            self.offline(e, warn=True)
            return True

    def offline(self, away: BackendError, warn: bool = False) -> None:
        """Read the versions pinned in the chunk cache (Store.serve_pins): also in a
        process whose parent found the store `away`, without asking it again."""
        if self.store.offline is not None:
            return
        cache = self.open_cache()
        if cache is None:
            # A forked child of a process that had the cache open cannot open it.
            raise BackendError(
                f"{away}, and the chunk cache that holds the pinned versions cannot be "
                f"opened in this process ({self.cache_error or 'no cache directory'})"
            ) from None
        self.store.serve_pins(cache, cache.root, away, warn)

    def close(self) -> None:
        if self.pid != os.getpid():
            return  # the parent's, inherited through fork(): not ours to close
        if self.cache is not None:
            self.cache.close()
        self.store.close()


# Paths whose entries a Version remembers (about 300 bytes each with a few chunks).
NAMES_REMEMBERED = 1 << 16
MEMORY_ENV = "VFS_API_MEMORY"
DEFAULT_MEMORY = 256 << 20


def memory_budget() -> int:
    """Bytes of chunks each process keeps in memory: $VFS_API_MEMORY (a size: 512M,
    2G, 0 for none), else 256 MiB."""
    text = os.environ.get(MEMORY_ENV)
    if not text:
        return DEFAULT_MEMORY
    if text.strip() == "0":
        return 0
    try:
        return parse_size(text)
    except ValueError:
        log.warning("ignoring %s=%r: not a size (try 512M)", MEMORY_ENV, text)
        return DEFAULT_MEMORY


_handles: dict[tuple[str, str | None, str | None], _Handle] = {}
_handles_lock = threading.Lock()


def _handle(url: str, cache_dir: str | None, endpoint_url: str | None = None) -> _Handle:
    key = (url, cache_dir, endpoint_url)
    with _handles_lock:
        h = _handles.get(key)
        if h is None or h.pid != os.getpid():
            h = _handles[key] = _Handle(url, cache_dir, endpoint_url)
        return h


@atexit.register
def _close_handles() -> None:
    """Write the chunk caches' pending touches and counts before the process ends."""
    with _handles_lock:
        handles = list(_handles.values())
        _handles.clear()
    for h in handles:
        try:
            h.close()
        except Exception:  # at exit, a cache that cannot flush must not hide others
            log.debug("closing %s", h.store.url, exc_info=True)


# -- stat ----------------------------------------------------------------------------

_KIND_BITS = {fmt.DIR: stat_mod.S_IFDIR, fmt.FILE: stat_mod.S_IFREG, fmt.SYMLINK: stat_mod.S_IFLNK}


@dataclass(frozen=True, slots=True)
class Stat:
    """What `Version.stat` returns: the fields of os.stat_result a version has.
    st_size is a file's length, a symlink's target length, or a directory's total
    file bytes; st_nfiles counts the files below a directory."""

    st_mode: int
    st_size: int
    st_mtime_ns: int
    st_nfiles: int = 0
    st_nlink: int = 1

    @property
    def st_mtime(self) -> float:
        return self.st_mtime_ns / 1e9

    def is_dir(self) -> bool:
        return stat_mod.S_ISDIR(self.st_mode)

    def is_file(self) -> bool:
        return stat_mod.S_ISREG(self.st_mode)

    def is_symlink(self) -> bool:
        return stat_mod.S_ISLNK(self.st_mode)


def _stat_of(e: fmt.Entry) -> Stat:
    return Stat(_KIND_BITS[e.kind] | (e.mode & 0o7777), e.size, e.mtime_ns, e.nfiles)


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _clean(path: str) -> str:
    """A path as this API names it: '/'-separated parts, no leading or trailing '/'."""
    if not isinstance(path, str):
        raise TypeError(f"a path in a version is a str, not {type(path).__name__}")
    return "/".join(p for p in path.split("/") if p and p != ".")


# -- Version --------------------------------------------------------------------------


class Version:
    """One committed version of a dataset, opened lazily in each process that uses it.

    Build it with `open_version`. Pickles as (store URL, dataset, commit id, cache
    dir). Usable from many threads. close() (or `with`) drops this process's use of
    it; the store and cache stay open for other Versions until the process ends.
    """

    def __init__(
        self,
        store_url: str,
        dataset: str,
        commit_id: bytes,
        cache_dir: str | None,
        record_access: str | None = None,
        endpoint_url: str | None = None,  # a remote's S3 endpoint (vfs.config)
        offline: bool = False,  # opened from the cache's pins, the store away
    ):
        self.store_url = store_url
        self.offline = offline
        self.endpoint_url = endpoint_url
        self.dataset = dataset
        self.commit_id = commit_id
        self.cache_dir = cache_dir
        self.record_access = record_access
        self._lock = threading.Lock()
        self._reader: ReaderVersion | None = None
        self._pid = 0
        self._handle: _Handle | None = None
        self._prefetch: OrderPrefetch | None = None
        self._names = LRU(NAMES_REMEMBERED)  # path -> tree.Found, see _lookup

    # pickling: the names, never the open store
    def __getstate__(self) -> dict[str, Any]:
        return {
            "store_url": self.store_url,
            "dataset": self.dataset,
            "commit_id": self.commit_id,
            "cache_dir": self.cache_dir,
            "record_access": self.record_access,
            "endpoint_url": self.endpoint_url,
            "offline": self.offline,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]  # reopening in a new process is construction
            state["store_url"],
            state["dataset"],
            state["commit_id"],
            state["cache_dir"],
            state.get("record_access"),
            state.get("endpoint_url"),
            state.get("offline", False),
        )

    def _note_read(self, path: str, offset: int, length: int) -> None:
        if self.record_access is not None and length > 0:
            rec = access.shared_record(self.record_access)
            rec.recorder.add(self.dataset, self.commit_id, path, offset, length)

    def __repr__(self) -> str:
        return f"<vfs.Version {self.spec} of {self.store_url}>"

    def __enter__(self) -> Version:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._prefetch is not None:
                self._prefetch.stop()
                self._prefetch = None
            if self._reader is not None:
                self._reader.chunks.in_flight = None
            self._reader = None
        if self.record_access is not None:
            access.shared_record(self.record_access).save()

    @property
    def id(self) -> str:
        """The commit id, 64 hex digits."""
        return self.commit_id.hex()

    @property
    def spec(self) -> str:
        """`dataset@id`: names this exact version, now and months later."""
        return f"{self.dataset}@{self.id}"

    @property
    def reader(self) -> ReaderVersion:
        """The store layer's Version, opened in this process on first use."""
        r = self._reader
        if r is not None and self._pid == os.getpid():
            return r
        with self._lock:
            if self._reader is None or self._pid != os.getpid():
                h = _handle(self.store_url, self.cache_dir, self.endpoint_url)
                if self.offline:  # as the process that opened it found the store
                    h.offline(BackendError(f"the store {self.store_url} was away"))
                self._reader = ReaderVersion(h.store, self.dataset, self.commit_id, h.cache)
                self._reader.chunks.memory = h.memory
                self._handle = h
                self._pid = os.getpid()
                self._prefetch = None  # a parent's threads did not come through fork()
                self._names = LRU(NAMES_REMEMBERED)  # nor did its lock
            return self._reader

    def _reading(self) -> ReaderVersion:
        """The reader, with the chunk cache opened for reading file bytes."""
        r = self.reader
        if r.chunks.cache is None and self._handle is not None:
            r.chunks.cache = self._handle.open_cache()
        return r

    # -- names ---------------------------------------------------------------------

    def _found(self, path: str) -> tree.Found | None:
        """The entry at `path`; None for the root. Raises the OSError a POSIX
        filesystem would."""
        parts = tree.split_path(_clean(path))
        if not parts:
            return None
        try:
            return self._lookup(parts)
        except (PathNotFound, NotADirectory) as e:  # from a parent: name the whole path
            full = _name(b"/".join(parts))
            if e.filename == full:
                raise
            what = "no such file or directory" if isinstance(e, PathNotFound) else "not a directory"
            raise type(e)(f"{what}: {full}", full) from None

    def _lookup(self, parts: list[bytes]) -> tree.Found:
        """The entry at the path `parts` (not empty), from the memory of names this
        process looked up (a version never changes, so an answer stays true), else
        its parent's directory: what the dentry cache is to a mount."""
        r = self.reader
        key = b"/".join(parts)
        hit = self._names.get(key)
        if hit is not None:
            return hit  # type: ignore[return-value]  # only Found goes in
        top = r.root
        if len(parts) > 1:
            parent = self._lookup(parts[:-1])
            if not parent.entry.is_dir:
                here = _name(b"/".join(parts[:-1]))
                raise NotADirectory(f"not a directory: {here}", here)
            top = parent.entry.tree
        found = tree.DirView(r.store, top).lookup(parts[-1])
        if found is None:
            here = _name(key)
            raise PathNotFound(f"no such file or directory: {here}", here)
        self._names.put(key, found)
        return found

    def _dir(self, path: str) -> bytes:
        found = self._found(path)
        if found is None:
            return self.reader.root
        if not found.entry.is_dir:
            raise NotADirectory(f"not a directory: {_clean(path)}", _clean(path))
        return found.entry.tree

    def stat(self, path: str = "") -> Stat:
        """The entry at `path` ('' is the root). Symlinks are not followed."""
        found = self._found(path)
        if found is None:
            return Stat(stat_mod.S_IFDIR | 0o755, 0, 0)
        return _stat_of(found.entry)

    def exists(self, path: str) -> bool:
        try:
            self._found(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def isdir(self, path: str) -> bool:
        return self.exists(path) and self.stat(path).is_dir()

    def isfile(self, path: str) -> bool:
        return self.exists(path) and self.stat(path).is_file()

    def listdir(self, path: str = "") -> list[str]:
        """The names in the directory `path`, sorted by their bytes."""
        return [_name(f.entry.name) for f in tree.DirView(self.reader.store, self._dir(path))]

    def scandir(self, path: str = "") -> Iterator[tuple[str, Stat]]:
        """(name, Stat) of each entry of the directory `path`, in name order."""
        for f in tree.DirView(self.reader.store, self._dir(path)):
            yield _name(f.entry.name), _stat_of(f.entry)

    def walk(self, top: str = "") -> Iterator[tuple[str, list[str], list[str]]]:
        """(dirpath, dirnames, filenames) for `top` and each directory below it, top
        down in name order, as os.walk yields them; dirpath is relative to the
        version's root ('' for the root). Symlinks are listed with the files.
        Removing a name from dirnames skips that directory, as with os.walk."""
        top = _clean(top)
        stack = [(top, self._dir(top))]
        store = self.reader.store
        while stack:
            dirpath, tid = stack.pop()
            dirs: list[tuple[str, bytes]] = []
            files: list[str] = []
            for f in tree.DirView(store, tid):
                if f.entry.is_dir:
                    dirs.append((_name(f.entry.name), f.entry.tree))
                else:
                    files.append(_name(f.entry.name))
            dirnames = [d for d, _ in dirs]
            yield dirpath, dirnames, files
            trees = dict(dirs)
            for d in reversed(dirnames):  # the caller may prune dirnames
                if d in trees:
                    stack.append((f"{dirpath}/{d}" if dirpath else d, trees[d]))

    def files(self, top: str = "") -> list[str]:
        """Every file below `top` (paths from the root), sorted as walk visits them."""
        return [f"{d}/{n}" if d else n for d, _, names in self.walk(top) for n in names]

    # -- bytes ---------------------------------------------------------------------

    def open(self, path: str, mode: str = "rb") -> File:
        """The file at `path` as a seekable, read-only binary file. A mode that
        writes raises PermissionError(EROFS), as the vfs:// filesystem and a
        read-only mount do; another mode than 'rb' (text) raises ValueError."""
        if set(mode) & set("wax+"):
            raise PermissionError(errno.EROFS, f"a version is read-only (mode {mode!r})", path)
        if mode not in ("rb", "r b", "br"):
            raise ValueError(f"a version is read-only and opens files in 'rb' mode, not {mode!r}")
        return File(self, _clean(path))

    def read_bytes(self, path: str) -> bytes:
        with self.open(path) as f:
            return f.readall()

    def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes(path).decode(encoding, errors)

    def _file_entry(self, path: str) -> tree.Found:
        found = self._found(path)
        if found is None or found.entry.is_dir:
            raise IsADirectory(f"is a directory: {path or '/'}", path)
        if found.entry.is_symlink:
            raise PathNotFound(
                f"is a symlink (to {_name(found.entry.target)}), not a file: {path}", path
            )
        return found

    # -- order hints ---------------------------------------------------------------

    def prefetch(
        self, paths: Iterable[str], *, ahead_bytes: int = 256 * 1024 * 1024, threads: int = 8
    ) -> OrderPrefetch:
        """Start fetching the files `paths` into the chunk cache in exactly that order,
        in background threads, at most `ahead_bytes` ahead of `note_read` (the reader's
        position in the order). Replaces the previous order of this Version."""
        from vfs.api.order import OrderPrefetch

        r = self._reading()
        with self._lock:
            if self._prefetch is not None:
                self._prefetch.stop()
            self._prefetch = OrderPrefetch(r, list(paths), ahead_bytes=ahead_bytes, threads=threads)
            r.chunks.in_flight = self._prefetch.in_flight
            self._prefetch.start()
            return self._prefetch


class File(io.RawIOBase):
    """A file of a version: binary, seekable, read-only, thread-safe. Pickles as its
    version, path and position, and reopens on first read in the receiving process.
    Reads whole chunks through the shared chunk cache, holding the last few."""

    def __init__(self, version: Version, path: str, pos: int = 0) -> None:
        super().__init__()
        self.version = version
        self.path = path
        self.name = path
        self._lock = threading.Lock()
        self._inner: VersionFile | None = None
        self._pid = 0
        self._pos = pos
        found = version._file_entry(path)
        self._found: tree.Found | None = found  # this process's; resolved again after fork
        self._found_pid = os.getpid()
        self.size = found.entry.size
        self.mode_bits = found.entry.mode

    def __reduce__(self) -> tuple[Any, ...]:
        if self.closed:
            raise ValueError("cannot pickle a closed vfs file")
        return (_reopen_file, (self.version, self.path, self._pos))

    def __repr__(self) -> str:
        return f"<vfs.File {self.path!r} of {self.version.spec}>"

    def _reader(self) -> VersionFile:
        if self._inner is None or self._pid != os.getpid():
            found = self._found if self._found_pid == os.getpid() else None
            self._found = None
            if found is None:
                found = self.version._file_entry(self.path)
            self._inner = VersionFile(self.version._reading(), found)
            self._pid = os.getpid()
        return self._inner

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        with self._lock:
            if whence == io.SEEK_SET:
                pos = offset
            elif whence == io.SEEK_CUR:
                pos = self._pos + offset
            elif whence == io.SEEK_END:
                pos = self.size + offset
            else:
                raise ValueError(f"invalid whence {whence}")
            if pos < 0:
                raise ValueError("negative seek position")
            self._pos = pos
            return pos

    def readinto(self, b: Any) -> int:
        self._checkClosed()
        with self._lock:
            inner = self._reader()
            inner.seek(self._pos)
            n = inner.readinto(b)
            self.version._note_read(self.path, self._pos, n)
            self._pos += n
            return n

    def readall(self) -> bytes:
        """The rest of the file in one buffer (RawIOBase's would grow it 8 KiB at a
        time)."""
        with self._lock:
            want = max(0, self.size - self._pos)
        buf = bytearray(want)
        view = memoryview(buf)
        n = 0
        while n < want:
            got = self.readinto(view[n:])
            if not got:
                break
            n += got
        del view
        if n < want:
            del buf[n:]
        return bytes(buf)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(size)
        n = self.readinto(buf)
        del buf[n:]
        return bytes(buf)

    def close(self) -> None:
        with self._lock:
            self._inner = None
        super().close()


def _reopen_file(version: Version, path: str, pos: int) -> File:
    return File(version, path, pos)


def open_version(
    spec: str,
    store: str | Store | None = None,
    cache_dir: str | None = None,
    *,
    locked: bool | str = False,
    record_access: str | None = None,
) -> Version:
    """The version `dataset@ref` names (a tag, a branch, an id or its prefix, or a bare
    dataset for its default branch), resolved now to its commit id: later moves of
    the ref do not change what this Version reads.

    `store` is a store URL (s3://bucket/prefix or a directory) or a remote's name, else
    $VFS_STORE, else core.store of vfs.toml, else the default store (a Store names its
    URL; this process opens its own); `spec` may name a remote's store itself,
    REMOTE:DATASET@REF (docs/config.md). `cache_dir` is the machine's chunk cache
    ($VFS_CACHE_DIR, else core.cache_dir, else ~/.cache/vfs) unless given; pass "" to
    read without a cache.

    `locked=True` reads the version the nearest vfs.lock (in the working directory or
    above; a str names the directory to search from) pins for the dataset, from the
    store the lock names unless `store` is given: `vfs lock DS@REF` wrote it, and a
    rerun months later reads identical bytes.

    `record_access=FILE` writes which files, and which byte ranges, this run read
    (vfs.access; `vfs commit --access-record FILE` attaches it to a model): FILE is
    started empty now, and every process that reads through this Version (pickled
    into workers too) merges its ranges into it when it closes the Version or ends."""
    if locked:
        from vfs import lock

        start = locked if isinstance(locked, str) else None
        spec, entry = lock.locked_spec(spec, start)
        if store is None:
            store = entry.store
    if isinstance(store, Store):
        url, endpoint = store.url, None
    else:
        target, (rest,) = config.spec_target(store, [spec])
        url, endpoint, spec = target.url, target.endpoint_url, str(rest)
    cdir: str | None = config.resolve_cache_dir() if cache_dir is None else (cache_dir or None)
    if cdir is not None:
        cdir = os.path.abspath(cdir)
    h = _handle(url, cdir, endpoint)
    away = h.reach()
    r = refs.resolve(h.store, spec)
    rec = access.start_record(record_access) if record_access is not None else None
    return Version(url, r.spec.dataset, r.commit, cdir, rec, endpoint, offline=away)
