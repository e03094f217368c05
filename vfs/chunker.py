"""Content-defined chunking of files (FastCDC 2020, compiled, via pyfastcdc).

The parameters are part of the store format in spirit: changing them does not break
reading, but chunks cut with other parameters no longer dedup against old ones. The
choice is argued, with measurements, in docs/format.md ("Chunking").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyfastcdc

# pyfastcdc's mean chunk is avg_size + min_size (cut-point skipping), so these give
# chunks of 256 KiB to 4 MiB with a mean near 768 KiB.
MIN_SIZE = 256 * 1024
AVG_SIZE = 512 * 1024
MAX_SIZE = 4 * 1024 * 1024

PARAMS = {"algorithm": "fastcdc2020", "min": MIN_SIZE, "avg": AVG_SIZE, "max": MAX_SIZE}


def _cdc() -> pyfastcdc.FastCDC:
    # Imported here: the store reads PARAMS, and a mount daemon, which never cuts
    # chunks, would otherwise load pyfastcdc (17 ms) on its way to a live mount.
    import pyfastcdc

    return pyfastcdc.FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)


def chunk_file(path: str | bytes, size: int) -> Iterator[memoryview | bytes]:
    """The chunks of a file, in order. A file no larger than MIN_SIZE is one chunk,
    read directly; larger files are cut through an mmap (so a sparse 1 GiB file costs
    no 1 GiB of memory). The memoryviews are valid until the next chunk is taken."""
    if size == 0:
        return
    if size <= MIN_SIZE:
        with open(path, "rb") as f:
            data = f.read()
        if len(data) != size:
            raise OSError(f"{os.fsdecode(path)} changed size while being read")
        yield data
        return
    total = 0
    for c in _cdc().cut_file(path):
        total += c.length
        yield c.data
    if total != size:
        raise OSError(f"{os.fsdecode(path)} changed size while being read")


def chunk_bytes(data: bytes) -> Iterator[memoryview | bytes]:
    if len(data) <= MIN_SIZE:
        if data:
            yield data
        return
    for c in _cdc().cut_buf(data):
        yield c.data
