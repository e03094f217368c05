"""What a mount does when the store or the cache misbehaves (issue 5, items 1-3, 6).

Real mounts over real SeaweedFS (and the local store where a test runs on both): the
remote killed, stalled and restarted under cold reads, and a pinned version served
with it gone; damaged objects in the store, found by reads (EIO naming the object)
and by `vfs verify`; a damaged cache healed; the cache cap under 16 readers. The
fault injection layer (vfs.backends.faults) is checked first, on both backends.

Most tests mount (FUSE); the fault tool, `vfs verify` against cached copies, the
corrupt-object error and the cache writer behind the readers need no mount.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.mounting import Mounts, fuse_usable, sha
from tests.support.treegen import make_tree
from vfs import format as fmt
from vfs.backends import Backend, open_backend
from vfs.backends.faults import Fault, FaultControl, FaultyBackend
from vfs.cache import ChunkCache
from vfs.cache.index import Entry
from vfs.errors import BackendError, CorruptObject, NotFound
from vfs.mount import control
from vfs.ops.commit import commit_dir
from vfs.reader import Version
from vfs.refs import resolve
from vfs.store import Store
from vfs.testing.seaweed import SeaweedServer

KiB = 1024
MiB = 1024 * KiB
needs_fuse = pytest.mark.skipif(not fuse_usable(), reason="needs /dev/fuse and fusermount3")


def _files(root: Path, n: int, size: int, seed: int, prefix: str = "f") -> dict[str, bytes]:
    rng = random.Random(seed)
    out = {}
    for i in range(n):
        data = rng.randbytes(size + rng.randrange(size // 2))
        (root / f"{prefix}{i:03d}.bin").write_bytes(data)
        out[f"{prefix}{i:03d}.bin"] = data
    return out


def _commit(url: str, src: Path, dataset: str, tag: str, tmp: Path) -> None:
    store = Store.open(url)
    try:
        commit_dir(store, str(src), dataset, tag=tag, cache_dir=str(tmp / "wc"))
    finally:
        store.close()


def _committed(url: str, tmp: Path, n: int, size: int, seed: int) -> dict[str, bytes]:
    """`n` files of about `size` bytes (_files) committed to `url` as ds@v1."""
    src = tmp / "src"
    src.mkdir()
    files = _files(src, n, size, seed)
    _commit(url, src, "ds", "v1", tmp)
    return files


# --- the fault injection tool --------------------------------------------------------


def test_fault_injection_does_what_it_says(backend: Backend, tmp_path: Path) -> None:
    backend.put("packs/aa/p1", b"0123456789" * 100)
    backend.put("objects/bb/o1", b"object")
    ctl = FaultControl(tmp_path / "ctl")
    b = FaultyBackend(backend, ctl, seed=1)
    ctl.clear()
    assert b.get_range("packs/aa/p1", 10, 5) == b"01234"
    ctl.set(Fault("truncate", ops=("get_range",)))
    assert b.get_range("packs/aa/p1", 0, 100) == (b"0123456789" * 10)[:50]
    ctl.set(Fault("corrupt", key="packs/"))
    got = b.get("packs/aa/p1")
    assert len(got) == 1000 and got != b"0123456789" * 100
    assert b.get("objects/bb/o1") == b"object"  # another prefix: untouched
    ctl.set(Fault("error", ops=("get",), times=2))
    for _ in range(2):
        with pytest.raises(BackendError, match="injected"):
            b.get("objects/bb/o1")
    assert b.get("objects/bb/o1") == b"object"  # `times` spent
    ctl.set(Fault("notfound", ops=("exists", "get")))
    with pytest.raises(NotFound):
        b.get("objects/bb/o1")
    ctl.set(Fault("latency", seconds=0.3))
    t0 = time.monotonic()
    b.exists("objects/bb/o1")
    assert time.monotonic() - t0 >= 0.3
    # A stall holds the request until the fault is lifted, from another thread here
    # (from another process in the mount tests).
    ctl.set(Fault("stall", ops=("get",)))
    done = threading.Event()

    def stalled_get() -> None:
        b.get("objects/bb/o1")
        done.set()

    t = threading.Thread(target=stalled_get)
    t.start()
    assert not done.wait(0.3)
    ctl.clear()
    assert done.wait(5)
    t.join()
    # Throttling: boto3 retries a 503 SlowDown with backoff, as against AWS, and gives
    # up after its attempts; the local backend fails the way S3Backend then does.
    ctl.set(Fault("slowdown", ops=("get",)))
    with pytest.raises(BackendError, match="SlowDown"):
        b.get("objects/bb/o1")
    if backend.url.startswith("s3://"):
        ctl.set(Fault("slowdown", ops=("get",), prob=0.5))
        assert all(b.get("objects/bb/o1") == b"object" for _ in range(3))
    ops = [op for op, *_ in ctl.requests()]
    assert ops.count("get_range") == 2 and "exists" in ops
    b.close()


# --- 1. the remote down, stalled, then back; offline reading -------------------------


@dataclass
class _Reads:
    """Outcomes of pread calls through a mount: every call is correct or EIO."""

    durations: list[float] = field(default_factory=list)
    ok: int = 0
    eio: int = 0
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read_files(self, mnt: Path, files: dict[str, bytes], block: int = 256 * KiB) -> None:
        for name, want in files.items():
            try:
                f = open(mnt / name, "rb")  # noqa: SIM115 - closed below
            except OSError as e:
                with self.lock:
                    self.eio += 1
                    if e.errno != errno.EIO:
                        self.wrong.append(f"{name}: open: {e}")
                continue
            with f:
                for off in range(0, len(want), block):
                    t0 = time.monotonic()
                    try:
                        got = os.pread(f.fileno(), block, off)
                    except OSError as e:
                        with self.lock:
                            self.durations.append(time.monotonic() - t0)
                            if e.errno != errno.EIO:
                                self.wrong.append(f"{name}@{off}: {e}")
                            self.eio += 1
                        break  # the rest of this file would fail alike; next file
                    with self.lock:
                        self.durations.append(time.monotonic() - t0)
                        if got != want[off : off + block]:
                            self.wrong.append(f"{name}@{off}: wrong bytes")
                        self.ok += 1

    def in_threads(self, mnt: Path, files: dict[str, bytes], n: int) -> list[threading.Thread]:
        names = sorted(files)
        threads = [
            threading.Thread(target=self.read_files, args=(mnt, {k: files[k] for k in names[i::n]}))
            for i in range(n)
        ]
        for t in threads:
            t.start()
        return threads


@pytest.fixture
def private_seaweed(monkeypatch: pytest.MonkeyPatch) -> Iterator[SeaweedServer]:
    """A SeaweedFS of this test's own, to kill and restart; its admin identity is in
    the environment meanwhile."""
    with SeaweedServer() as server:
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        yield server


@pytest.mark.s3
@pytest.mark.fuse
@needs_fuse
def test_remote_down_or_stalled_during_cold_reads(
    private_seaweed: SeaweedServer, tmp_path: Path
) -> None:
    server = private_seaweed
    url = f"s3://{server.make_bucket('remote-down')}/store"
    cold = _committed(url, tmp_path, 8, 1 * MiB, seed=1)
    # The stalled phase reads files of their own pack, which no earlier read can have
    # fetched beside its own (a pack window takes a read's neighbours along).
    late_src = tmp_path / "late-src"
    late_src.mkdir()
    rest = _files(late_src, 4, 1 * MiB, seed=2)
    _commit(url, late_src, "late", "v1", tmp_path)
    pinned_src = make_tree(tmp_path / "pinned")
    _commit(url, pinned_src, "pinned", "v1", tmp_path)
    m = Mounts(url, tmp_path)
    try:
        read_timeout = 2.0
        bound = 2 * read_timeout + 3.0  # a read(2) may wait on two FUSE requests
        m.cli("prefetch", "pinned@v1")
        m.cli("cache", "pin", "pinned@v1")
        offline = m.mount("pinned@v1", "offline", "--read-timeout", str(read_timeout))
        # Keep range GETs slow (real S3 is far away), so the kill lands mid-read.
        m.faults.set(Fault("latency", ops=("get_range",), seconds=0.3))
        mnt = m.launch("ds@v1", "mnt", "--read-timeout", str(read_timeout))
        daemon = m.started[mnt]
        late = m.launch("late@v1", "late", "--read-timeout", str(read_timeout))

        # Killed during cold reads: each read is correct or EIO, within the bound.
        first = cold
        reads = _Reads()
        threads = reads.in_threads(mnt, first, 4)
        time.sleep(0.5)
        server.kill()
        for t in threads:
            t.join(timeout=120)
        assert not reads.wrong, reads.wrong
        assert reads.eio > 0, "the kill landed after every read had finished"
        assert max(reads.durations) < bound, sorted(reads.durations)[-5:]
        assert daemon.poll() is None and "f000.bin" in os.listdir(mnt)
        assert control.request(str(mnt), {"op": "status"}, timeout=5)["ok"]

        # Back on the same address: the same reads succeed, without a remount.
        server.restart()
        m.faults.clear()
        assert all(sha(mnt / k) == hashlib.sha256(v).hexdigest() for k, v in first.items())

        # Stalled (SIGSTOP: connections accepted, nothing answered): EIO in bound.
        # The late version's names and locations are read first, as the first mount's
        # were by its reads, so that what stalls is the file bytes.
        for name in rest:
            open(late / name, "rb").close()
        server.pause()
        try:
            stalled = _Reads()
            for t in stalled.in_threads(late, rest, 4):
                t.join(timeout=120)
            assert not stalled.wrong and stalled.ok == 0 and stalled.eio == len(rest)
            assert max(stalled.durations) < bound, sorted(stalled.durations)[-5:]
            assert m.started[late].poll() is None
        finally:
            server.resume()
        again = _Reads()
        again.read_files(late, rest)
        assert again.eio == 0 and not again.wrong

        # Offline: the remote gone for good, the pinned version is still all there,
        # files this mount never opened included (metadata comes from the cache).
        server.kill()
        for p in sorted(pinned_src.rglob("*")):
            rel = p.relative_to(pinned_src)
            if p.is_symlink():
                assert os.readlink(offline / rel) == os.readlink(p)
            elif p.is_file():
                assert sha(offline / rel) == sha(p), rel
            else:
                assert sorted(os.listdir(offline / rel)) == sorted(os.listdir(p))
        # And what the other mount has read stays readable too.
        assert sha(mnt / "f000.bin") == hashlib.sha256(cold["f000.bin"]).hexdigest()
    finally:
        m.cleanup()
    errors = m.error_lines()
    assert not errors, errors


@pytest.mark.s3
@pytest.mark.fuse
@needs_fuse
def test_an_outage_shorter_than_the_read_timeout_is_invisible(
    private_seaweed: SeaweedServer, tmp_path: Path
) -> None:
    """The store killed for a few seconds under a cold `find` and reads of
    directories never listed: tree pages, locations and chunks are all retried until
    --read-timeout, so nothing fails (issue 14, item 3). Before, a page or locations
    read failed at once with EIO."""
    server = private_seaweed
    url = f"s3://{server.make_bucket('outage')}/store"
    src = tmp_path / "src"
    files: dict[str, bytes] = {}
    for d in range(12):
        (src / f"d{d:02}").mkdir(parents=True)
        for name, data in _files(src / f"d{d:02}", 4, 20 * KiB, seed=d).items():
            files[f"d{d:02}/{name}"] = data
    _commit(url, src, "ds", "v1", tmp_path)
    m = Mounts(url, tmp_path)
    try:
        mnt = m.mount("ds@v1", "mnt", "--read-timeout", "40")
        server.kill()
        found: list[str] = []
        reads = _Reads()

        def walk_then_read() -> None:
            p = subprocess.run(
                ["find", str(mnt), "-type", "f"], capture_output=True, text=True, timeout=120
            )
            assert p.returncode == 0, p.stderr
            found.extend(sorted(p.stdout.split()))
            reads.read_files(mnt, files)

        worker = threading.Thread(target=walk_then_read)
        worker.start()
        time.sleep(3.0)  # find is waiting on the root's first page meanwhile
        server.restart()
        worker.join(timeout=180)
        assert not worker.is_alive()
        assert found == sorted(str(mnt / k) for k in files)
        assert not reads.wrong and reads.eio == 0 and reads.ok >= len(files), reads
        status = control.request(str(mnt), {"op": "status"}, timeout=10)
        assert status["ok"]
    finally:
        m.cleanup()
    errors = m.error_lines()
    assert not errors, errors


@pytest.mark.s3
@pytest.mark.fuse
@needs_fuse
def test_small_files_fetched_by_the_trio_thread_fail_in_bound_when_the_store_stalls(
    private_seaweed: SeaweedServer, tmp_path: Path
) -> None:
    """A plain mount (no fault layer) fetches a small file's GET on its trio thread
    (vfs/mount/http.py). The store stalled (SIGSTOP: connections accepted, nothing
    answered): each read fails with EIO within the read timeout, the daemon stays up
    and answers other requests meanwhile, and once the store resumes the same files
    read correctly, on the same road, without a remount."""
    server = private_seaweed
    url = f"s3://{server.make_bucket('stall-inline')}/store"
    files = _committed(url, tmp_path, 16, 30 * KiB, seed=5)
    m = Mounts(url, tmp_path)
    try:
        read_timeout = 2.0
        mnt = m.mount("ds@v1", "mnt", "--read-timeout", str(read_timeout))
        names = sorted(files)
        for name in names:  # names and locations first: what stalls is the bytes
            open(mnt / name, "rb").close()
        server.pause()
        try:
            stalled = _Reads()
            threads = stalled.in_threads(mnt, {n: files[n] for n in names[:8]}, 4)
            time.sleep(0.5)
            assert control.request(str(mnt), {"op": "status"}, timeout=5)["ok"]
            for t in threads:
                t.join(timeout=120)
            assert not stalled.wrong and stalled.ok == 0 and stalled.eio == 8
            assert max(stalled.durations) < 2 * read_timeout + 3.0, stalled.durations
        finally:
            server.resume()
        again = _Reads()
        again.read_files(mnt, files)
        assert again.eio == 0 and not again.wrong and again.ok >= len(files)
        stats = control.status(str(mnt), timeout=10).stats
        assert stats["inline_gets"] > 0, stats
    finally:
        m.cleanup()
    errors = m.error_lines()
    assert not errors, errors


@pytest.mark.s3
@pytest.mark.fuse
@needs_fuse
def test_a_pinned_version_mounts_and_reads_with_the_store_gone(
    private_seaweed: SeaweedServer, tmp_path: Path
) -> None:
    """`vfs cache pin` (no prefetch first) keeps a version whole: with SeaweedFS
    killed, a fresh `vfs mount` of it works, says once that it is offline, and every
    file reads byte for byte; so does a mount made before the kill, in files it never
    opened (issue 14, item 9). Before, the fresh mount failed on the store's config
    and the older one answered EIO for a locations object the pin had not fetched."""
    server = private_seaweed
    url = f"s3://{server.make_bucket('pinned')}/store"
    src = make_tree(tmp_path / "src")
    _commit(url, src, "ds", "v1", tmp_path)
    m = Mounts(url, tmp_path)
    try:
        pinned = m.cli("cache", "pin", "ds@v1")
        assert "usable offline" in pinned.stderr, pinned.stderr
        before = m.mount("ds@v1", "before")
        server.kill()
        t0 = time.monotonic()
        fresh = m.mountpoint("fresh")
        p = m.cli("mount", "ds@v1", str(fresh))
        assert time.monotonic() - t0 < 20
        assert p.stderr.count("offline: the store cannot be reached") == 1, p.stderr
        every = m.mountpoint("every")
        m.cli("mount", "ds", str(every))  # every version: the pinned refs offline
        for root in (fresh, before, every / "@v1"):
            for path in sorted(src.rglob("*")):
                rel = path.relative_to(src)
                if path.is_symlink():
                    assert os.readlink(root / rel) == os.readlink(path), rel
                elif path.is_file():
                    assert sha(root / rel) == sha(path), (root, rel)
                else:
                    assert sorted(os.listdir(root / rel)) == sorted(os.listdir(path)), rel
        # Without a mount too: get, cat, ls and the Python API (in spawned workers
        # as well) read the pinned version; before, each failed on the store's config.
        files = {
            str(p.relative_to(src)): sha(p)
            for p in sorted(src.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }
        got = m.cli("get", "ds@v1", "-o", str(tmp_path / "out"))
        assert got.stderr.count("offline: the store") == 1, got.stderr
        assert {rel: sha(tmp_path / "out" / rel) for rel in files} == files
        some = next(iter(files))
        cat = subprocess.run(
            [sys.executable, "-m", "vfs.cli", "cat", "ds@v1", some],
            capture_output=True,
            env=m.env,
            timeout=60,
            check=True,
        )
        assert hashlib.sha256(cat.stdout).hexdigest() == files[some]
        listed = m.cli("ls", "ds@v1", "-R", "-z").stdout.split("\0")
        assert set(files) <= set(listed)
        script = tmp_path / "read_in_workers.py"  # spawn imports __main__ from a file
        script.write_text(_READ_IN_SPAWNED_WORKERS)
        api = subprocess.run(
            [sys.executable, str(script), json.dumps(sorted(files))],
            capture_output=True,
            text=True,
            env=m.env,
            timeout=120,
        )
        assert api.returncode == 0, api.stderr
        assert json.loads(api.stdout) == files
    finally:
        m.cleanup()
    errors = m.error_lines()
    assert not errors, errors


_READ_IN_SPAWNED_WORKERS = """
import hashlib, json, multiprocessing, sys
import vfs

