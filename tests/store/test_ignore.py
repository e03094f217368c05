"""Ignore rules of `vfs commit`: .vfsignore files and --exclude, through the CLI as a
user types it (vfs/ignore.py has the rules, docs/semantics.md says them)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from tests.store.test_cli import Vfs


def _files(vfs: Vfs, spec: str) -> set[str]:
    """The files, symlinks and empty directories ("d/") of a version, as `vfs get`
    writes them into a fresh directory."""
    out = Path(vfs.env["VFS_CACHE_DIR"]).parent / f"get-{uuid.uuid4().hex[:8]}"
    vfs.run("get", spec, "-o", str(out))
    return {
        str(p.relative_to(out)) + ("/" if p.is_dir() else "")
        for p in out.rglob("*")
        if not p.is_dir() or not any(p.iterdir())
    }


def _meta(vfs: Vfs, spec: str) -> dict[str, str]:
    """The meta of a version's commit, from `vfs show` (a header line, then JSON)."""
    meta: dict[str, str] = json.loads(vfs.run("show", spec).stdout.split("\n", 1)[1])["meta"]
    return meta


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.fixture
def vfs(tmp_path: Path) -> Vfs:
    return Vfs(str(tmp_path / "store"), tmp_path / "cache")


def test_root_and_nested_rules_negation_dirs_and_anchors(vfs: Vfs, tmp_path: Path) -> None:
    src = _write(
        tmp_path / "src",
        {
            ".vfsignore": "# scratch\n*.log\n!keep.log\n/top.tmp\nbuild/\n",
            "a.txt": "a",
            "x.log": "x",
            "keep.log": "k",
            "top.tmp": "t",
            "build/out.bin": "o",
            "sub/top.tmp": "kept: /top.tmp is anchored at the root",
            "sub/y.log": "y",
            "sub/build": "a file named build: build/ matches directories only",
            "sub/.vfsignore": "*.csv\n!y.log\n",
            "sub/data.csv": "1,2",
            "sub/deep/more.csv": "3,4",
            "other/data.csv": "the sub rules do not reach here",
        },
    )
    r = vfs.json("commit", str(src), "ds")
    assert _files(vfs, "ds") == {
        ".vfsignore",
        "a.txt",
        "keep.log",
        "sub/.vfsignore",
        "sub/top.tmp",
        "sub/y.log",
        "sub/build",
        "sub/deep/",
        "other/data.csv",
    }
    # x.log, top.tmp, build/, sub/data.csv, sub/deep/more.csv
    assert r["ignored"] == 5
    assert "vfs.exclude" not in _meta(vfs, "ds")


def test_exclude_is_relative_to_the_root_wins_and_is_recorded(vfs: Vfs, tmp_path: Path) -> None:
    src = _write(
        tmp_path / "src",
        {
            ".vfsignore": "*.log\n",
            "a.txt": "a",
            "keep.log": "k",
            "x.log": "x",
            "scratch/s": "s",
            "d/scratch/s": "not anchored there",
            "d/z.tmp": "z",
        },
    )
    p = vfs.run(
        "commit", str(src), "ds", "--exclude", "/scratch/", "--exclude", "*.tmp",
        "--exclude", "!keep.log",
    )  # fmt: skip
    assert "3 ignored" in p.stderr  # x.log, scratch/, d/z.tmp
    assert _files(vfs, "ds") == {".vfsignore", "a.txt", "keep.log", "d/scratch/s"}
    assert json.loads(_meta(vfs, "ds")["vfs.exclude"]) == ["/scratch/", "*.tmp", "!keep.log"]


