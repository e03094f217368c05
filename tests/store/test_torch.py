"""vfs.torch (issue 13 item 3): a map-style dataset over a version that DataLoader
workers under spawn read right, and a sampler whose order hint makes the fetches run
in exactly the loader's order."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import vfs
from tests.store.apidata import Committed, commit_v3
from vfs.api import Version
from vfs.torch import OrderHintSampler, VfsDataset

torch = pytest.importorskip("torch", reason="torch is an optional extra (vfs[torch])")
from torch.utils.data import DataLoader, RandomSampler  # noqa: E402


@pytest.fixture
def committed(store_url: str, tmp_path: Path) -> Committed:
    return commit_v3(store_url, tmp_path)


def digest(data: bytes) -> str:
    """A transform that spawn workers can import (module level)."""
    return hashlib.sha256(data).hexdigest()


def test_loader_with_spawn_workers_reads_every_file(committed: Committed) -> None:
    ds: VfsDataset[Any] = VfsDataset(
        "ds@v3", root="images", store=committed.store_url, cache_dir=committed.cache_dir
    )
    assert ds.paths == sorted(ds.paths) and len(ds) == 40
    path, data = ds[3]
    assert path == "images/003.jpg" and data == (committed.src / path).read_bytes()
    sampler = OrderHintSampler(RandomSampler(ds, generator=torch.Generator().manual_seed(1)), ds)
    loader = DataLoader(
        ds, sampler=sampler, batch_size=None, num_workers=2, multiprocessing_context="spawn"
    )
    seen = {}
    for p, d in loader:
        seen[p] = d
    assert set(seen) == set(ds.paths)
    for p, d in seen.items():
        assert d == (committed.src / p).read_bytes(), p
    # With a transform, items are what it makes of the bytes.
    hashed = VfsDataset(
        "ds@v3",
        root="images",
        transform=digest,
        store=committed.store_url,
        cache_dir=committed.cache_dir,
    )
    loader = DataLoader(hashed, batch_size=8, num_workers=2, multiprocessing_context="spawn")
    got = [h for batch in loader for h in batch]
    assert got == [digest((committed.src / p).read_bytes()) for p in hashed.paths]


def _places_of_gets(
    v: Version, order: list[str], gets: list[tuple[bytes, int, int]]
) -> list[list[int]]:
    """For each GET (pack, offset, length), the places of the order whose chunks it
    holds."""
    where: list[list[tuple[bytes, int]]] = []
    for p in order:
        found = v.reader.stat(p)
        assert found is not None
        where.append([(w.loc.pack, w.loc.offset) for w in v.reader.wanted(found)])
    out = []
    for pack, off, n in gets:
        out.append(
            [
                i
                for i, locs in enumerate(where)
                if any(pk == pack and off <= o < off + n for pk, o in locs)
            ]
        )
    return out


def test_hint_fetches_in_the_loader_order(
    committed: Committed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds: VfsDataset[Any] = VfsDataset(
        "ds@v3", root="images", store=committed.store_url, cache_dir=str(tmp_path / "cold")
    )
    store = ds.version.reader.store
    gets: list[tuple[bytes, int, int]] = []
    real = store.read_pack_range

    def recording(pack: bytes, offset: int, length: int) -> bytes | memoryview:
        if threading.current_thread().name.startswith("vfs-order"):
            gets.append((pack, offset, length))
        return real(pack, offset, length)

    monkeypatch.setattr(store, "read_pack_range", recording)
    # One fetch thread, and a budget so small that each file is its own batch: the
    # GETs' order is then the order the prefetch walked.
    sampler = OrderHintSampler(
        RandomSampler(ds, generator=torch.Generator().manual_seed(7)), ds, threads=1, ahead_bytes=1
    )
    order = list(sampler)  # the loader takes the whole epoch: the reader may run to its end
    assert sampler.last is not None and sampler.last.wait(60)
    paths = [ds.paths[i] for i in order]
    assert paths != sorted(paths)  # shuffled, or the test proves nothing
    places = _places_of_gets(ds.version, paths, gets)
    assert places == [[i] for i in range(len(paths))]  # exactly the loader's order
    # ... and every file is then read from the cache, with no GET of its own.
    before = ds.version.reader.chunks.requests
    for i in order:
        assert ds[i][1] == (committed.src / ds.paths[i]).read_bytes()
    assert ds.version.reader.chunks.requests == before


def test_hint_stays_within_its_budget(committed: Committed, tmp_path: Path) -> None:
    ds: VfsDataset[Any] = VfsDataset(
        "ds@v3", root="images", store=committed.store_url, cache_dir=str(tmp_path / "cold")
    )
    order = list(range(len(ds)))
    pf = ds.hint_order(order, ahead_bytes=1, threads=1)
    # The reader has not moved: the prefetch issues one batch, then waits.
    assert not pf.wait(2)
    assert pf.bytes_fetched > 0
    sizes = sum(ds.version.stat(p).st_size for p in ds.paths)
    assert pf.bytes_fetched < sizes
    pf.note_read(len(order) - 1)
    assert pf.wait(60)


def test_a_reader_waits_for_the_prefetch_of_its_chunk(
    committed: Committed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk whose GET the order prefetch has on its way is not asked for twice."""
    v = vfs.open_version("ds@v3", store=committed.store_url, cache_dir=str(tmp_path / "cold"))
    store = v.reader.store
    gate = threading.Event()
    real = store.read_pack_range

    def gated(pack: bytes, offset: int, length: int) -> bytes | memoryview:
        if threading.current_thread().name.startswith("vfs-order"):
            assert gate.wait(60)
        return real(pack, offset, length)

    monkeypatch.setattr(store, "read_pack_range", gated)
    path = "big.bin"
    found = v.reader.stat(path)
    assert found is not None
    ids = [w.ref.id for w in v.reader.wanted(found)]
    pf = v.prefetch([path], threads=1)
    while not pf.in_flight(ids[:1]):  # the prefetch's first GET is on its way, held
        assert not pf.done.is_set()
        time.sleep(0.01)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(v.read_bytes(path)))
    reader.start()
    time.sleep(0.5)  # let the reader reach the chunk it must wait for
    gate.set()
    reader.join(60)
    assert got == [(committed.src / path).read_bytes()]
    assert v.reader.chunks.requests == 0  # every chunk came through the prefetch
    assert pf.wait(60) and pf.requests > 0


