"""The inode table of a mount: every inode the kernel knows, in a few bytes each.

The kernel keeps each inode it has looked up until memory pressure makes it forget
it; on a machine with room to spare that is every entry a `find` ever visited. A
Python object per inode (a node with its decoded entry and its directory's pages)
cost about 870 bytes each: 932 MB of daemon after `find` over a version of a million
files. Here an inode is a record: a row across parallel typed arrays, 53 bytes,
plus a slot in an open-addressing index from inode number to record. What a record
does not hold (the entry's name, chunks, tree) is decoded again from its leaf page
when asked for; pages live in the store's byte-bounded page cache.

A record holds: the inode number; the 128-bit identity it was made for (see
vfs/mount/namespace.py, "Inode numbers"); the parent's number; the entry's kind; its leaf page
(a slot in a page-id table shared by the records of one page) and its index there;
the version it was found in; the kernel's lookup count and the open handles.

Record numbers are reused after `remove`; inode numbers are what callers keep.
"""

from __future__ import annotations

from array import array

NO_PAGE = 0xFFFFFFFF  # a record without an entry: a version root, the @REF root, an @REF dir
NO_VIEW = 0xFFFFFFFF

_EMPTY = -1
_GONE = -2  # a removed record's index slot: probing goes on past it
_INO_MASK = (1 << 63) - 1
_MAX_LOOKUPS = 0xFFFFFFFF


