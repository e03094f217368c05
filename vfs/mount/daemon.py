"""A mount's daemon: it mounts, serves, answers its control socket, and unmounts.

This module owns the process that serves a mount, `vfs mount --foreground` or the
daemon `vfs mount` starts: the checks that need the store (dataset or ref unknown,
store unreachable; the mountpoint checks are vfs.mount.control's, run again here),
the daemon's log file and malloc tuning, its report on the ready pipe (live, or the
error), the server side of its control socket (switch, status, info), and the clean
shutdown on SIGTERM, SIGINT and SIGHUP. Everything a client does (the mountpoint
checks, control requests, unmounting) is vfs.mount.control, which does not import
trio; the messages both sides exchange are its typed classes.

Entry point: `python -m vfs.mount.daemon OPTIONS`, which `vfs mount` starts
(control.start_daemon) and which then serves until unmounted (`run`). OPTIONS is
one JSON object, control.MountOptions, already checked by `vfs mount`. A start-up
of its own, rather than `python -m vfs.cli mount --foreground`, because the
daemon's start-up is on the way to a live mount: this imports the daemon's modules
and nothing else (no verbs, no argument parser). Its errors go to the parent through
the ready pipe and, like every line it writes, to its log file, which is its stderr.

Concurrency: the daemon is one trio run. pyfuse3 serves requests in tasks of its own
nursery; the control server, the signal watcher and the readiness check are tasks
beside it; the core's fetches run in the outer nursery, which outlives them all.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import trio

from vfs.errors import UsageError, VfsError
from vfs.mount.control import (
    Failure,
    InfoReply,
    Live,
    MountOptions,
    StatusReply,
    SwitchReply,
    check_mountpoint,
    control_path,
)

if TYPE_CHECKING:
    from vfs.cache import ChunkCache

log = logging.getLogger(__name__)

_MAX_REQUEST = 64 * 1024


# --- the daemon -----------------------------------------------------------------------------


class _Notifier:
    """Tells the waiting parent (if any) once: live, or the error."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def send(self, msg: Live | Failure) -> bool:
        """False if there is no parent to tell (--foreground)."""
        if self.fd is None:
            return False
        fd, self.fd = self.fd, None
        with contextlib.suppress(OSError):
            os.write(fd, json.dumps(msg.to_doc()).encode() + b"\n")
        with contextlib.suppress(OSError):
            os.close(fd)
        return True

    def fail(self, e: BaseException) -> None:
        self.send(Failure.of(e))


def run(opts: MountOptions) -> int:
    """Mount and serve until unmounted or signalled (the daemon, or --foreground)."""
    from vfs.cache import ChunkCache
    from vfs.store import Store

    opts = opts.resolved()
    assert opts.store_url is not None and opts.cache_size is not None
    notify = _Notifier(opts.ready_fd)
    if opts.ready_fd is not None:
        _log_to_file()
    _tune_malloc()
    try:
        mnt = check_mountpoint(opts.mountpoint)
        store = Store.open(opts.store_url, opts.endpoint_url)
        cache = ChunkCache(opts.cache_dir, opts.cache_size)
        try:
            # When the store cannot be reached, the cache's pins recorded its config
            # and the refs they were pinned by: serve those versions from the cache,
            # asking the store nothing that the cache holds (no timeouts waited out).
            offline_why = store.check_config_or_pins(cache, opts.cache_dir)
        except BaseException:
            cache.close()
            store.close()
            raise
        store.use_cache(cache)  # pinned versions stay readable while the store is away
    except BaseException as e:
        notify.fail(e)
        raise
    try:
        try:
            trio.run(_serve, opts, mnt, store, cache, notify, offline_why)
        except BaseExceptionGroup as group:
            raise _sole(group) from None
    except BaseException as e:
        notify.fail(e)
        raise
    finally:
        _close_cache_bounded(cache)
        store.close()
    log.info("%s: unmounted; daemon exits", mnt)
    return 0


