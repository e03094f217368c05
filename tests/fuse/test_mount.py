"""Real mounts read by real programs (cat, find, tar, sha256sum, Python, mmap).

Mounts are started as users start them: `vfs mount` (a daemon), or, where a test
must count or break the daemon's store requests, the fault launcher
(vfs.testing.faults), which runs the same CLI in the foreground over a FaultyBackend
(the real one, recording requests into a control directory and failing or stalling
while the control file says so). Teardown always unmounts (fusermount3 -u -z), also
when a test fails, and fails a test whose daemon logged an ERROR.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import mmap
import os
import random
import signal
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mounting import Mounts, fuse_usable, read_tree, sha, wait_gone
from tests.support.treegen import make_tree, snapshot_fs
from vfs.mount import control
from vfs.mount.control import is_mounted
from vfs.ops.commit import commit_dir
from vfs.store import HEADS, Store

MiB = 1024 * 1024


pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not fuse_usable(), reason="needs /dev/fuse and fusermount3"),
]


class Data:
    """Versions v1 and v2 of dataset `ds`, committed from a generated tree."""

    def __init__(self, store_url: str, tmp: Path) -> None:
        self.url = store_url
        self.src = make_tree(tmp / "src", big=True)
        (self.src / "setuid-tool").write_bytes(b"#!/bin/sh\necho hi\n")
        os.chmod(self.src / "setuid-tool", 0o4755)
        store = Store.open(store_url)
        try:
            commit_dir(store, str(self.src), "ds", tag="v1", cache_dir=str(tmp / "wc"))
            self.v1 = snapshot_fs(self.src)
            self.v1_csv = (self.src / "with space.csv").read_bytes()
            (self.src / "with space.csv").write_text("changed in v2\n")
            (self.src / "added.txt").write_text("only in v2\n")
            c2 = commit_dir(store, str(self.src), "ds", tag="v2", cache_dir=str(tmp / "wc"))
            self.v2_id = c2.commit.hex()
        finally:
            store.close()


@pytest.fixture
def data(store_url: str, tmp_path: Path) -> Data:
    return Data(store_url, tmp_path)


@pytest.fixture
def mounts(store_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mounts]:
    m = Mounts(store_url, tmp_path)
    try:
        yield m
    finally:
        m.cleanup()
    errors = m.error_lines()
    if errors and not request.node.get_closest_marker("allow_error_log"):
        pytest.fail("mount daemon logged ERROR:\n" + "\n".join(errors), pytrace=False)


# --- reading ---------------------------------------------------------------------------


def test_real_programs_read_every_byte(data: Data, mounts: Mounts) -> None:
    mnt = mounts.mount("ds@v1")
    # Python's walk: modes, sizes, sha256 and mtimes of everything, symlinks too.
    got = snapshot_fs(mnt)
    want = {k: v for k, v in data.v1.items() if k != "setuid-tool"}
    assert {k: v for k, v in got.items() if k != "setuid-tool"} == want
    # find lists the same paths.
    found = subprocess.run(
        ["find", ".", "-mindepth", "1"], cwd=mnt, capture_output=True, text=True, check=True
    )
    assert sorted(p[2:] for p in found.stdout.splitlines()) == sorted(data.v1)
    # sha256sum over every file, and cat of the big one.
    files = sorted(k for k, v in data.v1.items() if v[0] == "file")
    out = subprocess.run(["sha256sum", *files], cwd=mnt, capture_output=True, text=True, check=True)
    sums = {line[66:]: line[:64] for line in out.stdout.splitlines()}
    assert sums == {k: data.v1[k][3] for k in files}
    cat = subprocess.run(["cat", str(mnt / "big.bin")], capture_output=True, check=True)
    assert hashlib.sha256(cat.stdout).hexdigest() == data.v1["big.bin"][3]
    # tar c of the whole mount, unpacked again: the same tree.
    subprocess.run(["tar", "cf", str(mounts.tmp / "v1.tar"), "-C", str(mnt), "."], check=True)
    with tarfile.open(mounts.tmp / "v1.tar") as t:
        members = {m.name.removeprefix("./"): m for m in t.getmembers() if m.name != "."}
        assert set(members) == set(data.v1)
        f = t.extractfile(members["big.bin"])
        assert f is not None and hashlib.sha256(f.read()).hexdigest() == data.v1["big.bin"][3]
    # Random access with pread, and mmap.
    src = (data.src / "big.bin").read_bytes()
    rng = random.Random(5)
    with open(mnt / "big.bin", "rb") as f:
        for _ in range(100):
            off = rng.randrange(len(src))
            n = rng.randrange(1, 2 * MiB)
            assert os.pread(f.fileno(), n, off) == src[off : off + n]
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            assert len(m) == len(src)
            for _ in range(50):
                off = rng.randrange(len(src))
                assert m[off : off + 4096] == src[off : off + 4096]


def test_stat_fields_symlinks_names_and_diagnostics(data: Data, mounts: Mounts) -> None:
    mnt = mounts.mount("ds@v1")
    src = data.src
    st, sst = os.stat(mnt / "big.bin"), os.stat(src / "big.bin")
    assert (st.st_size, st.st_mtime_ns, st.st_nlink) == (sst.st_size, sst.st_mtime_ns, 1)
    assert stat.S_IMODE(os.stat(mnt / "images" / "0001.png").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(mnt / "with space.csv").st_mode) == 0o600
    assert st.st_uid == os.getuid() and st.st_blocks == (st.st_size + 511) // 512
    assert os.stat(mnt / "big.bin").st_ino == st.st_ino  # stable
    assert len({os.stat(mnt / p).st_ino for p in ("big.bin", "empty.txt", "nested", "images")}) == 4
    assert os.readlink(mnt / "link-to-csv") == "with space.csv"
    assert (mnt / "link-to-csv").read_bytes() == data.v1_csv  # followed inside the mount
    assert os.readlink(mnt / "link-outside") == "/etc/passwd"
    assert os.listdir(mnt / "link-to-dir") == ["deepest"]
    assert (mnt / "empty.txt").read_bytes() == b"" and os.listdir(mnt / "empty dir") == []
    assert (mnt / "ünïcødé ✓ name.txt").read_text() == "snowman ☃\n"
    # setuid, setgid and sticky bits never show.
    assert stat.S_IMODE(os.stat(mnt / "setuid-tool").st_mode) == 0o755
    vfs_st = os.statvfs(mnt)
    assert vfs_st.f_blocks > 0 and vfs_st.f_files > 0 and vfs_st.f_bfree == 0
    assert vfs_st.f_flag & os.ST_RDONLY
    mounts_table = Path("/proc/mounts").read_text().splitlines()
    options = next(ln.split()[3] for ln in mounts_table if ln.split()[1] == str(mnt))
    assert {"ro", "noatime", "default_permissions"} <= set(options.split(","))
    assert "allow_other" not in options
    if os.geteuid() == 0:
        dev = os.stat(mnt).st_dev
        ra = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
        assert ra.read_text().strip() == "1024"
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "no such file")
    # Diagnostics, like CernVM-FS, from `vfs info` (the mount serves no xattrs).
    root = info(mnt)
    version = root["version"]
    assert len(version) == 64 and info(mnt / "big.bin")["version"] == version
    assert info(mnt / "big.bin")["cached_bytes"] == 0
    (mnt / "big.bin").read_bytes()
    # Chunks reach the machine's cache just after the reader has them (the write
    # is off the read path), so give it a moment.
    deadline = time.monotonic() + 10
    while info(mnt / "big.bin")["cached_bytes"] < st.st_size:
        assert time.monotonic() < deadline, "read chunks never reached the cache"
        time.sleep(0.05)
    big = info(mnt / "big.bin")
    assert big["cached_bytes"] == big["size"] == st.st_size and len(big["content_id"]) == 64
    with pytest.raises(OSError) as err:
        os.getxattr(mnt / "big.bin", "user.vfs.version")
    assert err.value.errno == errno.EOPNOTSUPP  # the kernel stopped asking: ENOSYS


def info(path: Path) -> dict[str, Any]:
    """`vfs info` in process: what the daemon of path's mount knows of it."""
    return control.info(str(path))._asdict()


