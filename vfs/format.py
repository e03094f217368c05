"""The store format: the one place where objects become bytes and bytes become objects.

Every stored object has canonical bytes `MAGIC(4) VERSION(1) BODY`. Content-addressed
objects (tree pages, commits) are named by BLAKE3-256 of those bytes; what goes over
the wire is a zstd frame of them. docs/format.md is the specification; the golden
vectors in tests/unit/test_format.py pin it. Change nothing here without bumping
FORMAT_VERSION and writing the change into docs/format.md.

Decoders treat their input as hostile: every length is checked against what is left,
every count against a limit, and any violation raises CorruptObject, never IndexError,
struct.error or MemoryError.
"""

from __future__ import annotations

import io
import json
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import blake3
import xxhash
import zstandard

from vfs.errors import CorruptObject

FORMAT_VERSION = 1

MAGIC_TREE = b"VTRE"
MAGIC_COMMIT = b"VCMT"
MAGIC_LOCS = b"VLOC"
MAGIC_PACK_INDEX = b"VPIX"
MAGIC_ACCESS = b"VACR"
PACK_TRAILER = b"VFSPACK1"

ID_LEN = 32

# Entry kinds.
FILE = 1
DIR = 2
SYMLINK = 3
KIND_NAMES = {FILE: "file", DIR: "dir", SYMLINK: "symlink"}

# Chunk codecs inside packs.
CODEC_RAW = 0
CODEC_ZSTD = 1

# Tree pages: a directory with up to LEAF_SPLIT_AT entries is one leaf page. A larger
# one is cut into leaves at names whose hash hits PAGE_BOUNDARY_MASK (content-defined,
# so inserting one name changes one leaf and the index above it), never more than
# MAX_PAGE_ENTRIES a page, and indexed by index pages cut the same way.
LEAF_SPLIT_AT = 4096
PAGE_BOUNDARY_MASK = 1023
MAX_PAGE_ENTRIES = 8192

MAX_NAME_LEN = 255
MAX_SYMLINK_LEN = 4095
# Decoders refuse anything bigger: a bound on the memory a hostile object can cost.
MAX_OBJECT_BYTES = 512 * 1024 * 1024
MAX_CHUNK_BYTES = 64 * 1024 * 1024

_ENTRY_HEAD = struct.Struct("<BH")  # kind, name length
_ENTRY_ATTR = struct.Struct("<IqQ")  # mode, mtime_ns, size
_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_CHUNK_REF = struct.Struct("<32sI")
_DIR_TAIL = struct.Struct("<32sQ")
_INDEX_TAIL = struct.Struct("<32sQ")
_LOC = struct.Struct("<32sIQIB")  # chunk id, pack number, offset, stored length, codec
_PACK_ENTRY = struct.Struct("<32sQIIB")  # chunk id, offset, stored length, raw length, codec


# A chunk's verified bytes: a bytes object, or a read-only view of the buffer a GET
# (or a cache read) returned, which the view keeps alive.
ChunkBytes = bytes | memoryview


def object_id(canonical: bytes) -> bytes:
    """The address of a content-addressed object: BLAKE3-256 of its canonical bytes."""
    return blake3.blake3(canonical).digest()


def chunk_id(data: bytes | memoryview) -> bytes:
    """The address of a chunk: BLAKE3-256 of its raw (uncompressed) bytes."""
    return blake3.blake3(data).digest()


def check_name(name: bytes) -> None:
    """A directory entry name as POSIX allows it in one path component."""
    if not name or name in (b".", b".."):
        raise CorruptObject(f"invalid entry name {name!r}")
    if len(name) > MAX_NAME_LEN:
        raise CorruptObject(f"entry name longer than {MAX_NAME_LEN} bytes: {name[:40]!r}...")
    if b"/" in name or b"\0" in name:
        raise CorruptObject(f"entry name contains '/' or NUL: {name!r}")


# --- envelope: compression on the wire -------------------------------------------------


