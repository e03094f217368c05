"""The version rows of `make bench`: commits, re-commits, the bytes a new version
stores, time to first byte of an unread version, switching versions, and the
1M-file version's mount time and daemon memory. The fairness rules are in
rows.py."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from .ctx import DATASET, DATASET_1M, MB, Ctx, attempt, git_commit, measure, rclone_copy
from .env import Unavailable, rss_bytes
from .report import Row
from .work import DvcRepo, find_all


def row_ttfb(ctx: Ctx, row: Row) -> None:
    b = ctx.bench
    ctx.ensure_v1()
    first = ctx.small_sample()[0]

    def vfs_once() -> float:
        cache = b.fresh("ttfb-cache")
        mnt = b.fresh("mnt-ttfb")
        try:
            b.drop_caches()
            t0 = time.perf_counter()
            m = b.mount_vfs(f"{DATASET}@v1", cache, mnt)
            with b.mounted(m):
                with open(m.path / first, "rb") as f:
                    if not f.read(1):
                        raise RuntimeError(f"{first} read empty")
                return time.perf_counter() - t0
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    def dvc_once() -> float:
        repo = ctx.ensure_dvc()
        clone = b.fresh("dvc-clone")
        try:
            b.run(["git", "clone", "-q", "--branch", "v1", str(repo.path), str(clone / "r")])
            b.drop_caches()
            t0 = time.perf_counter()
            b.run(repo.dvc_cmd("pull", "-q"), cwd=clone / "r")
            with open(clone / "r" / "data" / first, "rb") as f:
                f.read(1)
            return time.perf_counter() - t0
        finally:
            shutil.rmtree(clone, ignore_errors=True)

    for _ in range(ctx.reps):
        measure(row.vfs, vfs_once)
        if b.dvc is None:
            row.baseline("dvc pull (fresh clone)").fail(b.dvc_why)
        measure(row.baseline("dvc pull (fresh clone)"), dvc_once)
    row.notes.append(
        "vfs: `vfs mount` (empty cache) + open and read 1 byte; DVC: `dvc pull` in a fresh "
        "git clone (clone untimed) + the same read"
    )


def row_v2_bytes(ctx: Ctx, row: Row) -> None:
    ctx.ensure_v2()
    row.vfs.add(ctx.v2_growth["vfs"])
    row.baseline("bytes really changed").add(ctx.v2_growth["change"])
    if "DVC" in ctx.v2_growth:
        row.baseline("DVC remote growth").add(ctx.v2_growth["DVC"])
    else:
        row.baseline("DVC remote growth").fail(
            next((n for n in ctx.v2_notes if "DVC" in n), "DVC not available")
        )
    row.notes += ctx.v2_notes
    row.notes.append("measured once: store growth is deterministic")


def row_switch(ctx: Ctx, row: Row) -> None:
    b = ctx.bench
    ctx.ensure_v2()

    def vfs_run() -> None:
        with b.mounted(b.mount_vfs(f"{DATASET}@v2", ctx.cache_main)) as m:
            os.listdir(m.path / "small")
            for _ in range(ctx.reps):

                def once() -> float:
                    t0 = time.perf_counter()
                    doc = b.vfs_json("switch", m.path, "v1")
                    secs = time.perf_counter() - t0
                    if doc.get("new") != ctx.v1_id and ctx.v1_id:
                        raise RuntimeError(f"switched to {doc.get('new')}, not v1")
                    b.run(b.vfs("switch", m.path, "v2"))
                    os.listdir(m.path / "small")
                    return secs

                measure(row.vfs, once)

    def dvc_run() -> None:
        repo = ctx.ensure_dvc()
        if "v2" not in repo.git("tag"):
            raise Unavailable("the DVC repository has no v2")
        branch = repo.git("rev-parse", "--abbrev-ref", "HEAD").strip()
        for _ in range(ctx.reps):

            def once() -> float:
                t0 = time.perf_counter()
                b.run(["git", "checkout", "-q", "v1"], cwd=repo.path)
                b.run(repo.dvc_cmd("checkout", "-q"), cwd=repo.path)
                secs = time.perf_counter() - t0
                b.run(["git", "checkout", "-q", branch], cwd=repo.path)
                b.run(repo.dvc_cmd("checkout", "-q"), cwd=repo.path)
                return secs

            measure(row.baseline("git checkout + dvc checkout"), once)

    attempt(row.vfs, lambda: vfs_run())
    attempt(row.baseline("git checkout + dvc checkout"), lambda: dvc_run())
    row.notes.append("wall time of the whole commands, Python start-up included; page caches warm")


# -- the 1M-file version ------------------------------------------------------------------------


def row_mount_1m(ctx: Ctx, row: Row) -> None:
    b = ctx.bench
    if not ctx.scale_files:
        row.not_run = "needs --scale 1m"
        return
    attempt(row.vfs, lambda: ctx.ensure_1m())

    def once() -> float:
        cache = b.fresh("mount1m-cache")
        mnt = b.fresh("mnt-1m")
        try:
            b.drop_caches()
            t0 = time.perf_counter()
            m = b.mount_vfs(f"{DATASET_1M}@v1", cache, mnt)
            with b.mounted(m):
                b.run(["ls", str(m.path)])
                return time.perf_counter() - t0
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    for _ in range(ctx.reps):
        measure(row.vfs, once)
    row.notes += ctx.notes
    row.notes.append("`vfs mount` (empty cache, page caches dropped) + `ls` of the root")


def row_rss_1m(ctx: Ctx, row: Row) -> None:
    b = ctx.bench
    if not ctx.scale_files:
        row.not_run = "needs --scale 1m"
        return
    attempt(row.vfs, lambda: ctx.ensure_1m())
    found: dict[str, Any] = {}

    def once() -> float:
        cache = b.fresh("rss1m-cache")
        try:
            with b.mounted(b.mount_vfs(f"{DATASET_1M}@v1", cache)) as m:
                secs, n = find_all(m.path)
                rss, hwm = rss_bytes(m.pid)
                found.update(secs=secs, entries=n, hwm=hwm)
                return rss / MB
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    measure(row.vfs, once)
    if found:
        row.notes.append(
            f"after `find` over {found['entries']:,} entries in {found['secs']:.1f} s; "
            f"peak RSS (VmHWM) {found['hwm'] / MB:.0f} MB; measured once"
        )


# -- commits -----------------------------------------------------------------------------------


def row_commit(ctx: Ctx, row: Row) -> None:
    b = ctx.bench
    dvc_fig = row.baseline("dvc add + dvc push")
    rclone_fig = row.baseline("rclone copy")
    if b.dvc is None:
        dvc_fig.fail(b.dvc_why)
    prev_repo: DvcRepo | None = None
    for rep in range(ctx.reps):
        first = rep == 0

        def vfs_once(first: bool = first, rep: int = rep) -> float:
            # The first commit builds the store every later row reads; the others go to
            # a prefix of their own with a cache of their own, so none is a re-commit.
            store = "s3://vfs/main" if first else f"s3://vfs/commit-{rep}"
            cache = ctx.cache_main if first else b.fresh("commit-cache")
            b.drop_caches()
            t0 = time.perf_counter()
            doc = b.vfs_json(
                "commit", ctx.src, DATASET, "--tag", "v1", "--store", store, "--cache-dir", cache
            )
            secs = time.perf_counter() - t0
            if first:
                ctx.v1_id, ctx.have_v1 = doc["id"], True
            else:
                shutil.rmtree(cache, ignore_errors=True)
            return secs

        def dvc_once(rep: int = rep) -> float:
            nonlocal prev_repo
            remote = f"dvc/commit-{rep}"
            repo = DvcRepo.init(b, remote)
            data = prev_repo.data if prev_repo is not None else ctx.dvc_fresh_data()
            os.rename(data, repo.data)
            if prev_repo is not None:
                shutil.rmtree(prev_repo.path, ignore_errors=True)
            prev_repo = repo
            b.drop_caches()
            secs = b.timed(repo.dvc_cmd("add", "-q", "data"), cwd=repo.path)
            secs += b.timed(repo.dvc_cmd("push", "-q"), cwd=repo.path)
            git_commit(repo, "v1")
            ctx.dvc_repo, ctx.dvc_remote, ctx.dvc_data = repo, remote, None
            return secs

        def rclone_once(first: bool = first, rep: int = rep) -> float:
            if shutil.which("rclone") is None:
                raise Unavailable("rclone is not installed (make bench-deps)")
            remote = "plain/v1" if first else f"plain/commit-{rep}"
            b.drop_caches()
            secs = b.timed(rclone_copy(ctx.src, remote))
            if first:
                ctx.have_plain = True
            return secs

        measure(row.vfs, vfs_once)
        measure(dvc_fig, dvc_once)
        measure(rclone_fig, rclone_once)
    row.notes.append(
        "each repetition writes a new prefix from a cold page cache: vfs with an empty cache "
        "dir, DVC in a new repository (add + push, 8 jobs by default), rclone copy with "
        "--transfers 16 --checkers 16"
    )


def row_recommit(ctx: Ctx, row: Row) -> None:
    b = ctx.bench
    ctx.ensure_v1()

    def vfs_once() -> float:
        t0 = time.perf_counter()
        doc = b.vfs_json("commit", ctx.src, DATASET, "--cache-dir", ctx.cache_main)
        secs = time.perf_counter() - t0
        if not doc.get("unchanged"):
            raise RuntimeError("the re-commit was not recognised as unchanged")
        return secs

    def dvc_once() -> float:
        repo = ctx.ensure_dvc()
        return b.timed(repo.dvc_cmd("status", "-q"), cwd=repo.path)

    if b.dvc is None:
        row.baseline("dvc status").fail(b.dvc_why)
    for _ in range(ctx.reps):
        measure(row.vfs, vfs_once)
        measure(row.baseline("dvc status"), dvc_once)
    row.notes.append("whole commands, page caches warm (the state a re-commit runs in)")
