"""The rows of `make bench` about what a read costs beyond its bytes: the over-fetch
of a fresh mount (bytes fetched from S3 per byte read), and `ls -l` and `du -s` over
one directory of 200,000 entries (20,000 with --quick).

The over-fetch reads the daemon's own counters over the control socket
(`vfs.mount.control.status(...).stats`), not the `user.vfs.*` attributes.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path

from vfs.mount.control import status

from .ctx import DATASET, DATASET_WIDE, Ctx, measure
from .env import Mount
from .read import cold_mount
from .report import Row
from .work import read_files

OVERFETCH_FILES = 100
LISTING_TIMEOUT = 900.0


# -- over-fetch -------------------------------------------------------------------------------


def _fetched(mnt: Path) -> int:
    """The daemon's bytes fetched, once it stops changing (readahead or a pack
    window may still be in flight when the last read returns)."""
    last = int(status(str(mnt)).stats["bytes_fetched"])
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = int(status(str(mnt)).stats["bytes_fetched"])
        if now == last:
            return now
        last = now
    return last


def row_overfetch(ctx: Ctx, row: Row) -> None:
    ctx.ensure_v1()
    pool = list(range(ctx.spec.small_files))
    counts: list[str] = []

    def once(rep: int) -> float:
        # A new sample each repetition: another 100 files of the version.
        rnd = random.Random(ctx.spec.seed + 1 + rep)
        files = [ctx.spec.small_path(i) for i in rnd.sample(pool, OVERFETCH_FILES)]
        with cold_mount(ctx, "vfs", "v1", f"{DATASET}@v1") as root:
            before = _fetched(root)
            _, read = read_files([str(root / p) for p in files], threads=1)
            fetched = _fetched(root) - before
        counts.append(f"{fetched / 1e6:.1f} MB fetched for {read / 1e6:.1f} MB read")
        return fetched / read

    for rep in range(ctx.reps):
        measure(row.vfs, lambda r=rep: once(r))  # type: ignore[misc]
    row.notes.append(
        f"{OVERFETCH_FILES} random small files of v1 read once each, 1 thread, through a "
        "fresh mount over an empty cache; bytes_fetched from the daemon's stats, counted "
        "from after the mount until it stops growing: " + "; ".join(counts)
    )


# -- ls -l and du -s ----------------------------------------------------------------------------


def _timed_lines(cmd: list[str]) -> tuple[float, int]:
    """(seconds, lines printed) of one command that must succeed."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=LISTING_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"`{' '.join(cmd)}` took over {LISTING_TIMEOUT:g} s") from None
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}`: {p.stderr.decode(errors='replace')[-300:]}")
    return secs, p.stdout.count(b"\n")


def row_ls_l(ctx: Ctx, row: Row) -> None:
    src = ctx.ensure_wide()
    b = ctx.bench
    want = ctx.wide_count
    du: dict[str, list[float]] = {}

    def mounted(kind: str, cache: Path) -> tuple[Mount, Path]:
        """A fresh mount of the wide directory; returns it and the directory in it."""
        if kind == "vfs":
            m = b.mount_vfs(f"{DATASET_WIDE}@v1", cache)
        elif kind == "rclone":
            # Modification times from the listing, not a HEAD per object: the setting
            # rclone's docs give for listing speed, so its best figure is the target.
            m = b.mount_rclone("plain/wide", cache, ["--use-server-modtime"])
        else:
            m = b.mount_juicefs(cache, meta=ctx.wide_meta)
        return m, m.path / "dir"

    def cold(kind: str, cmd: str) -> float:
        """`cmd` over the directory in a fresh mount (or local), page caches dropped."""
        if kind == "local":
            b.drop_caches()
            return run(cmd, src, kind)
        ctx.ensure_wide_peer(kind)
        cache = b.fresh(f"{kind}-cache")
        try:
            m, d = mounted(kind, cache)
            with b.mounted(m):
                b.drop_caches()
                return run(cmd, d, kind)
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    def run(cmd: str, d: Path, kind: str) -> float:
        if cmd == "ls":
            secs, n = _timed_lines(["ls", "-l", str(d)])
            if n != want + 1:  # the "total" line
                raise RuntimeError(f"ls -l printed {n} lines, not {want + 1}")
        else:
            secs, _ = _timed_lines(["du", "-s", str(d)])
            du.setdefault(kind, []).append(secs)
        return secs

    kinds = {"vfs": "vfs", "local disk": "local", "rclone": "rclone", "JuiceFS": "juicefs"}
    for rep in range(ctx.reps):
        for fig in (row.vfs, *row.baselines):
            kind = kinds[fig.name]
            measure(fig, lambda k=kind: cold(k, "ls"))  # type: ignore[misc]
            # du once per figure: it asks what ls -l asks, and the row's goal is ls -l.
            if rep == 0 and not fig.unavailable:
                try:
                    cold(kind, "du")
                except (RuntimeError, OSError) as e:
                    row.notes.append(f"du -s by {fig.name} failed: {e}")
    shown = ", ".join(f"{name} {du[k][0]:.2f} s" for name, k in kinds.items() if du.get(k))
    row.notes.append(
        f"one directory of {want:,} empty files; each command on a fresh mount over an "
        "empty cache, page caches dropped; output read through a pipe; rclone with "
        "--use-server-modtime"
    )
    row.notes.append(f"`du -s`, same conditions, once: {shown}")
