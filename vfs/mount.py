"""Running a mount: checks, the daemon, its control channel, and unmounting.

This module owns the life of a mount process: the checks that fail fast before
anything is mounted (mountpoint missing, not empty, already or formerly mounted;
dataset or ref unknown; store unreachable), the daemon (`vfs mount` starts a child
that mounts and serves, and returns only once the mountpoint is live, or with the
child's error), the daemon's log file, its control socket, the clean shutdown on
SIGTERM, SIGINT and SIGHUP, and `vfs umount`, which also clears a mount whose daemon
died ("Transport endpoint is not connected").

The control channel is a Unix socket, one per mountpoint, at
`<runtime dir>/vfs/<hash of the mountpoint path>.sock` (runtime dir: /run as root,
else $XDG_RUNTIME_DIR, else /tmp/vfs-<uid>), mode 0600. A request is one line of
JSON, and so is the answer: {"op": "switch", "ref": "v3"}, {"op": "status"}.
The mount root's `user.vfs.control` attribute names the socket too.

Concurrency: the daemon is one trio run. pyfuse3 serves requests in tasks of its own
nursery; the control server, the signal watcher and the readiness check are tasks
beside it; the core's fetches run in the outer nursery, which outlives them all.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from vfs.errors import BackendError, NotFound, UsageError, VfsError

if TYPE_CHECKING:
    from vfs.cache import ChunkCache

log = logging.getLogger(__name__)

READY_TIMEOUT = 120.0  # the parent gives up on a child that neither mounts nor fails
_MAX_REQUEST = 64 * 1024


@dataclass(frozen=True)
class MountOptions:
    target: str  # DATASET@REF, or DATASET for every version
    mountpoint: str
    store_url: str
    cache_dir: str
    cache_size: int
    read_timeout: float = 30.0
    allow_other: bool = False
    log_file: str | None = None
    ready_fd: int | None = None


# --- checks ------------------------------------------------------------------------------


def canonical(mountpoint: str) -> str:
    """The mountpoint's absolute path, resolved without touching the mount itself
    (which may be dead)."""
    path = os.path.abspath(mountpoint)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def check_mountpoint(mountpoint: str) -> str:
    """A usable mountpoint: an existing, empty directory that is not mounted."""
    path = canonical(mountpoint)
    try:
        os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"mountpoint {path} does not exist; create it first (mkdir -p)") from None
    except OSError as e:
        if e.errno in (errno.ENOTCONN, errno.ECONNABORTED):  # its daemon is gone
            raise UsageError(
                f"{path} is a mount whose daemon died; clear it with: vfs umount {path}"
            ) from None
        raise UsageError(f"cannot use {path} as a mountpoint: {e.strerror}") from None
    if not os.path.isdir(path):
        raise UsageError(f"mountpoint {path} is not a directory")
    if is_mounted(path):
        raise UsageError(f"{path} is already a mount point; unmount it first (vfs umount)")
    if os.listdir(path):
        raise UsageError(f"mountpoint {path} is not empty; mount on an empty directory")
    return path


def is_mounted(path: str) -> bool:
    """Whether a filesystem is mounted at `path`, also a dead FUSE mount (which
    os.path.ismount cannot stat)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                field = line.split(b" ")[4]
                if _unescape(field) == os.fsencode(path):
                    return True
    except OSError:
        return os.path.ismount(path)
    return False


def _unescape(field: bytes) -> bytes:
    """mountinfo writes space, tab, newline and backslash as \\ooo."""
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i : i + 1] == b"\\" and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def control_path(mountpoint: str) -> str:
    if os.geteuid() == 0:
        base = "/run/vfs"
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = os.path.join(os.environ["XDG_RUNTIME_DIR"], "vfs")
    else:
        base = f"/tmp/vfs-{os.getuid()}"
    digest = hashlib.sha256(os.fsencode(canonical(mountpoint))).hexdigest()[:24]
    return os.path.join(base, f"{digest}.sock")


def default_log_file(cache_dir: str, mountpoint: str) -> str:
    path = canonical(mountpoint)
    tail = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(path))
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:8]
    return os.path.join(cache_dir, "logs", f"mount-{tail[:40]}-{digest}.log")


# --- the parent: start a daemon and wait until it is live ----------------------------------


