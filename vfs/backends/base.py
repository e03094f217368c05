"""The backend interface: a tiny, string-keyed object store.

Everything vfs keeps in a store is an object under a '/'-separated key. A backend
knows nothing of chunks, trees or refs; the store layer (vfs/store.py) gives keys
their meaning. Fault injection (and any other key-level layer) is a Backend wrapping a
Backend, never part of one; the layers are stacked in one place,
vfs/backends/__init__.py.

Keys are relative ('packs/ab/abcd...'), never start with '/', and never contain
'..' or empty segments. Backends must be safe to call from many threads at once.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from vfs.errors import NotFound


@dataclass(frozen=True)
class Versioned:
    """An object's bytes together with the token a conditional put compares with.

    The token is opaque: an ETag on S3, a content digest on local disk.
    """

    data: bytes
    token: str


@dataclass(frozen=True)
class ObjectInfo:
    """A listed object: its key, size in bytes, and last modification time (seconds
    since the epoch, as the backend's clock saw the write). gc judges an object's age
    by `mtime`, never by its contents."""

    key: str
    size: int
    mtime: float


@dataclass(frozen=True)
class UrlRead:
    """A ranged read that its caller may make itself, as one GET of `url` with
    `headers`, where it has an HTTP client that waits better than a thread does (a
    mount's, driven by its trio thread: vfs/mount/http.py). `silence` bounds the
    seconds without a byte, `connect_timeout` the connection, `ca_file` names the
    certificates to trust. `answer(status, body)` turns the reply into what
    get_range would have answered, raises what it would have raised (NotFound), or
    answers None: then ask get_range, which knows every other road."""

    url: str
    headers: list[str]
    silence: float
    connect_timeout: float
    ca_file: str | None
    answer: Callable[[int, bytes], bytes | memoryview | None]


class Backend(ABC):
    """A flat object store. All methods raise vfs.errors.NotFound for a missing key
    and vfs.errors.BackendError (or PermissionDenied) for everything else."""

    url: str

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object."""

    @abstractmethod
    def get_range(self, key: str, offset: int, length: int) -> bytes | memoryview:
        """`length` bytes from `offset`. Fewer bytes only at the end of the object. A
        backend may answer a read-only view of a buffer of its own, which the view
        keeps alive."""

    def url_read(self, key: str, offset: int, length: int) -> UrlRead | None:
        """The same read as get_range(key, offset, length) as one GET of a URL, or
        None where there is no such road (local disk, a layer that must see every
        request, such as fault injection)."""
        return None

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store an object atomically: readers see the old object, none, or the new
        one, never a part. Overwrites."""

    @abstractmethod
    def put_file(self, key: str, path: str) -> None:
        """Like put, from a local file (large objects: packs). Atomic the same way."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether the key exists."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Every key that starts with `prefix`, in no promised order."""

    @abstractmethod
    def list_info(self, prefix: str) -> Iterator[ObjectInfo]:
        """Like list, with each object's size and modification time."""

    @abstractmethod
    def list_dirs(self, prefix: str) -> builtins.list[str]:
        """The distinct next path segments below `prefix` (which ends in '/'),
        like S3's CommonPrefixes: for 'refs/' the dataset names."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing a missing key is not an error."""

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove many objects (a backend may batch them: S3 takes 1,000 a request).
        Missing keys are not an error; nothing is promised about order or atomicity."""
        for key in keys:
            self.delete(key)

    # Conditional writes: the compare-and-swap that refs are built on.

    @abstractmethod
    def get_versioned(self, key: str) -> Versioned:
        """The object and the token a later put_if compares against."""

    @abstractmethod
    def put_if(self, key: str, data: bytes, token: str | None) -> bool:
        """Write only if the object is unchanged since `token` was read, or, with
        token None, only if it does not exist. True if written, False if the
        condition failed (somebody else wrote first). Atomic against every other
        put_if on the same key, from any process or machine."""

    def delete_if(self, key: str, token: str) -> bool:
        """Delete only if the object is unchanged since `token` was read. True if
        deleted, False if it changed or is gone. Atomic against put_if on the same
        key where a backend overrides this; this default only re-reads first, so a
        write landing between its read and its delete is lost."""
        try:
            if self.get_versioned(key).token != token:
                return False
        except NotFound:
            return False
        self.delete(key)
        return True

    def copy_from(self, source: Backend, key: str) -> bool:
        """Copy `source`'s object `key` to the same key here without its bytes passing
        through this process (S3's CopyObject), if this pair of backends can; False
        (nothing done) if it cannot, and the caller copies by get and put."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and threads."""
