"""The filesystem core of `vfs mount`: one mounted dataset, composed of its parts.

This module owns the composition and what spans the parts: FsCore builds the loader
(vfs/mount/loader.py), the versions (versions.py), the namespace (namespace.py) and
the open files (files.py) of one mount, and answers what needs several of them:
`switch` (a version from versions, shown at the root by the namespace), the
diagnostics (`user.vfs.*` attributes, stats) and statfs. vfs/mount/fuse.py adapts it
to pyfuse3; tests drive it directly, with no FUSE in sight.

The hot handlers (lookup, getattr, readdir, open, read, ...) are the parts' own
methods, bound as attributes of the core when it is made: a call through the core
costs an attribute access, not a second call.

Errors are vfs.errors exceptions and those of vfs/mount/errors.py; vfs/mount/fuse.py
maps them to errno values in one table.

Concurrency: every method runs on the trio thread; see each part for its tables.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import blake3
import trio

from vfs import format as fmt
from vfs import refs
from vfs.errors import NotFound, UsageError
from vfs.mount.errors import NoAttribute
from vfs.mount.files import OpenFiles
from vfs.mount.inodes import NO_PAGE, NO_VIEW
from vfs.mount.loader import FetchConfig, Loader
from vfs.mount.namespace import ROOT, CoreConfig, Namespace
from vfs.mount.versions import Versions, View, load_view
from vfs.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FsStats:
    blocks: int
    files: int
    block_size: int = 4096
    name_max: int = fmt.MAX_NAME_LEN


@dataclass(frozen=True)
class SwitchResult:
    old: bytes
    new: bytes
    seconds: float
    invalidate: list[bytes]  # names under the root whose kernel entries are now stale


class FsCore:
    """A mounted dataset: a single version (`DS@REF`) or all of them (`DS`)."""

    def __init__(
        self,
        store: Store,
        dataset: str,
        loader: Loader,
        config: CoreConfig,
        view: View | None,
    ) -> None:
        self.store = store
        self.dataset = dataset
        self.fetcher = loader
        self.config = config
        self.multi = view is None
        self.extra_xattrs: dict[bytes, bytes] = {}  # root diagnostics the mount adds
        self.versions = Versions(store, dataset, loader, config.ref_ttl)
        ns = self.namespace = Namespace(dataset, loader, self.versions, config, view)
        files = self.files = OpenFiles(store, ns, loader)
        # The handlers, bound once (see the module docstring).
        self.getattr = ns.getattr
        self.lookup = ns.lookup
        self.forget = ns.forget
        self.readlink = ns.readlink
        self.opendir = ns.opendir
        self.readdir = ns.readdir
        self.releasedir = ns.releasedir
        self.open = files.open
        self.read = files.read
        self.read_parts = files.read_parts
        self.release = files.release

    @classmethod
    async def create(
        cls,
        store: Store,
        target: str,
        *,
        nursery: trio.Nursery,
        cache: Any = None,
        config: CoreConfig | None = None,
        fetch: FetchConfig | None = None,
    ) -> FsCore:
        """`DS@REF` mounts that version, `DS` every version. Reads the commit and the
        root page (or only checks that the dataset exists): O(1) in the version's size."""
        config = config or CoreConfig()
        loader = Loader(store, cache, nursery, fetch, meta_threads=config.meta_threads)
        spec = refs.parse_spec(target)
        if "@" not in target:
            if not await trio.to_thread.run_sync(store.dataset_exists, spec.dataset):
                raise NotFound(f"no dataset {spec.dataset!r} in {store.url}")
            return cls(store, spec.dataset, loader, config, None)
        view = await trio.to_thread.run_sync(load_view, store, spec)
        return cls(store, spec.dataset, loader, config, view)

    def statfs(self) -> FsStats:
        view = self.current
        if view is None:
            return FsStats(blocks=0, files=0)
        c = view.version.commit
        return FsStats(blocks=(c.bytes + 4095) // 4096, files=c.files)

    # -- diagnostics ---------------------------------------------------------------

    def listxattr(self, ino: int) -> list[bytes]:
        ns = self.namespace
        t = ns.table
        r = ns.rec(ino)
        names = [b"user.vfs.dataset"]
        if t.view[r] != NO_VIEW or ino in ns.ref_commits:
            names += [b"user.vfs.version", b"user.vfs.ref"]
        if t.leaf[r] != NO_PAGE and t.kind[r] == fmt.FILE:
            names += [b"user.vfs.content_id", b"user.vfs.chunks", b"user.vfs.cached_bytes"]
        if ino == ROOT:
            names += [b"user.vfs.stats", *self.extra_xattrs]
        return names

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        if name not in self.listxattr(ino):
            raise NoAttribute(f"no attribute {name!r}")
        ns = self.namespace
        t = ns.table
        r = ns.rec(ino)
        view = ns.view(r)
        if name == b"user.vfs.dataset":
            return self.dataset.encode()
        if name == b"user.vfs.version":
            return (view.commit if view is not None else ns.ref_commits[ino]).hex().encode()
        if name == b"user.vfs.ref":
            if view is None or (t.leaf[r] == NO_PAGE and ino != ROOT):  # an @REF directory
                return f"{self.dataset}{ns.names[ino].decode()}".encode()
            return view.label.encode()
        if name == b"user.vfs.stats":
            return json.dumps(self.stats(), sort_keys=True).encode()
        if name in self.extra_xattrs:
            return self.extra_xattrs[name]
        e = await ns.entry(ino)
        assert e is not None
        if name == b"user.vfs.content_id":
            return content_id(e).hex().encode()
        if name == b"user.vfs.chunks":
            return str(len(e.chunks)).encode()
        return str(await self.fetcher.cached_bytes(e.chunks)).encode()

    def stats(self) -> dict[str, Any]:
        ns = self.namespace
        counters = self.fetcher.counters()
        budget_used = counters.pop("budget_used")
        return {
            **counters,
            "inodes": len(ns.table),
            "inode_table_bytes": ns.table.nbytes(),
            "open_files": len(self.files),
            "budget_used": budget_used,
        }

    # -- switching -----------------------------------------------------------------

    async def switch(self, ref: str) -> SwitchResult:
        """Show another version at the root. New lookups see it; open files keep
        reading theirs. `ref` is REF, @REF or DATASET@REF."""
        if self.multi:
            raise UsageError(
                f"this mount shows every version of {self.dataset} as @REF directories; "
                "switch applies to DATASET@REF mounts"
            )
        t0 = time.monotonic()
        text = ref if "@" in ref[1:] else f"{self.dataset}@{ref.lstrip('@')}"
        spec = refs.parse_spec(text)
        if spec.dataset != self.dataset:
            raise UsageError(f"this mount shows {self.dataset}, not {spec.dataset}")
        view = await self.versions.load(spec)
        old, stale = self.namespace.show_root(view)
        log.info("switched from %s to %s (%s)", old.hex()[:12], view.commit.hex()[:12], view.label)
        return SwitchResult(old, view.commit, time.monotonic() - t0, stale)

    @property
    def current(self) -> View | None:
        return self.namespace.current


def content_id(e: fmt.Entry) -> bytes:
    """A file's content id: BLAKE3 of its chunk ids in order. Equal bytes, equal id."""
    h = blake3.blake3()
    for c in e.chunks:
        h.update(c.id)
    return h.digest()
