"""The filesystem core of `vfs mount`: one mounted dataset, composed of its parts.

This module owns the composition and what spans the parts: FsCore builds the loader
(vfs/mount/loader.py), the versions (versions.py), the namespace (namespace.py) and
the open files (files.py) of one mount, and answers what needs several of them:
`switch` (a version from versions, shown at the root by the namespace), the
diagnostics (`info` for `vfs info`, the `user.vfs.*` attributes of a mount with
--xattrs, stats) and statfs. vfs/mount/fuse.py adapts it
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
from vfs.access import AccessRecorder
from vfs.errors import NotFound, UsageError
from vfs.mount.errors import NoAttribute, XattrsOff
from vfs.mount.files import OpenFiles
from vfs.mount.inodes import NO_PAGE, NO_VIEW
from vfs.mount.loader import FetchConfig, Loader
from vfs.mount.namespace import ROOT, CoreConfig, Namespace
from vfs.mount.versions import Versions, View, load_view
from vfs.store import Store

log = logging.getLogger(__name__)

# How long `vfs info` on a mount's root waits to learn where its ref points now.
REF_NOW_WAIT = 2.0

_KINDS = {fmt.FILE: "file", fmt.DIR: "directory", fmt.SYMLINK: "symlink"}


async def _save_when_done(recorder: AccessRecorder, path: str) -> None:
    """Wait until the mount's nursery is cancelled (it is when the mount ends, however
    it ends), then write the access record. Written on the trio thread: nothing else
    runs then, and the file is small (merged ranges, not one entry per read)."""
    try:
        await trio.sleep_forever()
    finally:
        try:
            recorder.save(path)
            log.info("access record written to %s", path)
        except OSError as e:
            log.error("cannot write the access record %s: %s", path, e)


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
        recorder: AccessRecorder | None = None,
    ) -> None:
        self.store = store
        self.dataset = dataset
        self.fetcher = loader
        self.config = config
        self.multi = view is None
        # The daemon's facts shown at the root (pid, control, log), by `vfs info` and
        # as user.vfs.KEY attributes.
        self.extra_info: dict[str, str | int] = {}
        # FUSE requests by handler name: what a workload costs the daemon in round
        # trips. vfs/mount/fuse.py's Operations puts its counters here.
        self.requests: dict[str, int] = {}
        self.xattr_requests = 0  # getxattr and listxattr requests answered, served or not
        self.versions = Versions(store, dataset, loader, config.ref_ttl)
        ns = self.namespace = Namespace(dataset, loader, self.versions, config, view)
        files = self.files = OpenFiles(store, ns, loader, recorder)
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
        access_record: str | None = None,
    ) -> FsCore:
        """`DS@REF` mounts that version, `DS` every version. Reads the commit and the
        root page (or only checks that the dataset exists): O(1) in the version's size.
        With `access_record`, the ranges each read serves are recorded and written to
        that file when `nursery` ends (unmount, a signal, or a failure)."""
        config = config or CoreConfig()
        loader = Loader(store, cache, nursery, fetch, meta_threads=config.meta_threads)
        spec = refs.parse_spec(target)
        recorder = None
        if access_record is not None:
            recorder = AccessRecorder()
            nursery.start_soon(_save_when_done, recorder, access_record)
        if "@" not in target:
            if not await trio.to_thread.run_sync(store.dataset_exists, spec.dataset):
                raise NotFound(f"no dataset {spec.dataset!r} in {store.url}")
            return cls(store, spec.dataset, loader, config, None, recorder)
        view = await trio.to_thread.run_sync(load_view, store, spec)
        return cls(store, spec.dataset, loader, config, view, recorder)

    def statfs(self) -> FsStats:
        view = self.current
        if view is None:
            return FsStats(blocks=0, files=0)
        c = view.version.commit
        return FsStats(blocks=(c.bytes + 4095) // 4096, files=c.files)

    # -- diagnostics ---------------------------------------------------------------

    async def info(self, ino: int) -> dict[str, Any]:
        """What `vfs info` shows of an inode the kernel knows: the dataset, the
        version and ref it belongs to, its kind; for a file its size, content id,
        chunk count and cached bytes; for the root also the daemon's facts
        (`extra_info`) and the stats. Keys whose value does not apply are absent."""
        ns = self.namespace
        t = ns.table
        r = ns.rec(ino)
        out: dict[str, Any] = {"dataset": self.dataset}
        version = self._version(ino, r)
        if version is not None:
            out["version"] = version.hex()
            out["ref"] = self._ref(ino, r)
        if ino == ROOT or t.leaf[r] == NO_PAGE:
            out["kind"] = "directory"
        else:
            e = await ns.entry(ino)
            assert e is not None
            out["kind"] = _KINDS[e.kind]
            if e.is_symlink:
                out["target"] = e.target.decode(errors="surrogateescape")
            elif not e.is_dir:
                out["size"] = e.size
                out["content_id"] = content_id(e).hex()
                out["chunks"] = len(e.chunks)
                out["cached_bytes"] = await self.fetcher.cached_bytes(e.chunks)
        if ino == ROOT:
            out.update(self.extra_info)
            out["stats"] = self.stats()
            if version is not None:
                out["ref_now"] = await self._ref_now(out["ref"], version)
        return out

    async def _ref_now(self, label: str, version: bytes) -> str | None:
        """Where the ref this mount shows points now, if that is elsewhere (a branch
        others committed to); None if it is here, or the store does not say soon."""
        try:
            r = await self.fetcher.meta(refs.resolve, self.store, label, timeout=REF_NOW_WAIT)
        except Exception as e:  # a fact for `vfs info`, never its failure
            log.debug("where %s points now: %s", label, e)
            return None
        return r.commit.hex() if r.commit != version else None

    def _version(self, ino: int, r: int) -> bytes | None:
        """The commit an inode belongs to; None for the root of a multi-version mount."""
        view = self.namespace.view(r)
        if view is not None:
            return view.commit
        return self.namespace.ref_commits.get(ino)

    def _ref(self, ino: int, r: int) -> str:
        """The version as named: `ds@v3` as mounted or switched to, or the @REF
        directory's name in a multi-version mount."""
        ns = self.namespace
        view = ns.view(r)
        if view is None or (ns.table.leaf[r] == NO_PAGE and ino != ROOT):  # an @REF dir
            return f"{self.dataset}{ns.names[ino].decode()}"
        return view.label

    def listxattr(self, ino: int) -> list[bytes]:
        self.xattr_requests += 1
        if not self.config.xattrs:
            raise XattrsOff("extended attributes are off (vfs mount --xattrs serves them)")
        return self._xattr_names(ino)

    def _xattr_names(self, ino: int) -> list[bytes]:
        ns = self.namespace
        t = ns.table
        r = ns.rec(ino)
        names = [b"user.vfs.dataset"]
        if t.view[r] != NO_VIEW or ino in ns.ref_commits:
            names += [b"user.vfs.version", b"user.vfs.ref"]
        if t.leaf[r] != NO_PAGE and t.kind[r] == fmt.FILE:
            names += [b"user.vfs.content_id", b"user.vfs.chunks", b"user.vfs.cached_bytes"]
        if ino == ROOT:
            names += [b"user.vfs.stats", *(b"user.vfs." + k.encode() for k in self.extra_info)]
        return names

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        self.xattr_requests += 1
        if not self.config.xattrs:
            raise XattrsOff("extended attributes are off (vfs mount --xattrs serves them)")
        if name not in self._xattr_names(ino):
            raise NoAttribute(f"no attribute {name!r}")
        ns = self.namespace
        r = ns.rec(ino)
        key = name[len(b"user.vfs.") :].decode()
        if key == "dataset":
            return self.dataset.encode()
        if key == "version":
            version = self._version(ino, r)
            assert version is not None
            return version.hex().encode()
        if key == "ref":
            return self._ref(ino, r).encode()
        if key == "stats":
            return json.dumps(self.stats(), sort_keys=True).encode()
        if key in self.extra_info:
            return str(self.extra_info[key]).encode()
        e = await ns.entry(ino)
        assert e is not None
        if key == "content_id":
            return content_id(e).hex().encode()
        if key == "chunks":
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
            "xattr_requests": self.xattr_requests,
            "lookup_requests": ns.lookup_requests,
            "readdir_requests": ns.readdir_requests,
            "fuse_requests": {k: n for k, n in sorted(self.requests.items()) if n},
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
