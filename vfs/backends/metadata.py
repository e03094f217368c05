"""The metadata layers: where a Store reads its immutable metadata from.

Tree pages and commits (objects, found by id) and a leaf page's locations (found by
the leaf's id) never change once written. A Store reads them through a stack of
`Metadata` layers, built by `vfs.backends.metadata_stack`:

    MetadataCache      the machine's chunk cache, when the store has one (use_cache)
    BackendMetadata    the store's backend: GET the object, unseal, verify

The metadata cache keeps what it fetched, so that a version whose chunks are cached,
and pinned with its metadata (`vfs cache pin`), stays readable while the store cannot
be reached. It holds pages and commits under their ids, which like a chunk's id are
the BLAKE3 of the bytes, and locations under `locs_cache_key(leaf id)`.

Why a layer here and not a Backend wrapper like the fault injector: the chunk cache
holds canonical (verified, uncompressed) bytes under ids, not sealed bytes under keys.
A wrapper at the key level would have to seal a cache hit again for the store to
unseal it, and would write every fetched page to the cache at once; a mount instead
writes fetched pages in batches, off the path of the reader who waits for the page
(`Store.fetch_page`). So this stack sits one level up, over ids and canonical bytes.

Concurrency: layers are shared by the Store's threads and keep no state of their own;
the chunk cache is thread-safe.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import blake3

from vfs import format as fmt
from vfs.backends.base import Backend
from vfs.errors import CorruptObject, MissingObject, NotFound


class BlobCache(Protocol):
    """What the metadata cache needs of the chunk cache (vfs.cache.ChunkCache)."""

    def get(self, key: bytes, /) -> bytes | None: ...

    def put(self, key: bytes, data: bytes, /) -> None: ...

    def replace(self, key: bytes, data: bytes, /) -> None: ...


def locs_cache_key(leaf_id: bytes) -> bytes:
    """The chunk cache key of a leaf page's locations: not its id (the page has that),
    but a BLAKE3 of it under a distinct prefix, so it can never name a chunk."""
    return blake3.blake3(b"vfs-locs\0" + leaf_id).digest()


class Metadata(ABC):
    """A source of immutable metadata. `key` is the object's backend key (the store
    names keys, docs/format.md "Layout"); ids address it everywhere else."""

    @abstractmethod
    def load_object(self, key: str, oid: bytes, what: str) -> tuple[bytes, bool]:
        """An object's canonical bytes, verified against `oid`, and True if they came
        from the store's backend (and so are not kept below this layer yet).
        MissingObject if the store has no such object."""

    @abstractmethod
    def keep_object(self, oid: bytes, canonical: bytes) -> None:
        """Keep bytes that load_object fetched, where a later load finds them."""

    @abstractmethod
    def load_locs(self, key: str, leaf_id: bytes, what: str) -> dict[bytes, fmt.Location]:
        """A leaf page's locations, decoded. MissingObject if the store has none."""

    @abstractmethod
    def reload_locs(self, key: str, leaf_id: bytes, what: str) -> dict[bytes, fmt.Location]:
        """Like load_locs, but from the store's backend whatever a layer keeps: the
        kept copy may name a pack that gc repacked and deleted."""


class BackendMetadata(Metadata):
    """The bottom layer: metadata read from the store's backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def load_object(self, key: str, oid: bytes, what: str) -> tuple[bytes, bool]:
        try:
            stored = self.backend.get(key)
        except NotFound:
            raise MissingObject(f"{what} {oid.hex()} is missing from {self.backend.url}") from None
        return fmt.unseal_verified(stored, oid, f"{what} {oid.hex()[:16]}"), True

    def keep_object(self, oid: bytes, canonical: bytes) -> None:
        pass  # the backend has it already

    def load_locs(self, key: str, leaf_id: bytes, what: str) -> dict[bytes, fmt.Location]:
        return fmt.decode_locs(self.fetch_locs(key, what), what)

    def reload_locs(self, key: str, leaf_id: bytes, what: str) -> dict[bytes, fmt.Location]:
        return self.load_locs(key, leaf_id, what)

    def fetch_locs(self, key: str, what: str) -> bytes:
        """A leaf page's locations, as canonical bytes (for a layer that keeps them)."""
        try:
            stored = self.backend.get(key)
        except NotFound:
            raise MissingObject(f"{what} are missing from {self.backend.url}") from None
        return fmt.unseal(stored, what)


class MetadataCache(Metadata):
    """Metadata through the machine's chunk cache: a hit is served from the cache, what
    is fetched from the backend is put there (see the module docstring)."""

    def __init__(self, inner: BackendMetadata, cache: BlobCache) -> None:
        self.inner = inner
        self.cache = cache

    def load_object(self, key: str, oid: bytes, what: str) -> tuple[bytes, bool]:
        hit = self.cache.get(oid)
        if hit is not None and fmt.object_id(hit) == oid:
            return hit, False
        return self.inner.load_object(key, oid, what)

    def keep_object(self, oid: bytes, canonical: bytes) -> None:
        self.cache.put(oid, canonical)

    def load_locs(self, key: str, leaf_id: bytes, what: str) -> dict[bytes, fmt.Location]:
        ckey = locs_cache_key(leaf_id)
        hit = self.cache.get(ckey)
        if hit is not None:
            try:
                # Locations are not content-addressed; they only say where to look, and
                # a chunk fetched from a wrong place fails its own verification.
                return fmt.decode_locs(hit, what)
            except CorruptObject:
                pass
        canonical = self.inner.fetch_locs(key, what)
        locs = fmt.decode_locs(canonical, what)
        self.cache.put(ckey, canonical)
        return locs

    def reload_locs(self, key: str, leaf_id: bytes, what: str) -> dict[bytes, fmt.Location]:
        canonical = self.inner.fetch_locs(key, what)
        locs = fmt.decode_locs(canonical, what)
        self.cache.replace(locs_cache_key(leaf_id), canonical)  # the old copy is stale
        return locs
