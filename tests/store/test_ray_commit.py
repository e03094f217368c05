"""`vfs commit --ray` on a multi-node Ray cluster on this machine, committing to
SeaweedFS: the same tree ids as a one-machine commit, a worker node killed mid-commit,
an interrupted commit that moves no ref and whose rerun reuses the uploads.

One cluster serves the module (a head without CPUs, so every task runs on a worker
node, and two worker nodes of one CPU each); it is shut down in a finally.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vfs.api import open_version
from vfs.ignore import Rules
from vfs.ops.commit import CommitResult, Progress, commit_dir
from vfs.store import HEADS, Store
from vfs.testing.seaweed import SeaweedServer

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAS_RAY, reason="ray is not importable: install vfs[ray] to run the Ray commit tests"
)
OBJECT_STORE = 80 * 1024 * 1024  # bytes per node: results are small, the machine is shared


def _make_tree(root: Path, seed: int, subdirs: int = 4, flat: int = 120) -> None:
    """Nested dirs, a flat directory, a multi-chunk file, a symlink, ignore rules."""
    r = random.Random(seed)
    (root / "flat").mkdir(parents=True)
    for i in range(flat):
        (root / "flat" / f"f{i:04d}").write_bytes(r.randbytes(r.randint(0, 3000)))
    for d in range(subdirs):
        sub = root / f"d{d:02d}" / "inner"
        sub.mkdir(parents=True)
        for i in range(12):
            (sub.parent / f"x{i}").write_bytes(r.randbytes(r.randint(1, 4000)))
            (sub / f"y{i}").write_bytes(r.randbytes(r.randint(1, 2000)))
    (root / "d00" / "big").write_bytes(r.randbytes(1_500_000))  # several chunks
    (root / "d00" / "empty").write_bytes(b"")
    os.symlink("../d00/big", root / "flat" / "link")
    (root / ".vfsignore").write_text("*.tmp\n")
    (root / "d00" / "junk.tmp").write_text("left out")
    (root / "d01" / ".vfsignore").write_text("x1*\n")


def _hashes(store_url: str, spec: str, cache: Path) -> dict[str, str]:
    with open_version(spec, store=store_url, cache_dir=str(cache)) as v:
        return {
            p: hashlib.sha256(v.read_bytes(p)).hexdigest()
            for p in v.files()
            if not v.stat(p).is_symlink()
        }


def _disk_hashes(root: Path, result_paths: set[str]) -> dict[str, str]:
    return {p: hashlib.sha256((root / p).read_bytes()).hexdigest() for p in result_paths}


@pytest.fixture(scope="module")
def cluster(seaweed: SeaweedServer) -> Iterator[tuple[Any, list[Any]]]:
    """Head (no CPUs) + two worker nodes of one CPU. Started after SeaweedFS, so the
    nodes inherit its credentials from the environment as a real node gets them."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": OBJECT_STORE},
    )
    try:
        workers = [c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE) for _ in range(2)]
        ray.init(address=c.address, logging_level=logging.ERROR, log_to_driver=False)
        c.wait_for_nodes()
        yield c, workers
    finally:
        ray.shutdown()
        c.shutdown()


def _ray_commit(store: Store, src: Path, dataset: str, tmp: Path, **kw: Any) -> CommitResult:
    from vfs.ops.raycommit import ray_commit_dir

    return ray_commit_dir(store, str(src), dataset, cache_dir=str(tmp / "ray-cache"), **kw)


@pytest.fixture
def s3_pair(seaweed: SeaweedServer, s3_url: str) -> tuple[str, str]:
    """Two empty S3 stores: one for the one-machine commit, one for the Ray commit."""
    from tests.conftest import _fresh_bucket

    other = f"s3://{_fresh_bucket(seaweed)}/store"
    for url in (s3_url, other):
        Store.open(url).init()
    return s3_url, other


