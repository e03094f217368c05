"""Whether a location holds a vfs store, and the one message that says it does not.

A store is recognised by its `config` object (docs/format.md, "Layout"): on a local
store the file `config` in the store's directory, on S3 the key `config` under the
prefix. Anything else at the location is one of:

* absent: a path that does not exist (or an S3 prefix with no key at all),
* empty: an empty directory (a local directory holding only what a crashed first
  write leaves, `.locks` and `.tmp-*`, counts as empty too),
* a file: a regular file (or anything else that is not a directory),
* other: a directory or prefix holding other things: somebody's data.

Readers refuse all four with NoStore. A first commit creates a store only where
there is nothing (absent or empty); `vfs init` creates one anywhere but in a file.

This module imports the standard library and vfs.errors only: the parent of `vfs
mount` checks a local store with it before it starts a daemon, and must stay light
(tests/store/test_cli.py).
"""

from __future__ import annotations

import errno
import os
from enum import Enum
from urllib.parse import unquote, urlsplit

from vfs.errors import BackendError, PermissionDenied, VfsError

CONFIG = "config"
# What the local backend keeps beside objects (vfs/backends/local.py); a directory
# holding only these has no object in it.
_LOCAL_HOUSEKEEPING = (".locks",)
_LOCAL_TMP_PREFIX = ".tmp-"


class Place(Enum):
    STORE = "store"
    ABSENT = "absent"
    EMPTY = "empty"
    FILE = "file"
    OTHER = "other"

    @property
    def vacant(self) -> bool:
        """Nothing there: a first commit may create a store here."""
        return self in (Place.ABSENT, Place.EMPTY)


class NoStore(VfsError):
    """The location a command names holds no vfs store (exit 1). Not a NotFound: code
    that takes a missing object or ref in its stride must not take this one."""


def local_root(url: str) -> str | None:
    """The directory of a local store's URL as Store.url spells it (file:///path),
    or None for another backend."""
    return url[len("file://") :] if url.startswith("file://") else None


def where(url: str) -> str:
    """How a message names a store: its directory, or its s3:// URL."""
    return local_root(url) or url


def local_place(root: str) -> Place:
    """What lies at a local store's directory."""
    try:
        if os.path.isfile(os.path.join(root, CONFIG)):
            return Place.STORE
        names = os.listdir(root)
    except FileNotFoundError:
        return Place.ABSENT
    except NotADirectoryError:
        return Place.FILE
    except PermissionError:
        raise PermissionDenied(f"permission denied: {root}") from None
    except OSError as e:
        if e.errno == errno.ENOTDIR:
            return Place.FILE
        raise BackendError(f"cannot access {root}: {e.strerror or e}") from None
    if all(n in _LOCAL_HOUSEKEEPING or n.startswith(_LOCAL_TMP_PREFIX) for n in names):
        return Place.EMPTY
    return Place.OTHER


def no_store(url: str, place: Place) -> NoStore:
    """The error for a location that holds no store, saying what is there and what to
    do about it."""
    at = where(url)
    if place.vacant:
        return NoStore(f"no vfs store at {at} (create one with `vfs init {at}`, or commit to it)")
    if place is Place.FILE:
        return NoStore(f"no vfs store at {at} (it is a file)")
    return NoStore(
        f"no vfs store at {at} (it holds other files; `vfs init {at}` makes a store there)"
    )


def check_local(url_or_path: str) -> None:
    """Raise NoStore unless a local path (or file:// URL) holds a store; do nothing for
    an S3 URL, which needs the store layer to look. For light processes (`vfs mount`)."""
    if url_or_path.startswith("s3://"):
        return
    if url_or_path.startswith("file:"):
        path = os.path.normpath(unquote(urlsplit(url_or_path).path))
    else:
        path = os.path.abspath(os.path.expanduser(url_or_path))
    place = local_place(path)
    if place is not Place.STORE:
        raise no_store("file://" + path, place)
