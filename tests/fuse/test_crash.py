"""Crashes and contention lose nothing (issue 5, items 4 and 5).

Real processes killed with SIGKILL at random points, over real SeaweedFS: the mount
daemon during cold reads (the next mount serves the right bytes and the cache index
is consistent), `vfs commit` during its upload (no ref ever points to a missing
object, and a rerun uploads only what the killed run had not); and 8 processes
committing to one branch at once (every commit reported is on the branch, tags never
move). Each loop prints its seed: rerun a failure with VFS_CRASH_SEED=<seed>.

Every test needs the SeaweedFS server; the daemon test also mounts (FUSE), the commit
tests run the CLI only.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.mounting import Mounts, fuse_usable
from vfs.backends.faults import Fault
from vfs.cache import ChunkCache
from vfs.ops.verify import Verifier
from vfs.reader import Version
from vfs.store import HEADS, TAGS, Store
from vfs.testing.faults import launcher_argv

KiB = 1024
MiB = 1024 * KiB
ROUNDS = 20


def _seed() -> int:
    seed = int(os.environ.get("VFS_CRASH_SEED") or random.randrange(1 << 30))
    print(f"VFS_CRASH_SEED={seed}")
    return seed


def _random_files(root: Path, rng: random.Random, n: int, size: int) -> dict[str, bytes]:
    root.mkdir(parents=True)
    out = {}
    for i in range(n):
        data = rng.randbytes(size + rng.randrange(size))
        (root / f"f{i:02d}.bin").write_bytes(data)
        out[f"f{i:02d}.bin"] = data
    return out


# --- the mount daemon, killed during cold reads --------------------------------------


def _read_until_killed(
    mnt: Path, files: dict[str, bytes], rng: random.Random, killed: threading.Event, bad: list[str]
) -> None:
    """Read random files whole, checking every byte, until the mount goes away."""
    names = sorted(files)
    while True:
        name = rng.choice(names)
        try:
            with open(mnt / name, "rb") as f:
                for off in range(0, len(files[name]), 256 * KiB):
                    got = os.pread(f.fileno(), 256 * KiB, off)
                    want = files[name][off : off + 256 * KiB]
                    if got == want:
                        continue
                    # A kill between the FUSE requests of one read() ends it short:
                    # the kernel returns the bytes it has before the failed request.
                    if killed.is_set() and len(got) < len(want) and want.startswith(got):
                        return
                    bad.append(f"{name}@{off}: {len(got)} wrong bytes of {len(want)}")
        except OSError as e:
            # Only the kill may end a read, and then with ENOTCONN, not EIO.
            if not killed.is_set() or e.errno not in (errno.ENOTCONN, errno.ECONNABORTED):
                bad.append(f"{name}: {e}")
            return


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.fuse
@pytest.mark.skipif(not fuse_usable(), reason="needs /dev/fuse and fusermount3")
def test_kill_9_the_mount_daemon_during_cold_reads(s3_url: str, tmp_path: Path) -> None:
    rng = random.Random(_seed())
    files = _random_files(tmp_path / "src", rng, 24, 1 * MiB)  # ~36 MiB
    store = Store.open(s3_url)
    try:
        from vfs.ops.commit import commit_dir

        commit_dir(store, str(tmp_path / "src"), "ds", tag="v1", cache_dir=str(tmp_path / "wc"))
    finally:
        store.close()
    cap = 16 * MiB  # under the data: evictions run while the daemon dies too
    m = Mounts(s3_url, tmp_path)
    names = sorted(files)
    missing_after_kill = 0
    try:
        for round_ in range(ROUNDS):
            mnt = m.launch("ds@v1", f"m{round_}", "--cache-size", str(cap), faulty=False)
            daemon = m.started[mnt]
            killed = threading.Event()
            bad: list[str] = []

            readers = [
                threading.Thread(
                    target=_read_until_killed,
                    args=(mnt, files, random.Random(rng.randrange(1 << 30)), killed, bad),
                )
                for _ in range(4)
            ]
            for t in readers:
                t.start()
            time.sleep(rng.uniform(0.05, 1.5))
            killed.set()
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=30)
            for t in readers:
                t.join(timeout=60)
                assert not t.is_alive(), "a reader hangs on a dead mount"
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=True)
            assert not bad, (round_, bad)
            # Consistent: no entry whose bytes are wrong, index and totals agree. An
            # entry whose file an eviction had unlinked when the daemon died may
            # remain (the next get or verify drops it), so it is counted, not failed.
            with ChunkCache(m.cache, cap) as c:
                rep = c.verify(repair=False)
            assert rep.bad == 0 and rep.index_errors == 0, (round_, rep)
            missing_after_kill += rep.missing_files
        # The next mount serves every byte right, from whatever the crashes left.
        mnt = m.launch("ds@v1", "final", "--cache-size", str(cap), faulty=False)
        for name in names:
            assert (mnt / name).read_bytes() == files[name], name
        # Verify a quiet cache: a live daemon still writes what it just served (the
        # cache write follows the read) and evicts, which a verify would see mid-way.
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
        m.started[mnt].wait(timeout=30)
        with ChunkCache(m.cache, cap) as c:
            c.verify(repair=True)
            assert c.verify(repair=False).clean
            assert c.stats().bytes <= cap
    finally:
        m.cleanup()
    print(f"entries left without a file by 20 kills: {missing_after_kill}")
    assert not m.error_lines()


# --- `vfs commit`, killed during its upload -----------------------------------------


def _pack_chunks(store: Store, packs: set[bytes]) -> dict[bytes, int]:
    """chunk id -> stored length, over the given packs' indexes."""
    out: dict[bytes, int] = {}
    for p in packs:
        for e in store.get_pack_index(p):
            out[e.id] = e.stored_length
    return out