def seal(canonical: bytes) -> bytes:
    """The bytes stored for a metadata object. A ZstdCompressor is not thread-safe
    (sharing one across the commit's threads crashes), so each call makes its own."""
    return zstandard.ZstdCompressor(level=3).compress(canonical)


def decompress_bounded(stored: bytes | memoryview, limit: int, what: str) -> bytes:
    """zstd-decompress at most `limit` bytes. A frame that declares or yields more is
    refused before it costs the memory: zstandard's own max_output_size is ignored
    when the frame header states a content size, so we stream instead."""
    try:
        declared = zstandard.frame_content_size(stored)
        if declared > limit:
            raise CorruptObject(f"{what}: declares {declared} bytes, more than the {limit} allowed")
        if declared >= 0:  # the fast path: every frame vfs writes states its size
            out: bytes = zstandard.ZstdDecompressor().decompress(stored)
            if len(out) != declared:
                raise CorruptObject(f"{what}: frame does not hold the size it declares")
            return out
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)) as r:
            out = r.read(limit + 1)
    except zstandard.ZstdError as e:
        raise CorruptObject(f"{what}: not a valid zstd frame ({e})") from None
    if len(out) > limit:
        raise CorruptObject(f"{what}: decompresses to more than the {limit} bytes allowed")
    return out


def unseal(stored: bytes, what: str) -> bytes:
    """Inverse of seal, bounded: a hostile frame cannot make us allocate without limit."""
    return decompress_bounded(stored, MAX_OBJECT_BYTES, what)


def unseal_verified(stored: bytes, expected_id: bytes, what: str) -> bytes:
    """Decompress a content-addressed object and check it against its address."""
    canonical = unseal(stored, what)
    if object_id(canonical) != expected_id:
        raise CorruptObject(f"{what}: content does not match its id {expected_id.hex()}")
    return canonical


def _header(magic: bytes) -> bytes:
    return magic + bytes([FORMAT_VERSION])


def _body(data: bytes, magic: bytes, what: str) -> memoryview:
    if len(data) < 5 or data[:4] != magic:
        raise CorruptObject(f"{what}: not a {magic.decode()} object")
    if data[4] != FORMAT_VERSION:
        raise CorruptObject(
            f"{what}: format version {data[4]} is not supported (this vfs reads {FORMAT_VERSION})"
        )
    return memoryview(data)[5:]


class _Reader:
    """A bounds-checked cursor over a buffer."""

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: memoryview, what: str, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos
        self.what = what

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise CorruptObject(f"{self.what}: truncated")
        view = self.buf[self.pos : end]
        self.pos = end
        return view

    def unpack(self, st: struct.Struct) -> tuple[Any, ...]:
        end = self.pos + st.size
        if end > len(self.buf):
            raise CorruptObject(f"{self.what}: truncated")
        out = st.unpack_from(self.buf, self.pos)
        self.pos = end
        return out

    def u32(self) -> int:
        return int(self.unpack(_U32)[0])

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise CorruptObject(f"{self.what}: {len(self.buf) - self.pos} trailing bytes")


