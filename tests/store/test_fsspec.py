"""`vfs://` through fsspec (vfs.fsspec, issue 13 item 2), as pandas, pyarrow and
fsspec users open it, on the local store and on SeaweedFS."""

from __future__ import annotations

import errno
import importlib.metadata
import pickle
import tomllib
from pathlib import Path

import pytest

from tests.store.apidata import LABELS, Committed, commit_v3

fsspec = pytest.importorskip("fsspec")

ROOT = Path(__file__).resolve().parents[2]


def _registered() -> None:
    """The installed vfs registers `vfs` through its entry point; a venv installed
    before that entry point existed gets the same class registered by hand."""
    try:
        fsspec.get_filesystem_class("vfs")
    except ValueError:
        fsspec.register_implementation("vfs", "vfs.fsspec.VfsFileSystem")


@pytest.fixture
def committed(store_url: str, tmp_path: Path) -> Committed:
    _registered()
    return commit_v3(store_url, tmp_path)


def _opts(c: Committed) -> dict[str, str]:
    return {"store": c.store_url, "cache_dir": c.cache_dir}


def test_entry_point_names_the_filesystem() -> None:
    from vfs.fsspec import VfsFileSystem

    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    value = eps["fsspec.specs"]["vfs"]
    ep = importlib.metadata.EntryPoint("vfs", value, "fsspec.specs")
    assert ep.load() is VfsFileSystem
    installed = [
        e for e in importlib.metadata.entry_points(group="fsspec.specs") if e.name == "vfs"
    ]
    if not installed:
        pytest.skip("the venv's vfs was installed before the entry point: pip install -e . again")
    assert installed[0].load() is VfsFileSystem


def test_pandas_reads_csv_and_parquet(committed: Committed) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    df = pd.read_csv("vfs://ds@v3/labels.csv", storage_options=_opts(committed))
    assert df.to_csv(index=False) == LABELS
    t = pd.read_parquet("vfs://ds@v3/tables/", storage_options=_opts(committed))
    assert sorted(t["x"]) == list(range(20))


def test_pyarrow_dataset(committed: Committed) -> None:
    pads = pytest.importorskip("pyarrow.dataset")
    fs = fsspec.filesystem("vfs", **_opts(committed))
    table = pads.dataset("ds@v3/tables/", format="parquet", filesystem=fs).to_table()
    assert table.num_rows == 20 and sorted(table.column("x").to_pylist()) == list(range(20))


def test_listing_glob_find_info(committed: Committed) -> None:
    fs = fsspec.filesystem("vfs", **_opts(committed))
    top = fs.ls("vfs://ds@v3/", detail=False)
    assert "ds@v3/images" in top and "ds@v3/labels.csv" in top
    assert fs.info("ds@v3/images")["type"] == "directory"
    info = fs.info("vfs://ds@v3/big.bin")
    assert info["type"] == "file" and info["size"] == (committed.src / "big.bin").stat().st_size
    assert fs.glob("vfs://ds@v3/images/00*.jpg") == [f"ds@v3/images/00{i}.jpg" for i in range(10)]
    assert len(fs.glob("ds@v3/**/*.parquet")) == 2
    found = fs.find("ds@v3/images")
    assert len(found) == 40 and found == sorted(found)
    assert fs.exists("ds@v3/labels.csv") and not fs.exists("ds@v3/nope")
    assert fs.isdir("ds@v3/tables") and fs.isfile("ds@v3/labels.csv")
    with pytest.raises(FileNotFoundError):
        fs.info("ds@v3/nope")
    with pytest.raises(FileNotFoundError):
        fs.ls("vfs://nosuch@v1/")


def test_open_is_random_access_through_the_cache(committed: Committed) -> None:
    data = (committed.src / "big.bin").read_bytes()
    of = fsspec.open("vfs://ds@v3/big.bin", "rb", **_opts(committed))
    with of as f:
        f.seek(2_000_000)
        assert f.read(1000) == data[2_000_000:2_001_000]
        f.seek(-7, 2)
        assert f.read() == data[-7:]
    with fsspec.open("vfs://ds@v3/labels.csv", "rt", **_opts(committed)) as f:
        assert f.read() == LABELS
    fs = fsspec.filesystem("vfs", **_opts(committed))
    assert fs.cat_file("ds@v3/big.bin", 10, 20) == data[10:20]
    assert fs.cat_file("ds@v3/big.bin", -5) == data[-5:]
    assert fs.cat("vfs://ds@v3/labels.csv") == LABELS.encode()
    # An fsspec filesystem and its open files go to workers as fsspec's own do.
    again = pickle.loads(pickle.dumps(fs))
    assert again.cat_file("ds@v3/labels.csv") == LABELS.encode()


def test_writes_raise(committed: Committed) -> None:
    fs = fsspec.filesystem("vfs", **_opts(committed))
    for call in (
        lambda: fs.open("ds@v3/new.txt", "wb"),
        lambda: fs.pipe_file("ds@v3/new.txt", b"x"),
        lambda: fs.rm("ds@v3/labels.csv"),
        lambda: fs.mkdir("ds@v3/newdir"),
        lambda: fs.touch("ds@v3/labels.csv"),
    ):
        with pytest.raises(PermissionError) as info:
            call()
        assert info.value.errno == errno.EROFS
    assert fs.cat_file("ds@v3/labels.csv") == LABELS.encode()
