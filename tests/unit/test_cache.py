"""The machine-wide chunk cache (vfs/cache/): real files, real LMDB, real processes.

Most tests here make every put its own segment (the `one_chunk_segments` fixture), so
that eviction by segment is eviction by chunk and the LRU rules show plainly;
tests/unit/test_segcache.py tests segments of many chunks."""

from __future__ import annotations

import errno
import fcntl
import logging
import multiprocessing as mp
import os
import random
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import blake3
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from vfs.cache import ChunkCache, VerifyReport
from vfs.cache import chunks as cache_mod
from vfs.cache import files as files_mod
from vfs.cache import index as index_mod
from vfs.defaults import default_cache_dir
from vfs.errors import UsageError, VfsError

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

KiB = 1024
MiB = 1024 * KiB


def make_chunk(seed: int, max_size: int = 64 * KiB) -> tuple[bytes, bytes]:
    """A deterministic chunk (id, data), so child processes need no data from us."""
    rng = random.Random(seed)
    data = rng.randbytes(rng.randint(1, max_size))
    return blake3.blake3(data).digest(), data


def sized_chunk(seed: int, size: int) -> tuple[bytes, bytes]:
    data = random.Random(seed).randbytes(size)
    return blake3.blake3(data).digest(), data


def tiny_chunk(i: int) -> tuple[bytes, bytes]:
    data = i.to_bytes(8, "big")
    return blake3.blake3(data).digest(), data


def segment_files(root: Path) -> dict[str, int]:
    """Segment files on disk -> size."""
    return {f.name: f.stat().st_size for f in (root / "segments").iterdir()}


def extent(c: ChunkCache, cid: bytes) -> tuple[Path, int, int]:
    """(segment file, offset, size) of a cached chunk, from the index."""
    env = c._live()
    raw = env.run(lambda txn: txn.get(cid, db=env.dbs.entries), write=False)
    assert raw is not None
    e = index_mod.Entry.unpack(raw)
    return Path(c._files.path(e.seg)), e.offset, e.size


def cached_ids(c: ChunkCache) -> list[bytes]:
    env = c._live()
    return env.run(lambda txn: list(txn.cursor(db=env.dbs.entries).iternext(values=False)), False)