def _tune_malloc() -> None:
    """Keep a long-running daemon's memory flat; call before any thread starts.

    Chunk buffers of 256 KiB to 4 MiB are allocated and freed by many threads. With
    glibc's defaults (an arena per thread, and an mmap threshold that rises to the
    largest buffer freed so far) freed buffers stay behind in fragmented arenas: over
    a 10-minute soak (scripts/soak.py) the daemon's RSS crept from 350 to 450 MiB.
    Two arenas and a fixed 128 KiB threshold (larger buffers are mmapped, and given
    back when freed) held it flat near 200 MiB at the same read rate. The user's own
    MALLOC_* settings win; elsewhere than glibc this does nothing."""
    if "MALLOC_ARENA_MAX" in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_mmap_threshold, m_arena_max = -3, -8  # from glibc's malloc.h
    mallopt(m_mmap_threshold, 128 * 1024)
    mallopt(m_arena_max, 2)


CACHE_CLOSE_TIMEOUT = 10.0


def _close_cache_bounded(cache: ChunkCache) -> None:
    """Close the cache, but never let that keep a finished daemon alive.

    py-lmdb's Environment.close() waits for the thread that last began a write
    transaction to end it. After a lazy unmount we have seen it wait forever on a
    thread that no longer exists (py-lmdb 3.0; one thread left, parked in
    env_clear). Every entry the daemon wrote was committed already, so giving up
    on the close loses nothing: the process exit releases the environment.
    """
    closer = threading.Thread(target=cache.close, name="vfs-cache-close", daemon=True)
    closer.start()
    closer.join(CACHE_CLOSE_TIMEOUT)
    if closer.is_alive():
        log.warning(
            "the chunk cache did not close within %.0f s; exiting anyway (its entries are committed)",
            CACHE_CLOSE_TIMEOUT,
        )


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error inside nested trio nurseries' groups, so users see its message;
    the group itself if it holds several."""
    leaves: list[BaseException] = []

    def collect(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                collect(sub)
        else:
            leaves.append(e)

    collect(group)
    return leaves[0] if len(leaves) == 1 else group


def _log_to_file() -> None:
    """The daemon's stderr is its log file (start_daemon set that up)."""
    level = min(logging.getLogger().level or logging.WARNING, logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _serve(
    opts: MountOptions, mnt: str, store: Any, cache: Any, notify: _Notifier, offline_why: str
) -> None:
    from vfs.mount import fuse
    from vfs.mount.core import FsCore
    from vfs.mount.loader import FetchConfig
    from vfs.mount.namespace import CoreConfig

    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        core = await FsCore.create(
            store,
            opts.target,
            nursery=nursery,
            cache=cache,
            config=CoreConfig(xattrs=opts.xattrs),
            fetch=FetchConfig(
                read_timeout=opts.read_timeout, attempt_timeout=min(10.0, opts.read_timeout / 3)
            ),
            access_record=opts.record_access,
        )
        ctl = control_path(mnt)
        core.extra_info = {"pid": os.getpid(), "control": ctl, "log": opts.log_file or ""}
        listener = await _listen(ctl)
        try:
            ops = fuse.Operations(core)
            fsname = f"vfs:{opts.target}"[:200]
            fuse.mount(ops, mnt, fuse.mount_options(fsname, opts.allow_other))
            log.info("%s: mounted %s from %s", mnt, opts.target, opts.store_url)
            try:
                async with trio.open_nursery() as inner:
                    inner.start_soon(_when_live, core, mnt, notify, t0, offline_why)
                    inner.start_soon(trio.serve_listeners, _control_handler(core), [listener])
                    inner.start_soon(_watch_signals, mnt)
                    if offline_why:
                        inner.start_soon(_back_online, store)
                    await fuse.serve()
                    inner.cancel_scope.cancel()
            finally:
                fuse.close(unmount=True)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(ctl)
        nursery.cancel_scope.cancel()


ONLINE_RETRY = 30.0  # seconds between two asks of a store a mount went offline from


async def _back_online(store: Any) -> None:
    """A mount started offline (serving the cache's pins) asks the store now and then
    whether it answers again; from then on it serves the store, every ref and
    version of it, not only what was pinned."""
    while store.offline is not None:
        await trio.sleep(ONLINE_RETRY)
        try:
            back = await trio.to_thread.run_sync(store.try_online, abandon_on_cancel=True)
        except VfsError as e:  # an answer, not an outage: keep serving the pins
            log.warning("the store %s answers, but not as a store: %s", store.url, e)
            continue
        if back:
            log.warning("the store %s answers again: serving it, not only the pins", store.url)


async def _when_live(
    core: Any, mnt: str, notify: _Notifier, t0: float, offline_why: str = ""
) -> None:
    from vfs.mount import fuse

    with trio.fail_after(60):
        await trio.to_thread.run_sync(os.stat, mnt)  # answered by this process's loop
    if os.geteuid() == 0:
        await trio.to_thread.run_sync(fuse.raise_read_ahead, mnt)
    view = core.current
    live = Live(
        pid=os.getpid(),
        mountpoint=mnt,
        dataset=core.dataset,
        version=view.commit.hex() if view is not None else None,
        label=view.label if view is not None else f"{core.dataset} (every version)",
        seconds=round(time.monotonic() - t0, 3),
        offline=offline_why,
    )
    log.info("%s: live after %.3f s", mnt, time.monotonic() - t0)
    if not notify.send(live):
        print(f"vfs: mounted {live.label} at {mnt}; Ctrl-C or vfs umount unmounts", file=sys.stderr)


async def _watch_signals(mnt: str) -> None:
    from vfs.mount import fuse

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("%s: %s received; unmounting", mnt, signal.Signals(signum).name)
            fuse.stop()
            return


async def _listen(path: str) -> trio.SocketListener:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a stale socket of a dead daemon: this mountpoint is ours now
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(16)
    return trio.SocketListener(sock)


def _control_handler(core: Any) -> Any:
    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            reply: SwitchReply | StatusReply | InfoReply | Failure
            try:
                doc = await _read_line(stream)
                reply = await _control(core, doc)
            except VfsError as e:
                reply = Failure(str(e), usage=isinstance(e, UsageError))
            except Exception as e:  # the control channel must never take the mount down
                log.exception("control request failed")
                reply = Failure(f"internal error: {e}")
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(json.dumps(reply.to_doc()).encode() + b"\n")

    return handle


async def _read_line(stream: trio.SocketStream) -> dict[str, Any]:
    buf = b""
    with trio.fail_after(10):
        while b"\n" not in buf:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            buf += chunk
            if len(buf) > _MAX_REQUEST:
                raise UsageError("control request too long")
    try:
        doc = json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        raise UsageError("control request is not JSON") from None
    if not isinstance(doc, dict):
        raise UsageError("control request is not a JSON object")
    return doc


async def _control(core: Any, doc: dict[str, Any]) -> SwitchReply | StatusReply | InfoReply:
    from vfs.mount import fuse

    op = doc.get("op")
    if op == "switch":
        res = await fuse.switch(core, str(doc.get("ref", "")))
        return SwitchReply(
            old=res.old.hex(),
            new=res.new.hex(),
            label=core.current.label,
            ms=round(res.seconds * 1000, 2),
        )
    if op == "status":
        view = core.current
        return StatusReply(
            pid=os.getpid(),
            dataset=core.dataset,
            version=view.commit.hex() if view is not None else None,
            label=view.label if view is not None else None,
            stats=core.stats(),
        )
    if op == "info":
        ino = doc.get("ino")
        if not isinstance(ino, int):
            raise UsageError("info needs an inode number")
        facts = await core.info(ino)
        return InfoReply(**{k: v for k, v in facts.items() if k in InfoReply._fields})
    raise UsageError(f"unknown control request {op!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m vfs.mount.daemon OPTIONS (started by vfs mount)", file=sys.stderr)
        return 2
    opts = MountOptions.from_json(argv[0])
    if opts.verbose >= 2:
        logging.getLogger().setLevel(logging.DEBUG)  # else the daemon logs at INFO
    try:
        return run(opts)
    except VfsError as e:  # the parent has its message already, from the ready pipe
        print(f"vfs: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
