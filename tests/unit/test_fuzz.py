"""Hostile input (issue 5, item 7), fuzzed: the decoders and the mount's core.

test_format.py pins the format and throws random bytes behind each magic; here the
decoders get valid objects mutated (truncated, flipped, stretched, counts set huge)
and deep nesting, under bounds of time and memory, and the mount's core gets a hostile
directory page. Forged names, `vfs get` and the command line: tests/fuse/test_hostile.py.
"""

from __future__ import annotations

import contextlib
import tracemalloc
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import forge
from tests.support.core import SHORT_FETCH, listing, read_everything, run_core
from vfs import format as fmt
from vfs import tree
from vfs.errors import CorruptObject, VfsError
from vfs.mount.core import FsCore
from vfs.mount.namespace import ROOT
from vfs.store import Store

KiB = 1024

# --- decoders ----------------------------------------------------------------------------

_names = st.binary(min_size=1, max_size=24).filter(
    lambda n: n not in (b".", b"..") and b"/" not in n and b"\0" not in n
)
_ids = st.binary(min_size=32, max_size=32)


@st.composite
def _entries(draw: st.DrawFn) -> list[fmt.Entry]:
    names = sorted(set(draw(st.lists(_names, min_size=0, max_size=8))))
    out = []
    for name in names:
        kind = draw(st.sampled_from([fmt.FILE, fmt.DIR, fmt.SYMLINK]))
        mode = draw(st.integers(0, 0o7777))
        if kind == fmt.FILE:
            lens = draw(st.lists(st.integers(1, 1 << 20), max_size=3))
            chunks = tuple(fmt.ChunkRef(draw(_ids), n) for n in lens)
            out.append(fmt.Entry(name, kind, mode, 0, sum(lens), chunks=chunks))
        elif kind == fmt.DIR:
            out.append(fmt.Entry(name, kind, mode, 0, 0, tree=draw(_ids), nfiles=1))
        else:
            target = draw(st.binary(min_size=1, max_size=40).filter(lambda t: b"\0" not in t))
            out.append(fmt.Entry(name, kind, mode, 0, len(target), target=target))
    return out


def _leaf_bytes(entries: list[fmt.Entry]) -> bytes:
    return fmt.encode_page(fmt.LEAF, [fmt.encode_entry(e) for e in entries])


def _index_bytes(firsts: list[bytes], ids: list[bytes]) -> bytes:
    return fmt.encode_page(
        fmt.INDEX,
        [
            fmt._encode_index_entry(fmt.IndexEntry(f, i, 1))
            for f, i in zip(sorted(set(firsts)), ids, strict=False)
        ],
    )


