"""Where things go when the user does not say: defaults that processes which never
open a cache or a store need too (the parent of `vfs mount` names the daemon's log
file after the cache directory). Standard library only."""

from __future__ import annotations

import os
import re

# The branch a commit goes to, and that a bare DATASET names.
DEFAULT_BRANCH = "main"

# The chunk cache's cap when neither --cache-size nor a mount says otherwise.
DEFAULT_CACHE_BYTES = 10 * 1024**3


def _xdg_home(variable: str, fallback: str) -> str:
    """An XDG base directory: the variable if it holds an absolute path (the spec says
    to ignore a relative one), else the fallback under the home directory."""
    value = os.environ.get(variable, "")
    return value if os.path.isabs(value) else os.path.expanduser(fallback)


def default_cache_dir() -> str:
    """``$VFS_CACHE_DIR`` if set, else ``vfs`` in ``$XDG_CACHE_HOME`` (``~/.cache``)."""
    return os.environ.get("VFS_CACHE_DIR") or os.path.join(
        _xdg_home("XDG_CACHE_HOME", "~/.cache"), "vfs"
    )


def default_store_dir() -> str:
    """The embedded store when none is named: ``vfs/store`` in ``$XDG_DATA_HOME``
    (``~/.local/share``)."""
    return os.path.join(_xdg_home("XDG_DATA_HOME", "~/.local/share"), "vfs", "store")


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """'10G', '512MiB', '1.5T', '4096' -> bytes (binary units); ValueError otherwise."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a size: {text!r} (try 10G, 512M or a byte count)")
    n = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if n <= 0:
        raise ValueError(f"a size must be positive: {text!r}")
    return n