# --- diagnostics ------------------------------------------------------------------------


def test_ls_l_asks_the_daemon_for_no_extended_attribute(mounts: Mounts) -> None:
    """GNU ls -l asks for an ACL and a security label of every entry; without
    --xattrs the first request answers ENOSYS and the kernel asks no more."""
    src = mounts.tmp / "many"
    (src / "d").mkdir(parents=True)
    for i in range(3000):
        (src / "d" / f"f{i:05d}").write_bytes(b"x" * (i % 7))
    store = Store.open(mounts.env["VFS_STORE"])
    try:
        commit_dir(store, str(src), "many", cache_dir=str(mounts.tmp / "wc"))
    finally:
        store.close()
    mnt = mounts.mount("many@main")
    for flags in ("-l", "-lL", "-la"):
        out = subprocess.run(
            ["ls", flags, str(mnt / "d")], capture_output=True, text=True, check=True
        )
        assert len(out.stdout.splitlines()) >= 3001
    stats = info(mnt)["stats"]
    assert stats["xattr_requests"] <= 2, stats  # one getxattr, one listxattr at most
    assert stats["inodes"] >= 3000
    for ask in (lambda: os.listxattr(mnt / "d"), lambda: os.getxattr(mnt, "user.vfs.ref")):
        with pytest.raises(OSError) as err:
            ask()
        assert err.value.errno == errno.EOPNOTSUPP  # answered by the kernel
    assert info(mnt)["stats"]["xattr_requests"] <= 2


