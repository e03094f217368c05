"""The local-cache read through a real mount, beside the Python passthrough.

    python -m scripts.cacheread [--mib 128] [--reps 5] [--bs-kib 1024]

Commits one file of random bytes to a store on its own SeaweedFS, reads it once
through a mount (which fills the chunk cache), then `--reps` times, interleaved:
- `vfs`: a fresh `vfs mount` over that filled cache, page caches dropped, the file
  read with reads of `--bs-kib` (as `dd bs=1M` does);
- `passthrough`: scripts/passthrough.py over the committed source directory, page
  caches dropped, the same reads.

Each line gives MB/s (wall clock: noisy on a shared machine), the daemon's CPU
seconds per GiB (utime + stime from /proc/PID/stat) and its minor page faults per
MiB (fresh memory the daemon touched: one per 4 KiB page when every read lands in
new memory). Run it with PYTHONPATH at the tree to measure: the daemon inherits it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.procstat import cpu_and_faults
from vfs.ops.commit import commit_dir
from vfs.store import Store
from vfs.testing.seaweed import SeaweedServer

MiB = 1024 * 1024
HERE = Path(__file__).resolve().parent


def _drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _read(path: Path, bs: int) -> int:
    n = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(bs):
            n += len(chunk)
    return n


def _wait_mounted(mnt: Path, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if os.path.ismount(mnt):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the mount at {mnt} exited with {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{mnt} was not mounted within 10 s")


def _measure(name: str, pid: int, path: Path, nbytes: int, bs: int) -> None:
    _drop_caches()
    c0, f0 = cpu_and_faults(pid)
    t0 = time.perf_counter()
    got = _read(path, bs)
    wall = time.perf_counter() - t0
    c1, f1 = cpu_and_faults(pid)
    assert got == nbytes, (got, nbytes)
    mib = nbytes / MiB
    print(
        f"{name:12s} {nbytes / wall / 1e6:8.1f} MB/s  {(c1 - c0) / mib * 1024:6.2f} CPU-s/GiB"
        f"  {(f1 - f0) / mib:7.1f} faults/MiB",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--bs-kib", type=int, default=1024)
    args = ap.parse_args()
    nbytes, bs = args.mib * MiB, args.bs_kib * 1024
    vfs = [sys.executable, "-m", "vfs.cli"]
    with tempfile.TemporaryDirectory(prefix="cacheread-") as tmp, SeaweedServer() as server:
        os.environ.update(server.env())
        bucket = server.make_bucket("cacheread")
        os.environ["VFS_STORE"] = f"s3://{bucket}/store"
        store = Store.open(os.environ["VFS_STORE"])
        work = Path(tmp)
        src, cache = work / "src", work / "cache"
        src.mkdir()
        (src / "big.bin").write_bytes(os.urandom(nbytes))
        commit_dir(store, str(src), "ds", tag="v1", cache_dir=str(work / "wc"))
        store.close()

        def vfs_mount(i: int) -> tuple[Path, int]:
            mnt = work / f"m{i}"
            mnt.mkdir()
            cmd = [*vfs, "mount", "ds@v1", str(mnt), "--cache-dir", str(cache), "--json"]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            return mnt, int(json.loads(out)["pid"])

        def vfs_umount(mnt: Path) -> None:
            subprocess.run([*vfs, "umount", str(mnt)], check=False, capture_output=True)

        mnt, _ = vfs_mount(0)
        try:
            _read(mnt / "big.bin", bs)  # fills the chunk cache
        finally:
            vfs_umount(mnt)
        for rep in range(args.reps):
            mnt, pid = vfs_mount(rep + 1)
            try:
                _measure("vfs", pid, mnt / "big.bin", nbytes, bs)
            finally:
                vfs_umount(mnt)
            pt = work / f"pt{rep}"
            pt.mkdir()
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "passthrough.py"), str(src), str(pt)]
            )
            try:
                _wait_mounted(pt, proc)
                _measure("passthrough", proc.pid, pt / "big.bin", nbytes, bs)
            finally:
                subprocess.run(["fusermount3", "-u", "-z", str(pt)], check=False)
                proc.terminate()
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
