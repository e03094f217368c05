"""The chunk cache's segment files (vfs/cache/files.py): many chunks per segment,
whole-segment eviction, compaction of pinned chunks, kill -9 during writes and
compaction, many readers and writers, two Unix users, and the layout-1 upgrade.
Real files, real LMDB, real processes; nothing here is timed."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import random
import shutil
import signal
import stat
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import blake3
import lmdb
import pytest

from tests.unit.test_cache import (
    assert_consistent,
    cached_ids,
    damage,
    extent,
    sized_chunk,
)
from vfs.cache import ChunkCache

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

KiB = 1024
MiB = 1024 * KiB
NOBODY = 65534


def disk_bytes(root: Path) -> int:
    total = 0
    for f in os.scandir(root / "segments"):
        with contextlib.suppress(FileNotFoundError):
            total += f.stat().st_size
    return total


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_chunks_go_into_segments_in_put_order(root: Path) -> None:
    """A file's chunks, put one batch after another, sit side by side in one segment
    and are read back in one call per run of neighbours."""
    with ChunkCache(root, max_bytes=64 * MiB) as c:  # segments of 4 MiB
        chunks = [sized_chunk(i, 100 * KiB) for i in range(30)]
        for i in range(0, 30, 3):
            c.put_many(dict(chunks[i : i + 3]))
        places = [extent(c, cid) for cid, _ in chunks]
        assert len({p for p, _, _ in places}) == 1
        assert [off for _, off, _ in places] == [i * 100 * KiB for i in range(30)]
        assert c.get_many([cid for cid, _ in reversed(chunks)]) == dict(chunks)
        assert c.stats().segments == 1
        assert_consistent(c, root)
        # The next put goes on in a new segment once this one reaches its size.
        big = [sized_chunk(100 + i, 1 * MiB) for i in range(4)]
        for cid, data in big:
            c.put(cid, data)
        assert c.stats().segments == 2
        assert_consistent(c, root)


def test_views_of_a_run_stay_exact_after_eviction_and_later_reads(root: Path) -> None:
    """get_views() hands out read-only views of one buffer per run, a pooled one
    never reused while a view of it is alive: what a view shows stays the chunk's
    bytes after the segment is evicted and its file unlinked, and after other runs
    are read (into the pool's other buffers)."""
    cap = 4 * MiB  # segments of 256 KiB
    with ChunkCache(root, max_bytes=cap, low_water=0.5) as c:
        chunks = [sized_chunk(i, 60 * KiB) for i in range(4)]
        c.put_many(dict(chunks))
        got = c.get_views([cid for cid, _ in chunks])
        views = [got[cid] for cid, _ in chunks]
        assert all(isinstance(v, memoryview) and v.readonly for v in views)
        assert len({id(v.obj) for v in views if isinstance(v, memoryview)}) == 1  # one run
        with pytest.raises(TypeError):
            views[0][0] = 0  # type: ignore[index]
        # Fill the cache past its cap with other chunks, read them back in runs, and
        # evict the views' segment: no view may change.
        others = [sized_chunk(100 + i, 60 * KiB) for i in range(120)]
        for i in range(0, len(others), 4):
            c.put_many(dict(others[i : i + 4]))
            assert c.get_views([cid for cid, _ in others[i : i + 4]]) == dict(others[i : i + 4])
        assert not any(c.contains(cid) for cid, _ in chunks)
        assert [bytes(v) for v in views] == [data for _, data in chunks]
        # get_many() still answers plain bytes.
        tail = dict(others[-4:])
        many = c.get_many(tail)
        assert many == tail and all(type(v) is bytes for v in many.values())


def test_runs_read_as_views_reuse_their_buffers_once_no_view_is_alive(root: Path) -> None:
    """A run read for views goes into a pooled buffer (no fresh memory, no page
    faults): once every view of a run is gone, the next run of its size class reuses
    that buffer; while one view, even a slice of a slice, is alive, it does not."""
    with ChunkCache(root, max_bytes=64 * MiB) as c:
        chunks = [sized_chunk(i, 300 * KiB) for i in range(8)]
        c.put_many(dict(chunks))
        pool = c._files.runs
        first = c.get_views([cid for cid, _ in chunks[:2]])
        assert first == dict(chunks[:2])
        lent, _ = pool.counts()
        keep = first[chunks[0][0]]
        assert isinstance(keep, memoryview)
        held = keep[10:20][2:5]  # a slice of a slice holds the buffer too
        del keep, first
        before = pool.reused
        second = c.get_views([cid for cid, _ in chunks[2:4]])
        assert pool.reused == before  # the first buffer was still referenced
        assert pool.counts()[0] == lent + 1
        assert bytes(held) == chunks[0][1][12:15]
        del held, second
        third = c.get_views([cid for cid, _ in chunks[4:6]])
        assert pool.reused == before + 1  # a buffer came back and was read into
        assert third == dict(chunks[4:6])
        assert c.get_views([cid for cid, _ in chunks[6:]]) == dict(chunks[6:])


def test_a_run_mostly_of_holes_is_copied_not_viewed(root: Path) -> None:
    """Chunks read in one run with holes between them are views only while the holes
    are a small part of the run: otherwise a held chunk would keep the holes' bytes
    in memory, so each is copied out into a bytes of its own."""
    with ChunkCache(root, max_bytes=64 * MiB) as c:
        chunks = [sized_chunk(i, 16 * KiB) for i in range(12)]
        c.put_many(dict(chunks))
        dense = c.get_views([cid for cid, _ in chunks[:4]])
        assert all(isinstance(v, memoryview) for v in dense.values())
        sparse_ids = [cid for cid, _ in chunks[::4]]  # holes of 48 KiB between 16 KiB
        sparse = c.get_views(sparse_ids)
        assert all(type(v) is bytes for v in sparse.values())
        assert sparse == {cid: data for cid, data in chunks[::4]}


def test_eviction_drops_whole_cold_segments(root: Path) -> None:
    cap = 4 * MiB  # segments of 256 KiB: 4 chunks each
    with ChunkCache(root, max_bytes=cap, low_water=0.5) as c:
        chunks = [sized_chunk(i, 64 * KiB) for i in range(200)]
        for cid, data in chunks[:32]:
            c.put(cid, data)
        hot = chunks[:4]  # the first segment, read again: it stays
        for i, (cid, data) in enumerate(chunks[32:]):
            c.put(cid, data)
            if i % 8 == 0:
                assert c.get_many([h for h, _ in hot]) == dict(hot)
            st = c.stats()
            assert st.bytes <= cap
            assert disk_bytes(root) <= cap + 256 * KiB + 64 * KiB  # + the open segment
        assert all(c.contains(cid) for cid, _ in hot)
        # A segment goes whole: each one is either all cached or all gone.
        by_seg: dict[int, list[bool]] = {}
        for n, (cid, _) in enumerate(chunks):
            by_seg.setdefault(n // 4, []).append(c.contains(cid))
        assert all(len(set(v)) == 1 for v in by_seg.values())
        assert c.stats().evictions > 0
        assert_consistent(c, root)


def test_speculative_chunks_never_evict_used_ones_across_segments(root: Path) -> None:
    cap = 4 * MiB
    with ChunkCache(root, max_bytes=cap) as c:
        used = [sized_chunk(i, 128 * KiB) for i in range(24)]  # 3 MiB, read
        for cid, data in used:
            c.put(cid, data)
        spec = dict(sized_chunk(100 + i, 128 * KiB) for i in range(24))
        c.put_many(spec, speculative=True)
        assert c.stats().bytes <= cap
        assert all(c.contains(cid) for cid, _ in used)
        assert c.stats().evictions == 0
        assert_consistent(c, root)


def test_pins_survive_compaction(root: Path) -> None:
    cap = 2 * MiB  # segments of 128 KiB: 8 chunks of 16 KiB
    with ChunkCache(root, max_bytes=cap) as c:
        first = [sized_chunk(i, 16 * KiB) for i in range(8)]
        c.put_many(dict(first))
        pinned = [first[2][0], first[5][0]]
        c.pin("keep", pinned)
        before = {cid: extent(c, cid) for cid in pinned}
        for i in range(400):  # 6 MiB through a 2 MiB cache
            c.put(*sized_chunk(1000 + i, 16 * KiB))
        st = c.stats()
        assert st.compacted >= 2 and st.bytes <= cap
        for cid in pinned:
            assert extent(c, cid)[0] != before[cid][0]  # moved to a newer segment
        assert not before[pinned[0]][0].exists()  # and the old one is gone
        assert c.get_many(pinned) == {cid: d for cid, d in first if cid in pinned}
        assert not any(c.contains(cid) for cid, _ in first if cid not in pinned)
        assert c.pins() == {"keep": 2}
        assert (st.pinned_entries, st.pinned_bytes) == (2, 32 * KiB)
        assert_consistent(c, root)
        c.prune(0)  # pins win over any target, compacted again or not
        assert c.get_many(pinned).keys() == set(pinned)
        c.unpin("keep")
        c.prune(0)
        assert c.stats().bytes == 0
        assert_consistent(c, root)


def test_a_segment_mostly_pinned_is_kept(root: Path) -> None:
    cap = 2 * MiB
    with ChunkCache(root, max_bytes=cap) as c:
        first = [sized_chunk(i, 16 * KiB) for i in range(8)]
        c.put_many(dict(first))
        c.pin("most", [cid for cid, _ in first[:6]])
        seg = extent(c, first[0][0])[0]
        for i in range(400):
            c.put(*sized_chunk(1000 + i, 16 * KiB))
        assert extent(c, first[0][0])[0] == seg  # not copied: it would save little
        assert c.contains(first[7][0])  # its unpinned chunks stay with it
        assert c.stats().compacted == 0
        assert_consistent(c, root)


def test_a_corrupted_segment_drops_only_its_bad_chunk(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with ChunkCache(root, max_bytes=64 * MiB) as c:
        chunks = [sized_chunk(i, 64 * KiB) for i in range(10)]
        c.put_many(dict(chunks))
        damage(c, chunks[4][0], "flip")
        with caplog.at_level(logging.WARNING, logger="vfs.cache"):
            got = c.get_many([cid for cid, _ in chunks])
        assert got == dict(chunks[:4] + chunks[5:])  # never the bad bytes
        assert chunks[4][0].hex() in caplog.text
        assert not c.contains(chunks[4][0]) and c.stats().corrupt_evicted == 1
        c.put(*chunks[4])  # refetched: into the writer's segment again
        assert c.get(chunks[4][0]) == chunks[4][1]
        assert_consistent(c, root)


# -- the layout-1 upgrade ---------------------------------------------------------------


def _make_layout_1(root: Path) -> bytes:
    """A cache directory as layout 1 left it: one file per chunk under data/, an
    index of format b"1" with one entry and one pin set. Returns the pinned id."""
    cid, data = sized_chunk(1, 1000)
    (root / "data" / cid.hex()[:2]).mkdir(parents=True)
    (root / "data" / "tmp").mkdir()
    (root / "data" / cid.hex()[:2] / cid.hex()).write_bytes(data)
    (root / "index").mkdir()
    env = lmdb.open(str(root / "index"), max_dbs=8, map_size=1 << 24)
    with env.begin(write=True) as txn:
        meta = env.open_db(b"meta", txn=txn)
        txn.put(b"format", b"1", db=meta)
        entries = env.open_db(b"entries", txn=txn)
        txn.put(cid, struct.pack(">Q16sQB", len(data), bytes(16), 1, 0), db=entries)
        lru = env.open_db(b"lru", txn=txn)
        txn.put(struct.pack(">Q", 1) + cid, b"", db=lru)
        counters = env.open_db(b"counters", txn=txn)
        for name, value in (("bytes", len(data)), ("entries", 1), ("hits", 7)):
            txn.put(name.encode(), struct.pack(">Q", value), db=counters)
        pinsets = env.open_db(b"pinsets", txn=txn, dupsort=True, dupfixed=True)
        txn.put(b"old", cid, db=pinsets)
        env.open_db(b"pinrefs", txn=txn)
        txn.put(cid, struct.pack(">I", 1), db=env.open_db(b"pinrefs", txn=txn))
    env.close()
    return cid


def test_a_layout_1_cache_is_cleared_with_one_log_line(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cid = _make_layout_1(root)
    with caplog.at_level(logging.INFO, logger="vfs.cache"):
        with ChunkCache(root) as c:
            st = c.stats()
            assert (st.entries, st.bytes, st.hits) == (0, 0, 7)  # lifetime counts stay
            assert not c.contains(cid)
            assert c.pins() == {"old": 1}  # pin sets are ids: they stay
            c.put(*sized_chunk(1, 1000))
            assert c.stats().pinned_entries == 1
            assert_consistent(c, root)
        with ChunkCache(root) as c:  # once only
            assert c.stats().entries == 1
    lines = [r for r in caplog.records if r.name.startswith("vfs.cache")]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "layout 1" in lines[0].getMessage()
    assert not (root / "data").exists()


# -- kill -9 --------------------------------------------------------------------------


def _write_and_compact_forever(root: str, seed: int, ready: Event) -> None:
    """Puts (in batches), gets and pins on a small cache, so that segment writes,
    evictions and compactions run all the time; exits 1 on a wrong byte."""
    rng = random.Random(seed)
    c = ChunkCache(root, max_bytes=1 * MiB)  # segments of 64 KiB: 4 chunks each
    ready.set()
    while True:
        batch = dict(sized_chunk(rng.randrange(400), 16 * KiB) for _ in range(rng.randint(1, 4)))
        got = c.get_many(batch)
        if any(v != batch[k] for k, v in got.items()):
            os._exit(1)
        c.put_many({k: v for k, v in batch.items() if k not in got})
        if rng.random() < 0.2:
            c.pin(f"p{rng.randrange(4)}", [next(iter(batch))])
        if rng.random() < 0.01:
            c.unpin(f"p{rng.randrange(4)}")


def test_kill_9_during_segment_writes_and_compaction(root: Path) -> None:
    ctx = mp.get_context("spawn")
    rng = random.Random(11)
    compacted = 0
    for round_ in range(6):
        ready = ctx.Event()
        procs = [
            ctx.Process(target=_write_and_compact_forever, args=(str(root), 10 * round_ + i, ready))
            for i in range(2)
        ]
        for p in procs:
            p.start()
        assert ready.wait(30)
        time.sleep(rng.uniform(0.3, 1.5))
        for p in procs:
            assert p.exitcode is None, p.exitcode  # no wrong byte seen
            assert p.pid is not None
            os.kill(p.pid, signal.SIGKILL)
            p.join()
        with ChunkCache(root, max_bytes=1 * MiB) as c:
            # Before any repair: every indexed chunk is served right or not at all.
            for cid in cached_ids(c):
                got = c.get(cid)
                assert got is None or blake3.blake3(got).digest() == cid
            rep = c.verify(repair=False, orphan_grace=3600)
            assert rep.bad == rep.missing_files == rep.index_errors == 0, rep
            c.verify(orphan_grace=0)  # the killed writers' segments without a record
            # On disk, beyond the index: only bytes the killed writers never indexed.
            assert_consistent(c, root, killed=True)
            for cid in cached_ids(c):
                got = c.get(cid)
                assert got is not None and blake3.blake3(got).digest() == cid
            compacted = c.stats().compacted
            assert c.stats().corrupt_evicted == 0  # a crash never leaves bad entries
    assert compacted > 0  # the kills did land among compactions


# -- many readers and writers -----------------------------------------------------------


def _read_write(root: str, cap: int, seed: int, stop: Event) -> None:
    rng = random.Random(seed)
    errors: list[str] = []
    with ChunkCache(root, max_bytes=cap) as c:

        def work(k: int) -> None:
            r = random.Random(seed * 100 + k)
            while not stop.is_set():
                ids = [sized_chunk(r.randrange(300), 256 * KiB) for _ in range(r.randint(1, 2))]
                want = dict(ids)
                got = c.get_many(want)
                if any(v != want[k2] for k2, v in got.items()):
                    errors.append("wrong bytes")
                c.put_many({k2: v for k2, v in want.items() if k2 not in got})

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    del rng
    os._exit(1 if errors else 0)


def test_the_cap_holds_under_16_readers_and_writers(root: Path) -> None:
    """4 processes of 4 threads, each reading and putting 256 KiB chunks of a 75 MiB
    working set through a 16 MiB cache, until 64 MiB went in: the index never
    exceeds the cap, and the segments on disk never exceed it by more than one
    window (8 MiB)."""
    cap = 16 * MiB
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_read_write, args=(str(root), cap, i, stop)) for i in range(4)]
    for p in procs:
        p.start()
    peaks = {"index": 0, "disk": 0}
    with ChunkCache(root, max_bytes=cap) as c:
        deadline = time.monotonic() + 300  # a bound for a stuck run, not a speed limit
        while c.stats().bytes_inserted < 4 * cap and time.monotonic() < deadline:
            peaks["index"] = max(peaks["index"], c.stats().bytes)
            peaks["disk"] = max(peaks["disk"], disk_bytes(root))
            time.sleep(0.005)
            assert all(p.exitcode is None for p in procs)
        stop.set()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 4
        st = c.stats()
        assert st.bytes_inserted >= 4 * cap and st.evictions > 0
        assert peaks["index"] <= cap, peaks
        assert peaks["disk"] <= cap + 8 * MiB, peaks
        c.verify(orphan_grace=0)
        assert_consistent(c, root)


# -- two Unix users -------------------------------------------------------------------


def _as_nobody(root: str, seed_base: int, ready_ids: list[bytes]) -> None:
    """In a spawned child started as root: load everything, drop to nobody:nogroup,
    then read what root cached, put chunks of its own and evict some of root's."""
    import vfs.cache.check
    import vfs.cache.chunks
    import vfs.cache.files
    import vfs.cache.index  # noqa: F401  (nothing may be imported once root is gone)

    os.setgroups([NOBODY])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    os.umask(0o077)  # the cache's group modes must win over it
    with ChunkCache(root, max_bytes=4 * MiB) as c:
        got = c.get_many(ready_ids)
        if len(got) != len(ready_ids) or any(
            blake3.blake3(v).digest() != k for k, v in got.items()
        ):
            os._exit(2)
        for i in range(80):  # 5 MiB through a 4 MiB cache: root's segments go too
            c.put(*sized_chunk(seed_base + i, 64 * KiB))
        c.pin("nobody", [sized_chunk(seed_base + 79, 64 * KiB)[0]])
    os._exit(0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as another user")
def test_two_unix_users_share_one_cache() -> None:
    parent = Path(tempfile.mkdtemp(prefix="vfs-two-users-", dir="/tmp"))
    try:
        os.chmod(parent, 0o755)
        root = parent / "cache"
        root.mkdir()
        os.chown(root, 0, NOBODY)
        os.chmod(root, 0o2775)
        mine = [sized_chunk(i, 64 * KiB) for i in range(16)]
        with ChunkCache(root, max_bytes=4 * MiB) as c:
            for cid, data in mine:
                c.put(cid, data)
        ctx = mp.get_context("spawn")
        p = ctx.Process(target=_as_nobody, args=(str(root), 5000, [cid for cid, _ in mine]))
        p.start()
        p.join(120)
        assert p.exitcode == 0
        theirs = [sized_chunk(5000 + i, 64 * KiB) for i in range(80)]
        with ChunkCache(root, max_bytes=4 * MiB) as c:
            assert c.get(theirs[-1][0]) == theirs[-1][1]  # nobody's segment, read by root
            assert c.pins() == {"nobody": 1}
            assert not all(c.contains(cid) for cid, _ in mine)  # nobody evicted root's
            owners = {f.stat().st_uid for f in (root / "segments").iterdir()}
            assert NOBODY in owners
            for f in (root / "segments").iterdir():
                assert stat.S_IMODE(f.stat().st_mode) == 0o664 and f.stat().st_gid == NOBODY
            c.verify(orphan_grace=0)
            assert_consistent(c, root)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_a_segment_dropped_elsewhere_is_closed_at_the_next_read(root: Path) -> None:
    """An open read fd would keep a dropped segment's disk space: the reader closes
    it once it sees that segments were dropped."""
    with ChunkCache(root, max_bytes=64 * MiB) as a, ChunkCache(root, max_bytes=64 * MiB) as b:
        old = sized_chunk(1, 64 * KiB)
        a.put(*old)
        seg = extent(a, old[0])[0]
        assert a.get(old[0]) == old[1]
        assert int(seg.stem, 16) in a._files._fds  # kept open for the next read
        a._writer.close()  # a lets go of its segment for writing...
        b.prune(0)  # ...and another cache drops it
        assert not seg.exists()
        new = sized_chunk(2, 64 * KiB)
        b.put(*new)
        assert a.get(new[0]) == new[1]
        assert int(seg.stem, 16) not in a._files._fds
