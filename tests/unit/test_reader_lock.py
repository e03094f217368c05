"""The lock pyfuse3's worker tasks take in turn to wait for requests
(vfs/mount/fuse.py, _ReaderLock): one holder at a time, handed over in arrival
order, and a waiter cancelled while parked never holds it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

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


def test_pyfuse3_sees_trio_with_this_lock() -> None:
    shim = _trio_for_pyfuse3()
    assert shim.Lock is _ReaderLock
    assert shim.lowlevel is trio.lowlevel
    assert shim.ClosedResourceError is trio.ClosedResourceError
    assert shim.open_nursery is trio.open_nursery