def damage(c: ChunkCache, cid: bytes, how: str) -> Path:
    """Damage a cached chunk's bytes in its segment: flip a byte, cut the segment short
    inside the chunk, zero the chunk, or delete the segment. Returns the segment."""
    path, off, size = extent(c, cid)
    if how == "flip":
        with open(path, "r+b") as f:
            f.seek(off + size // 2)
            b = f.read(1)
            f.seek(off + size // 2)
            f.write(bytes([b[0] ^ 0x40]))
    elif how == "truncate":
        os.truncate(path, off + size - 1)
    elif how == "zero":
        with open(path, "r+b") as f:
            f.seek(off)
            f.write(bytes(size))
    else:
        path.unlink()
        # An fd this process still holds would serve the (right) bytes of the
        # unlinked file; what is tested is a reader that opens it afterwards.
        c._files.forget([int(path.stem, 16)])
    return path


def assert_consistent(c: ChunkCache, root: Path, killed: bool = False) -> None:
    """Index totals equal the segments on disk, and a fresh verify finds nothing.
    After a kill -9, segments may hold bytes their writer never indexed."""
    report = c.verify(repair=False, orphan_grace=0)
    assert report.clean, report
    files = segment_files(root)
    st = c.stats()
    assert st.entries == report.checked
    assert st.segments == len(files) == report.segments
    if killed:
        assert st.bytes <= sum(files.values())
    else:
        assert st.bytes == sum(files.values())


@pytest.fixture(autouse=True)
def one_chunk_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every put gets a segment of its own (in this process)."""
    monkeypatch.setattr(files_mod, "SEGMENT_BYTES", 1)
    monkeypatch.setattr(files_mod, "MIN_SEGMENT_BYTES", 1)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def cache(root: Path) -> Iterator[ChunkCache]:
    c = ChunkCache(root, max_bytes=1 * MiB)
    yield c
    c.close()


# -- basics ---------------------------------------------------------------------------


def test_round_trip_and_reopen(root: Path) -> None:
    cid, data = make_chunk(1)
    with ChunkCache(root) as c:
        c.put(cid, data)
        assert c.contains(cid)
        assert c.get(cid) == data
    with ChunkCache(root) as c:
        assert c.get(cid) == data
        path, off, size = extent(c, cid)
        assert path.read_bytes()[off : off + size] == data
        assert_consistent(c, root)


def test_get_absent_is_none(cache: ChunkCache) -> None:
    cid, _ = make_chunk(2)
    assert cache.get(cid) is None
    assert not cache.contains(cid)
    assert cache.stats().misses == 1


def test_bad_arguments(cache: ChunkCache, root: Path) -> None:
    with pytest.raises(UsageError):
        cache.get(b"short")
    with pytest.raises(UsageError):
        cache.pin("", [])
    with pytest.raises(UsageError):
        ChunkCache(root, max_bytes=0)
    with pytest.raises(UsageError):
        ChunkCache(root, low_water=1.5)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VFS_CACHE_DIR", "/somewhere/else")
    assert default_cache_dir() == "/somewhere/else"
    monkeypatch.delenv("VFS_CACHE_DIR")
    assert default_cache_dir() == os.path.expanduser("~/.cache/vfs")


def test_stats_counters(cache: ChunkCache, root: Path) -> None:
    chunks = [make_chunk(i) for i in range(3)]
    for cid, data in chunks:
        cache.put(cid, data)
    cache.put(*chunks[0])  # again: no second entry, nothing inserted
    assert cache.get(chunks[0][0]) == chunks[0][1]
    assert cache.get(chunks[1][0]) == chunks[1][1]
    assert cache.get(make_chunk(99)[0]) is None
    st = cache.stats()
    total = sum(len(d) for _, d in chunks)
    assert (st.entries, st.bytes, st.bytes_inserted) == (3, total, total)
    assert (st.hits, st.misses, st.evictions, st.corrupt_evicted) == (2, 1, 0, 0)
    assert st.root == str(root) and st.max_bytes == 1 * MiB
    cache.flush()  # counted in the index now, not only in this process
    with ChunkCache(root) as other:
        assert (other.stats().hits, other.stats().misses) == (2, 1)


def test_hits_are_batched(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_mod, "FLUSH_SECONDS", 3600.0)  # however slow this machine is
    a = ChunkCache(root)
    b = ChunkCache(root)  # shares the process's one LMDB environment
    chunks = [make_chunk(i, 100) for i in range(cache_mod.FLUSH_EVERY)]
    for cid, data in chunks:
        a.put(cid, data)
    for cid, _ in chunks[:-1]:
        a.get(cid)
    assert b.stats().hits == 0  # still pending in `a`
    a.get(chunks[-1][0])
    assert b.stats().hits == cache_mod.FLUSH_EVERY  # a full batch of ids flushed itself
    a.get(chunks[0][0])
    assert b.stats().hits == cache_mod.FLUSH_EVERY
    monkeypatch.setattr(cache_mod, "FLUSH_SECONDS", 0.0)
    a.get(chunks[0][0])  # and so does an old one
    assert b.stats().hits == cache_mod.FLUSH_EVERY + 2
    a.get(chunks[0][0])
    a.close()  # and close()
    assert b.stats().hits == cache_mod.FLUSH_EVERY + 3
    b.close()
    with pytest.raises(VfsError):
        a.get(chunks[0][0])


@pytest.mark.parametrize("how", ["flip", "truncate", "zero", "delete"])
def test_damaged_file_is_a_miss_and_heals(
    cache: ChunkCache, root: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    cid, data = make_chunk(4)
    cache.put(cid, data)
    path = damage(cache, cid, how)
    with caplog.at_level(logging.WARNING, logger="vfs.cache"):
        assert cache.get(cid) is None
    assert any(cid.hex() in r.getMessage() for r in caplog.records)
    assert not cache.contains(cid)
    st = cache.stats()
    assert (st.corrupt_evicted, st.entries, st.misses) == (1, 0, 1)
    # A bad chunk's bytes stay in its segment, dead, until the segment is evicted;
    # a segment that is gone takes its record along.
    assert st.bytes == (len(data) if how != "delete" else 0)
    assert path.exists() == (how != "delete")
    cache.put(cid, data)
    assert cache.get(cid) == data
    if how == "truncate":  # the segment's record still says how long it was
        assert cache.verify().index_errors == 2  # its bytes, and the total
    assert_consistent(cache, root)


def test_get_many_answers_like_get_for_each_and_drops_every_bad_file(
    cache: ChunkCache, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chunks = [make_chunk(40 + i) for i in range(6)]
    for cid, data in chunks:
        cache.put(cid, data)
    absent = make_chunk(99)[0]
    ids = [cid for cid, _ in chunks]
    # Duplicates are answered once; the absent id is a miss.
    assert cache.get_many([*ids, absent, ids[0]]) == dict(chunks)
    st = cache.stats()
    assert (st.hits, st.misses) == (6, 1)

    for cid, how in zip(ids, ["flip", "truncate", "zero", "delete"], strict=False):
        damage(cache, cid, how)
    with caplog.at_level(logging.WARNING, logger="vfs.cache"):
        got = cache.get_many(ids)
    assert got == dict(chunks[4:])  # the damaged four are misses, never served
    for cid in ids[:4]:
        assert not cache.contains(cid)
        assert any(cid.hex() in r.getMessage() for r in caplog.records)
    st = cache.stats()
    assert (st.corrupt_evicted, st.entries, st.hits, st.misses) == (4, 2, 8, 5)
    assert cache.get_many([]) == {}
    # The index alone, counting nothing; misses found so are counted on request.
    assert cache.contains_many([*ids, absent]) == set(ids[4:])
    assert (cache.stats().hits, cache.stats().misses) == (8, 5)
    cache.note_misses(3)
    assert cache.stats().misses == 8
    assert cache.verify().index_errors == 2  # the cut-short segment's bytes, and the total
    assert_consistent(cache, root)


def test_a_chunk_read_short_is_read_to_its_end(
    cache: ChunkCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pread() may answer short without being at the end (a signal); the check must
    then read on rather than call a good chunk damaged."""
    cid, data = sized_chunk(7, 300 * KiB)
    cache.put(cid, data)
    real_pread = os.pread
    calls: list[int] = []
    most = [len(data)]

    def pread(fd: int, n: int, off: int) -> bytes:
        calls.append(n)
        return real_pread(fd, min(n, most[0]), off)

    monkeypatch.setattr(files_mod.os, "pread", pread)
    assert cache.get(cid) == data
    assert calls == [len(data)]  # the usual case: one pread()
    calls.clear()
    most[0] = 100 * KiB
    assert cache.get(cid) == data
    assert len(calls) == 3  # 100 + 100 + 100 KiB
    assert cache.stats().corrupt_evicted == 0


def test_oversized_chunk_is_not_cached(root: Path) -> None:
    with ChunkCache(root, max_bytes=100) as c:
        cid, data = sized_chunk(5, 101)
        c.put(cid, data)
        assert not c.contains(cid)


# -- eviction -------------------------------------------------------------------------


def test_cap_is_respected(root: Path) -> None:
    cap = 1 * MiB
    with ChunkCache(root, max_bytes=cap) as c:
        inserted = 0
        seed = 0
        while inserted < 4 * cap:
            cid, data = make_chunk(seed, 100 * KiB)
            seed += 1
            c.put(cid, data)
            inserted += len(data)
            assert c.stats().bytes <= cap
            assert sum(segment_files(root).values()) <= cap + len(data)
        st = c.stats()
        assert st.bytes <= cap
        assert st.evictions > 0
        assert st.bytes_inserted == inserted
        assert_consistent(c, root)


def test_lru_keeps_recently_read(root: Path) -> None:
    cap = 1000 * KiB
    with ChunkCache(root, max_bytes=cap, low_water=0.5) as c:
        chunks = [sized_chunk(i, 100 * KiB) for i in range(10)]
        for cid, data in chunks:
            c.put(cid, data)
        for cid, _ in chunks[:3]:  # the oldest three, read again
            assert c.get(cid) is not None
        c.put(*sized_chunk(100, 100 * KiB))  # over the cap: evict to 500 KiB
        kept = [c.contains(cid) for cid, _ in chunks]
        assert kept == [True] * 3 + [False] * 6 + [True]
        assert c.stats().evictions == 6


def test_speculative_chunks_go_first_and_never_evict(root: Path) -> None:
    """Chunks fetched beside the asked-for ones (a pack window) are the first to be
    evicted, and are left out rather than evict data that was used."""
    cap = 1000 * KiB
    with ChunkCache(root, max_bytes=cap, low_water=0.7) as c:
        used = [sized_chunk(i, 100 * KiB) for i in range(6)]
        for cid, data in used:
            c.put(cid, data)
        spec = dict(sized_chunk(50 + i, 100 * KiB) for i in range(6))
        c.put_many(spec, speculative=True)
        # 600 KiB used + 400 KiB of the window fit; the other two are left out.
        assert sum(c.contains(cid) for cid in spec) == 4
        assert all(c.contains(cid) for cid, _ in used)
        assert c.stats().evictions == 0
        assert_consistent(c, root)
        c.put(*sized_chunk(100, 100 * KiB))  # over the cap: down to 700 KiB, window first
        assert all(c.contains(cid) for cid, _ in used)
        assert not any(c.contains(cid) for cid in spec)
        assert_consistent(c, root)


def test_prune_and_clear(cache: ChunkCache, root: Path) -> None:
    chunks = [sized_chunk(i, 10 * KiB) for i in range(10)]
    for cid, data in chunks:
        cache.put(cid, data)
    cache.pin("keep", [chunks[0][0]])
    assert cache.prune(30 * KiB) == 70 * KiB
    assert cache.stats().bytes == 30 * KiB
    assert cache.contains(chunks[0][0])
    assert cache.prune() == 0
    cache.clear()
    st = cache.stats()
    assert (st.bytes, st.entries, st.pinned_entries) == (0, 0, 0)
    assert segment_files(root) == {}
    assert cache.pins() == {"keep": 1}
    cache.put(*chunks[0])  # a pin outlives clear()
    assert cache.stats().pinned_entries == 1


def test_pins_survive_pressure(root: Path) -> None:
    cap = 1 * MiB
    with ChunkCache(root, max_bytes=cap) as c:
        pinned = [sized_chunk(i, 100 * KiB) for i in range(3)]
        later = sized_chunk(3, 100 * KiB)  # pinned before it is cached
        for cid, data in pinned:
            c.put(cid, data)
        c.pin("a@v1", [pinned[0][0], pinned[1][0]])
        c.pin("b@v2", [pinned[1][0], pinned[2][0], later[0]])
        c.pin("b@v2", [later[0]])  # pinning again adds nothing
        assert c.pins() == {"a@v1": 2, "b@v2": 3}
        c.put(*later)
        for i in range(100, 130):
            c.put(*sized_chunk(i, 100 * KiB))
        for cid, _ in [*pinned, later]:
            assert c.contains(cid)
        st = c.stats()
        assert (st.pinned_entries, st.pinned_bytes) == (4, 400 * KiB)
        assert st.bytes <= cap

        c.unpin("a@v1")  # chunk 1 stays pinned by b@v2
        c.prune(0)
        assert [c.contains(cid) for cid, _ in pinned] == [False, True, True]
        assert c.pins() == {"b@v2": 3}
        c.unpin("b@v2")
        c.prune(0)
        st = c.stats()
        assert (st.bytes, st.entries, st.pinned_entries, st.pinned_bytes) == (0, 0, 0, 0)
        assert c.pins() == {}
        assert_consistent(c, root)


def test_unpin_evicts_when_over_cap(root: Path) -> None:
    with ChunkCache(root, max_bytes=300 * KiB) as c:
        chunks = [sized_chunk(i, 100 * KiB) for i in range(5)]
        c.pin("all", [cid for cid, _ in chunks])
        for cid, data in chunks:
            c.put(cid, data)
        assert c.stats().bytes == 500 * KiB  # pins win over the cap
        c.unpin("all")
        assert c.stats().bytes <= 240 * KiB
        assert_consistent(c, root)


# -- concurrency ----------------------------------------------------------------------


def test_threads_share_one_cache(root: Path) -> None:
    chunks = [make_chunk(i, 32 * KiB) for i in range(40)]
    errors: list[BaseException] = []
    with ChunkCache(root, max_bytes=512 * KiB) as a, ChunkCache(root, max_bytes=512 * KiB) as b:

        def work(c: ChunkCache, seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(200):
                    cid, data = rng.choice(chunks)
                    got = c.get(cid)
                    assert got is None or got == data
                    if got is None:
                        c.put(cid, data)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(c, i)) for i, c in enumerate([a, b] * 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert_consistent(a, root)


def _worker(root: str, cap: int, seed: int, ops: int) -> None:
    """Puts and gets from an overlapping set of chunks; exits 1 on a wrong byte."""
    rng = random.Random(seed)
    with ChunkCache(root, max_bytes=cap) as c:
        for _ in range(ops):
            cid, data = make_chunk(rng.randrange(80), 128 * KiB)
            got = c.get(cid)
            if got is None:
                c.put(cid, data)
            elif got != data:
                os._exit(1)


def test_processes_share_one_cache(root: Path) -> None:
    cap = 2 * MiB
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(root), cap, i, 300)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    with ChunkCache(root, max_bytes=cap) as c:
        st = c.stats()
        assert st.bytes <= cap
        assert st.hits + st.misses == 4 * 300
        assert_consistent(c, root)


def _put_forever(root: str, cap: int, seed: int, ready: Event) -> None:
    rng = random.Random(seed)
    c = ChunkCache(root, max_bytes=cap)
    ready.set()
    while True:
        cid, data = make_chunk(rng.randrange(200), 64 * KiB)
        if c.get(cid) is None:
            c.put(cid, data)
        if rng.random() < 0.05:
            c.pin(f"p{rng.randrange(3)}", [cid])
        if rng.random() < 0.02:
            c.unpin(f"p{rng.randrange(3)}")


def test_kill_9_leaves_a_consistent_cache(root: Path) -> None:
    cap = 512 * KiB
    ctx = mp.get_context("spawn")
    rng = random.Random(7)
    for round_ in range(4):
        ready = ctx.Event()
        # Two writers at once, so one may die holding LMDB's writer lock.
        procs = [
            ctx.Process(target=_put_forever, args=(str(root), cap, 10 * round_ + i, ready))
            for i in range(2)
        ]
        for p in procs:
            p.start()
        assert ready.wait(30)
        time.sleep(rng.uniform(0.05, 0.5))
        for p in procs:
            assert p.pid is not None
            os.kill(p.pid, signal.SIGKILL)
            p.join()
    with ChunkCache(root, max_bytes=cap) as c:
        c.verify(orphan_grace=0)
        assert_consistent(c, root, killed=True)
        assert c.stats().bytes - c.stats().pinned_bytes <= cap + 2 * 64 * KiB
        for cid in cached_ids(c):
            got = c.get(cid)
            assert got is not None and blake3.blake3(got).digest() == cid


def _use_after_fork(c: ChunkCache, root: str) -> int:
    try:
        c.get(bytes(32))
    except VfsError:
        pass
    else:
        return 1
    try:
        ChunkCache(root)
    except VfsError:
        return 0
    return 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fork_is_refused_clearly(cache: ChunkCache, root: Path) -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(_use_after_fork(cache, str(root)))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.get(bytes(32)) is None  # the parent is unharmed


# -- the LMDB map -----------------------------------------------------------------------


def test_map_grows_when_full(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "_MAP_SIZE", 256 * KiB)
    with ChunkCache(root) as c:
        chunks = [tiny_chunk(i) for i in range(3000)]
        c.pin("all", [cid for cid, _ in chunks])
        for cid, data in chunks:
            c.put(cid, data)
        assert c._live().env.info()["map_size"] > 256 * KiB
        assert all(c.get(cid) == data for cid, data in chunks)
        assert_consistent(c, root)


def _fill(root: str, n: int) -> None:
    with ChunkCache(root) as c:  # the default, much larger map
        c.pin("all", [tiny_chunk(i)[0] for i in range(n)])


def test_map_grown_by_another_process(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(index_mod, "_MAP_SIZE", 256 * KiB)
    with ChunkCache(root) as c:
        p = mp.get_context("spawn").Process(target=_fill, args=(str(root), 20_000))
        p.start()
        p.join(60)
        assert p.exitcode == 0
        with caplog.at_level(logging.INFO, logger="vfs.cache"):
            assert c.pins() == {"all": 20_000}  # adopted the size the other process set
        assert "map size 262144 ->" in caplog.text
        c.put(*tiny_chunk(1))
        assert c.stats().pinned_entries == 1


# -- verify ---------------------------------------------------------------------------


def test_verify_repairs(cache: ChunkCache, root: Path) -> None:
    chunks = [make_chunk(i) for i in range(5)]
    for cid, data in chunks:
        cache.put(cid, data)
    damage(cache, chunks[0][0], "zero")
    damage(cache, chunks[1][0], "delete")
    segs = root / "segments"
    old = time.time() - 7200
    orphan = segs / "00000000000000aa.seg"  # a writer killed before its first commit
    orphan.write_bytes(b"not indexed")
    junk = segs / "junk"
    junk.write_bytes(b"?")
    young = segs / "00000000000000bb.seg"
    young.write_bytes(b"a writer at work")
    for p in (orphan, junk):
        os.utime(p, (old, old))

    expected = VerifyReport(checked=5, bad=1, missing_files=1, orphan_files=2, segments=5)
    assert cache.verify(repair=False) == expected
    assert cache.stats().entries == 5  # nothing changed
    report = cache.verify()
    # 1 bad, 1 missing, 2 orphans; and the missing segment's record went with it
    assert report == VerifyReport(
        checked=5, bad=1, missing_files=1, orphan_files=2, repaired=4, segments=4
    )
    assert not orphan.exists() and not junk.exists()
    assert young.exists()  # too young to be an orphan
    st = cache.stats()
    assert (st.entries, st.corrupt_evicted) == (3, 2)
    assert cache.verify().clean
    young.unlink()
    assert_consistent(cache, root)


def test_verify_fixes_counters(cache: ChunkCache, root: Path) -> None:
    for i in range(3):
        cache.put(*make_chunk(i))
    env = cache._live()
    with env.env.begin(write=True) as txn:
        txn.put(b"bytes", (12345).to_bytes(8, "big"), db=env.dbs.counters)
    report = cache.verify()
    assert report.index_errors == 1 and report.repaired == 1
    assert_consistent(cache, root)


# -- sharing across users -------------------------------------------------------------


def test_group_shared_modes(root: Path) -> None:
    root.mkdir()
    os.chmod(root, 0o2775)
    old_umask = os.umask(0o077)
    try:
        with ChunkCache(root) as c:
            cid, data = make_chunk(8)
            c.put(cid, data)
    finally:
        os.umask(old_umask)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    for d in ("segments", "index"):
        assert mode(root / d) == 0o2775, d
    for f in (*(f"segments/{n}" for n in segment_files(root)), "index/data.mdb", "index/lock.mdb"):
        assert mode(root / f) == 0o664, f


def test_private_modes(root: Path) -> None:
    root.mkdir(mode=0o700)
    with ChunkCache(root) as c:
        cid, data = make_chunk(9)
        c.put(cid, data)
        seg = extent(c, cid)[0]
    assert stat.S_IMODE((root / "segments").stat().st_mode) == 0o700
    assert stat.S_IMODE(seg.stat().st_mode) == 0o600


# -- a reference model ----------------------------------------------------------------


class CacheModel(RuleBasedStateMachine):
    """Random puts, gets, pins, unpins, prunes and damage, against what must hold."""

    CAP = 64 * KiB

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="vfs-cache-model-"))
        self.cache = ChunkCache(self.dir, max_bytes=self.CAP)
        self.chunks = [make_chunk(i, 12 * KiB) for i in range(12)]
        self.pin_sets: dict[str, set[bytes]] = {}
        self.must_have: set[bytes] = set()  # pinned while cached: never evicted

    def pinned(self) -> set[bytes]:
        return set().union(*self.pin_sets.values())

    @rule(i=st.integers(0, 11))
    def put(self, i: int) -> None:
        cid, data = self.chunks[i]
        self.cache.put(cid, data)
        if cid in self.pinned():
            self.must_have.add(cid)

    @rule(i=st.integers(0, 11))
    def get(self, i: int) -> None:
        cid, data = self.chunks[i]
        assert self.cache.get(cid) in (None, data)

    @rule(name=st.sampled_from(["a", "b"]), ids=st.sets(st.integers(0, 11), max_size=4))
    def pin(self, name: str, ids: set[int]) -> None:
        cids = [self.chunks[i][0] for i in ids]
        self.cache.pin(name, cids)
        if cids:
            self.pin_sets.setdefault(name, set()).update(cids)
        self.must_have |= {c for c in cids if self.cache.contains(c)}

    @rule(name=st.sampled_from(["a", "b"]))
    def unpin(self, name: str) -> None:
        self.cache.unpin(name)
        self.pin_sets.pop(name, None)
        self.must_have &= self.pinned()

    @rule(to=st.integers(0, 64 * KiB))
    def prune(self, to: int) -> None:
        self.cache.prune(to)

    @rule(i=st.integers(0, 11))
    def damage(self, i: int) -> None:
        cid, _ = self.chunks[i]
        if self.cache.contains(cid):
            damage(self.cache, cid, "zero")
            assert self.cache.get(cid) is None
            self.must_have.discard(cid)

    @invariant()
    def holds(self) -> None:
        s = self.cache.stats()
        assert s.bytes <= self.CAP or s.bytes == s.pinned_bytes
        assert all(self.cache.contains(c) for c in self.must_have)
        assert self.cache.pins() == {n: len(ids) for n, ids in self.pin_sets.items()}
        assert_consistent(self.cache, self.dir)

    def teardown(self) -> None:
        self.cache.close()
        shutil.rmtree(self.dir)


TestCacheModel = CacheModel.TestCase
TestCacheModel.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)