@pytest.mark.slow
@pytest.mark.s3
def test_kill_9_commit_during_upload_then_rerun_reuses_it(s3_url: str, tmp_path: Path) -> None:
    rng = random.Random(_seed())
    ctl = tmp_path / "ctl"
    env = {
        **os.environ,
        "VFS_STORE": s3_url,
        "VFS_CACHE_DIR": str(tmp_path / "cache"),
        "VFS_NO_PROGRESS": "1",
        "VFS_PACK_TARGET": str(256 * KiB),  # many packs out of little data
    }
    from vfs.backends.faults import FaultControl

    # Uploads as slow as a real network's, so that random kill times land in them.
    FaultControl(ctl).set(Fault("latency", ops=("put_file",), seconds=0.08), record=False)

    def commit(src: Path) -> subprocess.Popen[str]:
        argv = launcher_argv(ctl, "commit", str(src), "ds", "--json")
        return subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    store = Store.open(s3_url)
    verifier = Verifier(store)
    reused = uploaded = mid_upload = 0
    try:
        t0 = time.monotonic()
        first = commit(_random_dir(tmp_path / "src0", rng))
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        duration = time.monotonic() - t0
        for round_ in range(1, ROUNDS + 1):
            src = _random_dir(tmp_path / f"src{round_}", rng)
            before = set(store.pack_ids())
            head_before = store.read_ref("ds", HEADS, "main")
            proc = commit(src)
            if round_ % 2:
                time.sleep(rng.uniform(0, duration))
            else:
                # Half the kills aim at the upload itself: a uniform time alone landed
                # there in only 2 or 3 rounds of 20 once start-up and hashing got faster.
                _wait_for_new_pack(store, before, proc)
                time.sleep(rng.uniform(0, 0.1))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            # No ref points to a missing or damaged object: verify every version
            # reachable from every ref (objects verified in earlier rounds are not
            # read again; nothing deletes them).
            res = verifier.verify_refs()
            assert res.ok, (round_, [d.to_json() for d in res.damaged])
            after_kill = set(store.pack_ids())
            killed_packs = after_kill - before
            head = store.read_ref("ds", HEADS, "main")
            assert head is not None and head_before is not None
            mid = bool(killed_packs) and head.commit == head_before.commit
            mid_upload += mid
            # The rerun completes and uploads only what the killed run had not.
            rerun = commit(src)
            out, err = rerun.communicate(timeout=120)
            assert rerun.returncode == 0, err
            doc = json.loads(out)
            new_packs = set(store.pack_ids()) - after_kill
            assert doc["bytes_uploaded"] == sum(
                store.backend.size(store.pack_key(p)) for p in new_packs
            )
            killed_chunks = _pack_chunks(store, killed_packs)
            rerun_chunks = _pack_chunks(store, new_packs)
            assert not set(killed_chunks) & set(rerun_chunks), "a chunk was uploaded twice"
            version = Version(store, "ds", bytes.fromhex(doc["id"]))
            wanted = {c.id for _, f in version.walk() if f.entry.is_file for c in f.entry.chunks}
            known_before = _pack_chunks(store, before)
            assert wanted <= set(known_before) | set(killed_chunks) | set(rerun_chunks)
            if mid:  # what the killed run had uploaded, the rerun did not upload again
                reused += sum(killed_chunks[c] for c in wanted & set(killed_chunks))
            uploaded += sum(rerun_chunks.values())
            name = sorted(os.listdir(src))[0]
            assert version.read_file(name) == (src / name).read_bytes()
            spool = tmp_path / "cache" / "spool"
            assert not list(spool.iterdir()), "spool files of the killed commit remain"
        assert verifier.verify_refs().ok
    finally:
        store.close()
    print(
        f"{mid_upload} of {ROUNDS} kills mid-upload; reruns reused {reused} bytes, uploaded {uploaded}"
    )
    assert mid_upload >= 3 and reused > 0


