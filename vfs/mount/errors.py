"""The errors of the mount's filesystem core that vfs.errors has no class for.

Raised by the namespace and open files (vfs/mount/namespace.py, files.py, core.py);
vfs/mount/fuse.py maps each to its errno in its one table.
"""

from __future__ import annotations

from vfs.errors import VfsError


class NotADirectory(VfsError):
    """ENOTDIR."""


class IsADirectory(VfsError):
    """EISDIR."""


class InvalidArgument(VfsError):
    """EINVAL: readlink of a non-symlink and the like."""


class ReadOnly(VfsError):
    """EROFS: every version is immutable."""


class NoAttribute(VfsError):
    """ENODATA: no such extended attribute."""


class BadHandle(VfsError):
    """EBADF: a file or directory handle this mount never gave out."""


class XattrsOff(VfsError):
    """ENOSYS: a mount without --xattrs answers no extended attribute request, so that
    the kernel stops sending them (it remembers ENOSYS for getxattr and listxattr)."""