# --- tree pages -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChunkRef:
    id: bytes
    length: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a directory. `size` is the file's length, a symlink's target length,
    or a directory's total file bytes; `nfiles` counts files below a directory."""

    name: bytes
    kind: int
    mode: int
    mtime_ns: int
    size: int
    chunks: tuple[ChunkRef, ...] = ()
    tree: bytes = b""
    nfiles: int = 0
    target: bytes = b""

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR

    @property
    def is_file(self) -> bool:
        return self.kind == FILE

    @property
    def is_symlink(self) -> bool:
        return self.kind == SYMLINK


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One child page of an index page: its first name and how many entries it holds."""

    first: bytes
    page: bytes
    count: int


def encode_entry(e: Entry) -> bytes:
    check_name(e.name)
    parts = [
        _ENTRY_HEAD.pack(e.kind, len(e.name)),
        e.name,
        _ENTRY_ATTR.pack(e.mode, e.mtime_ns, e.size),
    ]
    if e.kind == FILE:
        parts.append(_U32.pack(len(e.chunks)))
        parts.extend(_CHUNK_REF.pack(c.id, c.length) for c in e.chunks)
    elif e.kind == DIR:
        parts.append(_DIR_TAIL.pack(e.tree, e.nfiles))
    elif e.kind == SYMLINK:
        if len(e.target) > MAX_SYMLINK_LEN or not e.target or b"\0" in e.target:
            raise CorruptObject(f"invalid symlink target for {e.name!r}")
        parts.append(_U16.pack(len(e.target)))
        parts.append(e.target)
    else:
        raise CorruptObject(f"unknown entry kind {e.kind}")
    return b"".join(parts)


def _decode_entry(r: _Reader) -> Entry:
    """An entry of a leaf page. Its name is not checked here: TreePage checks every
    name of a page once, when it loads it."""
    kind, name_len = r.unpack(_ENTRY_HEAD)
    name = bytes(r.take(name_len))
    mode, mtime_ns, size = r.unpack(_ENTRY_ATTR)
    if kind == FILE:
        (n,) = r.unpack(_U32)
        raw = r.take(n * _CHUNK_REF.size)
        chunks = tuple([ChunkRef(i, ln) for i, ln in _CHUNK_REF.iter_unpack(raw)])
        if sum([c.length for c in chunks]) != size:
            raise CorruptObject(f"{r.what}: chunk lengths of {name!r} do not add up to its size")
        return Entry(name, FILE, mode, mtime_ns, size, chunks=chunks)
    if kind == DIR:
        tree, nfiles = r.unpack(_DIR_TAIL)
        return Entry(name, DIR, mode, mtime_ns, size, tree=tree, nfiles=nfiles)
    if kind == SYMLINK:
        (tlen,) = r.unpack(_U16)
        target = bytes(r.take(tlen))
        if not target or b"\0" in target:
            raise CorruptObject(f"{r.what}: invalid symlink target for {name!r}")
        return Entry(name, SYMLINK, mode, mtime_ns, size, target=target)
    raise CorruptObject(f"{r.what}: unknown entry kind {kind}")


def _encode_index_entry(e: IndexEntry) -> bytes:
    return _U16.pack(len(e.first)) + e.first + _INDEX_TAIL.pack(e.page, e.count)


def _decode_index_entry(r: _Reader) -> IndexEntry:
    (n,) = r.unpack(_U16)
    first = bytes(r.take(n))
    page, count = r.unpack(_INDEX_TAIL)
    return IndexEntry(first, page, count)


LEAF = 0
INDEX = 1


def encode_page(kind: int, encoded_entries: Sequence[bytes]) -> bytes:
    """A tree page from entries already encoded and sorted by name."""
    offsets = []
    pos = 0
    for e in encoded_entries:
        offsets.append(pos)
        pos += len(e)
    return b"".join(
        [
            _header(MAGIC_TREE),
            _U8.pack(kind),
            _U32.pack(len(encoded_entries)),
            struct.pack(f"<{len(offsets)}I", *offsets),
            *encoded_entries,
        ]
    )


class TreePage:
    """A decoded-on-demand view of one tree page.

    The offset table lets `lookup` binary-search the raw bytes, decoding only the
    O(log n) names it compares and the one entry it returns: a page is parsed once,
    never per lookup.
    """

    __slots__ = ("_below", "_entries_at", "_offsets", "_view", "_what", "count", "id", "kind")

    def __init__(self, canonical: bytes, page_id: bytes = b"") -> None:
        what = f"tree {page_id.hex()[:16]}" if page_id else "tree"
        body = _body(canonical, MAGIC_TREE, what)
        r = _Reader(body, what)
        (kind,) = r.unpack(_U8)
        if kind not in (LEAF, INDEX):
            raise CorruptObject(f"{what}: unknown page kind {kind}")
        count = r.u32()
        if count > MAX_PAGE_ENTRIES * 4096:
            raise CorruptObject(f"{what}: {count} entries is past any limit")
        # An array, not a tuple of ints: 4 bytes an entry instead of about 36, and a
        # mount keeps many pages (vfs/mount/inodes.py).
        offsets = array("I")
        offsets.frombytes(r.take(4 * count))
        if sys.byteorder == "big":
            offsets.byteswap()
        self.id = page_id
        self._what = what
        self.kind = kind
        self.count = count
        self._view = body
        self._entries_at = r.pos
        self._offsets = offsets
        self._below = -1
        size = len(body) - r.pos
        prev = -1
        for off in offsets:
            if off <= prev or off >= size:
                raise CorruptObject(f"{what}: entry offsets out of order or out of range")
            prev = off
        if kind == INDEX and count == 0:
            raise CorruptObject(f"{what}: an index page without children")
        # Names are checked here, once per page, not per lookup: a page whose names are
        # invalid, unsorted or duplicated is refused whole, so that no reader (lookup,
        # readdir, walk, get) ever sees two entries of one name or a name like "..".
        # A tight loop: it runs for every entry of every page a reader loads.
        skip = r.pos + (1 if kind == LEAF else 0)  # a leaf entry starts with its kind
        end = len(body)
        unpack = _U16.unpack_from
        prev_name = b""
        for i, off in enumerate(offsets):
            at = skip + off
            if at + 2 > end:
                raise CorruptObject(f"{what}: truncated")
            n = unpack(body, at)[0]
            name = bytes(body[at + 2 : at + 2 + n])
            if len(name) != n:
                raise CorruptObject(f"{what}: truncated")
            if n > MAX_NAME_LEN or name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
                check_name(name)  # raises, with the reason
            if i and name <= prev_name:
                raise CorruptObject(f"{what}: names not sorted or duplicated")
            prev_name = name

    def _reader(self, i: int) -> _Reader:
        return _Reader(self._view, self._what, self._entries_at + self._offsets[i])

    def _name_at(self, i: int) -> bytes:
        r = self._reader(i)
        if self.kind == LEAF:
            _, n = r.unpack(_ENTRY_HEAD)
        else:
            (n,) = r.unpack(_U16)
        return bytes(r.take(n))

    def entry(self, i: int) -> Entry:
        r = self._reader(i)
        e = _decode_entry(r)
        end = self._offsets[i + 1] if i + 1 < self.count else len(self._view) - self._entries_at
        if r.pos - self._entries_at != end:
            raise CorruptObject(f"{r.what}: entry {i} has the wrong length")
        return e

    def stat(self, i: int) -> tuple[int, bytes, int, int, int]:
        """Entry i of a leaf as (kind, name, mode, mtime_ns, size): its head only, not
        its chunk list, tree or target, which `entry` decodes and checks. For a
        listing, which shows every entry of a page and nothing more: decoding whole
        entries was three quarters of the mount's CPU per listed entry. Whatever
        uses an entry (lookup, getattr, open, readlink) goes through `entry`."""
        r = self._reader(i)
        kind, n = r.unpack(_ENTRY_HEAD)
        if kind != FILE and kind != DIR and kind != SYMLINK:
            raise CorruptObject(f"{r.what}: unknown entry kind {kind}")
        name = bytes(r.take(n))
        mode, mtime_ns, size = r.unpack(_ENTRY_ATTR)
        return kind, name, mode, mtime_ns, size

    def raw_entry(self, i: int) -> memoryview:
        """Entry i's canonical bytes (a leaf's: what encode_entry gives for it)."""
        start = self._entries_at + self._offsets[i]
        end = self._entries_at + self._offsets[i + 1] if i + 1 < self.count else len(self._view)
        return self._view[start:end]

    def subdir_trees(self) -> list[bytes]:
        """The tree ids of a leaf's directories, read without decoding entries. A
        hint for reading ahead: what it names is fetched by id and checked as any
        page is."""
        if self.kind != LEAF:
            return []
        out = []
        view, base = self._view, self._entries_at
        for off in self._offsets:
            at = base + off
            if view[at] == DIR:
                tree_at = (
                    at + _ENTRY_HEAD.size + _U16.unpack_from(view, at + 1)[0] + _ENTRY_ATTR.size
                )
                tree = bytes(view[tree_at : tree_at + 32])
                if len(tree) == 32:
                    out.append(tree)
        return out

    def nbytes(self) -> int:
        """About what this page holds in memory: its bytes and its offset table."""
        return len(self._view) + 4 * self.count + 200

    def index_entry(self, i: int) -> IndexEntry:
        return _decode_index_entry(self._reader(i))

    def first_name(self) -> bytes:
        return self._name_at(0) if self.count else b""

    def last_name(self) -> bytes:
        return self._name_at(self.count - 1) if self.count else b""

    def entries_below(self) -> int:
        """Entries of the directory under this page: its own for a leaf, the sum of
        its children's counts for an index page."""
        if self.kind == LEAF:
            return self.count
        if self._below < 0:
            self._below = sum(self.index_entry(i).count for i in range(self.count))
        return self._below

    def check_child(self, i: int, child: TreePage, upper: bytes | None) -> bytes | None:
        """Check that `child`, reached through entry i of this index page, holds what
        the entry promises: the same first name, as many entries, and names below
        the next child's first name (or below `upper`, this page's own bound).
        Returns the child's upper bound. Each page checks its own names (sorted,
        unique); this check extends that across the pages of a directory, so a
        forged index cannot make one name appear twice."""
        e = self.index_entry(i)
        bound = self._name_at(i + 1) if i + 1 < self.count else upper
        what = f"tree {self.id.hex()[:16]}"
        if child.count == 0 or child.first_name() != e.first:
            raise CorruptObject(f"{what}: child {i} does not start with the name the index gives")
        if bound is not None and child.last_name() >= bound:
            raise CorruptObject(f"{what}: child {i} overlaps the next child")
        if child.entries_below() != e.count:
            raise CorruptObject(f"{what}: child {i} does not hold the count the index gives")
        return bound

    def __len__(self) -> int:
        return self.count

    def entries(self) -> Iterator[Entry]:
        """Every entry of a leaf page, in name order, each checked to be sorted."""
        prev = b""
        for i in range(self.count):
            e = self.entry(i)
            if i and e.name <= prev:
                raise CorruptObject(f"tree {self.id.hex()[:16]}: names not sorted or duplicated")
            prev = e.name
            yield e

    def children(self) -> list[IndexEntry]:
        return [self.index_entry(i) for i in range(self.count)]

    def find(self, name: bytes) -> int:
        """For a leaf: the position of `name` or -1. For an index page: the child that
        would hold `name` (-1 if it sorts before every child)."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self._name_at(mid) <= name:
                lo = mid + 1
            else:
                hi = mid
        pos = lo - 1
        if self.kind == LEAF and (pos < 0 or self._name_at(pos) != name):
            return -1
        return pos


# --- commits -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    tree: bytes
    parents: tuple[bytes, ...]
    author: str
    time: str  # RFC 3339, UTC, whole seconds: 2026-11-26T07:15:00Z
    message: str
    meta: dict[str, str] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0


def encode_commit(c: Commit) -> bytes:
    doc = {
        "tree": c.tree.hex(),
        "parents": [p.hex() for p in c.parents],
        "author": c.author,
        "time": c.time,
        "message": c.message,
        "meta": dict(c.meta),
        "files": c.files,
        "bytes": c.bytes,
    }
    body = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _header(MAGIC_COMMIT) + body.encode()


def decode_commit(canonical: bytes, what: str = "commit") -> Commit:
    body = _body(canonical, MAGIC_COMMIT, what)
    try:
        doc = json.loads(bytes(body))
        c = Commit(
            tree=_hex32(doc["tree"]),
            parents=tuple(_hex32(p) for p in doc["parents"]),
            author=str(doc["author"]),
            time=str(doc["time"]),
            message=str(doc["message"]),
            meta={str(k): str(v) for k, v in doc["meta"].items()},
            files=int(doc["files"]),
            bytes=int(doc["bytes"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        # RecursionError: JSON nested thousands deep; json.loads does not bound depth.
        raise CorruptObject(f"{what}: malformed ({e})") from None
    if encode_commit(c) != canonical:
        raise CorruptObject(f"{what}: not in canonical form")
    return c


# --- access records ------------------------------------------------------------------------

ACCESS_FORMAT = "vfs-access/1"
_HEX64 = frozenset("0123456789abcdef")


def check_access(doc: object) -> dict[str, dict[str, list[tuple[int, int]]]]:
    """The versions of an access record's document, checked (vfs/access.py has the
    format): raises ValueError, TypeError, KeyError or AttributeError if malformed."""
    if not isinstance(doc, dict) or doc.get("format") != ACCESS_FORMAT:
        raise ValueError(f"format is not {ACCESS_FORMAT!r}")
    out: dict[str, dict[str, list[tuple[int, int]]]] = {}
    for version, files in doc["versions"].items():
        dataset, _, commit = version.rpartition("@")
        if not dataset or len(commit) != 2 * ID_LEN or not set(commit) <= _HEX64:
            raise ValueError(f"version {version!r} is not DATASET@<64 hex digits>")
        out[version] = {}
        for path, ranges in files.items():
            if not isinstance(path, str) or not path or path.startswith("/"):
                raise ValueError(f"bad path {path!r}")
            pairs = []
            last = -1
            for start, end in ranges:
                ints = type(start) is int and type(end) is int
                if not (ints and last < start < end):  # after a range ending at e: > e
                    raise ValueError(f"{path}: ranges not sorted, merged and half-open")
                last = end
                pairs.append((start, end))
            out[version][path] = pairs
    return out


def encode_access(versions: dict[str, dict[str, list[tuple[int, int]]]]) -> bytes:
    """An access record as a stored object: its document, sorted, compact, ASCII
    (a name that is not UTF-8 is a \\udcXX escape, exact after json.loads)."""
    doc = {
        "format": ACCESS_FORMAT,
        "versions": {
            v: {p: [[s, e] for s, e in r] for p, r in files.items()}
            for v, files in versions.items()
        },
    }
    return _header(MAGIC_ACCESS) + json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode_access(
    canonical: bytes, what: str = "access record"
) -> dict[str, dict[str, list[tuple[int, int]]]]:
    body = _body(canonical, MAGIC_ACCESS, what)
    try:
        out = check_access(json.loads(bytes(body)))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise CorruptObject(f"{what}: malformed ({e})") from None
    if encode_access(out) != canonical:
        raise CorruptObject(f"{what}: not in canonical form")
    return out


def _hex32(s: object) -> bytes:
    if not isinstance(s, str) or len(s) != 2 * ID_LEN:
        raise ValueError(f"bad id {s!r}")
    return bytes.fromhex(s)


# --- chunk locations ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Location:
    """Where a chunk's bytes are: a byte range of a pack, stored raw or zstd."""

    pack: bytes
    offset: int
    stored_length: int
    codec: int