def _wait_for_new_pack(store: Store, before: set[bytes], proc: subprocess.Popen[str]) -> None:
    """Until a pack not in `before` is in the store, or the commit has ended."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if set(store.pack_ids()) - before:
            return
        time.sleep(0.01)


def _random_dir(root: Path, rng: random.Random) -> Path:
    _random_files(root, rng, 8, 300 * KiB)
    return root


# --- 8 writers on one branch ---------------------------------------------------------

_WRITER = r"""
import contextlib, io, json, sys
from vfs.cli import main
src, i, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for r in range(rounds):
    with open(f"{src}/who.txt", "w") as f:
        f.write(f"writer {i} round {r}\n")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["commit", src, "race", "--json", "--tag", f"w{i}-r{r}"])
    doc = json.loads(out.getvalue()) if rc == 0 else {}
    print(json.dumps({"op": "commit", "rc": rc, "round": r, "id": doc.get("id"), "err": err.getvalue()}))
    if r == 1:  # everybody tries to create one tag: one wins, the others are told
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            rc = main(["tag", f"race@{doc['id']}", "shared"])
        print(json.dumps({"op": "tag", "rc": rc, "id": doc["id"], "err": err.getvalue()}))
    sys.stdout.flush()
"""


@pytest.mark.slow
@pytest.mark.s3
def test_8_processes_commit_to_one_branch(s3_url: str, tmp_path: Path) -> None:
    writers, rounds = 8, 3
    env = {
        **os.environ,
        "VFS_STORE": s3_url,
        "VFS_NO_PROGRESS": "1",
    }
    procs = []
    for i in range(writers):
        src = tmp_path / f"src{i}"
        src.mkdir()
        (src / "data.bin").write_bytes(os.urandom(100 * KiB))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _WRITER, str(src), str(i), str(rounds)],
                env={**env, "VFS_CACHE_DIR": str(tmp_path / f"cache{i}")},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    # Meanwhile, watch every tag: once seen, a tag must never show another commit.
    store = Store.open(s3_url)
    seen: dict[str, bytes] = {}
    moved: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        s = Store.open(s3_url)
        try:
            while not stop.is_set():
                if s.dataset_exists("race"):
                    for name, cid in s.refs("race", TAGS).items():
                        if seen.setdefault(name, cid) != cid:
                            moved.append(name)
                time.sleep(0.05)
        finally:
            s.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = []
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
            results.append([json.loads(line) for line in out.splitlines()])
        stop.set()
        watcher.join()
        commits = [(i, d) for i, rs in enumerate(results) for d in rs if d["op"] == "commit"]
        failed = [d for _, d in commits if d["rc"] != 0]
        assert not failed, failed  # the branch moved under them: re-parented, not failed
        history = []
        head = store.read_ref("race", HEADS, "main")
        cid: bytes | None = head.commit if head else None
        while cid is not None:
            history.append(cid)
            c = store.get_commit(cid)
            cid = c.parents[0] if c.parents else None
        assert len(history) == len(set(history)) == writers * rounds  # linear, all there
        assert {bytes.fromhex(d["id"]) for _, d in commits} == set(history)
        for i, d in commits:  # and each is the snapshot its writer made
            v = Version(store, "race", bytes.fromhex(d["id"]))
            assert v.read_file("who.txt") == f"writer {i} round {d['round']}\n".encode()
        tags = store.refs("race", TAGS)
        for i, d in commits:
            assert tags[f"w{i}-r{d['round']}"] == bytes.fromhex(d["id"])
        tagged = [d for rs in results for d in rs if d["op"] == "tag"]
        winners = [d for d in tagged if d["rc"] == 0]
        assert len(winners) == 1 and tags["shared"] == bytes.fromhex(winners[0]["id"])
        for d in tagged:
            if d["rc"] != 0:
                assert d["rc"] == 1 and "never move" in d["err"], d
                assert len(d["err"].strip().splitlines()) == 1
        assert not moved, f"tags moved: {moved}"
        assert seen == {k: v for k, v in tags.items() if k in seen}
        assert Verifier(store).verify_refs().ok
    finally:
        stop.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
        store.close()
