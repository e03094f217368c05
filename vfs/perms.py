"""Group sharing of a store or a cache directory: the one rule, in one place.

A directory that is group-writable or setgid is shared by its Unix group, as git's
`core.sharedRepository=group` and DVC's `cache.shared = group` mean it: everything
vfs creates below it (directories, objects, cache files, logs, LMDB files) is made
usable by every member, whatever the creating user's umask. Directories get
`rwxrwsr-x` (2775: new entries keep the group), files `rw-rw-r--` (664). Below a
directory that is not shared, modes follow the umask as usual.

So a team server needs one step from an administrator:

    install -d -m 2775 -g team /srv/vfs/store /srv/vfs/cache

Standard library only: the cache layout and the local backend both use it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from typing import NamedTuple

# The umask can only be read by setting it: read it once, at import, before any
# worker thread exists.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

SHARED_DIR_MODE = 0o2775
SHARED_FILE_MODE = 0o664


class Modes(NamedTuple):
    """The modes of what is created in one directory."""

    shared: bool
    dir: int
    file: int


_PRIVATE = Modes(False, 0o777 & ~_UMASK, 0o666 & ~_UMASK)
_SHARED = Modes(True, SHARED_DIR_MODE, SHARED_FILE_MODE)


def is_shared(st_mode: int) -> bool:
    return bool(st_mode & (stat.S_IWGRP | stat.S_ISGID))


def modes_in(directory: str) -> Modes:
    """The modes for entries created in `directory` (or, if it does not exist yet, in
    its nearest existing ancestor)."""
    path = os.path.abspath(directory)
    while True:
        try:
            return _SHARED if is_shared(os.stat(path).st_mode) else _PRIVATE
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                return _PRIVATE
            path = parent


def make_dirs(path: str) -> Modes:
    """`os.makedirs(path, exist_ok=True)`, each directory it creates below a shared one
    made shared too. Returns the modes for files created in `path`."""
    path = os.path.abspath(path)
    missing = []
    probe = path
    while not os.path.isdir(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    modes = modes_in(probe)
    for d in reversed(missing):
        try:
            os.mkdir(d, modes.dir)
        except FileExistsError:
            continue
        if modes.shared:
            set_mode(d, modes.dir)
    return modes


def set_mode(path: str | int, mode: int) -> None:
    """chmod (a path, or an open fd) unless it has that mode already. Another member
    may own it: its creator set its mode then, so EPERM is not an error."""
    with contextlib.suppress(PermissionError):
        st = os.stat(path)
        if stat.S_IMODE(st.st_mode) != mode:
            if isinstance(path, int):
                os.fchmod(path, mode)
            else:
                os.chmod(path, mode)


def share_file(path: str | int, directory: str) -> None:
    """Make a file just created in `directory` usable by the group, if the directory
    is shared (a no-op otherwise)."""
    modes = modes_in(directory)
    if modes.shared:
        set_mode(path, modes.file)


def write_file(path: str, text: str) -> None:
    """Write a small text file (a lock file, an access record, a report) atomically:
    a temporary file beside it, fsynced, renamed over it, with the mode vfs gives a
    file in that directory. A reader sees the old file or the new one, never a part."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), modes_in(directory).file)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