def digest(job):
    version, path = job
    return path, hashlib.sha256(version.read_bytes(path)).hexdigest()

if __name__ == "__main__":
    v = vfs.open_version("ds@v1")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        print(json.dumps(dict(pool.map(digest, [(v, p) for p in json.loads(sys.argv[1])]))))
"""


@pytest.mark.fuse
@needs_fuse
def test_throttled_reads_are_retried_and_served(store_url: str, tmp_path: Path) -> None:
    """Half the range reads answered 503 SlowDown (on S3 inside the HTTP exchange, so
    boto3 backs off and retries too): every read still returns the right bytes."""
    files = _committed(store_url, tmp_path, 6, 400 * KiB, seed=6)
    m = Mounts(store_url, tmp_path)
    try:
        m.faults.set(Fault("slowdown", ops=("get_range",), prob=0.5))
        mnt = m.launch("ds@v1", "mnt", "--read-timeout", "60")
        for name, data in files.items():
            assert (mnt / name).read_bytes() == data
        # Every file's bytes came through throttled range reads (pack windows bring
        # several files in one, so count bytes, not requests).
        ranged = m.faults.requests("get_range")
        assert sum(n for _, _, _, n in ranged) >= sum(map(len, files.values()))
    finally:
        m.cleanup()
    assert not m.error_lines()


# --- 2. damaged objects in the store -----------------------------------------------


def _flip(backend: Backend, key: str, at: int) -> None:
    data = bytearray(backend.get(key))
    data[at] ^= 0xFF
    backend.put(key, bytes(data))


@needs_fuse
@pytest.mark.fuse
def test_damaged_objects_give_eio_naming_them_and_verify_lists_them(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VFS_PACK_TARGET", str(64 * KiB))  # about a pack per file
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "other").mkdir()
    files = _files(src, 6, 300 * KiB, seed=2)
    (src / "sub" / "s.txt").write_text("in sub\n")
    (src / "other" / "o.txt").write_text("in other\n")
    _commit(store_url, src, "ds", "v1", tmp_path)
    store = Store.open(store_url)
    try:
        v = Version(store, "ds", resolve(store, "ds@v1").commit)

        def pack_of(path: str) -> str:
            found = v.stat(path)
            assert found is not None
            packs = {w.loc.pack for w in v.wanted(found)}
            assert len(packs) == 1
            return store.pack_key(packs.pop())

        flipped, truncated = pack_of("f000.bin"), pack_of("f001.bin")
        others = {pack_of(p) for p in files if p not in ("f000.bin", "f001.bin")}
        assert not {flipped, truncated} & others
        sub = v.stat("sub")
        other = v.stat("other")
        assert sub is not None and other is not None
        page_key = store.object_key(sub.entry.tree)
        locs_key = f"locs/{other.entry.tree.hex()[:2]}/{other.entry.tree.hex()}"
        b = store.backend
        m = Mounts(store_url, tmp_path)
        assert "all intact" in m.cli("verify", "ds@v1").stderr
        _flip(b, flipped, b.size(flipped) // 3)
        b.put(truncated, b.get(truncated)[: b.size(truncated) // 2])
        _flip(b, page_key, 20)
        b.delete(locs_key)
    finally:
        store.close()

    try:
        mnt = m.mount("ds@v1", "mnt", "--read-timeout", "20")
        for name in ("f000.bin", "f001.bin"):
            t0 = time.monotonic()
            with pytest.raises(OSError) as info:
                (mnt / name).read_bytes()
            assert info.value.errno == errno.EIO
            # Damage is judged after a few identical failures, not at the read timeout.
            assert time.monotonic() - t0 < 10
        with pytest.raises(OSError) as info:
            os.listdir(mnt / "sub")
        assert info.value.errno == errno.EIO
        with pytest.raises(OSError) as info:
            (mnt / "other" / "o.txt").read_bytes()
        assert info.value.errno == errno.EIO
        for name, data in files.items():  # everything else reads, byte for byte
            if name not in ("f000.bin", "f001.bin"):
                assert (mnt / name).read_bytes() == data
        log = next((m.cache / "logs").glob("*.log")).read_text()
        assert f"{flipped} " in log and f"{truncated} " in log, log[-3000:]

        p = m.cli("verify", "ds@v1", check=False)
        assert p.returncode == 1, p.stderr
        damaged = {
            ln.split()[1].rstrip(":") for ln in p.stdout.splitlines() if ln.startswith("damaged")
        }
        assert damaged == {flipped, truncated, page_key, locs_key}, p.stdout
        assert "f000.bin" in p.stdout and "f001.bin" in p.stdout and "truncated" in p.stdout
        doc = json.loads(m.cli("verify", "ds@v1", "--json", check=False).stdout)
        assert not doc["ok"] and {d["key"] for d in doc["damaged"]} == damaged
    finally:
        m.cleanup()
    assert not m.error_lines()


def test_verify_reads_from_the_store_not_the_cache(store_url: str, tmp_path: Path) -> None:
    """Corruption that every read would report must not hide behind cached copies."""
    _committed(store_url, tmp_path, 2, 100 * KiB, seed=3)
    m = Mounts(store_url, tmp_path)
    m.cli("prefetch", "ds@v1")
    store = Store.open(store_url)
    try:
        for key in list(store.backend.list("packs/")):
            _flip(store.backend, key, 10)
    finally:
        store.close()
    assert m.cli("verify", "ds@v1", check=False).returncode == 1
    assert m.cli("get", "ds@v1", "-o", str(tmp_path / "out")).returncode == 0  # from cache


# --- 3. a damaged cache --------------------------------------------------------------


def _damage_cache(cache: Path) -> int:
    """Flip a byte of, zero the second half of, or zero every cached chunk in its
    segment file; delete the index's lock file. Returns the chunks damaged."""
    with ChunkCache(cache) as c:
        env = c._live()
        entries = env.run(lambda txn: list(txn.cursor(db=env.dbs.entries)), write=False)
        extents = [
            (c._files.path(e.seg), e.offset, e.size)
            for e in map(Entry.unpack, (v for _, v in entries))
        ]
    assert len(extents) >= 3
    for i, (path, off, size) in enumerate(sorted(extents)):
        with open(path, "r+b") as f:
            if i % 3 == 0:
                f.seek(off + size // 2)
                b = f.read(1)
                f.seek(off + size // 2)
                f.write(bytes([b[0] ^ 0x55]))
            elif i % 3 == 1:
                f.seek(off + size // 2)
                f.write(bytes(size - size // 2))
            else:
                f.seek(off)
                f.write(bytes(size))
    (cache / "index" / "lock.mdb").unlink()
    return len(extents)


@pytest.mark.s3
@pytest.mark.fuse
@needs_fuse
def test_a_damaged_cache_is_healed_by_reads_and_by_cache_verify(
    s3_url: str, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", big=True)
    _commit(s3_url, src, "ds", "v1", tmp_path)
    want = {
        str(p.relative_to(src)): sha(p)
        for p in src.rglob("*")
        if p.is_file() and not p.is_symlink()
    }
    m = Mounts(s3_url, tmp_path)
    try:
        mnt = m.mount("ds@v1")
        assert {k: sha(mnt / k) for k in want} == want
        m.cli("umount", str(mnt))
        damaged = _damage_cache(m.cache)
        # Reported, not repaired...
        p = m.cli("cache", "verify", "--no-repair", "--json", check=False)
        rep = json.loads(p.stdout)
        assert p.returncode == 1 and rep["bad"] == damaged and rep["repaired"] == 0
        # ...and healed by the reads: every byte right, the bad entries they needed
        # refetched. A file whose chunks are all cached opens without its directory's
        # locations, so a damaged locations entry is read only if a chunk must be
        # fetched (then replaced unread), or not at all: verify still finds it.
        mnt = m.mount("ds@v1", "again")
        assert {k: sha(mnt / k) for k in want} == want
        evicted = m.stats()["corrupt_evicted"]
        m.cli("umount", str(mnt))
        left = json.loads(m.cli("cache", "verify", "--no-repair", "--json", check=False).stdout)
        assert damaged - 3 <= evicted and evicted + left["bad"] <= damaged, (evicted, left)
        # Or repaired by `vfs cache verify`, then read back.
        damaged = _damage_cache(m.cache)
        rep = json.loads(m.cli("cache", "verify", "--json").stdout)
        assert rep["bad"] == damaged and rep["repaired"] >= damaged
        rep = json.loads(m.cli("cache", "verify", "--no-repair", "--json").stdout)
        assert rep["clean"] and rep["checked"] == 0
        mnt = m.mount("ds@v1", "third")
        assert {k: sha(mnt / k) for k in want} == want
    finally:
        m.cleanup()
    assert not m.error_lines()


# --- 6. the cache cap under load -----------------------------------------------------


def _disk_bytes(data_dir: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(data_dir):
        for n in names:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(dirpath, n)).st_size
    return total


@pytest.mark.s3
@pytest.mark.fuse
@needs_fuse
def test_the_cache_cap_holds_under_16_readers_and_pins_hold(s3_url: str, tmp_path: Path) -> None:
    from vfs.mount.loader import FetchConfig

    cap = 8 * MiB
    # ~32 MiB: 4x the cap, one chunk a file
    files = _committed(s3_url, tmp_path, 100, 220 * KiB, seed=4)
    pinned_src = tmp_path / "pinned"
    pinned_src.mkdir()
    pinned = _files(pinned_src, 6, 200 * KiB, seed=5, prefix="p")
    _commit(s3_url, pinned_src, "pinned", "v1", tmp_path)
    max_chunk = max(len(d) for d in files.values())
    m = Mounts(s3_url, tmp_path)
    m.cli("prefetch", "pinned@v1", "--cache-size", str(cap))
    m.cli("cache", "pin", "pinned@v1")
    try:
        # Two mounts of one version: each has its own memory and page cache, so the
        # readers of one find in the shared chunk cache what the other fetched.
        mnts = [m.mount("ds@v1", name, "--cache-size", str(cap)) for name in ("a", "b")]
        pmnt = m.mount("pinned@v1", "pmnt")
        stop = threading.Event()
        errors: list[str] = []
        peaks = {"index": 0, "disk": 0}

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            names = sorted(files)
            mnt = mnts[seed % 2]
            while not stop.is_set():
                name = rng.choice(names)
                try:
                    if (mnt / name).read_bytes() != files[name]:
                        errors.append(f"{name}: wrong bytes")
                except OSError as e:
                    errors.append(f"{name}: {e}")

        def sampler() -> None:
            with ChunkCache(m.cache, cap) as c:
                while not stop.is_set():
                    peaks["index"] = max(peaks["index"], c.stats().bytes)
                    peaks["disk"] = max(peaks["disk"], _disk_bytes(m.cache / "segments"))
                    time.sleep(0.01)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(16)]
        threads.append(threading.Thread(target=sampler))
        for t in threads:
            t.start()
        time.sleep(8)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors[:5]
        # The index never exceeds the cap; on disk, only a batch being inserted comes
        # on top, per mount (its writer appends a batch before the transaction that
        # evicts for it): at most part_bytes, or one chunk if larger.
        batch = max(FetchConfig().part_bytes, max_chunk)
        assert peaks["index"] <= cap, peaks
        assert peaks["disk"] <= cap + 2 * batch + 1 * MiB, peaks
        # Pinned chunks were never evicted: all still cached, read with no fetch.
        for name in pinned:
            assert control.info(str(pmnt / name)).cached_bytes == len(pinned[name])
            assert (pmnt / name).read_bytes() == pinned[name]
        assert control.status(str(pmnt)).stats["requests"] == 0
        s = m.stats()
        assert s["evictions"] > 0 and s["hit_rate"] is not None and 0 < s["hit_rate"] < 1
        assert s["bytes"] <= cap
        text = m.cli("cache", "stats", "--cache-size", str(cap)).stdout
        assert "evictions" in text and "%" in text and " of 8.0 MiB in " in text
        with ChunkCache(m.cache, cap) as c:
            rep = c.verify(repair=False)
        assert rep.bad == 0 and rep.index_errors == 0
    finally:
        m.cleanup()
    assert not m.error_lines()


def test_corrupt_object_error_is_clear(tmp_path: Path) -> None:
    """A store object that fails verification names itself (used by the EIO logs)."""
    b = open_backend(str(tmp_path / "store"))
    store = Store(b)
    oid = store.put_object(fmt.encode_commit(fmt.Commit(b"\0" * 32, (), "a", "t", "m")))
    _flip(b, store.object_key(oid), 8)
    with pytest.raises(CorruptObject, match=oid.hex()[:16]):
        Store(b).get_commit(oid)


# --- cache writes behind the readers ---------------------------------------------------


class _StuckCache(ChunkCache):
    """A cache whose writes wait until the test lets them go; records each batch."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.go = threading.Event()
        self.batches: list[int] = []
        self.batch_bytes: list[int] = []

    def put_many(
        self, items: Mapping[bytes, bytes | memoryview], *, speculative: bool = False
    ) -> None:
        self.batches.append(len(items))
        self.batch_bytes.append(sum(map(len, items.values())))
        assert self.go.wait(10), "the test never released the cache writer"
        super().put_many(items, speculative=speculative)


def test_cache_writes_never_hold_up_reads_are_batched_and_finish_on_shutdown(
    tmp_path: Path,
) -> None:
    """Verified chunks are served at once; the one cache writer takes what has
    gathered in batches of at most WRITE_BATCH chunks and `part_bytes`, a stuck write
    delays neither reads nor cache lookups, and what is queued at shutdown is still
    written."""
    import trio

    from vfs.mount.loader import WRITE_BATCH, FetchConfig, Loader

    src = tmp_path / "src"
    src.mkdir()
    # More files than a batch holds, each one chunk, so that the bound on a batch shows.
    files = _files(src, WRITE_BATCH + 40, 2 * KiB, seed=11)
    url = str(tmp_path / "store")
    _commit(url, src, "ds", "v1", tmp_path)
    store = Store.open(url)
    cache = _StuckCache(tmp_path / "cache")
    version = Version(store, "ds", resolve(store, "ds@v1").commit)
    wanted = {name: version.wanted(version.stat(name)) for name in sorted(files)}  # type: ignore[arg-type]
    first, *rest = sorted(files)
    # One chunk is already cached: looking it up must not wait for the stuck writer.
    cached = wanted[rest[-1]]
    cache.go.set()
    cache.put_many(version.chunks.fetch(cached))
    cache.go.clear()
    cache.batches.clear()
    before = cache.stats()
    stats = None

    async def main() -> None:
        nonlocal stats
        async with trio.open_nursery() as nursery:
            # No pack windows: every chunk queued is one a reader asked for.
            config = FetchConfig(read_timeout=5.0, window_min=0, window_max=0)
            fetcher = Loader(store, cache, nursery, config)
            stats = fetcher.stats
            got = await fetcher.get(wanted[first])
            assert b"".join(got[w.ref.id] for w in wanted[first]) == files[first]
            while not cache.batches:  # the writer has taken the first file's chunks
                await trio.sleep(0.01)

            async def read(name: str) -> None:
                got = await fetcher.get(wanted[name])
                assert b"".join(got[w.ref.id] for w in wanted[name]) == files[name]

            with trio.fail_after(5):  # the writer is stuck: reads go on regardless
                async with trio.open_nursery() as readers:
                    for name in rest:
                        readers.start_soon(read, name)
            assert cache.batches == [len(wanted[first])]
            assert fetcher.stats.cache_hits == len(cached)
            # Queued chunks answer reads from memory, not by fetching again.
            requests = fetcher.stats.requests
            await read(rest[0])
            assert fetcher.stats.requests == requests
            cache.go.set()
            nursery.cancel_scope.cancel()  # shutdown with the queue still full

    trio.run(main)
    assert stats is not None
    queued = sum(len(wanted[n]) for n in rest[:-1])
    assert queued > WRITE_BATCH  # so that the bound on a batch shows
    # What gathered meanwhile went in batches as full as the bound allows.
    full, part = divmod(queued, WRITE_BATCH)
    assert cache.batches == [len(wanted[first])] + [WRITE_BATCH] * full + [part] * bool(part)
    assert max(cache.batch_bytes) <= FetchConfig().part_bytes
    assert stats.cache_writes == len(cache.batches)
    # Misses found by the inline index lookup are counted like get()'s.
    after = cache.stats()
    cold = sum(len(wanted[n]) for n in files) - len(cached)
    assert (after.hits - before.hits, after.misses - before.misses) == (len(cached), cold)
    for name in files:
        for w in wanted[name]:
            assert cache.contains(w.ref.id), name
    cache.close()
    store.close()
