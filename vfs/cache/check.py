"""Checking and repairing the chunk cache: every chunk against its entry, segment
files without a record, and the segment records, LRU index, pin flags and totals
against the entries.

A crash leaves only what the ordering rules of vfs.cache.index allow: unindexed
bytes at the end of a segment (no error: they go with their segment), and segment
files without a record (a writer killed before its first commit, an eviction killed
between its commit and the unlink). verify() removes the orphans once they are old
enough and no writer holds them (the grace period below), drops entries whose bytes
are bad or gone, and recounts.

Concurrency: verify() runs beside other readers and writers, in this process and
others. It re-hashes from a snapshot of the entries, then confirms each finding
under the writer lock before it acts, since a chunk may have been evicted or
compacted meanwhile; a segment file is removed only when it has no record and no
live writer holds it (flock), so no insert can still name it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import lmdb

from vfs.cache import index as ix
from vfs.cache.files import MISSING, SegmentFiles, age, unlink

__all__ = ["ORPHAN_GRACE_S", "VerifyReport", "remove_orphans", "verify"]

log = logging.getLogger(__name__)

# A writer creates its segment and holds it (flock) at once; a minute also covers a
# file that is neither a segment nor ours, in case its writer is about to rename it.
ORPHAN_GRACE_S = 60.0


@dataclass
class VerifyReport:
    """What verify() found; `repaired` counts the fixes it made."""

    checked: int = 0
    bad: int = 0
    missing_files: int = 0
    orphan_files: int = 0
    repaired: int = 0
    index_errors: int = 0
    segments: int = 0

    @property
    def clean(self) -> bool:
        return not (self.bad or self.missing_files or self.orphan_files or self.index_errors)


def verify(index: ix.Index, files: SegmentFiles, repair: bool, orphan_grace: float) -> VerifyReport:
    """See ChunkCache.verify(); the caller has flushed its pending touches."""
    dbs = index.dbs
    index.env.reader_check()
    report = VerifyReport()
    snapshot = index.run(lambda txn: list(txn.cursor(db=dbs.entries)), write=False)
    snapshot.sort(key=lambda kv: ix.Entry.unpack(kv[1])[:2])  # segment, offset
    for chunk_id, raw in snapshot:
        report.checked += 1
        e = ix.Entry.unpack(raw)
        if files.read_checked(e.seg, e.offset, e.size, e.checksum)[1] is None:
            continue
        # Confirm under the writer lock: it may have been evicted or moved meanwhile.
        reason = ix.drop_if_bad(index, files, chunk_id, drop=repair)
        if reason is None:
            continue
        if reason == MISSING:
            report.missing_files += 1
        else:
            report.bad += 1
        report.repaired += int(repair)
    found, removed = _orphans(index, files, repair, orphan_grace)
    report.orphan_files += found
    report.repaired += removed
    report.index_errors, report.segments = index.run(
        lambda txn: _reconcile(txn, dbs, files, repair), write=repair
    )
    if repair:
        report.repaired += report.index_errors
    if not report.clean:
        log.warning("chunk cache %s: verify found %s", files.root, report)
    return report


def remove_orphans(index: ix.Index, files: SegmentFiles, grace: float) -> int:
    """Remove orphan segments and stray files older than `grace`; how many."""
    return _orphans(index, files, True, grace)[1]


def _orphans(index: ix.Index, files: SegmentFiles, repair: bool, grace: float) -> tuple[int, int]:
    """(found, removed): segment files that no record names and no writer holds, and
    files of segments/ that are no segment, older than `grace` seconds."""
    dbs = index.dbs
    now = time.time()
    segs, other = files.segment_files()
    old = {s: p for s, p in segs.items() if age(p, now) >= grace}

    def unrecorded(txn: lmdb.Transaction[bytes]) -> list[int]:
        return [s for s in old if txn.get(ix.seg_key(s), db=dbs.segments) is None]

    found = removed = 0
    for seg in index.run(unrecorded, write=False):
        if files.in_use(seg):
            continue  # a live writer that has not committed yet
        found += 1
        # No record and no writer: nothing can name it any more, so no lock is needed.
        removed += repair and files.unlink(seg)
    for path in other:
        if age(path, now) >= grace:
            found += 1
            removed += repair and unlink(path)
    return found, removed


def _reconcile(
    txn: lmdb.Transaction[bytes], dbs: ix.IndexDbs, files: SegmentFiles, repair: bool
) -> tuple[int, int]:
    """Check the segment records, segchunks, seglru, pin flags and totals against the
    entries and the segment files; count (and with `repair`, fix) every
    disagreement. Returns (errors, segments)."""
    errors = 0
    totals = dict.fromkeys(("bytes", "entries", "pinned_entries", "pinned_bytes", "segments"), 0)
    live: dict[int, list[int]] = {}  # seg -> [live bytes, live count, pinned bytes, newest]
    expected_chunks: set[bytes] = set()
    for chunk_id, raw in list(txn.cursor(db=dbs.entries)):
        entry = ix.Entry.unpack(raw)
        pinned = txn.get(chunk_id, db=dbs.pinrefs) is not None
        if pinned != entry.pinned:
            errors += 1
            entry = entry.with_pin(pinned)
            if repair:
                txn.put(chunk_id, entry.pack(), db=dbs.entries)
        totals["entries"] += 1
        if pinned:
            totals["pinned_entries"] += 1
            totals["pinned_bytes"] += entry.size
        acc = live.setdefault(entry.seg, [0, 0, 0, 0])
        acc[0] += entry.size
        acc[1] += 1
        acc[2] += entry.size if pinned else 0
        acc[3] = max(acc[3], entry.last_use)
        expected_chunks.add(ix.segchunk_key(entry.seg, chunk_id))
    records = {ix.read_u64(k): ix.SegRec.unpack(v) for k, v in list(txn.cursor(db=dbs.segments))}
    expected_lru: set[bytes] = set()
    for seg in set(records) | set(live):
        rec = records.get(seg)
        acc = live.get(seg, [0, 0, 0, 0])
        on_disk = files.size(seg)
        size = rec.size if rec is not None else 0
        if 0 <= on_disk < size and not files.in_use(seg):
            size = on_disk  # cut short: its chunks past the end fail their checks
        # A longer file is no error: bytes a writer wrote but never indexed (it was
        # killed first). They go with their segment, and `bytes` leaves them out.
        if rec is not None and on_disk < 0 and not acc[1]:
            want = None  # file and chunks gone: the record goes too
        else:
            newest = max(acc[3], rec.newest if rec is not None else 0)
            want = ix.SegRec(size, acc[0], acc[1], acc[2], newest)
        if want != rec:
            errors += 1
            if repair:
                if want is None:
                    txn.delete(ix.seg_key(seg), db=dbs.segments)
                else:
                    txn.put(ix.seg_key(seg), want.pack(), db=dbs.segments)
        if want is not None:
            totals["bytes"] += want.size
            totals["segments"] += 1
            expected_lru.add(ix.seglru_key(want.newest, seg))
    for db, expected in ((dbs.seglru, expected_lru), (dbs.segchunks, expected_chunks)):
        found = set(txn.cursor(db=db).iternext(keys=True, values=False))
        for key in found - expected:
            errors += 1
            if repair:
                txn.delete(key, db=db)
        for key in expected - found:
            errors += 1
            if repair:
                txn.put(key, b"", db=db)
    counters = ix.Counters(txn, dbs.counters)
    for name, value in totals.items():
        if counters[name] != value:
            log.warning(
                "chunk cache %s: counter %s was %d, recounted %d",
                files.root,
                name,
                counters[name],
                value,
            )
            errors += 1
            counters.set(name, value)
    if repair:
        counters.save()
    return errors, totals["segments"]
