"""What every verb starts from: the store a command names and the version a spec names.

The CLI reaches the store layer through this module and the verb modules only. It
holds no state: each call opens or resolves afresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vfs import config
from vfs.config import split_remote
from vfs.reader import Version
from vfs.refs import Resolved, resolve, short
from vfs.store import Store

if TYPE_CHECKING:
    from vfs.cache import ChunkCache

# resolve and short are the store layer's own (vfs.refs): named here so that a verb's
# caller resolves a spec and prints an id without importing the store layer.
# split_remote is vfs.config's (light: the parent of `vfs mount` needs it too).
__all__ = [
    "Resolved",
    "open_spec",
    "open_store",
    "open_target",
    "resolve",
    "short",
    "split_remote",
    "store_target",
    "store_url",
    "version_of",
]


def store_target(spec: str | None, create: bool = False) -> config.StoreTarget:
    """The store a command names (`spec`: --store's value, a URL, a path or a remote's
    name), else $VFS_STORE, else core.store of the config, else the default directory;
    with the S3 endpoint a remote names (vfs.config.resolve_store has the rules)."""
    return config.resolve_store(spec, create=create)


def store_url(url: str | None) -> str:
    """The URL of the store a command uses (see store_target)."""
    return store_target(url).url


def open_store(url: str | None, for_write: bool = False, create: bool = False) -> Store:
    """Open the store `url` names (see store_target; `create`: a bare word no remote
    has is a new directory); a store to read from must have a config this version
    reads."""
    return open_target(store_target(url, create), for_write)


def open_spec(
    url: str | None,
    specs: Sequence[str | None],
    for_write: bool = False,
    cache: ChunkCache | None = None,
) -> tuple[Store, list[str | None]]:
    """The store that `specs` (DATASET@REF, or REMOTE:DATASET@REF) are read from, and
    the specs without their remote part (vfs.config.spec_target has the rules): a
    remote part names the remote's store for this command only. With `cache`, see
    open_target."""
    target, rests = config.spec_target(url, specs)
    return open_target(target, for_write, cache), rests


def open_target(
    target: config.StoreTarget, for_write: bool = False, cache: ChunkCache | None = None
) -> Store:
    """Open a resolved store (URL and endpoint); to read, it must be a store. A
    reader that gives its chunk `cache` reads through it, and reads the versions
    pinned there when the store cannot be reached (Store.check_config_or_pins)."""
    store = Store.open(target.url, target.endpoint_url)
    try:
        if cache is not None:
            store.use_cache(cache)
            if not for_write:
                store.check_config_or_pins(cache, cache.root)
        elif not for_write:
            store.check_config()
    except BaseException:
        store.close()
        raise
    return store


def version_of(store: Store, r: Resolved, cache: ChunkCache | None = None) -> Version:
    """The readable version a resolved spec names."""
    return Version(store, r.spec.dataset, r.commit, cache)