def start_daemon(child_args: list[str], mountpoint: str, log_file: str) -> dict[str, Any]:
    """Run `vfs <child_args> --ready-fd N` detached, wait until it reports the mount
    live (its status doc) or fails (VfsError with its message)."""
    os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
    r, w = os.pipe()
    cmd = [sys.executable, "-m", "vfs.cli", *child_args]
    cmd += ["--ready-fd", str(w)]
    try:
        with open(log_file, "ab") as logf:
            proc = subprocess.Popen(
                cmd,
                pass_fds=(w,),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,  # no SIGINT or SIGHUP from this terminal
            )
    finally:
        os.close(w)
    try:
        with os.fdopen(r, "rb") as pipe:
            msg = _read_ready(pipe, proc)
    except KeyboardInterrupt:
        proc.terminate()  # it unmounts if it got that far
        raise
    if msg is not None and msg.get("ok"):
        return msg
    if msg is not None:
        cls = UsageError if msg.get("usage") else NotFound if msg.get("not_found") else VfsError
        raise cls(str(msg.get("error")))
    rc = proc.poll()
    if rc is None:
        proc.kill()
        proc.wait()
        raise VfsError(
            f"the mount daemon did not get {mountpoint} ready within {READY_TIMEOUT:g} s; "
            f"see {log_file}"
        )
    raise VfsError(f"the mount daemon exited with status {rc}: {_tail(log_file)} (log: {log_file})")


def _read_ready(pipe: Any, proc: subprocess.Popen[bytes]) -> dict[str, Any] | None:
    deadline = time.monotonic() + READY_TIMEOUT
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([pipe], [], [], 0.5)
        if ready:
            chunk = os.read(pipe.fileno(), 65536)
            if not chunk:
                break  # EOF: the child closed it, or died
            buf += chunk
            if b"\n" in buf:
                break
        elif proc.poll() is not None:
            break
    line = buf.split(b"\n", 1)[0]
    if not line:
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _tail(log_file: str, lines: int = 5) -> str:
    try:
        with open(log_file, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])


# --- the daemon -----------------------------------------------------------------------------


