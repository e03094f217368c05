"""The exceptions vfs raises, one family, so the CLI and the FUSE layer each map
them in exactly one place (exit codes there, errno values here)."""

from __future__ import annotations


class VfsError(Exception):
    """Base of every error vfs reports to a user. The message is one clear line."""


class UsageError(VfsError):
    """Bad arguments or names (the CLI exits 2)."""


class NotFound(VfsError):
    """An object, dataset, ref or path that does not exist."""


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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with one line on what the interrupted work left behind and how to go
    on; the CLI prints it instead of its plain "interrupted" (exit 130)."""
