"""Forging versions: hostile trees written straight into a store, past every check.

The committer never writes a bad name, a duplicate or an odd mode, so tests that need
one in the store build it here from the format's own pieces: real chunks in real
packs, pages whose entries are spliced together byte by byte, locations, a commit and
a tag. What a reader then does with it is the test (tests/support/core.py reads a
version through the mount's core, without FUSE).
"""

from __future__ import annotations

from pathlib import Path

from vfs import format as fmt
from vfs.packer import PackWriter
from vfs.store import Store

MTIME = 1_700_000_000_000_000_000


def upload(store: Store, spool: Path, datas: list[bytes]) -> dict[bytes, fmt.Location]:
    """Chunks into a pack (raw), with its index: chunk id -> location."""
    store.ensure_config()  # first: a writer creates a store only where nothing is
    spool.mkdir(parents=True, exist_ok=True)
    w = PackWriter(store, spool_dir=str(spool))
    for d in datas:
        w.add(fmt.chunk_id(d), len(d), fmt.CODEC_RAW, d)
    w.close()
    return dict(w.locations)


def entry(
    name: bytes,
    kind: int = fmt.FILE,
    mode: int = 0o644,
    data: bytes = b"",
    tree: bytes = b"",
    target: bytes = b"",
) -> bytes:
    """One encoded entry with any name at all: encoded under a harmless name, then
    the name spliced in (encode_entry would refuse it)."""
    if kind not in (fmt.DIR, fmt.SYMLINK):  # a file, or an unknown kind forged from one
        chunks = (fmt.ChunkRef(fmt.chunk_id(data), len(data)),) if data else ()
        e = fmt.Entry(b"x", fmt.FILE, mode, MTIME, len(data), chunks=chunks)
    elif kind == fmt.DIR:
        e = fmt.Entry(b"x", fmt.DIR, mode, MTIME, 0, tree=tree)
    else:
        e = fmt.Entry(b"x", fmt.SYMLINK, mode, MTIME, len(target), target=target)
    good = fmt.encode_entry(e)
    if kind not in (fmt.FILE, fmt.DIR, fmt.SYMLINK):
        good = bytes([kind]) + good[1:]
    return good[:1] + len(name).to_bytes(2, "little") + name + good[4:]


def leaf(store: Store, entries: list[bytes], locs: dict[bytes, fmt.Location]) -> bytes:
    """A leaf page of these encoded entries (in the order given), with locations
    for every chunk in `locs`; returns its id."""
    store.ensure_config()
    canonical = fmt.encode_page(fmt.LEAF, entries)
    page_id = store.put_object(canonical)
    store.put_locs(page_id, locs)
    return page_id


def index(store: Store, children: list[tuple[bytes, bytes, int]]) -> bytes:
    """An index page over (first name, child page id, entries below); returns its id."""
    store.ensure_config()
    enc = [fmt._encode_index_entry(fmt.IndexEntry(f, p, n)) for f, p, n in children]
    return store.put_object(fmt.encode_page(fmt.INDEX, enc))


def version(store: Store, dataset: str, tag: str, root: bytes) -> bytes:
    """A commit of tree `root`, tagged; returns the commit id."""
    store.ensure_config()
    cid = store.put_commit(
        fmt.Commit(root, (), "forger@test", "2026-11-26T07:15:00Z", "forged", files=1, bytes=1)
    )
    store.create_tag(dataset, tag, cid)
    return cid