def _fuse_requests(mnt: Path) -> dict[str, int]:
    out: dict[str, int] = info(mnt)["stats"]["fuse_requests"]
    return out


def test_a_warm_reopen_costs_one_open_and_one_release(data: Data, mounts: Mounts) -> None:
    """A version never changes, so the kernel keeps what it learnt: entries and
    attributes (long timeouts), pages across opens (FOPEN_KEEP_CACHE), and that
    there is no flush handler. Reading a warm file again costs the daemon an open and
    a release per open(2), and nothing else: the warm epoch of a DataLoader is that,
    once per image."""
    mnt = mounts.mount("ds@v1")
    path = mnt / "with space.csv"
    assert path.read_bytes() == data.v1_csv
    before = _fuse_requests(mnt)
    for _ in range(100):
        os.stat(path)
        with open(path, "rb") as f:
            assert f.read() == data.v1_csv
    deadline = time.monotonic() + 10
    while True:  # the kernel sends RELEASE after close() returns
        after = _fuse_requests(mnt)
        spent = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
        if spent.get("release", 0) >= 100 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert spent == {"open": 100, "release": 100}, spent


def test_vfs_info_text_json_and_errors(data: Data, mounts: Mounts) -> None:
    mnt = mounts.mount("ds@v1")
    (mnt / "with space.csv").read_bytes()
    doc = json.loads(mounts.cli("info", "--json", str(mnt / "with space.csv")).stdout)
    assert doc["kind"] == "file" and doc["relpath"] == "with space.csv"
    assert doc["dataset"] == "ds" and doc["ref"] == "ds@v1" and len(doc["version"]) == 64
    assert doc["size"] == len(data.v1_csv) and doc["chunks"] == 1 and doc["stats"] is None
    assert doc["mountpoint"] == str(mnt)
    text = mounts.cli("info", str(mnt / "with space.csv")).stdout
    assert "content id" in text and doc["content_id"] in text and doc["version"] in text
    root = json.loads(mounts.cli("info", "--json", str(mnt)).stdout)
    assert root["relpath"] == "." and root["kind"] == "directory" and root["pid"] > 0
    assert root["control"].endswith(".sock") and root["log"].endswith(".log")
    assert root["stats"]["requests"] > 0 and "inodes" in root["stats"]
    text = mounts.cli("info", str(mnt)).stdout
    assert any(ln.split() == ["daemon", "pid", str(root["pid"])] for ln in text.splitlines())
    assert "stats.requests" in text
    assert "{" not in text  # a nested count is a row of its own, not a Python dict
    link = info(mnt / "link-to-csv")  # followed, as getfattr does
    assert link["content_id"] == doc["content_id"]
    # Errors: no such path, not a vfs mount, a dead daemon.
    missing = mounts.cli("info", str(mnt / "nope"), check=False)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    elsewhere = mounts.cli("info", str(mounts.tmp), check=False)
    assert elsewhere.returncode == 2 and "not on a vfs mount" in elsewhere.stderr
    os.kill(root["pid"], signal.SIGKILL)
    assert wait_gone(root["pid"])
    dead = mounts.cli("info", str(mnt / "big.bin"), check=False)
    assert dead.returncode == 1 and f"vfs umount {mnt}" in dead.stderr, dead.stderr
    mounts.cli("umount", str(mnt))


