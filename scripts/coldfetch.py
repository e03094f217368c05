"""The cold large read's fetch path in process, against a real SeaweedFS.

    python -m scripts.coldfetch [--mib 128] [--reps 3] [--part-mib 8] [--threads 8]

Commits one file of random bytes, then, `--reps` times each, interleaved:
- `boto3`: 8 MiB ranged GETs of the file's packs, `--threads` at a time (the wire,
  nothing verified): the bench's baseline;
- `fetch_span`: the same spans through reader.ChunkSource.fetch_span (GET, verify,
  hand on; no cache), as the mount's loader runs them.

For each it prints MB/s (wall clock: noisy on a shared machine) and the CPU seconds
of this process per MiB (user + system, from getrusage: what load does not move;
SeaweedFS runs in its own process and is not counted).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--part-mib", type=int, default=8)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="coldfetch-") as tmp, SeaweedServer() as server:
        os.environ.update(server.env())
        bucket = server.make_bucket("coldfetch")
        store = Store.open(f"s3://{bucket}/store")
        src = Path(tmp) / "src"
        src.mkdir()
        (src / "big.bin").write_bytes(os.urandom(args.mib * MiB))
        commit_dir(store, str(src), "ds", tag="v1", cache_dir=str(Path(tmp) / "wc"))
        v = open_version("ds@v1", store)
        found = v.stat("big.bin")
        assert found is not None
        wanted = v.wanted(found)
        spans = plan_ranges(wanted, max_range=args.part_mib * MiB)
        total = sum(s.end - s.start for s in spans)
        codecs = {w.loc.codec for w in wanted}
        print(f"{len(wanted)} chunks (codecs {sorted(codecs)}), {len(spans)} spans, {total} bytes")
        source = ChunkSource(store)
        key = store.pack_key

        def wire(span: Span) -> int:
            return len(store.backend.get_range(key(span.pack), span.start, span.end - span.start))

        def fetch(span: Span) -> int:
            return len(source.fetch_span(span, cache=False))

        def run(fn: Callable[[Span], int]) -> Callable[[], object]:
            def go() -> None:
                with ThreadPoolExecutor(args.threads) as pool:
                    list(pool.map(fn, spans))

            return go

        results: dict[str, list[tuple[float, float]]] = {"boto3": [], "fetch_span": []}
        for _ in range(args.reps):
            results["boto3"].append(_timed("boto3", total, run(wire)))
            results["fetch_span"].append(_timed("fetch_span", total, run(fetch)))
        print("medians:")
        for name, got in results.items():
            mbs = sorted(m for m, _ in got)[len(got) // 2]
            per = sorted(p for _, p in got)[len(got) // 2]
            print(f"{name:12s} {mbs:8.1f} MB/s  {per:6.2f} ms CPU/MiB")
        store.close()


if __name__ == "__main__":
    main()
