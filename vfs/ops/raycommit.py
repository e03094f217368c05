"""`vfs commit --ray`: one commit whose reading, chunking and uploading run as Ray tasks.

The driver (this process) takes the commit's lease, walks the tree once without
reading any file (names, stats, the same ignore rules as vfs/ops/commit.py), and
splits it into parts of about equal weight (bytes + FILE_WEIGHT per file):

- a directory no heavier than the target is one *subtree* part: a task runs
  `snapshot_tree` on it and returns its tree id and statistics;
- a heavier directory is written by the driver. Its subdirectories are split the same
  way, and its own files are cut, in name order, into *ranges* no heavier than the
  target: a task chunks, packs and uploads one range and returns its file entries and
  their chunks' locations. A flat directory of ten million files thus still splits.

When every task is back, the driver writes the directories above the parts with
vfs/tree.py `write_dir` (so every tree id equals the one a one-machine commit gives
the same tree), then the commit, then moves the ref with `commit_and_move`: the one
compare-and-swap. Write order holds across the cluster: a task's packs and pages are
stored before it returns, and the driver writes nothing that names them before then.

Failures: Ray reruns a task whose worker or node died (`max_retries`) or that raised
a BackendError (`retry_exceptions`). Uploads are content-addressed and a task's
result names only what it stored, so a rerun duplicates nothing that is referenced;
an orphan pack of a lost attempt is unreferenced and gc's to delete. An interrupted
driver cancels its tasks and moves no ref; a rerun finds every uploaded pack in the
store's pack indexes (vfs/cache/known.py) and uploads only what is missing.

Ray is an optional extra: it is imported only inside the functions that need it, and
nothing outside this module imports this module before `--ray` is asked for.

Concurrency: tasks on one node share the node's cache directory by *slots*
(`CACHE/ray/slot-N`, held by an flock for a task's life): each slot has its own pack
spool and stat cache, and all share the node's pack-index cache (files written by
rename, so concurrent writers are safe).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vfs import chunker, leases, packer, perms
from vfs import format as fmt
from vfs.cache import layout
from vfs.cache.known import KnownChunks
from vfs.errors import (
    BackendError,
    PermissionDenied,
    UsageError,
    VfsError,
)
from vfs.ignore import IGNORE_FILE, Rules
from vfs.ops.commit import (
    CommitResult,
    Progress,
    Snapshot,
    branch_start,
    check_source,
    finish_commit,
    hash_chunk,
    read_error,
    snapshot_tree,
    store_dir_of,
)
from vfs.store import Store
from vfs.storecheck import local_root
from vfs.tree import write_dir

log = logging.getLogger(__name__)

# A file costs about as much as reading this many bytes (an open, a stat, an index
# entry); it keeps a directory of many tiny files from looking light.
FILE_WEIGHT = 32 * 1024
# No part is made lighter than this: a task costs a worker's start and an index load.
MIN_PART_WEIGHT = 64 * 1024 * 1024
PARTS_PER_CPU = 4  # more parts than CPUs, so that one slow part does not idle the rest
MAX_RETRIES = 3  # per task, for a lost worker or node and for a BackendError


def _weight(files: int, nbytes: int) -> int:
    return nbytes + FILE_WEIGHT * files


# --- the driver's walk ---


@dataclass
class _DirInfo:
    """A directory as the driver's walk saw it: totals below it, nothing read."""

    path: bytes
    rel: str  # relative to the committed root, '/'-terminated or ""
    st: os.stat_result
    rules: Rules  # in force AT this directory (its own .vfsignore not yet entered)
    files: int = 0
    nbytes: int = 0
    dirs: dict[bytes, _DirInfo] = field(default_factory=dict)