def test_xattrs_option_serves_every_attribute(data: Data, mounts: Mounts) -> None:
    """`vfs mount --xattrs`: the user.vfs.* attributes, as before `vfs info`."""
    mnt = mounts.mount("ds@v1", "mnt", "--xattrs")
    f = mnt / "big.bin"
    facts = info(f)
    for key in ("dataset", "version", "ref", "content_id", "chunks", "cached_bytes"):
        assert os.getxattr(f, f"user.vfs.{key}").decode() == str(facts[key]), key
    assert set(os.listxattr(f)) == {
        f"user.vfs.{k}"
        for k in ("dataset", "version", "ref", "content_id", "chunks", "cached_bytes")
    }
    root = info(mnt)
    assert os.getxattr(mnt, "user.vfs.version").decode() == root["version"]
    assert int(os.getxattr(mnt, "user.vfs.pid")) == root["pid"]
    assert os.getxattr(mnt, "user.vfs.control").decode() == root["control"]
    assert os.getxattr(mnt, "user.vfs.log").decode() == root["log"]
    assert "requests" in json.loads(os.getxattr(mnt, "user.vfs.stats"))
    assert {"user.vfs.stats", "user.vfs.pid"} <= set(os.listxattr(mnt))
    f.read_bytes()
    deadline = time.monotonic() + 10
    while int(os.getxattr(f, "user.vfs.cached_bytes")) < f.stat().st_size:
        assert time.monotonic() < deadline, "read chunks never reached the cache"
        time.sleep(0.05)
    with pytest.raises(OSError) as err:
        os.getxattr(f, "user.nope")
    assert err.value.errno == errno.ENODATA
    with pytest.raises(OSError) as err:
        os.setxattr(f, "user.vfs.version", b"0" * 64)
    assert err.value.errno == errno.EROFS
    # Every attribute request reaches the daemon: the cost `ls -l` pays with --xattrs.
    before = info(mnt)["stats"]["xattr_requests"]
    subprocess.run(["ls", "-l", str(mnt / "images")], capture_output=True, check=True)
    assert info(mnt)["stats"]["xattr_requests"] - before >= 40


def test_every_write_syscall_answers_erofs(data: Data, mounts: Mounts) -> None:
    mnt = mounts.mount("ds@v1")
    f, d = mnt / "big.bin", mnt / "nested"
    attempts = {
        "create": lambda: os.open(mnt / "new", os.O_CREAT | os.O_WRONLY, 0o644),
        "open for write": lambda: os.open(f, os.O_WRONLY),
        "open for append": lambda: os.open(f, os.O_RDWR | os.O_APPEND),
        "truncate": lambda: os.truncate(f, 0),
        "unlink": lambda: os.unlink(f),
        "rename": lambda: os.rename(f, mnt / "moved"),
        "mkdir": lambda: os.mkdir(mnt / "newdir"),
        "rmdir": lambda: os.rmdir(mnt / "empty dir"),
        "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
        "removexattr": lambda: os.removexattr(f, "user.vfs.version"),
        "chmod": lambda: os.chmod(f, 0o777),
        "chown": lambda: os.chown(f, 1, 1),
        "utime": lambda: os.utime(f, (1, 1)),
        "symlink": lambda: os.symlink("x", d / "link"),
        "link": lambda: os.link(f, d / "hard"),
        "mkfifo": lambda: os.mkfifo(mnt / "fifo"),
    }
    for name, attempt in attempts.items():
        with pytest.raises(OSError) as err:
            attempt()
        assert err.value.errno == errno.EROFS, f"{name}: {err.value}"
    assert sha(f) == data.v1["big.bin"][3]  # and nothing changed


