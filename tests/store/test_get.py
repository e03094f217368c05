"""`vfs get` as a user runs it (a subprocess): interrupted, it leaves no file with
wrong bytes under its final name; run again, it resumes; a differing file is refused
unless --force (issue 14, item 1)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.signals import hear_sigint
from tests.support.treegen import snapshot_fs
from vfs.backends import FAULTS_ENV
from vfs.backends.faults import Fault, FaultControl
from vfs.ops.get import TEMP_PREFIX

MiB = 1024 * 1024


class Vfs:
    def __init__(self, tmp: Path, faults: Path | None = None) -> None:
        self.env = {
            **os.environ,
            "VFS_STORE": str(tmp / "store"),
            "VFS_CACHE_DIR": str(tmp / "cache"),
            "VFS_NO_PROGRESS": "1",
        }
        if faults is not None:
            self.env[FAULTS_ENV] = str(faults)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "vfs", *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            self.argv(*args), capture_output=True, text=True, env=self.env, timeout=120
        )
        if check and p.returncode != 0:
            raise AssertionError(f"vfs {' '.join(args)} exited {p.returncode}: {p.stderr}")
        return p


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    (d / "sub").mkdir(parents=True)
    for i in range(12):
        (d / f"part{i:02}.bin").write_bytes(os.urandom(6 * MiB + i))
    (d / "sub" / "small.txt").write_text("small\n")
    (d / "empty").write_bytes(b"")
    os.symlink("sub/small.txt", d / "link")
    return d


def _final_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(TEMP_PREFIX)]


def test_interrupted_get_leaves_only_complete_files_and_resumes(tmp_path: Path, src: Path) -> None:
    control = FaultControl(tmp_path / "faults")
    vfs = Vfs(tmp_path, tmp_path / "faults")
    # Small packs, so the six files are fetched by several requests, one unit each.
    vfs.env["VFS_PACK_TARGET"] = str(4 * MiB)
    vfs.run("commit", str(src), "big")
    # Every chunk read now takes a while: the get is slow enough to interrupt mid-way.
    control.set(Fault("latency", ops=("get_range",), key="packs/", seconds=0.4))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*vfs.argv("get", "big", "-o", str(out), "-j", "1")],
        env=vfs.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=hear_sigint,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith("part") for p in _final_files(out) if out.exists()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        f"vfs: get interrupted: every file under its name in {out} is complete; "
        "run the same command again to fetch the rest"
    ], err
    parts = sorted(p.name for p in out.glob("part*"))
    assert 0 < len(parts) < 12, parts  # interrupted between the first file and the last
    for p in out.glob("part*"):  # whatever has its final name is the source's bytes
        assert p.read_bytes() == (src / p.name).read_bytes(), p.name
    assert not [p for p in out.rglob(TEMP_PREFIX + "*")], "temporary files were left"

    control.set()
    doc = json.loads(vfs.run("get", "big", "-o", str(out), "--json").stdout)
    assert doc["kept"] >= len(parts)  # what was in place was verified and kept
    assert doc["files"] + doc["symlinks"] + doc["kept"] == 15, doc  # 14 files, 1 symlink
    assert snapshot_fs(out) == snapshot_fs(src)
    # OUT has the mode mkdir gives, as after a get never interrupted (it stayed 0700)
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()

    # A third run fetches nothing: everything is in place.
    doc = json.loads(vfs.run("get", "big", "-o", str(out), "--json").stdout)
    assert doc["files"] == 0 and doc["bytes"] == 0, doc
    assert snapshot_fs(out) == snapshot_fs(src)


def test_a_differing_file_is_refused_unless_force(tmp_path: Path, src: Path) -> None:
    vfs = Vfs(tmp_path)
    vfs.run("commit", str(src), "ds")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("not the version's\n")
    (out / "sub").mkdir()
    (out / "sub" / "small.txt").write_text("edited\n")
    p = vfs.run("get", "ds", "-o", str(out), check=False)
    assert p.returncode == 2, p.stderr
    assert "small.txt exists and differs from the version; --force" in p.stderr
    assert (out / "sub" / "small.txt").read_text() == "edited\n"
    vfs.run("get", "ds", "-o", str(out), "--force")
    assert (out / "sub" / "small.txt").read_text() == "small\n"
    assert (out / "mine.txt").read_text() == "not the version's\n"  # left alone
    (out / "mine.txt").unlink()
    assert snapshot_fs(out) == snapshot_fs(src)

    # One file: its new name is refused the same way, and kept when equal.
    one = tmp_path / "one.txt"
    one.write_text("other\n")
    p = vfs.run("get", "ds", "sub/small.txt", "-o", str(one), check=False)
    assert p.returncode == 2 and "--force" in p.stderr, p.stderr
    vfs.run("get", "ds", "sub/small.txt", "-o", str(one), "--force")
    assert one.read_text() == "small\n"
    vfs.run("get", "ds", "sub/small.txt", "-o", str(one))


def test_a_symlink_where_the_version_has_a_directory_is_never_followed(
    tmp_path: Path, src: Path
) -> None:
    vfs = Vfs(tmp_path)
    vfs.run("commit", str(src), "ds")
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "sub")
    p = vfs.run("get", "ds", "-o", str(out), check=False)
    assert p.returncode == 2 and "sub exists and is not a directory" in p.stderr, p.stderr
    assert list(outside.iterdir()) == []
    # --force replaces the symlink itself with the version's directory.
    vfs.run("get", "ds", "-o", str(out), "--force")
    assert list(outside.iterdir()) == [] and not (out / "sub").is_symlink()
    assert (out / "sub" / "small.txt").read_text() == "small\n"


def test_get_gives_directories_and_symlinks_their_modes_and_mtimes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("f\n")
    os.symlink("sub/f.txt", src / "link")
    old = 946_684_800_000_000_000  # 2000-01-01
    os.utime(src / "link", ns=(old, old), follow_symlinks=False)
    (src / "sub").chmod(0o750)
    os.utime(src / "sub", ns=(old, old))
    vfs = Vfs(tmp_path)
    vfs.run("commit", str(src), "ds")

    out = tmp_path / "out"
    vfs.run("get", "ds", "-o", str(out))
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()  # as mkdir makes it, not 0700
    assert os.lstat(out / "link").st_mtime_ns == old
    assert (out / "sub").stat().st_mode & 0o777 == 0o750
    assert (out / "sub").stat().st_mtime_ns == old
    # A directory of the version as OUT gets its own mode and mtime.
    vfs.run("get", "ds", "sub", "-o", str(tmp_path / "just-sub"))
    st = (tmp_path / "just-sub").stat()
    assert (st.st_mode & 0o777, st.st_mtime_ns) == (0o750, old)


def test_a_groups_setgid_directory_keeps_its_bit_and_no_file_becomes_setuid(
    tmp_path: Path,
) -> None:
    """A shared directory's setgid (and a sticky bit) come back with get; a file's
    setuid does not (as on the mount: data makes no privileged program). `vfs ls -l`
    shows the modes as stored."""
    src = tmp_path / "src"
    (src / "shared").mkdir(parents=True)
    (src / "shared" / "tool").write_text("#!/bin/sh\n")
    (src / "shared" / "tool").chmod(0o4755)
    (src / "shared").chmod(0o2775)
    vfs = Vfs(tmp_path)
    vfs.run("commit", str(src), "ds")
    listed = vfs.run("ls", "ds", "shared", "-l").stdout
    assert listed.startswith("-rwsr-xr-x"), listed
    assert vfs.run("ls", "ds", "-l").stdout.startswith("drwxrwsr-x")
    out = tmp_path / "out"
    vfs.run("get", "ds", "-o", str(out))
    assert (out / "shared").stat().st_mode & 0o7777 == 0o2775
    assert (out / "shared" / "tool").stat().st_mode & 0o7777 == 0o755


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_interrupted_pull_says_how_to_resume_and_resumes(tmp_path: Path, src: Path) -> None:
    """Ctrl-C on `vfs pull`: one line that says no ref moved and how to resume; the
    rerun sends only what the first did not."""
    control = FaultControl(tmp_path / "faults")
    vfs = Vfs(tmp_path, tmp_path / "faults")
    vfs.env["VFS_PACK_TARGET"] = str(4 * MiB)  # several packs to copy
    team = str(tmp_path / "team")
    vfs.run("--store", team, "commit", str(src), "big")
    control.set(Fault("latency", ops=("put_file", "put"), key="packs/", seconds=0.5))
    proc = subprocess.Popen(
        vfs.argv("pull", "big", "--from", team, "-j", "1"),
        env=vfs.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=hear_sigint,
    )
    packs = tmp_path / "store" / "packs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not any(packs.rglob("*")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        "vfs: pull interrupted: no ref was moved; run the same command again to resume "
        "(what was copied is not copied again)"
    ), err
    control.set()
    doc = json.loads(vfs.run("pull", "big", "--from", team, "--json").stdout)
    assert doc["commit"]
    out = tmp_path / "out"
    vfs.run("get", "big", "-o", str(out))
    assert snapshot_fs(out) == snapshot_fs(src)


def test_a_get_goes_a_batch_at_a_time_and_resumes_across_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A get of 200,000 files held every file's plan, and a temporary file each, at
    once (477 MB of RSS measured). It now walks the tree a batch at a time; a failure
    in a later batch leaves the earlier batches' files complete, and a rerun keeps
    them and fetches the rest."""
    from tests.support.treegen import make_tree
    from vfs.ops import get as get_mod
    from vfs.ops.commit import commit_dir
    from vfs.reader import open_version
    from vfs.store import Store

    src = make_tree(tmp_path / "src")
    store = Store.open(str(tmp_path / "store"))
    commit_dir(store, str(src), "ds", cache_dir=str(tmp_path / "wc"))
    monkeypatch.setattr(get_mod, "BATCH_FILES", 4)
    batches: list[int] = []
    real_batch = get_mod._get_batch

    def counted(version: Any, entries: list[Any], *args: Any, **kwargs: Any) -> None:
        batches.append(len(entries))
        if len(batches) == 3 and fail:
            raise OSError("the disk went away")
        return real_batch(version, entries, *args, **kwargs)

    monkeypatch.setattr(get_mod, "_get_batch", counted)
    out = tmp_path / "out"
    fail = True
    with open_version("ds", store) as v, pytest.raises(OSError, match="the disk went away"):
        get_mod.get(v, "", str(out))
    assert max(batches) <= 4
    written = [p for p in out.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(written) > 0 and not list(out.rglob(TEMP_PREFIX + "*"))
    fail = False
    batches.clear()
    with open_version("ds", store) as v:
        res = get_mod.get(v, "", str(out))
    assert res.kept >= len(written) and len(batches) > 2
    assert snapshot_fs(out) == snapshot_fs(src)


def test_a_file_damaged_in_the_store_is_named_and_the_rest_is_written(tmp_path: Path) -> None:
    """One damaged chunk in a pack: get writes every other file (those in the same
    fetch unit too), names the damaged one, leaves no temporary file, exits 1."""
    from vfs.reader import open_version
    from vfs.store import Store

    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"img{i:02}.png").write_bytes(os.urandom(3000 + i))
    vfs = Vfs(tmp_path)
    vfs.run("commit", str(src), "ds")
    store = Store.open(str(tmp_path / "store"))
    with open_version("ds", store) as v:
        found = v.stat("img07.png")
        assert found is not None
        loc = v.wanted(found)[0].loc
    pack = Path(store.backend._path(store.pack_key(loc.pack)))  # type: ignore[attr-defined]
    with open(pack, "r+b") as f:  # one byte inside img07.png's chunk
        f.seek(loc.offset + loc.stored_length // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))
    out = tmp_path / "out"
    p = vfs.run("get", "ds", "-o", str(out), check=False)
    assert p.returncode == 1, p.stderr
    assert f"not written, damaged in the store: {out / 'img07.png'}" in p.stderr, p.stderr
    assert "1 file could not be written" in p.stderr and "vfs verify ds@main" in p.stderr
    written = sorted(x.name for x in out.iterdir())
    assert written == sorted(f"img{i:02}.png" for i in range(40) if i != 7), written
    for name in written:
        assert (out / name).read_bytes() == (src / name).read_bytes()
    doc = json.loads(vfs.run("get", "ds", "-o", str(out), "--json", check=False).stdout)
    assert doc["kept"] == 39 and [d["path"] for d in doc["damaged"]] == [str(out / "img07.png")]
    # verify names the key once, and the version the path is in.
    p = vfs.run("verify", "--all", check=False)
    key = store.pack_key(loc.pack)
    assert p.returncode == 1 and p.stdout.count(key) == 1, p.stdout
    assert "  affects: ds@main:img07.png\n" in p.stdout and "1 damaged object\n" in p.stderr


def test_a_get_over_another_version_leaves_exactly_this_one(tmp_path: Path) -> None:
    """Modes and mtimes of files kept because their bytes match are set too; with
    --force a symlink becomes a directory and an empty directory a file; and a
    version's 0555 and 0000 directories take a rerun's files (as a non-root user)."""
    src = tmp_path / "src"
    (src / "d555").mkdir(parents=True)
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o644)
    (src / "data").write_text("data\n")
    (src / "d555" / "x").write_text("x\n")
    os.symlink("d555", src / "was_link")
    (src / "was_dir").mkdir()
    vfs = Vfs(tmp_path)
    vfs.run("commit", str(src), "ds", "--tag", "v1")
    (src / "run.sh").chmod(0o755)
    os.utime(src / "data", ns=(10**18, 10**18))
    os.unlink(src / "was_link")
    (src / "was_link").mkdir()
    (src / "was_link" / "inside").write_text("in\n")
    (src / "was_dir").rmdir()
    (src / "was_dir").write_text("now a file\n")
    (src / "d555").chmod(0o555)
    vfs.run("commit", str(src), "ds", "--tag", "v2")

    out = tmp_path / "out"
    vfs.run("get", "ds@v1", "-o", str(out))
    p = vfs.run("get", "ds@v2", "-o", str(out), check=False)
    assert p.returncode == 2 and "--force replaces it" in p.stderr, p.stderr
    vfs.run("get", "ds@v2", "-o", str(out), "--force")
    assert snapshot_fs(out) == snapshot_fs(src)

    # A directory with files where the version has a file: --force leaves it, does
    # every other path, and names it at the end (it stopped there, half done).
    vfs.run("get", "ds@v1", "-o", str(tmp_path / "o2"))
    (tmp_path / "o2" / "was_dir" / "mine.txt").write_text("mine\n")
    p = vfs.run("get", "ds@v2", "-o", str(tmp_path / "o2"), "--force", check=False)
    assert p.returncode == 2 and "not replaced:" in p.stderr and "1 path of the" in p.stderr
    assert (tmp_path / "o2" / "was_link" / "inside").read_text() == "in\n"  # done after it
    assert (tmp_path / "o2" / "was_dir" / "mine.txt").read_text() == "mine\n"

    if os.geteuid() == 0 and shutil.which("setpriv"):
        # Root's override off, as a user on their own files: d555 is 0555 now.
        (out / "d555" / "x").write_text("edited\n")
        (out / "d555").chmod(0o555)
        argv = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
        p = subprocess.run(
            [*argv, *vfs.argv("get", "ds@v2", "-o", str(out), "--force")],
            capture_output=True,
            text=True,
            env=vfs.env,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        assert snapshot_fs(out) == snapshot_fs(src)
