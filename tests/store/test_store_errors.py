"""Stores that explain themselves: a location without a store's config is refused by
every reader with "no vfs store at X", a first commit creates a store only where
nothing is, and `vfs init` creates one on purpose. Through the CLI as a user types
it, on a local directory and on S3 (SeaweedFS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.store.test_cli import Vfs
from vfs.backends.s3 import S3Backend
from vfs.testing.seaweed import SeaweedServer

# Every verb that reads a store, as a user would type it against a dataset "ds".
READERS = [
    ("ls",),
    ("ls", "ds"),
    ("log", "ds"),
    ("cat", "ds", "a.txt"),
    ("get", "ds", "-o", "{tmp}/out"),
    ("diff", "ds@v1", "ds@v2"),
    ("show", "ds"),
    ("verify", "ds"),
    ("tag", "ds"),
    ("branch", "ds"),
    ("mount", "ds", "{tmp}/mnt"),
]


def _data(tmp_path: Path) -> Path:
    src = tmp_path / "data"
    src.mkdir(exist_ok=True)
    (src / "a.txt").write_text("a")
    return src


def _expect_no_store(vfs: Vfs, tmp_path: Path, at: str, hint: str) -> None:
    (tmp_path / "mnt").mkdir(exist_ok=True)
    for verb in READERS:
        args = [a.format(tmp=tmp_path) for a in verb]
        p = vfs.run(*args, check=False)
        assert p.returncode == 1, (args, p.returncode, p.stderr)
        assert p.stderr.splitlines() == [p.stderr.strip()], (args, p.stderr)
        assert f"vfs: error: no vfs store at {at} ({hint}" in p.stderr, (args, p.stderr)
        assert not os.path.ismount(tmp_path / "mnt")


def _local(tmp_path: Path, store: Path) -> Vfs:
    return Vfs(str(store), tmp_path / "cache")


def test_a_missing_path_holds_no_store(tmp_path: Path) -> None:
    store = tmp_path / "no" / "such" / "dir"
    vfs = _local(tmp_path, store)
    _expect_no_store(vfs, tmp_path, str(store), f"create one with `vfs init {store}`")
    assert not store.exists()  # reading created nothing
    vfs.run("commit", str(_data(tmp_path)), "ds")  # a first commit creates it
    assert (store / "config").is_file()
    assert vfs.run("ls").stdout.startswith("ds")


def test_an_empty_directory_holds_no_store_until_a_commit(tmp_path: Path) -> None:
    store = tmp_path / "empty"
    store.mkdir()
    vfs = _local(tmp_path, store)
    _expect_no_store(vfs, tmp_path, str(store), "create one with `vfs init")
    assert os.listdir(store) == []
    vfs.run("commit", str(_data(tmp_path)), "ds")
    assert vfs.run("log", "ds").returncode == 0


def test_a_file_is_no_store(tmp_path: Path) -> None:
    store = tmp_path / "afile"
    store.write_text("mine")
    vfs = _local(tmp_path, store)
    _expect_no_store(vfs, tmp_path, str(store), "it is a file")
    p = vfs.run("commit", str(_data(tmp_path)), "ds", check=False)
    assert p.returncode == 1 and "it is a file" in p.stderr
    p = vfs.run("init", check=False)
    assert p.returncode == 1 and "cannot create a vfs store" in p.stderr
    assert store.read_text() == "mine"


def test_a_directory_of_other_files_needs_init(tmp_path: Path) -> None:
    store = tmp_path / "photos"
    store.mkdir()
    (store / "cat.jpg").write_text("meow")
    vfs = _local(tmp_path, store)
    _expect_no_store(vfs, tmp_path, str(store), "it holds other files; `vfs init")
    p = vfs.run("commit", str(_data(tmp_path)), "ds", check=False)
    assert p.returncode == 1 and f"`vfs init {store}`" in p.stderr, p.stderr
    assert os.listdir(store) == ["cat.jpg"]  # the refused commit wrote nothing there
    p = vfs.run("init", str(store))
    assert "beside the files already there" in p.stderr
    p = vfs.run("init", str(store))
    assert "already a vfs store" in p.stderr
    vfs.run("commit", str(_data(tmp_path)), "ds")
    assert (store / "cat.jpg").read_text() == "meow"


def test_init_creates_an_empty_store_readers_accept(tmp_path: Path) -> None:
    store = tmp_path / "new"
    vfs = _local(tmp_path, store)
    doc = vfs.json("init")
    assert doc == {"store": str(store), "created": True, "before": "absent"}
    assert vfs.run("ls").returncode == 0
    assert vfs.json("init")["created"] is False


def test_the_default_store_says_there_is_none_yet(tmp_path: Path) -> None:
    vfs = _local(tmp_path, tmp_path / "unused")
    del vfs.env["VFS_STORE"]
    vfs.env["HOME"] = str(tmp_path / "home")
    default = tmp_path / "home" / ".local" / "share" / "vfs" / "store"
    p = vfs.run("ls", check=False)
    assert p.returncode == 1
    assert f"no vfs store at {default} (create one with `vfs init {default}`" in p.stderr
    vfs.run("commit", str(_data(tmp_path)), "ds")
    assert (default / "config").is_file()


@pytest.mark.s3
def test_an_s3_prefix_without_a_config(seaweed: SeaweedServer, tmp_path: Path) -> None:
    bucket = seaweed.make_bucket("vfs-test-noconfig")
    empty = f"s3://{bucket}/empty"
    vfs = Vfs(empty, tmp_path / "cache")
    _expect_no_store(vfs, tmp_path, empty, f"create one with `vfs init {empty}`")
    vfs.run("commit", str(_data(tmp_path)), "ds")  # a first commit creates it
    assert vfs.run("ls").stdout.startswith("ds")

    busy = f"s3://{bucket}/busy"
    b = S3Backend(bucket, "busy", endpoint_url=seaweed.endpoint)
    try:
        b.put("reports/q3.pdf", b"%PDF")
    finally:
        b.close()
    vfs = Vfs(busy, tmp_path / "cache")
    _expect_no_store(vfs, tmp_path, busy, "it holds other files; `vfs init")
    p = vfs.run("commit", str(_data(tmp_path)), "ds", check=False)
    assert p.returncode == 1 and f"`vfs init {busy}`" in p.stderr
    assert "created a vfs store" in vfs.run("init").stderr
    vfs.run("commit", str(_data(tmp_path)), "ds")
    assert vfs.run("cat", "ds", "a.txt").stdout == "a"
