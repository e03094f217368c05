"""Pack windows (vfs/mount/windows.py, Loader._widen): a cold miss fetches part of
its pack around the chunk, adaptively, within an over-fetch bound.

The core runs in process over a real store (local or SeaweedFS S3) wrapped in the
fault injection layer, whose tally counts the ranged GETs and their bytes: the
claims here are about requests and bytes, never time.

The version: SMALL_FILES files of 4-12 KB of random bytes (each one chunk, stored
raw), in packs of PACK_TARGET bytes (~500 files each). Windows are scaled to match
(FETCH): 128 KiB to 1 MiB is to these files what the default 1 to 8 MiB is to files
of ~60 KB.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import trio

from tests.support.core import run_core, walk_path
from vfs import format as fmt
from vfs.backends.faults import Fault, FaultControl, FaultyBackend, Tally
from vfs.cache import ChunkCache
from vfs.cache.layout import packindex_dir
from vfs.mount import loader as loader_mod
from vfs.mount.core import FsCore
from vfs.mount.loader import FetchConfig
from vfs.mount.windows import DENSITY, PackWindows
from vfs.ops.commit import commit_dir
from vfs.store import Store

KiB = 1024
MiB = 1024 * KiB
SMALL_FILES = 2400
PACK_TARGET = 4 * MiB
FETCH = FetchConfig(window_min=128 * KiB, window_max=1 * MiB)


class SmallWorld:
    """A version of many small files, a store that counts requests, a cache."""

    def __init__(self, store_url: str, tmp: Path) -> None:
        rng = random.Random(10)
        src = tmp / "src"
        self.files: dict[str, bytes] = {}
        for i in range(SMALL_FILES):
            path = f"d{i // 200:02d}/{i:05d}.bin"
            data = rng.randbytes(rng.randrange(4 * KiB, 12 * KiB))
            (src / path).parent.mkdir(parents=True, exist_ok=True)
            (src / path).write_bytes(data)
            self.files[path] = data
        real = Store.open(store_url)
        old = os.environ.get("VFS_PACK_TARGET")
        os.environ["VFS_PACK_TARGET"] = str(PACK_TARGET)
        try:
            commit_dir(real, str(src), "small", tag="v1", cache_dir=str(tmp / "wc"))
        finally:
            if old is None:
                del os.environ["VFS_PACK_TARGET"]
            else:
                os.environ["VFS_PACK_TARGET"] = old
        self.real = real
        self.faults = FaultControl(tmp / "ctl")
        faulty = FaultyBackend(real.backend, self.faults)
        self.wired: Tally = faulty.tally
        self.store = Store(faulty)
        self.cache = ChunkCache(tmp / "cache", 1 << 30)
        self.tmp = tmp

    def close(self) -> None:
        self.cache.close()
        self.store.close()

    def index_bytes(self) -> int:
        """Stored bytes of the pack indexes this store loaded."""
        total = 0
        for key in self.real.backend.list("index/"):
            pack = bytes.fromhex(key.rsplit("/", 1)[-1])
            if self.store.cached_pack_index(pack) is not None:
                total += len(self.real.backend.get(key))
        return total


@pytest.fixture
def small(store_url: str, tmp_path: Path) -> Iterator[SmallWorld]:
    w = SmallWorld(store_url, tmp_path)
    yield w
    w.close()


async def _read_files(core: FsCore, paths: list[str], tasks: int = 8) -> dict[str, bytes]:
    """Read whole files, `tasks` at a time, as a DataLoader's workers would."""
    inos = {p: (await walk_path(core, p)).ino for p in paths}
    out: dict[str, bytes] = {}
    todo = iter(paths)

    async def worker() -> None:
        for p in todo:
            fh = await core.open(inos[p], os.O_RDONLY)
            out[p] = await core.read(fh, 0, 1 << 20)
            core.release(fh)

    async with trio.open_nursery() as n:
        for _ in range(tasks):
            n.start_soon(worker)
    return out