def test_an_epoch_cut_short_stops_its_prefetch(committed: Committed, tmp_path: Path) -> None:
    ds: VfsDataset[Any] = VfsDataset(
        "ds@v3", root="images", store=committed.store_url, cache_dir=str(tmp_path / "cold")
    )
    sampler = OrderHintSampler(range(len(ds)), ds, ahead_bytes=1, threads=1)
    it = iter(sampler)
    assert next(it) == 0
    pf = sampler.last
    assert pf is not None
    it.close()  # as a loader that breaks out of its epoch does
    assert pf.wait(60)  # stopped, not waiting for a reader that will not come
    assert pf.bytes_fetched < sum(ds.version.stat(p).st_size for p in ds.paths)


def test_record_access_from_spawn_workers(committed: Committed, tmp_path: Path) -> None:
    """record_access=FILE: the files a loader's workers read, and only those, with
    their byte ranges, merged from every worker into one record (issue 13, item 6)."""
    from vfs import access

    rec = tmp_path / "run.access.json"
    rec.write_text("left by an earlier run\n")
    ds: VfsDataset[Any] = VfsDataset(
        "ds@v3",
        root="images",
        store=committed.store_url,
        cache_dir=committed.cache_dir,
        record_access=str(rec),
    )
    picked = list(range(0, len(ds), 3))
    loader = DataLoader(
        ds, sampler=picked, batch_size=None, num_workers=2, multiprocessing_context="spawn"
    )
    assert sorted(p for p, _ in loader) == [ds.paths[i] for i in picked]
    with ds.version.open("big.bin") as f:  # the parent's own reads count too
        f.seek(1000)
        f.read(500)
    ds.version.close()
    got = access.load(str(rec))
    want = {ds.paths[i]: [(0, (committed.src / ds.paths[i]).stat().st_size)] for i in picked}
    want["big.bin"] = [(1000, 1500)]
    assert got == {ds.version.spec: dict(sorted(want.items()))}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run.")) == [
        "run.access.json"  # no lock file beside it, for a project to commit by mistake
    ]


def test_a_failing_store_stops_the_prefetch_and_its_queue(
    committed: Committed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training job whose store stalled exited minutes after its error: each GET
    queued behind the order timed out in turn, and the interpreter joins the fetch
    threads at exit. The first failure now stops the prefetch; nothing queued runs,
    and the end of the process stops a prefetch still running."""
    from vfs.api import order
    from vfs.errors import BackendError

    v = vfs.open_version("ds@v3", store=committed.store_url, cache_dir=str(tmp_path / "cold"))
    store = v.reader.store
    real = store.read_pack_range
    tries: list[int] = []

    def failing(pack: bytes, offset: int, length: int) -> bytes | memoryview:
        tries.append(length)
        raise BackendError("the S3 endpoint accepted a connection but did not answer")

    monkeypatch.setattr(store, "read_pack_range", failing)
    paths = v.files("images")
    assert len(paths) > 8
    monkeypatch.setattr(order, "BATCH_FILES", 1)  # a span per file, queued in order
    pf = v.prefetch(paths, threads=1)
    assert pf.wait(30)
    assert len(tries) == 1, tries  # the first failure stopped the rest

    def slow(pack: bytes, offset: int, length: int) -> bytes | memoryview:
        time.sleep(0.5)  # the whole order would take len(paths) / 2 s
        return real(pack, offset, length)

    monkeypatch.setattr(store, "read_pack_range", slow)
    pf = v.prefetch(paths, threads=1)
    order._stop_all()  # what the interpreter's exit calls, before it joins threads
    assert pf.wait(1.5)
