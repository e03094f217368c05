"""A mount that cannot happen says why on the terminal, with what to do (issue 14,
item 4): /dev/fuse missing or not permitted, --allow-other not allowed, fusermount3's
own reason from the log, and one exit code for every unusable mountpoint."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vfs.errors import VfsError
from vfs.mount import control

NOBODY = 65534


def _as_nobody(fn: Callable[[], None]) -> str:
    """Run fn in a forked child whose uid and gid are nobody's; return the message of
    the VfsError it raised, or '' if none."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, so root's private Python need not be reachable
        os.close(r)
        msg = b""
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fn()
        except VfsError as e:
            msg = str(e).encode()
        except BaseException as e:  # reported to the parent
            msg = f"unexpected {type(e).__name__}: {e}".encode()
        os.write(w, msg)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp_path lies below a root-only one)."""
    d = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="vfs-fuse-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def _fuse_node(path: Path, mode: int) -> str:
    os.mknod(path, stat.S_IFCHR | mode, os.makedev(10, 229))
    os.chmod(path, mode)
    return str(path)


def test_a_missing_fuse_device_is_named_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(
        VfsError, match=r"does not exist: load the fuse module .* --device /dev/fuse"
    ):
        control.check_fuse(device=str(tmp_path / "fuse"))


def test_a_fuse_device_a_user_may_not_open_is_named(open_dir: Path) -> None:
    tmp_path = open_dir
    device = _fuse_node(tmp_path / "fuse", 0o600)
    msg = _as_nobody(lambda: control.check_fuse(device=device))
    assert msg.startswith(f"no permission to open {device}"), msg
    assert "chmod 0666" in msg
    # As distributions ship it, the same user passes.
    shipped = _fuse_node(tmp_path / "fuse-shipped", 0o666)
    assert _as_nobody(lambda: control.check_fuse(device=shipped)) == ""


def test_allow_other_for_a_user_needs_user_allow_other(open_dir: Path) -> None:
    tmp_path = open_dir
    device = _fuse_node(tmp_path / "fuse", 0o666)
    conf = tmp_path / "fuse.conf"
    conf.write_text("# mount_max = 1000\n#user_allow_other\n")
    conf.chmod(0o644)

    def check() -> None:
        control.FUSE_CONF = str(conf)
        control.check_fuse(allow_other=True, device=device)

    assert "needs the line user_allow_other" in _as_nobody(check)
    conf.write_text("user_allow_other  # for the team's training jobs\n")
    assert _as_nobody(check) == ""
    control.check_fuse(allow_other=True, device=device)  # root may always


def test_fusermount3s_reason_is_taken_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "mount.log"
    log.write_text(
        "2026-11-27 10:00:00,000 4242 INFO vfs.mount.daemon: mounting ds@v1\n"
        "fusermount3: user has no write access to mountpoint /srv/mnt\n"
        "2026-11-27 10:00:00,100 4242 ERROR vfs.mount.daemon: cannot mount /srv/mnt: "
        "fuse_session_mount failed\n"
    )
    assert control._fuse_cause(str(log)) == (
        "fusermount3: user has no write access to mountpoint /srv/mnt"
    )
    assert control._fuse_cause(str(tmp_path / "none.log")) == ""


def test_every_unusable_mountpoint_exits_2(tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    afile = tmp_path / "file"
    afile.write_text("x")
    env = {**os.environ, "VFS_STORE": str(tmp_path / "store"), "VFS_CACHE_DIR": str(tmp_path / "c")}
    for where, says in (
        (tmp_path / "missing", "does not exist; create it first"),
        (full, "is not empty"),
        (afile, "is not a directory"),
    ):
        p = subprocess.run(
            [sys.executable, "-m", "vfs", "mount", "ds@v1", str(where)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert p.returncode == 2, (where, p.stderr)
        assert says in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
