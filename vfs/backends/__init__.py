"""Storage backends, and the one place a store URL is turned into one.

Accepted store URLs:

* ``s3://bucket`` or ``s3://bucket/some/prefix``: S3Backend (endpoint from
  VFS_S3_ENDPOINT or boto3's own configuration);
* ``file:///absolute/path``: LocalBackend;
* a plain filesystem path (relative paths and ``~`` are expanded): LocalBackend.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import unquote, urlsplit

from vfs.backends.base import Backend, Versioned
from vfs.errors import UsageError

log = logging.getLogger(__name__)

__all__ = ["Backend", "Versioned", "default_store_url", "open_backend"]

DEFAULT_STORE = "~/.local/share/vfs/store"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_FORMS = "use s3://bucket[/prefix], file:///absolute/path or a directory path"


def default_store_url() -> str:
    """The store used when none is given: $VFS_STORE, else a directory in the
    user's data home, which LocalBackend creates on first write."""
    return os.environ.get("VFS_STORE") or os.path.expanduser(DEFAULT_STORE)


def open_backend(url: str) -> Backend:
    """The backend for a store URL; UsageError for anything not understood."""
    if not url or not url.strip():
        raise UsageError(f"empty store URL: {_FORMS}")
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise UsageError(f"store URL {url!r} has no bucket: {_FORMS}")
        # Imported here so that local-only use does not pay for importing boto3.
        from vfs.backends.s3 import S3Backend

        log.debug("opening S3 store bucket=%s prefix=%s", bucket, prefix)
        return S3Backend(bucket, prefix.strip("/"))
    if url.startswith("file:"):
        parts = urlsplit(url)
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise UsageError(f"store URL {url!r} is not file:///absolute/path")
        from vfs.backends.local import LocalBackend

        return LocalBackend(os.path.normpath(path))
    if _SCHEME.match(url):
        raise UsageError(f"unsupported store URL {url!r}: {_FORMS}")
    from vfs.backends.local import LocalBackend

    return LocalBackend(os.path.abspath(os.path.expanduser(url)))
