"""Soak: many readers for many minutes over one mount with a small cache.

    .venv/bin/python scripts/soak.py                 # 16 readers, 10 minutes, 64 MiB cache
    .venv/bin/python scripts/soak.py --minutes 60 --store s3://bucket/prefix

Without --store it starts a SeaweedFS of its own (vfs.testing.seaweed) and commits a
generated dataset to it (files of 20 KiB to 8 MiB, --data-mb in all). It mounts the
version with `vfs mount` (the daemon users run), then --readers threads read random
files, whole or in random ranges, and compare every byte with what was committed.
Once a minute it prints the reads, the errors, the daemon's RSS and the cache's state.

It exits 1 if any read failed or returned a wrong byte, or if the daemon's RSS is not
flat: its peak over the last third of the run may exceed its peak over the first
third by at most --rss-slack-mb. (The first minutes fill the daemon's in-memory chunk
LRU and the allocator's arenas; a leak shows as a peak that keeps rising after.)
Not part of `make test`: see docs/reliability.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vfs.cache import ChunkCache
from vfs.mount import control
from vfs.ops.commit import commit_dir
from vfs.store import Store

MiB = 1024 * 1024


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reads = 0
        self.bytes = 0
        self.errors: list[str] = []

    def ok(self, n: int) -> None:
        with self.lock:
            self.reads += 1
            self.bytes += n

    def fail(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)


def make_data(root: Path, total_mb: int, seed: int) -> dict[str, bytes]:
    """Files of mixed sizes, most small (images), some large (shards)."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    total = 0
    i = 0
    while total < total_mb * MiB:
        size = (
            rng.randint(8 * MiB // 4, 8 * MiB)
            if rng.random() < 0.1
            else rng.randint(20_000, 600_000)
        )
        name = f"d{i % 8}/f{i:05d}.bin"
        data = rng.randbytes(size)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        files[name] = data
        total += size
        i += 1
    return files


def reader(
    mnt: Path, files: dict[str, bytes], seed: int, stop: threading.Event, c: Counters
) -> None:
    rng = random.Random(seed)
    names = sorted(files)
    while not stop.is_set():
        name = rng.choice(names)
        want = files[name]
        try:
            with open(mnt / name, "rb") as f:
                if rng.random() < 0.7:
                    got = f.read()
                    if got != want:
                        c.fail(f"{name}: wrong bytes (whole file)")
                    else:
                        c.ok(len(got))
                else:
                    for _ in range(8):
                        off = rng.randrange(len(want))
                        n = rng.randint(1, 256 * 1024)
                        got = os.pread(f.fileno(), n, off)
                        if got != want[off : off + n]:
                            c.fail(f"{name}@{off}+{n}: wrong bytes")
                            break
                        c.ok(len(got))
                # Drop the kernel's copy of this file, so that the next read of it
                # comes to the daemon again: the daemon is what is soaked.
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as e:
            c.fail(f"{name}: {e}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def store_url(args: argparse.Namespace, work: Path) -> Iterator[tuple[str, dict[str, str]]]:
    if args.store:
        yield args.store, {}
        return
    from vfs.testing.seaweed import SeaweedServer

    with SeaweedServer() as server:
        env = server.env()
        os.environ.update(env)
        yield f"s3://{server.make_bucket('vfs-soak')}/store", env


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--readers", type=int, default=16)
    p.add_argument("--cache-size", default="64M", help="the mount's --cache-size (default 64M)")
    p.add_argument("--data-mb", type=int, default=512, help="dataset size (default 512)")
    p.add_argument("--store", help="an existing store URL to commit the dataset into")
    p.add_argument("--rss-slack-mb", type=float, default=32.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vfs-soak-"))
    mnt = work / "mnt"
    mnt.mkdir()
    env = {**os.environ, "VFS_CACHE_DIR": str(work / "cache"), "VFS_NO_PROGRESS": "1"}
    try:
        with store_url(args, work) as (url, server_env):
            env.update(server_env)
            env["VFS_STORE"] = url
            t0 = time.monotonic()
            files = make_data(work / "src", args.data_mb, args.seed)
            store = Store.open(url)
            try:
                commit_dir(store, str(work / "src"), "soak", tag="v1", cache_dir=str(work / "wc"))
            finally:
                store.close()
            shutil.rmtree(work / "src")
            print(
                f"soak: {len(files)} files, {sum(map(len, files.values())) / MiB:.0f} MiB committed "
                f"to {url} in {time.monotonic() - t0:.1f} s; {args.readers} readers for "
                f"{args.minutes:g} min, cache {args.cache_size}",
                flush=True,
            )
            cmd = [sys.executable, "-m", "vfs.cli", "mount", "soak@v1", str(mnt)]
            subprocess.run([*cmd, "--cache-size", args.cache_size], env=env, check=True)
            try:
                return soak(args, mnt, files, work)
            finally:
                subprocess.run(
                    [sys.executable, "-m", "vfs.cli", "umount", str(mnt)], env=env, check=False
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def soak(args: argparse.Namespace, mnt: Path, files: dict[str, bytes], work: Path) -> int:
    pid = control.info(str(mnt)).pid
    assert pid is not None
    c = Counters()
    stop = threading.Event()
    threads = [
        threading.Thread(target=reader, args=(mnt, files, args.seed * 1000 + i, stop, c))
        for i in range(args.readers)
    ]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    rss: list[float] = []
    last_bytes = 0
    minute = 0
    print(
        f"{'min':>4} {'reads':>9} {'GiB':>7} {'MB/s':>6} {'errors':>6} {'RSS MiB':>8} "
        f"{'cache MiB':>9} {'evictions':>9} {'fetched GiB':>11} {'retries':>7}",
        flush=True,
    )
    try:
        while minute < args.minutes:
            minute += 1
            time.sleep(max(0.0, t0 + 60 * min(minute, args.minutes) - time.monotonic()))
            with c.lock:
                reads, nbytes, errors = c.reads, c.bytes, len(c.errors)
            rss.append(rss_mib(pid))
            with ChunkCache(work / "cache") as cache:
                s = cache.stats()
            daemon = control.status(str(mnt)).stats
            print(
                f"{minute:>4} {reads:>9} {nbytes / 1024**3:>7.1f} "
                f"{(nbytes - last_bytes) / 60 / 1e6:>6.0f} {errors:>6} {rss[-1]:>8.1f} "
                f"{s.bytes / MiB:>9.1f} {s.evictions:>9} "
                f"{daemon['bytes_fetched'] / 1024**3:>11.2f} {daemon['retries']:>7}",
                flush=True,
            )
            last_bytes = nbytes
    finally:
        stop.set()
        for t in threads:
            t.join()
    third = max(1, len(rss) // 3)
    early, late = max(rss[:third]), max(rss[-third:])
    growth = late - early
    print(
        f"errors: {len(c.errors)}; daemon RSS peak {early:.1f} MiB in the first third, "
        f"{late:.1f} MiB in the last: {growth:+.1f} MiB (allowed {args.rss_slack_mb:g})",
        flush=True,
    )
    for e in c.errors[:20]:
        print(f"  error: {e}")
    if c.errors or growth > args.rss_slack_mb:
        print("soak: FAILED", flush=True)
        return 1
    print("soak: passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
