"""What every verb starts from: the store a command names and the version a spec names.

The CLI reaches the store layer through this module and the verb modules only. It
holds no state: each call opens or resolves afresh.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from vfs.backends import default_store_url
from vfs.reader import Version
from vfs.refs import Resolved, resolve, short
from vfs.store import Store

if TYPE_CHECKING:
    from vfs.cache import ChunkCache

# resolve and short are the store layer's own (vfs.refs): named here so that a verb's
# caller resolves a spec and prints an id without importing the store layer.
__all__ = ["Resolved", "open_store", "resolve", "short", "split_remote", "store_url", "version_of"]

_REMOTE_PREFIX = re.compile(r"([A-Za-z0-9_][A-Za-z0-9._+-]*):(?!//)(.*)", re.DOTALL)


def store_url(url: str | None) -> str:
    """The store a command uses: `url` if given, else $VFS_STORE, else the default."""
    return str(url or default_store_url())


def open_store(url: str | None, for_write: bool = False) -> Store:
    """Open the store; a store to read from must have a config this version reads."""
    store = Store.open(store_url(url))
    if not for_write:
        store.check_config()
    return store


def split_remote(text: str) -> tuple[str | None, str]:
    """`REMOTE:DATASET@REF` -> ("REMOTE", "DATASET@REF"); a spec without a remote part
    -> (None, text). `REMOTE:` alone names the remote's store (rest ""). A URL is not a
    remote part: `s3://b/p` stays whole, as ':' followed by '//' is a scheme. Remote,
    dataset and ref names cannot hold ':' (vfs.names), so the split is unambiguous."""
    m = _REMOTE_PREFIX.fullmatch(text)
    if m is None:
        return None, text
    return m.group(1), m.group(2)


def version_of(store: Store, r: Resolved, cache: ChunkCache | None = None) -> Version:
    """The readable version a resolved spec names."""
    return Version(store, r.spec.dataset, r.commit, cache)
