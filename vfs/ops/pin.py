"""`vfs cache pin` and `unpin`: a version kept whole in the cache, for use offline.

A pin names every chunk of a version and the metadata that finds them (the commit,
every tree page, the locations of every leaf). Pinning fetches what the cache lacks
of them, so that afterwards the version can be read, and mounted, with the store out
of reach: the store's config and the ref the version was pinned by are recorded
beside the cache (vfs.cache.offline) for that.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from vfs import format as fmt
from vfs import refs, tree
from vfs.backends.metadata import locs_cache_key
from vfs.cache import ChunkCache, offline
from vfs.errors import UsageError
from vfs.ops import base
from vfs.ops.prefetch import warm
from vfs.reader import Version
from vfs.store import HEADS, TAGS, Store


@dataclass(frozen=True)
class PinResult:
    name: str  # DATASET@<commit id>, as `vfs cache stats` lists it
    chunks: int
    metadata: int
    bytes_fetched: int = 0
    bytes: int = 0  # of the version's distinct chunks: what the pin holds in the cache


def pin_name(store: Store, spec: str) -> tuple[str, bytes]:
    """The pin name of the version `spec` names, and its commit id."""
    r = refs.resolve(store, spec)
    return f"{r.spec.dataset}@{r.commit.hex()}", r.commit


def _named_by(store: Store, r: refs.Resolved) -> str | None:
    """The ref ("heads/main", "tags/v1") that a resolved spec named, if any."""
    if r.branch is not None:
        return f"{HEADS}/{r.branch}"
    spec = r.spec
    if spec.back:
        return None
    kind, slash, _ = spec.ref.partition("/")
    if slash:
        return spec.ref if kind == TAGS else None
    try:
        tag = store.read_ref(spec.dataset, TAGS, spec.ref)
    except UsageError:  # not a name: an id prefix
        return None
    return f"{TAGS}/{spec.ref}" if tag is not None and tag.commit == r.commit else None


def pin(
    store: Store,
    cache: ChunkCache,
    spec: str,
    *,
    jobs: int = 8,
    on_total: Callable[[int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> PinResult:
    """Pin in `cache` every chunk of the version `spec` names and its metadata, fetch
    what the cache lacks, and record what a mount needs to serve it offline."""
    store.use_cache(cache)
    r = refs.resolve(store, spec)
    name = f"{r.spec.dataset}@{r.commit.hex()}"
    version = Version(store, r.spec.dataset, r.commit, cache)
    # The metadata: pages and locations are fetched into the cache as they are read.
    chunks: dict[bytes, int] = {}  # id -> length
    meta = {r.commit}
    for page in tree.pages(store, version.root):
        meta.add(page.id)
        if page.kind == fmt.LEAF:
            store.get_locs(page.id)
            meta.add(locs_cache_key(page.id))
            chunks.update((c.id, c.length) for e in page.entries() if e.is_file for c in e.chunks)
    # Pinned first: nothing fetched below can be evicted before it is pinned. A pin
    # that could not be filled (damage in the store, an interrupt) is not left
    # recorded as if it were: it goes, unless it was there before this run.
    was_pinned = name in cache.pins()
    cache.pin(name, chunks.keys() | meta)
    try:
        fetched = warm(version, [""], jobs=jobs, on_total=on_total, on_bytes=on_bytes)
    except BaseException:
        if not was_pinned:
            cache.unpin(name)
        raise
    config = json.loads(store.backend.get("config"))
    offline.remember(
        cache.root, store.url, config, name, r.spec.dataset, r.commit, _named_by(store, r)
    )
    return PinResult(name, len(chunks), len(meta), fetched.bytes_fetched, sum(chunks.values()))


def unpin(cache: ChunkCache, spec: str, store_url: str | None) -> str:
    """Drop the pin `spec` names: a pin name as listed, else DATASET@REF resolved in
    the store at `store_url`. Return the pin's name."""
    pins = cache.pins()
    name = spec
    store = base.open_store(store_url, for_write=True)  # no round trip unless it must resolve
    try:
        if name not in pins:
            name, _ = pin_name(store, spec)
        if name not in pins:
            raise UsageError(f"{spec} is not pinned (vfs cache stats lists the pins)")
        cache.unpin(name)
        offline.forget(cache.root, store.url, name)
    finally:
        store.close()
    return name
