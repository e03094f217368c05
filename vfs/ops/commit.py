"""`vfs commit`: snapshot a directory into a store as a new version of a dataset.

Write order (docs/format.md, "Writing"): packs and their indexes, then locations and
tree pages, then the commit, then the ref by compare-and-swap. Whatever stops us
before the ref moves leaves the dataset as it was, and a rerun skips every chunk that
already sits in an indexed pack.

The pipeline: one thread walks the files in path order and cuts them into chunks;
a pool hashes (and, for new chunks, compresses) them; results are taken back in
order so packs fill in path order. A window bounds the chunks in flight, and with
them the memory.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import socket
import stat
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from vfs import chunker, leases, packer, perms
from vfs import format as fmt
from vfs.cache import layout
from vfs.cache.statcache import StatCache
from vfs.errors import NotFound, RefConflict, UsageError, VfsError
from vfs.ignore import IGNORE_FILE, Rules
from vfs.names import check_name
from vfs.store import HEADS, TAGS, RefValue, Store
from vfs.storecheck import local_root
from vfs.tree import write_dir

log = logging.getLogger(__name__)

WINDOW = 32  # chunks in flight between the cutter and the packer
CAS_ATTEMPTS = 50


class Progress:
    """What a commit reports as it goes; the CLI draws it, tests count it."""

    def scanned(self, files: int, nbytes: int) -> None:
        pass

    def advance(self, files: int, nbytes: int) -> None:
        pass

    def phase(self, text: str) -> None:
        pass


@dataclass
class CommitResult:
    commit: bytes
    tree: bytes
    parent: bytes | None
    dataset: str
    branch: str
    files: int
    bytes: int
    bytes_read: int
    new_chunks: int
    bytes_uploaded: int
    packs: int
    seconds: float
    unchanged: bool = False
    rebased: int = 0
    ignored: int = 0  # entries the ignore rules (or the store inside the directory) left out
    warnings: list[str] = field(default_factory=list)


@dataclass
class _File:
    path: bytes
    st: os.stat_result
    chunks: list[fmt.ChunkRef] = field(default_factory=list)
    done: int = 0  # bytes of `chunks`, kept as they arrive (summing each time is quadratic)


@dataclass
class _Dir:
    path: bytes
    st: os.stat_result
    files: dict[bytes, _File] = field(default_factory=dict)
    dirs: dict[bytes, _Dir] = field(default_factory=dict)
    links: dict[bytes, tuple[os.stat_result, bytes]] = field(default_factory=dict)


@dataclass
class _Scan:
    tree: _Dir
    files: list[_File]  # in path order: the order chunks land in packs
    ignored: int  # entries left out by the rules or as the store; an ignored dir counts once


def _scan(
    root: bytes,
    warnings: list[str],
    rules: Rules,
    store_dir: tuple[int, int] | None = None,
    rel: str = "",
) -> _Scan:
    """Walk `root` without following symlinks, leaving out what `rules` ignore
    (without entering an ignored directory) and the directory whose (device, inode) is
    `store_dir`: a store kept inside the committed directory."""
    files: list[_File] = []
    ignored = 0

    def visit(path: bytes, st: os.stat_result, rel: str, rules: Rules) -> _Dir:
        nonlocal ignored
        node = _Dir(path, st)
        try:
            with os.scandir(path) as it:
                children = sorted(it, key=lambda d: d.name)
        except OSError as e:
            raise VfsError(f"cannot read directory {os.fsdecode(path)}: {e.strerror}") from None
        ignore_file = next(
            (
                d.path
                for d in children
                if d.name == IGNORE_FILE and d.is_file(follow_symlinks=False)
            ),
            None,
        )
        rules = rules.enter(rel, ignore_file)
        for d in children:
            name = d.name
            try:
                fmt.check_name(name)
            except VfsError as e:
                raise UsageError(f"cannot commit {os.fsdecode(d.path)}: {e}") from None
            try:
                cst = d.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we walked: it was never in this snapshot
            is_dir = stat.S_ISDIR(cst.st_mode)
            child_rel = rel + os.fsdecode(name)
            if rules.ignored(child_rel, is_dir):
                ignored += 1
                continue
            if is_dir:
                if store_dir == (cst.st_dev, cst.st_ino):
                    log.info("not committing %s: it is the store", os.fsdecode(d.path))
                    ignored += 1
                    continue
                node.dirs[name] = visit(d.path, cst, child_rel + "/", rules)
            elif stat.S_ISREG(cst.st_mode):
                f = _File(d.path, cst)
                node.files[name] = f
                files.append(f)
            elif stat.S_ISLNK(cst.st_mode):
                node.links[name] = (cst, os.readlink(d.path))
            else:
                msg = f"skipped {os.fsdecode(d.path)}: not a regular file, directory or symlink"
                log.warning("%s", msg)
                warnings.append(msg)
        return node

    # Files are appended depth-first in name order: the order a reader walking the
    # tree meets them, so a directory read front to back is one range of its packs.
    root_st = os.stat(root)
    if store_dir == (root_st.st_dev, root_st.st_ino):
        raise UsageError(f"{os.fsdecode(root)} is the store itself; commit a data directory")
    tree = visit(root, root_st, rel, rules)
    return _Scan(tree, files, ignored)


def _store_dir(store: Store) -> tuple[int, int] | None:
    """The (device, inode) of a local store's directory, which a commit leaves out."""
    root = local_root(store.url)
    if root is None:
        return None
    try:
        st = os.stat(root)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def load_known_chunks(store: Store, cache_dir: str, workers: int = 16) -> dict[bytes, fmt.Location]:
    """Every chunk in an indexed pack of the store, with its location.

    A pack index is determined by its pack's id (it is the pack's own trailer), so
    indexes are kept locally under that id and fetched once per machine; only the
    listing of `index/` goes to the store each time.
    """
    ids = list(store.pack_ids())
    local = layout.packindex_dir(cache_dir)
    perms.make_dirs(local)

    def load(pack_id: bytes) -> list[fmt.PackEntry]:
        return store.local_pack_index(pack_id, local)

    known: dict[bytes, fmt.Location] = {}
    if not ids:
        return known
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vfs-index") as pool:
        for pack_id, entries in zip(ids, pool.map(load, ids), strict=True):
            for e in entries:
                known[e.id] = fmt.Location(pack_id, e.offset, e.stored_length, e.codec)
    return known


