"""Log, tags and branches: reading a dataset's history and moving its refs.

`vfs log`, `vfs tag`, `vfs branch` and the dataset listing of `vfs ls` gather their
data here; tags are created once and never move, branches are created, listed and
deleted.
"""

from __future__ import annotations

from typing import Any

from vfs import format as fmt
from vfs import refs
from vfs.errors import NotFound, RefConflict, UsageError
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


def commit_doc(cid: bytes, c: fmt.Commit, names: dict[bytes, list[str]]) -> dict[str, Any]:
    """A commit as `vfs log --json` and `vfs show` print it."""
    return {
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


def log_docs(store: Store, spec: str, max_count: int = 0) -> list[dict[str, Any]]:
    """The commits reachable from `spec` by first parents, newest first; at most
    `max_count` of them unless it is 0."""
    r = refs.resolve(store, spec)
    names = ref_names(store, r.spec.dataset)
    docs = []
    cid: bytes | None = r.commit
    seen = set()
    while cid is not None and cid not in seen:
        seen.add(cid)
        c = store.get_commit(cid)
        docs.append(commit_doc(cid, c, names))
        if max_count and len(docs) >= max_count:
            break
        cid = c.parents[0] if c.parents else None
    return docs


def datasets(store: Store) -> list[dict[str, Any]]:
    """Every dataset of the store: its branches, tags, and the size of its main head."""
    docs: list[dict[str, Any]] = []
    for ds in store.datasets():
        branches = store.refs(ds, HEADS)
        tags = store.refs(ds, TAGS)
        head = branches.get(refs.DEFAULT_BRANCH) or next(iter(branches.values()), None)
        c = store.get_commit(head) if head else None
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
    found = store.refs(s.dataset, HEADS)
    if not found and not store.dataset_exists(s.dataset):
        raise NotFound(f"no dataset {s.dataset!r} in {store.url}")
    return found


def create_branch(store: Store, spec: str, name: str) -> tuple[str, bytes]:
    """Create branch NAME at the version `spec` names; RefConflict if it exists."""
    s = refs.parse_spec(spec)
    check_name(name, "branch")
    r = refs.resolve(store, s)
    if not store.set_branch(s.dataset, name, r.commit, None):
        raise RefConflict(f"branch {s.dataset}@{name} already exists")
    return s.dataset, r.commit


def delete_branch(store: Store, spec: str, name: str | None) -> str:
    """Delete branch NAME of the dataset `spec` names; return the dataset."""
    s = refs.parse_spec(spec)
    if not name:
        raise UsageError("branch -d needs DATASET NAME")
    store.delete_branch(s.dataset, check_name(name, "branch"))
    return s.dataset
