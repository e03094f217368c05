"""Lock files (issue 13, item 4): `vfs lock` writes exact ids, `--check` notices a
moved ref, and `--locked` reads the locked version after the branch moved on."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from vfs import lock
from vfs.cli import main


def _vfs(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_lock_honoured_after_the_branch_moved_on(
    store_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VFS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VFS_NO_PROGRESS", "1")
    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.csv").write_text("a,1\n")
    s = ("--store", store_url)
    rc, v1, _ = _vfs(capsys, "commit", str(data), "labels", *s, "--tag", "v1")
    assert rc == 0
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    monkeypatch.chdir(project)
    rc, out, _ = _vfs(capsys, "lock", "labels@main", *s)
    assert rc == 0 and v1.strip() in out
    doc = tomllib.loads((project / "vfs.lock").read_text())
    assert doc["datasets"]["labels"]["commit"] == v1.strip()
    assert doc["datasets"]["labels"]["ref"] == "main"
    assert _vfs(capsys, "lock", "--check")[0] == 0

    (data / "labels.csv").write_text("a,2\n")
    rc, v2, _ = _vfs(capsys, "commit", str(data), "labels", *s)
    assert rc == 0 and v2 != v1
    rc, out, _ = _vfs(capsys, "lock", "--check")
    assert rc == 1
    assert f"labels@main: locked {v1.strip()[:12]}, now {v2.strip()[:12]}" in out

    # From a subdirectory, without --store: the lock names the store and the id.
    monkeypatch.chdir(project / "src")
    rc, _, err = _vfs(capsys, "get", "--locked", "labels", "-o", str(tmp_path / "out"))
    assert rc == 0, err
    assert (tmp_path / "out" / "labels.csv").read_text() == "a,1\n"
    # Without --locked the branch's new head is read.
    rc, _, _ = _vfs(capsys, "get", "labels", *s, "-o", str(tmp_path / "now"))
    assert (tmp_path / "now" / "labels.csv").read_text() == "a,2\n"
    # --locked refuses another ref than the locked one rather than read it silently.
    assert _vfs(capsys, "get", "--locked", "labels@v1", "-o", str(tmp_path / "x"))[0] == 2


def test_lock_file_is_canonical_and_round_trips(tmp_path: Path) -> None:
    e = lock.Locked("ds.v+1", "main", "ab" * 32, 's3://b/p "q"', "2026-11-27T00:00:00Z")
    f = lock.Locked("a", "v3", "cd" * 32, "file:///x", "2026-11-27T00:00:00Z")
    text = lock.dumps({"ds.v+1": e, "a": f})
    assert text.index('[datasets."a"]') < text.index('[datasets."ds.v+1"]')
    assert lock.loads(text) == {"ds.v+1": e, "a": f}
    path = tmp_path / "vfs.lock"
    lock.write(str(path), {"a": f})
    (tmp_path / "deep" / "er").mkdir(parents=True)
    assert lock.find(str(tmp_path / "deep" / "er")) == str(path)
    assert lock.read(str(path)) == {"a": f}


def test_a_project_store_is_locked_relative_to_the_lock_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project's ./store was written as file:///abs/path/store: a clone checked out
    elsewhere (a CI runner) failed on the path, or read another checkout's store.
    `vfs lock` in a subdirectory also wrote a second vfs.lock that hid the project's."""
    monkeypatch.setenv("VFS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VFS_NO_PROGRESS", "1")
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "data" / "a.txt").write_text("one\n")
    (proj / "sub").mkdir()
    monkeypatch.chdir(proj)
    assert _vfs(capsys, "commit", "data", "ds", "--store", "./store", "--tag", "v1")[0] == 0
    assert _vfs(capsys, "lock", "ds@v1", "--store", "./store")[0] == 0
    assert tomllib.loads((proj / "vfs.lock").read_text())["datasets"]["ds"]["store"] == "./store"
    monkeypatch.chdir(proj / "sub")  # updates the project's lock, not a new one here
    assert _vfs(capsys, "lock", "ds@main", "--store", "../store")[0] == 0
    assert not (proj / "sub" / "vfs.lock").exists()
    assert set(tomllib.loads((proj / "vfs.lock").read_text())["datasets"]) == {"ds"}

    clone = tmp_path / "ci" / "checkout"  # the project elsewhere, store and all
    clone.parent.mkdir()
    proj.rename(clone)
    monkeypatch.chdir(clone / "sub")
    assert _vfs(capsys, "lock", "--check")[0] == 0
    rc, _, err = _vfs(capsys, "get", "--locked", "ds", "-o", str(tmp_path / "out"))
    assert rc == 0, err
    assert (tmp_path / "out" / "a.txt").read_text() == "one\n"
