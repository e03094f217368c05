"""Copying versions between stores: `vfs push`, `vfs pull` (and the copy under `vfs
import`, vfs/ops/imports.py).

What is copied is a version's closure, as gc's walk finds it (vfs.ops.gc.Marker, the
one walk over commits, tree pages, locations and packs): every commit of its history,
every tree page, the locations object of every leaf page, the packs those name with
their indexes, and the access records commits name. Of that, only what the other side
lacks is sent: the destination's keys under objects/, locs/, index/ and packs/ are
listed once, not asked for one by one. Packs go whole, with every chunk in them, even
the chunks of versions not sent: a pack is immutable and content-addressed, and cutting
it up would be a repack (gc's job, on either side).

The destination is written in the store's write order (docs/format.md, "Writing"):

1. every missing pack, each followed by its index (an index names a pack that is there);
2. locations objects, tree pages and access records;
3. commits;
4. the ref, by compare-and-swap, after a last check of the lease.

So an interrupted transfer leaves objects no ref reaches yet, and the next run finds
them in its listing and sends only the rest. All of it happens under a commit lease on
the destination (vfs/leases.py), as a commit does: a gc there waits for it, and cannot
delete what was uploaded before the ref moved. Creating the lease is also the probe
that the destination takes writes: credentials that can only read fail there, before a
single object is uploaded.

Between two buckets or prefixes of one S3 endpoint, objects are copied server-side
(Backend.copy_from: CopyObject), and no byte flows through this process.

Concurrency: objects of one phase are copied by a thread pool; each worker only calls
the backends (thread-safe) and returns what it did. Stats and progress are updated by
the calling thread only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import blake3

from vfs import format as fmt
from vfs import leases
from vfs.errors import CorruptObject, PermissionDenied, RefConflict, UsageError, VfsError
from vfs.names import check_name
from vfs.ops.gc import Marker
from vfs.refs import Resolved, resolve, short
from vfs.store import HEADS, TAGS, Store

log = logging.getLogger(__name__)

DEFAULT_JOBS = 8
_PREFIXES = ("objects/", "locs/", "index/", "packs/")
_KINDS = ("packs", "index", "locs", "objects", "commits")


class Progress:
    """What a transfer reports as it goes; the CLI draws it on stderr."""

    def planned(self, objects: int, nbytes: int) -> None:
        pass

    def advance(self, objects: int, nbytes: int) -> None:
        pass

    def phase(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Stats:
    """What one transfer did. `bytes` counts every object sent; of them,
    `server_side_bytes` were copied by the server and never passed through us."""

    objects: int = 0
    bytes: int = 0
    server_side_objects: int = 0
    server_side_bytes: int = 0
    present: int = 0  # objects of the closure the destination already had
    by_kind: dict[str, int] = field(default_factory=lambda: {k: 0 for k in _KINDS})
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "bytes": self.bytes,
            "server_side_objects": self.server_side_objects,
            "server_side_bytes": self.server_side_bytes,
            "client_bytes": self.bytes - self.server_side_bytes,
            "already_present": self.present,
            "by_kind": dict(self.by_kind),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class TransferResult:
    """A push or pull: which version went where, and what it cost."""

    dataset: str
    kind: str  # "branch" or "tag"
    name: str  # the ref's name on the destination
    commit: bytes
    old: bytes | None  # what the ref held before (None: created)
    up_to_date: bool
    source: str
    destination: str
    stats: Stats
    tags: list[str] = field(default_factory=list)  # with tags=True: the tags created
    # Inputs the version records as in its own store (vfs show --lineage) that the
    # destination lacks: its lineage there cannot be read until they follow it.
    missing_inputs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "ref": f"{HEADS if self.kind == 'branch' else TAGS}/{self.name}",
            "id": self.commit.hex(),  # as every verb calls a version's id
            "commit": self.commit.hex(),  # the same: the name it had first
            "old": self.old.hex() if self.old else None,
            "up_to_date": self.up_to_date,
            "tags": self.tags,
            "missing_inputs": self.missing_inputs,
            "from": self.source,
            "to": self.destination,
            **self.stats.to_json(),
        }


# --- the closure and what the destination lacks ------------------------------------


def _listing(store: Store) -> dict[str, int]:
    """Every object key under the four object prefixes, with its size."""
    out: dict[str, int] = {}
    for prefix in _PREFIXES:
        for info in store.backend.list_info(prefix):
            out[info.key] = info.size
    return out


@dataclass
class Plan:
    """The keys to copy, phase by phase, in write order."""

    packs: list[str] = field(default_factory=list)  # pack keys; each index follows its pack
    meta: list[str] = field(default_factory=list)  # locs, pages, access records
    commits: list[str] = field(default_factory=list)
    present: int = 0

    @property
    def objects(self) -> int:
        return 2 * len(self.packs) + len(self.meta) + len(self.commits)


def plan(src: Store, dst: Store, marker: Marker, have: set[str]) -> Plan:
    """What of the closure `marker` walked on `src` the destination (whose keys are
    `have`) lacks. A leaf whose locations the destination has needs none of its
    packs: those locations name packs the destination holds (they were written after
    them), and may name other packs than ours."""
    p = Plan()
    packs: set[bytes] = set()
    for leaf in sorted(marker.leaves):
        key = src.locs_key(leaf)
        if key in have:
            p.present += 1
            continue
        p.meta.append(key)
        packs.update(marker.leaf_packs.get(leaf, ()))
    for pack in sorted(packs):
        key, index = src.pack_key(pack), src.index_key(pack)
        if key in have and index in have:
            p.present += 2
        else:
            p.packs.append(key)
    for oid in sorted(marker.pages | marker.attached):
        key = src.object_key(oid)
        if key in have:
            p.present += 1
        else:
            p.meta.append(key)
    for oid in sorted(marker.commits):
        key = src.object_key(oid)
        if key in have:
            p.present += 1
        else:
            p.commits.append(key)
    return p


# --- copying -------------------------------------------------------------------------


def _check(key: str, data: bytes) -> None:
    """CorruptObject, naming the key, if `data` is not what `key` addresses: a pack
    is named by the BLAKE3 of its bytes (vfs/packer.py), an object by that of its
    canonical bytes, and sealed metadata (indexes, locations) carries a checksum."""
    kind, _, rest = key.partition("/")
    hexid = rest.rpartition("/")[2]
    what = f"{key} (in the source store; run vfs verify there)"
    if kind == "packs":
        if blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest().hex() != hexid:
            raise CorruptObject(f"{what}: its bytes do not match its id")
    elif kind == "objects":
        fmt.unseal_verified(data, bytes.fromhex(hexid), what)
    elif kind in ("index", "locs"):
        fmt.unseal(data, what)


class Copier:
    """Copies keys from one store to another, in parallel, counting what it did."""

    def __init__(
        self,
        src: Store,
        dst: Store,
        sizes: dict[str, int],
        progress: Progress,
        jobs: int = DEFAULT_JOBS,
    ) -> None:
        self.src = src
        self.dst = dst
        self.sizes = sizes
        self.progress = progress
        self.jobs = jobs
        self.stats = Stats()

    def _one(self, key: str) -> tuple[int, bool]:
        """Copy one object; (its bytes, whether the server copied it). Bytes that pass
        through here are checked first (`_check`): a damaged object is not spread to
        the other store. A server-side copy is not seen, so not checked."""
        if self.dst.backend.copy_from(self.src.backend, key):
            return self.sizes.get(key, 0), True
        data = self.src.backend.get(key)
        _check(key, data)
        self.dst.backend.put(key, data)
        return len(data), False

    def _pack(self, key: str) -> list[tuple[str, int, bool]]:
        """A pack, then its index: an index must never name a missing pack."""
        index = "index/" + key[len("packs/") :]
        size, server = self._one(key)
        isize, iserver = self._one(index)
        return [("packs", size, server), ("index", isize, iserver)]

    def _meta(self, key: str, kind: str) -> list[tuple[str, int, bool]]:
        size, server = self._one(key)
        return [(kind, size, server)]

    def run(self, keys: Iterable[str], task: Callable[[str], list[tuple[str, int, bool]]]) -> None:
        """Run `task` over `keys` in the pool; the first failure stops the phase (the
        tasks not started are cancelled) and is raised."""
        keys = list(keys)
        if not keys:
            return
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="vfs-transfer")
        try:
            pending: set[Future[list[tuple[str, int, bool]]]] = {pool.submit(task, k) for k in keys}
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    for kind, size, server in fut.result():
                        s = self.stats
                        s.objects += 1
                        s.bytes += size
                        s.by_kind[kind] += 1
                        if server:
                            s.server_side_objects += 1
                            s.server_side_bytes += size
                        self.progress.advance(1, size)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def copy(self, p: Plan) -> Stats:
        """Every key of the plan, phase by phase in the write order."""
        self.stats.present = p.present
        total = sum(self.sizes.get(k, 0) for k in p.meta + p.commits)
        total += sum(
            self.sizes.get(k, 0) + self.sizes.get("index/" + k[len("packs/") :], 0) for k in p.packs
        )
        self.progress.planned(p.objects, total)
        self.progress.phase("packs")
        self.run(p.packs, self._pack)
        self.progress.phase("tree pages and locations")
        self.run(
            p.meta,
            lambda k: self._meta(k, "locs" if k.startswith("locs/") else "objects"),
        )
        self.progress.phase("commits")
        self.run(p.commits, lambda k: self._meta(k, "commits"))
        return self.stats


# --- the destination's lease: the write probe -----------------------------------------


def take_lease(dst: Store, progress: Progress) -> leases.CommitLease:
    """A commit lease on the destination, held until the ref moved. It is the first
    write there: credentials that cannot write fail here, with nothing uploaded."""
    lease = leases.CommitLease(dst.backend, on_wait=progress.phase)
    try:
        lease.acquire()
    except PermissionDenied as e:
        raise PermissionDenied(
            f"cannot write to {dst.url}: {e}; nothing was uploaded (these credentials "
            "may read but not write there)"
        ) from None
    return lease


def copy_closure(
    src: Store,
    dst: Store,
    marker: Marker,
    progress: Progress,
    jobs: int = DEFAULT_JOBS,
) -> Stats:
    """Copy what the destination lacks of the closure `marker` walked on `src`. The
    caller holds a lease on `dst`."""
    progress.phase(f"listing {dst.url}")
    have = set(_listing(dst))
    progress.phase(f"listing {src.url}")
    sizes = _listing(src)
    p = plan(src, dst, marker, have)
    log.info(
        "transfer %s -> %s: %d objects to send, %d present",
        src.url,
        dst.url,
        p.objects,
        p.present,
    )
    return Copier(src, dst, sizes, progress, jobs).copy(p)


# --- push and pull ----------------------------------------------------------------------


def _target(r: Resolved, src: Store, as_branch: str | None) -> tuple[str, str]:
    """(kind, name) of the ref to set on the destination: the branch or tag the spec
    named, or `as_branch`."""
    if as_branch is not None:
        return "branch", check_name(as_branch, "branch")
    if r.branch is not None:
        return "branch", r.branch
    ref = r.spec.ref.partition("/")[2] or r.spec.ref
    if r.spec.back == 0 and src.read_ref(r.spec.dataset, TAGS, ref) is not None:
        return "tag", ref
    raise UsageError(
        f"{r.spec} names a commit, not a branch or tag: say which branch to set on the "
        f"other side with --as-branch NAME"
    )


def transfer(
    src: Store,
    dst: Store,
    spec: str,
    *,
    verb: str,
    as_branch: str | None = None,
    tags: bool = False,
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
    other_name: str | None = None,
) -> TransferResult:
    """Copy the version `spec` names on `src` to `dst` and set the same-named branch
    (fast-forward only) or tag there. `verb` ("push" or "pull") words the messages and
    is the ref log's action. With `tags`, every tag of the dataset that names a
    commit of the version's history is created on `dst` too (after the ref: the
    objects are all there by then). `other_name` is how the user named the other
    store (a remote's name); the commands a refusal suggests use it (else its URL)."""
    t0 = time.monotonic()
    progress = progress or Progress()
    src.check_config()
    r = resolve(src, spec)
    if verb == "pull":
        dst.ensure_config()  # this side: made a store if nothing is there, as commit does
    else:
        dst.check_config()  # the other side: a mistyped name must not become a store
    ds = r.spec.dataset
    kind, name = _target(r, src, as_branch)
    refkind = HEADS if kind == "branch" else TAGS
    current = dst.read_ref(ds, refkind, name)

    def result(
        old: bytes | None, up_to_date: bool, stats: Stats, history: set[bytes]
    ) -> TransferResult:
        sent = _send_tags(src, dst, ds, history) if tags else []
        stats.seconds = time.monotonic() - t0
        return TransferResult(
            ds,
            kind,
            name,
            r.commit,
            old,
            up_to_date and not sent,
            src.url,
            dst.url,
            stats,
            sent,
            _inputs_missing(src, dst, r.commit),
        )

    if current is not None and current.commit == r.commit:
        return result(r.commit, True, Stats(), _history(src, r.commit) if tags else set())
    if current is not None and kind == "tag":
        raise RefConflict(
            f"{verb} rejected: tag {ds}@{name} is {short(current.commit)} on {dst.url}, "
            f"not {short(r.commit)}; tags never move (delete it there first, or {verb} "
            "under a branch name with --as-branch NAME)"
        )
    progress.phase(f"walking {ds}@{short(r.commit)}")
    marker = Marker(src, workers=jobs)
    marker.walk([r.commit])
    if current is not None and current.commit not in marker.commits:
        raise _diverged(verb, ds, name, current.commit, r.commit, src, dst, other_name)

    lease = take_lease(dst, progress)
    try:
        stats = copy_closure(src, dst, marker, progress, jobs)
        progress.phase("moving the ref")
        lease.check()
        if kind == "tag":
            dst.create_tag(ds, name, r.commit)
        else:
            while not dst.set_branch(ds, name, r.commit, current, verb):
                # The branch moved while we copied: fine if it is still behind us.
                current = dst.read_ref(ds, HEADS, name)
                if current is not None and current.commit == r.commit:
                    break
                if current is not None and current.commit not in marker.commits:
                    raise _diverged(verb, ds, name, current.commit, r.commit, src, dst, other_name)
    finally:
        lease.release()
        progress.close()
    return result(current.commit if current else None, False, stats, marker.commits)


def _inputs_missing(src: Store, dst: Store, commit: bytes) -> list[str]:
    """The inputs `commit` records as in its own store that `dst` does not have. An
    input recorded without a store is read from the store the commit is in, so a
    model pushed alone reads its data's lineage as UNREADABLE there."""
    from vfs.ops.lineage import inputs_of

    inputs = inputs_of(src.get_commit(commit).meta)
    return [i.spec for i in inputs if i.store is None and not dst.has_object(i.commit)]


def _history(store: Store, commit: bytes) -> set[bytes]:
    """`commit` and all its ancestors (commits only)."""
    seen: set[bytes] = set()
    todo = [commit]
    while todo:
        cid = todo.pop()
        if cid not in seen:
            seen.add(cid)
            todo.extend(store.get_commit(cid).parents)
    return seen


def _send_tags(src: Store, dst: Store, ds: str, history: set[bytes]) -> list[str]:
    """Create on `dst` the tags of `ds` on `src` that name a commit of `history`
    (whose objects `dst` has); a tag `dst` holds at another commit is left alone."""
    sent = []
    for name, cid in src.refs(ds, TAGS).items():
        if cid not in history:
            continue
        have = dst.read_ref(ds, TAGS, name)
        if have is None:
            dst.create_tag(ds, name, cid)
            sent.append(name)
        elif have.commit != cid:
            log.warning(
                "tag %s@%s is %s on %s, not %s: left alone (tags never move)",
                ds,
                name,
                short(have.commit),
                dst.url,
                short(cid),
            )
    return sent


def _diverged(
    verb: str,
    ds: str,
    name: str,
    theirs: bytes,
    ours: bytes,
    src: Store,
    dst: Store,
    other_name: str | None = None,
) -> VfsError:
    """git's non-fast-forward, in vfs's terms. There is no merge, but a version is a
    whole snapshot: committing the combined directory on top of the other side's head
    and sending that is a fast-forward."""
    other = other_name or (dst.url if verb == "push" else src.url)
    return RefConflict(
        f"{verb} rejected: {ds}@{name} on {dst.url} is at {short(theirs)}, which is not "
        f"in the history of {short(ours)}: both sides have new commits, and nothing was "
        f"changed. To combine them: vfs pull {ds}@{name} --from {other} --as-branch "
        f"theirs; vfs commit DIR {ds} --branch theirs (DIR holding the combined files); "
        f"vfs push {ds}@theirs --to {other} --as-branch {name}. Or {verb} under another "
        "branch name: --as-branch NAME"
    )
