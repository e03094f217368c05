"""`vfs lock`: pin datasets to exact version ids in a vfs.lock, and check it.

The file's bytes are vfs/lock.py's; this module resolves the refs it records and
compares them with the store.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from vfs import lock
from vfs.errors import NotFound, UsageError
from vfs.refs import parse_spec, resolve
from vfs.store import Store


def lock_specs(store: Store, specs: list[str], path: str) -> dict[str, lock.Locked]:
    """Resolve each DATASET@REF in `store` and write (or update) the lock file at
    `path`; entries of other datasets already in it are kept. Returns the new entries."""
    new: dict[str, lock.Locked] = {}
    now = lock.utc_now()
    for text in specs:
        spec = parse_spec(text)
        if spec.dataset in new:
            raise UsageError(f"{spec.dataset} named twice; a lock holds one version a dataset")
        r = resolve(store, spec)
        ref = str(spec).partition("@")[2]
        new[spec.dataset] = lock.Locked(spec.dataset, ref, r.commit.hex(), store.url, now)
    entries = lock.read(path) if os.path.exists(path) else {}
    entries.update(new)
    lock.write(path, entries)
    return new


@dataclass(frozen=True)
class Moved:
    """A locked ref that now names another version (or nothing)."""

    entry: lock.Locked
    now: str | None  # the id the ref names today; None if it no longer resolves
    why: str = ""


def check(
    entries: dict[str, lock.Locked], open_store: Callable[[str], Store] | None = None
) -> list[Moved]:
    """Each locked ref whose current id differs from the locked one, or that no longer
    exists, in the store each entry names. A store is opened as every verb opens one
    named by URL (an s3:// URL of a remote takes its endpoint), or by `open_store`; a
    store that cannot be read raises, since that says nothing of the ref."""
    from vfs.ops.base import open_store as open_url

    opener = open_store or open_url
    moved = []
    stores: dict[str, Store] = {}
    try:
        for name in sorted(entries):
            e = entries[name]
            store = stores.get(e.store)
            if store is None:
                store = stores[e.store] = opener(e.store)
            try:
                now = resolve(store, f"{e.dataset}@{e.ref}").commit.hex()
            except NotFound as err:  # a deleted ref or dataset has moved too
                moved.append(Moved(e, None, str(err)))
                continue
            if now != e.commit:
                moved.append(Moved(e, now))
    finally:
        for s in stores.values():
            s.close()
    return moved