def git_info(path: str) -> dict[str, str]:
    """The git revision of the work tree around `path`, if any, and whether it is dirty."""
    try:
        rev = subprocess.run(
            ["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return {}
        status = subprocess.run(
            ["git", "-C", path, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else True
    return {"git.rev": rev.stdout.strip(), "git.dirty": "true" if dirty else "false"}


def default_author() -> str:
    return os.environ.get("VFS_AUTHOR") or f"{getpass.getuser()}@{socket.gethostname()}"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_Hashed = tuple[bytes, int, int, bytes | None]  # chunk id, length, codec, stored bytes if new


def _read_error(path: bytes, e: OSError) -> VfsError:
    name = os.fsdecode(path)
    if isinstance(e, PermissionError):
        return VfsError(f"cannot read {name}: permission denied")
    if isinstance(e, FileNotFoundError):
        return VfsError(f"{name} vanished while being committed; commit again")
    return VfsError(f"cannot read {name}: {e.strerror or e}")


def _hash_chunk(data: bytes, known: dict[bytes, fmt.Location]) -> _Hashed:
    cid = fmt.chunk_id(data)
    if cid in known:
        return cid, len(data), fmt.CODEC_RAW, None
    codec, stored = packer.compress(data)
    return cid, len(data), codec, bytes(stored)


def _read_small(path: bytes, size: int, known: dict[bytes, fmt.Location]) -> list[_Hashed]:
    return [_hash_chunk(bytes(c), known) for c in chunker.chunk_file(path, size)]


def _hash_one(data: bytes, known: dict[bytes, fmt.Location]) -> list[_Hashed]:
    return [_hash_chunk(data, known)]


class _TreeSink:
    """Collects tree pages and locations as the tree is built; `write` stores them
    concurrently. Building first and writing after lets an unchanged tree (same root
    id as the branch head) cost no request at all."""

    def __init__(self) -> None:
        self.pages: list[bytes] = []
        self.locs: list[tuple[bytes, dict[bytes, fmt.Location]]] = []

    def put_page(self, canonical: bytes) -> bytes:
        self.pages.append(canonical)
        return fmt.object_id(canonical)

    def put_locs(self, leaf_id: bytes, locs: dict[bytes, fmt.Location]) -> None:
        self.locs.append((leaf_id, locs))

    def write(self, store: Store) -> None:
        """Store everything collected (each object only if its key is new)."""
        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="vfs-tree") as pool:
            done: list[Future[object]] = [
                pool.submit(store.put_locs, leaf, locs) for leaf, locs in self.locs
            ]
            done += [pool.submit(store.put_object, page) for page in self.pages]
            for f in done:
                f.result()


def _build_tree(
    node: _Dir, sink: _TreeSink, locate: Callable[[bytes], fmt.Location]
) -> tuple[bytes, int, int]:
    """Write the tree of `node` bottom-up; returns (id, file bytes, file count)."""
    entries: list[fmt.Entry] = []
    total_bytes = 0
    total_files = 0
    for name, d in node.dirs.items():
        tid, nbytes, nfiles = _build_tree(d, sink, locate)
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
    for name, f in node.files.items():
        total_bytes += f.st.st_size
        total_files += 1
        entries.append(
            fmt.Entry(
                name,
                fmt.FILE,
                f.st.st_mode & 0o7777,
                f.st.st_mtime_ns,
                f.st.st_size,
                chunks=tuple(f.chunks),
            )
        )
    for name, (lst, target) in node.links.items():
        entries.append(
            fmt.Entry(
                name, fmt.SYMLINK, lst.st_mode & 0o7777, lst.st_mtime_ns, len(target), target=target
            )
        )
    entries.sort(key=lambda e: e.name)
    return write_dir(entries, sink, locate), total_bytes, total_files


@dataclass
class Snapshot:
    tree: bytes
    files: int
    bytes: int
    bytes_read: int
    new_chunks: int
    bytes_uploaded: int
    packs: int
    ignored: int
    warnings: list[str]


def snapshot_tree(
    store: Store,
    src: str,
    *,
    cache_dir: str,
    rules: Rules,
    rel: str = "",
    progress: Progress | None = None,
    workers: int | None = None,
    store_dir: tuple[int, int] | None = None,
) -> Snapshot:
    """Chunk, pack and upload directory `src` (packs, locations, tree pages; no commit, no
    ref) and return its tree id. `rules`: the ignore rules in force AT src (ancestors'
    .vfsignore entered); `rel`: src relative to the committed root, '/'-terminated or ""."""
    return _snapshot(
        store,
        src,
        cache_dir=cache_dir,
        rules=rules,
        rel=rel,
        progress=progress or Progress(),
        workers=workers,
        store_dir=store_dir,
    )


def _snapshot(
    store: Store,
    src: str,
    *,
    cache_dir: str,
    rules: Rules,
    progress: Progress,
    rel: str = "",
    workers: int | None = None,
    store_dir: tuple[int, int] | None = None,
    skip_write: Callable[[bytes], bool] | None = None,
) -> Snapshot:
    """snapshot_tree, leaving the tree pages unwritten when `skip_write(tree id)` holds
    (an unchanged tree costs commit_dir no request)."""
    warnings: list[str] = []
    progress.phase("scanning")
    scan = _scan(os.fsencode(os.path.abspath(src)), warnings, rules, store_dir, rel)
    root, files = scan.tree, scan.files
    total_bytes = sum(f.st.st_size for f in files)
    progress.scanned(len(files), total_bytes)

    progress.phase("indexing store")
    known = load_known_chunks(store, cache_dir)
    statcache = StatCache(cache_dir, store.url)
    # More threads than cores: reading many small files is I/O-bound (on a cold
    # page cache each read waits on the disk), and hashing and zstd release the GIL.
    nworkers = workers or max(8, 2 * (os.cpu_count() or 2))
    pool = ThreadPoolExecutor(max_workers=nworkers, thread_name_prefix="vfs-chunk")
    writer = packer.PackWriter(store, spool_dir=layout.spool_dir(cache_dir))
    perms.make_dirs(writer.spool_dir)
    packer.clean_spool(writer.spool_dir)
    bytes_read = 0
    new_chunks = 0
    closed = False
    try:
        progress.phase("committing")
        window: deque[tuple[_File, Future[list[_Hashed]]]] = deque()

        def drain(limit: int) -> None:
            nonlocal new_chunks
            while len(window) > limit:
                owner, fut = window.popleft()
                try:
                    hashed = fut.result()
                except OSError as e:
                    raise _read_error(owner.path, e) from None
                for cid, length, codec, stored in hashed:
                    if stored is not None and not writer.has(cid):
                        writer.add(cid, length, codec, stored)
                        new_chunks += 1
                    owner.chunks.append(fmt.ChunkRef(cid, length))
                    owner.done += length
                if owner.done == owner.st.st_size:
                    statcache.record(owner.path, owner.st, tuple(owner.chunks))
                    progress.advance(1, 0)

        for f in files:
            size = f.st.st_size
            cached = statcache.lookup(f.path, f.st)
            if cached is not None and all(c.id in known or writer.has(c.id) for c in cached):
                f.chunks = list(cached)
                progress.advance(1, size)
                continue
            if size == 0:
                progress.advance(1, 0)
                continue
            if size <= chunker.MIN_SIZE:
                window.append((f, pool.submit(_read_small, f.path, size, known)))
                bytes_read += size
                progress.advance(0, size)
                drain(WINDOW)
                continue
            try:
                for piece in chunker.chunk_file(f.path, size):
                    data = bytes(piece)
                    window.append((f, pool.submit(_hash_one, data, known)))
                    bytes_read += len(data)
                    progress.advance(0, len(data))
                    drain(WINDOW)
            except OSError as e:
                raise _read_error(f.path, e) from None
        drain(0)
        progress.phase("uploading")
        writer.close()
        closed = True
        for f in files:
            got = sum(c.length for c in f.chunks)
            if got != f.st.st_size:
                raise VfsError(f"{os.fsdecode(f.path)} changed while being committed; commit again")

        def locate(cid: bytes) -> fmt.Location:
            loc = writer.locations.get(cid) or known.get(cid)
            if loc is None:  # cannot happen: every chunk was packed or known
                raise VfsError(f"internal error: chunk {cid.hex()} has no location")
            return loc

        progress.phase("writing trees")
        sink = _TreeSink()
        tree_id, nbytes, nfiles = _build_tree(root, sink, locate)
        if skip_write is None or not skip_write(tree_id):
            sink.write(store)
    finally:
        if not closed:
            writer.abort()
        pool.shutdown(wait=True, cancel_futures=True)
        statcache.flush()

    return Snapshot(
        tree=tree_id,
        files=nfiles,
        bytes=nbytes,
        bytes_read=bytes_read,
        new_chunks=new_chunks,
        bytes_uploaded=writer.bytes_uploaded,
        packs=writer.packs_written,
        ignored=scan.ignored,
        warnings=warnings,
    )


def commit_dir(
    store: Store,
    src: str,
    dataset: str,
    *,
    message: str = "",
    branch: str = "main",
    tag: str | None = None,
    meta: dict[str, str] | None = None,
    author: str | None = None,
    cache_dir: str,
    progress: Progress | None = None,
    workers: int | None = None,
    allow_empty: bool = False,
    exclude: list[str] | None = None,
) -> CommitResult:
    """Snapshot `src` as a new version of `dataset` on `branch`, leaving out what its
    `.vfsignore` files and the `exclude` patterns ignore (vfs/ignore.py) and a store
    kept inside it. The `exclude` patterns are recorded in the commit's meta as
    `vfs.exclude` (a JSON list), so that a version says what shaped it; the
    `.vfsignore` files are committed with the tree and need no record.

    The commit holds a lease (vfs/leases.py) from before it reads the store's pack
    indexes until its ref moved, so that a running gc deletes nothing this commit
    comes to reference; it waits while a gc holds the store's lock."""
    progress = progress or Progress()

    def waiting(text: str) -> None:
        log.warning("%s", text)
        progress.phase(text)

    with leases.CommitLease(store.backend, on_wait=waiting) as lease:
        t0 = time.monotonic()
        check_name(dataset, "dataset")
        check_name(branch, "branch")
        if tag is not None:
            check_name(tag, "tag")
        if not os.path.exists(src):
            raise NotFound(f"no such directory: {src}")
        if not os.path.isdir(src):
            raise UsageError(f"not a directory: {src}")
        if not os.access(src, os.R_OK | os.X_OK):
            raise VfsError(f"cannot read directory {src}: permission denied")
        rules = Rules.from_excludes(exclude or ())

        store.ensure_config()
        lease.acquire()
        if tag is not None and store.read_ref(dataset, TAGS, tag) is not None:
            raise RefConflict(f"tag {dataset}@{tag} already exists; tags never move")
        head = store.read_ref(dataset, HEADS, branch)

        snap = _snapshot(
            store,
            src,
            cache_dir=cache_dir,
            rules=rules,
            progress=progress,
            workers=workers,
            store_dir=_store_dir(store),
            skip_write=(
                None if head is None else lambda tid: store.get_commit(head.commit).tree == tid
            ),
        )
        tree_id, nbytes, nfiles = snap.tree, snap.bytes, snap.files

        base = dict(
            dataset=dataset,
            branch=branch,
            files=nfiles,
            bytes=nbytes,
            bytes_read=snap.bytes_read,
            new_chunks=snap.new_chunks,
            bytes_uploaded=snap.bytes_uploaded,
            packs=snap.packs,
            warnings=snap.warnings,
            ignored=snap.ignored,
        )
        if head is not None and not allow_empty and store.get_commit(head.commit).tree == tree_id:
            if tag is not None:
                store.create_tag(dataset, tag, head.commit)
            return CommitResult(
                commit=head.commit,
                tree=tree_id,
                parent=head.commit,
                seconds=time.monotonic() - t0,
                unchanged=True,
                **base,  # type: ignore[arg-type]
            )

        all_meta = git_info(src)
        if exclude:
            all_meta["vfs.exclude"] = json.dumps(list(exclude), ensure_ascii=False)
        all_meta.update(meta or {})
        progress.phase("writing commit")
        commit_id, parent, rebased = commit_and_move(
            store,
            dataset,
            branch,
            head,
            fmt.Commit(
                tree=tree_id,
                parents=(),
                author=author or default_author(),
                time=utc_now(),
                message=message,
                meta=all_meta,
                files=nfiles,
                bytes=nbytes,
            ),
            check=lease.check,
        )
        if tag is not None:
            store.create_tag(dataset, tag, commit_id)
        return CommitResult(
            commit=commit_id,
            tree=tree_id,
            parent=parent,
            seconds=time.monotonic() - t0,
            rebased=rebased,
            **base,  # type: ignore[arg-type]
        )


def commit_and_move(
    store: Store,
    dataset: str,
    branch: str,
    head: RefValue | None,
    template: fmt.Commit,
    action: str = "commit",
    check: Callable[[], None] | None = None,
) -> tuple[bytes, bytes | None, int]:
    """Write the commit on top of the branch head and move the branch to it.

    If somebody else moved the branch first, the same snapshot is committed again on
    top of their commit: a version is a whole snapshot, so re-parenting it loses
    nothing, and every commit that was reported as made stays reachable.
    """
    for attempt in range(CAS_ATTEMPTS):
        parents = (head.commit,) if head else ()
        c = fmt.Commit(
            template.tree,
            parents,
            template.author,
            template.time,
            template.message,
            template.meta,
            template.files,
            template.bytes,
        )
        cid = store.put_commit(c)
        if check is not None:
            check()  # the commit's lease: gc must not have judged it expired
        if store.set_branch(dataset, branch, cid, head, action):
            return cid, head.commit if head else None, attempt
        head = store.read_ref(dataset, HEADS, branch)
        log.info("branch %s@%s moved during commit; committing on top of it", dataset, branch)
        time.sleep(min(0.5, 0.01 * 2**attempt) * (0.5 + (hash(threading.get_ident()) % 100) / 100))
    raise RefConflict(
        f"branch {dataset}@{branch} kept moving; gave up after {CAS_ATTEMPTS} attempts"
    )
