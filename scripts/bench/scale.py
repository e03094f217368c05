"""The scale rows of `make bench --scale 1m` (or `5m`): committing the 1M-file (5M-file)
tree (time and peak RSS, page caches dropped, against `tar cf - | cat` over the same
tree) and committing it again unchanged. The fairness rules are in rows.py.

Both commit to a local store of their own with a cache of their own, so that the
figures are the commit's and not SeaweedFS's (docs/scale.md gives S3's limits)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from .ctx import MB, Ctx, attempt, measure
from .env import PY
from .report import Row

DATASET_SCALE = "scale"


@dataclass
class _Run:
    secs: float
    peak_rss: int  # bytes


def _run_rss(ctx: Ctx, cmd: list[str]) -> _Run:
    """Wall time and the peak RSS of `cmd` alone (wait4 gives the child's own)."""
    b = ctx.bench
    err = b.fresh("scale-stderr") / "stderr"
    with open(err, "wb") as ferr:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=b.env, stdout=subprocess.DEVNULL, stderr=ferr)
        _, status, usage = os.wait4(p.pid, 0)
        secs = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {p.returncode}: {err.read_text()[-2000:]}")
    return _Run(secs, usage.ru_maxrss * 1024)


def _commit_cmd(ctx: Ctx, store: str, cache: str) -> list[str]:
    opts = ["--store", store, "--cache-dir", cache]
    src = str(ctx.ensure_scale_src())
    return [PY, "-m", "vfs.cli", *opts, "commit", src, DATASET_SCALE, "--json"]


def _tar_cold(ctx: Ctx) -> float:
    b = ctx.bench
    b.drop_caches()
    t0 = time.perf_counter()
    b.run(["sh", "-c", 'tar cf - -C "$1" . | cat >/dev/null', "tar", str(ctx.ensure_scale_src())])
    return time.perf_counter() - t0


class _Scale:
    """The local store and cache the two rows share: the re-commit row re-commits
    what the commit row committed (or commits first, untimed, if run alone)."""

    def __init__(self, ctx: Ctx) -> None:
        self.store = str(ctx.bench.fresh("scale-store"))
        self.cache = str(ctx.bench.fresh("scale-cache"))
        self.committed = False


_shared: dict[int, _Scale] = {}


def _scale(ctx: Ctx) -> _Scale:
    return _shared.setdefault(id(ctx), _Scale(ctx))


def row_commit_scale(ctx: Ctx, row: Row) -> None:
    if not ctx.scale_files:
        row.not_run = "needs --scale 1m or 5m"
        return
    if not attempt(row.vfs, lambda: ctx.ensure_scale_src()):
        return
    b = ctx.bench
    tar = row.baseline("tar cf - | cat")
    peaks: list[float] = []
    for rep in range(ctx.reps):
        sc = _scale(ctx)

        def vfs_once(rep: int = rep, sc: _Scale = sc) -> float:
            # Every repetition but the last commits to a store and cache of its own and
            # throws them away: each is a first commit. The last one's stay for the
            # re-commit row.
            store, cache = sc.store, sc.cache
            if rep + 1 < ctx.reps:
                store, cache = str(b.fresh("scale-store")), str(b.fresh("scale-cache"))
            shutil.rmtree(store, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
            b.drop_caches()
            got = _run_rss(ctx, _commit_cmd(ctx, store, cache))
            peaks.append(got.peak_rss / MB)
            if rep + 1 < ctx.reps:
                shutil.rmtree(store, ignore_errors=True)
                shutil.rmtree(cache, ignore_errors=True)
            else:
                sc.committed = True
            return got.secs

        measure(row.vfs, vfs_once)
        measure(tar, lambda: _tar_cold(ctx))
    if peaks:
        row.notes.append(
            f"peak RSS of the commit: {max(peaks):.0f} MB (goal: < 512 MB whatever the file count)"
        )
    row.notes.append(
        f"{ctx.scale_files:,} files of ~256 bytes, 1,000 a directory, to a local store, "
        "fresh cache, page caches dropped"
    )


def row_recommit_scale(ctx: Ctx, row: Row) -> None:
    if not ctx.scale_files:
        row.not_run = "needs --scale 1m or 5m"
        return
    if not attempt(row.vfs, lambda: ctx.ensure_scale_src()):
        return
    sc = _scale(ctx)
    if not sc.committed:
        if not attempt(row.vfs, lambda: _run_rss(ctx, _commit_cmd(ctx, sc.store, sc.cache))):
            return
        sc.committed = True
    peaks: list[float] = []

    def once() -> float:
        got = _run_rss(ctx, _commit_cmd(ctx, sc.store, sc.cache))
        peaks.append(got.peak_rss / MB)
        return got.secs

    for _ in range(ctx.reps):
        measure(row.vfs, once)
    if peaks:
        row.notes.append(f"peak RSS: {max(peaks):.0f} MB")
    row.notes.append(
        f"the same {ctx.scale_files:,}-file tree committed again, nothing changed, page cache warm"
    )
