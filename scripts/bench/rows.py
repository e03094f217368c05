"""The rows of `make bench`: each competitor on the same data, side by side.

`ROWS` declares every row once, in the issue's (display) order: its id, the
function that measures it, its place in the run order, its title, figures and
goals. `skeletons` builds the empty rows of one run from it, `RUN_ORDER` is derived
from it, and `run_row` fills one row in. `Ctx` (ctx.py) holds what rows share and
builds it on first use: the v1 source tree, the vfs store with v1 (and v2), the
plain copy that rclone, s3fs and boto3 read, and the DVC repository. The run order
respects what rows change (v2 rewrites the source, so the rows that need v1 alone
come first).

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
from dataclasses import dataclass, replace

from . import data as benchdata
from .ctx import Ctx
from .epoch import row_epoch_cold, row_epoch_warm
from .meta import row_ls_l, row_overfetch
from .raybench import row_ray_commit
from .read import (
    row_api_cold,
    row_api_warm,
    row_cache_read,
    row_cold_read,
    row_find,
    row_prefetch,
    row_reread_warm,
    row_small_cold,
    row_small_warm,
)
from .report import Figure, Goal, Row
from .scale import row_commit_scale, row_recommit_scale
from .version import (
    row_commit,
    row_mount_1m,
    row_recommit,
    row_rss_1m,
    row_switch,
    row_ttfb,
    row_v2_bytes,
)

# The peers a user would pick instead of vfs, on the same SeaweedFS and data.
PEERS = ("rclone", "s3fs", "JuiceFS", "s3torchconnector")


def _g(text: str, kind: str, target: float, *against: str) -> Goal:
    return Goal(text, kind, target, against)


def _big(spec: benchdata.DataSpec) -> str:
    return f"a {spec.large_size // (1024 * 1024)} MiB file"


def _entries(spec: benchdata.DataSpec) -> int:
    # find prints the root, the two top dirs, the small dirs and every file.
    return 1 + 1 + spec.dirs + spec.small_files + (1 + spec.large_files if spec.large_files else 0)


@dataclass(frozen=True)
class RowSpec:
    """One row, declared once. `order` is its place in the run order; `title` is
    given the data spec and whether the run is --quick; the vfs figure and every
    baseline share `unit`."""

    id: str
    run: Callable[[Ctx, Row], None]
    order: int
    title: Callable[[benchdata.DataSpec, bool], str]
    better: str  # "higher" or "lower"
    ratio_form: str  # "fraction" or "speedup"
    unit: str
    baselines: tuple[str, ...]
    goals: tuple[Goal, ...]

    def skeleton(self, spec: benchdata.DataSpec, quick: bool) -> Row:
        """This row, empty, for one run (figures and goals are fresh objects)."""
        return Row(
            self.id,
            self.title(spec, quick),
            self.better,
            self.ratio_form,
            Figure("vfs", self.unit),
            [Figure(n, self.unit) for n in self.baselines],
            [replace(g) for g in self.goals],
        )


ROWS: tuple[RowSpec, ...] = (
    RowSpec(
        "reread_warm",
        row_reread_warm,
        3,
        lambda spec, quick: f"re-read {_big(spec)}, page cache warm",
        "higher",
        "fraction",
        "MB/s",
        ("local dd", "passthrough", "rclone", "s3fs"),
        (_g("≥ 0.9× passthrough ceiling", "ratio>=", 0.9, "passthrough"),),
    ),
    RowSpec(
        "cache_read",
        row_cache_read,
        4,
        lambda spec, quick: f"read {_big(spec)} from the local cache, page caches dropped",
        "higher",
        "fraction",
        "MB/s",
        # The passthrough: what a Python FUSE daemon reading a local file gets.
        # dd after a cache drop swings 0.7-2.7 GB/s on the VM: shown, not the target.
        ("local dd", "passthrough", "rclone", "JuiceFS"),
        (
            _g("≥ 0.8× passthrough", "ratio>=", 0.8, "passthrough"),
            _g("≥ 1.5× JuiceFS", "ratio>=", 1.5, "JuiceFS"),
            _g("≥ 3× rclone", "ratio>=", 3.0, "rclone"),
        ),
    ),
    RowSpec(
        "cold_read",
        row_cold_read,
        5,
        lambda spec, quick: f"read {_big(spec)} cold from S3",
        "higher",
        "fraction",
        "MB/s",
        ("boto3 single GET", "boto3 8×8 MiB ranges", *PEERS),
        (
            _g("≥ 0.8× boto3 8×8 MiB ranges", "ratio>=", 0.8, "boto3 8×8 MiB ranges"),
            _g("≥ 1.5× the best peer", "ratio>=", 1.5, *PEERS),
            _g("≥ 2× s3fs", "ratio>=", 2.0, "s3fs"),
        ),
    ),
    RowSpec(
        "small_cold",
        row_small_cold,
        6,
        lambda spec, quick: f"{500 if quick else 2000:,} small files, cold, shuffled, 8 threads",
        "higher",
        "fraction",
        "files/s",
        PEERS,
        (
            _g("≥ best of JuiceFS, s3torchconnector", "ratio>=", 1.0, *PEERS[2:]),
            _g("≥ 3× rclone", "ratio>=", 3.0, "rclone"),
        ),
    ),
    RowSpec(
        "small_warm",
        row_small_warm,
        7,
        lambda spec, quick: "the same files, page cache warm, 1 thread",
        "higher",
        "fraction",
        "files/s",
        ("passthrough", "JuiceFS", "s3torchconnector"),
        (_g("≥ 0.8× passthrough ceiling", "ratio>=", 0.8, "passthrough"),),
    ),
    RowSpec(
        "prefetch",
        row_prefetch,
        8,
        lambda spec, quick: "`vfs prefetch` of the whole version",
        "higher",
        "fraction",
        "MB/s",
        ("boto3 bulk download",),
        (_g("≥ 0.8× boto3 MB/s", "ratio>=", 0.8, "boto3 bulk download"),),
    ),
    RowSpec(
        "find",
        row_find,
        9,
        lambda spec, quick: f"`find` over every entry, fresh mount ({_entries(spec):,} entries)",
        "lower",
        "speedup",
        "s",
        ("rclone", "s3fs"),
        (_g("≤ 0.5 s", "value<=", 0.5),),
    ),
    RowSpec(
        "ttfb",
        row_ttfb,
        10,
        lambda spec, quick: "time to first byte of a version never read here",
        "lower",
        "speedup",
        "s",
        ("dvc pull (fresh clone)",),
        (_g("≥ 50× faster", "ratio>=", 50.0, "dvc pull (fresh clone)"),),
    ),
    RowSpec(
        "switch",
        row_switch,
        12,
        lambda spec, quick: "version switch v2 → v1, whole command",
        "lower",
        "speedup",
        "s",
        ("git checkout + dvc checkout",),
        (
            _g("≥ 15× faster", "ratio>=", 15.0, "git checkout + dvc checkout"),
            _g("≤ 150 ms", "value<=", 0.150),
        ),
    ),
    RowSpec(
        "mount_1m",
        row_mount_1m,
        13,
        lambda spec, quick: "mount a 1M-file version, until the first `ls` works",
        "lower",
        "speedup",
        "s",
        (),
        (_g("< 1 s", "value<", 1.0),),
    ),
    RowSpec(
        "commit",
        row_commit,
        1,
        lambda spec, quick: "commit v1 to S3",
        "lower",
        "fraction",
        "s",
        ("dvc add + dvc push", "rclone copy"),
        (_g("≤ 0.2× DVC", "ratio<=", 0.2, "dvc add + dvc push"),),
    ),
    RowSpec(
        "recommit",
        row_recommit,
        2,
        lambda spec, quick: "re-commit with nothing changed",
        "lower",
        "fraction",
        "s",
        ("dvc status",),
        (_g("≤ 1 s", "value<=", 1.0),),
    ),
    RowSpec(
        "v2_bytes",
        row_v2_bytes,
        11,
        lambda spec, quick: "bytes stored for v2",
        "lower",
        "fraction",
        "MB",
        ("bytes really changed", "DVC remote growth"),
        (_g("≤ 1.25× the change", "ratio<=", 1.25, "bytes really changed"),),
    ),
    RowSpec(
        "rss_1m",
        row_rss_1m,
        14,
        lambda spec, quick: "daemon RSS after traversing the 1M-file version",
        "lower",
        "fraction",
        "MB",
        (),
        (_g("≤ 150 MB", "value<=", 150.0),),
    ),
    RowSpec(
        "epoch_cold",
        row_epoch_cold,
        15,
        lambda spec, quick: (
            f"DataLoader epoch over {2_000 if quick else 20_000:,} JPEGs, cold (4 workers)"
        ),
        "higher",
        "fraction",
        "images/s",
        ("local disk", "passthrough", *PEERS),
        (_g("≥ the best peer", "ratio>=", 1.0, *PEERS),),
    ),
    RowSpec(
        "epoch_warm",
        row_epoch_warm,
        16,
        lambda spec, quick: "the same epoch again, warm",
        "higher",
        "fraction",
        "images/s",
        ("local disk", "passthrough", *PEERS),
        (_g("≥ 0.9× local disk", "ratio>=", 0.9, "local disk"),),
    ),
    RowSpec(
        "overfetch",
        row_overfetch,
        17,
        lambda spec, quick: "over-fetch: 100 random files read once, bytes from S3 ÷ read",
        "lower",
        "fraction",
        "×",
        (),
        (_g("≤ 2×", "value<=", 2.0),),
    ),
    RowSpec(
        "ls_l",
        row_ls_l,
        18,
        lambda spec, quick: (
            f"`ls -l` over one directory of {20_000 if quick else 200_000:,} entries"
        ),
        "lower",
        "fraction",
        "s",
        ("local disk", "rclone", "JuiceFS"),
        (
            _g("≤ 3× local disk", "ratio<=", 3.0, "local disk"),
            _g("≤ the best peer", "ratio<=", 1.0, "rclone", "JuiceFS"),
        ),
    ),
    RowSpec(
        "api_cold",
        row_api_cold,
        19,
        lambda spec, quick: (
            f"Python API, {500 if quick else 2000:,} small files cold, shuffled, 8 threads, "
            "with the order hint"
        ),
        "higher",
        "fraction",
        "files/s",
        ("API, no hint", "vfs mount"),
        (_g("≥ the mount's cold rate", "ratio>=", 1.0, "vfs mount"),),
    ),
    RowSpec(
        "api_warm",
        row_api_warm,
        20,
        lambda spec, quick: "Python API, the same files warm, 1 thread",
        "higher",
        "fraction",
        "files/s",
        ("vfs mount",),
        (_g("≥ 0.8× the mount's warm rate", "ratio>=", 0.8, "vfs mount"),),
    ),
    RowSpec(
        "commit_scale",
        row_commit_scale,
        21,
        lambda spec, quick: "commit the --scale tree (1M or 5M files), page caches dropped",
        "lower",
        "fraction",
        "s",
        ("tar cf - | cat",),
        (_g("≤ 1.2× tar cf - | cat", "ratio<=", 1.2, "tar cf - | cat"),),
    ),
    RowSpec(
        "recommit_scale",
        row_recommit_scale,
        22,
        lambda spec, quick: "re-commit the --scale tree, nothing changed",
        "lower",
        "fraction",
        "s",
        (),
        (_g("≤ 5 s", "value<=", 5.0),),
    ),
    RowSpec(
        "ray_commit",
        row_ray_commit,
        23,
        lambda spec, quick: "commit v1 to S3 on a 2-node local Ray cluster (`--ray`)",
        "lower",
        "fraction",
        "s",
        ("one-machine commit",),
        # One machine's 2 cores run both: no speed-up is possible here (see
        # docs/performance.md); the goal is that distributing costs little.
        (_g("≤ 2× the one-machine commit", "ratio<=", 2.0, "one-machine commit"),),
    ),
)

_BY_ID = {r.id: r for r in ROWS}
RUN_ORDER = [r.id for r in sorted(ROWS, key=lambda r: r.order)]
# Names the command line accepts for several rows measured together.
ALIASES = {"epoch": ("epoch_cold", "epoch_warm")}


def skeletons(spec: benchdata.DataSpec, quick: bool) -> dict[str, Row]:
    """Every row, empty, in the issue's order."""
    return {r.id: r.skeleton(spec, quick) for r in ROWS}


def run_row(ctx: Ctx, row: Row) -> None:
    _BY_ID[row.id].run(ctx, row)
