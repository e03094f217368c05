"""`vfs://DATASET@REF/PATH`: versions as a read-only fsspec filesystem.

Installing vfs registers this class for the protocol ``vfs`` (the ``fsspec.specs``
entry point in pyproject.toml), so pandas, pyarrow, dask and anything else that
opens fsspec URLs read versions without a mount:

    pandas.read_csv("vfs://imagenet@v3/labels.csv")
    pandas.read_csv("vfs://imagenet@v3/labels.csv", storage_options={"store": "s3://b/p"})

This module owns only the translation between fsspec's calls and vfs.api: a path's
first component is ``DATASET@REF``, resolved once per filesystem instance (fsspec
keeps one instance per set of storage options; ``invalidate_cache()`` resolves
again), and the rest is a path in that version. Reads are vfs.api's: whole verified
chunks through the machine's chunk cache. Every write raises PermissionError(EROFS).

Concurrency: ``_lock`` guards the table of resolved versions; the versions and their
files are thread-safe themselves (vfs.api).
"""

from __future__ import annotations

import errno
import threading
from typing import Any, NoReturn

from fsspec.spec import AbstractFileSystem

from vfs.api import File, Stat, Version, open_version
from vfs.errors import NotFound, PathNotFound

__all__ = ["VfsFileSystem"]


def _read_only(*_: object, **__: object) -> NoReturn:
    raise PermissionError(errno.EROFS, "vfs:// is read-only: commit with `vfs commit`")


class VfsFileSystem(AbstractFileSystem):
    """Versions of a store's datasets, read-only. Storage options: `store` (a store
    URL or a remote's name; else $VFS_STORE, else core.store of vfs.toml, else the
    default store) and `cache_dir` (the chunk cache;
    else $VFS_CACHE_DIR, else ~/.cache/vfs; "" for none)."""

    protocol = "vfs"
    root_marker = ""

    def __init__(self, store: str | None = None, cache_dir: str | None = None, **kwargs: Any):
        super().__init__(store=store, cache_dir=cache_dir, **kwargs)
        self.store = store
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self._versions: dict[str, Version] = {}

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("vfs://"):
            path = path[len("vfs://") :]
        elif path.startswith("vfs::"):
            path = path[len("vfs::") :]
        return path.strip("/")

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forget the resolved refs: the next call resolves `DATASET@REF` again."""
        with self._lock:
            self._versions.clear()
        super().invalidate_cache(path)

    # -- names -----------------------------------------------------------------------

    def _split(self, path: str) -> tuple[str, Version, str]:
        """(the spec as written, its Version, the path inside it)."""
        path = self._strip_protocol(path)
        spec, _, inner = path.partition("/")
        if not spec:
            raise PathNotFound("a vfs:// path names a version first: vfs://DATASET@REF/PATH", path)
        with self._lock:
            v = self._versions.get(spec)
        if v is None:
            try:
                v = open_version(spec, store=self.store, cache_dir=self.cache_dir)
            except NotFound as e:  # no such dataset or ref: to fsspec, no such path
                if isinstance(e, OSError):
                    raise
                raise PathNotFound(str(e), spec) from e
            with self._lock:
                v = self._versions.setdefault(spec, v)
        return spec, v, inner

    @staticmethod
    def _info(name: str, st: Stat) -> dict[str, Any]:
        kind = "directory" if st.is_dir() else "file" if st.is_file() else "link"
        return {
            "name": name,
            "size": st.st_size if kind == "file" else 0,
            "type": kind,
            "mode": st.st_mode,
            "mtime": st.st_mtime,
            "islink": kind == "link",
        }

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        spec, v, inner = self._split(path)
        name = f"{spec}/{inner}" if inner else spec
        return self._info(name, v.stat(inner))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        spec, v, inner = self._split(path)
        st = v.stat(inner)
        base = f"{spec}/{inner}" if inner else spec
        if not st.is_dir():
            out = [self._info(base, st)]
        else:
            out = [self._info(f"{base}/{name}", s) for name, s in v.scandir(inner)]
        return out if detail else [o["name"] for o in out]

    def exists(self, path: str, **kwargs: Any) -> bool:
        try:
            _, v, inner = self._split(path)
        except FileNotFoundError:
            return False
        return v.exists(inner)

    def ukey(self, path: str) -> str:
        """A key that changes when the bytes could: the version's id and the path."""
        _, v, inner = self._split(path)
        return f"{v.id}/{inner}"

    # -- bytes -----------------------------------------------------------------------

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> File:
        if mode != "rb":
            _read_only()
        _, v, inner = self._split(path)
        return v.open(inner)

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        _, v, inner = self._split(path)
        with v.open(inner) as f:
            size = f.size
            lo = 0 if start is None else (start if start >= 0 else max(0, size + start))
            hi = size if end is None else (end if end >= 0 else max(0, size + end))
            if hi <= lo:
                return b""
            f.seek(lo)
            return f.read(hi - lo)

    # -- writes: none ----------------------------------------------------------------

    mkdir = makedirs = mkdirs = rmdir = _read_only
    rm = rm_file = _rm = _read_only
    pipe_file = put_file = cp_file = mv = touch = _read_only
