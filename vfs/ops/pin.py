"""`vfs cache pin` and `unpin`: the set of cached objects a version needs offline.

A pin names every chunk of a version and the metadata that finds them (the commit,
every tree page, the locations of every leaf), so that a pinned, fully cached
version can be read with the store out of reach. Pinning fetches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from vfs import format as fmt
from vfs import refs, tree
from vfs.backends.metadata import locs_cache_key
from vfs.cache import ChunkCache
from vfs.errors import UsageError
from vfs.ops.base import open_store
from vfs.reader import Version
from vfs.store import Store


@dataclass(frozen=True)
class PinResult:
    name: str  # DATASET@<commit id>, as `vfs cache stats` lists it
    chunks: int
    metadata: int


def pin_name(store: Store, spec: str) -> tuple[str, bytes]:
    """The pin name of the version `spec` names, and its commit id."""
    r = refs.resolve(store, spec)
    return f"{r.spec.dataset}@{r.commit.hex()}", r.commit


def pin(store: Store, cache: ChunkCache, spec: str) -> PinResult:
    """Pin in `cache` every chunk of the version `spec` names, and its metadata."""
    store.use_cache(cache)
    name, commit = pin_name(store, spec)
    version = Version(store, refs.parse_spec(spec).dataset, commit)
    # Chunks, and the metadata that finds them, so that a pinned version can
    # be read with the store out of reach (offline).
    chunks: set[bytes] = set()
    meta = {commit}
    for page in tree.pages(store, version.root):
        meta.add(page.id)
        if page.kind == fmt.LEAF:
            meta.add(locs_cache_key(page.id))
            chunks.update(c.id for e in page.entries() if e.is_file for c in e.chunks)
    cache.pin(name, chunks | meta)
    return PinResult(name, len(chunks), len(meta))


def unpin(cache: ChunkCache, spec: str, store_url: str | None) -> str:
    """Drop the pin `spec` names: a pin name as listed, else DATASET@REF resolved in
    the store at `store_url`. Return the pin's name."""
    pins = cache.pins()
    name = spec
    if name not in pins:
        store = open_store(store_url)
        try:
            name, _ = pin_name(store, spec)
        finally:
            store.close()
    if name not in pins:
        raise UsageError(f"{spec} is not pinned (vfs cache stats lists the pins)")
    cache.unpin(name)
    return name
