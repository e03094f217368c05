"""The versions a mount shows: their views, and the `@REF` listing of a multi-version root.

This module owns the table of versions opened by a mount (a View per commit: its
Version, the label the user wrote, its mtime), in the order they were opened, since
the inode table stores a version as its position here; the cached listing of the
dataset's branches and tags that a `vfs mount DS` root shows as `@REF` directories;
and the resolution of an `@REF` name. Which version the root shows, and `switch`,
are the namespace's and the core's (vfs/mount/namespace.py, core.py): they change
inode records.

Refs move, so the `@REF` names are read from the store again once they are
`ref_ttl` old. When the store cannot be reached, a name read before keeps the
commit it named (a warning says so once), and the store is asked again only after
OUTAGE_RETRY: a training job reading `@main/...` through a short outage goes on
with the version it had, as it would have within the TTL, instead of waiting the
read timeout at every path walk and then failing.

Concurrency: touched only on the trio thread; store reads (refs, commits, root
pages) run in worker threads through the loader and return values.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from vfs import refs
from vfs.errors import AmbiguousRef, NotFound, UsageError
from vfs.mount.loader import FetchError, Loader
from vfs.reader import Version
from vfs.store import HEADS, TAGS, Store

log = logging.getLogger(__name__)

# With a last-known answer to fall back on, how long a ref read may try the store
# (a down endpoint fails at once; a stalled one costs this) and, after it failed,
# how long known answers are given without asking again.
STALE_WAIT = 2.0
OUTAGE_RETRY = 30.0

_T = TypeVar("_T")


@dataclass(frozen=True)
class View:
    """One version as the mount shows it."""

    version: Version
    label: str  # the spec as the user wrote it, e.g. ds@v3
    mtime_ns: int

    @property
    def commit(self) -> bytes:
        return self.version.commit_id


class Versions:
    """Every version a mount has opened, by position, and the `@REF` listing."""

    __slots__ = (
        "_index",
        "_known",
        "_loader",
        "_ref_ttl",
        "_refs_cache",
        "_unreachable_until",
        "dataset",
        "store",
        "views",
    )

    def __init__(self, store: Store, dataset: str, loader: Loader, ref_ttl: float) -> None:
        self.store = store
        self.dataset = dataset
        self._loader = loader
        self._ref_ttl = ref_ttl
        self.views: list[View] = []
        self._index: dict[bytes, int] = {}
        self._refs_cache: tuple[float, list[tuple[bytes, bytes]]] | None = None
        self._known: dict[bytes, bytes] = {}  # `@name` -> the commit the store last gave
        self._unreachable_until = 0.0  # monotonic; 0 while the store answers

    def add(self, view: View, relabel: bool = False) -> int:
        """The position of a view's commit, adding the view if it is new; with
        `relabel`, a known commit takes the view's label (a switch: the version is
        named as the user named it this time, not as when first opened)."""
        i = self._index.get(view.commit)
        if i is None:
            i = self._index[view.commit] = len(self.views)
            self.views.append(view)
        elif relabel and self.views[i].label != view.label:
            self.views[i] = replace(self.views[i], label=view.label)
        return i

    def position(self, commit: bytes) -> int | None:
        return self._index.get(commit)

    async def load(self, spec: refs.Spec, commit: bytes = b"") -> View:
        """Open a version (its commit and root page), bounded by the read timeout."""
        return await self._loader.meta(load_view, self.store, spec, commit)

    async def list_refs(self) -> list[tuple[bytes, bytes]]:
        now = time.monotonic()
        cached = self._refs_cache
        if cached is not None and (now - cached[0] <= self._ref_ttl or self._unreachable(now)):
            return cached[1]
        try:
            listing = await self._read(cached is not None, _ref_listing, self.store, self.dataset)
        except FetchError as e:
            if cached is None:
                raise
            self._went_away(e)
            return cached[1]
        self._refs_cache = (now, listing)
        self._known.update(listing)
        return listing

    async def resolve_ref_name(self, name: bytes) -> bytes | None:
        if not name.startswith(b"@") or len(name) < 2:
            return None
        known = self._known.get(name)
        if known is not None and self._unreachable(time.monotonic()):
            return known
        try:
            text = name[1:].decode("ascii")
            spec = f"{self.dataset}@{text}"
            r = await self._read(known is not None, refs.resolve, self.store, spec)
        except (UnicodeDecodeError, NotFound, UsageError, AmbiguousRef) as e:
            log.debug("lookup of %r in the @REF root: %s", name, e)
            return None
        except FetchError as e:
            if known is None:
                raise
            self._went_away(e)
            return known
        self._known[name] = r.commit
        return r.commit

    async def _read(self, fallback: bool, fn: Callable[..., _T], *args: Any) -> _T:
        """A ref read from the store, tried for STALE_WAIT only when the caller has a
        known answer to fall back on; a success ends an outage."""
        wait = min(STALE_WAIT, self._loader.config.read_timeout) if fallback else None
        value = await self._loader.meta(fn, *args, timeout=wait)
        if self._unreachable_until:
            self._unreachable_until = 0.0
            log.warning("the store answers again: @REF names follow its refs")
        return value

    def _unreachable(self, now: float) -> bool:
        return now < self._unreachable_until

    def _went_away(self, e: FetchError) -> None:
        if not self._unreachable_until:
            log.warning(
                "the store cannot be reached (%s): @REF names keep the versions they "
                "last named; asking again every %g s",
                e,
                OUTAGE_RETRY,
            )
        self._unreachable_until = time.monotonic() + OUTAGE_RETRY


def _ns(rfc3339: str) -> int:
    try:
        t = dt.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return 0
    return int(t.timestamp()) * 1_000_000_000


def load_view(store: Store, spec: refs.Spec, commit: bytes = b"") -> View:
    """Worker thread: resolve a spec (unless its commit is known), read the commit
    and the root page (into the store's page cache: a version whose root cannot be
    read fails here, not at the first lookup)."""
    if not commit:
        commit = refs.resolve(store, spec).commit
    version = Version(store, spec.dataset, commit)
    store.get_page(version.root)
    return View(version, str(spec), _ns(version.commit.time))


def _ref_listing(store: Store, dataset: str) -> list[tuple[bytes, bytes]]:
    """Worker thread: `@name` -> commit for every branch and tag; a branch wins a
    name it shares with a tag, as in refs.resolve."""
    out: dict[bytes, bytes] = {}
    for kind in (TAGS, HEADS):
        for name, commit in store.refs(dataset, kind).items():
            out[b"@" + name.encode()] = commit
    return sorted(out.items())