class InodeTable:
    __slots__ = (
        "_free",
        "_free_pages",
        "_gone",
        "_index",
        "_mask",
        "_page_refs",
        "_page_slot",
        "_used",
        "ino",
        "key_hi",
        "key_lo",
        "kind",
        "leaf",
        "lookups",
        "opens",
        "page_ids",
        "parent",
        "pos",
        "view",
    )

    def __init__(self) -> None:
        self.ino = array("Q")
        self.key_hi = array("Q")
        self.key_lo = array("Q")
        self.parent = array("Q")
        self.kind = array("B")
        self.leaf = array("I")  # slot in page_ids, or NO_PAGE
        self.pos = array("I")  # the entry's index in its leaf page
        self.view = array("I")
        # The kernel's lookup count. 32 bits: a count that reaches the top stays
        # there and its record is never dropped (see `looked_up`).
        self.lookups = array("I")
        self.opens = array("I")
        self._free = array("I")  # removed record numbers, reused first
        self._index = array("i", [_EMPTY]) * 8
        self._mask = 7
        self._used = 0  # live records
        self._gone = 0  # _GONE slots in the index
        self.page_ids: list[bytes] = []
        self._page_slot: dict[bytes, int] = {}
        self._page_refs = array("I")
        self._free_pages = array("I")

    def __len__(self) -> int:
        return self._used

    def find(self, ino: int) -> int:
        """The record of inode `ino`, or -1."""
        index, mask, inos = self._index, self._mask, self.ino
        i = ino & mask
        while True:
            r = index[i]
            if r == _EMPTY:
                return -1
            if r >= 0 and inos[r] == ino:
                return r
            i = (i + 1) & mask

    def intern(self, key: bytes) -> tuple[int, bool]:
        """The record for a 16-byte identity: (record, False) if an inode of that
        identity is live, else (a new record, True) numbered from the key's first 8
        bytes, or the next free number after it if another identity holds that one.
        A new record has only its number and identity set: the caller fills the rest."""
        hi = int.from_bytes(key[:8], "little")
        lo = int.from_bytes(key[8:16], "little")
        ino = hi & _INO_MASK
        while True:
            if ino <= 1:  # 0 is no inode, 1 is the root
                ino = 2
            r = self.find(ino)
            if r < 0:
                return self._add(ino, hi, lo), True
            if self.key_hi[r] == hi and self.key_lo[r] == lo:
                return r, False
            ino = (ino + 1) & _INO_MASK

    def add_special(self, ino: int, key: bytes) -> int:
        """A record at a number the caller chooses (the root)."""
        if self.find(ino) >= 0:
            raise ValueError(f"inode {ino} exists")
        return self._add(
            ino, int.from_bytes(key[:8], "little"), int.from_bytes(key[8:16], "little")
        )

    def _add(self, ino: int, hi: int, lo: int) -> int:
        if (self._used + self._gone + 1) * 3 > (self._mask + 1) * 2:
            self._rebuild()
        if self._free:
            r = self._free.pop()
            self.ino[r], self.key_hi[r], self.key_lo[r] = ino, hi, lo
            self.parent[r] = self.kind[r] = self.pos[r] = self.lookups[r] = self.opens[r] = 0
            self.leaf[r] = NO_PAGE
            self.view[r] = NO_VIEW
        else:
            r = len(self.ino)
            self.ino.append(ino)
            self.key_hi.append(hi)
            self.key_lo.append(lo)
            self.parent.append(0)
            self.kind.append(0)
            self.leaf.append(NO_PAGE)
            self.pos.append(0)
            self.view.append(NO_VIEW)
            self.lookups.append(0)
            self.opens.append(0)
        index, mask = self._index, self._mask
        i = ino & mask
        while index[i] >= 0:  # a _GONE slot is reused
            i = (i + 1) & mask
        if index[i] == _GONE:
            self._gone -= 1
        index[i] = r
        self._used += 1
        return r

    def looked_up(self, r: int) -> None:
        """Count one kernel lookup of record r."""
        if self.lookups[r] < _MAX_LOOKUPS:
            self.lookups[r] += 1

    def forgotten(self, r: int, n: int) -> None:
        """The kernel forgot n lookups of record r. A saturated count is kept: the
        record then lives as long as the mount, which is safe, where dropping it
        while the kernel still uses the inode would not be."""
        if self.lookups[r] < _MAX_LOOKUPS:
            self.lookups[r] = max(self.lookups[r] - n, 0)

    def remove(self, r: int) -> None:
        index, mask = self._index, self._mask
        i = self.ino[r] & mask
        while index[i] != r:
            i = (i + 1) & mask
        index[i] = _GONE
        self._gone += 1
        self._used -= 1
        self.set_leaf(r, None)
        self._free.append(r)

    def _rebuild(self) -> None:
        """A new index sized for the live records (at most half full), without the
        _GONE slots."""
        size = 8
        while size < 2 * (self._used + 1):
            size *= 2
        index = array("i", [_EMPTY]) * size
        mask = size - 1
        old = self._index
        inos = self.ino
        for r in old:
            if r >= 0:
                i = inos[r] & mask
                while index[i] != _EMPTY:
                    i = (i + 1) & mask
                index[i] = r
        self._index, self._mask, self._gone = index, mask, 0

    # -- leaf pages --------------------------------------------------------------------

    def set_leaf(self, r: int, page_id: bytes | None) -> None:
        """Point record r at a leaf page (None: no page), counting the page's users."""
        old = self.leaf[r]
        if old != NO_PAGE:
            if page_id is not None and self.page_ids[old] == page_id:
                return
            self._page_refs[old] -= 1
            if self._page_refs[old] == 0:
                del self._page_slot[self.page_ids[old]]
                self.page_ids[old] = b""
                self._free_pages.append(old)
        if page_id is None:
            self.leaf[r] = NO_PAGE
            return
        slot = self._page_slot.get(page_id)
        if slot is None:
            if self._free_pages:
                slot = self._free_pages.pop()
                self.page_ids[slot] = page_id
                self._page_refs[slot] = 0
            else:
                slot = len(self.page_ids)
                self.page_ids.append(page_id)
                self._page_refs.append(0)
            self._page_slot[page_id] = slot
        self._page_refs[slot] += 1
        self.leaf[r] = slot

    def leaf_id(self, r: int) -> bytes | None:
        slot = self.leaf[r]
        return None if slot == NO_PAGE else self.page_ids[slot]

    def pages_in_use(self) -> int:
        return len(self._page_slot)

    def nbytes(self) -> int:
        """Memory held by the arrays (not the page ids)."""
        arrays = (
            self.ino,
            self.key_hi,
            self.key_lo,
            self.parent,
            self.kind,
            self.leaf,
            self.pos,
            self.view,
            self.lookups,
            self.opens,
            self._free,
            self._index,
        )
        return sum(a.buffer_info()[1] * a.itemsize for a in arrays)