def test_a_store_inside_the_directory_is_not_committed(tmp_path: Path) -> None:
    src = _write(tmp_path / "src", {"a.txt": "a"})
    vfs = Vfs(str(src / ".vfs-store"), tmp_path / "cache")
    vfs.run("commit", str(src), "ds")
    (src / "b.txt").write_text("b")
    r = vfs.json("commit", str(src), "ds")  # now the store is there, full of objects
    assert r["ignored"] == 1 and r["files"] == 2
    assert _files(vfs, "ds") == {"a.txt", "b.txt"}
    # Found by device and inode, not by name: the same store through a symlinked path.
    (tmp_path / "link").symlink_to(src)
    other = Vfs(str(tmp_path / "link" / ".vfs-store"), tmp_path / "cache")
    assert other.json("commit", str(src), "ds")["unchanged"]
    # The committed directory itself cannot be the store.
    p = vfs.run("commit", str(src / ".vfs-store"), "ds", check=False)
    assert p.returncode == 2 and "is the store itself" in p.stderr


def test_an_ignored_directory_is_never_entered(vfs: Vfs, tmp_path: Path) -> None:
    """What would make a scan warn or fail sits inside an ignored directory: a FIFO
    (skipped with a warning) and a directory nobody but root may read. Ignoring the
    directory must cost nothing, not even a warning."""
    src = _write(tmp_path / "src", {"a.txt": "a", ".git/HEAD": "ref", ".vfsignore": ".git/\n"})
    os.mkfifo(src / ".git" / "fifo")  # entering .git would warn: "not a regular file"
    (src / ".git" / "locked").mkdir()
    (src / ".git" / "locked" / "x").write_text("x")
    os.chmod(src / ".git" / "locked", 0)
    try:
        p = vfs.run("commit", str(src), "ds")
        assert "warning" not in p.stderr.lower() and "skipped" not in p.stderr, p.stderr
        assert "1 ignored" in p.stderr
        # Without the rule the same tree does warn: the test can fail.
        p = vfs.run("commit", str(src), "ds2", "--exclude", "!.git/", check=False)
        assert "skipped" in p.stderr or p.returncode != 0
    finally:
        os.chmod(src / ".git" / "locked", 0o755)


def test_unchanged_rules_recommit_writes_nothing(vfs: Vfs, tmp_path: Path) -> None:
    src = _write(tmp_path / "src", {".vfsignore": "*.tmp\n", "a.txt": "a", "b.tmp": "b"})
    first = vfs.json("commit", str(src), "ds", "--exclude", "c/")
    store = Path(vfs.env["VFS_STORE"])
    before = sorted(p for p in store.rglob("*") if p.is_file() and ".locks" not in p.parts)
    (src / "new.tmp").write_text("ignored, so no change")
    again = vfs.json("commit", str(src), "ds", "--exclude", "c/")
    assert again["unchanged"] and again["id"] == first["id"]
    assert again["ignored"] == 2 and again["bytes_uploaded"] == 0
    after = sorted(p for p in store.rglob("*") if p.is_file() and ".locks" not in p.parts)
    assert after == before
    p = vfs.run("commit", str(src), "ds", "--exclude", "c/")
    assert "nothing changed" in p.stderr and "(2 ignored)" in p.stderr


def test_odd_names_are_matched_by_their_escaped_form(vfs: Vfs, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    odd = os.fsencode(src) + b"/bad\xff.tmp"
    with open(odd, "wb") as f:
        f.write(b"x")
    with open(os.fsencode(src) + b"/keep\xfe", "wb") as f:
        f.write(b"y")
    r = vfs.json("commit", str(src), "ds", "--exclude", "*.tmp")
    assert r["ignored"] == 1 and r["files"] == 2


def test_a_bad_pattern_is_a_usage_error_naming_its_source(vfs: Vfs, tmp_path: Path) -> None:
    src = _write(tmp_path / "src", {"a.txt": "a"})
    p = vfs.run("commit", str(src), "ds", "--exclude", "\\", check=False)
    assert p.returncode == 2 and "--exclude" in p.stderr and len(p.stderr.splitlines()) == 1
    (src / "sub").mkdir()
    (src / "sub" / ".vfsignore").write_text("ok\n!\n")
    p = vfs.run("commit", str(src), "ds", check=False)
    assert p.returncode == 2 and "sub/.vfsignore" in p.stderr, p.stderr
    assert not Path(vfs.env["VFS_STORE"]).exists() or "ds" not in vfs.run("ls").stdout
