"""Small files read cold through a real mount: files/s and the daemon's CPU per file.

    python -m scripts.smallcold [--files 20000] [--read 2000] [--threads 8] [--reps 3]

Commits `--files` files of 25-75 KB of random bytes (in 20 class folders, as an
image dataset is laid out) to a SeaweedFS of its own, then `--reps` times: a fresh
`vfs mount` over a fresh cache, page caches dropped, `--read` files picked at
random (the same files every rep) read whole by `--threads` threads, as the
bench's `small_cold` row does. For each rep it prints files/s (wall clock: noisy on
a shared machine), the daemon's CPU per file (utime + stime from /proc: what load
moves least), its minor page faults per file, and the mount's FUSE requests and
GETs per file. SeaweedFS's own CPU per file is printed too: it shares the 2 CPUs.

`--py-spy FILE` records the last rep's daemon with py-spy (`--gil`: only samples
holding the GIL), `--perf FILE` with `perf record` and DWARF call graphs. Run it
with PYTHONPATH at the tree to measure: the daemon inherits it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scripts.procstat import cpu_and_faults
from vfs.ops.commit import commit_dir
from vfs.store import Store
from vfs.testing.seaweed import SeaweedServer


def _stats(mnt: Path) -> dict[str, object]:
    from vfs.mount import control

    return dict(control.status(str(mnt)).stats)


def _recorder(pid: int, spy: str, perf: str, gil: bool) -> subprocess.Popen[bytes] | None:
    if spy:
        py_spy = Path(sys.executable).parent / "py-spy"
        cmd = [str(py_spy), "record", "--native", "-f", "raw", "-o", spy, "-p", str(pid)]
        if gil:
            cmd.append("--gil")
    elif perf:
        cmd = ["perf", "record", "-F", "999", "--call-graph", "dwarf,16384", "-o", perf]
        cmd += ["-p", str(pid)]
    else:
        return None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return proc


def _one(
    work: Path,
    picks: list[str],
    threads: int,
    server_pid: int,
    record: tuple[str, str, bool],
    tree: str,
) -> tuple[float, float]:
    mnt, cache = work / "mnt", work / "cache"
    mnt.mkdir(parents=True)
    vfs = [sys.executable, "-m", "vfs.cli"]
    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    out = subprocess.run(
        [*vfs, "mount", "ds@v1", str(mnt), "--cache-dir", str(cache), "--json"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    pid = int(json.loads(out)["pid"])
    recorder = None
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        recorder = _recorder(pid, *record)
        before = _stats(mnt)
        (c0, f0), (s0, _), t0 = cpu_and_faults(pid), cpu_and_faults(server_pid), time.perf_counter()

        def read(rel: str) -> int:
            with open(mnt / rel, "rb") as f:
                return len(f.read())

        with ThreadPoolExecutor(threads) as pool:
            nbytes = sum(pool.map(read, picks))
        wall = time.perf_counter() - t0
        (c1, f1), (s1, _) = cpu_and_faults(pid), cpu_and_faults(server_pid)
        after = _stats(mnt)
        n = len(picks)
        fuse_before = before.get("fuse_requests", {})
        fuse_after = after.get("fuse_requests", {})
        assert isinstance(fuse_before, dict) and isinstance(fuse_after, dict)
        ops = {k: (v - fuse_before.get(k, 0)) / n for k, v in fuse_after.items()}
        ops = {k: round(v, 2) for k, v in ops.items() if v}
        keys = ("requests", "bytes_fetched", "window_chunks", "inline_gets", "inline_fallbacks")
        gets = {
            k: round((float(after.get(k, 0)) - float(before.get(k, 0))) / n, 2)  # type: ignore[arg-type]
            for k in keys
        }
        print(
            f"{n / wall:7.1f} files/s  daemon {(c1 - c0) / n * 1e3:5.2f} ms CPU/file  "
            f"{(f1 - f0) / n:5.1f} faults/file  SeaweedFS {(s1 - s0) / n * 1e3:5.2f} ms/file  "
            f"({nbytes / 1e6:.1f} MB in {wall:.2f} s)"
        )
        print(f"    FUSE requests/file {ops}  {gets}")
        return n / wall, (c1 - c0) / n * 1e3
    finally:
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=60)
        subprocess.run([*vfs, "umount", str(mnt)], check=False, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--read", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--py-spy", default="", metavar="FILE")
    ap.add_argument("--gil", action="store_true", help="py-spy: only samples holding the GIL")
    ap.add_argument("--perf", default="", metavar="FILE")
    ap.add_argument(
        "--trees",
        default="",
        metavar="DIR,DIR",
        help="A/B: each rep mounts once with the daemon's PYTHONPATH at each tree, in turn",
    )
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="smallcold-") as tmp, SeaweedServer() as server:
        os.environ.update(server.env())
        bucket = server.make_bucket("smallcold")
        src = Path(tmp) / "src"
        names = []
        for i in range(args.files):
            rel = f"c{i % 20:02d}/f{i:06d}.bin"
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(os.urandom(rng.randint(25_000, 75_000)))
            names.append(rel)
        store = Store.open(f"s3://{bucket}/store")
        commit_dir(store, str(src), "ds", tag="v1", cache_dir=str(Path(tmp) / "wc"))
        store.close()
        os.environ["VFS_STORE"] = f"s3://{bucket}/store"
        picks = rng.sample(names, args.read)
        trees = args.trees.split(",") if args.trees else [""]
        got: dict[str, list[tuple[float, float]]] = {t: [] for t in trees}
        for i in range(args.reps):
            last = i == args.reps - 1
            record = (args.py_spy if last else "", args.perf if last else "", args.gil)
            for j, tree in enumerate(trees):
                if tree:
                    print(f"  {tree}:")
                work = Path(tmp) / f"m{i}-{j}"
                got[tree].append(_one(work, picks, args.threads, server.pid, record, tree))
        for tree, runs in got.items():
            mid = len(runs) // 2
            rate, cpu = sorted(r for r, _ in runs)[mid], sorted(c for _, c in runs)[mid]
            print(f"{tree or 'median'}: {rate:.1f} files/s, {cpu:.2f} ms daemon CPU/file")


if __name__ == "__main__":
    main()
