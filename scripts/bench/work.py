"""The benchmark's workloads: what a row does to a competitor while the clock runs.

Each returns the seconds (or the figure) of exactly the part being compared:
- `dd_read`: `dd if=FILE of=/dev/null bs=1M`, timed by dd itself (from open to the
  last byte), so process start-up is not in a figure measured in milliseconds;
- `read_files`: open, read to the end and close each file, from N threads;
- `find_all`: `find MNT`, wall time, and how many entries it printed;
- `s3_get_single` / `s3_get_ranges`: boto3 reads of a plain object into nothing;
- `s3_download_all`: boto3 bulk download of a plain copy to local files, large
  objects in 8 MiB ranges, all in one thread pool;
- `DvcRepo`: a git + DVC repository with an S3 remote, for the DVC rows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .env import PY, ROOT, Bench, Unavailable

MiB = 1024 * 1024
RANGE = 8 * MiB
READ_TIMEOUT = 300.0  # a wedged mount fails the figure instead of hanging the bench
_DD_TIME = re.compile(rb"copied, ([0-9.eE+-]+) s")


def dd_read(path: Path) -> tuple[float, int]:
    """(seconds, bytes) of reading `path` with dd in 1 MiB blocks."""
    try:
        p = subprocess.run(
            ["dd", f"if={path}", "of=/dev/null", "bs=1M"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=READ_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"dd {path} took over {READ_TIMEOUT:g} s") from None
    if p.returncode != 0:
        raise RuntimeError(f"dd {path}: {p.stderr.decode(errors='replace').strip()}")
    m = _DD_TIME.search(p.stderr)
    n = re.match(rb"(\d+) bytes", p.stderr.splitlines()[-1])
    if m is None or n is None:
        raise RuntimeError(f"cannot parse dd's report: {p.stderr!r}")
    return float(m.group(1)), int(n.group(1))


def _read_one(path: str, buf: bytearray) -> int:
    n = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        view = memoryview(buf)
        while True:
            got = os.readv(fd, [view])
            if got == 0:
                return n
            n += got
    finally:
        os.close(fd)


def read_files(paths: Sequence[str], threads: int) -> tuple[float, int]:
    """(seconds, bytes) of reading every file in `paths` (in that order, shared by
    `threads` readers taking the next file from one queue)."""
    it = iter(paths)
    lock = threading.Lock()
    counts = [0] * threads

    def worker(k: int) -> None:
        buf = bytearray(MiB)
        while True:
            with lock:
                path = next(it, None)
            if path is None:
                return
            counts[k] += _read_one(path, buf)

    t0 = time.perf_counter()
    if threads == 1:
        worker(0)
    else:
        with ThreadPoolExecutor(threads) as pool:
            for f in [pool.submit(worker, k) for k in range(threads)]:
                f.result()
    return time.perf_counter() - t0, sum(counts)


def find_all(root: Path) -> tuple[float, int]:
    """(seconds, entries) of `find ROOT`."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            ["find", str(root)], capture_output=True, stdin=subprocess.DEVNULL, timeout=1800
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"find {root} took over 1800 s") from None
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"find {root}: {p.stderr.decode(errors='replace').strip()[-300:]}")
    return dt, p.stdout.count(b"\n")


def _drain(body: Any) -> int:
    n = 0
    while True:
        data = body.read(MiB)
        if not data:
            return n
        n += len(data)


def s3_get_single(client: Any, bucket: str, key: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = _drain(client.get_object(Bucket=bucket, Key=key)["Body"])
    return time.perf_counter() - t0, n


def s3_get_ranges(
    client: Any, bucket: str, key: str, size: int, threads: int = 8
) -> tuple[float, int]:
    def part(off: int) -> int:
        rng = f"bytes={off}-{min(off + RANGE, size) - 1}"
        return _drain(client.get_object(Bucket=bucket, Key=key, Range=rng)["Body"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        n = sum(pool.map(part, range(0, size, RANGE)))
    return time.perf_counter() - t0, n


def s3_download_all(
    client: Any, bucket: str, prefix: str, out: Path, threads: int = 16
) -> tuple[float, int]:
    """(seconds, bytes) of downloading every object under prefix into `out`,
    listing included; objects above 8 MiB go as 8 MiB ranges."""
    t0 = time.perf_counter()
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix.rstrip("/") + "/"
    ):
        objects += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
    tasks: list[tuple[str, int, int, str]] = []
    made: set[str] = set()
    for key, size in objects:
        path = str(out / key[len(prefix) :].lstrip("/"))
        d = os.path.dirname(path)
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        with open(path, "wb") as f:
            f.truncate(size)
        tasks += [(key, off, min(off + RANGE, size), path) for off in range(0, max(size, 1), RANGE)]

    def fetch(task: tuple[str, int, int, str]) -> int:
        key, start, end, path = task
        if end <= start:
            return 0
        body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")["Body"]
        data = body.read()
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, start)
        finally:
            os.close(fd)
        return len(data)

    with ThreadPoolExecutor(threads) as pool:
        n = sum(pool.map(fetch, tasks))
    return time.perf_counter() - t0, n


# --- PyTorch -------------------------------------------------------------------------------


def torch_job(bench: Bench, job: str, *args: object) -> dict[str, Any]:
    """Run one job of scripts/bench/torchjobs.py in a new process; its JSON answer."""
    import importlib.util

    for mod in ("torch", "s3torchconnector", "PIL"):
        if importlib.util.find_spec(mod) is None:
            raise Unavailable(f"{mod} is not installed (make bench-deps)")
    cmd = [PY, "-m", "scripts.bench.torchjobs", job, *map(str, args)]
    p = bench.run(cmd, cwd=ROOT)
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    assert isinstance(doc, dict)
    return doc


# --- DVC ----------------------------------------------------------------------------------


@dataclass
class DvcRepo:
    """A git repository with DVC initialised, an S3 remote, analytics and update
    checks off, tracking `data/`."""

    bench: Bench
    path: Path

    @classmethod
    def init(cls, bench: Bench, remote: str) -> DvcRepo:
        assert bench.dvc is not None
        repo = cls(bench, bench.fresh("dvc-repo"))
        repo.git("init", "-q")
        repo.dvc("init", "-q")
        repo.dvc("config", "core.analytics", "false")
        repo.dvc("config", "core.check_update", "false")
        repo.dvc("remote", "add", "-d", "store", f"s3://{remote}")
        repo.dvc("remote", "modify", "store", "endpointurl", bench.seaweed.endpoint)
        repo.git("add", "-A")
        repo.git("commit", "-qm", "dvc init")
        return repo

    def git(self, *args: str) -> str:
        return self.bench.run(["git", *args], cwd=self.path).stdout

    def dvc(self, *args: str) -> str:
        assert self.bench.dvc is not None
        return self.bench.run([self.bench.dvc, *args], cwd=self.path).stdout

    def dvc_cmd(self, *args: str) -> list[str]:
        assert self.bench.dvc is not None
        return [self.bench.dvc, *args]

    @property
    def data(self) -> Path:
        return self.path / "data"