# --- the cache ---------------------------------------------------------------------------


def test_reads_are_fetched_once_per_machine(data: Data, mounts: Mounts) -> None:
    a = mounts.launch("ds@v1", "a")
    b = mounts.launch("ds@v1", "b")  # a second mount sharing the machine's cache
    read_tree(a)
    first = mounts.ranges()
    assert first
    # Each chunk came once: no byte of a pack was fetched twice.
    by_pack: dict[str, list[tuple[int, int]]] = {}
    for key, off, n in first:
        by_pack.setdefault(key, []).append((off, off + n))
    for spans in by_pack.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
    read_tree(a)  # the second read: the kernel's page cache
    read_tree(b)  # another mount: the chunk cache
    assert mounts.ranges() == first, "a second read made remote requests"
    sums = {p: sha(b / p) for p in ("big.bin", "text-compressible.txt")}
    assert sums == {p: data.v1[p][3] for p in sums}
    served = info(b)["stats"]
    assert served["cache_hits"] > 0 and served["requests"] == 0


def test_the_cache_cap_holds_with_a_larger_working_set(data: Data, mounts: Mounts) -> None:
    cap = 3 * MiB
    mnt = mounts.mount("ds@v1", "mnt", "--cache-size", str(cap))
    total = 0
    for p in sorted(mnt.rglob("*")):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
            assert sha(p) == data.v1[str(p.relative_to(mnt))][3]
    assert total > 5 * cap
    s = mounts.stats()
    assert s["bytes"] <= cap and s["evictions"] > 0


