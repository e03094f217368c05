"""The Python API (vfs.api, issue 13 item 1): os-like names, OSErrors with errno,
pickling into spawned and forked workers, threads, the shared chunk cache, and the
examples of docs/api.md run as written."""

from __future__ import annotations

import errno
import multiprocessing
import os
import pickle
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import vfs
from tests.store.apidata import Committed, commit_v3
from vfs.errors import (
    IsADirectory,
    MissingObject,
    NotADirectory,
    NotFound,
    PathNotFound,
    UsageError,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@pytest.fixture
def committed(store_url: str, tmp_path: Path) -> Committed:
    return commit_v3(store_url, tmp_path)


def _open(c: Committed) -> vfs.Version:
    return vfs.open_version("ds@v3", store=c.store_url, cache_dir=c.cache_dir)


def test_walk_matches_os_walk(committed: Committed) -> None:
    v = _open(committed)
    want = []
    for d, dirs, files in os.walk(committed.src):
        dirs.sort()
        rel = os.path.relpath(d, committed.src)
        names = sorted(files + [n for n in os.listdir(d) if os.path.islink(os.path.join(d, n))])
        want.append(("" if rel == "." else rel, list(dirs), sorted(set(names))))
    assert list(v.walk()) == want
    # A pruned dirnames skips that directory, as with os.walk.
    seen = []
    for d, dirs, _ in v.walk():
        seen.append(d)
        dirs[:] = [x for x in dirs if x != "images"]
    assert "images" not in seen and "tables" in seen


def test_names_bytes_and_stat(committed: Committed) -> None:
    v = _open(committed)
    odd = os.fsdecode(b"caf\xe9.txt")
    assert odd in v.listdir("")
    assert v.read_bytes(odd) == b"latin-1 name\n"
    for rel in ("labels.csv", "big.bin", "images/007.jpg"):
        p = committed.src / rel
        st = v.stat(rel)
        assert st.is_file() and not st.is_dir()
        assert st.st_size == p.stat().st_size
        assert st.st_mtime_ns == p.stat().st_mtime_ns
        assert st.st_mode == p.stat().st_mode
        assert v.read_bytes(rel) == p.read_bytes()
    assert v.stat("latest.csv").is_symlink()
    assert v.stat("images").is_dir() and v.stat("images").st_nfiles == 40
    assert v.stat("").is_dir()
    assert v.files("images")[:2] == ["images/000.jpg", "images/001.jpg"]
    # Writing is refused as a read-only filesystem refuses it (and as vfs:// does).
    for mode in ("w", "ab", "r+b"):
        with pytest.raises(PermissionError) as refused:
            v.open("labels.csv", mode)
        assert refused.value.errno == errno.EROFS
    with pytest.raises(ValueError):
        v.open("labels.csv", "r")  # text: read_text is the way


def test_random_access_and_readinto(committed: Committed) -> None:
    v = _open(committed)
    data = (committed.src / "big.bin").read_bytes()
    with v.open("big.bin") as f:
        for off, n in [(0, 10), (1 << 20, 70000), (len(data) - 5, 100), (len(data) + 3, 4)]:
            f.seek(off)
            assert f.read(n) == data[off : off + n]
        f.seek(-100, os.SEEK_END)
        buf = bytearray(200)
        assert f.readinto(buf) == 100 and bytes(buf[:100]) == data[-100:]
        f.seek(0)
        assert f.read() == data
    with pytest.raises(ValueError):
        f.read(1)


@pytest.mark.parametrize(
    ("path", "cls", "code", "old"),
    [
        ("nope.txt", PathNotFound, errno.ENOENT, NotFound),
        ("images/none.jpg", PathNotFound, errno.ENOENT, NotFound),
        ("labels.csv/x", NotADirectory, errno.ENOTDIR, NotFound),
        ("no/such/path", PathNotFound, errno.ENOENT, NotFound),
        ("images", IsADirectory, errno.EISDIR, UsageError),
    ],
)
def test_errors_are_oserrors_with_errno(
    committed: Committed, path: str, cls: type, code: int, old: type
) -> None:
    v = _open(committed)
    with pytest.raises(OSError) as info:
        v.open(path)
    assert type(info.value) is cls and info.value.errno == code
    assert isinstance(info.value, old)  # `except NotFound` callers keep working
    assert info.value.filename == path  # the whole path, as os.open names it
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is cls and again.errno == code and str(again) == str(info.value)
    with pytest.raises(NotADirectoryError):
        v.listdir("labels.csv")
    assert not v.exists("labels.csv/x") and not v.exists("nope")


def test_version_and_file_pickle_small(committed: Committed) -> None:
    v = _open(committed)
    v.read_bytes("labels.csv")  # opened: the pickle must still carry names only
    blob = pickle.dumps(v)
    assert len(blob) < 1000
    w = pickle.loads(blob)
    assert w.spec == v.spec and w.listdir("tables") == v.listdir("tables")
    f = v.open("big.bin")
    f.seek(12345)
    g = pickle.loads(pickle.dumps(f))
    assert g.tell() == 12345 and g.read(100) == f.read(100)


def _child_reads(args: tuple[vfs.Version, vfs.File, list[str]]) -> list[tuple[str, bytes]]:
    v, f, paths = args
    out = [(p, v.read_bytes(p)) for p in paths]
    out.append(("<file>", f.read(1000)))
    return out


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_workers_reopen_lazily(committed: Committed, method: str) -> None:
    v = _open(committed)
    paths = v.files("images")[:6]
    v.read_bytes(paths[0])  # the parent has the store and cache open before it forks
    f = v.open("big.bin")
    f.seek(500)
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        results = pool.map(_child_reads, [(v, f, paths[:3]), (v, f, paths[3:])])
    for got in results:
        for p, data in got:
            want = (committed.src / "big.bin").read_bytes()[500:1500] if p == "<file>" else None
            assert data == (want if want is not None else (committed.src / p).read_bytes())


def _child_read(args: tuple[vfs.Version, str]) -> bytes:
    v, path = args
    return v.read_bytes(path)


def test_forked_workers_share_the_cache_when_the_parent_only_listed(
    committed: Committed, tmp_path: Path
) -> None:
    """The parent of a forking DataLoader lists, its workers read: the cache opens
    on the first read of bytes, so the forked workers can open and fill it."""
    from vfs.cache import ChunkCache

    cache_dir = str(tmp_path / "fork-cache")
    v = vfs.open_version("ds@v3", store=committed.store_url, cache_dir=cache_dir)
    paths = v.files("images")
    assert v.stat(paths[0]).is_file()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        got = pool.map(_child_read, [(v, p) for p in paths])
    assert got == [(committed.src / p).read_bytes() for p in paths]
    ids: set[bytes] = set()
    for p in paths:
        found = v.reader.stat(p)
        assert found is not None
        ids.update(w.ref.id for w in v.reader.wanted(found))
    with ChunkCache(cache_dir) as c:
        assert c.contains_many(ids) == ids  # the workers filled the machine's cache


def test_threads_share_a_version_and_a_file(committed: Committed) -> None:
    v = _open(committed)
    paths = v.files("images")
    data = (committed.src / "big.bin").read_bytes()
    f = v.open("big.bin")

    def one(i: int) -> bool:
        p = paths[i % len(paths)]
        ok = v.read_bytes(p) == (committed.src / p).read_bytes()
        off = (i * 7919) % len(data)
        with v.open("big.bin") as g:
            g.seek(off)
            ok = ok and g.read(5000) == data[off : off + 5000]
        return ok

    def shared(i: int) -> bool:
        buf = f.read(1024)  # each read is atomic: 64 reads cover the head exactly once
        return len(buf) == 1024

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(200)))
        assert all(pool.map(shared, range(64)))
    assert f.tell() == 64 * 1024


