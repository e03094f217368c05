"""`vfs import` and `vfs update`: a version of another store, brought into this one
with a record of where it came from.

An import copies the tree of the source version (its pages, locations, packs: only
what this store lacks, vfs/ops/transfer.py) and writes a NEW commit here, on the
default branch of the dataset it is imported as, whose tree is the source's tree (so
the content id is the same), and whose meta records the source (docs/format.md):

    vfs.source.store    the source store's URL (never credentials)
    vfs.source.remote   the remote name the user gave, if any
    vfs.source.dataset  the source dataset
    vfs.source.ref      the ref as given (a branch, a tag, an id)
    vfs.source.commit   the source commit's id

The source's history is not copied: the imported dataset's history is the history of
its imports. A model's lineage (`vfs.input.<n>`) is kept, each input pointed at the
store where it lives (`vfs.input.<n>.store`), so an imported model still says which
dataset version it was trained on.

`vfs update NAME` reads NAME's head, resolves the recorded ref in the recorded store
again, and imports once more if it moved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from vfs import format as fmt
from vfs.defaults import DEFAULT_BRANCH
from vfs.errors import NotFound, RefConflict, VfsError
from vfs.names import check_name
from vfs.ops.base import open_store
from vfs.ops.commit import commit_and_move, default_author, utc_now
from vfs.ops.gc import Marker
from vfs.ops.history import SOURCE, source_line, source_of
from vfs.ops.lineage import INPUT, inputs_of
from vfs.ops.transfer import DEFAULT_JOBS, Progress, Stats, copy_closure, take_lease
from vfs.refs import resolve, short
from vfs.store import HEADS, Store


@dataclass
class ImportResult:
    dataset: str  # as imported here
    branch: str
    commit: bytes  # the new commit here (the current head when up to date)
    source: dict[str, str]  # as source_of gives it
    up_to_date: bool
    stats: Stats

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "branch": self.branch,
            "commit": self.commit.hex(),
            "imported_from": self.source,
            "up_to_date": self.up_to_date,
            **self.stats.to_json(),
        }

    @property
    def line(self) -> str:
        return source_line(self.source)


def _lineage_meta(src: Store, meta: dict[str, str]) -> dict[str, str]:
    """The source commit's inputs, each naming the store it lives in."""
    out: dict[str, str] = {}
    for n, i in enumerate(inputs_of(meta)):
        out[f"{INPUT}{n}"] = i.spec
        out[f"{INPUT}{n}.store"] = i.store or src.url
    return out


def import_version(
    store: Store,
    src: Store,
    spec: str,
    *,
    remote: str | None = None,
    as_name: str | None = None,
    message: str | None = None,
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
) -> ImportResult:
    """Import the version `spec` of `src` into `store` as dataset `as_name` (default:
    the same name). A dataset of that name must be absent, or an import of the same
    source dataset (then the import is a new commit on top)."""
    t0 = time.monotonic()
    progress = progress or Progress()
    src.check_config()
    r = resolve(src, spec)
    store.ensure_config()
    name = check_name(as_name or r.spec.dataset, "dataset")
    c = src.get_commit(r.commit)
    ref = r.spec.ref + (f"~{r.spec.back}" if r.spec.back else "")
    source = {"store": src.url, "dataset": r.spec.dataset, "ref": ref, "commit": r.commit.hex()}
    if remote:
        source["remote"] = remote
    head = store.read_ref(name, HEADS, DEFAULT_BRANCH)
    if head is None and store.dataset_exists(name):
        raise RefConflict(
            f"dataset {name!r} in {store.url} has no branch {DEFAULT_BRANCH!r}; import "
            "under another name with --as NAME"
        )
    if head is not None:
        before = source_of(store.get_commit(head.commit).meta)
        if before is None:
            raise RefConflict(
                f"dataset {name!r} already exists in {store.url} and was not imported; "
                "import under another name with --as NAME"
            )
        if (before.get("store"), before.get("dataset")) != (src.url, r.spec.dataset):
            raise RefConflict(
                f"dataset {name!r} in {store.url} was {source_line(before)}; import "
                f"{r.spec.dataset} under another name with --as NAME"
            )
        if before.get("commit") == r.commit.hex():
            return ImportResult(name, DEFAULT_BRANCH, head.commit, before, True, Stats())

    progress.phase(f"walking {r.spec.dataset}@{short(r.commit)}")
    marker = Marker(src, workers=jobs)
    marker.walk_trees([c.tree])
    lease = take_lease(store, progress)
    try:
        stats = copy_closure(src, store, marker, progress, jobs)
        meta = {f"{SOURCE}{k}": v for k, v in source.items()}
        meta.update(_lineage_meta(src, c.meta))
        # The source's access record (vfs.access) is not carried: it names an object of
        # the source store, and an import is not the run that read those files.
        label = f"{remote}:" if remote else ""
        template = fmt.Commit(
            tree=c.tree,
            parents=(),
            author=default_author(),
            time=utc_now(),
            message=message or f"import {label}{r.spec.dataset}@{ref}: {c.message}".rstrip(": "),
            meta=meta,
            files=c.files,
            bytes=c.bytes,
        )
        progress.phase("committing")
        cid, _, _ = commit_and_move(
            store, name, DEFAULT_BRANCH, head, template, "import", check=lease.check
        )
    finally:
        lease.release()
        progress.close()
    stats.seconds = time.monotonic() - t0
    return ImportResult(name, DEFAULT_BRANCH, cid, source, False, stats)


def recorded_source(store: Store, name: str) -> dict[str, str]:
    """Where `name`'s head was imported from; VfsError (exit 1: well-formed, but
    nothing to do it with) if it was not imported."""
    head = store.read_ref(check_name(name, "dataset"), HEADS, DEFAULT_BRANCH)
    if head is None:
        raise NotFound(f"no dataset {name!r} (branch {DEFAULT_BRANCH}) in {store.url}")
    src = source_of(store.get_commit(head.commit).meta)
    if src is None or not {"store", "dataset", "ref"} <= src.keys():
        raise VfsError(
            f"{name}@{DEFAULT_BRANCH} ({short(head.commit)}) was not imported: its commit "
            f"records no {SOURCE}* source, so there is nothing to update from"
        )
    return src


def update(
    store: Store,
    name: str,
    *,
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
) -> ImportResult:
    """Import `name`'s recorded source again if its ref moved; else say it is up to
    date (ImportResult.up_to_date)."""
    src_doc = recorded_source(store, name)
    # The store is opened by the URL recorded: a remote name may have been renamed or
    # pointed elsewhere since, and the URL is what the version came from.
    src = open_store(src_doc["store"])
    try:
        return import_version(
            store,
            src,
            f"{src_doc['dataset']}@{src_doc['ref']}",
            remote=src_doc.get("remote"),
            as_name=name,
            jobs=jobs,
            progress=progress,
        )
    finally:
        src.close()
