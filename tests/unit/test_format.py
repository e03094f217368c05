"""The store format, pinned by golden vectors and fuzzed with hypothesis.

A golden vector changing means the format changed: bump FORMAT_VERSION, write the
change into docs/format.md, and only then update the vector.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfs import format as fmt
from vfs import tree
from vfs.errors import CorruptObject

MTIME = 1_700_000_000_000_000_000
HELLO = fmt.chunk_id(b"hello")


def golden_entries() -> list[fmt.Entry]:
    return [
        fmt.Entry(b"a.txt", fmt.FILE, 0o644, MTIME, 5, chunks=(fmt.ChunkRef(HELLO, 5),)),
        fmt.Entry(b"link", fmt.SYMLINK, 0o777, MTIME, 5, target=b"a.txt"),
        fmt.Entry(b"sub", fmt.DIR, 0o755, MTIME, 5, tree=b"\x11" * 32, nfiles=1),
    ]


GOLDEN_PAGE = (
    "56545245010003000000000000004400000066000000010500612e747874a401000000002a36fe9c9717"
    "050000000000000001000000ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67"
    "200f050000000304006c696e6bff01000000002a36fe9c971705000000000000000500612e7478740203"
    "00737562ed01000000002a36fe9c97170500000000000000111111111111111111111111111111111111"
    "11111111111111111111111111110100000000000000"
)
GOLDEN_PAGE_ID = "39d75d1adc9b888caad0ad21f25c32261f9113a99720e90a56bf49f3d7fa029f"
GOLDEN_COMMIT_ID = "6a1cdc82a19a3d9ee4a21b919438e6def4c505f3328e0c96d334bb6fefc8fb57"
GOLDEN_LOCS = (
    "564c4f43010100000033333333333333333333333333333333333333333333333333333333333333330100"
    "0000ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f00000000000000000000"
    "00000e00000001"
)


def test_chunk_id_is_blake3_256() -> None:
    assert HELLO.hex() == "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"


def test_tree_page_golden() -> None:
    page = fmt.encode_page(fmt.LEAF, [fmt.encode_entry(e) for e in golden_entries()])
    assert page.hex() == GOLDEN_PAGE
    assert fmt.object_id(page).hex() == GOLDEN_PAGE_ID
    decoded = fmt.TreePage(page, fmt.object_id(page))
    assert list(decoded.entries()) == golden_entries()


def test_commit_golden() -> None:
    c = fmt.Commit(
        tree=bytes.fromhex(GOLDEN_PAGE_ID),
        parents=(b"\x22" * 32,),
        author="ann@lab",
        time="2026-11-26T07:15:00Z",
        message="v1: digits",
        meta={"k": "v", "git.rev": "abc"},
        files=1,
        bytes=5,
    )
    raw = fmt.encode_commit(c)
    assert raw.startswith(b'VCMT\x01{"author":"ann@lab","bytes":5,')
    assert fmt.object_id(raw).hex() == GOLDEN_COMMIT_ID
    assert fmt.decode_commit(raw) == c


def test_locs_golden() -> None:
    raw = fmt.encode_locs({HELLO: fmt.Location(b"\x33" * 32, 0, 14, fmt.CODEC_ZSTD)})
    assert raw.hex() == GOLDEN_LOCS
    assert fmt.decode_locs(raw) == {HELLO: fmt.Location(b"\x33" * 32, 0, 14, fmt.CODEC_ZSTD)}


def test_non_canonical_commit_is_rejected() -> None:
    raw = fmt.encode_commit(fmt.Commit(b"\0" * 32, (), "a", "t", "m"))
    spaced = raw.replace(b'"a",', b'"a", ')
    with pytest.raises(CorruptObject):
        fmt.decode_commit(spaced)


def test_other_format_version_is_refused_clearly() -> None:
    page = bytearray(bytes.fromhex(GOLDEN_PAGE))
    page[4] = 9
    with pytest.raises(CorruptObject, match="format version 9"):
        fmt.TreePage(bytes(page))


@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"a\0b", b"x" * 256])
def test_bad_names_rejected_on_encode_and_decode(name: bytes) -> None:
    good = fmt.encode_entry(fmt.Entry(b"n", fmt.FILE, 0o644, 0, 0))
    with pytest.raises(CorruptObject):
        fmt.encode_entry(fmt.Entry(name, fmt.FILE, 0o644, 0, 0))
    # Forge the same entry with the bad name straight into the bytes.
    forged = good[:1] + len(name).to_bytes(2, "little") + name + good[4:]
    with pytest.raises(CorruptObject):  # the whole page is refused as it is loaded
        fmt.TreePage(fmt.encode_page(fmt.LEAF, [forged]))


def test_duplicate_names_rejected_on_read() -> None:
    e = fmt.encode_entry(fmt.Entry(b"same", fmt.FILE, 0o644, 0, 0))
    with pytest.raises(CorruptObject, match="sorted or duplicated"):
        fmt.TreePage(fmt.encode_page(fmt.LEAF, [e, e]))


class MemPages:
    """An in-memory page store for the tree builder and reader."""

    def __init__(self) -> None:
        self.pages: dict[bytes, bytes] = {}
        self.locs: dict[bytes, dict[bytes, fmt.Location]] = {}

    def put_page(self, canonical: bytes) -> bytes:
        oid = fmt.object_id(canonical)
        self.pages[oid] = canonical
        return oid

    def put_locs(self, leaf_id: bytes, locs: dict[bytes, fmt.Location]) -> None:
        self.locs[leaf_id] = locs

    def get_page(self, page_id: bytes) -> fmt.TreePage:
        return fmt.TreePage(self.pages[page_id], page_id)


def _no_loc(cid: bytes) -> fmt.Location:
    return fmt.Location(b"\0" * 32, 0, 0, 0)


def test_large_directory_splits_into_pages_and_looks_up_by_binary_search() -> None:
    mem = MemPages()
    n = 20_000
    entries = [fmt.Entry(f"f{i:06d}".encode(), fmt.FILE, 0o644, 0, 0) for i in range(n)]
    top = tree.write_dir(entries, mem, _no_loc)
    assert fmt.TreePage(mem.pages[top]).kind == fmt.INDEX
    assert len(mem.pages) > 5
    view = tree.DirView(mem, top)
    assert len(view) == n
    assert [f.entry.name for f in view] == [e.name for e in entries]
    for i in (0, 1, 4095, 4096, 12345, n - 1):
        found = view.lookup(f"f{i:06d}".encode())
        assert found is not None and found.entry.name == f"f{i:06d}".encode()
    assert view.lookup(b"f") is None
    assert view.lookup(b"zzz") is None


def test_one_insert_in_a_large_directory_rewrites_few_pages() -> None:
    mem = MemPages()
    entries = [fmt.Entry(f"f{i:06d}".encode(), fmt.FILE, 0o644, 0, 0) for i in range(20_000)]
    tree.write_dir(entries, mem, _no_loc)
    before = set(mem.pages)
    entries.insert(7001, fmt.Entry(b"f007000x", fmt.FILE, 0o644, 0, 0))  # after f007000
    tree.write_dir(entries, mem, _no_loc)
    assert len(set(mem.pages) - before) <= 3  # one leaf, the index page(s) above it


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_decoders_reject_random_bytes_cleanly(data: bytes) -> None:
    for magic in (fmt.MAGIC_TREE, fmt.MAGIC_LOCS, fmt.MAGIC_PACK_INDEX, fmt.MAGIC_COMMIT):
        forged = magic + bytes([fmt.FORMAT_VERSION]) + data
        for decode in (
            lambda b: list(fmt.TreePage(b).entries()),
            fmt.decode_locs,
            fmt.decode_pack_index,
            fmt.decode_commit,
        ):
            with contextlib.suppress(CorruptObject):
                decode(forged)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(bytes.fromhex(GOLDEN_PAGE)) - 1), st.integers(1, 255))
def test_a_flipped_byte_never_decodes_to_the_same_id(pos: int, flip: int) -> None:
    page = bytearray(bytes.fromhex(GOLDEN_PAGE))
    page[pos] ^= flip
    with pytest.raises(CorruptObject):
        fmt.unseal_verified(fmt.seal(bytes(page)), bytes.fromhex(GOLDEN_PAGE_ID), "tree")


def test_zstd_bomb_is_bounded() -> None:
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(b"\0" * (fmt.MAX_OBJECT_BYTES + 1))
    with pytest.raises(CorruptObject):
        fmt.unseal(bomb, "x")
