"""Where things go when the user does not say: defaults that processes which never
open a cache or a store need too (the parent of `vfs mount` names the daemon's log
file after the cache directory). Standard library only."""

from __future__ import annotations

import os

# The branch a commit goes to, and that a bare DATASET names.
DEFAULT_BRANCH = "main"

# The chunk cache's cap when neither --cache-size nor a mount says otherwise.
DEFAULT_CACHE_BYTES = 10 * 1024**3


def default_cache_dir() -> str:
    """``$VFS_CACHE_DIR`` if set, else ``~/.cache/vfs``."""
    return os.environ.get("VFS_CACHE_DIR") or os.path.expanduser("~/.cache/vfs")