def _walk(
    path: bytes, st: os.stat_result, rel: str, rules: Rules, store_dir: tuple[int, int] | None
) -> _DirInfo:
    """Totals of every directory below `path`, with commit's ignore rules; a directory
    removed meanwhile is left out, as commit's own scan leaves out what vanished."""
    info = _DirInfo(path, rel, st, rules)
    for kind, name, cst, inner in _entries(path, rel, rules, store_dir):
        if kind == "dir":
            child = _walk(
                os.path.join(path, name), cst, rel + os.fsdecode(name) + "/", inner, store_dir
            )
            info.dirs[name] = child
            info.files += child.files
            info.nbytes += child.nbytes
        elif kind == "file":
            info.files += 1
            info.nbytes += cst.st_size
    return info


def _entries(
    path: bytes, rel: str, rules: Rules, store_dir: tuple[int, int] | None
) -> Iterator[tuple[str, bytes, os.stat_result, Rules]]:
    """The entries of one directory, in name order, as vfs/ops/commit.py `_scan` takes
    them: ("dir" | "file" | "link" | "ignored" | "other", name, lstat, rules inside)."""
    try:
        with os.scandir(path) as it:
            children = sorted(it, key=lambda d: d.name)
    except OSError as e:
        raise VfsError(f"cannot read directory {os.fsdecode(path)}: {e.strerror}") from None
    ignore_file = next(
        (d.path for d in children if d.name == IGNORE_FILE and d.is_file(follow_symlinks=False)),
        None,
    )
    inner = rules.enter(rel, ignore_file)
    for d in children:
        try:
            fmt.check_name(d.name)
        except VfsError as e:
            raise UsageError(f"cannot commit {os.fsdecode(d.path)}: {e}") from None
        try:
            cst = d.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        is_dir = stat.S_ISDIR(cst.st_mode)
        if inner.ignored(rel + os.fsdecode(d.name), is_dir) or (
            is_dir and store_dir == (cst.st_dev, cst.st_ino)
        ):
            yield "ignored", d.name, cst, inner
        elif is_dir:
            yield "dir", d.name, cst, inner
        elif stat.S_ISREG(cst.st_mode):
            yield "file", d.name, cst, inner
        elif stat.S_ISLNK(cst.st_mode):
            yield "link", d.name, cst, inner
        else:
            yield "other", d.name, cst, inner


# --- the plan ---


@dataclass
class _Subtree:
    """A directory one task snapshots whole."""

    path: bytes
    rel: str
    rules: Rules
    st: os.stat_result
    files: int
    nbytes: int


@dataclass
class _Range:
    """Files of one directory, by name, that one task chunks and uploads."""

    dir: bytes
    names: list[bytes]
    files: int
    nbytes: int


@dataclass
class _Batch:
    """Subtrees one task snapshots one after the other: small sibling directories
    (a hundred of 10 MB each) share a task instead of paying a task each."""

    subtrees: list[_Subtree] = field(default_factory=list)
    files: int = 0
    nbytes: int = 0


@dataclass
class _Top:
    """A directory the driver writes: above the parts."""

    path: bytes
    st: os.stat_result
    dirs: dict[bytes, _Subtree | _Top] = field(default_factory=dict)
    ranges: list[_Range] = field(default_factory=list)
    links: dict[bytes, tuple[os.stat_result, bytes]] = field(default_factory=dict)
    ignored: int = 0
    warnings: list[str] = field(default_factory=list)


def _plan(
    info: _DirInfo, target: int, store_dir: tuple[int, int] | None, top: bool = True
) -> _Subtree | _Top:
    """Split `info` into parts of at most about `target` weight (see the docstring)."""
    if not top and _weight(info.files, info.nbytes) <= target:
        return _Subtree(info.path, info.rel, info.rules, info.st, info.files, info.nbytes)
    node = _Top(info.path, info.st)
    current: _Range | None = None
    for kind, name, cst, _inner in _entries(info.path, info.rel, info.rules, store_dir):
        if kind == "ignored":
            node.ignored += 1
        elif kind == "dir":
            sub = info.dirs.get(name)
            if sub is not None:  # else it appeared after the walk: not in this snapshot
                node.dirs[name] = _plan(sub, target, store_dir, top=False)
        elif kind == "file":
            w = _weight(1, cst.st_size)
            if current is None or _weight(current.files, current.nbytes) + w > target:
                current = _Range(info.path, [], 0, 0)
                node.ranges.append(current)
            current.names.append(name)
            current.files += 1
            current.nbytes += cst.st_size
        elif kind == "link":
            node.links[name] = (cst, os.readlink(os.path.join(info.path, name)))
        else:
            msg = (
                f"skipped {os.fsdecode(os.path.join(info.path, name))}: "
                "not a regular file, directory or symlink"
            )
            log.warning("%s", msg)
            node.warnings.append(msg)
    return node