def test_a_corrupted_cache_file_is_healed(data: Data, mounts: Mounts) -> None:
    mnt = mounts.mount("ds@v1")
    assert sha(mnt / "big.bin") == data.v1["big.bin"][3]
    mounts.cli("umount", str(mnt))
    segments = list((mounts.cache / "segments").glob("*.seg"))
    assert segments
    for p in segments:  # a flip in the middle of each segment file hits one chunk
        raw = bytearray(p.read_bytes())
        raw[len(raw) // 2] ^= 0x55
        p.write_bytes(bytes(raw))
    mnt = mounts.mount("ds@v1", "again")
    assert sha(mnt / "big.bin") == data.v1["big.bin"][3]
    assert mounts.stats()["corrupt_evicted"] >= 1


# --- versions ----------------------------------------------------------------------------


def test_switch_keeps_open_files_and_shows_the_new_version(data: Data, mounts: Mounts) -> None:
    mnt = mounts.mount("ds@v1")
    assert not (mnt / "added.txt").exists()  # a cached negative lookup, until the switch
    with open(mnt / "with space.csv", "rb") as held:
        doc = json.loads(mounts.cli("switch", str(mnt), "v2", "--json").stdout)
        assert doc["new"] == data.v2_id and doc["ms"] >= 0  # its speed: make bench
        assert (mnt / "with space.csv").read_bytes() == b"changed in v2\n"
        assert (mnt / "added.txt").read_text() == "only in v2\n"
        assert "added.txt" in os.listdir(mnt)
        assert held.read() == data.v1_csv  # opened before the switch: still v1
    assert info(mnt)["ref"] == "ds@v2"
    back = json.loads(mounts.cli("switch", str(mnt), "@v1", "--json").stdout)
    assert back["old"] == data.v2_id
    assert (mnt / "with space.csv").read_bytes() == data.v1_csv
    bad = mounts.cli("switch", str(mnt), "nope", check=False)
    assert bad.returncode != 0 and "nope" in bad.stderr
    # A directory inside the mount is named as such, with the command meant.
    sub = next(p for p in mnt.iterdir() if p.is_dir())
    bad = mounts.cli("switch", str(sub), "v2", check=False)
    assert bad.returncode == 2 and f"vfs switch {mnt} v2" in bad.stderr, bad.stderr
    bad = mounts.cli("umount", str(sub), check=False)
    assert bad.returncode == 2 and f"vfs umount {mnt}" in bad.stderr, bad.stderr
    bad = mounts.cli("--store", "/nowhere", "switch", str(mnt.parent), "v2", check=False)
    assert bad.returncode == 2 and "is not a vfs mount" in bad.stderr, bad.stderr
    assert json.loads(mounts.cli("--store", "/nowhere", "info", str(mnt), "--json").stdout)


def test_info_says_when_the_mounted_branch_has_moved(data: Data, mounts: Mounts) -> None:
    """A mount of a branch stays on the commit it resolved (a run reads one version);
    `vfs info` on its root says where the branch is now, and switch follows it."""
    mounts.cli("branch", "ds@v1", "b")
    mnt = mounts.mount("ds@b")
    assert info(mnt)["ref_now"] is None
    store = Store.open(data.url)
    try:
        held = store.read_ref("ds", HEADS, "b")
        assert held is not None
        assert store.set_branch("ds", "b", bytes.fromhex(data.v2_id), held)
    finally:
        store.close()
    assert info(mnt)["ref_now"] == data.v2_id
    p = mounts.cli("info", str(mnt))
    assert f"ds@b has moved to {data.v2_id[:12]}" in p.stderr and f"vfs switch {mnt} b" in p.stderr
    mounts.cli("switch", str(mnt), "b")
    assert info(mnt)["ref_now"] is None and (mnt / "added.txt").exists()


def test_a_dataset_mount_shows_every_version_as_at_ref_dirs(data: Data, mounts: Mounts) -> None:
    mnt = mounts.mount("ds")
    assert sorted(os.listdir(mnt)) == ["@main", "@v1", "@v2"]
    assert (mnt / "@v1" / "with space.csv").read_bytes() == data.v1_csv
    assert (mnt / "@v2" / "with space.csv").read_bytes() == b"changed in v2\n"
    by_id = mnt / f"@{data.v2_id[:12]}"
    assert (by_id / "added.txt").read_text() == "only in v2\n"
    assert os.path.isdir(by_id) and info(by_id)["version"] == data.v2_id
    assert info(mnt / "@v1")["ref"] == "ds@v1" and info(mnt)["version"] is None
    for missing in ("@nope", "plain", "@ffffffff"):
        assert not (mnt / missing).exists()
    assert sha(mnt / "@main" / "big.bin") == data.v1["big.bin"][3]


# --- failures ----------------------------------------------------------------------------


def test_a_failing_store_gives_eio_not_a_hang_and_recovers(data: Data, mounts: Mounts) -> None:
    mnt = mounts.launch("ds@v1", "mnt", "--read-timeout", "2")
    src = (data.src / "big.bin").read_bytes()
    for mode, off in (("fail", 0), ("stall", 8 * MiB)):
        mounts.set_mode(mode)
        t0 = time.monotonic()
        with open(mnt / "big.bin", "rb") as f, pytest.raises(OSError) as err:
            os.pread(f.fileno(), 4096, off)
        assert err.value.errno == errno.EIO
        assert time.monotonic() - t0 < 6, "EIO took too long"
        assert "big.bin" in os.listdir(mnt)  # the mount stays up
        mounts.set_mode("ok")
        with open(mnt / "big.bin", "rb") as f:
            assert os.pread(f.fileno(), 4096, off) == src[off : off + 4096]
    assert sha(mnt / "big.bin") == data.v1["big.bin"][3]


def test_kill_9_then_umount_then_remount(data: Data, mounts: Mounts) -> None:
    mnt = mounts.mount("ds@v1")
    pid = info(mnt)["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    with pytest.raises(OSError) as err:
        os.listdir(mnt)
    assert err.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    again = mounts.cli("mount", "ds@v1", str(mnt), check=False)
    assert again.returncode != 0 and f"daemon died; clear it with: vfs umount {mnt}" in again.stderr
    mounts.cli("umount", str(mnt))
    assert not is_mounted(str(mnt))
    mounts.cli("mount", "ds@v1", str(mnt))
    assert sha(mnt / "big.bin") == data.v1["big.bin"][3]


def test_umount_detaches_a_busy_mount_lazily(data: Data, mounts: Mounts) -> None:
    mnt = mounts.mount("ds@v1")
    pid = info(mnt)["pid"]
    with open(mnt / "big.bin", "rb") as held:
        out = mounts.cli("umount", str(mnt))
        assert "detached" in out.stderr and not is_mounted(str(mnt))
        assert held.read(10) == (data.src / "big.bin").read_bytes()[:10]  # still served
    assert wait_gone(pid), (
        f"daemon {pid} still runs after the last close: {mounts.daemon_state(pid)}"
    )


def test_sigterm_unmounts_cleanly(data: Data, mounts: Mounts) -> None:
    mnt = mounts.mount("ds@v1")
    pid = info(mnt)["pid"]
    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid)
    assert not is_mounted(str(mnt))
    log_file = next((mounts.cache / "logs").glob("*.log"))
    assert log_file.stat().st_mode & 0o777 == 0o600  # private to its writer, any umask
    log = log_file.read_text()
    assert "SIGTERM received" in log and "unmounted" in log


def test_mount_fails_fast_with_a_clear_message(data: Data, mounts: Mounts) -> None:
    def fails(*args: str, env: dict[str, str] | None = None) -> str:
        t0 = time.monotonic()
        p = subprocess.run(
            [sys.executable, "-m", "vfs.cli", "mount", *args],
            capture_output=True,
            text=True,
            env=env or mounts.env,
            timeout=60,
        )
        assert p.returncode != 0, p.stderr
        assert time.monotonic() - t0 < 20
        return p.stderr

    assert "does not exist" in fails("ds@v1", str(mounts.tmp / "missing"))
    swapped = mounts.mountpoint("swapped")  # the directory first, as in `cp SRC DST`
    assert "the order is vfs mount DATASET[@REF] MOUNTPOINT" in fails(str(swapped), "ds@v1")
    dead = {
        **mounts.env,
        "VFS_STORE": "s3://bucket/store",
        "VFS_S3_ENDPOINT": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",  # reachability, not credentials, is tried
        "AWS_SECRET_ACCESS_KEY": "example",
    }
    assert "pin it first: vfs cache pin" in fails("ds@v1", str(swapped), env=dead)
    full = mounts.mountpoint("full")
    (full / "x").write_text("x")
    assert "not empty" in fails("ds@v1", str(full))
    empty = mounts.mountpoint("empty")
    assert "no dataset 'nope'" in fails("nope@v1", str(empty))
    assert "nope" in fails("ds@nope", str(empty))
    assert "no dataset" in fails("nope", str(empty))
    assert "cannot reach the store" in fails("ds@v1", str(empty), env=dead)
    assert not is_mounted(str(empty)) and os.listdir(empty) == []
    busy = mounts.mount("ds@v1", "busy")
    assert "already a mount point" in fails("ds@v1", str(busy))


def test_prefetch_then_reads_make_no_remote_requests(data: Data, mounts: Mounts) -> None:
    order = mounts.tmp / "order.txt"
    order.write_text("images/0003.png\nbig.bin\n# a comment\nnested\n")
    doc = json.loads(
        mounts.cli(
            "prefetch", "ds@v1", "with space.csv", "--from-file", str(order), "--json"
        ).stdout
    )
    assert doc["files"] == 4 and doc["bytes_fetched"] > 0
    again = json.loads(mounts.cli("prefetch", "ds@v1", "big.bin", "--json").stdout)
    assert again["already_cached"] == again["chunks"] and again["requests"] == 0
    mnt = mounts.launch("ds@v1", "mnt")
    for p in ("images/0003.png", "big.bin", "nested/deeper/deepest/leaf.bin", "with space.csv"):
        assert sha(mnt / p) == data.v1[p][3]
    assert mounts.ranges() == []
    # Pins protect a version; `cache stats` shows them.
    mounts.cli("cache", "pin", "ds@v1")
    assert any(name.startswith("ds@") for name in mounts.stats()["pins"])
    mounts.cli("cache", "unpin", "ds@v1")
    assert not mounts.stats()["pins"]
