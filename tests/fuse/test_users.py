"""vfs as real Unix users run it (issue 14, items 7 and 8): a user who is not root
commits, mounts, switches and unmounts; two members of one group share a store and a
cache on a team server, whatever their umask.

The users are real (useradd, as root), and so is their Python: root's home is private
and the suite's interpreter lives under it, so the users get a venv built from
Debian's system python3 outside it, with this checkout installed. /dev/fuse is made
usable as distributions ship it (0666) for the test, and restored after.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.mounting import fuse_usable
from vfs.mount.control import is_mounted

ROOT = Path("/var/tmp/vfs-test-users")
REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
GROUP = "vfsteam"

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(
        os.geteuid() != 0 or not fuse_usable() or not os.path.exists(SYSTEM_PYTHON),
        reason="needs root (to add users), /dev/fuse, fusermount3 and the system python3",
    ),
]


def _source_stamp() -> str:
    h = hashlib.sha256()
    for p in sorted([REPO / "pyproject.toml", *(REPO / "vfs").rglob("*.py")]):
        h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def venv() -> Path:
    """A venv of the system python3 with this checkout installed (not editable: the
    users cannot read root's tree), kept across runs while the source is unchanged."""
    ROOT.mkdir(exist_ok=True)
    ROOT.chmod(0o755)
    path = ROOT / f"venv-{_source_stamp()}"
    if not (path / ".complete").exists():
        for old in ROOT.glob("venv-*"):
            shutil.rmtree(old, ignore_errors=True)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(path)], check=True)
        subprocess.run(
            [str(path / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(REPO)],
            check=True,
            timeout=900,
        )
        subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)
        (path / ".complete").touch()
    return path


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path
    venv: Path

    def run(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`vfs ARGS` as this user, umask 022, with a login-like environment."""

        def become() -> None:
            os.setgroups([self.gid])
            os.setgid(self.gid)
            os.setuid(self.uid)
            os.umask(0o022)

        base = {
            "HOME": str(self.home),
            "USER": self.name,
            "PATH": f"{self.venv}/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "VFS_NO_PROGRESS": "1",
        }
        p = subprocess.run(
            [str(self.venv / "bin" / "vfs"), *args],
            capture_output=True,
            text=True,
            env={**base, **(env or {})},
            cwd=self.home,
            preexec_fn=become,
            timeout=120,
        )
        if check and p.returncode != 0:
            raise AssertionError(
                f"{self.name}: vfs {' '.join(args)} exited {p.returncode}: {p.stderr}"
            )
        return p

    def read(self, path: Path) -> bytes:
        """A file read by this user (a forked child with its uid), through whatever
        mount serves it."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                os.setgroups([self.gid])
                os.setgid(self.gid)
                os.setuid(self.uid)
                data = path.read_bytes()
                os.write(w, hashlib.sha256(data).hexdigest().encode())
            except BaseException as e:  # reported to the parent as text
                os.write(w, f"error: {e}".encode())
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            out = f.read().decode()
        os.waitpid(pid, 0)
        return out.encode()


def _user(name: str, venv: Path) -> User:
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        subprocess.run(["groupadd", GROUP], check=True)
    home = ROOT / f"home-{name}"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "-M", "-d", str(home), "-g", GROUP, "-s", "/bin/sh", name], check=True
        )
    pw = pwd.getpwnam(name)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    home.chmod(0o755)
    return User(name, pw.pw_uid, pw.pw_gid, home, venv)


@pytest.fixture
def users(venv: Path) -> Iterator[tuple[User, User]]:
    """Two members of one group, and /dev/fuse as distributions ship it."""
    mode = os.stat("/dev/fuse").st_mode & 0o777
    os.chmod("/dev/fuse", 0o666)
    made = [_user("vfs-alice", venv), _user("vfs-bob", venv)]
    try:
        yield made[0], made[1]
    finally:
        for mnt in ROOT.rglob("mnt*"):
            if is_mounted(str(mnt)):
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        os.chmod("/dev/fuse", mode)
        for u in made:
            subprocess.run(["userdel", u.name], capture_output=True)
            shutil.rmtree(u.home, ignore_errors=True)
        subprocess.run(["groupdel", GROUP], capture_output=True)
        shutil.rmtree(ROOT / "team", ignore_errors=True)


def _tree(root: Path, files: dict[str, bytes], owner: User) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    subprocess.run(["chown", "-R", f"{owner.uid}:{owner.gid}", str(root)], check=True)


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode()


