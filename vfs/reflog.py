"""The ref log: one immutable entry per change of a dataset's refs.

Every branch create, move and delete, tag create and delete, and dataset removal
appends an entry (docs/format.md, "Ref log"):

    reflog/<dataset>/<ns since epoch, 20 digits>-<8 random hex>

holding canonical JSON (sorted keys, no whitespace, UTF-8, a trailing newline):

    {"action": "commit", "new": "<64 hex>", "old": "<64 hex>" | null,
     "ref": "heads/main", "time": "2026-11-27T21:19:04Z", "who": "ann@box"}

It is what makes a delete undoable: `vfs reflog DATASET` shows the ids a ref held,
and `vfs gc` keeps every id of an entry younger than its grace period (so a deleted
ref can be recreated from its id until then), and removes older entries.

Entries are appended by vfs/store.py's ref methods, after the ref change succeeded,
so no caller can forget one. Each entry has a key of its own (time plus random
digits), so concurrent writers never contend: a plain put, no compare-and-swap.
A process that dies between the ref change and the append leaves the change
unlogged; nothing else is lost.

This module talks to the store's backend only (it imports no Store at run time), so
vfs/store.py may import it.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vfs.errors import CorruptObject, NotFound
from vfs.names import check_name

if TYPE_CHECKING:
    from vfs.store import Store

PREFIX = "reflog"
ID_HEX = 64
_NS_DIGITS = 20
_RANDOM_HEX = 8


@dataclass(frozen=True)
class Entry:
    """One ref change. `old` is None for a ref that was created, `new` None for one
    that was deleted."""

    key: str  # the backend key: it orders entries, and gc deletes by it
    ns: int  # nanoseconds since the epoch, from the key
    time: str  # RFC 3339, UTC, whole seconds
    who: str
    action: str  # commit, rollback, branch, tag, delete, rm
    ref: str  # heads/NAME or tags/NAME
    old: bytes | None
    new: bytes | None

    def doc(self) -> dict[str, Any]:
        """The entry as it is stored (and as `vfs reflog --json` prints it)."""
        return {
            "action": self.action,
            "new": self.new.hex() if self.new else None,
            "old": self.old.hex() if self.old else None,
            "ref": self.ref,
            "time": self.time,
            "who": self.who,
        }


def default_who() -> str:
    """Who changes a ref: $VFS_AUTHOR, else user@host, as commits record it."""
    return os.environ.get("VFS_AUTHOR") or f"{getpass.getuser()}@{socket.gethostname()}"


def dataset_prefix(dataset: str) -> str:
    return f"{PREFIX}/{check_name(dataset, 'dataset')}/"


def encode(entry: Entry) -> bytes:
    """Canonical bytes of an entry: sorted keys, no whitespace, a trailing newline."""
    doc = json.dumps(entry.doc(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return doc.encode() + b"\n"


def append(
    store: Store, dataset: str, ref: str, old: bytes | None, new: bytes | None, action: str
) -> Entry:
    """Record that `ref` ("heads/NAME" or "tags/NAME") of `dataset` went from `old`
    to `new`; return the entry written."""
    ns = time.time_ns()
    key = f"{dataset_prefix(dataset)}{ns:0{_NS_DIGITS}d}-{secrets.token_hex(_RANDOM_HEX // 2)}"
    stamp = dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = Entry(key, ns, stamp, default_who(), action, ref, old, new)
    store.backend.put(key, encode(entry))
    return entry


def has_entries(store: Store, dataset: str) -> bool:
    """Whether `dataset` has a ref log: it had refs once, even if none is left."""
    return any(True for _ in store.backend.list(dataset_prefix(dataset)))


def read_reflog(store: Store, dataset: str) -> list[Entry]:
    """Every entry of `dataset`, oldest first. A damaged entry is an error, not
    skipped: gc must not lose the ids it protects."""
    prefix = dataset_prefix(dataset)
    out = []
    for key in store.backend.list(prefix):
        name = key[len(prefix) :]
        if "/" in name or name.startswith("."):
            continue
        try:
            data = store.backend.get(key)
        except NotFound:  # gc removed it between list and get
            continue
        out.append(decode(key, data))
    out.sort(key=lambda e: e.key)
    return out


def decode(key: str, data: bytes) -> Entry:
    """An entry from its key and stored bytes; CorruptObject if they are not one."""
    bad = CorruptObject(f"ref log entry {key} is damaged")
    stamp = key.rsplit("/", 1)[-1].partition("-")[0]
    if len(stamp) != _NS_DIGITS or not stamp.isdigit():
        raise bad
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise bad from None
    if not isinstance(doc, dict):
        raise bad
    fields = (doc.get("time"), doc.get("who"), doc.get("action"), doc.get("ref"))
    if not all(isinstance(f, str) for f in fields):
        raise bad
    return Entry(
        key,
        int(stamp),
        doc["time"],
        doc["who"],
        doc["action"],
        doc["ref"],
        _id(doc.get("old"), bad),
        _id(doc.get("new"), bad),
    )


def _id(value: object, bad: CorruptObject) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != ID_HEX:
        raise bad
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise bad from None
