"""What a pinned version needs from its store that is not an object: the store's
config and the refs the version was pinned by. `vfs cache pin` records them here, in
the cache directory, so that `vfs mount` of a pinned version works with the store out
of reach (everything else it needs, the commit, pages, locations and chunks, is in
the chunk cache and pinned there).

One JSON file per store (`offline/<hash of the store URL>.json`, named in
vfs.cache.layout), rewritten whole under a lock and renamed into place, so readers
never see half of it:

    {"store": URL, "config": {...the store's config...},
     "pins": {"ds@<commit hex>": {"dataset": "ds", "commit": HEX, "refs": ["tags/v1"]}}}

A ref recorded here is what the ref named when it was pinned: a mount that serves it
offline shows that version, and says it is offline. Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vfs import perms
from vfs.cache.layout import offline_dir
from vfs.names import natural_key


def _path(cache_root: str, store_url: str) -> str:
    digest = hashlib.sha256(store_url.encode()).hexdigest()[:24]
    return os.path.join(offline_dir(cache_root), f"{digest}.json")


@contextlib.contextmanager
def _locked(cache_root: str, store_url: str) -> Iterator[str]:
    path = _path(cache_root, store_url)
    perms.make_dirs(os.path.dirname(path))
    with open(path + ".lock", "a") as lock:
        perms.share_file(lock.fileno(), os.path.dirname(path))
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield path


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _save(path: str, doc: dict[str, Any]) -> None:
    perms.write_file(path, json.dumps(doc, sort_keys=True, indent=1))


def remember(
    cache_root: str,
    store_url: str,
    config: dict[str, Any],
    pin_name: str,
    dataset: str,
    commit: bytes,
    ref: str | None,
) -> None:
    """Record that `pin_name` pins `commit` of `dataset`, named by `ref`
    ("tags/v1", "heads/main") or by its id (None)."""
    with _locked(cache_root, store_url) as path:
        doc = _load(path)
        doc["store"] = store_url
        doc["config"] = config
        pins = doc.setdefault("pins", {})
        entry = pins.setdefault(pin_name, {"dataset": dataset, "commit": commit.hex(), "refs": []})
        if ref is not None and ref not in entry["refs"]:
            entry["refs"].append(ref)
        _save(path, doc)


def forget(cache_root: str, store_url: str, pin_name: str) -> None:
    """Drop what `remember` recorded for `pin_name` (the pin is gone)."""
    path = _path(cache_root, store_url)
    if not os.path.exists(path):
        return
    with _locked(cache_root, store_url) as path:
        doc = _load(path)
        if doc.get("pins", {}).pop(pin_name, None) is not None:
            _save(path, doc)


@dataclass(frozen=True)
class OfflineRefs:
    """The refs and commits a store's pins recorded, to resolve versions offline."""

    store_url: str
    config: dict[str, Any]
    refs: dict[tuple[str, str], bytes]  # (dataset, "tags/v1") -> commit
    commits: dict[str, set[bytes]]  # dataset -> pinned commits

    def ref(self, dataset: str, kind: str, name: str) -> bytes | None:
        return self.refs.get((dataset, f"{kind}/{name}"))

    def listing(self, dataset: str, kind: str) -> dict[str, bytes]:
        prefix = kind + "/"
        found = {
            ref[len(prefix) :]: commit
            for (ds, ref), commit in self.refs.items()
            if ds == dataset and ref.startswith(prefix)
        }
        return dict(sorted(found.items(), key=lambda item: natural_key(item[0])))

    def datasets(self) -> list[str]:
        return sorted(self.commits)


def load(cache_root: str, store_url: str) -> OfflineRefs | None:
    """What the pins of `store_url` recorded, or None if there is nothing usable."""
    doc = _load(_path(cache_root, store_url))
    config = doc.get("config")
    if doc.get("store") != store_url or not isinstance(config, dict):
        return None
    refs: dict[tuple[str, str], bytes] = {}
    commits: dict[str, set[bytes]] = {}
    for entry in doc.get("pins", {}).values():
        try:
            dataset, commit = str(entry["dataset"]), bytes.fromhex(entry["commit"])
            names = [str(r) for r in entry.get("refs", [])]
        except (KeyError, TypeError, ValueError):
            continue
        commits.setdefault(dataset, set()).add(commit)
        for ref in names:
            refs[(dataset, ref)] = commit
    return OfflineRefs(store_url, config, refs, commits)
