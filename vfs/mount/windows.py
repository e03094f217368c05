"""Pack windows: how much of a pack a cold miss fetches beside the chunks it needs.

This module owns the per-pack policy of the loader's window fetches (the fetching
itself is the loader's, vfs/mount/loader.py). Packs hold files' chunks in path
order, so the bytes around a missing chunk are other files of the same directory.
A miss may fetch an aligned window of its pack instead of its own bytes: one GET
then brings many files, and an epoch in any order costs about dataset bytes / window
GETs instead of one GET per file. Bytes fetched that nobody reads are the price, so
the window of each pack follows two signals:

- demand density: the distinct chunks of the pack asked for (misses, plus chunks
  fetched alongside that were later asked for), as a fraction of its chunk count.
  Below DENSITY (1/16) a miss fetches only what it needs: a few random files of a
  large version cost no more than their own bytes. A shuffled epoch passes it early
  in every pack, and then the pack is being swept.
- use of what was fetched alongside: a window starts at `min_bytes` and doubles at
  each later miss in the pack (up to `max_bytes`) while the chunks fetched alongside
  are asked for at least half as often as the pack's chunks in general (for a
  uniform shuffle the two rates are equal); otherwise it halves, to `min_bytes`.

And one bound over all packs, which makes the over-fetch bound hold whatever the
access pattern: bytes fetched alongside and not asked for yet never exceed the bytes
asked for (misses and credited chunks) plus CREDIT_FACTOR times the credited bytes.
A reader who reads random files, and so rarely reads what came alongside, fetches at
most about twice what it reads; a sweep, which reads what came alongside, earns
windows as fast as it reads them.

Both tables are bounded: packs by MAX_PACKS, the ids of chunks fetched alongside and
not yet asked for by MAX_SPECULATIVE (oldest forgotten first: a chunk asked for
after that long earns no credit, which only makes windows smaller).

Concurrency: used only on the trio thread, by the loader.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

# A pack is windowed once this fraction of its chunks has been asked for.
DENSITY = 1 / 16
# A pack's index is loaded (one GET per pack, then kept) once this many of its
# chunks missed: one file read from a pack never pays for it.
INDEX_AFTER_MISSES = 2
MAX_PACKS = 4096
# Outstanding speculative bytes allowed per byte of speculation that was read.
CREDIT_FACTOR = 16
MAX_SPECULATIVE = 64 * 1024  # ~150 bytes each: at most ~10 MB
# Chunks one window may take, whatever its bytes: a window of tiny files (a pack of
# 50,000 11-byte files is 3 MiB) would otherwise have every miss look up tens of
# thousands of chunks in the cache, tens of ms of the trio thread per file read.
MAX_WINDOW_CHUNKS = 256


class _Pack:
    __slots__ = ("asked", "fetched", "used", "window")

    def __init__(self) -> None:
        self.asked = 0  # distinct chunks asked for: misses and credited chunks
        self.fetched = 0  # chunks fetched alongside
        self.used = 0  # of those, asked for later
        self.window = 0  # bytes of the last window; 0 = not windowed yet


class PackWindows:
    """The window policy of one mount, per pack."""

    def __init__(self, min_bytes: int, max_bytes: int) -> None:
        self.min_bytes = min_bytes
        self.max_bytes = max(min_bytes, max_bytes)
        self._packs: OrderedDict[bytes, _Pack] = OrderedDict()
        # chunk id -> (pack, stored bytes), of chunks fetched alongside, not asked for
        self._speculative: OrderedDict[bytes, tuple[bytes, int]] = OrderedDict()
        self.asked_bytes = 0  # stored bytes of misses and credited chunks
        self.used_bytes = 0  # of those, credited: fetched alongside, then asked for
        self.outstanding_bytes = 0  # fetched alongside, not asked for (yet)

    def _pack(self, pack: bytes) -> _Pack:
        st = self._packs.get(pack)
        if st is None:
            st = self._packs[pack] = _Pack()
            if len(self._packs) > MAX_PACKS:
                self._packs.popitem(last=False)
        else:
            self._packs.move_to_end(pack)
        return st

    def asked(self, chunk_id: bytes) -> None:
        """A reader asked for a chunk: credit its pack if a window brought it."""
        hit = self._speculative.pop(chunk_id, None)
        if hit is not None:
            pack, n = hit
            self.asked_bytes += n
            self.used_bytes += n
            self.outstanding_bytes -= n
            st = self._packs.get(pack)
            if st is not None:
                st.used += 1
                st.asked += 1

    def missed(self, pack: bytes, n: int, nbytes: int) -> bool:
        """`n` chunks (`nbytes` stored bytes) of `pack` missed; whether its index is
        worth loading."""
        self.asked_bytes += nbytes
        st = self._pack(pack)
        st.asked += n
        return st.asked >= INDEX_AFTER_MISSES

    def size(self, pack: bytes, nchunks: int) -> int:
        """Bytes of the window for a miss in `pack` (of `nchunks` chunks); 0 to fetch
        only what is needed. Called once per window fetch: it adapts the window."""
        st = self._pack(pack)
        if st.asked < nchunks * DENSITY:
            return 0
        if st.window == 0:
            st.window = self.min_bytes
        elif st.fetched and st.used * 2 * nchunks >= st.fetched * st.asked:
            # used/fetched >= density/2: what came alongside is read like the rest.
            st.window = min(st.window * 2, self.max_bytes)
        else:
            st.window = max(st.window // 2, self.min_bytes)
        return st.window

    def allowance(self) -> int:
        """Bytes a window may fetch now under the bound over all packs."""
        return self.asked_bytes + CREDIT_FACTOR * self.used_bytes - self.outstanding_bytes

    def fetched(self, pack: bytes, chunks: Iterable[tuple[bytes, int]]) -> None:
        """Chunks (id, stored bytes) of `pack` came alongside the ones asked for."""
        st = self._pack(pack)
        spec = self._speculative
        for cid, n in chunks:
            st.fetched += 1
            self.outstanding_bytes += n
            spec[cid] = (pack, n)
        # Forgotten ones stay outstanding: a credit lost only makes windows smaller.
        while len(spec) > MAX_SPECULATIVE:
            spec.popitem(last=False)

    def state(self, pack: bytes) -> tuple[int, int, int, int] | None:
        """(asked, fetched, used, window) of a pack, for tests and diagnostics."""
        st = self._packs.get(pack)
        return None if st is None else (st.asked, st.fetched, st.used, st.window)
