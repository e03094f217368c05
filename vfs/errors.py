"""The exceptions vfs raises, one family, so the CLI and the FUSE layer each map
them in exactly one place (exit codes there, errno values here)."""

from __future__ import annotations

import errno as errno_mod


class VfsError(Exception):
    """Base of every error vfs reports to a user. The message is one clear line."""


class UsageError(VfsError):
    """Bad arguments or names (the CLI exits 2)."""


class NotFound(VfsError):
    """An object, dataset, ref or path that does not exist."""


class _PathError(OSError):
    """A path inside a version that is not what the caller asked for: an OSError with
    its errno and filename, as os.open would raise, whose str() stays vfs's one clear
    line (the CLI prints it). Pickles whole, so a worker's error reaches its parent."""

    code = 0

    def __init__(self, message: str, path: str | None = None) -> None:
        OSError.__init__(self, self.code, message, path)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.filename))


class PathNotFound(NotFound, _PathError, FileNotFoundError):
    """No such file or directory in a version (ENOENT)."""

    code = errno_mod.ENOENT


class NotADirectory(NotFound, _PathError, NotADirectoryError):
    """A path that goes through, or lists, something that is not a directory
    (ENOTDIR). A NotFound still, as callers before the Python API expected."""

    code = errno_mod.ENOTDIR


class IsADirectory(UsageError, _PathError, IsADirectoryError):
    """A directory where a file was asked for (EISDIR); a UsageError too, as the
    reader raised before."""

    code = errno_mod.EISDIR


class AmbiguousRef(VfsError):
    """An id prefix that matches more than one commit."""


class RefConflict(VfsError):
    """A compare-and-swap on a ref lost a race, or a tag already exists."""


class CorruptObject(VfsError):
    """Stored bytes that do not match their address or do not decode."""


class MissingObject(CorruptObject):
    """An object a version refers to is not in the store: damage, like corruption
    (EIO on a mount), not a name that does not exist (ENOENT)."""


class BackendError(VfsError):
    """The store could not be reached or refused an operation."""


class PermissionDenied(BackendError):
    """The store refused an operation for lack of permission."""


class Unreachable(BackendError):
    """No answer from the store: a connection refused or cut, or one that stalled.
    What a pinned version is read offline through (Store.check_config_or_pins)."""


class NotPinned(Unreachable):
    """Offline (the store known to be away), a version the cache's pins do not hold:
    certain at once, so a mount answers EIO without waiting out its read timeout."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with one line on what the interrupted work left behind and how to go
    on; the CLI prints it instead of its plain "interrupted" (exit 130)."""
