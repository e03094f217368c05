"""The mount's filesystem core driven in process, without FUSE.

`run_core` mounts a version in an FsCore inside `trio.run` and hands it to a test's
async body; `listing`, `walk_path`, `read_all` and `read_everything` do what
readdir, a path walk and reads through FUSE would do, one core call at a time.
Used by the core's own tests and by the tests that feed it hostile versions.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from vfs.errors import VfsError
from vfs.mount.core import FsCore
from vfs.mount.loader import FetchConfig
from vfs.mount.namespace import ROOT, Attr, CoreConfig
from vfs.store import Store

MiB = 1024 * 1024

# For forged and fuzzed versions: a read that cannot succeed fails within 2 s.
SHORT_FETCH = FetchConfig(read_timeout=2)


def run_core(
    store: Store,
    target: str,
    body: Callable[[FsCore], Awaitable[None]],
    *,
    cache: Any = None,
    fetch: FetchConfig | None = None,
    config: CoreConfig | None = None,
) -> None:
    """Mount `target` in an FsCore (no FUSE) and run `body` on it."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            core = await FsCore.create(
                store, target, nursery=nursery, cache=cache, fetch=fetch, config=config
            )
            await body(core)
            nursery.cancel_scope.cancel()

    trio.run(main)


async def listing(core: FsCore, ino: int, start: int = 0) -> list[tuple[bytes, int, int]]:
    """readdir of a directory inode from offset `start`: (name, inode, next offset)
    of each entry, '.' and '..' included."""
    fh = await core.opendir(ino)
    out: list[tuple[bytes, int, int]] = []

    def reply(name: bytes, attr: Attr, nxt: int) -> bool:
        out.append((name, attr.ino, nxt))
        return True

    await core.readdir(fh, start, reply)
    core.releasedir(fh)
    return out


async def walk_path(core: FsCore, path: str) -> Attr:
    ino = ROOT
    attr = await core.getattr(ino)
    for part in path.split("/"):
        attr = await core.lookup(ino, part.encode())
        assert attr.ino, f"{path}: {part} not found"
        ino = attr.ino
    return attr


async def read_all(core: FsCore, ino: int, block: int = MiB) -> bytes:
    fh = await core.open(ino, os.O_RDONLY)
    out = []
    off = 0
    while True:
        data = await core.read(fh, off, block)
        if not data:
            break
        out.append(data)
        off += len(data)
    core.release(fh)
    return b"".join(out)


async def read_everything(core: FsCore, ino: int) -> None:
    """Open and read the start of every file in a directory; vfs errors allowed."""
    for name, _, _ in (await listing(core, ino))[2:]:
        a = await core.lookup(ino, name)
        if a.ino and a.mode & 0o170000 == 0o100000:
            with contextlib.suppress(VfsError):
                fh = await core.open(a.ino, os.O_RDONLY)
                await core.read(fh, 0, 100)
