"""`vfs prefetch`: warm the machine's chunk cache with files of a version.

This module owns the bulk warming of the cache: the files a list of paths names, in
order, and the ranged GETs that fetch their chunks that the cache lacks. It is a
plain thread pool, not trio: it runs in its own process (the mount's fetcher, which
reads on demand, is vfs.mount's).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vfs import tree
from vfs.errors import NotFound, UsageError
from vfs.reader import ChunkSource, Version, Wanted, plan_ranges

if TYPE_CHECKING:
    from vfs.reader import Span

MiB = 1024 * 1024
# `vfs prefetch`: a round trip costs about as much as reading this many bytes at full
# bandwidth, so a gap this small between wanted chunks is read rather than skipped,
# and a densely wanted pack is read whole.
WARM_GAP = 4 * MiB
WARM_RANGE = 64 * MiB


@dataclass
class WarmResult:
    """What `warm` did: files and chunks named, those already cached, the fetching."""

    files: int = 0
    chunks: int = 0
    bytes: int = 0  # of those chunks
    already_cached: int = 0
    bytes_fetched: int = 0
    requests: int = 0
    seconds: float = 0.0
    missing_paths: list[str] = field(default_factory=list)


def files_in_order(version: Version, paths: Iterable[str]) -> Iterable[tree.Found]:
    """The files named by `paths` in the order given; a directory stands for every
    file below it in name order; '' is the whole version."""
    for path in paths:
        found = version.stat(path)
        if found is None or found.entry.is_dir:
            for _, f in version.walk(path):
                if f.entry.is_file:
                    yield f
        elif found.entry.is_file:
            yield found


def warm(
    version: Version,
    paths: Iterable[str],
    *,
    jobs: int = 8,
    on_total: Callable[[int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> WarmResult:
    """Put every chunk of the files named by `paths` into the version's cache,
    fetching in the order the paths come (the order a sampler will read them)."""
    cache = version.chunks.cache
    if cache is None:
        raise UsageError("prefetch needs a chunk cache")
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {jobs}")
    t0 = time.monotonic()
    res = WarmResult()
    order: dict[bytes, int] = {}
    todo: list[Wanted] = []
    for found in files_in_order(version, paths):
        res.files += 1
        for w in version.wanted(found):
            if w.ref.id in order:
                continue
            order[w.ref.id] = len(order)
            res.bytes += w.ref.length
            if cache.contains(w.ref.id):
                res.already_cached += 1
            else:
                todo.append(w)
    res.chunks = len(order)
    if on_total is not None:
        on_total(sum(w.ref.length for w in todo))
    spans = plan_ranges(todo, max_gap=WARM_GAP, max_range=WARM_RANGE)
    spans.sort(key=lambda s: min(order[w.ref.id] for w in s.items))
    source = ChunkSource(version.store, cache)

    def fetch(span: Span) -> int:
        try:
            got = source.fetch_span(span)  # verified and cached; the bytes are dropped here
        except NotFound:  # its pack is gone (gc repacked it): fresh locations, once
            got = source.fetch(span.items)
        n = sum(len(v) for v in got.values())
        if on_bytes is not None:
            on_bytes(n)
        return n

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="vfs-prefetch") as pool:
        for _ in pool.map(fetch, spans):
            pass
    res.requests = source.requests
    res.bytes_fetched = source.bytes_fetched
    res.seconds = time.monotonic() - t0
    return res


def read_list(path: str) -> list[str]:
    """A prefetch list: one path per line, in reading order; blank lines and lines
    starting with '#' are skipped. '-' reads standard input."""
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            raise NotFound(f"no such list file: {path}") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
