"""The `ray_commit` row of `make bench`: `vfs commit --ray` on a 2-node Ray cluster on
this machine against the one-machine `vfs commit` of the same tree, both to S3.

The cluster is `ray.cluster_utils.Cluster`: a head without CPUs (so every task runs
on a worker node, as on a real cluster whose head only schedules) and two worker
nodes of one CPU each, started once for the row with the bench's S3 credentials in
their environment, as a real node has them. Both commits are the whole CLI command,
Python start-up included, each to a store prefix of its own with a fresh cache and
page caches dropped, so neither is a re-commit. The Ray figure includes joining the
cluster and starting the workers' Python processes: that is what a user pays.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator

from .ctx import DATASET, Ctx, attempt, measure
from .env import Unavailable
from .report import Row

NODES = 2
OBJECT_STORE = 100 * 1024 * 1024  # bytes per node: the tasks' results are small


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """os.environ as the bench's commands see it, while the cluster's nodes start."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def row_ray_commit(ctx: Ctx, row: Row) -> None:
    b = ctx.bench
    one = row.baseline("one-machine commit")
    try:
        from ray.cluster_utils import Cluster
    except ImportError:
        row.vfs.fail("ray is not installed (pip install 'vfs[ray]')")
        one.fail("not measured: no Ray commit to compare with")
        return
    cluster: Cluster | None = None

    def start() -> None:
        nonlocal cluster
        with _environ(b.env):
            cluster = Cluster(
                initialize_head=True,
                head_node_args={"num_cpus": 0, "object_store_memory": OBJECT_STORE},
            )
            for _ in range(NODES):
                cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
            cluster.wait_for_nodes()

    try:
        attempt(row.vfs, start)
        for rep in range(ctx.reps):

            def commit(kind: str, *extra: str, rep: int = rep) -> float:
                cache = b.fresh(f"{kind}-cache")
                try:
                    b.drop_caches()
                    t0 = time.perf_counter()
                    doc = b.vfs_json(
                        "commit",
                        ctx.src,
                        DATASET,
                        "--store",
                        f"s3://vfs/{kind}-{rep}",
                        "--cache-dir",
                        cache,
                        *extra,
                    )
                    secs = time.perf_counter() - t0
                    ids = ctx.shared.setdefault("ray_commit_trees", {})
                    assert isinstance(ids, dict)
                    ids.setdefault(kind, set()).add(doc["tree"])
                    return secs
                finally:
                    shutil.rmtree(cache, ignore_errors=True)

            def ray_once() -> float:
                if cluster is None:
                    raise Unavailable("the Ray cluster did not start")
                return commit("ray", "--ray", cluster.address)

            measure(row.vfs, ray_once)
            measure(one, lambda: commit("one"))
    finally:
        if cluster is not None:
            cluster.shutdown()
    trees = ctx.shared.get("ray_commit_trees", {})
    assert isinstance(trees, dict)
    if trees.get("ray") and trees.get("ray") != trees.get("one"):
        row.vfs.fail(f"the Ray commit's tree {trees['ray']} differs from one machine's")
    row.notes.append(
        f"Ray: a local cluster of {NODES} worker nodes of 1 CPU each (head: 0 CPUs) on "
        "this 2-core machine; whole `vfs commit --ray ADDRESS` command, joining the "
        "cluster included; the same tree id as the one-machine commit, checked"
    )
