"""Storage backends and their layers, composed here and nowhere else.

A Store reads through two stacks, each built by one function of this module
(after restic's internal/backend: each layer is a type, and one place stacks them):

    open_backend(url, endpoint_url)   key level, a Backend (base.py) wrapping a Backend:
        FaultyBackend           only when $VFS_FAULTS names a fault control directory
                                (faults.py, imported only then; tests set it)
        S3Backend | LocalBackend

    metadata_stack(backend, cache)   id level, over immutable metadata (metadata.py):
        MetadataCache           only with a chunk cache (Store.use_cache)
        BackendMetadata         over the stack above

Retries are S3Backend's (botocore's, inside the HTTP exchange) and concurrency limits
belong to the callers (the mount's loaders, the packer's upload pool); a new
key-level layer goes into open_backend.

Accepted store URLs:

* ``s3://bucket`` or ``s3://bucket/some/prefix``: S3Backend (endpoint from the
  caller's endpoint_url, a remote's in vfs.toml, else VFS_S3_ENDPOINT or boto3's own
  configuration);
* ``file:///absolute/path``: LocalBackend;
* a plain filesystem path (relative paths and ``~`` are expanded): LocalBackend.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from vfs.backends.base import Backend, Versioned
from vfs.defaults import default_store_dir
from vfs.errors import UsageError

if TYPE_CHECKING:
    from vfs.backends.metadata import BlobCache, Metadata

log = logging.getLogger(__name__)

__all__ = [
    "FAULTS_ENV",
    "Backend",
    "Versioned",
    "check_url",
    "default_store_url",
    "metadata_stack",
    "open_backend",
]

# The environment variable that puts fault injection into every backend a process
# opens: a FaultControl directory (vfs/backends/faults.py). Subprocesses inherit it, so
# a mount daemon obeys the test that started it.
FAULTS_ENV = "VFS_FAULTS"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_FORMS = "use s3://bucket[/prefix], file:///absolute/path or a directory path"


def default_store_url() -> str:
    """The store used when none is given: $VFS_STORE, else a directory in the
    user's data home (XDG), which LocalBackend creates on first write."""
    return os.environ.get("VFS_STORE") or default_store_dir()


def open_backend(url: str, endpoint_url: str | None = None) -> Backend:
    """The backend stack for a store URL; UsageError for anything not understood.
    `endpoint_url` is the S3 endpoint (a remote's), for s3:// URLs only."""
    backend = _real_backend(url, endpoint_url)
    control = os.environ.get(FAULTS_ENV)
    if control:
        # Imported here, as the real backends are, so that a process not told to inject
        # faults never loads the fault layer.
        from vfs.backends.faults import FaultControl, FaultyBackend

        log.info("store %s: injecting faults from %s", backend.url, control)
        backend = FaultyBackend(backend, FaultControl(control))
    return backend


def metadata_stack(backend: Backend, cache: BlobCache | None = None) -> Metadata:
    """The metadata stack over `backend`: through `cache` if there is one."""
    # Imported here, as the backends are, so that what only asks for the default
    # store URL (the CLI's light paths) does not pay for importing the store format.
    from vfs.backends.metadata import BackendMetadata, MetadataCache

    bottom = BackendMetadata(backend)
    return bottom if cache is None else MetadataCache(bottom, cache)


def check_url(url: str, endpoint_url: str | None = None) -> str:
    """`url` checked against the accepted forms, without opening anything: "s3" or
    "local". UsageError for anything not understood (`vfs remote add` checks with it)."""
    if not url or not url.strip():
        raise UsageError(f"empty store URL: {_FORMS}")
    if url.startswith("s3://"):
        if not url[len("s3://") :].partition("/")[0]:
            raise UsageError(f"store URL {url!r} has no bucket: {_FORMS}")
        return "s3"
    if endpoint_url:
        raise UsageError(f"an endpoint URL is for s3:// stores only, not {url!r}")
    if url.startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not unquote(parts.path).startswith("/"):
            raise UsageError(f"store URL {url!r} is not file:///absolute/path")
        return "local"
    if _SCHEME.match(url):
        raise UsageError(f"unsupported store URL {url!r}: {_FORMS}")
    return "local"


def _real_backend(url: str, endpoint_url: str | None = None) -> Backend:
    kind = check_url(url, endpoint_url)
    if kind == "s3":
        bucket, _, prefix = url[len("s3://") :].partition("/")
        # Imported here so that local-only use does not pay for importing boto3.
        from vfs.backends.s3 import S3Backend

        log.debug("opening S3 store bucket=%s prefix=%s", bucket, prefix)
        return S3Backend(bucket, prefix.strip("/"), endpoint_url)
    from vfs.backends.local import LocalBackend

    if url.startswith("file:"):
        return LocalBackend(os.path.normpath(unquote(urlsplit(url).path)))
    return LocalBackend(os.path.abspath(os.path.expanduser(url)))