# -- LMDB maps of a commit's indexes -------------------------------------------------------


def _map_rss(path: str) -> int:
    """Bytes of `path`'s memory map resident in this process (from smaps)."""
    target, rss, inside = os.path.realpath(path), 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                inside = len(head) >= 6 and head[5] == target
            elif inside and head and head[0] == "Rss:":
                rss += int(head[1]) * 1024
    return rss


def test_random_reads_keep_the_map_resident_bytes_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every page of an LMDB map read once stays in RSS until released: a commit's
    lookups at 5M files held the whole known-chunks index between two releases.
    SharedEnv.touched releases the map every RELEASE_KEYS keys read."""
    from vfs.cache import lmdbenv

    spec = lmdbenv.EnvSpec(what="test index", map_size=1 << 28, max_dbs=0, sync=False)
    env = lmdbenv.acquire(str(tmp_path / "idx"), spec, lambda e: None)
    try:
        keys = [os.urandom(16) for _ in range(60_000)]  # ~20 MB of leaf pages

        def put(txn: object) -> None:
            for k in keys:
                txn.put(k, k * 16)  # type: ignore[attr-defined]

        env.run(put, write=True)
        data = str(tmp_path / "idx" / "data.mdb")
        lmdbenv.release_maps([str(tmp_path / "idx")])
        rnd = random.Random(7)

        def read_some(touch: bool) -> int:
            peak = 0

            def get(k: bytes) -> bytes | None:
                return env.run(lambda txn: txn.get(k), write=False)

            for i in range(4_000):
                k = rnd.choice(keys)
                assert get(k) == k * 16
                if touch:
                    env.touched(1)
                if i % 250 == 0:
                    peak = max(peak, _map_rss(data))
            return max(peak, _map_rss(data))

        untouched = read_some(False)
        lmdbenv.release_maps([str(tmp_path / "idx")])
        monkeypatch.setattr(lmdbenv, "RELEASE_KEYS", 64)
        touched = read_some(True)
        assert untouched > 8 << 20, untouched  # the pages stayed mapped
        # 64 reads' pages and their fault-around (~128 KiB each), not the database
        assert touched < 64 * 192 * 1024 and touched < untouched // 2, (touched, untouched)
    finally:
        lmdbenv.release(env)


# -- large chunks around the page cache -------------------------------------------------


def _resident(path: Path) -> int:
    """Bytes of the file in the page cache, as util-linux's fincore(1) reports them."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.split()[0])


