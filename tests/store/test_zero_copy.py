"""The zero-copy raw path: chunks stored raw are verified and handed on as views of
their GET's one buffer (reader.ChunkSource.fetch_span, format.decode_chunk), through
the mount's loader to the reply and the cache writer.

Over a real store (local, and SeaweedFS S3 for the real body reading) wrapped in the
fault injection layer, whose `corrupt` fault flips the middle byte of what a ranged
GET returns: damage on the way must be caught on this path exactly as on the copying
one, and no view may outlive what the loader counts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest
import trio

from vfs import format as fmt
from vfs.backends.faults import Fault, FaultControl, FaultyBackend
from vfs.cache import ChunkCache
from vfs.errors import CorruptObject
from vfs.mount.loader import FetchConfig, Loader, _Flight
from vfs.ops.commit import commit_dir
from vfs.reader import ChunkSource, Version, Wanted, plan_ranges
from vfs.refs import resolve
from vfs.store import Store

MiB = 1024 * 1024
SIZE = 6 * MiB  # random bytes: several chunks (256 KiB to 4 MiB), all stored raw


class RawWorld:
    """One file of random bytes committed, read through a store that can garble."""

    def __init__(self, store_url: str, tmp: Path) -> None:
        src = tmp / "src"
        src.mkdir()
        self.data = os.urandom(SIZE)
        (src / "big.bin").write_bytes(self.data)
        real = Store.open(store_url)
        commit_dir(real, str(src), "ds", tag="v1", cache_dir=str(tmp / "wc"))
        self.faults = FaultControl(tmp / "ctl")
        self.store = Store(FaultyBackend(real.backend, self.faults))
        version = Version(self.store, "ds", resolve(self.store, "ds@v1").commit)
        found = version.stat("big.bin")
        assert found is not None
        self.wanted: list[Wanted] = version.wanted(found)

    def joined(self, got: Mapping[bytes, fmt.ChunkBytes]) -> bytes:
        return b"".join(bytes(got[w.ref.id]) for w in self.wanted)

    def hit_by_flip(self) -> Wanted:
        """The chunk whose bytes hold the middle byte of the one span (the flip)."""
        (span,) = plan_ranges(self.wanted)
        middle = span.start + (span.end - span.start) // 2
        for w in self.wanted:
            if w.loc.offset <= middle < w.loc.offset + w.loc.stored_length:
                return w
        raise AssertionError("no chunk holds the middle of the span")


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> RawWorld:
    return RawWorld(store_url, tmp_path)


def test_raw_chunks_are_views_of_one_get_buffer(world: RawWorld) -> None:
    assert len(world.wanted) > 2
    assert {w.loc.codec for w in world.wanted} == {fmt.CODEC_RAW}  # random: never zstd
    (span,) = plan_ranges(world.wanted)
    got = ChunkSource(world.store).fetch_span(span, cache=False)
    assert world.joined(got) == world.data
    views = list(got.values())
    assert all(isinstance(v, memoryview) and v.readonly for v in views)
    assert len({id(v.obj) for v in views if isinstance(v, memoryview)}) == 1


def test_a_corrupt_raw_chunk_fails_the_span_and_a_window_one_is_left_out(
    world: RawWorld,
) -> None:
    (span,) = plan_ranges(world.wanted)
    bad = world.hit_by_flip()
    world.faults.set(Fault("corrupt", ops=("get_range",)), record=False)
    source = ChunkSource(world.store)
    with pytest.raises(CorruptObject, match=bad.ref.id.hex()[:16]):
        source.fetch_span(span, cache=False)
    # Fetched beside the wanted ones (a pack window), it is left out; the others
    # still come, verified, as views.
    got = source.fetch_span(span, cache=False, optional={bad.ref.id})
    assert set(got) == {w.ref.id for w in world.wanted} - {bad.ref.id}
    for w in world.wanted:
        if w is not bad:
            lo = w.loc.offset - world.wanted[0].loc.offset
            assert bytes(got[w.ref.id]) == world.data[lo : lo + w.ref.length]


def test_the_loader_refetches_a_garbled_raw_chunk_and_caches_the_right_bytes(
    world: RawWorld, tmp_path: Path
) -> None:
    """One garbled answer: the loader's retry fetches the span again and serves and
    caches the right bytes, never the garbled ones."""
    cache = ChunkCache(tmp_path / "cache", 1 << 30)
    world.faults.set(Fault("corrupt", ops=("get_range",), times=1), record=False)
    served: dict[bytes, fmt.ChunkBytes] = {}
    mem_used = 0
    buffers = 0

    async def main() -> None:
        nonlocal mem_used, buffers
        async with trio.open_nursery() as nursery:
            loader = Loader(world.store, cache, nursery, FetchConfig(read_timeout=10.0))
            served.update(await loader.get(world.wanted))
            assert loader.stats.retries == 1
            mem_used, buffers = loader._mem.used, len(loader._mem.buffers)
            nursery.cancel_scope.cancel()  # the cache writer's queue is written out

    trio.run(main)
    assert world.joined(served) == world.data
    # The chunks are views of one buffer, which the memory LRU counts once: the
    # span's bytes, or the pooled buffer (a power of two) S3 received them into.
    assert buffers == 1
    assert mem_used == SIZE or mem_used == 1 << (SIZE - 1).bit_length()
    again = cache.get_many(w.ref.id for w in world.wanted)
    assert world.joined(again) == world.data
    cache.close()


def test_a_small_chunk_asked_for_in_a_big_span_is_copied_out(
    world: RawWorld, tmp_path: Path
) -> None:
    """A chunk asked for beside a window (here: the rest of the span, speculative)
    that fills less than half of the GET's buffer is copied out, so the memory LRU
    never keeps a whole window alive for it."""
    small = min(world.wanted, key=lambda w: w.ref.length)
    assert 2 * small.ref.length < SIZE
    cache = ChunkCache(tmp_path / "cache", 1 << 30)
    got: dict[bytes, fmt.ChunkBytes] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            loader = Loader(world.store, cache, nursery, FetchConfig(read_timeout=10.0))
            others = {w.ref.id: w for w in world.wanted if w is not small}
            flights = {
                w.ref.id: loader._flights.setdefault(w.ref.id, _Flight()) for w in world.wanted
            }
            later: list[dict[bytes, fmt.ChunkBytes]] = []
            (span,) = plan_ranges(world.wanted)
            await loader._fetch_span(span, flights, True, others, later)
            for cid, flight in flights.items():
                assert flight.data is not None
                got[cid] = flight.data
            assert isinstance(loader._mem.chunks[small.ref.id], bytes)
            assert loader._mem.used == small.ref.length
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert world.joined(got) == world.data
    assert isinstance(got[small.ref.id], bytes)
    cache.close()
