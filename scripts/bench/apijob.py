"""One run of the Python API over the small-file sample, in a process of its own:
`vfs.open_version` and `Version.read_bytes` from 8 threads (one thread reads in the
calling thread, as the mount's side of the row does), in the sample's (shuffled)
order, optionally with that order handed to `Version.prefetch` first (the hint
`vfs.torch.OrderHintSampler` gives). Prints one JSON line: the seconds of each pass.
The bench's environment names the store (VFS_STORE) and its credentials."""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

import vfs
from vfs.api.order import OrderPrefetch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("spec")
    p.add_argument("--list", required=True, help="paths, one a line, in reading order")
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--hint", action="store_true", help="hand the order to Version.prefetch")
    args = p.parse_args()
    with open(args.list, encoding="utf-8") as f:
        paths = f.read().splitlines()
    version = vfs.open_version(args.spec, cache_dir=args.cache_dir)
    passes = []
    for _ in range(args.passes):
        t0 = time.perf_counter()
        hint = version.prefetch(paths) if args.hint else None

        def read(item: tuple[int, str], hint: OrderPrefetch | None = hint) -> int:
            n = len(version.read_bytes(item[1]))
            if hint is not None:
                hint.note_read(item[0])
            return n

        if args.threads == 1:  # in this thread, as read_files reads the mount's files
            nbytes = sum(map(read, enumerate(paths)))
        else:
            with ThreadPoolExecutor(args.threads) as pool:
                nbytes = sum(pool.map(read, enumerate(paths)))
        passes.append({"files": len(paths), "bytes": nbytes, "seconds": time.perf_counter() - t0})
        if hint is not None:
            hint.stop()
    version.close()
    print(json.dumps({"passes": passes}))


if __name__ == "__main__":
    main()