def encode_locs(locs: dict[bytes, Location]) -> bytes:
    packs = sorted({loc.pack for loc in locs.values()})
    number = {p: i for i, p in enumerate(packs)}
    parts = [_header(MAGIC_LOCS), _U32.pack(len(packs)), *packs, _U32.pack(len(locs))]
    for cid in sorted(locs):
        loc = locs[cid]
        parts.append(_LOC.pack(cid, number[loc.pack], loc.offset, loc.stored_length, loc.codec))
    return b"".join(parts)


def decode_locs(canonical: bytes, what: str = "locs") -> dict[bytes, Location]:
    r = _Reader(_body(canonical, MAGIC_LOCS, what), what)
    npacks = r.u32()
    packs = [bytes(r.take(ID_LEN)) for _ in range(npacks)]
    n = r.u32()
    raw = r.take(n * _LOC.size)
    r.done()
    out: dict[bytes, Location] = {}
    for cid, pno, off, stored, codec in _LOC.iter_unpack(raw):
        if pno >= npacks or codec not in (CODEC_RAW, CODEC_ZSTD):
            raise CorruptObject(f"{what}: bad location for chunk {cid.hex()[:16]}")
        out[cid] = Location(packs[pno], off, stored, codec)
    return out


# --- packs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackEntry:
    id: bytes
    offset: int
    stored_length: int
    raw_length: int
    codec: int


