"""`vfs verify`: read every object a version needs and report each damaged one by key.

What is read, in a reader's order: the commit; every tree page of every directory,
checked against its id and against the index page above it; the locations of every
leaf page, which must place every chunk of its files; and every chunk, by ranged GETs
of its pack, decompressed and checked against its BLAKE3 id. Nothing comes from a
cache: the question is what the store holds.

A damaged object (missing, not matching its id, not decoding, truncated) is reported
by its store key with what is wrong, and verification goes on, so one run lists every
damaged object of a version. A damaged tree page hides what lies below it, which is
then not checked: repair the page and verify again.

A Verifier checks each object once, however many versions share it: objects are
immutable, so `verify_refs` (every version reachable from every ref of a store, as the
crash tests use it) costs what is new since the last call on the same Verifier.

Concurrency: the tree walk runs in the calling thread; chunk ranges are read by a
pool of `jobs` threads, each span at most MAX_RANGE bytes, so memory stays bounded.
Results are merged in the calling thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from vfs import format as fmt
from vfs.errors import CorruptObject, NotFound
from vfs.reader import MAX_GAP, MAX_RANGE, Span, Wanted, plan_ranges
from vfs.store import HEADS, TAGS, Store
from vfs.tree import check_depth

log = logging.getLogger(__name__)

_MAX_PATHS = 5  # files named per damaged object


@dataclass
class Damage:
    """One damaged object: its store key, its kind and what is wrong with it."""

    key: str
    kind: str  # commit, tree, locs, pack, ref
    error: str
    paths: list[str] = field(default_factory=list)  # files it affects (a few)

    def to_json(self) -> dict[str, object]:
        return {"key": self.key, "kind": self.kind, "error": self.error, "paths": self.paths}


@dataclass
class VerifyResult:
    commits: int = 0
    pages: int = 0
    locs: int = 0
    chunks: int = 0
    packs: int = 0
    bytes_read: int = 0
    damaged: list[Damage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged


def _name(path: bytes) -> str:
    return path.decode("utf-8", "surrogateescape")


class Verifier:
    """Verifies versions of one store; each object is checked once per Verifier."""

    def __init__(self, store: Store, jobs: int = 8) -> None:
        self.store = store
        self.jobs = jobs
        self.result = VerifyResult()
        self._damage: dict[str, Damage] = {}
        self._commits: set[bytes] = set()
        self._pages: set[bytes] = set()
        self._chunks: set[bytes] = set()
        self._packs: set[bytes] = set()
        # chunk id -> (where it is, paths of files using it), waiting to be read
        self._wanted: dict[bytes, tuple[Wanted, list[str]]] = {}

    # -- entry points ----------------------------------------------------------------

    def verify_version(
        self, commit_id: bytes, history: bool = False, label: str = ""
    ) -> VerifyResult:
        """Everything `commit_id` needs; with `history`, its ancestors' too. `label`
        (as "ds@v1:") goes before the paths a damaged object affects."""
        top = os.fsencode(label)
        todo = [commit_id]
        while todo:
            cid = todo.pop()
            if cid in self._commits:
                continue
            self._commits.add(cid)
            commit = self._commit(cid)
            if commit is None:
                continue
            self._tree(commit.tree, top)
            if history:
                todo.extend(commit.parents)
        self._read_chunks()
        self.result.damaged = list(self._damage.values())
        return self.result

    def verify_refs(self) -> VerifyResult:
        """Every version reachable from any branch or tag of any dataset."""
        heads: list[tuple[str, bytes]] = []
        for ds in self.store.datasets():
            for kind in (HEADS, TAGS):
                prefix = f"refs/{ds}/{kind}/"
                for key in self.store.backend.list(prefix):
                    try:
                        cid = self.store._parse_ref(self.store.backend.get(key), key)
                    except NotFound:
                        continue  # deleted between list and get
                    except CorruptObject as e:
                        self._damaged(key, "ref", str(e))
                        continue
                    heads.append((f"{ds}@{key[len(prefix) :]}:", cid))
        for label, cid in heads:  # a path is named in the first version that has it
            self.verify_version(cid, history=True, label=label)
        self.result.damaged = list(self._damage.values())
        return self.result

    # -- objects ---------------------------------------------------------------------

    def _damaged(self, key: str, kind: str, error: str, paths: Iterable[str] = ()) -> None:
        d = self._damage.get(key)
        if d is None:
            d = self._damage[key] = Damage(key, kind, error)
            log.info("damaged %s: %s", key, error)
        for p in paths:
            if len(d.paths) < _MAX_PATHS and p not in d.paths:
                d.paths.append(p)

    def _object(self, oid: bytes, kind: str) -> bytes | None:
        key = self.store.object_key(oid)
        try:
            stored = self.store.backend.get(key)
            return fmt.unseal_verified(stored, oid, f"{kind} {oid.hex()[:16]}")
        except NotFound:
            self._damaged(key, kind, "missing")
        except CorruptObject as e:
            self._damaged(key, kind, str(e))
        return None

    def _commit(self, cid: bytes) -> fmt.Commit | None:
        canonical = self._object(cid, "commit")
        if canonical is None:
            return None
        try:
            commit = fmt.decode_commit(canonical, f"commit {cid.hex()[:16]}")
        except CorruptObject as e:
            self._damaged(self.store.object_key(cid), "commit", str(e))
            return None
        self.result.commits += 1
        return commit

    def _page(self, page_id: bytes) -> fmt.TreePage | None:
        canonical = self._object(page_id, "tree")
        if canonical is None:
            return None
        try:
            page = fmt.TreePage(canonical, page_id)
        except CorruptObject as e:
            self._damaged(self.store.object_key(page_id), "tree", str(e))
            return None
        self.result.pages += 1
        return page

    def _tree(self, top: bytes, path: bytes) -> None:
        """One directory (its top page), and everything below it."""
        if top in self._pages:
            return
        self._pages.add(top)
        page = self._page(top)
        if page is not None:
            self._below(page, None, path, 0)

    def _below(self, page: fmt.TreePage, upper: bytes | None, path: bytes, depth: int) -> None:
        key = self.store.object_key(page.id)
        try:
            check_depth(page.id, depth)
        except CorruptObject:
            self._damaged(key, "tree", "index pages nest too deep")
            return
        try:
            if page.kind == fmt.INDEX:
                children = page.children()
            else:
                entries = list(page.entries())
        except CorruptObject as e:
            self._damaged(key, "tree", str(e))
            return
        if page.kind == fmt.INDEX:
            for i, c in enumerate(children):
                if c.page in self._pages:
                    continue
                self._pages.add(c.page)
                child = self._page(c.page)
                if child is None:
                    continue
                try:
                    bound = page.check_child(i, child, upper)
                except CorruptObject as e:
                    self._damaged(key, "tree", str(e))
                    continue
                self._below(child, bound, path, depth + 1)
            return
        self._locs(page.id, [(path + f.name, f) for f in entries if f.is_file])
        for d in entries:
            if d.is_dir:
                self._tree(d.tree, path + d.name + b"/")

    def _locs(self, leaf_id: bytes, files: list[tuple[bytes, fmt.Entry]]) -> None:
        key = f"locs/{leaf_id.hex()[:2]}/{leaf_id.hex()}"
        what = f"locations of tree {leaf_id.hex()[:16]}"
        try:
            locs = fmt.decode_locs(fmt.unseal(self.store.backend.get(key), what), what)
        except NotFound:
            self._damaged(key, "locs", "missing", (_name(p) for p, _ in files))
            return
        except CorruptObject as e:
            self._damaged(key, "locs", str(e), (_name(p) for p, _ in files))
            return
        self.result.locs += 1
        for path, f in files:
            for c in f.chunks:
                loc = locs.get(c.id)
                if loc is None:
                    self._damaged(key, "locs", f"does not place chunk {c.id.hex()}", [_name(path)])
                    continue
                if c.id in self._chunks:
                    continue
                held = self._wanted.get(c.id)
                if held is None:
                    self._wanted[c.id] = (Wanted(c, loc), [_name(path)])
                elif len(held[1]) < _MAX_PATHS:
                    held[1].append(_name(path))

    # -- chunks ----------------------------------------------------------------------

    def _read_chunks(self) -> None:
        wanted, self._wanted = self._wanted, {}
        if not wanted:
            return
        self._chunks.update(wanted)
        spans = plan_ranges((w for w, _ in wanted.values()), MAX_GAP, MAX_RANGE)
        self._packs.update(s.pack for s in spans)
        self.result.packs = len(self._packs)

        def check(span: Span) -> tuple[int, list[tuple[str, str, list[str]]]]:
            return self._check_span(span, wanted)

        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="vfs-verify") as pool:
            for nbytes, problems in pool.map(check, spans):
                self.result.bytes_read += nbytes
                for key, error, paths in problems:
                    self._damaged(key, "pack", error, paths)
        self.result.chunks += len(wanted)

    def _check_span(
        self, span: Span, wanted: dict[bytes, tuple[Wanted, list[str]]]
    ) -> tuple[int, list[tuple[str, str, list[str]]]]:
        """Worker thread: read one range of a pack; what is wrong with its chunks."""
        key = self.store.pack_key(span.pack)
        try:
            data = self.store.backend.get_range(key, span.start, span.end - span.start)
        except NotFound:
            return 0, [(key, "missing", [p for w in span.items for p in wanted[w.ref.id][1]])]
        problems = []
        bad = 0
        first = ""
        paths: list[str] = []
        for w in span.items:
            lo = w.loc.offset - span.start
            stored = data[lo : lo + w.loc.stored_length]
            try:
                if len(stored) < w.loc.stored_length:
                    raise CorruptObject(
                        f"truncated: chunk {w.ref.id.hex()[:16]} at bytes "
                        f"{w.loc.offset}-{w.loc.offset + w.loc.stored_length}, the pack "
                        f"ends at byte {span.start + len(data)}"
                    )
                fmt.decode_chunk(stored, w.loc.codec, w.ref.length, w.ref.id, key)
            except CorruptObject as e:
                bad += 1
                first = first or str(e)
                paths.extend(wanted[w.ref.id][1])
        if bad:
            more = f" ({bad} chunks of this range fail)" if bad > 1 else ""
            problems.append((key, first + more, paths))
        return len(data), problems
