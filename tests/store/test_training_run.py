"""The complete training run of docs/lineage.md, as a user runs it (issue 13): real
images (300 of scikit-learn's bundled digits as PNGs in class folders), `vfs lock`,
the docs' train.py (VfsDataset with the lock and an access record, OrderHintSampler,
a DataLoader of spawn workers), then the model committed with what the run read, and
`vfs show --inputs` answering which files of which version trained it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="torch is an optional extra (vfs[torch])")
pytest.importorskip("sklearn", reason="the digits come from scikit-learn (the demo extra)")
Image = pytest.importorskip("PIL.Image", reason="Pillow writes the PNGs (the demo extra)")

DOCS = Path(__file__).resolve().parents[2] / "docs" / "lineage.md"
IMAGES = 300


def _train_py() -> str:
    blocks = re.findall(r"```python\n(# train\.py.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) == 1, "docs/lineage.md shows one train.py"
    return blocks[0]


def _digits(root: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = ["path,label"]
    for i in range(IMAGES):
        label = int(digits.target[i])
        path = root / "images" / str(label) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * (255 / 16)).astype("uint8")).save(path)
        rows.append(f"images/{label}/{i:04d}.png,{label}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def test_the_documented_training_run(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "VFS_STORE": str(tmp_path / "store"),
        "VFS_CACHE_DIR": str(tmp_path / "cache"),
        "VFS_NO_PROGRESS": "1",
    }

    def vfs(*args: str, cwd: Path = tmp_path) -> str:
        p = subprocess.run(
            [sys.executable, "-m", "vfs", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=300,
        )
        assert p.returncode == 0, (args, p.stderr)
        return p.stdout

    src = tmp_path / "src"
    _digits(src)
    v1 = vfs("commit", str(src), "digits", "--tag", "v1").strip()
    project = tmp_path / "project"
    project.mkdir()
    vfs("lock", "digits@v1", cwd=project)
    # The branch moves on after the lock: the run must still read v1.
    for p in sorted((src / "images" / "0").iterdir())[:5]:
        p.unlink()
    vfs("commit", str(src), "digits", "--tag", "v2")

    (project / "train.py").write_text(_train_py())
    run = subprocess.run(
        [sys.executable, "train.py"],
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr
    metrics = json.loads((project / "model" / "metrics.json").read_text())
    assert metrics["images"] == IMAGES
    assert metrics["train_accuracy"] > 0.8, metrics

    vfs(
        "commit",
        "model",
        "digits-classifier",
        "--access-record",
        "access.json",
        "--tag",
        "v1",
        cwd=project,
    )
    doc = json.loads(vfs("show", "digits-classifier@v1", "--inputs", "--json"))
    (version,) = doc["versions"]
    assert version["version"] == f"digits@{v1}" and version["tags"] == ["v1"]
    read = {f["path"]: (f["bytes_read"], f["size"]) for f in version["files"]}
    assert len(read) == IMAGES and all(p.startswith("images/") for p in read)
    assert all(got == size for got, size in read.values())  # every image read whole
    assert version["files_in_version"] == IMAGES + 1  # labels.csv was not read
    lineage = vfs("show", "digits-classifier@v1", "--lineage")
    assert f"digits@{v1[:4]}" in lineage