class _Notifier:
    """Tells the waiting parent (if any) once: live, or the error."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def send(self, doc: dict[str, Any]) -> bool:
        """False if there is no parent to tell (--foreground)."""
        if self.fd is None:
            return False
        fd, self.fd = self.fd, None
        with contextlib.suppress(OSError):
            os.write(fd, json.dumps(doc).encode() + b"\n")
        with contextlib.suppress(OSError):
            os.close(fd)
        return True

    def fail(self, e: BaseException) -> None:
        self.send(
            {
                "ok": False,
                "error": str(e) or type(e).__name__,
                "usage": isinstance(e, UsageError),
                "not_found": isinstance(e, NotFound),
            }
        )


def run(opts: MountOptions) -> int:
    """Mount and serve until unmounted or signalled (the daemon, or --foreground)."""
    from vfs.cache import ChunkCache
    from vfs.store import Store

    notify = _Notifier(opts.ready_fd)
    if opts.ready_fd is not None:
        _log_to_file()
    _tune_malloc()
    try:
        mnt = check_mountpoint(opts.mountpoint)
        store = Store.open(opts.store_url)
        try:
            store.check_config()
        except BackendError as e:
            store.close()
            raise BackendError(f"cannot reach the store {opts.store_url}: {e}") from None
        cache = ChunkCache(opts.cache_dir, opts.cache_size)
        store.use_cache(cache)  # pinned versions stay readable while the store is away
    except BaseException as e:
        notify.fail(e)
        raise
    try:
        try:
            trio.run(_serve, opts, mnt, store, cache, notify)
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


async def _serve(opts: MountOptions, mnt: str, store: Any, cache: Any, notify: _Notifier) -> None:
    from vfs import fs, fuse
    from vfs.prefetch import FetchConfig

    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        core = await fs.FsCore.create(
            store,
            opts.target,
            nursery=nursery,
            cache=cache,
            fetch=FetchConfig(
                read_timeout=opts.read_timeout, attempt_timeout=min(10.0, opts.read_timeout / 3)
            ),
        )
        ctl = control_path(mnt)
        core.extra_xattrs = {
            b"user.vfs.pid": str(os.getpid()).encode(),
            b"user.vfs.control": ctl.encode(),
            b"user.vfs.log": (opts.log_file or "").encode(),
        }
        listener = await _listen(ctl)
        try:
            ops = fuse.Operations(core)
            fsname = f"vfs:{opts.target}"[:200]
            fuse.mount(ops, mnt, fuse.mount_options(fsname, opts.allow_other))
            log.info("%s: mounted %s from %s", mnt, opts.target, opts.store_url)
            try:
                async with trio.open_nursery() as inner:
                    inner.start_soon(_when_live, core, mnt, notify, t0)
                    inner.start_soon(trio.serve_listeners, _control_handler(core), [listener])
                    inner.start_soon(_watch_signals, mnt)
                    await fuse.serve()
                    inner.cancel_scope.cancel()
            finally:
                fuse.close(unmount=True)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(ctl)
        nursery.cancel_scope.cancel()


async def _when_live(core: Any, mnt: str, notify: _Notifier, t0: float) -> None:
    from vfs import fuse

    with trio.fail_after(60):
        await trio.to_thread.run_sync(os.stat, mnt)  # answered by this process's loop
    if os.geteuid() == 0:
        await trio.to_thread.run_sync(fuse.raise_read_ahead, mnt)
    view = core.current
    doc = {
        "ok": True,
        "pid": os.getpid(),
        "mountpoint": mnt,
        "dataset": core.dataset,
        "version": view.commit.hex() if view is not None else None,
        "label": view.label if view is not None else f"{core.dataset} (every version)",
        "seconds": round(time.monotonic() - t0, 3),
    }
    log.info("%s: live after %.3f s", mnt, time.monotonic() - t0)
    if not notify.send(doc):
        print(
            f"vfs: mounted {doc['label']} at {mnt}; Ctrl-C or vfs umount unmounts", file=sys.stderr
        )


async def _watch_signals(mnt: str) -> None:
    from vfs import fuse

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
            try:
                doc = await _read_line(stream)
                reply = await _control(core, doc)
            except VfsError as e:
                reply = {"ok": False, "error": str(e), "usage": isinstance(e, UsageError)}
            except Exception as e:  # the control channel must never take the mount down
                log.exception("control request failed")
                reply = {"ok": False, "error": f"internal error: {e}"}
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(json.dumps(reply).encode() + b"\n")

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


async def _control(core: Any, doc: dict[str, Any]) -> dict[str, Any]:
    from vfs import fuse

    op = doc.get("op")
    if op == "switch":
        res = await fuse.switch(core, str(doc.get("ref", "")))
        return {
            "ok": True,
            "old": res.old.hex(),
            "new": res.new.hex(),
            "label": core.current.label,
            "ms": round(res.seconds * 1000, 2),
        }
    if op == "status":
        view = core.current
        return {
            "ok": True,
            "pid": os.getpid(),
            "dataset": core.dataset,
            "version": view.commit.hex() if view is not None else None,
            "label": view.label if view is not None else None,
            "stats": core.stats(),
        }
    raise UsageError(f"unknown control request {op!r}")


# --- clients: switch, status, umount --------------------------------------------------------


def request(mountpoint: str, doc: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """One request to the daemon serving `mountpoint`."""
    path = control_path(mountpoint)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise VfsError(
                f"no vfs mount daemon answers for {canonical(mountpoint)} "
                "(not mounted by vfs, or its daemon died: vfs umount clears it)"
            ) from None
        s.sendall(json.dumps(doc).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except TimeoutError:
        raise VfsError(
            f"the mount daemon of {mountpoint} did not answer in {timeout:g} s"
        ) from None
    finally:
        s.close()
    try:
        reply = json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        raise VfsError("the mount daemon closed the control connection") from None
    if not reply.get("ok"):
        cls = UsageError if reply.get("usage") else VfsError
        raise cls(str(reply.get("error")))
    return dict(reply)


def umount(mountpoint: str, timeout: float = 10.0) -> str:
    """Unmount; lazily if busy; also a mount whose daemon died. Waits for the daemon
    to exit. Returns how it went, for the user."""
    path = canonical(mountpoint)
    if not is_mounted(path):
        raise UsageError(f"{path} is not mounted")
    pid = None
    with contextlib.suppress(VfsError, OSError):
        pid = int(request(path, {"op": "status"}, timeout=2.0)["pid"])
    how = "unmounted"
    r = subprocess.run(["fusermount3", "-u", path], capture_output=True, text=True)
    if r.returncode != 0:
        lazy = subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, text=True)
        if lazy.returncode != 0:
            raise VfsError(f"cannot unmount {path}: {(lazy.stderr or r.stderr).strip()}")
        how = f"detached (lazy unmount: {r.stderr.strip() or 'busy'})"
        return how  # the daemon serves until the last open file is closed
    if pid is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(control_path(path))  # its daemon is gone
        return how
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return how
        time.sleep(0.02)
    return how + f"; its daemon (pid {pid}) is still finishing"


def alive(pid: int) -> bool:
    """Whether a process runs; a zombie (exited, not yet reaped by init, which the
    daemon's parent is once `vfs mount` has returned) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != b"Z"
