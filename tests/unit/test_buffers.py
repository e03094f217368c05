"""The cache's pool of run buffers (vfs/cache/buffers.py): a buffer comes back only
once nothing refers to it, the pool's bounds hold, and many threads share it. Real
buffers and real threads; nothing here is timed."""

from __future__ import annotations

import threading

from vfs.cache.buffers import IDLE_BYTES, MAX_BYTES, MAX_LENT, MIN_BYTES, RunBuffers

KiB = 1024
MiB = 1024 * KiB


def test_sizes_outside_the_pool_get_none() -> None:
    pool = RunBuffers()
    assert pool.lend(16 * KiB) is None
    assert pool.lend(MAX_BYTES + 1) is None
    view = pool.lend(MAX_BYTES)
    assert view is not None and len(view) == MAX_BYTES


def test_a_buffer_is_reused_only_when_no_view_of_it_is_alive() -> None:
    pool = RunBuffers()
    view = pool.lend(700 * KiB)
    assert view is not None and len(view) == 700 * KiB and not view.readonly
    view[:3] = b"abc"
    ro = view[:3].toreadonly()
    del view
    again = pool.lend(600 * KiB)  # same size class (1 MiB), but `ro` is alive
    assert again is not None and pool.reused == 0
    assert bytes(ro) == b"abc"
    again[:3] = b"xyz"
    assert bytes(ro) == b"abc"
    del ro, again
    third = pool.lend(1 * MiB)
    assert third is not None and pool.reused == 1
    assert len(third) == 1 * MiB


def test_the_pool_lends_at_most_max_lent_and_keeps_at_most_idle_bytes() -> None:
    pool = RunBuffers()
    views = [pool.lend(MAX_BYTES) for _ in range(MAX_LENT)]
    assert all(v is not None for v in views)
    assert pool.lend(MIN_BYTES) is None  # all out and alive: the caller reads as before
    assert pool.counts() == (MAX_LENT, 0)
    views.clear()
    small = pool.lend(MIN_BYTES)  # the returned ones were reclaimed; the smallest
    assert small is not None and pool.reused == 1  # idle one that fits is lent again
    lent, idle = pool.counts()
    assert lent == 1 and idle == IDLE_BYTES - MAX_BYTES  # the rest went back to the allocator


def test_threads_never_share_a_live_buffer() -> None:
    pool = RunBuffers()
    errors: list[str] = []

    def work(tag: int) -> None:
        held = []
        for i in range(300):
            view = pool.lend(MIN_BYTES + (i % 7) * 100 * KiB)
            if view is None:
                continue
            mark = bytes([tag]) * 64
            view[:64] = mark
            held.append((view[:64].toreadonly(), mark))
            if len(held) > 3:
                old, want = held.pop(0)
                if bytes(old) != want:
                    errors.append(f"thread {tag}: a live buffer was lent again")
        for old, want in held:
            if bytes(old) != want:
                errors.append(f"thread {tag}: a live buffer was lent again")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pool.reused > 0