def test_reads_fill_and_then_use_the_shared_cache(
    committed: Committed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vfs.cache import ChunkCache

    monkeypatch.setenv("VFS_API_MEMORY", "0")  # else the second reads come from memory
    cache_dir = str(tmp_path / "fresh-cache")
    v = vfs.open_version("ds@v3", store=committed.store_url, cache_dir=cache_dir)
    for p in v.files("images"):
        v.read_bytes(p)
    cold = v.reader.chunks.requests
    assert cold > 0
    w = pickle.loads(pickle.dumps(v))  # another Version of the machine's cache
    for p in w.files("images"):
        assert w.read_bytes(p) == (committed.src / p).read_bytes()
    assert w.reader.chunks.requests == 0  # every chunk came from the cache
    with ChunkCache(cache_dir) as c:
        assert c.stats().entries >= 40


@pytest.mark.parametrize("budget", ["64M", "0"])
def test_second_reads_come_from_the_process_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: str
) -> None:
    """Chunks read once stay in the process's memory (VFS_API_MEMORY, 0 for none), as
    the page cache keeps them for a mount: with the store gone and no disk cache, a
    second read still answers; without the memory it must go to the store and fails."""
    monkeypatch.setenv("VFS_API_MEMORY", budget)
    store = tmp_path / "store"
    c = commit_v3(str(store), tmp_path)
    v = vfs.open_version("ds@v3", store=c.store_url, cache_dir="")
    paths = v.files("images")
    want = {p: v.read_bytes(p) for p in paths}
    store.rename(tmp_path / "store-gone")
    if budget == "0":
        with pytest.raises(MissingObject):
            v.read_bytes(paths[0])
        return
    for p in paths:
        assert v.read_bytes(p) == want[p] == (c.src / p).read_bytes()
    assert v.stat(paths[0]).st_size == len(want[paths[0]])  # names are remembered too


