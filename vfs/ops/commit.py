"""`vfs commit`: snapshot a directory into a store as a new version of a dataset.

Write order (docs/format.md, "Writing"): packs and their indexes, then locations and
tree pages, then the commit, then the ref by compare-and-swap. Whatever stops us
before the ref moves leaves the dataset as it was, and a rerun skips every chunk that
already sits in an indexed pack.

The pipeline streams (docs/architecture.md, "Commit"): one thread walks the tree
depth-first in name order (a pool stats each directory's names a few batches ahead)
and cuts files into chunks; a pool hashes (and, for new chunks, compresses) them;
results are taken back in order so packs fill in path order. A directory is finished
bottom-up as soon as its files are hashed: its tree pages wait only for the packs they
refer to, then are written. A window bounds the chunks in flight; only the open
path's directories and bounded queues stay in memory, whatever the file count.
Which chunks the store holds comes from an LMDB index in the cache (vfs.cache.known).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import socket
import stat
import struct
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import xxhash

from vfs import chunker, leases, packer, perms
from vfs import format as fmt
from vfs.cache import layout
from vfs.cache.known import KnownChunks
from vfs.cache.statcache import StatCache
from vfs.defaults import DEFAULT_BRANCH
from vfs.errors import NotFound, RefConflict, UsageError, VfsError
from vfs.ignore import IGNORE_FILE, Rules
from vfs.names import check_name
from vfs.store import HEADS, TAGS, RefValue, Store
from vfs.storecheck import local_root
from vfs.tree import DirBuilder, DirView

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
class Snapshot:
    """A directory chunked, packed and uploaded with its tree pages (snapshot_tree)."""

    tree: bytes  # the directory's tree id, as a one-machine commit gives it
    files: int
    bytes: int
    bytes_read: int
    new_chunks: int
    bytes_uploaded: int
    packs: int
    ignored: int
    warnings: list[str]


def store_dir_of(store: Store) -> tuple[int, int] | None:
    """The (device, inode) of a local store's directory, which a commit leaves out."""
    root = local_root(store.url)
    if root is None:
        return None
    try:
        st = os.stat(root)
    except OSError:
        return None
    return st.st_dev, st.st_ino


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


def read_error(path: bytes, e: OSError) -> VfsError:
    """The one-line error of a file a commit could not read whole (commit and Ray)."""
    name = os.fsdecode(path)
    if isinstance(e, chunker.ChangedWhileRead):
        return VfsError(f"{name} changed while being committed; commit again")
    if isinstance(e, PermissionError):
        return VfsError(f"cannot read {name}: permission denied")
    if isinstance(e, FileNotFoundError):
        return VfsError(f"{name} vanished while being committed; commit again")
    return VfsError(f"cannot read {name}: {e.strerror or e}")


def hash_chunk(data: bytes, known: KnownChunks) -> _Hashed:
    cid = fmt.chunk_id(data)
    if known.get(cid) is not None:
        return cid, len(data), fmt.CODEC_RAW, None
    codec, stored = packer.compress(data)
    return cid, len(data), codec, bytes(stored)


def _read_small(
    files: list[tuple[bytes, os.stat_result]], known: KnownChunks
) -> list[list[_Hashed] | OSError]:
    """Read and hash a batch of small files (one chunk each); a file that cannot be
    read gives its error in its place."""
    out: list[list[_Hashed] | OSError] = []
    for path, st in files:
        try:
            out.append([hash_chunk(bytes(c), known) for c in chunker.chunk_file(path, st)])
        except OSError as e:
            out.append(e)
    return out


def _hash_one(data: bytes, known: KnownChunks) -> list[list[_Hashed] | OSError]:
    return [[hash_chunk(data, known)]]


# Per directory, names are stat-ed (and their stat-cache entries looked up) in batches
# on a pool, a few batches ahead of the walk: on a cold page cache each lstat waits on
# the disk, and a batch needs one LMDB transaction instead of one per file.
STAT_BATCH = 256
STAT_AHEAD = 8
# Stat threads: more help a cold tree (each lstat waits on the disk), fewer a warm one
# (each holds the GIL for its Python work): 4 measured within noise of 2 and 8.
STAT_THREADS = 4
SMALL_BATCH = 16  # small files read and hashed by one task
# Stat-cache records kept before they are written, in one write transaction (the
# stat cache releases its map's pages after each; lookups release them as they go,
# lmdbenv.SharedEnv.touched).
STATCACHE_FLUSH = 4096
TREE_WRITES = 64  # tree page and locations writes in flight
# A directory of up to this many entries is stat-ed whole before its files are
# looked at, so that an unchanged one is recognised by its signature (_Walker.dir);
# a larger one is signed in a pass of its own and streams, holding a leaf's worth of
# entries instead of all of them (_Walker._large_dir).
SIG_MAX_ENTRIES = 100_000
# device, inode, size, mtime, ctime; the times as two's complement, so that one
# past 2262 (which no version can hold: _check_time) still signs
_ENTRY_SIG = struct.Struct("<QQQQQ")
_U64 = 2**64 - 1
# A version holds mtimes as signed 64-bit nanoseconds (1678 to 2262); ext4 allows 2446.
_MIN_NS, _MAX_NS = -(2**63), 2**63 - 1


