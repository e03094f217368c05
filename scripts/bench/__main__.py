"""`make bench`: vfs against raw disk, raw S3, DVC, rclone, s3fs, JuiceFS and AWS
s3torchconnector, in one run.

Every competitor reads the same seeded data from the same loopback SeaweedFS on the
same machine, side by side, and each row reports the vfs figure, every baseline
figure, their ratio, the goal and PASS or BELOW GOAL. Absolute times drift on a
shared machine; ratios measured side by side do not.

    python -m scripts.bench                 # the default data (~1.5 GB), 3 repetitions
    python -m scripts.bench --quick         # a smoke run (smaller data, 1 rep), ~12 minutes
    python -m scripts.bench --scale 1m      # adds the 1M-file rows (mount, RSS, commit)
    python -m scripts.bench --scale 5m --rows commit_scale,recommit_scale   # 5M-file commit
    python -m scripts.bench --rows cold_read,switch
    python -m scripts.bench --quick --rows epoch,overfetch,ls_l

(from the repository root). Writes a table to stdout, and results.json, results.md
and PNG charts to bench-results/ (--out). Everything it starts (mounts, daemons, the
S3 server, temp data) is removed on exit, on failure and on Ctrl-C. The competitors
come from `make bench-deps`; a missing one makes its figures "not available", never
guessed. The rows and their fairness rules are in rows.py; docs/performance.md has
the latest results.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import data as benchdata
from .ctx import Ctx
from .env import ROOT, Bench
from .report import NOT_RUN, Row, charts, markdown_table, table_lines
from .rows import ALIASES, RUN_ORDER, run_row, skeletons

log = logging.getLogger("bench")
GB = 1e9


SCALE_FILES = {"default": 0, "1m": 1_000_000, "5m": 5_000_000}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="rows: "
        + ", ".join(RUN_ORDER)
        + "".join(f"; {k} = {', '.join(v)}" for k, v in ALIASES.items()),
    )
    p.add_argument("--quick", action="store_true", help="small data, 1 repetition (~12 min)")
    p.add_argument(
        "--scale",
        choices=("default", "1m", "5m"),
        default="default",
        help="1m adds a 1,000,000-file version for the mount, RSS and commit rows; 5m "
        "commits 5,000,000 files in the commit rows instead (the mount rows stay at 1M)",
    )
    p.add_argument("--rows", default="", help="comma-separated row ids (default: all)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per row (default 3)")
    p.add_argument("--out", default=str(ROOT / "bench-results"), help="results directory")
    p.add_argument(
        "--workdir",
        default=os.environ.get("VFS_BENCH_WORKDIR", "/var/tmp"),
        help="where the temporary work directory goes (default /var/tmp)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--seed", type=int, default=None, help="data seed")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.reps < 1:
        p.error("--reps must be at least 1")
    wanted: list[str] = []
    for r in (r.strip() for r in args.rows.split(",") if r.strip()):
        wanted += ALIASES.get(r, (r,))
    unknown = [r for r in wanted if r not in RUN_ORDER]
    if unknown:
        p.error(f"unknown rows: {', '.join(unknown)} (rows: {', '.join(RUN_ORDER)})")
    if any(r in wanted for r in ("mount_1m", "rss_1m")) and args.scale == "default":
        args.scale = "1m"
    args.wanted = wanted or list(RUN_ORDER)
    return args


def needed_bytes(spec: benchdata.DataSpec, args: argparse.Namespace) -> int:
    """Peak disk use, generously: the source and DVC's copy of it, DVC's cache and a
    fresh clone during `dvc pull`, the store copies in SeaweedFS (vfs, DVC and rclone,
    one per commit repetition, and JuiceFS's), a prefetch cache or bulk download, the
    epoch's images (about 0.3 GB, four copies), plus slack."""
    v1 = spec.v1_bytes
    copies = 7 + 3 * args.reps
    # 4 KiB blocks of the scale trees and their stores: 6 GB a million files
    extra = {"default": 0, "1m": 6 * GB, "5m": 36 * GB}[args.scale]
    return int(copies * v1 + 3 * GB + extra)


def machine() -> dict[str, Any]:
    def sh(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    def field(path: str, key: str) -> str:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return ""

    cpu = field("/proc/cpuinfo", "model name")
    mem = int((field("/proc/meminfo", "MemTotal:").split() or ["0"])[0]) * 1024
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "os": sh("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
        "python": platform.python_version(),
        "disk": sh("lsblk", "-d", "-n", "-o", "NAME,SIZE,ROTA,MODEL"),
        "rclone": sh("rclone", "version").splitlines()[0] if shutil.which("rclone") else None,
        "s3fs": sh("s3fs", "--version").splitlines()[0] if shutil.which("s3fs") else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="bench: %(message)s",
        stream=sys.stderr,
    )
    spec = benchdata.QUICK if args.quick else benchdata.DEFAULT
    if args.seed is not None:
        spec = benchdata.DataSpec(**{**spec.__dict__, "seed": args.seed})
    os.makedirs(args.workdir, exist_ok=True)
    need = needed_bytes(spec, args)
    free = shutil.disk_usage(args.workdir).free
    if free < need:
        print(
            f"bench: {args.workdir} has {free / GB:.1f} GB free; this run needs about "
            f"{need / GB:.1f} GB. Free some space or choose --workdir.",
            file=sys.stderr,
        )
        return 1
    if os.geteuid() != 0:
        log.info("not root: page caches cannot be dropped and read_ahead_kb stays as it is")
    # Measure vfs as an installed copy runs: pip byte-compiles a package it installs,
    # and an editable install does not. Without this, every vfs process compiles
    # its modules first wherever PYTHONDONTWRITEBYTECODE is set (40 ms of a mount).
    compileall.compile_dir(str(ROOT / "vfs"), quiet=1)

    # SIGTERM and SIGHUP take the same way out as Ctrl-C: through the clean-up.
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)

    rows = skeletons(spec, args.quick)
    load_start = os.getloadavg()[0]
    if load_start > (os.cpu_count() or 1):
        log.warning(
            "load average %.1f on %d CPUs: other work competes with the bench; "
            "ratios hold up better than absolute figures, but expect noise",
            load_start,
            os.cpu_count() or 1,
        )
    started = dt.datetime.now(dt.UTC)
    t_start = time.monotonic()
    bench = Bench.create(args.workdir, args.keep)
    interrupted = False
    try:
        bench.probe_drop_caches()
        if not bench.drop_ok:
            log.warning("%s", bench.drop_why)
        log.info("work directory %s; starting SeaweedFS", bench.workdir)
        bench.start_server()
        ctx = Ctx(bench, spec, args.reps, args.quick, SCALE_FILES[args.scale])
        ctx.src = bench.workdir / "src"
        ctx.cache_main = bench.workdir / "vfs-cache"
        log.info("writing the data: %d small files, %d large", spec.small_files, spec.large_files)
        ctx.v1_bytes = benchdata.generate(str(ctx.src), spec)
        for rid in RUN_ORDER:
            row = rows[rid]
            if rid not in args.wanted:
                row.not_run = "not selected (--rows)"
                continue
            log.info("row %s: %s", rid, row.title)
            load_before = os.getloadavg()[0]
            t0 = time.monotonic()
            try:
                run_row(ctx, row)
            except Exception as e:  # one broken row must not stop the others
                if not row.vfs.samples and not row.vfs.unavailable:
                    row.vfs.fail(f"{type(e).__name__}: {e}")
                row.notes.append(f"the row stopped early: {type(e).__name__}: {e}")
                log.exception("row %s failed", rid)
            row.judge()
            row.load = (load_before, os.getloadavg()[0])
            log.info("row %s: %s in %.0f s", rid, row.verdict, time.monotonic() - t0)
    except KeyboardInterrupt as e:
        interrupted = True
        log.error("interrupted (%s); cleaning up", e or "Ctrl-C")
    finally:
        bench.close()
    for row in rows.values():
        if row.verdict == NOT_RUN and not row.not_run:
            row.not_run = "interrupted" if interrupted else "not run"
    ordered = list(rows.values())
    report(args, spec, ordered, bench, started, time.monotonic() - t_start, load_start)
    return 130 if interrupted else 0


def report(
    args: argparse.Namespace,
    spec: benchdata.DataSpec,
    rows: list[Row],
    bench: Bench,
    started: dt.datetime,
    seconds: float,
    load_start: float,
) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mach = machine()
    data = (
        f"{spec.small_files:,} files of ~{spec.small_mean // 1000} KB in {spec.dirs} dirs + "
        f"{spec.large_files} × {spec.large_size // 2**20} MiB = {spec.v1_bytes / 1e9:.2f} GB, "
        f"seed {spec.seed}"
    )
    head = [
        f"vfs bench, {started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} min, "
        f"{args.reps} repetition(s), medians",
        f"data: {data}" + (" (--quick)" if args.quick else ""),
        f"machine: {mach['nproc']} CPUs ({mach['cpu']}), {mach['memory_gib']} GiB, "
        f"Linux {mach['kernel']}; load average {load_start:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end",
        "page caches: "
        + ("dropped before every cold measurement" if bench.drop_ok else bench.drop_why),
        "",
    ]
    lines = head + table_lines(rows)
    print("\n".join(lines))
    doc = {
        "started": started.isoformat(),
        "seconds": round(seconds, 1),
        "args": {k: v for k, v in vars(args).items() if k != "wanted"},
        "data": {**spec.__dict__, "v1_bytes": spec.v1_bytes},
        "machine": mach,
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "drop_caches": bench.drop_ok,
        "drop_caches_note": bench.drop_why,
        "rows": [r.to_json() for r in rows],
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    md = "\n".join([*(f"{h}  " for h in head if h), "", markdown_table(rows), ""])
    (out / "results.md").write_text(md)
    written = charts(rows, out)
    print(
        f"\nwrote {out / 'results.json'}, {out / 'results.md'}"
        + (f" and {len(written)} charts" if written else " (no charts: matplotlib missing)")
    )


if __name__ == "__main__":
    sys.exit(main())