def test_random_files_fetch_at_most_twice_what_they_read(small: SmallWorld) -> None:
    """docs/semantics.md, read: the over-fetch bound, for 100 random files."""
    paths = random.Random(1).sample(sorted(small.files), 100)

    async def body(core: FsCore) -> None:
        await walk_path(core, paths[0])
        small.wired.reset()
        got = await _read_files(core, paths)
        assert got == {p: small.files[p] for p in paths}
        read = sum(len(small.files[p]) for p in paths)
        fetched = small.wired.range_bytes + small.index_bytes()
        assert fetched <= 2 * read, (fetched, read, core.fetcher.counters())

    run_core(small.store, "small@v1", body, cache=small.cache, fetch=FETCH)


def test_a_shuffled_epoch_costs_far_fewer_gets_than_files(small: SmallWorld) -> None:
    """Every file once, in random order, 8 readers: windows grow, GETs are a small
    fraction of the files, each chunk comes from the store once (single flight
    across windows), and the bytes are right."""
    paths = sorted(small.files)
    random.Random(2).shuffle(paths)
    total = sum(len(d) for d in small.files.values())

    async def body(core: FsCore) -> None:
        await _read_files(core, paths[:1])
        small.wired.reset()
        got = await _read_files(core, paths[1:])
        assert got == {p: small.files[p] for p in paths[1:]}
        st = core.fetcher.stats
        # Far fewer than one GET per file; the bound's budget is dataset bytes.
        assert small.wired.range_gets <= SMALL_FILES // 4, core.fetcher.counters()
        assert st.window_chunks > SMALL_FILES // 2
        # Bytes beyond the files: the gaps a span crosses (reader.MAX_GAP) where a
        # chunk was another reader's flight or already held. 1.16-1.30x over 12 runs
        # with the cache writer's batches of 256 chunks (more windows taken, so more
        # of them overlap); a window fetching what another brought would be ~2x.
        assert small.wired.range_bytes <= 1.5 * total
        # No chunk came twice: nobody fetched a chunk a window was bringing.
        assert st.chunks_fetched == SMALL_FILES

    run_core(small.store, "small@v1", body, cache=small.cache, fetch=FETCH)


