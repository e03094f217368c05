"""Access records (issue 13, item 6): `vfs mount --record-access FILE` writes which
files and byte ranges a run read through the mount; `vfs commit --access-record`
attaches it to a model version; `vfs show --inputs` reads it back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mounting import Mounts, fuse_usable
from vfs import access
from vfs.mount.control import is_mounted

MiB = 1024 * 1024

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not fuse_usable(), reason="needs /dev/fuse and fusermount3"),
]

# What a training script does: reads two files whole (one in a subdirectory), one
# in two places, and leaves the rest alone.
_SCRIPT = """
import os, sys
mnt = sys.argv[1]
with open(os.path.join(mnt, "full.bin"), "rb") as f:
    assert len(f.read()) == 3 * 1024 * 1024
with open(os.path.join(mnt, "sub", "small.txt"), "rb") as f:
    assert f.read() == b"small\\n"
fd = os.open(os.path.join(mnt, "part.bin"), os.O_RDONLY)
assert len(os.pread(fd, 1000, 0)) == 1000
assert len(os.pread(fd, 100, 6 * 1024 * 1024)) == 100
os.close(fd)
os.stat(os.path.join(mnt, "unread.bin"))  # looked at, never read
"""


@pytest.fixture
def mounts(store_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mounts]:
    m = Mounts(store_url, tmp_path)
    try:
        yield m
    finally:
        m.cleanup()
    errors = m.error_lines()
    if errors:
        pytest.fail("mount daemon logged ERROR:\n" + "\n".join(errors), pytrace=False)


def _data(mounts: Mounts) -> dict[str, bytes]:
    src = mounts.tmp / "src"
    files = {
        "full.bin": os.urandom(3 * MiB),
        "part.bin": os.urandom(12 * MiB),
        "sub/small.txt": b"small\n",
        "unread.bin": os.urandom(2 * MiB),
        "sub/unread.txt": b"never\n",
    }
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    mounts.cli("commit", str(src), "ds", "--tag", "v1")
    return files


def _mount(mounts: Mounts, target: str, name: str, record: Path) -> tuple[Path, int]:
    mnt = mounts.mountpoint(name)
    out = mounts.cli("mount", target, str(mnt), "--record-access", str(record), "--json")
    return mnt, int(json.loads(out.stdout)["pid"])


def test_access_record_matches_what_a_script_read(mounts: Mounts) -> None:
    files = _data(mounts)
    v1 = mounts.cli("log", "ds", "--json").stdout
    commit = json.loads(v1)[0]["id"]
    record = mounts.tmp / "run.access.json"
    mnt, _ = _mount(mounts, "ds@v1", "mnt", record)
    subprocess.run([sys.executable, "-c", _SCRIPT, str(mnt)], check=True, timeout=120)
    assert not record.exists()  # written at unmount
    mounts.cli("umount", str(mnt))

    got = access.load(str(record))
    assert list(got) == [f"ds@{commit}"]
    read = got[f"ds@{commit}"]
    # Exactly the files the script read; whole files as one range.
    assert sorted(read) == ["full.bin", "part.bin", "sub/small.txt"]
    assert read["full.bin"] == [(0, 3 * MiB)]
    assert read["sub/small.txt"] == [(0, 6)]
    # The partly read file: both places, and not the whole file. (The kernel reads
    # ahead of a reader, so the ranges are what the mount served: at least what the
    # script asked for, rounded up by the readahead window.)
    part = read["part.bin"]
    assert any(s <= 0 and e >= 1000 for s, e in part)
    assert any(s <= 6 * MiB and e >= 6 * MiB + 100 for s, e in part)
    assert sum(e - s for s, e in part) < len(files["part.bin"]) // 2

    # Attached to a model version, then asked back.
    model = mounts.tmp / "model"
    model.mkdir()
    (model / "weights").write_bytes(b"w")
    # No --input: the versions the record read are the model's inputs.
    mounts.cli("commit", str(model), "resnet", "--access-record", str(record))
    doc = json.loads(mounts.cli("show", "resnet", "--inputs", "--json").stdout)
    (v,) = doc["versions"]
    assert v["version"] == f"ds@{commit}" and v["tags"] == ["v1"]
    assert v["files_in_version"] == 5
    shown = {f["path"]: (f["bytes_read"], f["size"]) for f in v["files"]}
    assert shown["full.bin"] == (3 * MiB, 3 * MiB)
    assert shown["sub/small.txt"] == (6, 6)
    assert shown["part.bin"][1] == 12 * MiB and shown["part.bin"][0] < 6 * MiB
    text = mounts.cli("show", "resnet", "--inputs").stdout
    assert "3 of 5 files read" in text
    assert f"full.bin\t{3 * MiB}/{3 * MiB} bytes (100%)" in text
    # The record is an object the commit names: gc must keep it.
    meta = json.loads(mounts.cli("show", "resnet", "--json").stdout)["meta"]
    assert meta["vfs.access"] == doc["access_record"]
    assert meta["vfs.input.0"] == f"ds@{commit}" and "vfs.input.1" not in meta


def test_access_record_is_written_on_sigterm(mounts: Mounts) -> None:
    _data(mounts)
    record = mounts.tmp / "term.json"
    mnt, pid = _mount(mounts, "ds", "multi", record)  # every version: @v1/...
    assert (mnt / "@v1" / "sub" / "small.txt").read_bytes() == b"small\n"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while is_mounted(str(mnt)) or not record.exists():
        assert time.monotonic() < deadline, "not unmounted, or no record, 30 s after SIGTERM"
        time.sleep(0.05)
    (files,) = access.load(str(record)).values()
    assert files == {"sub/small.txt": [(0, 6)]}


def test_mount_locked_reads_the_locked_version_after_the_branch_moved(mounts: Mounts) -> None:
    _data(mounts)
    project = mounts.tmp / "project"
    (project / "deep").mkdir(parents=True)

    def vfs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vfs", *args],
            cwd=cwd,
            env=mounts.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    vfs("lock", "ds@main", cwd=project)
    src = mounts.tmp / "src"
    (src / "sub" / "small.txt").write_bytes(b"moved on\n")
    vfs("commit", str(src), "ds", cwd=project)
    mnt = mounts.mountpoint("locked")
    vfs("mount", "--locked", "ds", str(mnt), cwd=project / "deep")
    assert (mnt / "sub" / "small.txt").read_bytes() == b"small\n"
    mounts.cli("umount", str(mnt))
