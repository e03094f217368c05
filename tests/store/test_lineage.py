"""Lineage (issue 13, item 5): `vfs commit --input` records exact input ids and the
code's git rev; `vfs show --lineage` prints the graph back to the raw data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from vfs.cli import main
from vfs.store import Store


def _vfs(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    rc = main(list(args))
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def _dir(path: Path, **files: str) -> str:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return str(path)


def test_lineage_across_three_commits(
    store_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VFS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VFS_NO_PROGRESS", "1")
    s = ("--store", store_url)
    other = str(tmp_path / "other-store")  # labels live in another store
    raw = _vfs(capsys, "commit", _dir(tmp_path / "raw", a="1"), "raw", *s, "--tag", "v1").strip()
    labels = _vfs(
        capsys, "commit", _dir(tmp_path / "lab", l="x"), "labels", "--store", other
    ).strip()
    # The raw data moves on after the features were made from v1.
    feats = _vfs(
        capsys, "commit", _dir(tmp_path / "feat", f="2"), "features", *s, "--input", "raw@v1"
    ).strip()
    _vfs(capsys, "commit", _dir(tmp_path / "raw", a="changed"), "raw", *s)

    # The training code lives in a git repository; the model directory does not.
    code = tmp_path / "code"
    _dir(code, **{"train.py": "print('train')\n"})
    git = ["git", "-C", str(code), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "train.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "train"], check=True)
    rev = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.chdir(code)
    model = _vfs(
        capsys,
        "commit",
        _dir(tmp_path / "model", w="weights"),
        "resnet",
        *s,
        "--input",
        "features",
        "--input",
        f"{other}::labels@main",
        "--tag",
        "v1",
    ).strip()

    store = Store.open(store_url)
    try:
        meta = store.get_commit(bytes.fromhex(model)).meta
    finally:
        store.close()
    assert meta["vfs.input.0"] == f"features@{feats}"
    assert meta["vfs.input.1"] == f"labels@{labels}"
    assert meta["vfs.input.1.store"].endswith("other-store")
    assert "vfs.input.0.store" not in meta
    assert (meta["git.rev"], meta["git.dirty"], meta["git.from"]) == (rev, "false", "cwd")

    doc = json.loads(_vfs(capsys, "show", "resnet@v1", "--lineage", "--json", *s))
    assert doc["id"] == model and doc["git"] == rev and doc["tags"] == ["v1"]
    f, lab = doc["inputs"]
    assert (f["dataset"], f["id"], lab["dataset"], lab["id"]) == (
        "features",
        feats,
        "labels",
        labels,
    )
    assert lab["store"].endswith("other-store") and lab["inputs"] == []
    assert set(lab) == set(doc) and f["store"] is None and f["access"] is None  # all keys
    (r,) = f["inputs"]
    assert (r["dataset"], r["id"], r["tags"], r["inputs"]) == ("raw", raw, ["v1"], [])

    text = _vfs(capsys, "show", "resnet@v1", "--lineage", *s)
    assert text.splitlines()[0].startswith(f"resnet@{model}")
    assert f"├── features@{feats}" in text
    assert f"│   └── raw@{raw}  [tags: v1" in text
    assert f"└── labels@{labels}" in text


def test_a_missing_input_fails_before_anything_is_read(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VFS_CACHE_DIR", str(tmp_path / "cache"))
    d = _dir(tmp_path / "d", x="1")
    assert main(["commit", d, "ds", "--store", store_url]) == 0
    assert main(["commit", d, "m", "--store", store_url, "--input", "ds@nope"]) == 1
    store = Store.open(store_url)
    try:
        assert not store.dataset_exists("m")
    finally:
        store.close()


def test_access_record_object_is_canonical_and_checked(tmp_path: Path) -> None:
    from vfs import access
    from vfs import format as fmt
    from vfs.errors import CorruptObject, VfsError

    rec = access.AccessRecorder()
    commit = bytes(range(32))
    rec.add("ds", commit, "a/b\udcff", 10, 5)  # a name that is not UTF-8
    rec.add("ds", commit, "a/b\udcff", 15, 5)  # sequential: one range
    rec.add("ds", commit, "a/b\udcff", 0, 3)
    rec.add("ds", commit, "c", 2, 2)
    rec.add("ds", commit, "c", 0, 3)  # overlapping: merged
    rec.add("ds", commit, "d", 0, 0)  # nothing read: nothing recorded
    version = f"ds@{commit.hex()}"
    want = {version: {"a/b\udcff": [(0, 3), (10, 20)], "c": [(0, 4)]}}
    assert rec.record() == want
    rec.save(str(tmp_path / "r.json"))
    assert access.load(str(tmp_path / "r.json")) == want
    # The stored object: its golden bytes.
    blob = fmt.encode_access(want)
    assert blob == (
        b'VACR\x01{"format":"vfs-access/1","versions":{"' + version.encode() + b'":'
        b'{"a/b\\udcff":[[0,3],[10,20]],"c":[[0,4]]}}}'
    )
    assert fmt.decode_access(blob) == want
    for bad in (
        blob.replace(b"[10,20]", b"[3,20]"),  # touching: should have been merged
        blob.replace(b"[10,20]", b"[20,10]"),
        blob.replace(b'"format":', b'"format": '),  # not canonical
    ):
        with pytest.raises(CorruptObject):
            fmt.decode_access(bad)
    (tmp_path / "bad.json").write_text('{"format": "vfs-access/1", "versions": {"x": {}}}')
    with pytest.raises(VfsError, match="not a vfs-access/1 access record"):
        access.load(str(tmp_path / "bad.json"))


def test_pushing_a_version_without_its_inputs_warns(
    store_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An input recorded without a store is read from the store its commit is in: a
    model pushed alone to a registry showed its data as UNREADABLE there, silently."""
    monkeypatch.setenv("VFS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VFS_NO_PROGRESS", "1")
    s = ("--store", store_url)
    registry = str(tmp_path / "registry")
    _vfs(capsys, "init", registry)
    data = _vfs(capsys, "commit", _dir(tmp_path / "d", a="1"), "data", *s, "--tag", "v1").strip()
    _vfs(capsys, "commit", _dir(tmp_path / "m", w="2"), "model", *s, "--input", "data@v1")

    assert main(["push", "model", "--to", registry, *s]) == 0
    err = capsys.readouterr().err
    assert f"records the input data@{data} (vfs show --lineage), which {registry} " in err
    _vfs(capsys, "push", "data@v1", "--to", registry, *s)
    doc = json.loads(_vfs(capsys, "push", "model", "--to", registry, "--json", *s))
    assert doc["up_to_date"] and doc["missing_inputs"] == []