def test_a_window_takes_a_bounded_number_of_chunks(
    small: SmallWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window's bytes may hold thousands of tiny files' chunks: it takes at most
    MAX_WINDOW_CHUNKS of them, the nearest the miss (each miss looked up a whole
    window's chunks in the cache: 12 files/s over a pack of 50,000 tiny files)."""
    monkeypatch.setattr(loader_mod, "MAX_WINDOW_CHUNKS", 16)
    sizes: list[int] = []
    real = PackWindows.fetched

    def fetched(self: PackWindows, pack: bytes, chunks: Iterable[tuple[bytes, int]]) -> None:
        chunks = list(chunks)
        sizes.append(len(chunks))
        real(self, pack, chunks)

    monkeypatch.setattr(PackWindows, "fetched", fetched)
    paths = sorted(small.files)
    random.Random(3).shuffle(paths)
    paths = paths[:800]

    async def body(core: FsCore) -> None:
        got = await _read_files(core, paths)
        assert got == {p: small.files[p] for p in paths}

    run_core(small.store, "small@v1", body, cache=small.cache, fetch=FETCH)
    assert sizes and max(sizes) <= 16, sizes


def test_files_read_in_path_order_come_in_few_windows_and_are_cached(small: SmallWorld) -> None:
    """One reader through a directory in path order (a `cp -r`): windows open, the
    files come in a fraction of one GET each, and what came alongside is served from
    the cache (or the writer's queue) and ends up in the cache."""
    paths = sorted(small.files)[:400]  # the head of the first pack, in order

    async def body(core: FsCore) -> None:
        await _read_files(core, paths, tasks=1)
        st = core.fetcher.stats
        assert st.window_chunks > 0
        gets = small.wired.range_gets
        assert gets < len(paths) // 4

    run_core(small.store, "small@v1", body, cache=small.cache, fetch=FETCH)
    assert small.cache.stats().entries >= 400


def test_a_damaged_kept_pack_index_costs_bytes_never_wrong_data(small: SmallWorld) -> None:
    """The copy of a pack index in the cache's packindex/ is trusted for windows
    only: a chunk fetched by a wrong entry fails verification and is left out, and
    the file it belongs to is read right."""
    rng = random.Random(3)
    for pack in small.real.pack_ids():
        entries = small.real.get_pack_index(pack)
        ids = [e.id for e in entries]
        rng.shuffle(ids)  # every entry names another chunk: all fail verification
        bad = [
            fmt.PackEntry(i, e.offset, e.stored_length, e.raw_length, e.codec)
            for i, e in zip(ids, entries, strict=True)
        ]
        path = Path(packindex_dir(small.cache.root)) / pack.hex()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fmt.encode_pack_index(bad))
    paths = sorted(small.files)
    random.Random(4).shuffle(paths)
    paths = paths[:600]

    async def body(core: FsCore) -> None:
        got = await _read_files(core, paths)
        assert got == {p: small.files[p] for p in paths}
        assert core.fetcher.stats.pack_indexes > 0

    run_core(small.store, "small@v1", body, cache=small.cache, fetch=FETCH)


def test_windows_stay_within_the_in_flight_budget(small: SmallWorld) -> None:
    """Windows take budget like demand GETs and are skipped when there is no room:
    bytes of ranged GETs in flight never pass the budget, with GETs slowed so that
    many are in flight at once."""
    small.faults.set(Fault("latency", ops=("get_range",), seconds=0.02), record=False)
    budget = 512 * KiB
    cfg = FetchConfig(window_min=128 * KiB, window_max=1 * MiB, budget_bytes=budget)
    paths = sorted(small.files)[:800]
    random.Random(5).shuffle(paths)

    async def body(core: FsCore) -> None:
        got = await _read_files(core, paths)
        assert got == {p: small.files[p] for p in paths}
        st = core.fetcher.stats
        assert st.window_chunks > 0 and st.window_skipped > 0
        assert small.wired.max_in_flight <= budget
        assert core.fetcher.budget.used == 0

    run_core(small.store, "small@v1", body, cache=small.cache, fetch=cfg)


# --- the policy alone --------------------------------------------------------------------


def test_a_pack_is_windowed_only_past_the_density_threshold() -> None:
    w = PackWindows(1 * MiB, 8 * MiB)
    pack = b"p" * 32
    n = 640
    for _ in range(int(n * DENSITY) - 1):
        w.missed(pack, 1, 50_000)
        assert w.size(pack, n) == 0
    w.missed(pack, 1, 50_000)
    assert w.size(pack, n) == 1 * MiB


def test_windows_grow_while_read_and_shrink_while_not() -> None:
    w = PackWindows(1 * MiB, 8 * MiB)
    pack = b"p" * 32
    n = 64
    w.missed(pack, 8, 8 * 50_000)
    assert w.size(pack, n) == 1 * MiB
    ids = [bytes([i]) * 32 for i in range(20)]
    w.fetched(pack, ((i, 50_000) for i in ids))
    for i in ids:  # all read: grow
        w.asked(i)
    assert w.size(pack, n) == 2 * MiB
    assert w.size(pack, n) == 4 * MiB
    more = [bytes([100 + i]) * 32 for i in range(100)]
    w.fetched(pack, ((i, 50_000) for i in more))  # none read: shrink
    assert w.size(pack, n) == 2 * MiB
    assert w.size(pack, n) == 1 * MiB
    assert w.size(pack, n) == 1 * MiB  # never below the first size


def test_outstanding_window_bytes_are_bounded_by_bytes_asked_for() -> None:
    w = PackWindows(1 * MiB, 8 * MiB)
    w.missed(b"p" * 32, 1, 50_000)
    assert w.allowance() == 50_000
    w.fetched(b"p" * 32, [(b"a" * 32, 50_000)])
    assert w.allowance() == 0
    w.asked(b"a" * 32)  # read after all: credit
    assert w.allowance() > 50_000
