"""Writing packs: chunks appended in path order to a spool file, uploaded when full.

A pack is `chunk frames... | pack index | u32 index length | "VFSPACK1"`, named by the
BLAKE3 of all its bytes. Upload order per pack: the pack, then `index/<id>`. A pack
whose index is missing is invisible to every reader and writer (it only takes space:
vfs has no gc yet), so an interrupted upload never leaves a reference to missing data.

Concurrency: `add` is called from one thread (the committer). Finished packs are
uploaded by a small pool; at most `max_inflight` packs wait or upload at once, which
bounds the spool disk used. `locations` is written only by `_finish` and `forget`
(committer thread). Packs are numbered 1, 2, ... as they are opened; `_lock` guards
what the upload threads report back (`_done`, `_uploaded`), which the committer reads
through `uploaded_through` and `take_uploaded` so that a streaming commit can write a
tree page once every pack it refers to is stored, and then forget those locations.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import blake3
import zstandard

from vfs import format as fmt
from vfs.errors import UsageError
from vfs.store import Store

log = logging.getLogger(__name__)

PACK_TARGET = 32 * 1024 * 1024
# A test and tuning knob: packs close at this many bytes instead (at least 64 KiB).
# Tests use small packs to get many of them out of little data.
PACK_TARGET_ENV = "VFS_PACK_TARGET"
_MIN_PACK_TARGET = 64 * 1024
# Spool files are named vfs-pack-<pid>-...; those of processes that are gone (a commit
# killed with SIGKILL, a crash) are removed by the next commit that uses the spool.
_SPOOL_PREFIX = "vfs-pack-"


def pack_target() -> int:
    """PACK_TARGET, or $VFS_PACK_TARGET bytes if set."""
    raw = os.environ.get(PACK_TARGET_ENV)
    if not raw:
        return PACK_TARGET
    try:
        n = int(raw)
    except ValueError:
        raise UsageError(f"{PACK_TARGET_ENV}={raw!r} is not a number of bytes") from None
    if n < _MIN_PACK_TARGET:
        raise UsageError(f"{PACK_TARGET_ENV} must be at least {_MIN_PACK_TARGET} bytes, not {n}")
    return n


def clean_spool(spool_dir: str) -> int:
    """Remove spool files left by processes that no longer run; returns how many.
    A killed commit cannot remove its own, and packs are tens of MiB each."""
    removed = 0
    try:
        names = os.listdir(spool_dir)
    except FileNotFoundError:
        return 0
    for name in names:
        if not name.startswith(_SPOOL_PREFIX):
            continue
        pid_text = name[len(_SPOOL_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        try:
            os.unlink(os.path.join(spool_dir, name))
            removed += 1
        except FileNotFoundError:
            pass
    if removed:
        log.info("removed %d spool files of commits that did not finish", removed)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to judge
        return True
    return True


# Compress a chunk only when zstd saves at least this fraction: images and models
# barely compress, and a raw chunk reads with no CPU at all.
MIN_SAVING = 0.05


# Chunks larger than this are first judged by compressing a sample of their head:
# random-looking data (images, weights) is found out at a fraction of the cost.
SAMPLE = 16 * 1024


def compress(raw: bytes | memoryview) -> tuple[int, bytes | memoryview]:
    """The codec and stored bytes for a chunk."""
    zc = zstandard.ZstdCompressor(level=3)
    if len(raw) > 2 * SAMPLE and len(zc.compress(raw[:SAMPLE])) > SAMPLE * (1 - MIN_SAVING / 2):
        return fmt.CODEC_RAW, raw
    c = zc.compress(raw)
    if len(c) <= len(raw) * (1 - MIN_SAVING):
        return fmt.CODEC_ZSTD, c
    return fmt.CODEC_RAW, raw


class PackWriter:
    def __init__(
        self,
        store: Store,
        spool_dir: str | None = None,
        target: int | None = None,
        max_inflight: int = 3,
        on_uploaded: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.target = target or pack_target()
        self.spool_dir = spool_dir or tempfile.gettempdir()
        self.locations: dict[bytes, fmt.Location] = {}
        self.bytes_uploaded = 0
        self.packs_written = 0
        self._on_uploaded = on_uploaded
        self._pool = ThreadPoolExecutor(
            max_workers=max_inflight, thread_name_prefix="vfs-pack-upload"
        )
        self._slots = threading.Semaphore(max_inflight)
        self._futures: list[Future[None]] = []
        self._file: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._hasher = blake3.blake3()
        self._entries: list[fmt.PackEntry] = []
        self._pending: set[bytes] = set()
        self._offset = 0
        self._seq = 1  # the number of the pack being filled
        self._lock = threading.Lock()
        self._done: set[int] = set()  # uploaded pack numbers above _through
        self._through = 0  # every pack numbered <= this is uploaded
        self._uploaded: list[tuple[bytes, list[fmt.PackEntry]]] = []

    def barrier(self) -> int:
        """The number of the last pack that holds a chunk added so far: once
        `uploaded_through()` reaches it, every chunk added so far is stored."""
        return self._seq if self._entries else self._seq - 1

    def uploaded_through(self) -> int:
        with self._lock:
            return self._through

    def take_uploaded(self) -> list[tuple[bytes, list[fmt.PackEntry]]]:
        """The packs (id, entries) uploaded since the last call."""
        with self._lock:
            got, self._uploaded = self._uploaded, []
        return got

    def forget(self, entries: list[fmt.PackEntry]) -> None:
        """Drop these chunks from `locations` (the caller keeps them elsewhere):
        what keeps a long commit's memory bounded."""
        for e in entries:
            self.locations.pop(e.id, None)

    def has(self, cid: bytes) -> bool:
        """Whether the chunk is already written by this writer (pending or finished)."""
        return cid in self._pending or cid in self.locations

    def add(self, cid: bytes, raw_length: int, codec: int, stored: bytes | memoryview) -> None:
        if self.has(cid):
            return
        if self._file is None:
            self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives across calls
                prefix=f"{_SPOOL_PREFIX}{os.getpid()}-", dir=self.spool_dir, delete=False
            )
        self._file.write(stored)
        self._hasher.update(stored)
        self._entries.append(fmt.PackEntry(cid, self._offset, len(stored), raw_length, codec))
        self._pending.add(cid)
        self._offset += len(stored)
        if self._offset >= self.target:
            self._finish()

    def _finish(self) -> None:
        if self._file is None:
            return
        index = fmt.encode_pack_index(self._entries)
        trailer = fmt.pack_trailer(index)
        self._file.write(trailer)
        self._hasher.update(trailer)
        self._file.close()
        pack_id = self._hasher.digest()
        path = self._file.name
        entries = self._entries
        for e in entries:
            self.locations[e.id] = fmt.Location(pack_id, e.offset, e.stored_length, e.codec)
        self._file, self._hasher, self._entries, self._pending, self._offset = (
            None,
            blake3.blake3(),
            [],
            set(),
            0,
        )
        seq = self._seq
        self._seq += 1
        self._slots.acquire()
        self._futures.append(self._pool.submit(self._upload, pack_id, path, index, seq, entries))
        self._reap()

    def _upload(
        self, pack_id: bytes, path: str, index: bytes, seq: int, entries: list[fmt.PackEntry]
    ) -> None:
        try:
            size = os.path.getsize(path)
            self.store.backend.put_file(self.store.pack_key(pack_id), path)
            self.store.backend.put(self.store.index_key(pack_id), fmt.seal(index))
            with self._lock:
                self.bytes_uploaded += size
                self.packs_written += 1
                self._uploaded.append((pack_id, entries))
                self._done.add(seq)
                while self._through + 1 in self._done:
                    self._through += 1
                    self._done.discard(self._through)
            if self._on_uploaded:
                self._on_uploaded(size)
            log.debug("uploaded pack %s (%d bytes)", pack_id.hex()[:16], size)
        finally:
            os.unlink(path)
            self._slots.release()

    def check(self) -> None:
        """Raise the first upload failure seen so far, if any."""
        self._reap()

    def _reap(self) -> None:
        """Raise the first upload failure now rather than at the end."""
        done = [f for f in self._futures if f.done()]
        for f in done:
            self._futures.remove(f)
            f.result()

    def close(self) -> None:
        """Finish the open pack and wait for every upload; raises the first failure."""
        self._finish()
        try:
            for f in self._futures:
                f.result()
        finally:
            self._futures.clear()
            self._pool.shutdown(wait=True)

    def abort(self) -> None:
        """Stop without finishing the open pack (Ctrl-C): finished packs still upload,
        so a rerun reuses them; the partial one is dropped."""
        if self._file is not None:
            self._file.close()
            os.unlink(self._file.name)
            self._file = None
        for f in self._futures:
            f.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
