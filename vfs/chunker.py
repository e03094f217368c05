"""Content-defined chunking of files (FastCDC 2020, compiled, via pyfastcdc).

The parameters are part of the store format in spirit: changing them does not break
reading, but chunks cut with other parameters no longer dedup against old ones. The
choice is argued, with measurements, in docs/format.md ("Chunking").
"""

from __future__ import annotations

import io
import os
import threading
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


class ChangedWhileRead(OSError):
    """The file moved between the stat it was committed under and the end of its read."""


def _signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def chunk_file(path: str | bytes, st: os.stat_result) -> Iterator[memoryview | bytes]:
    """The chunks of the file `st` describes, in order. A file no larger than MIN_SIZE
    is one chunk, read directly; larger files are read in blocks into a buffer of the
    calling thread and cut there. The memoryviews are valid until the next chunk is
    taken.

    Raises ChangedWhileRead once the file is read if its size, mtime, ctime or inode is
    no longer what `st` says: a file written in place while it is read would otherwise
    be stored as a mix of old and new bytes under the old stat (tar says "file changed
    as we read it"; the size alone misses writes that keep it)."""
    size = st.st_size
    if size == 0:
        return
    with open(path, "rb", buffering=0) as f:
        if size <= MIN_SIZE:
            data = f.read()
            total = len(data)
            yield data
        else:
            total = 0
            for c in _cut(f):
                total += len(c)
                yield c
        after = os.fstat(f.fileno())
    if total != size or _signature(after) != _signature(st):
        raise ChangedWhileRead(f"{os.fsdecode(path)} changed while being read")


# A file larger than MIN_SIZE is read in blocks of READ_BLOCK into one buffer per
# thread, not through an mmap (pyfastcdc's cut_file): a file truncated while mapped
# kills the process with SIGBUS on the next page touched, and a checkpoint rewritten
# by `torch.save` during a commit is truncated first. The copy from the page cache
# costs ~0.25 ms a MiB more than mapping it (a 512 MiB file: 0.26-0.32 s mapped,
# 0.32-0.37 s read; 400 files of 0.3-1.5 MB: 0.13-0.18 s, 0.24-0.25 s).
READ_BLOCK = 16 * 1024 * 1024  # well above MAX_SIZE: a carried chunk is moved once
_local = threading.local()


def _cut(f: io.RawIOBase) -> Iterator[memoryview]:
    """FastCDC's chunks of a file read in blocks, the same as cutting it whole: a cut
    found inside a block is where a cut of the whole file falls (it depends only on
    the bytes from the chunk's start to the cut), so only the last chunk of a block,
    which may end at the block's end for want of bytes, is carried into the next."""
    block: memoryview | None = getattr(_local, "block", None)
    if block is None or len(block) != READ_BLOCK:
        block = _local.block = memoryview(bytearray(READ_BLOCK))
    cdc = _cdc()
    held = 0  # bytes carried at the block's start
    eof = False
    while not eof:
        fill = held
        while fill < len(block):
            n = f.readinto(block[fill:])
            if not n:
                eof = True
                break
            fill += n
        if not fill:
            return
        start = fill
        for c in cdc.cut_buf(block[:fill]):
            if not eof and c.offset + c.length == fill:
                start = c.offset
                break
            yield c.data
        held = fill - start
        block[:held] = block[start:fill]  # a chunk is at most MAX_SIZE: no overlap


def chunk_bytes(data: bytes) -> Iterator[memoryview | bytes]:
    if len(data) <= MIN_SIZE:
        if data:
            yield data
        return
    for c in _cdc().cut_buf(data):
        yield c.data