def _check_time(path: bytes, name: bytes, st: os.stat_result) -> None:
    if not _MIN_NS <= st.st_mtime_ns <= _MAX_NS:
        raise UsageError(
            f"cannot commit {os.fsdecode(os.path.join(path, name))}: its modification "
            "time is past 2262 (or before 1678), which a version cannot hold; give it "
            "another with `touch`, or --exclude it"
        )


_pack_mode = struct.Struct("<I").pack  # mode


@dataclass(slots=True)
class _Tally:
    """A directory's totals (below it, and of its own files) and its signature."""

    files: int = 0
    bytes: int = 0
    own_files: int = 0
    own_bytes: int = 0
    own_ignored: int = 0  # files and symlinks the rules left out
    own_skipped: int = 0  # neither a file, a directory nor a symlink (a FIFO, a device)
    sig: Any = field(default_factory=xxhash.xxh3_128)


@dataclass(slots=True)
class _File:
    """A regular file whose chunks are being hashed."""

    name: bytes
    path: bytes
    st: os.stat_result
    chunks: list[fmt.ChunkRef] = field(default_factory=list)
    tasks: int = 0  # hashing tasks submitted
    got: int = 0  # hashing tasks returned
    sealed: bool = False  # no more tasks will be submitted
    done: int = 0  # bytes of `chunks`
    cached: bool = False  # the chunks came from the stat cache

    def complete(self) -> bool:
        return self.sealed and self.got == self.tasks


@dataclass(slots=True)
class _Stat:
    name: bytes
    st: os.stat_result | None  # None: removed while we walked
    cached: tuple[fmt.ChunkRef, ...] | None = None  # the stat cache's chunk list
    cached_known: bool = False  # every cached chunk is in an indexed pack


@dataclass(slots=True)
class _Batch:
    """A batch of a directory's entries, stat-ed: all, the subdirectories among them,
    and the signature of the others (name, stat, mode)."""

    stats: list[_Stat]
    dirs: list[_Stat]
    digest: bytes


@dataclass(slots=True)
class _Page:
    barrier: int  # the pack number that must be uploaded before this page is written
    id: bytes
    canonical: bytes
    chunks: list[bytes] | None  # a leaf's chunk ids (its locations); None for an index page


class _HeadDir:
    """The same directory in the branch head's tree: its pages are in the store
    (reachable from a ref, and the commit's lease keeps gc off them), so a page of
    ours with one of their ids needs no write. Knows the top page and, once asked,
    the ids of its children: every page of a directory up to millions of entries.
    Reads nothing until asked."""

    def __init__(self, store: Store, top: bytes) -> None:
        self.store = store
        self.top = top
        self._pages: set[bytes] | None = None

    @property
    def pages(self) -> set[bytes]:
        if self._pages is None:
            self._pages = {self.top}
            page = self.store.get_page(self.top)
            if page.kind == fmt.INDEX:
                self._pages.update(c.page for c in page.children())
        return self._pages

    def child(self, name: bytes) -> bytes | None:
        found = DirView(self.store, self.top).lookup(name)
        if found is None or not found.entry.is_dir:
            return None
        return found.entry.tree


