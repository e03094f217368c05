"""A store: the objects and refs of many datasets on one backend.

The store gives backend keys their meaning (see docs/format.md, "Layout"):

    config                         format version and chunker parameters
    objects/<2 hex>/<64 hex>       tree pages and commits, zstd frames of canonical bytes
    locs/<2 hex>/<leaf id>         where a leaf page's chunks live (not part of any id)
    packs/<2 hex>/<pack id>        chunks, then the pack's own index as a trailer
    index/<2 hex>/<pack id>        a copy of that index, for writers and verify
    refs/<dataset>/heads/<branch>  a commit id, moved by compare-and-swap
    refs/<dataset>/tags/<tag>      a commit id, created once, never moved
    reflog/<dataset>/<ns>-<rand>   one ref change: who, when, old and new id (vfs/reflog.py)

Concurrency: Store is shared by threads. The page and commit caches are guarded by
a lock; everything else is immutable or lives in the backend.

Reading: refs, config, pack indexes and packs come from the backend stack; tree
pages, commits and locations through the metadata stack over it (both composed in
vfs/backends/__init__.py). With `use_cache` that stack keeps them in the machine's
chunk cache too, so that pinned versions stay readable while the store cannot be
reached (vfs/backends/metadata.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vfs import format as fmt
from vfs import perms, reflog
from vfs.backends import Backend, default_store_url, metadata_stack, open_backend
from vfs.backends.base import UrlRead
from vfs.backends.metadata import BlobCache
from vfs.chunker import PARAMS as CHUNKER_PARAMS
from vfs.defaults import DEFAULT_BRANCH
from vfs.errors import (
    BackendError,
    CorruptObject,
    NotFound,
    RefConflict,
    Unreachable,
    UsageError,
)
from vfs.names import check_name, natural_key
from vfs.storecheck import CONFIG, NoStore, Place, local_place, local_root, no_store, where

if TYPE_CHECKING:
    from vfs.cache.offline import OfflineRefs

log = logging.getLogger(__name__)

HEADS = "heads"
TAGS = "tags"
# A ref name that could be a commit id as vfs prints them (12 hex digits) or as
# people shorten them (git's 7): refused for new refs (Store.check_new_ref).
_ID_LIKE = re.compile(r"[0-9a-f]{7,64}")


def _fan(prefix: str, hexid: str) -> str:
    return f"{prefix}/{hexid[:2]}/{hexid}"


@dataclass(frozen=True)
class RefValue:
    commit: bytes
    token: str


class LRU:
    """Least recently used values, bounded by their summed weight (by default one
    each: a count). Thread-safe."""

    def __init__(self, budget: int, weigh: Callable[[object], int] = lambda v: 1) -> None:
        self.budget = budget
        self.weight = 0
        self._weigh = weigh
        self._d: OrderedDict[bytes, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> object | None:
        with self._lock:
            hit = self._d.get(key)
            if hit is None:
                return None
            self._d.move_to_end(key)
            return hit[0]

    def put(self, key: bytes, value: object) -> None:
        w = self._weigh(value)
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self.weight -= old[1]
            self._d[key] = (value, w)
            self.weight += w
            while self.weight > self.budget and len(self._d) > 1:
                _, (_, gone) = self._d.popitem(last=False)
                self.weight -= gone


# Decoded metadata a Store keeps in memory. Pages are bounded in bytes: a mount reads
# pages again from here for every entry it is asked about (vfs/mount/inodes.py), and
# `find` over a million files visits 70 MB of them. Locations are weighed by their
# count of chunks, about 200 bytes each once decoded.
PAGE_CACHE_BYTES = 8 << 20
LOCS_CACHE_CHUNKS = 64 * 1024
# Pack indexes a mount keeps decoded, weighed by entry (about 100 bytes each): a
# 32 MiB pack of 50 KB files has ~650, so this holds some hundred packs' in ~6 MB.
PACK_INDEX_CACHE_ENTRIES = 64 * 1024


def _page_bytes(page: object) -> int:
    assert isinstance(page, fmt.TreePage)
    return page.nbytes()


def _locs_count(locs: object) -> int:
    assert isinstance(locs, dict)
    return len(locs) + 1


def _entries_count(entries: object) -> int:
    assert isinstance(entries, list)
    return len(entries) + 1


def _whole_range(
    pack_id: bytes, offset: int, length: int, data: bytes | memoryview
) -> bytes | memoryview:
    """`data`, if it is all `length` bytes asked for; CorruptObject if it is short."""
    if len(data) != length:
        raise CorruptObject(
            f"pack {pack_id.hex()[:16]}: wanted {length} bytes at {offset}, got {len(data)} (truncated?)"
        )
    return data


class Store:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.url = backend.url
        self._pages = LRU(PAGE_CACHE_BYTES, _page_bytes)
        self._locs = LRU(LOCS_CACHE_CHUNKS, _locs_count)
        self._commits = LRU(1024)
        self._pack_indexes = LRU(PACK_INDEX_CACHE_ENTRIES, _entries_count)
        self.meta = metadata_stack(backend)
        self.offline: OfflineRefs | None = None  # see go_offline

    def use_cache(self, cache: BlobCache) -> None:
        """Read tree pages, commits and locations through the machine's chunk cache
        (vfs.cache.ChunkCache), which keeps what is fetched: see the module docstring."""
        self.meta = metadata_stack(self.backend, cache)

    @classmethod
    def open(cls, url: str | None = None, endpoint_url: str | None = None) -> Store:
        """The store at `url` ($VFS_STORE or the default directory if None);
        `endpoint_url`: the S3 endpoint, for a remote that names its own."""
        return cls(open_backend(url or default_store_url(), endpoint_url))

    def close(self) -> None:
        self.backend.close()

    # --- config ---
    #
    # A store is recognised by its config (vfs/storecheck.py): readers refuse a
    # location without one, and a writer creates one only where there is nothing, so
    # a mistyped --store neither reads as "no datasets" nor scatters objects among
    # somebody's files.

    def _read_config(self) -> dict[str, object] | None:
        """The config, checked; None if there is none."""
        try:
            raw = self.backend.get(CONFIG)
        except NotFound:
            return None
        try:
            cfg = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
            raise CorruptObject(f"{self.url}: the store's config is not valid JSON") from None
        self._check_config(cfg)
        assert isinstance(cfg, dict)
        return cfg

    def place(self) -> Place:
        """What lies at the store's location: a store, nothing, a file or other things."""
        if self._read_config() is not None:
            return Place.STORE
        root = local_root(self.url)
        if root is not None:
            place = local_place(root)
        else:
            place = Place.OTHER if next(iter(self.backend.list("")), None) else Place.ABSENT
        # A writer puts the config before any other key, so keys seen now with no
        # config seen before may be a first commit that began meanwhile: look again.
        if place is Place.OTHER and self._read_config() is not None:
            return Place.STORE
        return place

    def _create_config(self) -> None:
        doc = {"format": fmt.FORMAT_VERSION, "chunker": CHUNKER_PARAMS}
        if not self.backend.put_if(CONFIG, json.dumps(doc, sort_keys=True).encode() + b"\n", None):
            self._read_config()  # another writer created it first: it must be ours too

    def ensure_config(self) -> None:
        """For writers: use the store here, or create one if there is nothing here
        (an absent or empty directory, an empty prefix). Refuse a location holding
        other things (NoStore: `vfs init` makes a store there on purpose) and a store
        of another format."""
        place = self.place()
        if place is Place.STORE:
            return
        if not place.vacant:
            raise no_store(self.url, place)
        self._create_config()

    def check_config(self) -> None:
        """For readers: NoStore unless a store of this format is here."""
        if self._read_config() is None:
            raise no_store(self.url, self.place())

    def init(self) -> Place:
        """Make this location a store (`vfs init`); return what was there before:
        Place.STORE means it already was one and nothing was written. A file cannot
        hold a store (NoStore)."""
        place = self.place()
        if place is Place.FILE:
            raise NoStore(f"cannot create a vfs store at {where(self.url)}: it is a file")
        if place is not Place.STORE:
            self._create_config()
        return place

    def _check_config(self, cfg: object) -> None:
        if not isinstance(cfg, dict) or cfg.get("format") != fmt.FORMAT_VERSION:
            version = cfg.get("format") if isinstance(cfg, dict) else None
            raise CorruptObject(
                f"{self.url} has store format {version!r}; this vfs reads format {fmt.FORMAT_VERSION}"
            )

    # --- content-addressed objects ---

    def object_key(self, oid: bytes) -> str:
        return _fan("objects", oid.hex())

    def has_object(self, oid: bytes) -> bool:
        return self.backend.exists(self.object_key(oid))

    def put_object(self, canonical: bytes) -> bytes:
        oid = fmt.object_id(canonical)
        key = self.object_key(oid)
        if not self.backend.exists(key):
            self.backend.put(key, fmt.seal(canonical))
        return oid

    def get_object(self, oid: bytes, what: str) -> bytes:
        canonical, fetched = self.meta.load_object(self.object_key(oid), oid, what)
        if fetched:
            self.meta.keep_object(oid, canonical)
        return canonical

    # PageSink / PageSource for vfs.tree

    def put_page(self, canonical: bytes) -> bytes:
        return self.put_object(canonical)

    def get_page(self, page_id: bytes) -> fmt.TreePage:
        page, fetched = self.fetch_page(page_id)
        if fetched is not None:
            self.meta.keep_object(page_id, fetched)
        return page

    def fetch_page(self, page_id: bytes) -> tuple[fmt.TreePage, bytes | None]:
        """A page, and its canonical bytes if they came from the backend: then they
        are not in the chunk cache yet, and keeping them is the caller's job.
        A mount does that in batches, off the path of the reader who waits for the
        page (one LMDB transaction per page cost as much as the GET)."""
        page = self._pages.get(page_id)
        if page is not None:
            assert isinstance(page, fmt.TreePage)
            return page, None
        canonical, fetched = self.meta.load_object(self.object_key(page_id), page_id, "tree")
        page = fmt.TreePage(canonical, page_id)
        self._pages.put(page_id, page)
        return page, canonical if fetched else None

    def cached_page(self, page_id: bytes) -> fmt.TreePage | None:
        """A page if this store holds it decoded in memory: no I/O, so callers on an
        event loop may ask before they hand get_page to a thread."""
        page = self._pages.get(page_id)
        assert page is None or isinstance(page, fmt.TreePage)
        return page

    def cached_locs(self, leaf_id: bytes) -> dict[bytes, fmt.Location] | None:
        """A leaf's locations if this store holds them decoded in memory: no I/O."""
        locs = self._locs.get(leaf_id)
        assert locs is None or isinstance(locs, dict)
        return locs

    def put_locs(self, leaf_id: bytes, locs: dict[bytes, fmt.Location]) -> None:
        key = _fan("locs", leaf_id.hex())
        if not self.backend.exists(key):
            self.backend.put(key, fmt.seal(fmt.encode_locs(locs)))

    def get_locs(self, leaf_id: bytes) -> dict[bytes, fmt.Location]:
        locs = self._locs.get(leaf_id)
        if locs is None:
            what = f"locations of tree {leaf_id.hex()[:16]}"
            locs = self.meta.load_locs(_fan("locs", leaf_id.hex()), leaf_id, what)
            self._locs.put(leaf_id, locs)
        assert isinstance(locs, dict)
        return locs

    def locs_key(self, leaf_id: bytes) -> str:
        return _fan("locs", leaf_id.hex())

    def fetch_locs(self, leaf_id: bytes) -> dict[bytes, fmt.Location]:
        """A leaf's locations from the backend itself, past every cache: after a
        repack moved its chunks (vfs gc), a cached copy may name a deleted pack. The
        fresh copy replaces the one in memory and is offered to the metadata cache."""
        what = f"locations of tree {leaf_id.hex()[:16]}"
        locs = self.meta.reload_locs(self.locs_key(leaf_id), leaf_id, what)
        self._locs.put(leaf_id, locs)
        return locs

    def replace_locs(self, leaf_id: bytes, locs: dict[bytes, fmt.Location]) -> None:
        """Overwrite a leaf's locations (repack): they are part of no id."""
        self.backend.put(self.locs_key(leaf_id), fmt.seal(fmt.encode_locs(locs)))
        self._locs.put(leaf_id, locs)

    def put_commit(self, c: fmt.Commit) -> bytes:
        return self.put_object(fmt.encode_commit(c))

    def get_commit(self, cid: bytes) -> fmt.Commit:
        c = self._commits.get(cid)
        if c is None:
            c = fmt.decode_commit(self.get_object(cid, "commit"), f"commit {cid.hex()[:16]}")
            self._commits.put(cid, c)
        assert isinstance(c, fmt.Commit)
        return c

    # --- packs ---

    def pack_key(self, pack_id: bytes) -> str:
        return _fan("packs", pack_id.hex())

    def index_key(self, pack_id: bytes) -> str:
        return _fan("index", pack_id.hex())

    def pack_ids(self) -> Iterator[bytes]:
        """Packs that have an index: the packs a commit may refer to."""
        for key in self.backend.list("index/"):
            name = key.rsplit("/", 1)[-1]
            if len(name) == 2 * fmt.ID_LEN:
                yield bytes.fromhex(name)

    def get_pack_index(self, pack_id: bytes) -> list[fmt.PackEntry]:
        what = f"index of pack {pack_id.hex()[:16]}"
        return fmt.decode_pack_index(
            fmt.unseal(self.backend.get(self.index_key(pack_id)), what), what
        )

    def cached_pack_index(self, pack_id: bytes) -> list[fmt.PackEntry] | None:
        """A pack's index, in offset order, if this store holds it in memory: no I/O."""
        entries = self._pack_indexes.get(pack_id)
        assert entries is None or isinstance(entries, list)
        return entries

    def load_pack_index(self, pack_id: bytes, local_dir: str | None = None) -> list[fmt.PackEntry]:
        """A pack's index, in offset order: from memory, else as local_pack_index
        gives it, then kept in memory too."""
        entries = self.cached_pack_index(pack_id)
        if entries is not None:
            return entries
        got = self.local_pack_index(pack_id, local_dir)
        got.sort(key=lambda e: e.offset)
        self._pack_indexes.put(pack_id, got)
        return got

    def local_pack_index(self, pack_id: bytes, local_dir: str | None) -> list[fmt.PackEntry]:
        """A pack's index from `local_dir` (the cache's packindex/, shared by `vfs
        commit` and the mount), else from the store, then kept there. A pack index is
        fixed by its pack's id, so a kept copy never goes stale; a damaged one is
        fetched again."""
        path = os.path.join(local_dir, pack_id.hex()) if local_dir else None
        if path is not None:
            try:
                with open(path, "rb") as f:
                    return fmt.decode_pack_index(
                        f.read(), f"cached index of pack {pack_id.hex()[:16]}"
                    )
            except (OSError, CorruptObject):
                pass
        got = self.get_pack_index(pack_id)
        if path is not None:
            self._keep_pack_index(path, got)
        return got

    @staticmethod
    def _keep_pack_index(path: str, entries: list[fmt.PackEntry]) -> None:
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            modes = perms.make_dirs(os.path.dirname(path))
            with open(tmp, "wb") as f:
                f.write(fmt.encode_pack_index(entries))
                if modes.shared:
                    perms.set_mode(f.fileno(), modes.file)
            os.replace(tmp, path)
        except OSError as e:  # a copy on disk only saves a GET next time
            log.debug("cannot keep pack index %s: %s", path, e)
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def read_pack_range(self, pack_id: bytes, offset: int, length: int) -> bytes | memoryview:
        return _whole_range(
            pack_id, offset, length, self.backend.get_range(self.pack_key(pack_id), offset, length)
        )

    def pack_url_read(self, pack_id: bytes, offset: int, length: int) -> UrlRead | None:
        """read_pack_range as one GET of a URL the caller makes itself, or None where
        the backend has no such road (Backend.url_read). Its answer is checked as
        read_pack_range's is."""
        read = self.backend.url_read(self.pack_key(pack_id), offset, length)
        if read is None:
            return None
        answer = read.answer

        def checked(status: int, body: bytes) -> bytes | memoryview | None:
            data = answer(status, body)
            return None if data is None else _whole_range(pack_id, offset, length, data)

        return replace(read, answer=checked)

    # --- refs ---
    # Every ref change goes through the methods below, and each appends its ref log
    # entry (vfs/reflog.py) once the change succeeded, so that no caller forgets one.

    def _ref_key(self, dataset: str, kind: str, name: str) -> str:
        check_name(dataset, "dataset")
        check_name(name, "tag" if kind == TAGS else "branch")
        return f"refs/{dataset}/{kind}/{name}"

    def check_config_or_pins(self, cache: BlobCache, cache_root: str) -> str:
        """For a reader with a chunk cache (`cache`, opened at `cache_root`):
        check_config, and when the store cannot be reached (Unreachable: any other
        answer, a missing bucket, a refusal, is its own error) but the cache's pins
        recorded it (`vfs cache pin`), go offline on what they recorded, reading
        through `cache`. Returns why it is offline, '' while the store answers."""
        try:
            self.check_config()
            return ""
        except Unreachable as e:
            self.serve_pins(cache, cache_root, e)
            return str(e)

    def serve_pins(
        self, cache: BlobCache, cache_root: str, away: BackendError, warn: bool = True
    ) -> None:
        """Go offline on what the pins in the chunk cache at `cache_root` recorded of
        this store, reading through `cache`, and say so once (`warn`: not in a worker
        whose parent said it); `away` (why the store cannot be reached), with how to
        avoid it, if they recorded nothing."""
        from vfs.cache import offline

        recorded = offline.load(cache_root, self.url)
        if recorded is None:
            raise BackendError(
                f"cannot reach the store {self.url}: {away} (to read a version while "
                "its store is away, pin it first: vfs cache pin DATASET@REF)"
            ) from None
        self.go_offline(recorded)
        self.use_cache(cache)
        if warn:
            log.warning(
                "offline: the store %s cannot be reached (%s); reading the versions "
                "pinned in the cache, as they were pinned",
                self.url,
                away,
            )

    def go_offline(self, recorded: OfflineRefs) -> None:
        """Answer refs from what the cache's pins recorded, without asking the
        backend: a mount of pinned versions while the store cannot be reached."""
        self._check_config(recorded.config)
        self.offline = recorded

    def try_online(self) -> bool:
        """For a store gone offline: whether it answers again (its config, read from
        the backend); then refs are the backend's again. A long-running reader (a
        mount) calls this now and then."""
        if self.offline is None:
            return True
        try:
            self.check_config()
        except Unreachable:
            return False
        self.offline = None
        return True

    def datasets(self) -> list[str]:
        if self.offline is not None:
            return self.offline.datasets()
        return sorted(d for d in self.backend.list_dirs("refs/"))

    def refs(self, dataset: str, kind: str) -> dict[str, bytes]:
        if self.offline is not None:
            return self.offline.listing(dataset, kind)
        prefix = f"refs/{dataset}/{kind}/"
        out = {}
        for key in self.backend.list(prefix):
            name = key[len(prefix) :]
            if "/" in name:
                continue
            try:
                out[name] = self._parse_ref(self.backend.get(key), key)
            except NotFound:
                continue  # deleted between list and get
        return dict(sorted(out.items(), key=lambda item: natural_key(item[0])))

    def read_ref(self, dataset: str, kind: str, name: str) -> RefValue | None:
        key = self._ref_key(dataset, kind, name)
        if self.offline is not None:
            commit = self.offline.ref(dataset, kind, name)
            return RefValue(commit, "") if commit is not None else None
        try:
            v = self.backend.get_versioned(key)
        except NotFound:
            return None
        return RefValue(self._parse_ref(v.data, key), v.token)

    @staticmethod
    def _parse_ref(data: bytes, key: str) -> bytes:
        text = data.decode("ascii", "replace").strip()
        if len(text) != 2 * fmt.ID_LEN:
            raise CorruptObject(f"ref {key} does not hold a commit id")
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise CorruptObject(f"ref {key} does not hold a commit id") from None

    def check_new_ref(self, dataset: str, kind: str, name: str) -> None:
        """Refuse a new branch or tag whose name would make `dataset@name` ambiguous:
        one that looks like a commit id (7+ hex digits, as the ids vfs prints), or a
        branch named as a tag (which would hide the tag: tags never move) and the
        reverse."""
        what, other = ("tag", "branch") if kind == TAGS else ("branch", "tag")
        if _ID_LIKE.fullmatch(name.lower()):
            raise UsageError(
                f"{what} name {name!r} looks like a commit id, and {dataset}@{name} "
                "would name both: choose another name"
            )
        if self.read_ref(dataset, HEADS if kind == TAGS else TAGS, name) is not None:
            raise RefConflict(
                f"{dataset} has a {other} {name!r}; a {what} of the same name would make "
                f"{dataset}@{name} ambiguous: choose another name"
            )

    def set_branch(
        self,
        dataset: str,
        name: str,
        commit: bytes,
        expected: RefValue | None,
        action: str = "commit",
    ) -> bool:
        """Move a branch from `expected` (None: create it) to `commit`. False if the
        branch changed meanwhile: the caller re-reads and decides. A move that
        happened is recorded in the ref log as `action`."""
        if expected is None:
            self.check_new_ref(dataset, HEADS, name)
        key = self._ref_key(dataset, HEADS, name)
        moved = self.backend.put_if(
            key, commit.hex().encode() + b"\n", expected.token if expected else None
        )
        if moved:
            reflog.append(
                self,
                dataset,
                f"{HEADS}/{name}",
                expected.commit if expected else None,
                commit,
                action,
            )
        return moved

    def create_tag(self, dataset: str, name: str, commit: bytes) -> None:
        current = self.read_ref(dataset, TAGS, name)
        if current is not None and current.commit == commit:
            return
        if current is None:
            self.check_new_ref(dataset, TAGS, name)
        key = self._ref_key(dataset, TAGS, name)
        if not self.backend.put_if(key, commit.hex().encode() + b"\n", None):
            current = self.read_ref(dataset, TAGS, name)
            if current and current.commit == commit:
                return
            raise RefConflict(f"tag {dataset}@{name} already exists; tags never move")
        reflog.append(self, dataset, f"{TAGS}/{name}", None, commit, "tag")

    def delete_ref(
        self, dataset: str, kind: str, name: str, expected: RefValue, action: str = "delete"
    ) -> None:
        """Delete a branch or tag if it still holds `expected`; RefConflict if it
        changed, NotFound if it is gone. Recorded in the ref log as `action`.

        A compare-and-swap: the backend deletes only if the ref is unchanged since
        `expected` was read (Backend.delete_if: under the ref's flock on local disk,
        DELETE with If-Match on S3). The re-read before it gives the error its
        message, and covers an S3 server that would ignore If-Match."""
        kind_name = "tag" if kind == TAGS else "branch"
        current = self.read_ref(dataset, kind, name)
        if current is None:
            raise NotFound(f"no {kind_name} {dataset}@{name}")
        if current.token != expected.token or not self.backend.delete_if(
            self._ref_key(dataset, kind, name), expected.token
        ):
            now = self.read_ref(dataset, kind, name)
            held = f"now {now.commit.hex()[:12]}" if now else "now deleted"
            raise RefConflict(
                f"{kind_name} {dataset}@{name} changed while deleting it ({held}); "
                "nothing deleted, look again"
            )
        reflog.append(self, dataset, f"{kind}/{name}", current.commit, None, action)

    def delete_branch(self, dataset: str, name: str) -> bytes:
        """Delete a branch, whatever it holds; return the commit it held."""
        current = self.read_ref(dataset, HEADS, name)
        if current is None:
            raise NotFound(f"no branch {dataset}@{name}")
        self.delete_ref(dataset, HEADS, name, current)
        return current.commit

    def delete_tag(self, dataset: str, name: str) -> bytes:
        """Delete a tag; return the commit it held."""
        current = self.read_ref(dataset, TAGS, name)
        if current is None:
            raise NotFound(f"no tag {dataset}@{name}")
        self.delete_ref(dataset, TAGS, name, current)
        return current.commit

    def delete_dataset(self, dataset: str) -> dict[str, bytes]:
        """Delete every ref of a dataset, each with a ref log entry "rm"; return
        what they held ("heads/NAME" or "tags/NAME" -> commit). Its objects stay
        until gc finds them unreachable and older than its grace period."""
        # Tags first and the default branch last: an rm cut short leaves a dataset
        # that `vfs ls` still shows and a bare name still reads.
        order = [(TAGS, name) for name in self.refs(dataset, TAGS)]
        order += sorted(
            ((HEADS, name) for name in self.refs(dataset, HEADS)),
            key=lambda ref: ref[1] == DEFAULT_BRANCH,
        )
        gone: dict[str, bytes] = {}
        for kind, name in order:
            current = self.read_ref(dataset, kind, name)
            if current is None:
                continue  # deleted meanwhile, by someone who logged it
            self.delete_ref(dataset, kind, name, current, "rm")
            gone[f"{kind}/{name}"] = current.commit
        return gone

    def dataset_exists(self, dataset: str) -> bool:
        """Whether the dataset has a ref now (a removed dataset has none, but keeps
        its ref log: reflog.has_entries)."""
        check_name(dataset, "dataset")
        if self.offline is not None:
            return dataset in self.offline.commits
        return any(True for _ in self.backend.list(f"refs/{dataset}/"))

    def find_objects(self, hex_prefix: str) -> list[bytes]:
        """Object ids starting with a hex prefix (at least 4 digits)."""
        if len(hex_prefix) < 4:
            raise UsageError("an id prefix needs at least 4 hex digits")
        if self.offline is not None:
            pinned = set().union(*self.offline.commits.values())
            return sorted(c for c in pinned if c.hex().startswith(hex_prefix))
        out = []
        for key in self.backend.list(f"objects/{hex_prefix[:2]}/{hex_prefix}"):
            name = key.rsplit("/", 1)[-1]
            if len(name) == 2 * fmt.ID_LEN and name.startswith(hex_prefix):
                out.append(bytes.fromhex(name))
        return out