@needs_ray
def test_plan_splits_a_flat_directory_into_name_ranges(tmp_path: Path) -> None:
    """A directory heavier than a part is written by the driver; its own files go
    to tasks by name range, and every file is in exactly one part."""
    from vfs.ops.raycommit import _Batch, _parts, _plan, _Range, _tasks, _Top, _walk, _weight

    _make_tree(tmp_path / "src", seed=3, flat=200)
    root = os.fsencode(tmp_path / "src")
    info = _walk(root, os.stat(root), "", Rules.from_excludes(()), None)
    target = -(-_weight(info.files, info.nbytes) // 10)
    plan = _plan(info, target, None)
    assert isinstance(plan, _Top)
    flat = plan.dirs[b"flat"]
    assert isinstance(flat, _Top)
    assert len(flat.ranges) >= 2
    assert b"link" in flat.links
    ranges = [p for p in _parts(plan) if isinstance(p, _Range)]
    names = [n for r in ranges if r.dir == os.path.join(root, b"flat") for n in r.names]
    assert names == sorted(names) and len(names) == 200
    assert sum(p.files for p in _parts(plan)) == info.files
    # a range is at most a part's weight, unless it is one file heavier than that
    assert all(_weight(r.files, r.nbytes) <= target or r.files == 1 for r in ranges)
    # small subtrees share a task; every part is in exactly one task
    tasks = _tasks(plan, target)
    batches = [t for t in tasks if isinstance(t, _Batch)]
    assert any(len(b.subtrees) > 1 for b in batches)
    assert sum(len(b.subtrees) for b in batches) + len(ranges) == len(list(_parts(plan)))
    assert sum(t.files for t in tasks) == info.files


@needs_ray
@pytest.mark.s3
@pytest.mark.slow
def test_ray_commit_has_the_tree_ids_of_a_one_machine_commit(
    cluster: tuple[Any, list[Any]], s3_pair: tuple[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _make_tree(src, seed=1)
    one_url, ray_url = s3_pair
    one = commit_dir(
        Store.open(one_url), str(src), "ds", cache_dir=str(tmp_path / "c1"), exclude=["/d02/"]
    )
    store = Store.open(ray_url)
    got = _ray_commit(store, src, "ds", tmp_path, exclude=["/d02/"], parts=12)
    assert got.tree == one.tree
    assert (got.files, got.bytes, got.ignored) == (one.files, one.bytes, one.ignored)
    assert got.new_chunks == one.new_chunks and got.packs >= 1
    head = store.read_ref("ds", HEADS, "main")
    assert head is not None and head.commit == got.commit
    read = _hashes(ray_url, "ds@main", tmp_path / "rc")
    assert read == _disk_hashes(src, set(read))
    assert "d02/x0" not in read and "d00/junk.tmp" not in read and "d01/x1" not in read

    again = _ray_commit(store, src, "ds", tmp_path, exclude=["/d02/"], parts=12)
    assert again.unchanged and again.commit == got.commit and again.new_chunks == 0


@needs_ray
@pytest.mark.s3
@pytest.mark.slow
def test_a_worker_node_killed_mid_commit_still_yields_a_correct_version(
    cluster: tuple[Any, list[Any]], s3_pair: tuple[str, str], tmp_path: Path
) -> None:
    c, workers = cluster
    src = tmp_path / "src"
    _make_tree(src, seed=2, subdirs=16, flat=60)
    one_url, ray_url = s3_pair
    one = commit_dir(Store.open(one_url), str(src), "ds", cache_dir=str(tmp_path / "c1"))

    class KillOnFirst(Progress):
        """Removes a worker node when the first part is back: the other parts are
        then queued or running, one of them on the node that goes."""

        parts_done = 0
        killed_at: int | None = None

        def advance(self, files: int, nbytes: int) -> None:
            self.parts_done += 1
            if self.killed_at is None:
                self.killed_at = self.parts_done
                c.remove_node(workers[1])

    progress = KillOnFirst()
    try:
        got = _ray_commit(Store.open(ray_url), src, "ds", tmp_path, parts=20, progress=progress)
    finally:
        if progress.killed_at is not None:
            workers[1] = c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
    assert progress.killed_at == 1 and progress.parts_done > 1
    assert got.tree == one.tree
    read = _hashes(ray_url, "ds@main", tmp_path / "rc")
    assert read == _disk_hashes(src, set(read)) and len(read) == one.files
    verify = subprocess.run(
        [sys.executable, "-m", "vfs", "verify", "ds@main", "--store", ray_url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert verify.returncode == 0, verify.stderr


@needs_ray
@pytest.mark.s3
@pytest.mark.slow
def test_an_interrupted_ray_commit_moves_no_ref_and_its_rerun_reuses_uploads(
    cluster: tuple[Any, list[Any]], s3_pair: tuple[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _make_tree(src, seed=4, subdirs=8, flat=40)
    one_url, ray_url = s3_pair
    one = commit_dir(Store.open(one_url), str(src), "ds", cache_dir=str(tmp_path / "c1"))

    class CtrlC(Progress):
        parts_done = 0

        def advance(self, files: int, nbytes: int) -> None:
            self.parts_done += 1
            if self.parts_done == 4:
                raise KeyboardInterrupt

    store = Store.open(ray_url)
    with pytest.raises(KeyboardInterrupt):
        _ray_commit(store, src, "ds", tmp_path, parts=12, progress=CtrlC())
    assert store.read_ref("ds", HEADS, "main") is None
    assert list(store.pack_ids())  # the parts that finished left their packs

    rerun = _ray_commit(store, src, "ds", tmp_path, parts=12)
    assert rerun.tree == one.tree
    assert 0 < rerun.new_chunks < one.new_chunks  # what was uploaded is not uploaded again
    read = _hashes(ray_url, "ds@main", tmp_path / "rc")
    assert read == _disk_hashes(src, set(read))


def test_vfs_and_a_plain_commit_never_import_ray(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    code = (
        "import sys\n"
        "from vfs.cli import main\n"
        f"rc = main(['commit', {str(src)!r}, 'ds', '--store', {str(tmp_path / 'store')!r}])\n"
        "assert rc == 0, rc\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    env = dict(os.environ, VFS_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr


def test_commit_with_ray_says_how_to_install_it_when_ray_is_missing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # as if not installed: import ray raises ImportError\n"
        "from vfs.cli import main\n"
        f"sys.exit(main(['commit', {str(src)!r}, 'ds', '--store', "
        f"{str(tmp_path / 'store')!r}, '--ray']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "vfs: error: --ray needs Ray, which is not installed: pip install 'vfs[ray]'"
    ]