@st.composite
def _valid_object(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["leaf", "index", "commit", "locs", "pack index"]))
    if kind == "leaf":
        return kind, _leaf_bytes(draw(_entries()))
    if kind == "index":
        firsts = draw(st.lists(_names, min_size=1, max_size=6))
        return kind, _index_bytes(firsts, draw(st.lists(_ids, min_size=6, max_size=6)))
    if kind == "commit":
        c = fmt.Commit(
            draw(_ids),
            tuple(draw(st.lists(_ids, max_size=2))),
            draw(st.text(max_size=20)),
            "2026-11-26T07:15:00Z",
            draw(st.text(max_size=40)),
            draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)),
        )
        return kind, fmt.encode_commit(c)
    if kind == "locs":
        locs = {
            draw(_ids): fmt.Location(draw(_ids), draw(st.integers(0, 1 << 40)), 10, 0)
            for _ in range(draw(st.integers(0, 4)))
        }
        return kind, fmt.encode_locs(locs)
    entries = [
        fmt.PackEntry(draw(_ids), i * 10, 10, 10, draw(st.sampled_from([0, 1])))
        for i in range(draw(st.integers(0, 4)))
    ]
    return kind, fmt.encode_pack_index(entries)


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    kind, data = draw(_valid_object())
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "huge", "delete"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "truncate":
            del buf[pos:]
        elif op == "flip" and buf:
            buf[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "huge" and len(buf) >= pos + 4:
            # A count or length field stretched to the limit of its type.
            buf[pos : pos + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f"]))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 8))]
    return kind, bytes(buf)


def _exercise(kind: str, data: bytes) -> None:
    """Use a decoded object the way readers do."""
    if kind in ("leaf", "index"):
        page = fmt.TreePage(data)
        if page.kind == fmt.LEAF:
            list(page.entries())
        else:
            page.children()
            page.entries_below()
        for name in (b"a", b"zz", b"\xff" * 3, page.first_name(), page.last_name()):
            i = page.find(name)
            if page.kind == fmt.LEAF and i >= 0:
                page.entry(i)
    elif kind == "commit":
        fmt.decode_commit(data)
    elif kind == "locs":
        fmt.decode_locs(data)
    else:
        fmt.decode_pack_index(data)


@settings(max_examples=400, deadline=2000)
@given(_mutated())
def test_mutated_objects_decode_or_fail_clearly_in_bounded_memory(obj: tuple[str, bytes]) -> None:
    kind, data = obj
    tracemalloc.start()
    try:
        with contextlib.suppress(CorruptObject):
            _exercise(kind, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024 + 64 * len(data), peak


@settings(max_examples=200, deadline=2000)
@given(st.binary(max_size=2048), st.integers(0, 1 << 40))
def test_zstd_frames_and_chunks_are_bounded(data: bytes, declared: int) -> None:
    with contextlib.suppress(CorruptObject):
        fmt.decompress_bounded(data, 4096, "fuzz")
    with contextlib.suppress(CorruptObject):
        fmt.decode_chunk(data, fmt.CODEC_ZSTD, 4096, fmt.chunk_id(b""), "fuzz")
    with contextlib.suppress(CorruptObject):
        fmt.decode_chunk(data, declared % 4, len(data), fmt.chunk_id(data[:-1]), "fuzz")


def test_a_frame_without_a_declared_size_is_cut_at_the_limit() -> None:
    cctx = zstandard.ZstdCompressor(write_content_size=False)
    bomb = cctx.compress(b"\0" * (8 * 1024 * 1024))
    assert zstandard.frame_content_size(bomb) == -1
    tracemalloc.start()
    try:
        with pytest.raises(CorruptObject, match="more than"):
            fmt.decompress_bounded(bomb, 64 * KiB, "bomb")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


def test_deep_nesting_is_refused() -> None:
    # JSON nested past the interpreter's recursion limit: a clear error, not a crash.
    for deep in (b"[" * 100_000, b'{"a":' * 100_000):
        with pytest.raises(CorruptObject):
            fmt.decode_commit(fmt.MAGIC_COMMIT + bytes([fmt.FORMAT_VERSION]) + deep)
    # Index pages over index pages, 20 deep, each consistent with the one above.
    pages: dict[bytes, bytes] = {}
    top = fmt.object_id(canonical := _leaf_bytes([fmt.Entry(b"a", fmt.FILE, 0o644, 0, 0)]))
    pages[top] = canonical
    for _ in range(20):
        canonical = fmt.encode_page(
            fmt.INDEX, [fmt._encode_index_entry(fmt.IndexEntry(b"a", top, 1))]
        )
        top = fmt.object_id(canonical)
        pages[top] = canonical

    class Src:
        def get_page(self, page_id: bytes) -> fmt.TreePage:
            return fmt.TreePage(pages[page_id], page_id)

    with pytest.raises(CorruptObject, match="too deep"):
        list(tree.DirView(Src(), top))
    with pytest.raises(CorruptObject, match="too deep"):
        tree.DirView(Src(), top).lookup(b"a")


def test_a_hostile_store_config_is_refused_clearly(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "store"))
    for bad in (b"[" * 100_000, b"not json", b'{"format": 99}', b"[]"):
        store.backend.put("config", bad)
        with pytest.raises(CorruptObject):
            store.check_config()
        with pytest.raises(CorruptObject):
            store.ensure_config()


# --- the mount's core against a hostile directory page ------------------------------------


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=120, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(obj=_mutated())
def test_the_mount_core_answers_a_hostile_page_with_errors_only(
    fuzz_root: Path, obj: tuple[str, bytes]
) -> None:
    """Whatever bytes a directory's page holds (stored under their own id, so they
    pass verification), the core raises only vfs errors, which the FUSE adapter maps
    to errno values: never an exception that would be a crash (or an ERROR log)."""
    _, data = obj
    store = Store.open(str(fuzz_root / "store"))
    try:
        store.ensure_config()  # first: a writer creates a store only where nothing is
        hostile = store.put_object(data)
        root = forge.leaf(store, [forge.entry(b"d", fmt.DIR, 0o755, tree=hostile)], {})
        cid = store.put_commit(fmt.Commit(root, (), "f", "2026-11-26T07:15:00Z", "m"))
        store.set_branch("fz", "main", cid, store.read_ref("fz", "heads", "main"))

        async def body(core: FsCore) -> None:
            d = await core.lookup(ROOT, b"d")
            for attempt in (
                lambda: listing(core, d.ino),
                lambda: core.lookup(d.ino, b"a"),
                lambda: core.lookup(d.ino, b"\xff\xff"),
                lambda: read_everything(core, d.ino),
            ):
                with contextlib.suppress(VfsError):
                    await attempt()

        run_core(store, "fz@main", body, fetch=SHORT_FETCH)
    finally:
        store.close()