def encode_pack_index(entries: Iterable[PackEntry]) -> bytes:
    items = list(entries)
    parts = [_header(MAGIC_PACK_INDEX), _U32.pack(len(items))]
    parts.extend(
        _PACK_ENTRY.pack(e.id, e.offset, e.stored_length, e.raw_length, e.codec) for e in items
    )
    return b"".join(parts)


def decode_pack_index(canonical: bytes, what: str = "pack index") -> list[PackEntry]:
    r = _Reader(_body(canonical, MAGIC_PACK_INDEX, what), what)
    n = r.u32()
    raw = r.take(n * _PACK_ENTRY.size)
    r.done()
    out = [PackEntry(*t) for t in _PACK_ENTRY.iter_unpack(raw)]
    for e in out:
        if e.codec not in (CODEC_RAW, CODEC_ZSTD) or e.raw_length > MAX_CHUNK_BYTES:
            raise CorruptObject(f"{what}: bad entry for chunk {e.id.hex()[:16]}")
    return out


def pack_trailer(index_canonical: bytes) -> bytes:
    """Appended to a pack after its chunks, so a pack describes itself: the index,
    its length, and a magic. `vfs verify` and repair read it from the pack's tail."""
    return index_canonical + _U32.pack(len(index_canonical)) + PACK_TRAILER


