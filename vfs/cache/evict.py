"""Eviction of the chunk cache: whole cold segments, and the compaction of pinned
chunks out of a segment before it goes. Steps that run inside the write
transaction of their caller (vfs.cache.chunks), on the schema of vfs.cache.index.

Eviction walks the segments coldest first (by the newest use of their chunks,
never-used ones first) and drops each whole until the cache is down to its target:
- a segment a live writer holds (flock, vfs.cache.files) is skipped: it may still
  have chunks to index;
- a segment holding pinned chunks is kept when they are more than half of it (the
  copy would free little), else compacted: its pinned chunks are appended to the
  evicting cache's own segment and their entries pointed there, in the same
  transaction, and then it is dropped. Pins stay on the ids, so they survive;
- the files of dropped segments are unlinked by the caller after the commit.

Concurrency: no state; a write transaction holds LMDB's machine-wide writer lock.
The writer's lock is taken for the compaction's append, under the transaction.
"""

from __future__ import annotations

import lmdb

from vfs.cache.files import SegmentFiles, SegmentWriter
from vfs.cache.index import (
    Counters,
    Entry,
    IndexDbs,
    SegRec,
    drop_segment,
    index_entry,
    parse_seglru_key,
    remove_entry,
    seg_add,
    seg_chunks,
    seg_key,
)

__all__ = ["compact", "evict"]


def evict(
    txn: lmdb.Transaction[bytes],
    dbs: IndexDbs,
    counters: Counters,
    files: SegmentFiles,
    writer: SegmentWriter,
    target: int,
    dropped: list[int],
    only_unused: bool = False,
) -> int:
    """Drop whole segments, coldest first (by the newest use of their chunks), until
    bytes <= target; append each dropped segment to `dropped` (the caller unlinks
    them after the commit). A segment a writer holds is skipped. A segment holding
    pinned chunks is compacted (its pinned chunks copied to `writer`'s segment,
    then dropped) if they are at most half of it, else kept. With `only_unused`,
    only segments of chunks never used are dropped. Returns the bytes freed."""
    freed = 0
    with txn.cursor(db=dbs.seglru) as cur:
        keys = list(cur.iternext(keys=True, values=False))
    for key in keys:
        if counters["bytes"] <= target:
            break
        newest, seg = parse_seglru_key(key)
        raw = txn.get(seg_key(seg), db=dbs.segments)
        rec = SegRec.unpack(raw) if raw is not None else None
        if rec is None or rec.newest != newest:
            txn.delete(key, db=dbs.seglru)  # stale
            continue
        if only_unused and newest:
            break
        if files.in_use(seg):
            continue
        if rec.pinned_bytes:
            if 2 * rec.pinned_bytes > rec.size:
                continue
            compact(txn, dbs, counters, files, writer, seg)
        freed += drop_segment(txn, dbs, counters, seg, "evictions")
        dropped.append(seg)
    return freed


def compact(
    txn: lmdb.Transaction[bytes],
    dbs: IndexDbs,
    counters: Counters,
    files: SegmentFiles,
    writer: SegmentWriter,
    seg: int,
) -> int:
    """Copy the pinned chunks of segment `seg` to the end of `writer`'s segment and
    point their entries there (a pinned chunk that fails its check is left behind,
    to go with the segment). Returns how many were copied. A crash before the
    commit leaves only unindexed bytes in the writer's segment."""
    keep: list[tuple[bytes, Entry]] = []
    datas: list[bytes] = []
    for chunk_id in seg_chunks(txn, dbs, seg):
        raw = txn.get(chunk_id, db=dbs.entries)
        if raw is None:
            continue
        entry = Entry.unpack(raw)
        if not entry.pinned or entry.seg != seg:
            continue
        data, _ = files.read_checked(seg, entry.offset, entry.size, entry.checksum)
        if data is not None:
            keep.append((chunk_id, entry))
            datas.append(data)
    if not keep:
        return 0
    lease = writer.append(datas)
    try:
        seg_add(txn, dbs, counters, lease.seg, size=lease.bytes)
        for (chunk_id, entry), offset in zip(keep, lease.offsets, strict=True):
            remove_entry(txn, dbs, counters, chunk_id, entry)
            index_entry(txn, dbs, counters, chunk_id, entry._replace(seg=lease.seg, offset=offset))
        counters.add("compacted", len(keep))
    finally:
        writer.done(lease)
    return len(keep)
