"""Measure FastCDC parameter choices: dedup after a small edit vs metadata size vs speed.

For each (min, avg, max) it chunks a 128 MiB file of incompressible data, edits
1 MiB in the middle, appends 4 MiB, and chunks it again. It reports the bytes a
second version must store, the metadata per GiB of data (tree entry + location per
chunk) and the chunk+hash throughput. The figures in docs/format.md come from here.

    python scripts/chunk_params.py
"""

from __future__ import annotations

import os
import time

import blake3
import pyfastcdc

MiB = 1024 * 1024
PER_CHUNK_META = 36 + 53  # tree entry (id + length) + location (docs/format.md)
CANDIDATES = [
    (16 * 1024, 32 * 1024, 256 * 1024),
    (64 * 1024, 128 * 1024, 1 * MiB),
    (128 * 1024, 256 * 1024, 2 * MiB),
    (256 * 1024, 512 * 1024, 4 * MiB),
    (512 * 1024, 1 * MiB, 8 * MiB),
    (1 * MiB, 2 * MiB, 16 * MiB),
]


def chunks(data: bytes, mn: int, avg: int, mx: int) -> list[bytes]:
    cdc = pyfastcdc.FastCDC(avg, min_size=mn, max_size=mx)
    return [
        blake3.blake3(c.data).digest() + len(c.data).to_bytes(8, "little")
        for c in cdc.cut_buf(data)
    ]


def main() -> None:
    rng = os.urandom
    v1 = rng(128 * MiB)
    mid = len(v1) // 2
    edited = v1[:mid] + rng(MiB) + v1[mid + MiB :]
    v2 = edited + rng(4 * MiB)
    print(
        f"{'min':>6} {'avg':>6} {'max':>6} | {'mean chunk':>10} {'1 MiB edit':>10} "
        f"{'+4 MiB app':>10} {'overhead':>9} {'meta/GiB':>9} {'MB/s':>6}"
    )
    for mn, avg, mx in CANDIDATES:
        t0 = time.perf_counter()
        a = chunks(v1, mn, avg, mx)
        secs = time.perf_counter() - t0
        old = set(a)

        def stored(
            data: bytes, old: set[bytes] = old, mn: int = mn, avg: int = avg, mx: int = mx
        ) -> int:
            return sum(
                int.from_bytes(c[32:], "little")
                for c in set(chunks(data, mn, avg, mx))
                if c not in old
            )

        edit_bytes = stored(edited)
        new_bytes = stored(v2)
        mean = len(v1) / len(a)
        meta = PER_CHUNK_META * (1024 * MiB / mean)
        print(
            f"{mn // 1024:>5}K {avg // 1024:>5}K {mx // 1024:>5}K | {mean / 1024:>8.0f}Ki "
            f"{edit_bytes / MiB:>8.2f}Mi {new_bytes / MiB:>8.2f}Mi {new_bytes / (5 * MiB):>8.2f}x {meta / 1024:>7.0f}Ki "
            f"{len(v1) / secs / 1e6:>6.0f}"
        )


if __name__ == "__main__":
    main()
