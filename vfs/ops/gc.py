"""`vfs gc`: delete what no ref of the store reaches, safely while others commit.

The phases (docs/format.md, "Garbage collection", holds the safety argument):

1. **mark**, without a lock: list every object with its size and modification time,
   read every ref and the young ref-log entries, and walk from them: commits (all
   parents), tree pages, the locations of every live leaf page, and the packs those
   name. Commits run freely meanwhile.
2. **lock**: take `locks/gc` (vfs/leases.py); another live gc means exit 1.
3. **drain**: wait until no live commit lease is left (expired ones are deleted).
   If another gc ended since the listing (`gc/last` says when), list again: what
   it deleted must not be deleted, and counted, twice.
4. **re-walk**: refs and ref log again; walk what is new. A commit that finished
   during the mark may reuse objects the mark found unreachable.
5. **repack** (vfs/ops/repack.py) the live packs that are mostly dead, then
   **sweep**: delete what is unreached and older than the grace period, pack indexes
   first (so no writer dedups against a pack about to go), then packs, locations,
   objects, and ref-log entries older than 90 days (REFLOG_KEEP) and the grace
   period; younger entries past the grace period are kept as history but no longer
   keep their ids alive.

Everything listed later than the mark's listing, and everything younger than the grace
period, is kept whatever the walk says: that protects writers without a lease and
uploads under way. An interrupted gc leaves only garbage, or new packs whose chunks
are also in old ones.

Concurrency: gc runs its walk with a small thread pool; the marker's sets are only
touched by the thread that drives it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from vfs import format as fmt
from vfs import leases, reflog
from vfs.backends.base import ObjectInfo
from vfs.errors import MissingObject, NotFound, VfsError
from vfs.ops.lineage import ACCESS
from vfs.store import HEADS, TAGS, Store

log = logging.getLogger(__name__)

DEFAULT_GRACE = 24 * 3600.0
# Ref-log entries are history (`vfs reflog`): one older than the grace period stops
# keeping its ids alive, but the entry itself, ~200 bytes, stays this long (git keeps
# its reflogs 90 days too), and longer if the grace period is longer.
REFLOG_KEEP = 90 * 86400.0
DEFAULT_WAIT = 300.0
DEFAULT_REPACK_BELOW = 0.5
REFLOG = f"{reflog.PREFIX}/"
DELETE_BATCH = 1000
# The kinds of garbage, in the order the sweep deletes them.
KINDS = ("index", "packs", "locs", "objects", "reflog")
_PREFIXES = ("objects/", "locs/", "packs/", "index/", REFLOG)


class Progress:
    """What gc reports as it goes; the CLI prints it to stderr."""

    def phase(self, text: str) -> None:
        pass


@dataclass
class Freed:
    objects: int = 0
    bytes: int = 0


@dataclass
class GcReport:
    dry_run: bool
    grace: float
    freed: dict[str, Freed] = field(default_factory=lambda: {k: Freed() for k in KINDS})
    live_commits: int = 0
    live_pages: int = 0
    live_packs: int = 0
    kept_young: int = 0  # unreached, but younger than the grace period
    # commits no ref reaches that a ref-log entry younger than the grace period keeps
    # (a deleted branch or dataset, restorable by id until then)
    kept_restorable: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    bytes_rewritten: int = 0
    locs_rewritten: int = 0
    damaged_packs: list[str] = field(default_factory=list)  # not repacked: see vfs verify
    seconds: float = 0.0

    @property
    def objects_freed(self) -> int:
        return sum(f.objects for f in self.freed.values())

    @property
    def bytes_freed(self) -> int:
        return sum(f.bytes for f in self.freed.values())

    def to_json(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "grace_seconds": self.grace,
            "freed": {k: {"objects": f.objects, "bytes": f.bytes} for k, f in self.freed.items()},
            "objects_freed": self.objects_freed,
            "bytes_freed": self.bytes_freed,
            "live": {
                "commits": self.live_commits,
                "pages": self.live_pages,
                "packs": self.live_packs,
            },
            "kept_young": self.kept_young,
            "kept_restorable": self.kept_restorable,
            "repack": {
                "packs_repacked": self.packs_repacked,
                "packs_written": self.packs_written,
                "bytes_rewritten": self.bytes_rewritten,
                "locations_rewritten": self.locs_rewritten,
                "damaged_packs": self.damaged_packs,
            },
            "seconds": round(self.seconds, 3),
        }


# When the last gc of the store ended (seconds since the epoch, as text): a gc that
# listed the store before then lists it again once it holds the lock.
GC_DONE = "gc/last"


def _last_gc(store: Store) -> float:
    try:
        return float(store.backend.get(GC_DONE).decode())
    except (NotFound, ValueError):
        return 0.0


def _hex_id(name: str) -> bytes | None:
    if len(name) != 2 * fmt.ID_LEN:
        return None
    try:
        return bytes.fromhex(name)
    except ValueError:
        return None


@dataclass(frozen=True)
class ReflogItem:
    key: str
    time: float  # seconds since the epoch, from the entry's name


def reflog_time(key: str, mtime: float) -> float:
    """When a ref-log entry was written: the nanoseconds its name starts with
    (`reflog/<dataset>/<20 digits>-<8 hex>`), else its modification time."""
    stamp = key.rsplit("/", 1)[-1].split("-", 1)[0]
    return int(stamp) / 1e9 if stamp.isdigit() else mtime


class Marker:
    """The live set: what the refs and young ref-log entries reach."""

    def __init__(self, store: Store, workers: int = 8) -> None:
        self.store = store
        self.workers = workers
        self.commits: set[bytes] = set()
        self.pages: set[bytes] = set()
        self.leaves: set[bytes] = set()
        self.packs: set[bytes] = set()
        # other objects a live commit's meta names: its access record (`vfs.access`)
        self.attached: set[bytes] = set()
        # pack -> chunk -> where a live leaf places it (for repack)
        self.pack_chunks: dict[bytes, dict[bytes, fmt.Location]] = {}
        # leaf -> the packs its locations name (for repack's rewrite)
        self.leaf_packs: dict[bytes, frozenset[bytes]] = {}
        # commits a young ref-log entry names that are gone (said once)
        self.gone_logged: set[bytes] = set()

    def roots(self, cutoff: float) -> tuple[list[bytes], list[bytes]]:
        """(ids every ref names, ids the ref-log entries younger than `cutoff` name)."""
        refs: list[bytes] = []
        for ds in self.store.datasets():
            for kind in (HEADS, TAGS):
                refs.extend(self.store.refs(ds, kind).values())
        logged: list[bytes] = []
        for info in self.store.backend.list_info(REFLOG):
            if reflog_time(info.key, info.mtime) >= cutoff:
                try:
                    data = self.store.backend.get(info.key)
                except NotFound:  # another gc removed it meanwhile
                    continue
                # A damaged entry stops gc (CorruptObject): the ids it protects are
                # unknown, so nothing may be judged unreachable.
                entry = reflog.decode(info.key, data)
                logged.extend(i for i in (entry.old, entry.new) if i is not None)
        return refs, logged

    def walk(self, refs: Iterable[bytes], logged: Iterable[bytes] = ()) -> None:
        """Mark everything reachable from `refs` (each must exist: a ref to a missing
        commit means a damaged store, and gc stops) and from `logged` (ref-log ids,
        skipped with a warning when missing), stopping at what is already marked."""
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="vfs-gc") as pool:
            trees = self._walk_commits(pool, list(refs), strict=True)
            trees += self._walk_commits(pool, list(logged), strict=False)
            self._walk_leaves(pool, self._walk_pages(pool, trees))

    def walk_trees(self, tops: Iterable[bytes]) -> None:
        """Mark the directory trees `tops` (root page ids) and what they reach, without
        any commit: what `vfs import` copies (vfs/ops/transfer.py)."""
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="vfs-gc") as pool:
            self._walk_leaves(pool, self._walk_pages(pool, list(tops)))

    def _walk_leaves(self, pool: ThreadPoolExecutor, leaves: list[bytes]) -> None:
        for leaf, locs in zip(leaves, pool.map(self.store.get_locs, leaves), strict=True):
            packs = frozenset(loc.pack for loc in locs.values())
            self.leaf_packs[leaf] = packs
            self.packs.update(packs)
            for cid, loc in locs.items():
                self.pack_chunks.setdefault(loc.pack, {})[cid] = loc

    def _walk_commits(
        self, pool: ThreadPoolExecutor, ids: list[bytes], strict: bool
    ) -> list[bytes]:
        trees: list[bytes] = []
        frontier = list(dict.fromkeys(c for c in ids if c not in self.commits))
        while frontier:

            def load(cid: bytes) -> fmt.Commit | None:
                try:
                    return self.store.get_commit(cid)
                except MissingObject:
                    if strict:
                        raise
                    if cid not in self.gone_logged:  # once, not again on the re-walk
                        self.gone_logged.add(cid)
                        log.info(
                            "commit %s named by the ref log is gone (a gc with a shorter "
                            "--grace collected it)",
                            cid.hex()[:16],
                        )
                    return None

            got = list(pool.map(load, frontier))
            nxt: list[bytes] = []
            for cid, c in zip(frontier, got, strict=True):
                if c is None:
                    continue
                self.commits.add(cid)
                trees.append(c.tree)
                attached = _hex_id(c.meta.get(ACCESS, ""))
                if attached is not None:  # docs/format.md: the access record (VACR)
                    self.attached.add(attached)
                nxt.extend(p for p in c.parents if p not in self.commits)
            frontier = list(dict.fromkeys(nxt))
        return trees

    def _walk_pages(self, pool: ThreadPoolExecutor, tops: list[bytes]) -> list[bytes]:
        """Mark the pages below `tops`; the leaves newly marked."""
        leaves: list[bytes] = []

        def children(page_id: bytes) -> tuple[bool, list[bytes]]:
            page = self.store.get_page(page_id)
            if page.kind == fmt.LEAF:
                return True, [e.tree for e in page.entries() if e.is_dir]
            return False, [c.page for c in page.children()]

        frontier = list(dict.fromkeys(t for t in tops if t not in self.pages))
        while frontier:
            self.pages.update(frontier)
            nxt: list[bytes] = []
            for pid, (leaf, kids) in zip(frontier, pool.map(children, frontier), strict=True):
                if leaf:
                    self.leaves.add(pid)
                    leaves.append(pid)
                nxt.extend(k for k in kids if k not in self.pages)
            frontier = list(dict.fromkeys(nxt))
        return leaves

    def is_live(self, key: str) -> bool:
        kind, _, rest = key.partition("/")
        oid = _hex_id(rest.rsplit("/", 1)[-1])
        if oid is None:
            return True  # not a name vfs writes: never ours to delete
        if kind == "objects":
            return oid in self.commits or oid in self.pages or oid in self.attached
        if kind == "locs":
            return oid in self.leaves
        if kind in ("packs", "index"):
            return oid in self.packs
        return True


def list_objects(store: Store) -> dict[str, ObjectInfo]:
    """Every object gc may judge, by key."""
    out: dict[str, ObjectInfo] = {}
    for prefix in _PREFIXES:
        for info in store.backend.list_info(prefix):
            out[info.key] = info
    return out


def garbage(
    listing: dict[str, ObjectInfo],
    marker: Marker,
    cutoff: float,
    now: float,
    reflog_cutoff: float | None = None,
) -> tuple[dict[str, list[ObjectInfo]], int]:
    """The objects to delete, by kind in sweep order, and how many unreached ones are
    kept for being younger than the grace period. Ref-log entries go once older than
    `reflog_cutoff` (default: the grace period's cutoff)."""
    reflog_cutoff = cutoff if reflog_cutoff is None else reflog_cutoff
    out: dict[str, list[ObjectInfo]] = {k: [] for k in KINDS}
    young = 0
    for key, info in listing.items():
        kind = key.partition("/")[0]
        if kind == "reflog":
            if reflog_time(key, info.mtime) < reflog_cutoff:
                out["reflog"].append(info)
            continue
        if marker.is_live(key):
            continue
        if info.mtime >= cutoff:
            young += 1
            continue
        out[kind].append(info)
    # A pack goes only with its index: an index left naming a deleted pack would let a
    # writer dedup against chunks that are gone. So a pack whose index is kept (young)
    # is kept too.
    dead_index = {i.key.rsplit("/", 1)[-1] for i in out["index"]}
    keep = [
        i
        for i in out["packs"]
        if f"index/{i.key[len('packs/') :]}" in listing
        and i.key.rsplit("/", 1)[-1] not in dead_index
    ]
    if keep:
        gone = {i.key for i in keep}
        out["packs"] = [i for i in out["packs"] if i.key not in gone]
        young += len(keep)
    return out, young


def _batches(items: list[ObjectInfo], n: int) -> Iterator[list[ObjectInfo]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def drain(
    store: Store, wait: float, progress: Progress, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Wait until no live commit lease is left; delete the expired ones. VfsError
    after `wait` seconds."""
    deadline = time.monotonic() + wait
    told: set[str] = set()
    while True:
        now = time.time()
        live = []
        for h in leases.commit_leases(store.backend):
            if h.live(now):
                live.append(h)
            else:
                why = "its process has ended" if h.gone() else "expired"
                log.info("deleting the commit lease %s of %s: %s", h.key, h.who(), why)
                store.backend.delete(h.key)
        if not live:
            return
        for h in live:
            if h.key not in told:
                progress.phase(f"waiting for a commit on {h.who()} to finish")
                told.add(h.key)
        if time.monotonic() >= deadline:
            raise VfsError(
                f"gc gave up after waiting {wait:.0f} s for {len(live)} running commits "
                f"(first: {live[0].who()}); nothing was deleted, try again later"
            )
        sleep(min(1.0, max(0.05, leases.lease_ttl() / 20)))


def gc(
    store: Store,
    *,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    repack_below: float | None = DEFAULT_REPACK_BELOW,
    wait: float = DEFAULT_WAIT,
    progress: Progress | None = None,
) -> GcReport:
    """Collect the store's garbage (see the module docstring). `repack_below` None
    means no repack."""
    from vfs.ops.repack import repack

    t0 = time.monotonic()
    progress = progress or Progress()
    report = GcReport(dry_run=dry_run, grace=grace)
    store.check_config()

    progress.phase("listing objects")
    listed_at = time.time()
    listing = list_objects(store)
    now = time.time()
    cutoff = now - grace
    marker = Marker(store)
    progress.phase(f"marking from refs ({len(listing)} objects listed)")
    held, logged = marker.roots(cutoff)
    marker.walk(held)
    by_refs = len(marker.commits)
    marker.walk((), logged)  # deleted refs' versions, restorable for the grace period
    report.kept_restorable = len(marker.commits) - by_refs

    lock = None if dry_run else leases.GcLock(store.backend)
    if lock is not None:
        progress.phase("taking the gc lock")
        lock.acquire()
    try:
        if lock is not None:
            drain(store, wait, progress)
            if _last_gc(store) >= listed_at:
                # Another gc ended since the listing: what it deleted is in it, and
                # would be deleted (and counted) again.
                progress.phase("listing again: another gc ran meanwhile")
                listing = list_objects(store)
        progress.phase("marking again under the lock")
        marker.walk(*marker.roots(cutoff))

        if repack_below is not None:
            progress.phase("repacking")
            repack(store, marker, listing, cutoff, repack_below, report, dry_run, lock)

        doomed, report.kept_young = garbage(
            listing, marker, cutoff, now, now - max(grace, REFLOG_KEEP)
        )
        report.live_commits = len(marker.commits)
        report.live_pages = len(marker.pages)
        report.live_packs = len(marker.packs)
        total = sum(len(v) for v in doomed.values())
        done = 0
        for kind in KINDS:
            freed = report.freed[kind]
            for batch in _batches(doomed[kind], DELETE_BATCH):
                if lock is not None:
                    lock.check()
                    store.backend.delete_many([i.key for i in batch])
                freed.objects += len(batch)
                freed.bytes += sum(i.size for i in batch)
                done += len(batch)
                progress.phase(f"deleting: {done}/{total} objects")
        if lock is not None:
            lock.check()
            store.backend.put(GC_DONE, f"{time.time():.6f}\n".encode())
    finally:
        if lock is not None:
            lock.release()
    report.seconds = time.monotonic() - t0
    return report
