"""The cold large read's fetch path in process, against a real SeaweedFS.

    python -m scripts.coldfetch [--mib 128] [--reps 3] [--part-mib 8] [--threads 8]

Commits one file of random bytes, then, `--reps` times each, interleaved:
- `boto3`: 8 MiB ranged GETs of the file's packs, `--threads` at a time (the wire,
  nothing verified): the bench's baseline;
- `fetch`: the same spans through reader.ChunkSource.fetch_span (GET, verify, hand
  on; no cache), as the mount's loader runs them, each span verified by its own
  thread (verify_threads=1);
- `fetch+vt`: the same with the default verify_threads (a span's chunks verified
  by the fetch thread and helpers side by side).

For each it prints MB/s (wall clock: noisy on a shared machine) and the CPU seconds
of this process per MiB (user + system, from getrusage: what load does not move;
SeaweedFS runs in its own process and is not counted).

With `--mount N`: only N cold reads of the file through a real mount (`vfs mount`
as users run it, a fresh cache directory each time, page caches dropped), each
reported as MB/s, the daemon's CPU seconds per MiB (utime + stime of the daemon
from /proc/PID/stat) and its minor page faults per MiB (fresh memory it touched).
`--py-spy FILE` records the daemon's last read with py-spy (raw format), `--perf
FILE` with `perf record` and DWARF call graphs (which name the frames under glibc's
memcpy). Run it with PYTHONPATH at the tree to measure: the daemon inherits it.

Then the work after the GET alone, on spans fetched once and kept in memory:
`copy+verify` (each raw chunk copied out of the buffer, then hashed: what
decode_chunk did before views), `verify` (hashed in place: what it does now),
`verify x2` (one span's chunks hashed on two threads) and `mt-hash` (each chunk
hashed by blake3 with max_threads=2).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3

from scripts.procstat import cpu_and_faults
from vfs import format as fmt
from vfs.ops.commit import commit_dir
from vfs.reader import ChunkSource, Span, open_version, plan_ranges
from vfs.store import Store
from vfs.testing.seaweed import SeaweedServer

MiB = 1024 * 1024


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(name: str, nbytes: int, fn: Callable[[], object]) -> tuple[float, float]:
    c0, t0 = _cpu(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    mbs = nbytes / wall / 1e6
    per = cpu / (nbytes / MiB) * 1e3
    print(f"{name:12s} {mbs:8.1f} MB/s  {per:6.2f} ms CPU/MiB  ({wall:.2f} s, {cpu:.2f} s CPU)")
    return mbs, per


def _mounted(work: Path, source: Path, nbytes: int, spy: str, perf: str = "") -> None:
    """One cold read of the file through a fresh mount; prints MB/s and daemon CPU."""
    mnt, cache = work / "mnt", work / "cache"
    mnt.mkdir(parents=True)
    vfs = [sys.executable, "-m", "vfs.cli"]
    out = subprocess.run(
        [*vfs, "mount", "ds@v1", str(mnt), "--cache-dir", str(cache), "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    pid = int(json.loads(out)["pid"])
    recorder = None
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        if spy:
            py_spy = Path(sys.executable).parent / "py-spy"
            cmd = [str(py_spy), "record", "--native", "-f", "raw", "-o", spy, "-p", str(pid)]
            recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        if perf:
            cmd = [
                "perf",
                "record",
                "-F",
                "999",
                "--call-graph",
                "dwarf,16384",
                "-o",
                perf,
                "-p",
                str(pid),
            ]
            recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        (c0, f0), t0 = cpu_and_faults(pid), time.perf_counter()
        with open(mnt / source.name, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass
        wall = time.perf_counter() - t0
        c1, f1 = cpu_and_faults(pid)
        cpu, mib = c1 - c0, nbytes / MiB
        print(
            f"mount {nbytes / wall / 1e6:8.1f} MB/s  {cpu / mib * 1e3:6.2f} ms "
            f"daemon CPU/MiB  {(f1 - f0) / mib:6.1f} faults/MiB  ({wall:.2f} s, {cpu:.2f} s CPU)"
        )
    finally:
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=30)
        subprocess.run([*vfs, "umount", str(mnt)], check=False, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--part-mib", type=int, default=8)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--mount", type=int, default=0, metavar="N")
    ap.add_argument("--py-spy", default="", metavar="FILE")
    ap.add_argument("--perf", default="", metavar="FILE")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="coldfetch-") as tmp, SeaweedServer() as server:
        os.environ.update(server.env())
        bucket = server.make_bucket("coldfetch")
        store = Store.open(f"s3://{bucket}/store")
        src = Path(tmp) / "src"
        src.mkdir()
        (src / "big.bin").write_bytes(os.urandom(args.mib * MiB))
        commit_dir(store, str(src), "ds", tag="v1", cache_dir=str(Path(tmp) / "wc"))
        if args.mount:
            os.environ["VFS_STORE"] = f"s3://{bucket}/store"
            for i in range(args.mount):
                last = i == args.mount - 1
                _mounted(
                    Path(tmp) / f"m{i}",
                    src / "big.bin",
                    args.mib * MiB,
                    args.py_spy if last else "",
                    args.perf if last else "",
                )
            store.close()
            return
        v = open_version("ds@v1", store)
        found = v.stat("big.bin")
        assert found is not None
        wanted = v.wanted(found)
        spans = plan_ranges(wanted, max_range=args.part_mib * MiB)
        total = sum(s.end - s.start for s in spans)
        codecs = {w.loc.codec for w in wanted}
        print(f"{len(wanted)} chunks (codecs {sorted(codecs)}), {len(spans)} spans, {total} bytes")
        serial = ChunkSource(store, verify_threads=1)
        helped = ChunkSource(store)
        key = store.pack_key

        def wire(span: Span) -> int:
            return len(store.backend.get_range(key(span.pack), span.start, span.end - span.start))

        def fetch(span: Span) -> int:
            return len(serial.fetch_span(span, cache=False))

        def fetch_helped(span: Span) -> int:
            return len(helped.fetch_span(span, cache=False))

        def run(fn: Callable[[Span], int]) -> Callable[[], object]:
            def go() -> None:
                with ThreadPoolExecutor(args.threads) as pool:
                    list(pool.map(fn, spans))

            return go

        results: dict[str, list[tuple[float, float]]] = {"boto3": [], "fetch": [], "fetch+vt": []}
        for _ in range(args.reps):
            results["boto3"].append(_timed("boto3", total, run(wire)))
            results["fetch"].append(_timed("fetch", total, run(fetch)))
            results["fetch+vt"].append(_timed("fetch+vt", total, run(fetch_helped)))
        bodies = [
            (span, store.read_pack_range(span.pack, span.start, span.end - span.start))
            for span in spans
        ]

        def pieces(span: Span, body: bytes | memoryview) -> list[tuple[memoryview, bytes]]:
            view = memoryview(body)
            return [
                (view[w.loc.offset - span.start :][: w.loc.stored_length], w.ref.id)
                for w in span.items
            ]

        chunks = [p for span, body in bodies for p in pieces(span, body)]

        def check(piece: tuple[memoryview, bytes]) -> None:
            assert blake3.blake3(piece[0]).digest() == piece[1]

        def copy_verify() -> None:
            for v, cid in chunks:
                assert fmt.chunk_id(bytes(v)) == cid

        def verify() -> None:
            for piece in chunks:
                check(piece)

        def verify2() -> None:
            with ThreadPoolExecutor(2) as pool:
                for span, body in bodies:
                    list(pool.map(check, pieces(span, body)))

        def mt_hash() -> None:
            for v, cid in chunks:
                assert blake3.blake3(v, max_threads=2).digest() == cid

        post = {
            "copy+verify": copy_verify,
            "verify": verify,
            "verify x2": verify2,
            "mt-hash": mt_hash,
        }
        for name in post:
            results[name] = []
        for _ in range(args.reps):
            for name, fn in post.items():
                results[name].append(_timed(name, total, fn))
        print("medians:")
        for name, got in results.items():
            mbs = sorted(m for m, _ in got)[len(got) // 2]
            per = sorted(p for _, p in got)[len(got) // 2]
            print(f"{name:12s} {mbs:8.1f} MB/s  {per:6.2f} ms CPU/MiB")
        store.close()


if __name__ == "__main__":
    main()
