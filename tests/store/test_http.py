"""GETs made by a mount's trio thread (vfs/mount/http.py), against a real SeaweedFS,
and the loader's use of them: small cold spans on that road, large ones on worker
threads, and anything unclean asked again by a thread."""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.core import read_all, run_core, walk_path
from vfs.backends import curl
from vfs.backends.base import UrlRead
from vfs.backends.s3 import S3Backend
from vfs.cache import ChunkCache
from vfs.mount.core import FsCore
from vfs.mount.http import MultiGetter
from vfs.ops.commit import commit_dir
from vfs.store import Store

pytestmark = pytest.mark.s3

MiB = 1024 * 1024


def _random(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


async def _driven(fn: Any) -> Any:
    """fn(getter) with a MultiGetter driven in a nursery, then the getter closed."""
    getter = MultiGetter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(getter.run)
        try:
            return await fn(getter)
        finally:
            nursery.cancel_scope.cancel()


@pytest.fixture
def backend(s3_url: str) -> Iterator[S3Backend]:
    b = Store.open(s3_url).backend
    assert isinstance(b, S3Backend)
    yield b
    b.close()


def _get(getter: MultiGetter, read: UrlRead | None) -> Any:
    assert read is not None
    return getter.get(read.url, read.headers, read.silence, read.connect_timeout, read.ca_file)


def test_many_gets_at_once_answer_what_get_range_answers(backend: S3Backend) -> None:
    data = _random(3 * MiB)
    backend.put("packs/p", data)
    rng = random.Random(2)
    ranges = [(rng.randrange(len(data)), rng.randrange(1, 300_000)) for _ in range(60)]
    ranges += [(len(data) - 10, 100), (len(data) + 10, 100)]  # short at the end; past it

    async def fetch(getter: MultiGetter) -> list[bytes | memoryview | None]:
        out: list[bytes | memoryview | None] = [None] * len(ranges)

        async def one(i: int, off: int, n: int) -> None:
            read = backend.url_read("packs/p", off, n)
            assert read is not None
            status, body = await _get(getter, read)
            out[i] = read.answer(status, body)

        async with trio.open_nursery() as n:
            for i, (off, length) in enumerate(ranges):
                n.start_soon(one, i, off, length)
        assert getter.gets == len(ranges)
        return out

    got = trio.run(_driven, fetch)
    assert got == [backend.get_range("packs/p", off, n) for off, n in ranges]
    assert got[-2] == data[-10:] and got[-1] == b""


def test_a_missing_pack_is_not_found_and_a_bad_signature_is_left_to_boto3(
    backend: S3Backend,
) -> None:
    from vfs.errors import NotFound

    backend.put("packs/p", b"x" * 1000)

    async def fetch(getter: MultiGetter) -> None:
        read = backend.url_read("packs/missing", 0, 10)
        assert read is not None
        status, body = await _get(getter, read)
        assert status == 404
        with pytest.raises(NotFound, match="packs/missing"):
            read.answer(status, body)
        read = backend.url_read("packs/p", 0, 10)
        assert read is not None
        status, body = await getter.get(
            read.url.replace("Signature=", "Signature=0"),
            read.headers,
            read.silence,
            read.connect_timeout,
            read.ca_file,
        )
        assert status == 403 and read.answer(status, body) is None

    trio.run(_driven, fetch)


def test_a_silent_server_a_refused_connection_and_a_cancelled_get_each_fail_cleanly(
    backend: S3Backend,
) -> None:
    """Silence past the bound is curl.Silent; a refused connection curl.Failed; a get
    cancelled mid-transfer ends its transfer, and the getter goes on serving."""
    backend.put("packs/p", b"y" * 5000)
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)  # accepts (in the kernel's backlog), never answers
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused = f"http://127.0.0.1:{closed.getsockname()[1]}/x"
    closed.close()
    silent = f"http://127.0.0.1:{mute.getsockname()[1]}/x"

    async def fetch(getter: MultiGetter) -> None:
        t0 = time.monotonic()
        with pytest.raises(curl.Silent):
            await getter.get(silent, [], 1, 5.0, None)
        assert time.monotonic() - t0 < 10  # 1 s of silence, checked once a second
        with pytest.raises(curl.Failed):
            await getter.get(refused, [], 10, 5.0, None)
        with trio.move_on_after(0.3) as scope:
            await getter.get(silent, [], 30, 5.0, None)
        assert scope.cancelled_caught and not getter._running
        read = backend.url_read("packs/p", 10, 20)
        status, body = await _get(getter, read)
        assert read is not None and read.answer(status, body) == b"y" * 20

    try:
        trio.run(_driven, fetch)
    finally:
        mute.close()


def test_a_get_fails_once_its_getter_is_closed(backend: S3Backend) -> None:
    backend.put("packs/p", b"z" * 100)

    async def main() -> None:
        getter = MultiGetter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(getter.run)
            await trio.sleep(0)
            nursery.cancel_scope.cancel()
        with pytest.raises(curl.Failed, match="closed"):
            await _get(getter, backend.url_read("packs/p", 0, 10))

    trio.run(main)


# -- the loader's use of it -------------------------------------------------------


