"""Lineage: what a version was made from, recorded at commit and read back.

`vfs commit --input DS@REF` and `--access-record FILE` build extra commit metadata
here (vfs/ops/commit.py stores whatever meta it is given):

    vfs.input.<n>        DATASET@<64-hex commit id> of each input, n = 0, 1, ...
    vfs.input.<n>.store  the input's store URL, only when it is not this store
    vfs.access           the 64-hex id of an access record object (kind VACR,
                         docs/format.md): the files and byte ranges the run read.
                         A reference: gc must keep the object while the commit lives.
                         The versions it read are inputs too (vfs.input.*), named
                         by --input or not.
    git.rev, git.dirty   the code's revision: the committed directory's work tree,
                         else the working directory's (then git.from = "cwd")

`vfs show --lineage` walks vfs.input.* back to versions that have none (the raw
data); `vfs show --inputs` decodes vfs.access against the versions it names.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vfs import access, refs
from vfs import format as fmt
from vfs.errors import NotFound, UsageError, VfsError
from vfs.ops.commit import git_info
from vfs.reader import Version
from vfs.store import TAGS, Store

INPUT = "vfs.input."
ACCESS = "vfs.access"
STORE_SEP = "::"  # --input s3://other/prefix::DS@REF names an input in another store
MAX_DEPTH = 64  # lineage is a DAG of commits; the bound only guards a hostile store


@dataclass(frozen=True)
class Input:
    dataset: str
    commit: bytes
    store: str | None = None  # None: the same store as the commit that names it

    @property
    def spec(self) -> str:
        return f"{self.dataset}@{self.commit.hex()}"


def _split(text: str) -> tuple[str | None, str]:
    url, sep, spec = text.rpartition(STORE_SEP)
    return (url, spec) if sep else (None, text)


def _open(url: str) -> Store:
    """The store at `url` (or a remote's name), reached at the endpoint the config
    gives it: an input recorded as s3://registry/walk is read at the endpoint of the
    remote with that URL, as every verb reads it (vfs.config.resolve_store)."""
    from vfs.ops.base import store_target

    target = store_target(url)
    return Store.open(target.url, target.endpoint_url)


def resolve_inputs(
    store: Store, texts: list[str], open_store: Callable[[str], Store] = _open
) -> list[Input]:
    """Each `[STORE_URL::]DATASET[@REF]` resolved to its full commit id."""
    out = []
    for text in texts:
        url, spec = _split(text)
        if url is None or url == store.url:
            out.append(Input(refs.parse_spec(spec).dataset, refs.resolve(store, spec).commit))
            continue
        other = open_store(url)
        try:
            other.check_config()
            r = refs.resolve(other, spec)
            out.append(Input(r.spec.dataset, r.commit, other.url))
        finally:
            other.close()
    return out


def code_rev(src: str) -> dict[str, str]:
    """The code's git revision, for a commit of `src` not inside a work tree: the
    working directory's (a training script commits ./model from its repo's root, or
    from a scratch directory outside it). {} when both are outside git or src is in
    a work tree (vfs/ops/commit.py records that one itself)."""
    if git_info(src):
        return {}
    here = git_info(os.getcwd())
    return {**here, "git.from": "cwd"} if here else {}


def _read_versions(store: Store, record: access.Record, named: list[Input]) -> list[Input]:
    """The versions an access record read that `named` lacks, as inputs of this store:
    what a run read is what its result was made from. A version this store does not
    have (it came from another store) must be named with --input STORE::DS@REF."""
    have = {i.spec for i in named}
    out = []
    for version in record:
        if version in have:
            continue
        dataset, _, hexid = version.rpartition("@")
        commit = bytes.fromhex(hexid)
        if not store.has_object(commit):
            raise UsageError(
                f"the access record read {dataset}@{hexid[:12]}, which is not in "
                f"{store.url}: name it with --input STORE_URL::{dataset}@{hexid[:12]}"
            )
        out.append(Input(dataset, commit))
    return out


def commit_meta(
    store: Store, src: str, inputs: list[str], access_records: list[str]
) -> dict[str, str]:
    """The lineage metadata of a commit of `src` (see the module docstring). The
    versions an access record read are inputs too, named or not."""
    meta = code_rev(src)
    named = resolve_inputs(store, inputs)
    record = access.merge(access.load(f) for f in access_records) if access_records else None
    if record is not None:
        named += _read_versions(store, record, named)
    for n, i in enumerate(named):
        meta[f"{INPUT}{n}"] = i.spec
        if i.store:
            meta[f"{INPUT}{n}.store"] = i.store
    if record is not None:
        meta[ACCESS] = store.put_object(fmt.encode_access(record)).hex()
    return meta


def inputs_of(meta: dict[str, str]) -> list[Input]:
    """The inputs a commit's meta records, in order."""
    out = []
    n = 0
    while (spec := meta.get(f"{INPUT}{n}")) is not None:
        dataset, _, hexid = spec.rpartition("@")
        try:
            commit = bytes.fromhex(hexid)
        except ValueError:
            raise VfsError(f"commit meta {INPUT}{n} = {spec!r} is not DATASET@ID") from None
        out.append(Input(dataset, commit, meta.get(f"{INPUT}{n}.store")))
        n += 1
    return out


