"""Repack: move the live chunks of mostly-dead packs into new packs, under gc's lock.

A live pack older than the grace period whose live bytes (the chunks some live leaf
page's locations place in it) are under `below` of its size has those chunks read,
verified, and written into new packs by vfs/packer.py (each pack, then its index:
the store's write order). Then every live leaf page's locations object that placed a
chunk there is rewritten to the new places. Locations are part of no id, so no page,
commit or version id changes. The old pack is then unreached and gc sweeps it.

Interrupted at any point, nothing is lost: locations are rewritten only after every
new pack and index is stored, each rewrite is one atomic put, and until the sweep
both the old and the new place hold the chunk.

Readers that hold old locations (a running mount, the machine's metadata cache) get
NotFound for the old pack and fetch the locations again (vfs/reader.py).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from typing import TYPE_CHECKING

from vfs import format as fmt
from vfs import packer
from vfs.backends.base import ObjectInfo
from vfs.errors import CorruptObject
from vfs.store import Store

if TYPE_CHECKING:
    from vfs.leases import GcLock
    from vfs.ops.gc import GcReport, Marker

log = logging.getLogger(__name__)


def candidates(
    store: Store, marker: Marker, listing: dict[str, ObjectInfo], cutoff: float, below: float
) -> list[bytes]:
    """The live packs worth repacking: older than the cutoff, live share under `below`."""
    out = []
    for pack in sorted(marker.packs):
        info = listing.get(store.pack_key(pack))
        if info is None or info.mtime >= cutoff or info.size <= 0:
            continue  # too young, or written after the listing
        live = sum(loc.stored_length for loc in marker.pack_chunks.get(pack, {}).values())
        if live >= below * info.size:
            continue
        # The share is of the chunk bytes, not of the pack: a small pack's index
        # trailer would otherwise make it look dead, and rewriting it would write it
        # again as it is.
        stored = sum(e.stored_length for e in store.get_pack_index(pack))
        if live < below * stored:
            out.append(pack)
    return out


def repack(
    store: Store,
    marker: Marker,
    listing: dict[str, ObjectInfo],
    cutoff: float,
    below: float,
    report: GcReport,
    dry_run: bool,
    lock: GcLock | None,
) -> None:
    """Repack the candidates; afterwards they are no longer in `marker.packs`."""
    old = candidates(store, marker, listing, cutoff, below)
    if not old:
        return
    chosen = set(old)
    moved = sum(
        loc.stored_length for pack in old for loc in marker.pack_chunks.get(pack, {}).values()
    )
    leaves = sorted(leaf for leaf, packs in marker.leaf_packs.items() if packs & chosen)
    report.packs_repacked = len(old)
    report.bytes_rewritten = moved
    report.locs_rewritten = len(leaves)
    if dry_run:
        marker.packs -= chosen
        return

    spool = tempfile.mkdtemp(prefix="vfs-gc-spool-")
    try:
        writer = packer.PackWriter(store, spool_dir=spool)
        closed = False
        try:
            for pack in old:
                try:
                    live = _read_live(store, pack, marker.pack_chunks.get(pack, {}))
                except CorruptObject as e:
                    # Its live bytes are damaged: moving them would spread the damage
                    # and stopping would keep gc from ever sweeping. It stays as it
                    # is, named for `vfs verify`; the rest of gc goes on.
                    log.info("not repacking %s: %s", store.pack_key(pack), e)
                    report.damaged_packs.append(store.pack_key(pack))
                    report.bytes_rewritten -= sum(
                        loc.stored_length for loc in marker.pack_chunks.get(pack, {}).values()
                    )
                    chosen.discard(pack)
                    continue
                for cid, raw_length, codec, stored in live:
                    writer.add(cid, raw_length, codec, stored)
            writer.close()
            closed = True
        finally:
            if not closed:
                writer.abort()
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    report.packs_written = writer.packs_written
    # A pack written again with the same chunks has the same name (its id is the hash
    # of its bytes): it is the old pack, which must stay.
    chosen -= {loc.pack for loc in writer.locations.values()}
    old = [p for p in old if p in chosen]
    report.packs_repacked = len(old)

    # Every new pack and its index are stored: now the locations may point there.
    leaves = sorted(leaf for leaf, packs in marker.leaf_packs.items() if packs & chosen)
    report.locs_rewritten = len(leaves)
    for leaf in leaves:
        if lock is not None:
            lock.check()
        locs = store.fetch_locs(leaf)
        new = {
            cid: (writer.locations.get(cid, loc) if loc.pack in chosen else loc)
            for cid, loc in locs.items()
        }
        if any(loc.pack in chosen for loc in new.values()):
            raise AssertionError(f"repack left a chunk of leaf {leaf.hex()[:16]} behind")
        store.replace_locs(leaf, new)
        marker.leaf_packs[leaf] = frozenset(loc.pack for loc in new.values())
        for cid, loc in new.items():
            marker.pack_chunks.setdefault(loc.pack, {})[cid] = loc
            marker.packs.add(loc.pack)
    marker.packs -= chosen
    for pack in old:
        marker.pack_chunks.pop(pack, None)
    log.info(
        "repacked %d packs into %d (%d live bytes moved, %d locations rewritten)",
        len(old),
        writer.packs_written,
        moved,
        len(leaves),
    )


def _read_live(
    store: Store, pack: bytes, live: dict[bytes, fmt.Location]
) -> list[tuple[bytes, int, int, bytes | memoryview]]:
    """The live chunks of `pack` (id, raw length, codec, stored bytes), each verified,
    in the order they lie in the pack (files stay together); CorruptObject if one is
    damaged. All are read before any is written: a damaged pack adds nothing. Its
    live share is under the repack threshold, so they are at most that share of a
    pack in memory."""
    out = []
    entries = {e.id: e for e in store.get_pack_index(pack)}
    what = f"pack {pack.hex()[:16]}"
    for cid, loc in sorted(live.items(), key=lambda kv: kv[1].offset):
        e = entries.get(cid)
        if e is None or e.offset != loc.offset or e.stored_length != loc.stored_length:
            raise CorruptObject(
                f"{what}: its index does not list chunk {cid.hex()[:16]} where the "
                "locations place it; run vfs verify"
            )
        stored = store.read_pack_range(pack, loc.offset, loc.stored_length)
        fmt.decode_chunk(stored, loc.codec, e.raw_length, cid, what)  # verify before moving
        out.append((cid, e.raw_length, loc.codec, stored))
    return out