class _Walker:
    """One streaming snapshot: walks depth-first in name order, hashes and packs the
    files' chunks in that order, and finishes each directory bottom-up as soon as its
    files are hashed. Its pages wait in `pages` until every pack they refer to is
    uploaded (write order: packs, locations, pages), then are written by a bounded
    pool. Memory: the open path's directories (a name list each, and a leaf's worth
    of entries), the chunk window, the pages waiting for their packs (at most the
    packs being filled or uploaded), and the stat-cache records not yet written."""

    def __init__(
        self,
        store: Store,
        cache_dir: str,
        progress: Progress,
        workers: int | None,
        store_dir: tuple[int, int] | None,
        warnings: list[str],
    ) -> None:
        self.store = store
        self.progress = progress
        self.store_dir = store_dir
        self.warnings = warnings
        self.files = 0
        self.bytes = 0
        self.bytes_read = 0
        self.new_chunks = 0
        self.ignored = 0
        self.pages_skipped = 0
        self.known = KnownChunks(store, cache_dir, store.pack_ids())
        self.statcache = StatCache(cache_dir, store.url)
        # More threads than cores: reading many small files is I/O-bound (on a cold
        # page cache each read waits on the disk), and hashing and zstd release the GIL.
        n = workers or max(8, 2 * (os.cpu_count() or 2))
        self.pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="vfs-chunk")
        # Stats get their own pool: a batch queued behind reads would stall the walk.
        self.stat_pool = ThreadPoolExecutor(max_workers=STAT_THREADS, thread_name_prefix="vfs-stat")
        self.tree_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="vfs-tree")
        self.writer = packer.PackWriter(store, spool_dir=layout.spool_dir(cache_dir))
        perms.make_dirs(self.writer.spool_dir)
        packer.clean_spool(self.writer.spool_dir)
        # Hashing tasks in flight, in pack order: a batch of small files, or one piece
        # of a large file. One future per small file cost more than its read.
        self.window: deque[tuple[list[_File], Future[list[list[_Hashed] | OSError]]]] = deque()
        self.small: list[_File] = []  # small files not yet submitted
        self.pages: deque[_Page] = deque()
        self.writes: deque[Future[None]] = deque()
        self.closed = False
        self.dirs_reused = 0
        self._fps: dict[int, bytes] = {}
        self._fp_rules: list[Rules] = []

    # -- the walk ------------------------------------------------------------------------

    def run(self, root: bytes, rel: str, rules: Rules, head: bytes | None) -> bytes:
        root_st = os.stat(root)
        if self.store_dir == (root_st.st_dev, root_st.st_ino):
            raise UsageError(f"{os.fsdecode(root)} is the store itself; commit a data directory")
        self.known.sync()
        tree, nbytes, nfiles = self.dir(root, rel, rules, head)
        self.progress.phase("uploading")
        self.writer.close()
        self.closed = True
        self.pump()
        if self.pages:  # cannot happen: every pack is uploaded
            raise VfsError("internal error: tree pages left waiting for packs")
        while self.writes:
            self.writes.popleft().result()
        self.files, self.bytes = nfiles, nbytes
        return tree

    def close(self) -> None:
        try:
            if not self.closed:
                self.writer.abort()
            for pool in (self.pool, self.stat_pool, self.tree_pool):
                pool.shutdown(wait=True, cancel_futures=True)
            self.statcache.flush()
        finally:
            self.known.close()

    def dir(
        self, path: bytes, rel: str, rules: Rules, head: bytes | None
    ) -> tuple[bytes, int, int]:
        """Snapshot the directory `path`; returns (tree id, file bytes, file count).

        A directory of up to SIG_MAX_ENTRIES entries is first stat-ed whole (its
        subdirectories snapshot on the way) into a signature: if the stat cache says
        the same signature gave the tree the branch head has here, that tree is the
        answer and no file of it is looked at again. A larger directory is signed
        too, but streams (`_large_dir`)."""
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            raise VfsError(f"cannot read directory {os.fsdecode(path)}: {e.strerror}") from None
        ignore_file = None
        if IGNORE_FILE in names:
            candidate = os.path.join(path, IGNORE_FILE)
            try:
                if stat.S_ISREG(os.lstat(candidate).st_mode):
                    ignore_file = candidate
            except FileNotFoundError:
                pass
        rules = rules.enter(rel, ignore_file)
        hd = _HeadDir(self.store, head) if head is not None else None
        tally = _Tally()
        if len(names) > SIG_MAX_ENTRIES:
            return self._large_dir(path, rel, rules, hd, names, tally)
        # First the signature: the stat threads hash each batch's entries; here only
        # the subdirectories are looked at (and snapshot, their tree ids signed too).
        batches = list(self._stats(path, names, False))
        subs: dict[bytes, fmt.Entry | None] = {}
        for got in batches:
            self._sign(got, path, rel, rules, hd, tally, subs)
        sig_bytes = tally.sig.digest() + self._rules_fp(rules)
        if hd is not None and self._reused(path, sig_bytes, hd.top, tally):
            return hd.top, tally.bytes, tally.files
        flat = (st for got in batches for st in got.stats)
        children = list(self._children(path, rel, rules, hd, flat, tally, subs))
        tid = self._build(path, hd, self._looked_up(path, children))
        self._record(path, sig_bytes, tid, tally)
        return tid, tally.bytes, tally.files

    def _large_dir(
        self,
        path: bytes,
        rel: str,
        rules: Rules,
        hd: _HeadDir | None,
        names: list[bytes],
        tally: _Tally,
    ) -> tuple[bytes, int, int]:
        """`dir` for a directory of more than SIG_MAX_ENTRIES entries, whose stats are
        never held all at once. A first pass only signs them (and snapshots the
        subdirectories): if the head's tree has that signature, that is the answer,
        as for a smaller directory. Else a second pass streams the entries into the
        commit, signing them again, so that the signature recorded is that of what
        was committed. A changed directory is stat-ed twice (~8 µs a file), an
        unchanged one once, with no stat-cache lookup per file."""
        subs: dict[bytes, fmt.Entry | None] = {}
        if hd is not None:
            for got in self._stats(path, names, False):
                self._sign(got, path, rel, rules, hd, tally, subs)
            sig_bytes = tally.sig.digest() + self._rules_fp(rules)
            if self._reused(path, sig_bytes, hd.top, tally):
                return hd.top, tally.bytes, tally.files
        tally.sig = xxhash.xxh3_128()

        def signed() -> Iterator[_Stat]:
            for got in self._stats(path, names, True):
                self._sign(got, path, rel, rules, hd, tally, subs)
                yield from got.stats

        tid = self._build(path, hd, self._children(path, rel, rules, hd, signed(), tally, subs))
        self._record(path, tally.sig.digest() + self._rules_fp(rules), tid, tally)
        return tid, tally.bytes, tally.files

    def _record(self, path: bytes, sig: bytes, tid: bytes, tally: _Tally) -> None:
        """Note in the stat cache that the directory signed `sig` gave the tree `tid`."""
        self.statcache.record_dir(
            path, sig, tid, tally.own_files, tally.own_bytes, tally.own_ignored, tally.own_skipped
        )

    def _sign(
        self,
        got: _Batch,
        path: bytes,
        rel: str,
        rules: Rules,
        hd: _HeadDir | None,
        tally: _Tally,
        subs: dict[bytes, fmt.Entry | None],
    ) -> None:
        """Add a batch of a directory's stats to its signature: the batch's digest,
        then each subdirectory's entry, snapshotting those not in `subs` yet."""
        tally.sig.update(got.digest)
        for d in got.dirs:
            if d.name not in subs:
                subs[d.name] = self._subdir(path, rel, rules, hd, d, tally)
            sub = subs[d.name]
            tally.sig.update(b"%s\0%s" % (d.name, fmt.encode_entry(sub) if sub else b"-"))

    def _reused(self, path: bytes, sig: bytes, top: bytes, tally: _Tally) -> bool:
        """Whether the stat cache says the directory with signature `sig` gave the
        tree `top` (the head's); if so its own totals are added to `tally`."""
        cached = self.statcache.lookup_dir(path, sig)
        if cached is None or cached[0] != top:
            return False
        _, own_files, own_bytes, own_ignored, own_skipped = cached
        if own_skipped:  # said when it was first seen; said again, as a count
            msg = (
                f"skipped {own_skipped} {'entry' if own_skipped == 1 else 'entries'} of "
                f"{os.fsdecode(path)} that {'is' if own_skipped == 1 else 'are'} not a "
                "regular file, directory or symlink (unchanged since the last commit)"
            )
            log.warning("%s", msg)
            self.warnings.append(msg)
        self.dirs_reused += 1
        self.ignored += own_ignored
        tally.files += own_files
        tally.bytes += own_bytes
        self.progress.advance(own_files, own_bytes)
        return True

    def _rules_fp(self, rules: Rules) -> bytes:
        """What the ignore rules in force are, as bytes: a directory's cached tree
        holds only under the rules it was made with."""
        fp = self._fps.get(id(rules))
        if fp is None:
            fp = xxhash.xxh3_64_digest(repr(rules.fingerprint()).encode())
            self._fps[id(rules)] = fp
            self._fp_rules.append(rules)  # keeps id(rules) from being reused
        return fp

    def _subdir(
        self, path: bytes, rel: str, rules: Rules, hd: _HeadDir | None, s: _Stat, tally: _Tally
    ) -> fmt.Entry | None:
        """Snapshot the subdirectory `s` unless the rules ignore it or it is the store;
        returns its entry (None if left out) and adds its totals to `tally`."""
        name, st = s.name, s.st
        assert st is not None
        if rules.ignored(rel + os.fsdecode(name), True):
            self.ignored += 1
            return None
        _check_time(path, name, st)
        child = os.path.join(path, name)
        if self.store_dir == (st.st_dev, st.st_ino):
            log.info("not committing %s: it is the store", os.fsdecode(child))
            self.ignored += 1
            return None
        sub_head = hd.child(name) if hd is not None else None
        tid, sub_bytes, sub_files = self.dir(child, rel + os.fsdecode(name) + "/", rules, sub_head)
        tally.bytes += sub_bytes
        tally.files += sub_files
        return fmt.Entry(
            name,
            fmt.DIR,
            st.st_mode & 0o7777,
            st.st_mtime_ns,
            sub_bytes,
            tree=tid,
            nfiles=sub_files,
        )

    def _children(
        self,
        path: bytes,
        rel: str,
        rules: Rules,
        hd: _HeadDir | None,
        stats: Iterable[_Stat],
        tally: _Tally,
        subs: dict[bytes, fmt.Entry | None] | None,
    ) -> Iterator[_Stat | fmt.Entry]:
        """The entries of the directory to commit, in name order: a subdirectory as
        its Entry (from `subs` if it was snapshot already, else snapshot now), a file
        or symlink as its _Stat."""
        for s in stats:
            name, st = s.name, s.st
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode):
                e = subs[name] if subs is not None else self._subdir(path, rel, rules, hd, s, tally)
                if e is not None:
                    yield e
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                if rules.ignored(rel + os.fsdecode(name), False):
                    self.ignored += 1
                    tally.own_ignored += 1
                    continue
                _check_time(path, name, st)
                if stat.S_ISREG(st.st_mode):
                    tally.bytes += st.st_size
                    tally.own_bytes += st.st_size
                    tally.files += 1
                    tally.own_files += 1
                yield s
            else:
                msg = (
                    f"skipped {os.fsdecode(os.path.join(path, name))}: "
                    "not a regular file, directory or symlink"
                )
                log.warning("%s", msg)
                self.warnings.append(msg)
                tally.own_skipped += 1

    def _build(
        self, path: bytes, hd: _HeadDir | None, children: Iterable[_Stat | fmt.Entry]
    ) -> bytes:
        """Chunk the files among `children` and write the directory's pages."""
        builder = DirBuilder(
            lambda pid, canonical, entries: self._leaf(pid, canonical, entries, hd),
            lambda canonical: self._index(canonical, hd),
        )
        items: deque[_File | fmt.Entry] = deque()
        for c in children:
            if isinstance(c, fmt.Entry):
                items.append(c)
            else:
                st = c.st
                assert st is not None
                child = os.path.join(path, c.name)
                if stat.S_ISREG(st.st_mode):
                    items.append(self._file(c.name, child, st, c))
                else:
                    target = os.readlink(child)
                    items.append(
                        fmt.Entry(
                            c.name,
                            fmt.SYMLINK,
                            st.st_mode & 0o7777,
                            st.st_mtime_ns,
                            len(target),
                            target=target,
                        )
                    )
            self._settle(items, builder)
        self._drain(0)
        self._settle(items, builder)
        tid = builder.finish()
        self.pump()
        return tid

    def _stats(self, path: bytes, names: list[bytes], lookup: bool) -> Iterator[_Batch]:
        """lstat every name (and, if `lookup`, look up the stat cache) in batches on
        the pool, a few ahead."""
        ahead: deque[Future[_Batch]] = deque()
        batches = (names[i : i + STAT_BATCH] for i in range(0, len(names), STAT_BATCH))
        for batch in batches:
            ahead.append(self.stat_pool.submit(self._stat_batch, path, batch, lookup))
            if len(ahead) >= STAT_AHEAD:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()

    def _looked_up(
        self, path: bytes, children: list[_Stat | fmt.Entry]
    ) -> Iterator[_Stat | fmt.Entry]:
        """`children` with the stat cache looked up for their files, a few batches ahead."""
        ahead: deque[tuple[list[_Stat | fmt.Entry], Future[None]]] = deque()
        for i in range(0, len(children), STAT_BATCH):
            batch = children[i : i + STAT_BATCH]
            files = [c for c in batch if isinstance(c, _Stat)]
            ahead.append((batch, self.stat_pool.submit(self._lookup, path, files)))
            if len(ahead) >= STAT_AHEAD:
                got, fut = ahead.popleft()
                fut.result()
                yield from got
        while ahead:
            got, fut = ahead.popleft()
            fut.result()
            yield from got

    def _stat_batch(self, path: bytes, names: list[bytes], lookup: bool) -> _Batch:
        got = _Batch([], [], b"")
        stats, dirs = got.stats, got.dirs
        signed: list[bytes] = []
        pack = _ENTRY_SIG.pack
        isdir = stat.S_ISDIR
        stat_at = os.stat
        # Relative to the directory's descriptor: the kernel walks one name per file,
        # not the whole path (a third of a warm re-commit's stat time).
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise VfsError(f"cannot read directory {os.fsdecode(path)}: {e.strerror}") from None
        try:
            for name in names:
                # listdir never yields '', '.', '..', '/' or NUL: only the length is
                # left to check (check_name words the refusal).
                if len(name) > fmt.MAX_NAME_LEN:
                    try:
                        fmt.check_name(name)
                    except VfsError as e:
                        raise UsageError(
                            f"cannot commit {os.fsdecode(os.path.join(path, name))}: {e}"
                        ) from None
                try:
                    st = stat_at(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    stats.append(_Stat(name, None))
                    signed.append(b"%s\0-" % name)
                    continue
                s = _Stat(name, st)
                stats.append(s)
                if isdir(st.st_mode):
                    dirs.append(s)  # signed by its tree id, once snapshot
                else:
                    signed.append(
                        pack(
                            st.st_dev,
                            st.st_ino,
                            st.st_size,
                            st.st_mtime_ns & _U64,
                            st.st_ctime_ns & _U64,
                        )
                        + _pack_mode(st.st_mode)
                        + name
                    )
        finally:
            os.close(fd)
        got.digest = xxhash.xxh3_128_digest(b"\0".join(signed) + b"\0" if signed else b"")
        if lookup:
            self._lookup(path, got.stats)
        return got

    def _lookup(self, path: bytes, stats: list[_Stat]) -> None:
        """Fill in `cached` and `cached_known` of the non-empty regular files."""
        regular = [
            s for s in stats if s.st is not None and stat.S_ISREG(s.st.st_mode) and s.st.st_size > 0
        ]
        if not regular:
            return
        got = self.statcache.lookup_many(
            [(os.path.join(path, s.name), s.st) for s in regular if s.st is not None]
        )
        hits = []
        for s, cached in zip(regular, got, strict=True):
            s.cached = cached
            if cached is not None:
                hits.append(s)
        if hits:
            ids = [c.id for s in hits for c in s.cached or ()]
            locs = iter(self.known.get_many(ids))
            for s in hits:
                s.cached_known = all([next(locs) is not None for _ in s.cached or ()])

    # -- files and chunks ----------------------------------------------------------------

    def _file(self, name: bytes, path: bytes, st: os.stat_result, s: _Stat) -> _File:
        f = _File(name, path, st)
        size = st.st_size
        cached = s.cached
        if cached is not None and (
            s.cached_known
            or all(self.writer.has(c.id) or self.known.get(c.id) is not None for c in cached)
        ):
            f.chunks = list(cached)
            f.done = size
            f.sealed = True
            f.cached = True
            self.progress.advance(0, size)
            return f
        if size <= chunker.MIN_SIZE:
            if size:
                f.tasks = 1
                self.small.append(f)
                if len(self.small) >= SMALL_BATCH:
                    self._submit_small()
                self.bytes_read += size
                self.progress.advance(0, size)
            f.sealed = True
            self._drain(WINDOW)
            return f
        self._submit_small()  # ahead of this file's pieces: packs fill in path order
        try:
            for piece in chunker.chunk_file(path, st):
                data = bytes(piece)
                f.tasks += 1
                self.window.append(([f], self.pool.submit(_hash_one, data, self.known)))
                self.bytes_read += len(data)
                self.progress.advance(0, len(data))
                self._drain(WINDOW)
        except OSError as e:
            raise read_error(path, e) from None
        f.sealed = True
        return f

    def _submit_small(self) -> None:
        if self.small:
            batch, self.small = self.small, []
            todo = [(f.path, f.st) for f in batch]
            self.window.append((batch, self.pool.submit(_read_small, todo, self.known)))

    def _drain(self, limit: int) -> None:
        writer = self.writer
        if limit == 0:
            self._submit_small()
        while len(self.window) > limit:
            owners, fut = self.window.popleft()
            for owner, hashed in zip(owners, fut.result(), strict=True):
                if isinstance(hashed, OSError):
                    raise read_error(owner.path, hashed)
                for cid, length, codec, stored in hashed:
                    if stored is not None and not writer.has(cid):
                        writer.add(cid, length, codec, stored)
                        self.new_chunks += 1
                    owner.chunks.append(fmt.ChunkRef(cid, length))
                    owner.done += length
                owner.got += 1

    def _settle(self, items: deque[_File | fmt.Entry], builder: DirBuilder) -> None:
        """Move the finished entries at the front of `items` into the directory."""
        while items:
            item = items[0]
            if isinstance(item, _File):
                if not item.complete():
                    return
                st = item.st
                if item.done != st.st_size:
                    raise VfsError(
                        f"{os.fsdecode(item.path)} changed while being committed; commit again"
                    )
                chunks = tuple(item.chunks)
                if chunks and not item.cached:
                    self.statcache.record(item.path, st, chunks)
                    if self.statcache.pending() >= STATCACHE_FLUSH:
                        self.statcache.flush()
                self.progress.advance(1, 0)
                item = fmt.Entry(
                    item.name,
                    fmt.FILE,
                    st.st_mode & 0o7777,
                    st.st_mtime_ns,
                    st.st_size,
                    chunks=chunks,
                )
            items.popleft()
            builder.add(item)

    # -- tree pages ----------------------------------------------------------------------

    def _leaf(
        self, page_id: bytes, canonical: bytes, entries: list[fmt.Entry], hd: _HeadDir | None
    ) -> None:
        if hd is not None and page_id in hd.pages:
            self.pages_skipped += 1
            return
        seen: dict[bytes, None] = {}
        for e in entries:
            for c in e.chunks:
                seen[c.id] = None
        self.pages.append(_Page(self.writer.barrier(), page_id, canonical, list(seen)))

    def _index(self, canonical: bytes, hd: _HeadDir | None) -> bytes:
        page_id = fmt.object_id(canonical)
        if hd is not None and page_id in hd.pages:
            self.pages_skipped += 1
        else:
            self.pages.append(_Page(self.writer.barrier(), page_id, canonical, None))
        return page_id

    def pump(self) -> None:
        """Fold uploaded packs into the known chunks, then write the pages whose packs
        are all uploaded."""
        writer = self.writer
        writer.check()
        uploaded = writer.take_uploaded()
        if uploaded:
            self.known.fold(uploaded)
            for _, entries in uploaded:
                writer.forget(entries)
        through = writer.uploaded_through()
        while self.pages and self.pages[0].barrier <= through:
            page = self.pages.popleft()
            locs = self._locate(page.chunks) if page.chunks is not None else None
            while len(self.writes) >= TREE_WRITES:
                self.writes.popleft().result()
            self.writes.append(self.tree_pool.submit(self._put, page, locs))

    def _locate(self, cids: list[bytes]) -> dict[bytes, fmt.Location]:
        here = self.writer.locations
        out = {c: here[c] for c in cids if c in here}
        rest = [c for c in cids if c not in out]
        for c, loc in zip(rest, self.known.get_many(rest), strict=True):
            if loc is None:  # cannot happen: every chunk was packed or known
                raise VfsError(f"internal error: chunk {c.hex()} has no location")
            out[c] = loc
        return out

    def _put(self, page: _Page, locs: dict[bytes, fmt.Location] | None) -> None:
        if locs is not None:
            self.store.put_locs(page.id, locs)
        self.store.put_object(page.canonical)


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
    head_tree: bytes | None = None,
) -> Snapshot:
    """Chunk, pack and upload the directory `src` (packs, locations, tree pages; no commit,
    no ref) and return its tree id. `rules` are the ignore rules in force AT `src`
    (the caller entered its ancestors' .vfsignore files); `rel` is src's path relative to
    the committed root, '/'-terminated or "" (what the rules match against).

    `head_tree`, if given, is the tree of the same directory in the version this one
    follows: its pages are known to be stored, so equal pages are not written again
    (an unchanged directory costs no request). `store_dir` is the (device, inode) of a
    store kept inside `src`, which is left out.

    Memory stays bounded whatever the number of files (see _Walker); a failure leaves
    uploaded packs (a rerun reuses them) and pages, never a commit or a ref."""
    progress = progress or Progress()
    warnings: list[str] = []
    walker = _Walker(store, cache_dir, progress, workers, store_dir, warnings)
    try:
        tree = walker.run(os.fsencode(os.path.abspath(src)), rel, rules, head_tree)
    finally:
        walker.close()
    log.info(
        "snapshot %s: %d directories reused unchanged, %d pages already stored",
        src,
        walker.dirs_reused,
        walker.pages_skipped,
    )
    return Snapshot(
        tree=tree,
        files=walker.files,
        bytes=walker.bytes,
        bytes_read=walker.bytes_read,
        new_chunks=walker.new_chunks,
        bytes_uploaded=walker.writer.bytes_uploaded,
        packs=walker.writer.packs_written,
        ignored=walker.ignored,
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
        check_source(src, dataset, branch, tag)
        rules = Rules.from_excludes(exclude or ())

        store.ensure_config()
        lease.acquire()
        head, base, head_tree = branch_start(store, dataset, branch, tag)

        progress.scanned(0, 0)  # streaming: the totals are known only at the end
        progress.phase("committing")
        snap = snapshot_tree(
            store,
            src,
            cache_dir=cache_dir,
            rules=rules,
            progress=progress,
            workers=workers,
            store_dir=store_dir_of(store),
            head_tree=head_tree,
        )
        return finish_commit(
            store,
            snap,
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


def check_source(src: str, dataset: str, branch: str, tag: str | None) -> None:
    """The names and the directory a commit is asked for, checked before any work."""
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


def branch_start(
    store: Store, dataset: str, branch: str, tag: str | None = None
) -> tuple[RefValue | None, RefValue | None, bytes | None]:
    """(the branch's head, the base a new branch starts at, the tree a commit is
    compared with and walks against). A branch that does not exist yet starts at the
    head of the dataset's default branch (as `git switch -c` starts from where you
    are), so its first commit has that history and the walk reuses its unchanged
    directories; the default branch itself, or a new dataset, starts empty. A tag to
    make, and a branch to make, are refused here, before any data is read, if they
    cannot be made (Store.check_new_ref)."""
    if tag is not None:
        if store.read_ref(dataset, TAGS, tag) is not None:
            raise RefConflict(f"tag {dataset}@{tag} already exists; tags never move")
        store.check_new_ref(dataset, TAGS, tag)
    head = store.read_ref(dataset, HEADS, branch)
    if head is None:
        store.check_new_ref(dataset, HEADS, branch)
    base = None
    if head is None and branch != DEFAULT_BRANCH:
        base = store.read_ref(dataset, HEADS, DEFAULT_BRANCH)
    start = head or base
    return head, base, store.get_commit(start.commit).tree if start is not None else None


def finish_commit(
    store: Store,
    snap: Snapshot,
    *,
    src: str,
    dataset: str,
    branch: str,
    tag: str | None,
    head: RefValue | None,
    head_tree: bytes | None,
    message: str,
    author: str | None,
    meta: dict[str, str] | None,
    exclude: list[str] | None,
    allow_empty: bool,
    check: Callable[[], None],
    progress: Progress,
    t0: float,
    base: RefValue | None = None,
) -> CommitResult:
    """After the snapshot: the commit on top of `head` and the ref moved (or, for a
    tree equal to the head's, nothing but the tag), and what to report. A new branch
    starts at `base` (branch_start; `head_tree` is then base's): with the same tree it
    is created there, with no new commit. One-machine and Ray commits end here alike."""
    fields = dict(
        dataset=dataset,
        branch=branch,
        files=snap.files,
        bytes=snap.bytes,
        bytes_read=snap.bytes_read,
        new_chunks=snap.new_chunks,
        bytes_uploaded=snap.bytes_uploaded,
        packs=snap.packs,
        warnings=snap.warnings,
        ignored=snap.ignored,
    )
    if head is None and base is not None and not allow_empty and head_tree == snap.tree:
        check()
        if store.set_branch(dataset, branch, base.commit, None, "branch"):
            head = base  # created at base: reported below as unchanged
        else:  # created meanwhile by another writer: commit on top of it
            head = store.read_ref(dataset, HEADS, branch)
            head_tree = store.get_commit(head.commit).tree if head is not None else None
    if head is not None and not allow_empty and head_tree == snap.tree:
        if tag is not None:
            store.create_tag(dataset, tag, head.commit)
        parents = store.get_commit(head.commit).parents
        return CommitResult(
            commit=head.commit,  # the head itself, with its own parent
            tree=snap.tree,
            parent=parents[0] if parents else None,
            seconds=time.monotonic() - t0,
            unchanged=True,
            **fields,  # type: ignore[arg-type]
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
            tree=snap.tree,
            parents=(),
            author=author or default_author(),
            time=utc_now(),
            message=message,
            meta=all_meta,
            files=snap.files,
            bytes=snap.bytes,
        ),
        check=check,
        base=base.commit if base is not None else None,  # used only while no head
    )
    if tag is not None:
        store.create_tag(dataset, tag, commit_id)
    return CommitResult(
        commit=commit_id,
        tree=snap.tree,
        parent=parent,
        seconds=time.monotonic() - t0,
        rebased=rebased,
        **fields,  # type: ignore[arg-type]
    )


def commit_and_move(
    store: Store,
    dataset: str,
    branch: str,
    head: RefValue | None,
    template: fmt.Commit,
    action: str = "commit",
    check: Callable[[], None] | None = None,
    base: bytes | None = None,
) -> tuple[bytes, bytes | None, int]:
    """Write the commit on top of the branch head and move the branch to it; a branch
    that does not exist yet is created with `base` (if any) as the commit's parent.

    If somebody else moved the branch first, the same snapshot is committed again on
    top of their commit: a version is a whole snapshot, so re-parenting it loses
    nothing, and every commit that was reported as made stays reachable.
    """
    for attempt in range(CAS_ATTEMPTS):
        parents = (head.commit,) if head else (base,) if base else ()
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
            return cid, parents[0] if parents else None, attempt
        head = store.read_ref(dataset, HEADS, branch)
        log.info("branch %s@%s moved during commit; committing on top of it", dataset, branch)
        time.sleep(min(0.5, 0.01 * 2**attempt) * (0.5 + (hash(threading.get_ident()) % 100) / 100))
    raise RefConflict(
        f"branch {dataset}@{branch} kept moving; gave up after {CAS_ATTEMPTS} attempts"
    )
