"""`vfs gc`, repack and leases on real backends (a local store and SeaweedFS)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.core import read_all, run_core, walk_path
from vfs import format as fmt
from vfs import leases, refs, tree
from vfs.access import AccessRecorder
from vfs.backends.base import Backend
from vfs.backends.faults import Fault, FaultControl
from vfs.backends.metadata import locs_cache_key
from vfs.cache import ChunkCache
from vfs.errors import VfsError
from vfs.leases import GcLock, GcRunning, LeaseLost
from vfs.ops import gc as gc_op
from vfs.ops import lineage
from vfs.ops.commit import Progress, commit_dir
from vfs.ops.get import get
from vfs.ops.prefetch import warm
from vfs.ops.verify import Verifier
from vfs.reader import Version
from vfs.store import HEADS, TAGS, Store

ROOT = Path(__file__).resolve().parents[2]
PREFIXES = ("objects/", "locs/", "packs/", "index/")


@pytest.fixture(autouse=True)
def _small_packs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VFS_PACK_TARGET", str(64 * 1024))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store.open(store_url)
    yield s
    s.close()


def _write(d: Path, files: dict[str, bytes]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def _listing(store: Store) -> dict[str, int]:
    return {i.key: i.size for p in PREFIXES for i in store.backend.list_info(p)}


def _reachable_keys(store: Store) -> set[str]:
    """What the refs reach, walked here with tree.pages (not gc's own walker)."""
    keys: set[str] = set()
    todo = [
        cid
        for ds in store.datasets()
        for kind in (HEADS, TAGS)
        for cid in store.refs(ds, kind).values()
    ]
    seen: set[bytes] = set()
    while todo:
        cid = todo.pop()
        if cid in seen:
            continue
        seen.add(cid)
        keys.add(store.object_key(cid))
        c = store.get_commit(cid)
        todo.extend(c.parents)
        for page in tree.pages(store, c.tree):
            keys.add(store.object_key(page.id))
            if page.kind == 0:
                keys.add(store.locs_key(page.id))
                for loc in store.fetch_locs(page.id).values():
                    keys.add(store.pack_key(loc.pack))
                    keys.add(store.index_key(loc.pack))
    return keys


def _unreachable_bytes(store: Store) -> int:
    live = _reachable_keys(store)
    return sum(size for key, size in _listing(store).items() if key not in live)


def _objects_freed(report: gc_op.GcReport) -> int:
    """Bytes freed but those of ref-log entries (`_unreachable_bytes` counts objects)."""
    return report.bytes_freed - report.freed["reflog"].bytes


def _verify_all(store: Store) -> None:
    res = Verifier(store).verify_refs()
    assert res.ok, [d.to_json() for d in res.damaged]
    assert res.commits > 0


def _three_versions_and_a_dead_branch(store: Store, tmp_path: Path, cache: str) -> None:
    src = tmp_path / "src"
    for i in range(3):
        _write(src, {"a.bin": os.urandom(100_000 + i), "note.txt": f"v{i}\n".encode()})
        commit_dir(store, str(src), "ds", message=f"v{i}", cache_dir=cache)
    _write(src, {"big.bin": os.urandom(200_000)})
    commit_dir(store, str(src), "ds", branch="exp", cache_dir=cache)
    store.delete_branch("ds", "exp")


def test_dry_run_deletes_nothing_and_gc_frees_exactly_the_unreachable(
    store: Store, tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache")
    _three_versions_and_a_dead_branch(store, tmp_path, cache)
    before = _listing(store)
    garbage = _unreachable_bytes(store)
    assert garbage > 200_000

    # With the default grace everything is young: nothing to free.
    young = gc_op.gc(store, dry_run=True)
    assert young.bytes_freed == 0  # the ref log keeps the dead branch, and all is young
    dry = gc_op.gc(store, grace=0, dry_run=True, repack_below=None)
    assert _objects_freed(dry) == garbage
    assert _listing(store) == before
    assert not list(store.backend.list("locks/"))

    real = gc_op.gc(store, grace=0, repack_below=None)
    assert _objects_freed(real) == garbage
    assert real.freed["packs"].objects > 0 and real.freed["objects"].objects >= 2
    after = _listing(store)
    assert sum(before.values()) - sum(after.values()) == garbage
    assert _unreachable_bytes(store) == 0
    assert not list(store.backend.list("locks/"))
    _verify_all(store)
    again = gc_op.gc(store, grace=0)
    assert again.bytes_freed == 0


def test_repack_keeps_every_version_readable_through_stale_locations(
    store: Store, tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache")
    big, small = os.urandom(200_000), os.urandom(10_000)
    src = tmp_path / "src"
    # `old` packs big and small together; main reuses small from that pack; then
    # `old` goes, leaving a pack whose live share is small.
    _write(src, {"a_small.bin": small, "z_big.bin": big})
    commit_dir(store, str(src), "ds", branch="old", cache_dir=cache)
    _write(src, {"a_small.bin": small, "other.bin": b"x" * 100})
    commit_dir(store, str(src), "ds", cache_dir=cache)
    store.delete_branch("ds", "old")

    # A reader that holds the old locations, in memory and in the machine's cache.
    stale = Store.open(store.url)
    chunk_cache = ChunkCache(tmp_path / "chunks")
    stale.use_cache(chunk_cache)
    head = stale.read_ref("ds", HEADS, "main")
    assert head is not None
    v = Version(stale, "ds", head.commit)  # chunks not cached: they come from packs
    assert v.read_file("a_small.bin") == small
    old_packs = {k for k in _listing(store) if k.startswith("packs/")}
    # Another machine's cache that holds the old locations but no chunk yet.
    other_cache = ChunkCache(tmp_path / "chunks-other")
    other = Store.open(store.url)
    other.use_cache(other_cache)
    leaves = [p.id for p in tree.pages(other, v.root) if p.kind == fmt.LEAF]
    for leaf in leaves:
        other.get_locs(leaf)
    other.close()

    report = gc_op.gc(store, grace=0)
    assert report.packs_repacked >= 1 and report.packs_written >= 1
    assert report.bytes_rewritten >= len(small)
    assert old_packs - {k for k in _listing(store) if k.startswith("packs/")}

    assert v.read_file("a_small.bin") == small  # memory held the old locations
    v2 = Store.open(store.url)
    v2.use_cache(chunk_cache)  # the machine's cache held them
    try:
        assert Version(v2, "ds", head.commit).read_file("a_small.bin") == small
        assert Version(v2, "ds", head.commit).read_file("other.bin") == b"x" * 100
        v3 = Store.open(store.url)
        v3.use_cache(chunk_cache)  # `vfs get` with the machine's cache
        try:
            get(Version(v3, "ds", head.commit), "", str(tmp_path / "out"))
        finally:
            v3.close()
        assert (tmp_path / "out" / "a_small.bin").read_bytes() == small
        # The reload replaced the machine's copy: the next process reads fresh ones.
        for leaf in leaves:
            kept = chunk_cache.get(locs_cache_key(leaf))
            assert kept is not None
            assert fmt.decode_locs(kept) == store.fetch_locs(leaf)
        # `vfs prefetch` through a cache holding old locations recovers as reads do.
        again = Store.open(store.url)
        again.use_cache(other_cache)
        try:
            warmed = warm(Version(again, "ds", head.commit, other_cache), [""])
            assert warmed.bytes_fetched >= len(small)
            found = v.stat("a_small.bin")
            assert found is not None
            assert other_cache.get(v.wanted(found)[0].ref.id) == small
        finally:
            again.close()
    finally:
        v2.close()
        stale.close()
        chunk_cache.close()
        other_cache.close()
    _verify_all(store)
    assert _unreachable_bytes(store) == 0


def test_a_pack_whose_live_bytes_are_damaged_is_not_repacked_and_gc_goes_on(
    store: Store, tmp_path: Path
) -> None:
    """Moving damaged bytes would spread the damage, and stopping would keep gc from
    ever sweeping: the pack stays, named, and the rest of gc is done."""
    cache = str(tmp_path / "cache")
    small = os.urandom(10_000)
    src = tmp_path / "src"
    _write(src, {"a_small.bin": small, "z_big.bin": os.urandom(200_000)})
    commit_dir(store, str(src), "ds", branch="old", cache_dir=cache)
    _write(src, {"a_small.bin": small, "other.bin": b"x" * 100})
    commit_dir(store, str(src), "ds", cache_dir=cache)
    store.delete_branch("ds", "old")
    head = store.read_ref("ds", HEADS, "main")
    assert head is not None
    v = Version(store, "ds", head.commit)
    found = v.stat("a_small.bin")
    assert found is not None
    loc = v.wanted(found)[0].loc
    key = store.pack_key(loc.pack)
    data = bytearray(store.backend.get(key))
    data[loc.offset + loc.stored_length // 2] ^= 0xFF
    store.backend.put(key, bytes(data))

    report = gc_op.gc(store, grace=0)
    assert report.damaged_packs == [key] and report.packs_repacked == 0, report
    assert key in _listing(store)  # main still needs it: only verify can tell more
    assert _objects_freed(report) > 0  # the old branch's commit and pages went
    assert report.to_json()["repack"]["damaged_packs"] == [key]  # type: ignore[index]


def test_a_gc_that_listed_before_another_ended_counts_only_what_it_freed(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two gc runs a second apart: the second listed the store before the first
    deleted its garbage, then took the lock after it; it reported freeing the same
    objects again. It now lists again when a gc ended since its listing."""
    cache = str(tmp_path / "cache")
    _three_versions_and_a_dead_branch(store, tmp_path, cache)
    real = gc_op.list_objects
    calls: list[int] = []

    def list_objects(s: Store) -> dict[str, Any]:
        got = real(s)
        calls.append(len(got))
        if len(calls) == 1:  # the outer gc has listed: another gc runs to its end now
            first = gc_op.gc(Store.open(store.url), grace=0, repack_below=None)
            assert _objects_freed(first) > 0
        return got

    monkeypatch.setattr(gc_op, "list_objects", list_objects)
    second = gc_op.gc(store, grace=0, repack_below=None)
    assert len(calls) == 3 and calls[2] < calls[0], calls  # outer, inner, outer again
    assert _objects_freed(second) == 0, second.to_json()
    _verify_all(store)


def test_a_mount_reads_on_across_a_repack(store: Store, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    big, small = os.urandom(200_000), os.urandom(10_000)
    src = tmp_path / "src"
    _write(src, {"a_small.bin": small, "z_big.bin": big})
    commit_dir(store, str(src), "ds", branch="old", cache_dir=cache)
    _write(src, {"a_small.bin": small})
    commit_dir(store, str(src), "ds", cache_dir=cache)
    store.delete_branch("ds", "old")

    mounted = Store.open(store.url)
    chunk_cache = ChunkCache(tmp_path / "chunks", 1 << 30)
    reports: list[gc_op.GcReport] = []

    async def body(core: Any) -> None:
        attr = await walk_path(core, "a_small.bin")
        fh = await core.open(attr.ino, os.O_RDONLY)  # placed by the old locations
        reports.append(await trio.to_thread.run_sync(lambda: gc_op.gc(store, grace=0)))
        assert await core.read(fh, 0, len(small) + 1) == small
        core.release(fh)
        assert await read_all(core, attr.ino) == small

    try:
        run_core(mounted, "ds@main", body, cache=chunk_cache)
    finally:
        chunk_cache.close()
        mounted.close()
    assert reports[0].packs_repacked == 1
    _verify_all(store)


def test_committer_waits_for_a_live_gc_lock(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = str(tmp_path / "cache")
    src = _write(tmp_path / "src", {"a": b"1"})
    store.init()  # a gc runs only on a store: its lock never lands in a bare directory
    lock = GcLock(store.backend)
    lock.acquire()
    done: list[bytes] = []

    def run() -> None:
        s = Store.open(store.url)
        try:
            done.append(commit_dir(s, str(src), "ds", cache_dir=cache).commit)
        finally:
            s.close()

    with caplog.at_level(logging.WARNING, logger="vfs.ops.commit"):
        t = threading.Thread(target=run)
        t.start()
        while not any("waiting for gc on" in r.getMessage() for r in caplog.records):
            assert t.is_alive()
            time.sleep(0.02)
        assert store.read_ref("ds", HEADS, "main") is None
        assert not list(store.backend.list(leases.COMMIT_PREFIX))  # it withdrew its lease
        lock.release()
        t.join()
    assert done and store.read_ref("ds", HEADS, "main") is not None
    assert not list(store.backend.list("locks/"))


def test_commit_whose_lease_was_deleted_aborts_before_moving_its_ref(
    store: Store, tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache")
    src = _write(tmp_path / "src", {"a": b"1"})
    first = commit_dir(store, str(src), "ds", cache_dir=cache).commit
    _write(src, {"a": b"2"})

    class GcJudgedItExpired(Progress):
        def phase(self, text: str) -> None:
            if text == "writing commit":
                for key in list(store.backend.list(leases.COMMIT_PREFIX)):
                    store.backend.delete(key)

    with pytest.raises(LeaseLost, match="lease expired while it was paused"):
        commit_dir(store, str(src), "ds", cache_dir=cache, progress=GcJudgedItExpired())
    head = store.read_ref("ds", HEADS, "main")
    assert head is not None and head.commit == first


def test_gc_lock_excludes_and_an_expired_one_is_taken_over(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(leases.TTL_ENV, "0.5")
    first = GcLock(store.backend)
    first.acquire()
    first.lease._stop.set()  # a gc that was killed: no more heartbeats
    with pytest.raises(GcRunning, match="another gc is running"):
        GcLock(store.backend).acquire()
    holder = leases.read_holder(store.backend, leases.GC_KEY)
    assert holder is not None
    while holder.live():
        time.sleep(0.05)
    second = GcLock(store.backend)
    second.acquire()
    with pytest.raises(LeaseLost):
        first.check()  # the old holder notices before its next batch of deletes
    second.check()
    second.release()
    assert leases.read_holder(store.backend, leases.GC_KEY) is None


def _gc_cli(store_url: str, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "vfs.cli", "gc", "--store", store_url, *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_kill_9_during_gc_then_a_rerun_finishes(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    store = Store.open(url)
    cache = str(tmp_path / "cache")
    src = tmp_path / "src"
    for i in range(4):
        _write(src, {f"f{j}": os.urandom(20_000) for j in range(4)} | {"i": bytes([i])})
        commit_dir(store, str(src), "ds", branch=f"b{i}", cache_dir=cache)
    for i in range(3):
        store.delete_branch("ds", f"b{i}")
    garbage = _unreachable_bytes(store)
    before = len(_listing(store))

    control = FaultControl(tmp_path / "faults")
    control.set(Fault("latency", ops=("delete",), seconds=0.3), record=False)
    env = {"VFS_FAULTS": str(control.dir), "VFS_LEASE_TTL": "2"}
    p = _gc_cli(url, "--grace", "0", "--no-repack", env=env)
    while len(_listing(store)) == before:  # wait until the sweep has begun
        assert p.poll() is None, p.communicate()
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert before - len(_listing(store)) > 0
    assert leases.read_holder(store.backend, leases.GC_KEY) is not None  # left behind

    control.clear(record=False)
    # The killed gc's lock has not expired, but its process has ended: taken over at once.
    rerun = _gc_cli(url, "--grace", "0", "--no-repack", "--json", env=env)
    out, err = rerun.communicate()
    assert rerun.returncode == 0, err
    assert json.loads(out)["bytes_freed"] > 0
    assert _unreachable_bytes(store) == 0
    assert garbage > 0
    assert not list(store.backend.list("locks/"))
    _verify_all(store)
    store.close()


def test_gc_in_a_loop_beside_four_committers(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(leases.TTL_ENV, "20")
    stop = threading.Event()
    errors: list[BaseException] = []
    made: dict[str, list[bytes]] = {}

    def committer(i: int) -> None:
        s = Store.open(s3_url)
        ds = f"ds{i % 3}"  # several datasets, two writers share one
        branch = f"w{i}"
        src = tmp_path / f"src{i}"
        n = 0
        try:
            while not stop.is_set() or n < 3:
                files = {f"f{j}": os.urandom(5_000 + n) for j in range(3)}
                files["shared"] = b"s" * 30_000  # a chunk every writer shares
                _write(src, files)
                r = commit_dir(s, str(src), ds, branch=branch, cache_dir=str(tmp_path / f"c{i}"))
                made.setdefault(f"{ds}@{branch}", []).append(r.commit)
                if n % 2 == 1:  # a side branch made and deleted: its commits die
                    commit_dir(s, str(src), ds, branch=f"tmp{i}", cache_dir=str(tmp_path / f"c{i}"))
                    s.delete_branch(ds, f"tmp{i}")
                n += 1
        except BaseException as e:
            errors.append(e)
        finally:
            s.close()

    first = Store.open(s3_url)
    first.init()  # gc, which may run before the first commit, needs a store
    first.close()
    threads = [threading.Thread(target=committer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    store = Store.open(s3_url)
    try:
        runs = freed = 0
        while runs < 4 or not made or not freed:
            freed += gc_op.gc(store, grace=0, wait=60).bytes_freed
            runs += 1
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors
        garbage = _unreachable_bytes(store)
        final = gc_op.gc(store, grace=0, repack_below=None)
        assert _objects_freed(final) == garbage
        assert _unreachable_bytes(store) == 0
        _verify_all(store)
        # Every commit reported as made is still in its branch's history.
        for spec, commits in made.items():
            ds, branch = spec.split("@")
            head = store.read_ref(ds, HEADS, branch)
            assert head is not None
            seen, todo = set(), [head.commit]
            while todo:
                cid = todo.pop()
                seen.add(cid)
                todo.extend(store.get_commit(cid).parents)
            assert set(commits) <= seen
        assert not list(store.backend.list("locks/"))
    finally:
        stop.set()
        store.close()


def test_gc_refuses_while_a_commit_never_finishes(store: Store) -> None:
    store.init()
    lease = leases.Lease(store.backend, f"{leases.COMMIT_PREFIX}stuck")
    assert lease.create()
    with pytest.raises(VfsError, match="gave up after waiting"):
        gc_op.gc(store, grace=0, wait=0.2)
    assert leases.read_holder(store.backend, leases.GC_KEY) is None  # released
    lease.release()


def test_the_lease_of_a_commit_whose_process_ended_does_not_hold_up_gc(store: Store) -> None:
    """A commit that failed on a network error cannot delete its lease: on its own
    machine gc sees that the process ended, and does not wait out the 10-minute TTL.
    A running process's lease, or one written on another machine, still holds it up."""
    store.init()
    child = subprocess.run(
        [sys.executable, "-c", _LEASE_CHILD, store.url],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = child.stdout.strip()
    dead = leases.read_holder(store.backend, key)
    assert dead is not None and dead.gone() and not dead.live()
    raw = json.loads(store.backend.get(key))
    gc_op.gc(store, grace=0, wait=5)  # waiting, it would give up after 5 s
    assert leases.read_holder(store.backend, key) is None

    mine = leases.Lease(store.backend, f"{leases.COMMIT_PREFIX}running")
    assert mine.create()
    here = leases.read_holder(store.backend, mine.key)
    assert here is not None and here.live() and not here.gone()
    elsewhere = f"{leases.COMMIT_PREFIX}elsewhere"  # the dead pid, on another machine
    store.backend.put(elsewhere, json.dumps({**raw, "boot": "another-boot"}).encode())
    other = leases.read_holder(store.backend, elsewhere)
    assert other is not None and other.pid == dead.pid and other.live() and not other.gone()
    mine.release()
    store.backend.delete(elsewhere)


# A committer that takes its lease and dies without releasing it.
_LEASE_CHILD = r"""
import os, sys
from vfs import leases
from vfs.store import Store
s = Store.open(sys.argv[1])
lease = leases.Lease(s.backend, leases.COMMIT_PREFIX + "crashed")
assert lease.create()
print(lease.key, flush=True)
os._exit(0)
"""


def test_backend_lists_sizes_and_times_and_deletes_in_batches(backend: Backend) -> None:
    t0 = time.time()
    for i in range(5):
        backend.put(f"gcx/{i}", b"x" * i)
    got = {i.key: i for i in backend.list_info("gcx/")}
    assert {k: i.size for k, i in got.items()} == {f"gcx/{i}": i for i in range(5)}
    # The store's clock and ours may differ a little; gc relies on them agreeing.
    assert all(abs(i.mtime - t0) < 60 for i in got.values())
    backend.delete_many(["gcx/0", "gcx/1", "gcx/missing"])
    assert sorted(backend.list("gcx/")) == ["gcx/2", "gcx/3", "gcx/4"]
    backend.delete_many([])


def _age_everything(root: Path, seconds: float) -> None:
    then = time.time() - seconds
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, (then, then))


def _backdate_reflog(store: Store, seconds: float) -> int:
    """Move every ref-log entry `seconds` into the past (an entry's age is in its name)."""
    n = 0
    for key in list(store.backend.list("reflog/")):
        head, _, name = key.rpartition("/")
        ns, _, rand = name.partition("-")
        data = store.backend.get(key)
        store.backend.put(f"{head}/{int(ns) - int(seconds * 1e9):020d}-{rand}", data)
        store.backend.delete(key)
        n += 1
    return n


def test_a_young_ref_log_entry_keeps_a_deleted_branch_until_the_grace_passes(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    store = Store.open(str(root))
    cache = str(tmp_path / "cache")
    src = _write(tmp_path / "src", {"a": os.urandom(50_000)})
    commit_dir(store, str(src), "ds", cache_dir=cache)
    _write(src, {"b": os.urandom(70_000)})
    dead = commit_dir(store, str(src), "ds", branch="exp", cache_dir=cache).commit
    store.delete_branch("ds", "exp")  # the ref log records it, with the id it held
    _age_everything(root, 2 * 86400)  # every object is past a one-hour grace

    kept = gc_op.gc(store, grace=3600)
    assert kept.bytes_freed == 0 and kept.kept_restorable == 1  # and the report says so
    assert Verifier(store).verify_version(dead, history=True).ok  # restorable by its id

    entries = _backdate_reflog(store, 2 * 86400)
    assert entries >= 3
    freed = gc_op.gc(store, grace=3600)
    # Past the grace period the entries keep nothing alive, but stay as history...
    assert freed.freed["reflog"].objects == 0
    assert freed.freed["packs"].objects >= 1 and freed.freed["objects"].objects >= 2
    assert not store.has_object(dead)
    # Restoring by the id a delete printed says what became of it.
    with pytest.raises(VfsError, match="no longer in the store: gc collected it"):
        refs.resolve(store, f"ds@{dead.hex()[:12]}")
    assert len(list(store.backend.list("reflog/"))) == entries
    _verify_all(store)
    # ...until they are older than REFLOG_KEEP (90 days).
    _backdate_reflog(store, 91 * 86400)
    expired = gc_op.gc(store, grace=3600)
    assert expired.freed["reflog"].objects == entries
    assert not list(store.backend.list("reflog/"))
    store.close()


def test_another_datasets_id_is_not_in_the_history_after_gc(tmp_path: Path) -> None:
    """The history walk passes a collected commit a young ref log entry still names:
    another dataset's id is "not in the history", not a missing object."""
    store = Store.open(str(tmp_path / "store"))
    cache = str(tmp_path / "cache")
    src = _write(tmp_path / "src", {"a": b"a"})
    commit_dir(store, str(src), "ds", cache_dir=cache)
    _write(src, {"b": b"b"})
    dead = commit_dir(store, str(src), "ds", branch="exp", cache_dir=cache).commit
    store.delete_branch("ds", "exp")
    gc_op.gc(store, grace=0)
    assert not store.has_object(dead)
    other = commit_dir(store, str(_write(tmp_path / "o", {"o": b"o"})), "other", cache_dir=cache)
    with pytest.raises(VfsError, match="is not in the history of ds"):
        refs.resolve(store, f"ds@{other.commit.hex()[:12]}")
    store.close()


def test_an_access_record_a_commit_attaches_survives_gc(store: Store, tmp_path: Path) -> None:
    """A model version's access record (an object only its commit's meta names,
    `vfs.access`) is live as long as the commit is."""
    cache = str(tmp_path / "cache")
    data = _write(tmp_path / "data", {"a.bin": os.urandom(1000), "b.bin": os.urandom(10)})
    ds = commit_dir(store, str(data), "ds", cache_dir=cache)
    recorder = AccessRecorder()
    recorder.add("ds", ds.commit, "a.bin", 0, 1000)
    recorder.save(str(tmp_path / "run.json"))
    model = _write(tmp_path / "model", {"w": b"weights"})
    meta = lineage.commit_meta(store, str(model), [], [str(tmp_path / "run.json")])
    commit_dir(store, str(model), "model", meta=meta, cache_dir=cache)

    gc_op.gc(store, grace=0)
    _, versions = lineage.inputs_read(store, "model")
    assert [f.path for v in versions for f in v.files] == ["a.bin"]


def test_a_gc_after_one_with_no_grace_is_quiet_about_what_that_one_collected(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = str(tmp_path / "cache")
    src = _write(tmp_path / "src", {"a": b"1"})
    commit_dir(store, str(src), "keep", cache_dir=cache)
    commit_dir(store, str(_write(tmp_path / "x", {"b": b"2"})), "scratch", cache_dir=cache)
    store.delete_branch("scratch", "main")
    gc_op.gc(store, grace=0)  # collects scratch's commit; its young ref-log entries stay
    with caplog.at_level(logging.INFO, logger="vfs.ops.gc"):
        gc_op.gc(store, grace=3600)
    said = [r for r in caplog.records if "named by the ref log is gone" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO, said  # once, not a warning