def test_docs_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ```python block of docs/api.md, in order, in one namespace, against the
    default store of the environment (as a user would run them)."""
    c = commit_v3(str(tmp_path / "store"), tmp_path)
    monkeypatch.setenv("VFS_STORE", c.store_url)
    monkeypatch.setenv("VFS_CACHE_DIR", c.cache_dir)
    fsspec = pytest.importorskip("fsspec")
    try:
        fsspec.get_filesystem_class("vfs")
    except ValueError:  # a venv installed before the entry point (test_fsspec.py)
        fsspec.register_implementation("vfs", "vfs.fsspec.VfsFileSystem")
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) >= 6
    ns: dict[str, object] = {}
    for block in blocks:
        needs = re.findall(r"^(?:import|from) (\w+)", block, re.M)
        for mod in needs:
            if mod in ("pandas", "pyarrow", "torch", "fsspec"):
                pytest.importorskip(mod)
        exec(compile(block, str(DOCS), "exec"), ns)


def test_locked_reads_what_the_lock_file_pins(
    committed: Committed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vfs lock ds@main` in a project, then main moves: locked=True still reads
    the locked version, from the store the lock names (issue 13, item 4)."""
    from vfs.ops.commit import commit_dir
    from vfs.ops.lock import lock_specs
    from vfs.store import Store
    from vfs.torch import VfsDataset

    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    store = Store.open(committed.store_url)
    try:
        lock_specs(store, ["ds@main"], str(project / "vfs.lock"))
        first = vfs.open_version(
            "ds@main", store=committed.store_url, cache_dir=committed.cache_dir
        )
        (committed.src / "labels.csv").write_text("moved\n")
        commit_dir(store, str(committed.src), "ds", cache_dir=committed.cache_dir)
    finally:
        store.close()
    monkeypatch.chdir(project / "src")  # the lock is found above, as git finds .git
    monkeypatch.delenv("VFS_STORE", raising=False)
    v = vfs.open_version("ds", cache_dir=committed.cache_dir, locked=True)
    assert v.spec == first.spec and v.store_url.removeprefix("file://") == committed.store_url
    assert v.read_text("labels.csv") != "moved\n"
    assert vfs.open_version("ds@main", store=committed.store_url).read_text("labels.csv") == (
        "moved\n"
    )
    ds: VfsDataset[object] = VfsDataset("ds", cache_dir=committed.cache_dir, locked=str(project))
    assert ds.version.spec == first.spec
    with pytest.raises(UsageError):
        vfs.open_version("ds@v3", locked=True)  # a ref other than the locked one