def test_a_user_who_is_not_root_commits_mounts_switches_and_unmounts(
    users: tuple[User, User],
) -> None:
    alice, _ = users
    v1 = {"labels.csv": b"img,label\n0.png,cat\n", "img/0.png": os.urandom(40_000)}
    v2 = {**v1, "labels.csv": b"img,label\n0.png,animal\n"}
    data = alice.home / "data"
    _tree(data, v1, alice)
    alice.run("commit", str(data), "digits", "--tag", "v1")
    _tree(data, v2, alice)
    alice.run("commit", str(data), "digits", "--tag", "v2")
    # Her store and cache are her own, in her XDG directories.
    assert (alice.home / ".local/share/vfs/store/config").is_file()
    mnt = alice.home / "mnt"
    mnt.mkdir()
    os.chown(mnt, alice.uid, alice.gid)
    alice.run("mount", "digits@v1", str(mnt))
    try:
        assert alice.read(mnt / "labels.csv") == _sha(v1["labels.csv"])
        assert alice.read(mnt / "img/0.png") == _sha(v1["img/0.png"])
        alice.run("switch", str(mnt), "v2")
        assert alice.read(mnt / "labels.csv") == _sha(v2["labels.csv"])
    finally:
        alice.run("umount", str(mnt), check=False)
    assert not is_mounted(str(mnt))
    assert (alice.home / ".cache/vfs").is_dir()
    # Root's cache is not hers to read: one line, no traceback.
    root_cache = Path(os.path.expanduser("~/.cache/vfs"))
    root_cache.mkdir(parents=True, exist_ok=True)
    p = alice.run("cache", "stats", "--cache-dir", str(root_cache), check=False)
    assert p.returncode == 1 and len(p.stderr.splitlines()) == 1, p.stderr
    assert "ermission denied" in p.stderr and "Traceback" not in p.stderr
    # A cache she may read but not write (a team's, before she is in its group):
    # LMDB refused it with a traceback. One line; ls reads on without the cache.
    theirs = ROOT / "not-her-cache"
    shutil.rmtree(theirs, ignore_errors=True)
    from vfs.cache import ChunkCache

    ChunkCache(theirs, 1 << 20).close()
    for p_ in (theirs, *theirs.rglob("*")):
        p_.chmod(0o755 if p_.is_dir() else 0o644)
    p = alice.run("cache", "stats", "--cache-dir", str(theirs), check=False)
    assert p.returncode == 1 and len(p.stderr.splitlines()) == 1, p.stderr
    assert "ermission denied" in p.stderr and "Traceback" not in p.stderr
    listed = alice.run("ls", "digits@v1", "--cache-dir", str(theirs))
    assert "labels.csv" in listed.stdout


def test_two_members_share_a_store_and_a_cache_on_a_team_server(
    users: tuple[User, User],
) -> None:
    alice, bob = users
    team = ROOT / "team"
    shutil.rmtree(team, ignore_errors=True)
    gid = grp.getgrnam(GROUP).gr_gid
    for d in (team, team / "store", team / "cache"):
        d.mkdir()
        os.chown(d, 0, gid)
        d.chmod(0o2775)  # what an administrator does: install -d -m 2775 -g team
    env = {"VFS_STORE": str(team / "store"), "VFS_CACHE_DIR": str(team / "cache")}
    a_files = {f"a/{i}.bin": os.urandom(30_000 + i) for i in range(20)}
    b_files = {f"b/{i}.bin": os.urandom(30_000 + i) for i in range(20)}
    _tree(alice.home / "data", a_files, alice)
    _tree(bob.home / "data", b_files, bob)

    # Each commits to the shared store: bob writes into pack directories alice made.
    alice.run("commit", str(alice.home / "data"), "shared", "--tag", "v1", env=env)
    bob.run("commit", str(bob.home / "data"), "shared", "--tag", "v2", env=env)
    bob.run("commit", str(bob.home / "data"), "bobs", env=env)

    def mount(user: User, name: str, spec: str) -> Path:
        mnt = team / name
        mnt.mkdir()
        os.chown(mnt, user.uid, user.gid)
        user.run("mount", spec, str(mnt), env=env)
        return mnt

    def inserted() -> int:
        return int(
            json.loads(alice.run("cache", "stats", "--json", env=env).stdout)["bytes_inserted"]
        )

    def read_all(user: User, mnt: Path, files: dict[str, bytes]) -> None:
        for rel, data in files.items():
            assert user.read(mnt / rel) == _sha(data), (user.name, rel)

    # Each mounts with the shared cache (their logs land in one logs/); the second
    # reads the first one's chunks without fetching them again.
    mnt_a = mount(alice, "mnt-alice", "shared@v1")
    read_all(alice, mnt_a, a_files)
    after_alice = inserted()
    mnt_b = mount(bob, "mnt-bob", "shared@v1")
    read_all(bob, mnt_b, a_files)
    assert inserted() == after_alice, "bob fetched what alice had cached"
    # Alice's mount is hers: bob is told so, not "no daemon" or a fusermount error.
    for verb in (["info", str(mnt_a)], ["switch", str(mnt_a), "v2"], ["umount", str(mnt_a)]):
        refused = bob.run(*verb, check=False)
        assert refused.returncode == 2, (verb, refused.stderr)
        assert f"is a vfs mount of {alice.name} (uid {alice.uid})" in refused.stderr
    for user, mnt in ((alice, mnt_a), (bob, mnt_b)):
        user.run("umount", str(mnt))
    # One team mountpoint (/mnt/imagenet), mounted by each in turn: the log was named
    # after the mountpoint alone, and the second member was refused the first's file.
    at_team = team / "mnt-team"
    at_team.mkdir()
    os.chown(at_team, 0, gid)
    at_team.chmod(0o2775)
    for user in (alice, bob):
        user.run("mount", "shared@v1", str(at_team), env=env)
        read_all(user, at_team, dict(list(a_files.items())[:1]))
        user.run("umount", str(at_team))

    # After eviction (by bob, of segments alice wrote), both still can.
    bob.run("cache", "prune", "--to", "1", env=env)
    mnt_b = mount(bob, "mnt-bob2", "shared@v2")
    read_all(bob, mnt_b, b_files)
    mnt_a = mount(alice, "mnt-alice2", "shared@v2")
    read_all(alice, mnt_a, b_files)
    for user, mnt in ((alice, mnt_a), (bob, mnt_b)):
        user.run("umount", str(mnt))
    # Nothing either of them made is closed to the other.
    for p in [
        team / "store",
        team / "cache",
        *(team / "store").rglob("*"),
        *(team / "cache").rglob("*"),
    ]:
        if p.is_symlink() or p.name.endswith(".sock"):
            continue
        mode = p.stat().st_mode
        if p.parent.name == "logs" and p.is_file():
            assert mode & 0o077 == 0, (p, oct(mode))  # a log is its writer's alone
        else:
            assert mode & 0o060 == 0o060, (p, oct(mode))
