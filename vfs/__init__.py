"""vfs: data version control whose checkout is a filesystem.

The packages, top down (docs/architecture.md has the picture and the rules):

    vfs.cli        the `vfs` command line: parses and prints only
    vfs.ops        one module per verb (commit, get, diff, verify, prefetch, pin, ...)
    vfs.mount      a version as a read-only FUSE filesystem (daemon, core, loader)
    reader, refs, tree, store, packer, chunker, format
                   the store layer: reading and writing versions in a store
    vfs.backends   S3 and local stores, and the layers stacked over them
    vfs.cache      the machine's cache directory: the chunk cache, the stat cache
    vfs.testing    for tests: a real S3 server (SeaweedFS) and the fault launcher

The Python API (docs/api.md): `vfs.open_version("dataset@ref")`, a Version with
walk, listdir, stat, exists, open and read_bytes (vfs.api); `vfs://` URLs for fsspec,
pandas and pyarrow (vfs.fsspec); PyTorch datasets (vfs.torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vfs.api import File, Stat, Version, open_version

__version__ = "0.1.0"
__all__ = ["File", "Stat", "Version", "__version__", "open_version"]

# Loaded on first use, not on import: `import vfs.defaults` (the parent of `vfs mount`)
# must stay light, without boto3 and LMDB.
_LAZY = {"File": "vfs.api", "Stat": "vfs.api", "Version": "vfs.api", "open_version": "vfs.api"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