def test_large_chunks_are_written_around_the_page_cache_and_small_ones_through_it(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of large chunks goes to its segment with O_DIRECT, at a 4 KiB boundary,
    and leaves nothing in the page cache; small chunks before and after it in the same
    segment go through the page cache. Every chunk reads back, and the index's bytes
    are the segment's size (the alignment counted as dead bytes)."""
    if shutil.which("fincore") is None:
        pytest.skip("needs util-linux's fincore")
    monkeypatch.setattr(files_mod, "SEGMENT_BYTES", 64 * MiB)
    with ChunkCache(root, max_bytes=256 * MiB) as c:
        if not c._writer._direct:
            pytest.skip("this filesystem refuses O_DIRECT")
        small = [sized_chunk(i, 1000 + i) for i in range(3)]
        large = [sized_chunk(10 + i, files_mod.DIRECT_CHUNK + 777 * i) for i in range(12)]
        c.put_many(dict(small))
        c.put_many(dict(large))
        (path,) = [root / "segments" / name for name in segment_files(root)]
        assert _resident(path) <= 4 * KiB  # the small chunks' one page, not the large ones
        c.put_many(dict([sized_chunk(99, 5000)]))
        offsets = [extent(c, cid)[1] for cid, _ in large]
        assert offsets[0] % 4096 == 0 and offsets[0] >= 3 * 1000
        assert offsets == sorted(offsets)
        for cid, data in [*small, *large, sized_chunk(99, 5000)]:
            assert c.get(cid) == data
        assert_consistent(c, root)


def test_a_filesystem_that_refuses_o_direct_gets_the_page_cache(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EINVAL at the direct write (an alignment the device wants larger): the batch,
    and every later one, goes through the page cache; nothing is lost."""
    real = os.pwritev
    refused = []

    def pwritev(fd: int, buffers: list[memoryview], offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, buffers, offset)

    monkeypatch.setattr(files_mod.os, "pwritev", pwritev)
    large = [sized_chunk(20 + i, 300 * KiB) for i in range(8)]
    with ChunkCache(root, max_bytes=256 * MiB) as c:
        if not c._writer._direct:
            pytest.skip("this filesystem refuses O_DIRECT")
        c.put_many(dict(large[:4]))
        c.put_many(dict(large[4:]))
        assert len(refused) == 1 and not c._writer._direct
        for cid, data in large:
            assert c.get(cid) == data
        assert_consistent(c, root)
