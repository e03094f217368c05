"""Log, tags and branches: reading a dataset's history and changing its refs.

`vfs log`, `vfs tag`, `vfs branch`, `vfs rm`, `vfs reflog` and the dataset listing of
`vfs ls` gather their data here. Tags are created once and never move (a mistyped one
can be deleted); branches are created, listed and deleted. Deletes are guarded (the
default branch, a branch no other ref reaches) and undoable: every ref change is in
the dataset's ref log (vfs/reflog.py), and a deleted ref is recreated from its id.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from typing import Any

from vfs import format as fmt
from vfs import reflog, refs
from vfs.errors import NotFound, RefConflict, UsageError, VfsError
from vfs.names import check_name
from vfs.store import HEADS, TAGS, Store


def ref_names(store: Store, dataset: str) -> dict[bytes, list[str]]:
    """Commit id -> the branches and tags ('tag: NAME') of `dataset` pointing at it."""
    names: dict[bytes, list[str]] = {}
    for name, cid in store.refs(dataset, HEADS).items():
        names.setdefault(cid, []).append(name)
    for name, cid in store.refs(dataset, TAGS).items():
        names.setdefault(cid, []).append(f"tag: {name}")
    return names


# The meta keys of an imported version (`vfs import`, docs/format.md): where it came from.
SOURCE = "vfs.source."
SOURCE_FIELDS = ("store", "remote", "dataset", "ref", "commit")


def source_of(meta: dict[str, str]) -> dict[str, str] | None:
    """Where an imported version came from (store, remote if one was named, dataset,
    ref as given, commit id), or None for a version that was not imported."""
    if f"{SOURCE}commit" not in meta:
        return None
    return {k: meta[f"{SOURCE}{k}"] for k in SOURCE_FIELDS if f"{SOURCE}{k}" in meta}


def source_line(src: dict[str, str]) -> str:
    """'imported from team:imagenet@v3 (commit abcd1234) at s3://team/vfs'."""
    remote = f"{src['remote']}:" if src.get("remote") else ""
    name = f"{remote}{src.get('dataset', '?')}@{src.get('ref', '?')}"
    return f"imported from {name} (commit {src['commit'][:12]}) at {src.get('store', '?')}"


def commit_doc(cid: bytes, c: fmt.Commit, names: dict[bytes, list[str]]) -> dict[str, Any]:
    """A commit as `vfs log --json` and `vfs show` print it; an imported one also
    says where from (`imported_from`)."""
    doc: dict[str, Any] = {
        "id": cid.hex(),
        "parents": [p.hex() for p in c.parents],
        "tree": c.tree.hex(),
        "author": c.author,
        "time": c.time,
        "message": c.message,
        "meta": c.meta,
        "files": c.files,
        "bytes": c.bytes,
        "refs": names.get(cid, []),
    }
    src = source_of(c.meta)
    if src is not None:
        doc["imported_from"] = src
    return doc


def log_docs(store: Store, spec: str, max_count: int | None = None) -> list[dict[str, Any]]:
    """The commits reachable from `spec` by first parents, newest first; at most
    `max_count` of them (None: all; 0: none, as `git log -n 0`)."""
    r = refs.resolve(store, spec)
    if max_count == 0:
        return []
    names = ref_names(store, r.spec.dataset)
    docs = []
    cid: bytes | None = r.commit
    seen = set()
    while cid is not None and cid not in seen:
        seen.add(cid)
        c = store.get_commit(cid)
        docs.append(commit_doc(cid, c, names))
        if max_count is not None and len(docs) >= max_count:
            break
        cid = c.parents[0] if c.parents else None
    return docs


def datasets(store: Store) -> list[dict[str, Any]]:
    """Every dataset of the store: its branches, tags, and the size of its main head
    (else of another branch's head, else of its newest tagged version)."""
    docs: list[dict[str, Any]] = []
    for ds in store.datasets():
        branches = store.refs(ds, HEADS)
        tags = store.refs(ds, TAGS)
        head = branches.get(refs.DEFAULT_BRANCH) or next(iter(branches.values()), None)
        c = store.get_commit(head) if head else None
        if c is None and tags:  # only tags (a pulled or pushed tag): its newest version
            _, newest = max(tags.items(), key=lambda kv: (store.get_commit(kv[1]).time, kv[0]))
            c = store.get_commit(newest)
        docs.append(
            {
                "dataset": ds,
                "branches": {k: v.hex() for k, v in branches.items()},
                "tags": {k: v.hex() for k, v in tags.items()},
                "files": c.files if c else 0,
                "bytes": c.bytes if c else 0,
                "updated": c.time if c else None,
            }
        )
    return docs


def tags(store: Store, spec: str) -> dict[str, bytes]:
    """The tags of the dataset `spec` names (a bare DATASET)."""
    s = refs.parse_spec(spec)
    if s.explicit:
        raise UsageError("to list tags give just the DATASET; to create one give DATASET@REF NAME")
    return store.refs(s.dataset, TAGS)


def create_tag(store: Store, spec: str, name: str) -> tuple[str, bytes]:
    """Tag the version `spec` names as NAME; return its dataset and commit id."""
    s = refs.parse_spec(spec)
    check_name(name, "tag")
    r = refs.resolve(store, s)
    store.create_tag(s.dataset, name, r.commit)
    return s.dataset, r.commit


def branches(store: Store, spec: str) -> dict[str, bytes]:
    """The branches of the dataset `spec` names; NotFound for no such dataset."""
    s = refs.parse_spec(spec)
    if s.explicit:
        raise UsageError(
            "to list branches give just the DATASET; to create one give DATASET@REF NAME"
        )
    found = store.refs(s.dataset, HEADS)
    if not found and not store.dataset_exists(s.dataset):
        raise refs.no_dataset(store, s.dataset)
    return found


def create_branch(store: Store, spec: str, name: str) -> tuple[str, bytes]:
    """Create branch NAME at the version `spec` names; RefConflict if it exists."""
    s = refs.parse_spec(spec)
    check_name(name, "branch")
    r = refs.resolve(store, s)
    if not store.set_branch(s.dataset, name, r.commit, None, action="branch"):
        raise RefConflict(f"branch {s.dataset}@{name} already exists")
    return s.dataset, r.commit


@dataclass(frozen=True)
class Deleted:
    """A ref that a delete removed, and the commit it held (to restore it by)."""

    dataset: str
    ref: str  # heads/NAME or tags/NAME
    commit: bytes

    @property
    def name(self) -> str:
        return self.ref.partition("/")[2]

    @property
    def restore(self) -> str:
        """The command that recreates the ref (until gc's grace period has passed)."""
        verb = "tag" if self.ref.startswith(f"{TAGS}/") else "branch"
        return f"vfs {verb} {self.dataset}@{refs.short(self.commit)} {self.name}"


def _dataset_of(spec: str, verb: str) -> str:
    s = refs.parse_spec(spec)
    if s.explicit:
        raise UsageError(f"{verb} takes DATASET NAME, not a version ({spec!r})")
    return s.dataset


def delete_branch(store: Store, spec: str, name: str | None, force: bool = False) -> Deleted:
    """Delete branch NAME of the dataset `spec` names.

    Refused for the default branch (a bare DATASET names it, so deleting it breaks
    every such spec), and, unless `force`, for a branch whose head no other ref of
    the dataset reaches (git's -d and -D). The delete itself is checked against the
    head that was examined (Store.delete_ref)."""
    dataset = _dataset_of(spec, "branch -d")
    if not name:
        raise UsageError("branch -d needs DATASET NAME")
    check_name(name, "branch")
    if name == refs.DEFAULT_BRANCH:
        raise VfsError(
            f"refusing to delete {dataset}@{name}: it is the default branch, the one a bare "
            f"{dataset!r} names. Move it with `vfs rollback`, or remove the whole dataset "
            f"with `vfs rm {dataset}`"
        )
    head = store.read_ref(dataset, HEADS, name)
    if head is None:
        raise NotFound(f"no branch {dataset}@{name}")
    if not force:
        lost = unreachable_if_deleted(store, dataset, HEADS, name, head.commit)
        if lost:
            what = "commit" if lost == 1 else "commits"
            raise VfsError(
                f"branch {dataset}@{name} holds {lost} {what} that no other branch or tag of "
                f"{dataset} reaches; delete it anyway with `vfs branch -D {dataset} {name}` "
                "(restorable by id until gc's grace period has passed)"
            )
    store.delete_ref(dataset, HEADS, name, head)
    return Deleted(dataset, f"{HEADS}/{name}", head.commit)


def unreachable_if_deleted(store: Store, dataset: str, kind: str, name: str, head: bytes) -> int:
    """How many commits reachable from `head` no other ref of `dataset` reaches (by
    any parent): the commits that deleting ref `kind/name` would orphan."""
    others = [cid for n, cid in store.refs(dataset, HEADS).items() if kind != HEADS or n != name]
    others += [cid for n, cid in store.refs(dataset, TAGS).items() if kind != TAGS or n != name]
    if head in others:
        return 0
    kept = _ancestors(store, others, frozenset())
    return len(_ancestors(store, [head], kept))


def _ancestors(store: Store, starts: list[bytes], stop: Set[bytes]) -> set[bytes]:
    seen: set[bytes] = set()
    todo = [c for c in starts if c not in stop]
    while todo:
        cid = todo.pop()
        if cid in seen:
            continue
        seen.add(cid)
        todo.extend(p for p in store.get_commit(cid).parents if p not in stop and p not in seen)
    return seen


def delete_tag(store: Store, spec: str, name: str | None) -> Deleted:
    """Delete tag NAME of the dataset `spec` names (a mistyped tag can go; tags
    still never move)."""
    dataset = _dataset_of(spec, "tag -d")
    if not name:
        raise UsageError("tag -d needs DATASET NAME")
    check_name(name, "tag")
    return Deleted(dataset, f"{TAGS}/{name}", store.delete_tag(dataset, name))


def dataset_refs(store: Store, dataset: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The branches and tags of `dataset`; NotFound if it has none."""
    check_name(dataset, "dataset")
    branches, tags = store.refs(dataset, HEADS), store.refs(dataset, TAGS)
    if not branches and not tags:
        raise refs.no_dataset(store, dataset)
    return branches, tags


def remove_dataset(store: Store, dataset: str) -> list[Deleted]:
    """Delete every ref of `dataset` (each logged as "rm"). The objects stay until
    gc finds them unreachable and older than its grace period."""
    dataset_refs(store, dataset)
    gone = [Deleted(dataset, ref, cid) for ref, cid in store.delete_dataset(dataset).items()]
    # shown branches first, the default branch at the top: the one to restore first
    return sorted(
        gone,
        key=lambda d: (d.ref.startswith(f"{TAGS}/"), d.name != refs.DEFAULT_BRANCH, d.ref),
    )


def reflog_docs(store: Store, dataset: str, max_count: int | None = None) -> list[dict[str, Any]]:
    """The ref log of `dataset`, newest first; at most `max_count` entries (None: all)."""
    check_name(dataset, "dataset")
    entries = reflog.read_reflog(store, dataset)
    if not entries and not store.dataset_exists(dataset):
        raise NotFound(f"no dataset {dataset!r} in {store.url}")
    entries.reverse()
    if max_count is not None:
        entries = entries[:max_count]
    return [e.doc() for e in entries]
