"""CI reports (issue 13, item 7): `vfs diff --exit-code`, and `vfs report A B -o DIR`
writing report.md and changes.png."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vfs.cli import main
from vfs.ops.diff import Change
from vfs.ops.report import ROOT_FILES, group_changes


def _tree(root: Path, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return str(root)


def test_diff_exit_code_and_report(
    store_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VFS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VFS_NO_PROGRESS", "1")
    s = ["--store", store_url]
    src = tmp_path / "src"
    _tree(
        src,
        {
            "train/a.jpg": os.urandom(300_000),
            "train/b.jpg": os.urandom(200_000),
            "val/c.jpg": os.urandom(100_000),
            "labels.csv": b"a,1\n",
        },
    )
    assert main(["commit", str(src), "ds", "--tag", "v1", *s]) == 0
    (src / "train" / "b.jpg").unlink()
    _tree(src, {"train/new.jpg": os.urandom(50_000), "labels.csv": b"a,2\n"})
    (src / "val" / "c.jpg").write_bytes(os.urandom(100_000))
    os.utime(src / "train" / "a.jpg", ns=(10**18, 10**18))  # as a copy without `cp -p`
    assert main(["commit", str(src), "ds", "--tag", "v2", *s]) == 0
    capsys.readouterr()

    assert main(["diff", "ds@v1", "@v2", "--exit-code", "--stat", *s]) == 1
    assert main(["diff", "ds@v1", "@v1", "--exit-code", *s]) == 0
    assert main(["diff", "ds@v1", "@v2", *s]) == 0  # without the option: 0, as git
    capsys.readouterr()

    out = tmp_path / "report"
    assert main(["report", "ds@v1", "@v2", "-o", str(out), "--json", *s]) == 0
    doc = json.loads(capsys.readouterr().out)
    dirs = {d["name"]: d for d in doc["directories"]}
    assert set(dirs) == {"train", "val", ROOT_FILES}
    assert dirs["train"]["files"] == {"added": 1, "removed": 1, "modified": 1}
    assert dirs["train"]["bytes"]["added"] == 50_000
    assert dirs["train"]["bytes"]["removed"] == 200_000
    assert dirs["val"]["files"]["modified"] == 1
    md = (out / "report.md").read_text()
    assert "### Data changes: `ds@v1` → `ds@v2`" in md
    assert "![files and bytes changed by top-level directory](changes.png)" in md
    assert "| `train/` | 1 | 1 | 1 |" in md
    assert "| removed | `train/b.jpg` | 200000 | 0 |" in md
    # A change of mtime alone is marked as vfs diff marks it, counted, and listed last.
    assert "| of those, mtime or mode only | 1 | – |" in md
    assert "| modified (mtime only) | `train/a.jpg` | 300000 | 300000 |" in md
    assert md.index("`val/c.jpg`") < md.index("`train/a.jpg`")
    png = (out / "changes.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000

    # Equal versions: a report that says so, and no chart.
    same = tmp_path / "same"
    assert main(["report", "ds@v2", "@v2", "-o", str(same), *s]) == 0
    assert "No changes" in (same / "report.md").read_text()
    assert not (same / "changes.png").exists()


def test_groups_by_top_level_directory() -> None:
    changes = [
        Change("a/x", "added", "file", 0, 10, 10),
        Change("a/b/y", "modified", "file", 5, 7, 3),
        Change("top.txt", "removed", "file", 4, 0, 0),
    ]
    a, root = group_changes(changes)
    assert (a.name, a.files["added"], a.files["modified"], a.bytes["modified"]) == ("a", 1, 1, 3)
    assert (root.name, root.bytes["removed"]) == (ROOT_FILES, 4)
