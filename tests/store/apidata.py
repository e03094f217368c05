"""A small dataset as data scientists keep one, committed as ds@v3, for the tests of
the Python API, the fsspec filesystem and the PyTorch dataset."""

from __future__ import annotations

import io
import os
import random
from dataclasses import dataclass
from pathlib import Path

from vfs.ops.commit import commit_dir
from vfs.store import Store

LABELS = "name,label\ncat.jpg,0\ndog.jpg,1\nbird.jpg,2\n"


@dataclass
class Committed:
    src: Path
    store_url: str
    cache_dir: str


def make_src(root: Path, images: int = 40) -> Path:
    rng = random.Random(13)
    (root / "images").mkdir(parents=True)
    (root / "tables").mkdir()
    (root / "labels.csv").write_text(LABELS)
    (root / "big.bin").write_bytes(rng.randbytes(3 * 1024 * 1024 + 17))
    for i in range(images):
        (root / "images" / f"{i:03}.jpg").write_bytes(rng.randbytes(rng.randrange(1000, 60000)))
    (root / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"latin-1 name\n")
    os.symlink("labels.csv", root / "latest.csv")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for part in range(2):
            t = pa.table({"x": list(range(part * 10, part * 10 + 10)), "y": [part] * 10})
            pq.write_table(t, root / "tables" / f"part{part}.parquet")
    except ImportError:  # the parquet tests skip themselves without pyarrow
        (root / "tables" / "README").write_bytes(io.BytesIO(b"no pyarrow\n").read())
    return root


def commit_v3(store_url: str, tmp: Path) -> Committed:
    src = make_src(tmp / "src")
    cache_dir = str(tmp / "cache")
    store = Store.open(store_url)
    try:
        store.init()
        commit_dir(store, str(src), "ds", tag="v3", cache_dir=cache_dir)
    finally:
        store.close()
    return Committed(src, store_url, cache_dir)