@dataclass
class Node:
    """One version in a lineage graph, with the versions it was made from."""

    dataset: str
    commit: bytes
    store: str | None  # None: the store the graph started in
    tags: list[str] = field(default_factory=list)
    message: str = ""
    time: str = ""
    git: str = ""  # the code's revision, "+dirty" appended when it was dirty
    access: str = ""  # the id of its access record, if one is attached
    inputs: list[Node] = field(default_factory=list)
    error: str = ""  # why this version could not be read (the graph stops here)
    seen: bool = False  # already shown above: its inputs are not repeated

    def to_json(self) -> dict[str, Any]:
        """Every key on every node, null where there is nothing (store: the store
        the graph started in), so that a consumer need not test for keys."""
        return {
            "dataset": self.dataset,
            "id": self.commit.hex(),
            "store": self.store or None,
            "tags": self.tags,
            "message": self.message,
            "time": self.time,
            "git": self.git or None,
            "access": self.access or None,
            "error": self.error or None,
            "inputs": [i.to_json() for i in self.inputs],
        }


class _Stores:
    """The stores a lineage walk meets, opened once each."""

    def __init__(self, home: Store) -> None:
        self.home = home
        self.opened: dict[str, Store] = {}

    def get(self, url: str | None) -> Store:
        if url is None or url == self.home.url:
            return self.home
        s = self.opened.get(url)
        if s is None:
            s = self.opened[url] = _open(url)
        return s

    def close(self) -> None:
        for s in self.opened.values():
            s.close()


def lineage(store: Store, spec: str) -> Node:
    """The graph of the version `spec` names back to versions with no inputs."""
    r = refs.resolve(store, spec)
    stores = _Stores(store)
    seen: set[tuple[str | None, bytes]] = set()
    tags: dict[tuple[str | None, str], dict[bytes, list[str]]] = {}

    def tags_of(s: Store, url: str | None, dataset: str, commit: bytes) -> list[str]:
        key = (url, dataset)
        if key not in tags:
            names: dict[bytes, list[str]] = {}
            for name, cid in s.refs(dataset, TAGS).items():
                names.setdefault(cid, []).append(name)
            tags[key] = names
        return sorted(tags[key].get(commit, []))

    def visit(i: Input, depth: int) -> Node:
        node = Node(i.dataset, i.commit, i.store)
        if (i.store, i.commit) in seen:
            node.seen = True
            return node
        seen.add((i.store, i.commit))
        try:
            s = stores.get(i.store)
            c = s.get_commit(i.commit)
            node.tags = tags_of(s, i.store, i.dataset, i.commit)
        except (VfsError, OSError) as e:
            node.error = str(e)
            return node
        node.message, node.time = c.message, c.time
        if "git.rev" in c.meta:
            dirty = "+dirty" if c.meta.get("git.dirty") == "true" else ""
            node.git = c.meta["git.rev"] + dirty
        node.access = c.meta.get(ACCESS, "")
        if depth >= MAX_DEPTH:
            node.error = f"lineage deeper than {MAX_DEPTH}; not followed further"
            return node
        for sub in inputs_of(c.meta):
            node.inputs.append(
                visit(Input(sub.dataset, sub.commit, sub.store or i.store), depth + 1)
            )
        return node

    try:
        return visit(Input(r.spec.dataset, r.commit, None), 0)
    finally:
        stores.close()


# --- what a model read ---------------------------------------------------------------


@dataclass(frozen=True)
class FileRead:
    path: str
    read: int  # bytes read (the union of the ranges)
    size: int  # the file's size in that version; -1 if the version has no such file
    ranges: list[tuple[int, int]]


@dataclass
class VersionRead:
    version: str  # DATASET@<hex>
    tags: list[str]
    files: list[FileRead]
    version_files: int  # files in the whole version
    version_bytes: int
    error: str = ""


def inputs_read(store: Store, spec: str) -> tuple[str, list[VersionRead]]:
    """The access record attached to `spec`'s commit, against the versions it names:
    each file read, bytes read of its size. Returns (record id, versions)."""
    r = refs.resolve(store, spec)
    c = store.get_commit(r.commit)
    rid = c.meta.get(ACCESS)
    if rid is None:
        raise NotFound(
            f"{spec} ({r.commit.hex()[:12]}) has no access record "
            "(vfs commit --access-record FILE attaches one)"
        )
    what = f"access record {rid[:16]}"
    try:
        oid = bytes.fromhex(rid)
    except ValueError:
        raise VfsError(f"commit meta {ACCESS} = {rid!r} is not an id") from None
    record = fmt.decode_access(store.get_object(oid, what), what)
    stores = _Stores(store)
    by_version = {i.spec: i.store for i in inputs_of(c.meta)}
    out = []
    try:
        for version, files in record.items():
            dataset, _, hexid = version.rpartition("@")
            commit = bytes.fromhex(hexid)
            try:
                s = stores.get(by_version.get(version))
                v = Version(s, dataset, commit)
                tags = sorted(n for n, cid in s.refs(dataset, TAGS).items() if cid == commit)
            except (VfsError, OSError) as e:
                out.append(VersionRead(version, [], _unsized(files), 0, 0, str(e)))
                continue
            rows = []
            for path, ranges in files.items():
                try:
                    found = v.stat(path)
                except NotFound:
                    found = None
                size = found.entry.size if found is not None and found.entry.is_file else -1
                rows.append(FileRead(path, sum(e - s for s, e in ranges), size, ranges))
            out.append(VersionRead(version, tags, rows, v.commit.files, v.commit.bytes))
    finally:
        stores.close()
    return rid, out


def _unsized(files: dict[str, list[tuple[int, int]]]) -> list[FileRead]:
    return [FileRead(p, sum(e - s for s, e in r), -1, r) for p, r in files.items()]
