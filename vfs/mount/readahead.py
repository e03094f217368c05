"""Readahead: sequential detection and the window of one open file.

This module owns the per-file readahead state. A read that starts where the previous
one ended (within SEQUENTIAL_SLACK, since the kernel answers its own readahead with
concurrent, slightly reordered requests) doubles the window, from `readahead_min` to
`readahead_max`; any other read resets it, so random access fetches only what it
reads. The window ahead of the reader is asked for in bites of at least half a
window, which the loader (vfs/mount/loader.py, Loader.readahead) fetches within its
in-flight budget as a few large GETs. While the file's reads come from the machine's
cache (`cached`), the window ahead is at most `cache_ahead`: a local read needs
little lead, and a short one keeps the buffers of the chunks read ahead few, so that
they are reused (vfs/cache/buffers.py) rather than fresh memory.

Concurrency: a Readahead belongs to one open file and is touched only on the trio
thread.
"""

from __future__ import annotations

from vfs.mount.loader import FetchConfig, MiB

# Reads within this distance of where the last one ended still count as sequential.
SEQUENTIAL_SLACK = 4 * MiB


class Readahead:
    """Sequential detection and the readahead window of one open file."""

    __slots__ = ("_cfg", "cached", "issued_to", "next_offset", "window")

    def __init__(self, config: FetchConfig) -> None:
        self._cfg = config
        self.next_offset = 0
        self.window = 0
        self.issued_to = 0
        self.cached = False  # the file's last read came from the machine's cache

    def advise(self, offset: int, end: int, size: int) -> tuple[int, int] | None:
        """Note a read of [offset, end) of a file of `size` bytes; return the byte
        range to fetch ahead of it, if any."""
        if abs(offset - self.next_offset) <= SEQUENTIAL_SLACK:
            self.window = min(
                max(self.window * 2, self._cfg.readahead_min), self._cfg.readahead_max
            )
            self.next_offset = max(self.next_offset, end)
        else:
            self.window = 0
            self.issued_to = 0
            self.next_offset = end
            return None
        window = min(self.window, self._cfg.cache_ahead) if self.cached else self.window
        start = max(self.next_offset, self.issued_to)
        stop = min(self.next_offset + window, size)
        if stop - start < min(window // 2, self._cfg.part_bytes) and stop < size:
            return None  # ahead enough: fetch in big bites, not one per read
        if stop <= start:
            return None
        self.issued_to = stop
        return start, stop
