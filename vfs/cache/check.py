"""Checking and repairing the chunk cache: every chunk file against its entry, files
without an entry, and the LRU index, pin flags and totals against the entries.

A crash leaves only what the ordering rules of vfs.cache.index allow: temp files and
renamed files without an entry, and entries whose file is gone. verify() removes the
first two once they are old enough to belong to no running put (the grace periods
below), drops the third, and recounts.

Concurrency: verify() runs beside other readers and writers, in this process and
others. It re-hashes from a snapshot of the entries, then confirms each finding
under the writer lock before it acts, since a chunk may have been evicted or healed
meanwhile; files are unlinked only under the writer lock, so no insert can claim one
as it goes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import lmdb

from vfs.cache import index as ix
from vfs.cache.files import MISSING, ChunkFiles, age, unlink
from vfs.cache.layout import parse_chunk_path

__all__ = ["ORPHAN_GRACE_S", "TEMP_GRACE_S", "VerifyReport", "verify"]

log = logging.getLogger(__name__)

# A renamed file gets its entry milliseconds later; a minute covers any stall.
ORPHAN_GRACE_S = 60.0
# No put of 8 MiB takes an hour; an older temp file belongs to a dead process.
TEMP_GRACE_S = 3600.0


@dataclass
class VerifyReport:
    """What verify() found; `repaired` counts the fixes it made."""

    checked: int = 0
    bad: int = 0
    missing_files: int = 0
    orphan_files: int = 0
    repaired: int = 0
    stale_temp_files: int = 0
    index_errors: int = 0

    @property
    def clean(self) -> bool:
        return not (self.bad or self.missing_files or self.orphan_files or self.index_errors)


def verify(
    index: ix.Index, files: ChunkFiles, repair: bool, orphan_grace: float, temp_grace: float
) -> VerifyReport:
    """See ChunkCache.verify(); the caller has flushed its pending touches."""
    dbs = index.dbs
    index.env.reader_check()
    report = VerifyReport()
    snapshot = index.run(lambda txn: list(txn.cursor(db=dbs.entries)), write=False)
    for chunk_id, raw in snapshot:
        report.checked += 1
        entry = ix.Entry.unpack(raw)
        if files.read_checked(chunk_id, entry.size, entry.checksum)[1] is None:
            continue
        # Confirm under the writer lock: it may have been evicted or healed meanwhile.
        reason = ix.drop_if_bad(index, files, chunk_id, drop=repair)
        if reason is None:
            continue
        if reason == MISSING:
            report.missing_files += 1
        else:
            report.bad += 1
        report.repaired += int(repair)
    _collect_orphans(index, files, report, repair, orphan_grace, temp_grace)
    report.index_errors = index.run(
        lambda txn: _reconcile(txn, dbs, files.root, repair), write=repair
    )
    if repair:
        report.repaired += report.index_errors
    if not report.clean:
        log.warning("chunk cache %s: verify found %s", files.root, report)
    return report


def _collect_orphans(
    index: ix.Index,
    files: ChunkFiles,
    report: VerifyReport,
    repair: bool,
    orphan_grace: float,
    temp_grace: float,
) -> None:
    dbs = index.dbs
    now = time.time()
    for path in files.temp_files():
        if age(path, now) >= temp_grace:
            report.stale_temp_files += 1
            if repair and unlink(path):
                report.repaired += 1
    candidates = [p for p in files.chunk_files() if age(p, now) >= orphan_grace]

    def fn(txn: lmdb.Transaction[bytes]) -> tuple[int, int]:
        found = removed = 0
        for path in candidates:
            chunk_id = parse_chunk_path(path)
            if chunk_id is not None and txn.get(chunk_id, db=dbs.entries) is not None:
                continue
            if age(path, now) < orphan_grace:
                continue  # gone, or a put renamed a new file here since the scan
            found += 1
            # Unlinked under the writer lock, so no insert can claim it meanwhile.
            removed += repair and unlink(path)
        return found, removed

    found, removed = index.run(fn, write=repair)
    report.orphan_files += found
    report.repaired += removed


def _reconcile(txn: lmdb.Transaction[bytes], dbs: ix.IndexDbs, root: str, repair: bool) -> int:
    """Check the LRU index, pin flags and totals against the entries; count (and
    with `repair`, fix) every disagreement."""
    errors = 0
    totals = dict.fromkeys(("bytes", "entries", "pinned_entries", "pinned_bytes"), 0)
    expected_lru: set[bytes] = set()
    for chunk_id, raw in list(txn.cursor(db=dbs.entries)):
        entry = ix.Entry.unpack(raw)
        pinned = txn.get(chunk_id, db=dbs.pinrefs) is not None
        if pinned != entry.pinned:
            errors += 1
            entry = entry.with_pin(pinned)
            if repair:
                txn.put(chunk_id, entry.pack(), db=dbs.entries)
        totals["bytes"] += entry.size
        totals["entries"] += 1
        if pinned:
            totals["pinned_entries"] += 1
            totals["pinned_bytes"] += entry.size
        else:
            expected_lru.add(ix.lru_key(entry.last_use, chunk_id))
    found_lru = set(txn.cursor(db=dbs.lru).iternext(keys=True, values=False))
    for key in found_lru - expected_lru:
        errors += 1
        if repair:
            txn.delete(key, db=dbs.lru)
    for key in expected_lru - found_lru:
        errors += 1
        if repair:
            txn.put(key, b"", db=dbs.lru)
    counters = ix.Counters(txn, dbs.counters)
    for name, value in totals.items():
        if counters[name] != value:
            log.warning(
                "chunk cache %s: counter %s was %d, recounted %d",
                root,
                name,
                counters[name],
                value,
            )
            errors += 1
            counters.set(name, value)
    if repair:
        counters.save()
    return errors
