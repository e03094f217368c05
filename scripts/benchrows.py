"""The rows of `make bench`: each competitor on the same data, side by side.

`ROWS` lists every row with its figures and goals (the issue's table); `run_row`
fills one in. `Ctx` holds what rows share and builds it on first use: the v1 source
tree, the vfs store with v1 (and v2), the plain copy that rclone, s3fs and boto3
read, and the DVC repository. Rows run in `RUN_ORDER`, which respects what they
change (v2 rewrites the source, so the rows that need v1 alone come first), and
are shown in the issue's order.

Fairness rules every row follows:
- Every figure is the median of `reps` repetitions; the competitors of one row take
  turns inside each repetition, so drift hits all of them alike.
- "Cold" means a fresh cache directory, a fresh mount and dropped page caches
  (SeaweedFS's files included); "warm" means read once, untimed, first.
- Large-file reads use `dd bs=1M` and dd's own clock, for every competitor.
- MB are 10^6 bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import benchdata
from benchctx import Ctx
from benchread import (
    row_cache_read,
    row_cold_read,
    row_find,
    row_prefetch,
    row_reread_warm,
    row_small_cold,
    row_small_warm,
)
from benchreport import Figure, Goal, Row
from benchversion import (
    row_commit,
    row_mount_1m,
    row_recommit,
    row_rss_1m,
    row_switch,
    row_ttfb,
    row_v2_bytes,
)


def _g(text: str, kind: str, target: float, *against: str) -> Goal:
    return Goal(text, kind, target, against)


def skeletons(spec: benchdata.DataSpec, quick: bool) -> dict[str, Row]:
    """Every row, empty, in the issue's order."""
    big = f"a {spec.large_size // (1024 * 1024)} MiB file"
    n_small = 500 if quick else 2000
    rows = [
        Row(
            "reread_warm",
            f"re-read {big}, page cache warm",
            "higher",
            "fraction",
            Figure("vfs", "MB/s"),
            [Figure(n, "MB/s") for n in ("local dd", "passthrough", "rclone", "s3fs")],
            [_g("≥ 0.9× passthrough ceiling", "ratio>=", 0.9, "passthrough")],
        ),
        Row(
            "cache_read",
            f"read {big} from the local cache, page caches dropped",
            "higher",
            "fraction",
            Figure("vfs", "MB/s"),
            # The passthrough has no goal here: it shows what a Python FUSE daemon
            # reading a local file gets, which bounds vfs too.
            [Figure(n, "MB/s") for n in ("local dd", "rclone", "passthrough")],
            [
                _g("≥ 0.5× local", "ratio>=", 0.5, "local dd"),
                _g("≥ 3× rclone", "ratio>=", 3.0, "rclone"),
            ],
        ),
        Row(
            "cold_read",
            f"read {big} cold from S3",
            "higher",
            "fraction",
            Figure("vfs", "MB/s"),
            [
                Figure(n, "MB/s")
                for n in ("boto3 single GET", "boto3 8×8 MiB ranges", "rclone", "s3fs")
            ],
            [
                _g(
                    "≥ 0.8× better boto3",
                    "ratio>=",
                    0.8,
                    "boto3 single GET",
                    "boto3 8×8 MiB ranges",
                ),
                _g("≥ 2× s3fs", "ratio>=", 2.0, "s3fs"),
            ],
        ),
        Row(
            "small_cold",
            f"{n_small:,} small files, cold, shuffled, 8 threads",
            "higher",
            "fraction",
            Figure("vfs", "files/s"),
            [Figure(n, "files/s") for n in ("rclone", "s3fs")],
            [_g("≥ 3× rclone", "ratio>=", 3.0, "rclone")],
        ),
        Row(
            "small_warm",
            "the same files, page cache warm, 1 thread",
            "higher",
            "fraction",
            Figure("vfs", "files/s"),
            [Figure("passthrough", "files/s")],
            [_g("≥ 0.8× passthrough ceiling", "ratio>=", 0.8, "passthrough")],
        ),
        Row(
            "prefetch",
            "`vfs prefetch` of the whole version",
            "higher",
            "fraction",
            Figure("vfs", "MB/s"),
            [Figure("boto3 bulk download", "MB/s")],
            [_g("≥ 0.8× boto3 MB/s", "ratio>=", 0.8, "boto3 bulk download")],
        ),
        Row(
            "find",
            f"`find` over every entry, fresh mount ({_entries(spec):,} entries)",
            "lower",
            "speedup",
            Figure("vfs", "s"),
            [Figure(n, "s") for n in ("rclone", "s3fs")],
            [_g("≤ 0.5 s", "value<=", 0.5)],
        ),
        Row(
            "ttfb",
            "time to first byte of a version never read here",
            "lower",
            "speedup",
            Figure("vfs", "s"),
            [Figure("dvc pull (fresh clone)", "s")],
            [_g("≥ 50× faster", "ratio>=", 50.0, "dvc pull (fresh clone)")],
        ),
        Row(
            "switch",
            "version switch v2 → v1, whole command",
            "lower",
            "speedup",
            Figure("vfs", "s"),
            [Figure("git checkout + dvc checkout", "s")],
            [
                _g("≥ 15× faster", "ratio>=", 15.0, "git checkout + dvc checkout"),
                _g("≤ 150 ms", "value<=", 0.150),
            ],
        ),
        Row(
            "mount_1m",
            "mount a 1M-file version, until the first `ls` works",
            "lower",
            "speedup",
            Figure("vfs", "s"),
            [],
            [_g("< 1 s", "value<", 1.0)],
        ),
        Row(
            "commit",
            "commit v1 to S3",
            "lower",
            "fraction",
            Figure("vfs", "s"),
            [Figure(n, "s") for n in ("dvc add + dvc push", "rclone copy")],
            [_g("≤ 0.2× DVC", "ratio<=", 0.2, "dvc add + dvc push")],
        ),
        Row(
            "recommit",
            "re-commit with nothing changed",
            "lower",
            "fraction",
            Figure("vfs", "s"),
            [Figure("dvc status", "s")],
            [_g("≤ 1 s", "value<=", 1.0)],
        ),
        Row(
            "v2_bytes",
            "bytes stored for v2",
            "lower",
            "fraction",
            Figure("vfs", "MB"),
            [Figure(n, "MB") for n in ("bytes really changed", "DVC remote growth")],
            [_g("≤ 1.25× the change", "ratio<=", 1.25, "bytes really changed")],
        ),
        Row(
            "rss_1m",
            "daemon RSS after traversing the 1M-file version",
            "lower",
            "fraction",
            Figure("vfs", "MB"),
            [],
            [_g("≤ 150 MB", "value<=", 150.0)],
        ),
    ]
    return {r.id: r for r in rows}


def _entries(spec: benchdata.DataSpec) -> int:
    # find prints the root, the two top dirs, the small dirs and every file.
    return 1 + 1 + spec.dirs + spec.small_files + (1 + spec.large_files if spec.large_files else 0)


RUN_ORDER = [
    "commit",
    "recommit",
    "reread_warm",
    "cache_read",
    "cold_read",
    "small_cold",
    "small_warm",
    "prefetch",
    "find",
    "ttfb",
    "v2_bytes",
    "switch",
    "mount_1m",
    "rss_1m",
]


def run_row(ctx: Ctx, row: Row) -> None:
    ROW_FUNCS[row.id](ctx, row)


ROW_FUNCS: dict[str, Callable[[Ctx, Row], None]] = {
    "reread_warm": row_reread_warm,
    "cache_read": row_cache_read,
    "cold_read": row_cold_read,
    "small_cold": row_small_cold,
    "small_warm": row_small_warm,
    "prefetch": row_prefetch,
    "find": row_find,
    "ttfb": row_ttfb,
    "switch": row_switch,
    "mount_1m": row_mount_1m,
    "commit": row_commit,
    "recommit": row_recommit,
    "v2_bytes": row_v2_bytes,
    "rss_1m": row_rss_1m,
}