def decode_chunk(
    stored: bytes | memoryview, codec: int, raw_length: int, expected: bytes, what: str
) -> ChunkBytes:
    """Stored chunk bytes to raw bytes, verified against the chunk's address.

    A raw chunk is verified and returned as it was given, not copied: a slice of a
    GET's buffer stays a slice of it (and keeps the whole buffer alive, which the
    caller bounds). A writable buffer is copied, so that what was verified cannot
    change afterwards."""
    raw: ChunkBytes
    if codec == CODEC_ZSTD:
        raw = decompress_bounded(stored, raw_length, f"{what}: chunk {expected.hex()[:16]}")
    elif codec == CODEC_RAW:
        # A writable buffer could change after it was verified: that one is copied.
        readonly = type(stored) is bytes or (isinstance(stored, memoryview) and stored.readonly)
        raw = stored if readonly else bytes(stored)
    else:
        raise CorruptObject(f"{what}: unknown codec {codec}")
    if len(raw) != raw_length or chunk_id(raw) != expected:
        raise CorruptObject(f"{what}: chunk {expected.hex()[:16]} does not match its id")
    return raw


def boundary(name: bytes) -> bool:
    """Whether a page may end after the entry or child named `name`. xxh3 is enough:
    page cuts need to be stable and spread, not collision-resistant."""
    return xxhash.xxh3_64_intdigest(name) & PAGE_BOUNDARY_MASK == 0


def cut_pages(names: Sequence[bytes]) -> list[tuple[int, int]]:
    """Split sorted names into page ranges [start, end): content-defined, bounded."""
    out = []
    start = 0
    for i, name in enumerate(names):
        if boundary(name) or i + 1 - start >= MAX_PAGE_ENTRIES:
            out.append((start, i + 1))
            start = i + 1
    if start < len(names):
        out.append((start, len(names)))
    return out
