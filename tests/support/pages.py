"""Tree pages kept in memory: a PageSink for write_dir and DirBuilder, and a
PageSource that counts its reads, for tests that build trees without a store."""

from __future__ import annotations

from vfs import format as fmt


class MemoryPages:
    def __init__(self) -> None:
        self.pages: dict[bytes, bytes] = {}
        self.reads = 0

    def put_page(self, canonical: bytes) -> bytes:
        pid = fmt.object_id(canonical)
        self.pages[pid] = canonical
        return pid

    def put_locs(self, leaf_id: bytes, locs: dict[bytes, fmt.Location]) -> None:
        pass

    def get_page(self, page_id: bytes) -> fmt.TreePage:
        self.reads += 1
        return fmt.TreePage(self.pages[page_id], page_id)
