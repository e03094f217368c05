"""The streaming commit: the same tree ids as the in-memory builder (vfs.tree.write_dir),
memory that does not grow with the file count, and interruption that moves no ref."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.pages import MemoryPages
from tests.support.treegen import make_tree, snapshot_fs, snapshot_version
from vfs import chunker
from vfs import format as fmt
from vfs.cache.known import KnownChunks
from vfs.cache.statcache import StatCache
from vfs.errors import UsageError
from vfs.ignore import IGNORE_FILE, Rules
from vfs.ops import commit as commit_ops
from vfs.ops.commit import Progress, commit_dir, snapshot_tree
from vfs.packer import PACK_TARGET_ENV
from vfs.reader import open_version
from vfs.store import HEADS, Store
from vfs.tree import DirBuilder, write_dir

SMALL_PACKS = str(64 * 1024)


@pytest.fixture
def store(store_url: str):
    s = Store.open(store_url)
    s.ensure_config()
    yield s
    s.close()


@pytest.fixture
def cache_dir(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


_NOWHERE = fmt.Location(b"\0" * 32, 0, 0, fmt.CODEC_RAW)


def _reference_tree(
    path: Path, rel: str, rules: Rules, sink: MemoryPages
) -> tuple[bytes, int, int]:
    """The tree id the in-memory builder (the whole directory, then write_dir) gives."""
    names = sorted(os.fsencode(n) for n in os.listdir(path))
    ignore = path / os.fsdecode(IGNORE_FILE)
    rules = rules.enter(rel, os.fsencode(ignore) if ignore.is_file() else None)
    entries: list[fmt.Entry] = []
    total = files = 0
    for name in names:
        p = path / os.fsdecode(name)
        st = os.lstat(p)
        child_rel = rel + os.fsdecode(name)
        is_dir = stat.S_ISDIR(st.st_mode)
        if rules.ignored(child_rel, is_dir):
            continue
        mode, mtime = st.st_mode & 0o7777, st.st_mtime_ns
        if is_dir:
            tid, n, k = _reference_tree(p, child_rel + "/", rules, sink)
            total, files = total + n, files + k
            entries.append(fmt.Entry(name, fmt.DIR, mode, mtime, n, tree=tid, nfiles=k))
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(os.fsencode(p))
            entries.append(fmt.Entry(name, fmt.SYMLINK, mode, mtime, len(target), target=target))
        else:
            chunks = tuple(
                fmt.ChunkRef(fmt.chunk_id(bytes(c)), len(c))
                for c in chunker.chunk_file(os.fsencode(p), st)
            )
            total, files = total + st.st_size, files + 1
            entries.append(fmt.Entry(name, fmt.FILE, mode, mtime, st.st_size, chunks=chunks))
    return write_dir(entries, sink, lambda cid: _NOWHERE), total, files


def _awkward_tree(root: Path) -> Path:
    make_tree(root, big=True)
    flat = root / "flat"
    flat.mkdir()
    for i in range(9000):  # past LEAF_SPLIT_AT: several leaves under an index page
        (flat / f"f{i:05d}").write_bytes(b"%d" % (i % 7))
    (root / "ignored-dir").mkdir()
    (root / "ignored-dir" / "x").write_bytes(b"x")
    (root / "nested" / "junk.tmp").write_bytes(b"junk")
    (root / os.fsdecode(IGNORE_FILE)).write_text("ignored-dir/\n*.tmp\n")
    return root


def test_tree_ids_match_the_in_memory_builder(store: Store, tmp_path: Path, cache_dir: str) -> None:
    src = _awkward_tree(tmp_path / "src")
    sink = MemoryPages()
    want, nbytes, nfiles = _reference_tree(src, "", Rules.from_excludes(()), sink)
    flat_top = fmt.TreePage(sink.pages[want], want).find(b"flat")
    assert flat_top >= 0
    r = commit_dir(store, str(src), "ds", cache_dir=cache_dir)
    assert (r.tree, r.bytes, r.files) == (want, nbytes, nfiles)
    assert r.ignored == 2
    with open_version("ds", store) as v:
        got = snapshot_version(v)
    fs = snapshot_fs(src)
    assert got == {k: fs[k] for k in fs if "ignored-dir" not in k and not k.endswith(".tmp")}
    # Every page the reference builder made is in the store: flat/ has several.
    assert len(sink.pages) > 8
    for pid in sink.pages:
        assert store.has_object(pid)


def _streamed(entries: list[fmt.Entry]) -> tuple[bytes, dict[bytes, bytes]]:
    got = MemoryPages()

    def leaf(pid: bytes, canonical: bytes, es: list[fmt.Entry]) -> None:
        got.put_page(canonical)

    b = DirBuilder(leaf, got.put_page)
    for e in entries:
        b.add(e)
    return b.finish(), got.pages


def test_dir_builder_cuts_pages_like_write_dir() -> None:
    for n in (0, 1, fmt.LEAF_SPLIT_AT, fmt.LEAF_SPLIT_AT + 1, 30_000):
        entries = [
            fmt.Entry(b"n%06d" % i, fmt.FILE, 0o644, 0, 1, chunks=(fmt.ChunkRef(b"\1" * 32, 1),))
            for i in range(n)
        ]
        ref = MemoryPages()
        want = write_dir(entries, ref, lambda cid: _NOWHERE)
        assert _streamed(entries) == (want, ref.pages)


_CHILD = """
import json, resource, sys
from vfs.ops.commit import commit_dir
from vfs.store import Store
store = Store.open(sys.argv[1])
r = commit_dir(store, sys.argv[2], sys.argv[3], cache_dir=sys.argv[4])
print(json.dumps({"files": r.files, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _small_files(root: Path, dirs: int, per_dir: int, size: int = 64) -> Path:
    for d in range(dirs):
        sub = root / f"d{d:04d}"
        sub.mkdir(parents=True)
        for i in range(per_dir):
            (sub / f"{i:05d}").write_bytes(os.urandom(size))
    return root


def _commit_in_child(store_url: str, src: Path, dataset: str, cache_dir: str) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **{PACK_TARGET_ENV: SMALL_PACKS})
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, store_url, str(src), dataset, cache_dir],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return int(got["maxrss_kb"]) * 1024


def test_peak_memory_does_not_grow_with_the_file_count(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    Store.open(url).init()
    n = 8_000
    small = _small_files(tmp_path / "small", 8, n // 8)
    large = _small_files(tmp_path / "large", 32, n // 8)  # 4x the files
    rss_small = _commit_in_child(url, small, "small", str(tmp_path / "c1"))
    rss_large = _commit_in_child(url, large, "large", str(tmp_path / "c2"))
    # The in-memory commit held ~1.9 KB per file: 3n more files cost it ~45 MB.
    # Streaming holds the open path and bounded queues; what grows is LMDB's mapped
    # pages (the stat cache and the known chunks, ~0.3 KB per file).
    grown = rss_large - rss_small
    assert grown < 3 * n * 800, f"peak RSS grew by {grown / 1e6:.1f} MB for {3 * n} more files"


class _Boom(Exception):
    pass


class _StopAfter(Progress):
    def __init__(self, files: int) -> None:
        self.left = files

    def advance(self, files: int, nbytes: int) -> None:
        self.left -= files
        if self.left < 0:
            raise _Boom()


def test_interrupted_commit_moves_no_ref_and_a_rerun_reuses_packs(
    store: Store, tmp_path: Path, cache_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PACK_TARGET_ENV, SMALL_PACKS)
    src = _small_files(tmp_path / "src", 4, 500, size=1024)
    first = commit_dir(
        store, str(_small_files(tmp_path / "other", 1, 10)), "ds", cache_dir=cache_dir
    )
    with pytest.raises(_Boom):
        commit_dir(store, str(src), "ds", cache_dir=cache_dir, progress=_StopAfter(1500))
    head = store.read_ref("ds", HEADS, "main")
    assert head is not None and head.commit == first.commit
    packs_before = set(store.pack_ids())
    assert len(packs_before) > 2  # the interrupted commit uploaded some
    r = commit_dir(store, str(src), "ds", cache_dir=cache_dir)
    assert r.files == 2000
    assert r.new_chunks < 2000  # the chunks of the interrupted run's packs were reused
    assert packs_before <= set(store.pack_ids())
    with open_version("ds", store) as v:
        assert snapshot_version(v) == snapshot_fs(src)


def test_chunks_of_a_deleted_pack_are_not_trusted(
    store: Store, tmp_path: Path, cache_dir: str
) -> None:
    src = _small_files(tmp_path / "src", 2, 20)
    commit_dir(store, str(src), "a", cache_dir=cache_dir)
    ids = list(store.pack_ids())
    with KnownChunks(store, cache_dir, ids) as known:
        assert known.sync() == 0  # the commit folded its own packs in
    for pid in ids:  # what gc does to a pack nothing refers to
        store.backend.delete(store.index_key(pid))
        store.backend.delete(store.pack_key(pid))
    r = commit_dir(store, str(src), "b", cache_dir=cache_dir)
    assert r.new_chunks == 40
    with open_version("b", store) as v:
        assert snapshot_version(v) == snapshot_fs(src)


def test_snapshot_tree_of_a_subdirectory_is_its_tree_in_the_whole(
    store: Store, tmp_path: Path, cache_dir: str
) -> None:
    src = _awkward_tree(tmp_path / "src")
    commit_dir(store, str(src), "ds", cache_dir=cache_dir)
    rules = Rules.from_excludes(()).enter("", os.fsencode(src / os.fsdecode(IGNORE_FILE)))
    sub = snapshot_tree(store, str(src / "nested"), cache_dir=cache_dir, rules=rules, rel="nested/")
    with open_version("ds", store) as v:
        found = v.stat("nested")
    assert found is not None and sub.tree == found.entry.tree
    assert sub.ignored == 1  # nested/junk.tmp


@pytest.mark.parametrize("sig_max", [commit_ops.SIG_MAX_ENTRIES, 3])
def test_unchanged_directories_are_reused_and_changes_still_seen(
    store: Store, tmp_path: Path, cache_dir: str, monkeypatch: pytest.MonkeyPatch, sig_max: int
) -> None:
    """With sig_max 3, every directory of more than 3 entries takes the streaming road
    a directory of over 100,000 takes (signed in a pass of its own)."""
    monkeypatch.setattr(commit_ops, "SIG_MAX_ENTRIES", sig_max)
    src = _awkward_tree(tmp_path / "src")
    first = commit_dir(store, str(src), "ds", cache_dir=cache_dir)
    lookups: list[int] = []
    real = StatCache.lookup_many

    def lookup_many(self: StatCache, items: list[Any]) -> list[Any]:
        lookups.append(len(items))
        return real(self, items)

    monkeypatch.setattr(StatCache, "lookup_many", lookup_many)
    again = commit_dir(store, str(src), "ds", cache_dir=cache_dir)
    assert again.unchanged and again.tree == first.tree and again.bytes_read == 0
    # Every directory was known by its signature: no file was looked up.
    assert lookups == []
    # A change deep down reaches the root: every directory above it has a new tree.
    leaf = src / "nested" / "deeper" / "deepest" / "leaf.bin"
    leaf.write_bytes(b"changed content")
    changed = commit_dir(store, str(src), "ds", cache_dir=cache_dir)
    assert not changed.unchanged and changed.bytes_read == len(b"changed content")
    # So does a change of the rules alone, with no file touched.
    excluded = commit_dir(store, str(src), "ds", cache_dir=cache_dir, exclude=["*.png"])
    with open_version("ds", store) as v:
        got = snapshot_version(v)
    fs = snapshot_fs(src)
    assert got == {
        k: fs[k] for k in fs if "ignored-dir" not in k and not k.endswith((".tmp", ".png"))
    }
    assert excluded.tree != changed.tree
    sink = MemoryPages()
    want, _, _ = _reference_tree(src, "", Rules.from_excludes(["*.png"]), sink)
    assert excluded.tree == want


# A writer that strikes once the commit has taken the file's first chunk: in place (a
# torn file under the old stat) or by truncating it (which killed a commit reading it
# through an mmap with SIGBUS).
_WRITER_CHILD = r"""
import os, sys
from vfs import chunker
from vfs.cli import main

real, how = chunker.chunk_file, sys.argv[1]

def chunk_file(path, st):
    for i, piece in enumerate(real(path, st)):
        yield piece
        if i == 0 and os.fsdecode(path).endswith("model.ckpt"):
            fd = os.open(path, os.O_WRONLY)
            if how == "truncate":
                os.ftruncate(fd, 1000)
            else:
                os.pwrite(fd, b"torn!", st.st_size - 100)
            os.close(fd)

chunker.chunk_file = chunk_file
sys.exit(main(sys.argv[2:]))
"""
_CLI_CHILD = "import sys; from vfs.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize(
    ("size", "how"),
    [(100_000, "write"), (20 * 1024 * 1024, "write"), (20 * 1024 * 1024, "truncate")],
)
def test_a_file_written_while_it_is_committed_is_refused_not_stored_torn(
    tmp_path: Path, size: int, how: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "labels.csv").write_text("a,b\n")
    ckpt = src / "model.ckpt"
    ckpt.write_bytes(os.urandom(size))
    url = str(tmp_path / "store")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(sys.path),
        VFS_STORE=url,
        VFS_CACHE_DIR=str(tmp_path / "cache"),
        VFS_NO_PROGRESS="1",
    )

    def commit(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", *cmd], capture_output=True, text=True, env=env, timeout=120
        )

    p = commit(_WRITER_CHILD, how, "commit", str(src), "ds")
    assert p.returncode == 1, (p.returncode, p.stderr)  # not killed by SIGBUS
    assert p.stderr == f"vfs: error: {ckpt} changed while being committed; commit again\n"
    store = Store.open(url)
    try:
        assert store.read_ref("ds", HEADS, "main") is None
        # Left alone, the file is committed as it now is.
        p = commit(_CLI_CHILD, "commit", str(src), "ds")
        assert p.returncode == 0, p.stderr
        with open_version("ds", store) as v:
            assert snapshot_version(v) == snapshot_fs(src)
    finally:
        store.close()


def test_paths_longer_than_an_lmdb_key_commit_and_recommit(
    store: Store, tmp_path: Path, cache_dir: str
) -> None:
    """The stat cache keys by path, and LMDB keys stop at 511 bytes: a deeper path
    (Linux allows 4,096) crashed the commit with MDB_BAD_VALSIZE."""
    deep = tmp_path / "src"
    leaf = deep.joinpath(*[f"level_{i:02d}_{'x' * 40}" for i in range(14)])
    leaf.mkdir(parents=True)
    (leaf / "data.txt").write_text("deep\n")
    (deep / "top.txt").write_text("top\n")
    assert len(os.fsencode(leaf / "data.txt")) > 600
    first = commit_dir(store, str(deep), "ds", cache_dir=cache_dir)
    (deep / "top.txt").write_text("top, again\n")
    again = commit_dir(store, str(deep), "ds", cache_dir=cache_dir)
    assert again.bytes_read == len("top, again\n") and again.tree != first.tree
    with open_version("ds", store) as v:
        assert snapshot_version(v) == snapshot_fs(deep)


def test_a_time_past_2262_is_one_error_naming_the_file(
    store: Store, tmp_path: Path, cache_dir: str
) -> None:
    """A version holds mtimes in signed 64-bit ns; ext4 allows 2446. The commit used
    to die in struct.pack with a traceback; an excluded such file is no matter."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("ok\n")
    far = src / "far.txt"
    far.write_text("far\n")
    os.utime(far, ns=(2**63 + 10**18, 2**63 + 10**18))
    with pytest.raises(UsageError, match=r"cannot commit .*far\.txt: its modification time"):
        commit_dir(store, str(src), "ds", cache_dir=cache_dir)
    done = commit_dir(store, str(src), "ds", cache_dir=cache_dir, exclude=["far.txt"])
    assert done.files == 1
