"""What the mount and the CLI refuse, and what they never reveal (issue 5, item 8).

Writes of every kind answer EROFS (beyond those in test_mount.py); no setuid, setgid,
sticky bit or device node ever shows, even in a forged version; another user cannot
read a mount made without --allow-other; secrets never reach a log or an error; a
read-only S3 identity can read everything and write nothing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import forge
from tests.support.mounting import Mounts, fuse_usable, sha
from tests.support.treegen import make_tree
from vfs import format as fmt
from vfs.backends.faults import Fault
from vfs.ops.commit import commit_dir
from vfs.store import HEADS, Store
from vfs.testing.seaweed import SeaweedServer

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not fuse_usable(), reason="needs /dev/fuse and fusermount3"),
]
NOBODY = 65534


@contextlib.contextmanager
def _mounting(url: str, tmp: Path) -> Iterator[Mounts]:
    m = Mounts(url, tmp)
    try:
        yield m
    finally:
        m.cleanup()
    assert not m.error_lines()


@pytest.fixture
def mounts(store_url: str, tmp_path: Path) -> Iterator[Mounts]:
    with _mounting(store_url, tmp_path) as m:
        yield m


@pytest.fixture
def s3_mounts(s3_url: str, tmp_path: Path) -> Iterator[Mounts]:
    with _mounting(s3_url, tmp_path) as m:
        yield m


def _commit(url: str, src: Path, tmp: Path, dataset: str = "ds", tag: str = "v1") -> None:
    store = Store.open(url)
    try:
        commit_dir(store, str(src), dataset, tag=tag, cache_dir=str(tmp / "wc"))
    finally:
        store.close()


# --- writes --------------------------------------------------------------------------


def test_writes_of_every_other_kind_answer_erofs(
    store_url: str, tmp_path: Path, mounts: Mounts
) -> None:
    """test_mount.py covers create, write, append, truncate, unlink, rename, mkdir,
    rmdir, setxattr, removexattr, chmod, chown, utime, symlink, link and mkfifo on a
    file; these are the other doors: devices, O_TRUNC, directories, the root,
    symlinks themselves, a reopened descriptor, and shared writable mappings."""
    src = make_tree(tmp_path / "src")
    _commit(store_url, src, tmp_path)
    mnt = mounts.mount("ds@v1")
    before = {p: sha(mnt / p) for p in ("with space.csv", "nested/deeper/deepest/leaf.bin")}
    listing = sorted(os.listdir(mnt))
    f, d, link = mnt / "with space.csv", mnt / "nested", mnt / "link-to-csv"
    fd = os.open(f, os.O_RDONLY)
    try:
        attempts: dict[str, Callable[[], object]] = {
            "mknod a device": lambda: os.mknod(mnt / "dev", stat.S_IFCHR | 0o600, os.makedev(1, 3)),
            "mknod a file": lambda: os.mknod(mnt / "node", stat.S_IFREG | 0o600),
            "open O_RDONLY|O_TRUNC": lambda: os.open(f, os.O_RDONLY | os.O_TRUNC),
            "open O_CREAT a new name": lambda: os.open(mnt / "x", os.O_CREAT | os.O_RDONLY, 0o644),
            "reopen the fd for writing": lambda: open(f"/proc/self/fd/{fd}", "wb"),  # noqa: SIM115
            "rename a directory": lambda: os.rename(d, mnt / "moved"),
            "rename over a file": lambda: os.rename(mnt / "empty.txt", f),
            "mkdir in a subdirectory": lambda: os.mkdir(d / "new"),
            "chmod a directory": lambda: os.chmod(d, 0o777),
            "chmod the root": lambda: os.chmod(mnt, 0o777),
            "chown the root": lambda: os.chown(mnt, 1, 1),
            "utime a directory": lambda: os.utime(d, (1, 1)),
            "setxattr on the root": lambda: os.setxattr(mnt, "user.x", b"1"),
            "setxattr a vfs attribute": lambda: os.setxattr(f, "user.vfs.version", b"0" * 64),
            "setxattr on a symlink": lambda: os.setxattr(
                link, "user.x", b"1", follow_symlinks=False
            ),
            "lchown a symlink": lambda: os.lchown(link, 1, 1),
            "utime a symlink": lambda: os.utime(link, (1, 1), follow_symlinks=False),
            "unlink a symlink": lambda: os.unlink(link),
            "rmdir a non-empty dir": lambda: os.rmdir(d),
        }
        for name, attempt in attempts.items():
            with pytest.raises(OSError) as info:
                attempt()
            assert info.value.errno == errno.EROFS, f"{name}: {info.value}"
        # A read-only descriptor refuses writes before the filesystem is asked.
        with pytest.raises(OSError) as info:
            os.write(fd, b"x")
        assert info.value.errno == errno.EBADF
        with pytest.raises(OSError) as info:
            os.ftruncate(fd, 0)
        assert info.value.errno in (errno.EINVAL, errno.EBADF)
        with pytest.raises(OSError) as info:
            mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        assert info.value.errno == errno.EACCES
    finally:
        os.close(fd)
    assert {p: sha(mnt / p) for p in before} == before and sorted(os.listdir(mnt)) == listing


# --- setuid, setgid, sticky, devices -----------------------------------------------


def test_no_setuid_setgid_sticky_bit_or_device_node_ever_shows(
    store_url: str, tmp_path: Path, mounts: Mounts
) -> None:
    store = Store.open(store_url)
    try:
        payload = b"#!/bin/sh\nid -u\n"
        locs = forge.upload(store, tmp_path / "spool", [payload])
        # A directory of entries whose kind is none of file, dir, symlink: the format
        # has no devices, FIFOs or sockets, so a forged one is refused, not shown.
        devices = forge.leaf(store, [forge.entry(b"null", kind=4)], {})
        sub = forge.leaf(store, [forge.entry(b"inner-suid", mode=0o4755, data=payload)], locs)
        root = forge.leaf(
            store,
            [
                forge.entry(b"devices", fmt.DIR, 0o755, tree=devices),
                forge.entry(b"setgid-sticky-dir", fmt.DIR, 0o3777, tree=sub),
                forge.entry(b"suid-root-shell", mode=0o7777, data=payload),
                forge.entry(b"suid-symlink", fmt.SYMLINK, 0o4777, target=b"suid-root-shell"),
            ],
            locs,
        )
        forge.version(store, "forged", "v1", root)
    finally:
        store.close()
    mnt = mounts.mount("forged@v1")
    opts = next(
        ln.split()[3]
        for ln in Path("/proc/mounts").read_text().splitlines()
        if ln.split()[1] == str(mnt)
    )
    assert {"ro", "nosuid", "nodev"} <= set(opts.split(","))
    for p in [
        mnt / "suid-root-shell",
        mnt / "suid-symlink",
        mnt / "setgid-sticky-dir",
        mnt / "setgid-sticky-dir" / "inner-suid",
        mnt / "devices",
    ]:
        st = os.lstat(p)
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), (p, oct(st.st_mode))
        assert stat.S_IFMT(st.st_mode) in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK), p
    assert stat.S_IMODE(os.stat(mnt / "suid-root-shell").st_mode) == 0o777
    assert (mnt / "suid-root-shell").read_bytes() == payload
    with pytest.raises(OSError) as info:
        os.listdir(mnt / "devices")
    assert info.value.errno == errno.EIO
    assert sorted(os.listdir(mnt)) == [
        "devices",
        "setgid-sticky-dir",
        "suid-root-shell",
        "suid-symlink",
    ]


# --- other users -----------------------------------------------------------------------


def _as_nobody(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd), user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, text=True
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run commands as another user")
def test_another_user_cannot_read_the_mount_unless_allow_other(
    store_url: str, tmp_path: Path, mounts: Mounts
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "public.txt").write_text("for everyone\n")
    (src / "secret.txt").write_text("for the owner\n")
    os.chmod(src / "public.txt", 0o644)
    os.chmod(src / "secret.txt", 0o600)
    _commit(store_url, src, tmp_path)
    # pytest's tmp dirs are private (0700): mount where another user can walk to.
    parent = Path(tempfile.mkdtemp(prefix="vfs-other-user-", dir="/tmp"))
    os.chmod(parent, 0o755)
    try:
        private = mounts.mountpoint("private", parent)
        shared = mounts.mountpoint("shared", parent)
        mounts.cli("mount", "ds@v1", str(private))
        mounts.cli("mount", "ds@v1", str(shared), "--allow-other")
        assert (private / "secret.txt").read_text() == "for the owner\n"  # root, the mounter
        for cmd in (
            ("cat", str(private / "public.txt")),
            ("ls", str(private)),
            ("stat", str(private)),
        ):
            p = _as_nobody(*cmd)
            assert p.returncode != 0 and "Permission denied" in p.stderr, (cmd, p)
        # With --allow-other the version's modes decide (default_permissions).
        p = _as_nobody("cat", str(shared / "public.txt"))
        assert p.returncode == 0 and p.stdout == "for everyone\n", p
        p = _as_nobody("cat", str(shared / "secret.txt"))
        assert p.returncode != 0 and "Permission denied" in p.stderr, p
        assert "allow_other" in next(
            ln for ln in Path("/proc/mounts").read_text().splitlines() if str(shared) in ln
        )
    finally:
        mounts.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


# --- credentials ------------------------------------------------------------------------


@pytest.mark.s3
def test_credentials_never_appear_in_logs_or_errors(
    seaweed: SeaweedServer, s3_url: str, tmp_path: Path, s3_mounts: Mounts
) -> None:
    mounts = s3_mounts
    src = make_tree(tmp_path / "src", big=True)
    _commit(s3_url, src, tmp_path)
    fake = "WrongSecretKeyThatMustNotLeak0123456789ab"
    wrong = {**mounts.env, "AWS_SECRET_ACCESS_KEY": fake}
    read_only = {**mounts.env, **seaweed.env(read_only=True)}
    texts: list[str] = []

    def run(env: dict[str, str], *args: str) -> None:
        p = mounts.cli(*args, "-vv", check=False, env=env)
        assert p.returncode == 1, (args, p.stderr[-2000:])
        # Debug logs may hold library tracebacks; the error itself is one clean line.
        assert p.stderr.strip().splitlines()[-1].startswith("vfs: error: "), p.stderr[-500:]
        texts.append(p.stdout + p.stderr)

    # Failing runs, with debug logging: credentials rejected, permission denied...
    run(wrong, "ls")
    run(wrong, "commit", str(src), "ds")
    run(wrong, "get", "ds@v1", "-o", str(tmp_path / "out"))
    run(wrong, "verify", "ds@v1")
    run(wrong, "mount", "ds@v1", str(mounts.mountpoint("refused")))
    (src / "new.txt").write_text("new\n")
    run(read_only, "commit", str(src), "ds")
    run(read_only, "tag", "ds@v1", "nope")
    # ...and a mount whose reads fail, its daemon logging at debug level.
    mounts.faults.set(Fault("error", ops=("get_range",)))
    mnt = mounts.launch("ds@v1", "failing", "--read-timeout", "1", "-v")
    with pytest.raises(OSError):
        (mnt / "big.bin").read_bytes()
    mounts.cleanup()
    texts.extend(p.read_text(errors="replace") for p in mounts.logs)
    texts.extend(p.read_text(errors="replace") for p in (mounts.cache / "logs").glob("*.log"))
    everything = "\n".join(texts)
    assert "credentials rejected" in everything and "access denied" in everything
    for secret in (fake, seaweed.secret_key, seaweed.ro_secret_key):
        assert secret not in everything


@pytest.mark.s3
def test_a_read_only_identity_reads_everything_and_writes_nothing(
    seaweed: SeaweedServer, s3_url: str, tmp_path: Path, s3_mounts: Mounts
) -> None:
    mounts = s3_mounts
    src = make_tree(tmp_path / "src", big=True)
    _commit(s3_url, src, tmp_path)
    store = Store.open(s3_url)
    keys_before = sorted(store.backend.list(""))
    head = store.read_ref("ds", HEADS, "main")
    store.close()
    mounts.env.update(seaweed.env(read_only=True))
    mnt = mounts.mount("ds@v1")
    assert sha(mnt / "big.bin") == sha(src / "big.bin")
    mounts.cli("get", "ds@v1", "-o", str(tmp_path / "out"))
    assert sha(tmp_path / "out" / "big.bin") == sha(src / "big.bin")
    doc = json.loads(mounts.cli("prefetch", "ds@v1", "--json").stdout)
    assert doc["files"] > 0
    mounts.cli("verify", "ds@v1")
    (src / "new.txt").write_text("a change to commit\n")
    for args in (
        ("commit", str(src), "ds"),
        ("commit", str(src), "ds", "--tag", "v2"),
        ("tag", "ds@v1", "v9"),
        ("branch", "ds@v1", "b2"),
        ("rollback", "ds@v1"),
    ):
        p = mounts.cli(*args, check=False)
        assert p.returncode == 1, (args, p.stderr)
        line = p.stderr.strip()
        assert len(line.splitlines()) == 1 and "access denied" in line, (args, line)
    store = Store.open(s3_url)  # with the admin identity: nothing moved, nothing added
    try:
        assert store.read_ref("ds", HEADS, "main") == head
        assert sorted(store.backend.list("")) == keys_before
    finally:
        store.close()