class _Counted:
    """Counts the thread road's GETs of a backend (get_range), and can swap its URL
    road for one that always fails."""

    def __init__(self, backend: S3Backend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.thread_gets: list[int] = []  # their lengths
        real_range = backend.get_range

        def get_range(key: str, offset: int, length: int) -> bytes | memoryview:
            self.thread_gets.append(length)
            return real_range(key, offset, length)

        monkeypatch.setattr(backend, "get_range", get_range)
        self._backend = backend
        self._monkeypatch = monkeypatch

    def break_url_road(self) -> None:
        """URL reads now go to a port where nothing listens."""
        real_url_read = self._backend.url_read
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))
        port = dead.getsockname()[1]
        dead.close()

        def url_read(key: str, offset: int, length: int) -> UrlRead | None:
            read = real_url_read(key, offset, length)
            assert read is not None
            return UrlRead(
                f"http://127.0.0.1:{port}/nothing",
                read.headers,
                read.silence,
                read.connect_timeout,
                read.ca_file,
                read.answer,
            )

        self._monkeypatch.setattr(self._backend, "url_read", url_read)


def _commit(s3_url: str, tmp_path: Path) -> dict[str, bytes]:
    src = tmp_path / "src"
    files = {f"d/f{i:03d}.bin": _random(20_000 + i * 997, seed=i) for i in range(40)}
    files["big.bin"] = _random(6 * MiB, seed=99)
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    store = Store.open(s3_url)
    commit_dir(store, str(src), "ds", tag="v1", cache_dir=str(tmp_path / "wc"))
    store.close()
    return files


def _run(
    s3_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    body: Callable[[FsCore, _Counted, dict[str, bytes]], Awaitable[None]],
    broken: bool = False,
) -> None:
    """body(core, counted, files) on an FsCore over a bare S3 store of _commit's
    files, its thread road counted (and its URL road broken, if asked)."""
    files = _commit(s3_url, tmp_path)
    store = Store.open(s3_url)
    assert isinstance(store.backend, S3Backend)
    counted = _Counted(store.backend, monkeypatch)
    if broken:
        counted.break_url_road()
    cache = ChunkCache(tmp_path / "cache", 1 << 30)
    try:
        run_core(store, "ds@v1", lambda core: body(core, counted, files), cache=cache)
    finally:
        cache.close()
        store.close()


async def _read(core: FsCore, files: dict[str, bytes], rel: str) -> None:
    assert await read_all(core, (await walk_path(core, rel)).ino) == files[rel]


def test_small_cold_files_come_by_the_trio_thread_and_a_large_one_by_threads(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(core: FsCore, counted: _Counted, files: dict[str, bytes]) -> None:
        small = sorted(p for p in files if p.startswith("d/"))
        random.Random(3).shuffle(small)
        async with trio.open_nursery() as n:
            for rel in small:
                n.start_soon(_read, core, files, rel)
        with trio.move_on_after(10):  # a window no reader waits for may still run
            while core.fetcher.budget.used:
                await trio.sleep(0.01)
        stats = core.fetcher.stats
        assert stats.inline_gets > stats.inline_fallbacks  # none, unless the server
        # answered something unclean under load: then, and only then, a small span
        # went to a worker thread. Otherwise only pack windows (a MiB or more) did.
        inline = core.fetcher.config.inline_bytes
        small_gets = [n for n in counted.thread_gets if n <= inline]
        assert len(small_gets) == stats.inline_fallbacks
        assert stats.requests == stats.inline_gets - stats.inline_fallbacks + len(
            counted.thread_gets
        )
        before = len(counted.thread_gets)
        await _read(core, files, "big.bin")
        assert len(counted.thread_gets) > before  # 8 MiB parts: worker threads

    _run(s3_url, tmp_path, monkeypatch, body)


def test_a_url_road_that_fails_is_asked_again_by_a_thread(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(core: FsCore, counted: _Counted, files: dict[str, bytes]) -> None:
        for rel in sorted(p for p in files if p.startswith("d/"))[:10]:
            await _read(core, files, rel)
        stats = core.fetcher.stats
        assert stats.inline_gets > 0
        assert stats.inline_fallbacks == stats.inline_gets
        small = [n for n in counted.thread_gets if n <= core.fetcher.config.inline_bytes]
        assert len(small) >= stats.inline_gets  # each asked again (retried, if need be)
        assert stats.failures == 0

    _run(s3_url, tmp_path, monkeypatch, body, broken=True)


def test_the_daemon_has_no_url_road_under_fault_injection(tmp_path: Path, s3_url: str) -> None:
    """The fault layer must see every read: it offers no URL road, so reads through
    it take worker threads (where its faults fire)."""
    from vfs.backends.faults import FaultControl, FaultyBackend

    store = Store.open(s3_url)
    try:
        assert store.backend.url_read("packs/x", 0, 10) is not None
        wrapped = FaultyBackend(store.backend, FaultControl(tmp_path / "ctl"))
        assert wrapped.url_read("packs/x", 0, 10) is None
        assert os.environ.get("VFS_FAULTS") is None
    finally:
        store.close()
