"""The lock pyfuse3's worker tasks take in turn to wait for requests
(vfs/mount/fuse.py, _ReaderLock): one holder at a time, handed over in arrival
order, and a waiter cancelled while parked never holds it."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import trio
import trio.testing

from vfs.mount.fuse import _ReaderLock, _trio_for_pyfuse3


def _in_trio(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(fn)
    def test() -> None:
        trio.run(fn)

    return test


@_in_trio
async def test_one_holder_at_a_time_in_arrival_order() -> None:
    lock = _ReaderLock()
    inside: list[int] = []
    order: list[int] = []

    async def task(k: int) -> None:
        for _ in range(3):  # back for the lock at once, as pyfuse3's workers are
            async with lock:
                inside.append(k)
                assert len(inside) == 1, inside
                order.append(k)
                await trio.lowlevel.checkpoint()  # others run, as in wait_readable
                inside.remove(k)

    async with trio.open_nursery() as n, lock:  # held while the tasks queue up
        for k in range(5):
            n.start_soon(task, k)
            await trio.testing.wait_all_tasks_blocked()
    assert order == [0, 1, 2, 3, 4] * 3


@_in_trio
async def test_a_free_lock_is_taken_without_a_trip_through_the_scheduler() -> None:
    lock = _ReaderLock()
    async with lock:
        pass
    async with lock:  # free again: a second holder gets it at once
        pass


@_in_trio
async def test_a_waiter_cancelled_while_parked_never_holds_it() -> None:
    lock = _ReaderLock()
    got: list[str] = []

    async def waiter(name: str, scope_box: list[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            scope_box.append(scope)
            async with lock:
                got.append(name)

    box: list[trio.CancelScope] = []
    async with trio.open_nursery() as n, lock:
        n.start_soon(waiter, "cancelled", box)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(waiter, "second", [])
        await trio.testing.wait_all_tasks_blocked()
        box[0].cancel()
        await trio.testing.wait_all_tasks_blocked()
        # released: the lock went to "second", not to the cancelled waiter
    assert got == ["second"]
    async with lock:  # and it is free again afterwards
        pass


@_in_trio
async def test_a_holder_that_raises_hands_it_on() -> None:
    lock = _ReaderLock()
    got: list[str] = []

    async def failing() -> None:
        try:
            async with lock:
                await trio.testing.wait_all_tasks_blocked()
                raise trio.ClosedResourceError  # what wait_readable raises on unmount
        except trio.ClosedResourceError:
            got.append("closed")

    async def next_one() -> None:
        async with lock:
            got.append("next")

    async with trio.open_nursery() as n:
        n.start_soon(failing)
        await trio.testing.wait_all_tasks_blocked(cushion=0.0)
        n.start_soon(next_one)
    assert got == ["closed", "next"]


def test_a_queued_request_is_waited_for_without_trio_s_epoll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """_Requests.wait_readable: a readable descriptor returns after one checkpoint,
    without trio's wait (no epoll registration); an empty one waits in trio's
    wait until written."""
    from vfs.mount.fuse import _Requests

    trio_waits: list[int] = []
    real_wait = trio.lowlevel.wait_readable

    async def counted(fd: int) -> None:
        trio_waits.append(fd)
        await real_wait(fd)

    monkeypatch.setattr(trio.lowlevel, "wait_readable", counted)
    wait = _Requests().wait_readable
    r, w = os.pipe()

    async def main() -> None:
        os.write(w, b"x")
        with trio.testing.assert_checkpoints():
            await wait(r)
        assert trio_waits == []
        os.read(r, 1)
        with trio.move_on_after(0.2) as scope:
            await wait(r)  # empty: parks in trio's wait_readable
        assert scope.cancelled_caught and trio_waits == [r]
        async with trio.open_nursery() as n:
            n.start_soon(wait, r)
            await trio.sleep(0.05)
            os.write(w, b"y")  # wakes it through trio's epoll
        assert trio_waits == [r, r]

    try:
        trio.run(main)
    finally:
        os.close(r)
        os.close(w)


def _serve(shim: Any, fd: int, workers: int, requests: int) -> int:
    """pyfuse3's request loop in miniature (pyfuse3 internal.pxi, _session_loop):
    `workers` tasks take the reader lock in turn, wait for `fd` under it, read one
    byte (a request) after letting go, and handle it without blocking. A bystander
    task counts how often it gets to run meanwhile; returned."""
    lock = shim.Lock()
    wait = shim.lowlevel.wait_readable
    served = 0
    ticks = 0

    async def worker() -> None:
        nonlocal served
        while served < requests:
            async with lock:
                if served >= requests:
                    return
                await wait(fd)
            os.read(fd, 1)
            served += 1

    async def bystander() -> None:
        nonlocal ticks
        while served < requests:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async def main() -> None:
        async with trio.open_nursery() as n:
            for _ in range(workers):
                n.start_soon(worker)
            n.start_soon(bystander)

    trio.run(main)
    return ticks


@pytest.mark.parametrize("workers", [1, 4])
def test_a_steady_stream_of_requests_starves_no_other_task(workers: int) -> None:
    """Requests always queued: each is answered without trio's wait, and without a
    checkpoint while other readers park, yet every request lets the other tasks
    run (a parked reader's turn, or the checkpoint when none parks)."""
    r, w = os.pipe()
    try:
        os.write(w, b"x" * 400)
        ticks = _serve(_trio_for_pyfuse3(), r, workers, 400)
    finally:
        os.close(r)
        os.close(w)
    assert ticks >= 400 // 2


def test_with_readers_parked_a_queued_request_is_answered_without_yielding() -> None:
    shim = _trio_for_pyfuse3()
    lock = shim.Lock()
    wait = shim.lowlevel.wait_readable
    r, w = os.pipe()

    async def main() -> None:
        async with trio.open_nursery() as n, lock:
            os.write(w, b"x")
            with trio.testing.assert_checkpoints():
                await wait(r)  # nobody parked: yields once
            n.start_soon(_take, lock)
            await trio.testing.wait_all_tasks_blocked()
            assert lock.waiting
            with trio.testing.assert_no_checkpoints():
                await wait(r)  # the release below hands over: no yield here

    async def _take(lock: Any) -> None:
        async with lock:
            pass

    try:
        trio.run(main)
    finally:
        os.close(r)
        os.close(w)


def test_pyfuse3_sees_trio_with_the_two_replacements_and_nothing_else_changed() -> None:
    shim = _trio_for_pyfuse3()
    assert isinstance(shim.Lock(), _ReaderLock)
    assert shim.ClosedResourceError is trio.ClosedResourceError
    assert shim.lowlevel.wait_readable is not trio.lowlevel.wait_readable
    assert shim.lowlevel.wait_readable.__qualname__ == "_Requests.wait_readable"
    for name in ("current_task", "current_trio_token", "notify_closing", "checkpoint"):
        assert getattr(shim.lowlevel, name) is getattr(trio.lowlevel, name)
    assert shim.open_nursery is trio.open_nursery