def _tasks(plan: _Subtree | _Top, target: int) -> list[_Batch | _Range]:
    """The plan's parts as tasks: consecutive subtrees (in path order, so a task reads
    neighbouring directories) gathered into batches of at most `target` weight;
    each range is a task of its own (it is at most `target` already)."""
    tasks: list[_Batch | _Range] = []
    batch: _Batch | None = None
    for part in _parts(plan):
        if isinstance(part, _Range):
            tasks.append(part)
            continue
        w = _weight(part.files, part.nbytes)
        if batch is None or _weight(batch.files, batch.nbytes) + w > target:
            batch = _Batch()
            tasks.append(batch)
        batch.subtrees.append(part)
        batch.files += part.files
        batch.nbytes += part.nbytes
    return tasks


def _parts(plan: _Subtree | _Top) -> Iterator[_Subtree | _Range]:
    if isinstance(plan, _Subtree):
        yield plan
        return
    for d in plan.dirs.values():
        yield from _parts(d)
    yield from plan.ranges


# --- what runs in a Ray task ---


@dataclass
class _RangeResult:
    entries: list[fmt.Entry]
    locations: dict[bytes, fmt.Location]
    bytes_read: int
    new_chunks: int
    bytes_uploaded: int
    packs: int


def _open_store(url: str, endpoint: str | None) -> Store:
    if endpoint:
        # The endpoint the driver used: the node's own environment gives the credentials.
        os.environ["VFS_S3_ENDPOINT"] = endpoint
    return Store.open(url)


@contextlib.contextmanager
def _slot(base: str) -> Iterator[str]:
    """A cache directory of this node that no other running task uses."""
    root = os.path.join(base, "ray")
    shared_index = layout.packindex_dir(base)
    perms.make_dirs(shared_index)
    for i in itertools.count():
        d = os.path.join(root, f"slot-{i}")
        perms.make_dirs(d)
        fd = os.open(os.path.join(d, "lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            link = layout.packindex_dir(d)
            if not os.path.lexists(link):
                os.symlink(shared_index, link)
            yield d
            return
        finally:
            os.close(fd)


def _transient(fn: Callable[[], Any]) -> Any:
    """Run `fn`; a PermissionDenied is no BackendError to Ray (no retry would help)."""
    try:
        return fn()
    except PermissionDenied as e:
        raise VfsError(str(e)) from None


def _snapshot_task(
    url: str,
    endpoint: str | None,
    cache_base: str,
    batch: _Batch,
    store_dir: tuple[int, int] | None,
) -> list[Snapshot]:
    store = _open_store(url, endpoint)
    try:
        with _slot(cache_base) as cache_dir:

            def one(part: _Subtree) -> Snapshot:
                return snapshot_tree(
                    store,
                    os.fsdecode(part.path),
                    cache_dir=cache_dir,
                    rules=part.rules,
                    rel=part.rel,
                    store_dir=store_dir,
                )

            return [_transient(functools.partial(one, part)) for part in batch.subtrees]
    finally:
        store.close()


def _range_task(url: str, endpoint: str | None, cache_base: str, part: _Range) -> _RangeResult:
    store = _open_store(url, endpoint)
    try:
        with _slot(cache_base) as cache_dir:
            return _transient(lambda: _chunk_range(store, cache_dir, part))
    finally:
        store.close()


def _chunk_range(store: Store, cache_dir: str, part: _Range) -> _RangeResult:
    """Chunk, pack and upload the files of one range; their entries, as a one-machine
    commit makes them, and their chunks' locations."""
    known = KnownChunks(store, cache_dir, store.pack_ids())
    known.sync()
    writer = packer.PackWriter(store, spool_dir=layout.spool_dir(cache_dir))
    perms.make_dirs(writer.spool_dir)
    packer.clean_spool(writer.spool_dir)
    entries: list[fmt.Entry] = []
    bytes_read = new_chunks = 0
    closed = False

    # Threads as in commit: reads wait on the disk, hashing and zstd release the GIL.
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vfs-ray-chunk")
    try:
        for name in part.names:
            path = os.path.join(part.dir, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # removed since the driver's walk: not in this snapshot
            if not stat.S_ISREG(st.st_mode):
                raise VfsError(f"{os.fsdecode(path)} changed while being committed; commit again")
            chunks: list[fmt.ChunkRef] = []
            try:
                futures: list[Future[tuple[bytes, int, int, bytes | None]]] = []
                for piece in chunker.chunk_file(path, st):
                    futures.append(pool.submit(hash_chunk, bytes(piece), known))
                    if len(futures) >= 8:  # bounds the chunks held in memory
                        new_chunks += _take(futures, writer, chunks)
                new_chunks += _take(futures, writer, chunks)
            except OSError as e:  # chunk_file checked the bytes read against st
                raise read_error(path, e) from None
            bytes_read += st.st_size
            entries.append(
                fmt.Entry(
                    name,
                    fmt.FILE,
                    st.st_mode & 0o7777,
                    st.st_mtime_ns,
                    st.st_size,
                    chunks=tuple(chunks),
                )
            )
        writer.close()
        closed = True
        locations = {}
        for entry in entries:
            for c in entry.chunks:
                loc = writer.locations.get(c.id) or known.get(c.id)
                if loc is None:  # cannot happen: every chunk was packed or known
                    raise VfsError(f"internal error: chunk {c.id.hex()} has no location")
                locations[c.id] = loc
    finally:
        if not closed:
            writer.abort()
        pool.shutdown(wait=True, cancel_futures=True)
        known.close()
    return _RangeResult(
        entries, locations, bytes_read, new_chunks, writer.bytes_uploaded, writer.packs_written
    )


def _take(
    futures: list[Future[tuple[bytes, int, int, bytes | None]]],
    writer: packer.PackWriter,
    chunks: list[fmt.ChunkRef],
) -> int:
    new = 0
    for fut in futures:
        cid, length, codec, stored = fut.result()
        if stored is not None and not writer.has(cid):
            writer.add(cid, length, codec, stored)
            new += 1
        chunks.append(fmt.ChunkRef(cid, length))
    futures.clear()
    return new


# --- the driver ---


def connect(address: str | None) -> None:
    """Join the Ray cluster at `address` (as ray.init takes it: "auto",
    "ray://host:10001"), or start a local one for None; once per process."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            "--ray needs Ray, which is not installed: pip install 'vfs[ray]'"
        ) from None
    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as e:  # ray raises ConnectionError, RuntimeError, ValueError...
        where = address or "a new local cluster"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VfsError(f"cannot reach the Ray cluster at {where}: {first}") from None


def _check_reachable(store: Store) -> None:
    """A local-directory store is reachable from every node only when every node is
    this machine."""
    if local_root(store.url) is None:
        return
    import ray

    here = ray.util.get_node_ip_address()
    others = sorted({n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} - {here})
    if others:
        raise UsageError(
            f"the store {store.url} is a local directory, which the Ray nodes on "
            f"{', '.join(others)} cannot reach; commit to a store every node reaches (s3://...)"
        )


class _Sink:
    """Pages and locations the driver writes, stored together at the end."""

    def __init__(self) -> None:
        self.pages: list[bytes] = []
        self.locs: list[tuple[bytes, dict[bytes, fmt.Location]]] = []

    def put_page(self, canonical: bytes) -> bytes:
        self.pages.append(canonical)
        return fmt.object_id(canonical)

    def put_locs(self, leaf_id: bytes, locs: dict[bytes, fmt.Location]) -> None:
        self.locs.append((leaf_id, locs))

    def write(self, store: Store) -> None:
        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="vfs-tree") as pool:
            done: list[Future[object]] = [pool.submit(store.put_locs, *x) for x in self.locs]
            done += [pool.submit(store.put_object, page) for page in self.pages]
            for f in done:
                f.result()


@dataclass
class _Totals:
    bytes_read: int = 0
    new_chunks: int = 0
    bytes_uploaded: int = 0
    packs: int = 0
    ignored: int = 0
    warnings: list[str] = field(default_factory=list)


def _run_parts(
    store: Store,
    endpoint: str | None,
    cache_dir: str,
    tasks: list[_Batch | _Range],
    store_dir: tuple[int, int] | None,
    progress: Progress,
) -> dict[int, Snapshot | _RangeResult]:
    """Run the tasks; the results by the id() of each subtree and range."""
    import ray

    options: dict[str, Any] = dict(
        num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=[BackendError]
    )
    snap_remote = ray.remote(**options)(_snapshot_task)
    range_remote = ray.remote(**options)(_range_task)
    owner: dict[Any, _Batch | _Range] = {}
    for part in tasks:
        ref: Any
        if isinstance(part, _Batch):
            ref = snap_remote.remote(store.url, endpoint, cache_dir, part, store_dir)
        else:
            ref = range_remote.remote(store.url, endpoint, cache_dir, part)
        owner[ref] = part
    results: dict[int, Snapshot | _RangeResult] = {}
    pending = list(owner)
    progress.phase(f"0/{len(tasks)} tasks")
    done = 0
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                part = owner[ref]
                try:
                    got = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = e.cause if isinstance(e.cause, VfsError) else None
                    if cause is not None:
                        raise cause from None
                    raise VfsError(f"a commit task failed: {_first_line(e)}") from None
                except ray.exceptions.RayError as e:
                    raise VfsError(
                        f"a commit task failed {MAX_RETRIES + 1} times, its worker or node lost: {_first_line(e)}"
                    ) from None
                if isinstance(part, _Batch):
                    for sub, snap in zip(part.subtrees, got, strict=True):
                        results[id(sub)] = snap
                else:
                    results[id(part)] = got
                done += 1
                progress.advance(part.files, part.nbytes)
                progress.phase(f"{done}/{len(tasks)} tasks")
    except BaseException:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
    return results


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _write_top(
    node: _Top,
    results: dict[int, Snapshot | _RangeResult],
    sink: _Sink,
    totals: _Totals,
) -> tuple[bytes, int, int]:
    """Write a driver directory bottom-up, as a one-machine commit does; returns
    (id, file bytes, file count)."""
    entries: list[fmt.Entry] = []
    locations: dict[bytes, fmt.Location] = {}
    total_bytes = total_files = 0
    totals.ignored += node.ignored
    totals.warnings += node.warnings
    for name, d in node.dirs.items():
        if isinstance(d, _Top):
            tid, nbytes, nfiles = _write_top(d, results, sink, totals)
        else:
            snap = results[id(d)]
            assert isinstance(snap, Snapshot)
            tid, nbytes, nfiles = snap.tree, snap.bytes, snap.files
            _add(totals, snap.bytes_read, snap.new_chunks, snap.bytes_uploaded, snap.packs)
            totals.ignored += snap.ignored
            totals.warnings += snap.warnings
        total_bytes += nbytes
        total_files += nfiles
        entries.append(
            fmt.Entry(
                name,
                fmt.DIR,
                d.st.st_mode & 0o7777,
                d.st.st_mtime_ns,
                nbytes,
                tree=tid,
                nfiles=nfiles,
            )
        )
    for r in node.ranges:
        got = results[id(r)]
        assert isinstance(got, _RangeResult)
        _add(totals, got.bytes_read, got.new_chunks, got.bytes_uploaded, got.packs)
        locations.update(got.locations)
        for e in got.entries:
            total_bytes += e.size
            total_files += 1
            entries.append(e)
    for name, (lst, target) in node.links.items():
        entries.append(
            fmt.Entry(
                name, fmt.SYMLINK, lst.st_mode & 0o7777, lst.st_mtime_ns, len(target), target=target
            )
        )
    entries.sort(key=lambda e: e.name)
    return write_dir(entries, sink, locations.__getitem__), total_bytes, total_files


def _add(t: _Totals, read: int, new: int, uploaded: int, packs: int) -> None:
    t.bytes_read += read
    t.new_chunks += new
    t.bytes_uploaded += uploaded
    t.packs += packs


def ray_commit_dir(
    store: Store,
    src: str,
    dataset: str,
    *,
    address: str | None = None,
    message: str = "",
    branch: str = "main",
    tag: str | None = None,
    meta: dict[str, str] | None = None,
    author: str | None = None,
    cache_dir: str,
    progress: Progress | None = None,
    allow_empty: bool = False,
    exclude: list[str] | None = None,
    parts: int | None = None,
) -> CommitResult:
    """commit_dir's contract (vfs/ops/commit.py), with the work in Ray tasks on the
    cluster at `address` (joined if this process is not in one yet). `parts`: how many
    parts to aim for (default PARTS_PER_CPU per CPU of the cluster)."""
    progress = progress or Progress()
    t0 = time.monotonic()  # joining (or starting) the cluster is part of what the user waits

    def waiting(text: str) -> None:
        log.warning("%s", text)
        progress.phase(text)

    with leases.CommitLease(store.backend, on_wait=waiting) as lease:
        check_source(src, dataset, branch, tag)
        connect(address)  # after the checks: a typo fails before a cluster starts
        import ray

        _check_reachable(store)
        rules = Rules.from_excludes(exclude or ())
        store.ensure_config()
        lease.acquire()
        head, base, head_tree = branch_start(store, dataset, branch, tag)

        progress.phase("scanning")
        store_dir = store_dir_of(store)
        root = os.fsencode(os.path.abspath(src))
        root_st = os.stat(root)
        if store_dir == (root_st.st_dev, root_st.st_ino):
            raise UsageError(f"{src} is the store itself; commit a data directory")
        info = _walk(root, root_st, "", rules, store_dir)
        progress.scanned(info.files, info.nbytes)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        want = parts or PARTS_PER_CPU * cpus
        total = _weight(info.files, info.nbytes)
        target = max(-(-total // want), 1 if parts else MIN_PART_WEIGHT)
        plan = _plan(info, target, store_dir, top=total > target)
        todo = _tasks(plan, target)
        log.info("ray commit of %s: %d tasks for %d CPUs", src, len(todo), cpus)
        endpoint = getattr(store.backend, "endpoint", None)
        results = _run_parts(store, endpoint, cache_dir, todo, store_dir, progress)

        progress.phase("writing trees")
        totals = _Totals()
        if isinstance(plan, _Subtree):
            snap = results[id(plan)]
            assert isinstance(snap, Snapshot)
            tree_id, nbytes, nfiles = snap.tree, snap.bytes, snap.files
            _add(totals, snap.bytes_read, snap.new_chunks, snap.bytes_uploaded, snap.packs)
            totals.ignored, totals.warnings = snap.ignored, list(snap.warnings)
        else:
            sink = _Sink()
            tree_id, nbytes, nfiles = _write_top(plan, results, sink, totals)
            sink.write(store)

        whole = Snapshot(
            tree=tree_id,
            files=nfiles,
            bytes=nbytes,
            bytes_read=totals.bytes_read,
            new_chunks=totals.new_chunks,
            bytes_uploaded=totals.bytes_uploaded,
            packs=totals.packs,
            ignored=totals.ignored,
            warnings=totals.warnings,
        )
        return finish_commit(
            store,
            whole,
            src=src,
            dataset=dataset,
            branch=branch,
            tag=tag,
            head=head,
            head_tree=head_tree,
            message=message,
            author=author,
            meta=meta,
            exclude=exclude,
            allow_empty=allow_empty,
            check=lease.check,
            progress=progress,
            t0=t0,
            base=base,
        )
