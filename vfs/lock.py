"""Lock files: `vfs.lock`, the exact versions a project reads, meant for git.

This module owns the file's bytes: reading it (stdlib tomllib), writing it (a small
canonical TOML writer: every value is a string, so a well-kept TOML library would
add a dependency for four lines of escaping), and finding it by walking up from a
directory, as git finds .git. It imports only the standard library and vfs.errors:
the parent of `vfs mount --locked` reads it without importing the store.

The file holds one table per dataset, sorted by name:

    # vfs.lock: the exact versions this project reads. Written by `vfs lock`; commit it.
    [datasets."imagenet"]
    ref = "v3"
    commit = "<64 hex digits>"
    store = "s3://team/vfs"
    locked = "2026-11-27T21:50:00Z"

`ref` is the ref as written (what `vfs lock --check` compares against), `commit`
the full id every `--locked` reader uses. A store directory inside the lock file's
directory (a project's `./store`, as `core.store = "./store"` names it) is written
relative to it and read back relative to it, so that the file means the same in
every clone of the project, wherever it is checked out.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tomllib
from dataclasses import dataclass, replace

from vfs import perms
from vfs.errors import NotFound, UsageError, VfsError

LOCK_FILE = "vfs.lock"
FORMAT = "vfs-lock/1"
_HEADER = (
    "# vfs.lock: the exact versions this project reads. Written by `vfs lock`; commit it.\n"
    "# `vfs mount --locked DS MNT` and `vfs get --locked DS -o DIR` read these ids.\n"
)


@dataclass(frozen=True)
class Locked:
    """One dataset's entry in a lock file."""

    dataset: str
    ref: str  # as written by the user, e.g. v3 or main
    commit: str  # 64 hex digits
    store: str  # the store URL the ref was resolved in
    locked: str  # RFC 3339 UTC, when it was written

    @property
    def spec(self) -> str:
        """The spec that reads exactly this version: DATASET@<full id>."""
        return f"{self.dataset}@{self.commit}"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _string(s: str) -> str:
    """A TOML basic string. JSON's escapes (\\" \\\\ \\n \\t \\uXXXX) are TOML's too;
    a name that is not UTF-8 (a lone surrogate) has no TOML form and is refused."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"cannot write {s!r} into a lock file: not UTF-8") from None
    return json.dumps(s, ensure_ascii=False)


def dumps(entries: dict[str, Locked]) -> str:
    """The canonical text of a lock file: tables sorted by dataset, fixed key order."""
    out = [_HEADER, f"format = {_string(FORMAT)}\n"]
    for name in sorted(entries):
        e = entries[name]
        out.append(f"\n[datasets.{_string(name)}]\n")
        for key in ("ref", "commit", "store", "locked"):
            out.append(f"{key} = {_string(getattr(e, key))}\n")
    return "".join(out)


def loads(text: str, where: str = LOCK_FILE) -> dict[str, Locked]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise VfsError(f"{where}: not a valid lock file ({e})") from None
    if doc.get("format") != FORMAT:
        raise VfsError(f"{where}: not a {FORMAT} lock file (format = {doc.get('format')!r})")
    out = {}
    for name, t in (doc.get("datasets") or {}).items():
        try:
            commit = str(t["commit"])
            if len(commit) != 64 or any(c not in "0123456789abcdef" for c in commit):
                raise ValueError(f"commit {commit!r} is not a full id")
            out[name] = Locked(name, str(t["ref"]), commit, str(t["store"]), str(t["locked"]))
        except (KeyError, TypeError, ValueError) as e:
            raise VfsError(f"{where}: dataset {name!r}: bad entry ({e})") from None
    return out


def read(path: str) -> dict[str, Locked]:
    with open(path, encoding="utf-8") as f:
        entries = loads(f.read(), path)
    base = os.path.dirname(os.path.abspath(path))
    return {n: replace(e, store=_absolute(e.store, base)) for n, e in entries.items()}


def write(path: str, entries: dict[str, Locked]) -> None:
    """Write atomically."""
    base = os.path.dirname(os.path.abspath(path))
    entries = {n: replace(e, store=_relative(e.store, base)) for n, e in entries.items()}
    perms.write_file(path, dumps(entries))


def _relative(store: str, base: str) -> str:
    """file:///…/proj/store -> ./store, for a store inside `base`; else as it is."""
    if not store.startswith("file://"):
        return store
    path = store[len("file://") :]
    if os.path.commonpath([path, base]) != base:
        return store
    return "./" + os.path.relpath(path, base) if path != base else "."


def _absolute(store: str, base: str) -> str:
    """A store written relative to the lock file, as a file:// URL again."""
    if store == "." or store.startswith(("./", "../")):
        return "file://" + os.path.normpath(os.path.join(base, store))
    return store


def find(start: str | None = None) -> str:
    """The nearest vfs.lock in `start` (default: the working directory) or above."""
    d = os.path.abspath(start or os.getcwd())
    while True:
        p = os.path.join(d, LOCK_FILE)
        if os.path.isfile(p):
            return p
        up = os.path.dirname(d)
        if up == d:
            raise NotFound(
                f"no {LOCK_FILE} in {os.path.abspath(start or os.getcwd())} or above "
                "(vfs lock DS@REF writes one)"
            )
        d = up


def locked_spec(target: str, start: str | None = None) -> tuple[str, Locked]:
    """`DS` (or `DS@REF` with the locked REF) -> (DS@<full id>, its entry), from the
    nearest lock file. A ref other than the locked one is a usage error: --locked
    means reading exactly what the lock says."""
    path = find(start)
    entries = read(path)
    dataset, at, ref = target.partition("@")
    e = entries.get(dataset)
    if e is None:
        listed = ", ".join(sorted(entries)) or "none"
        raise NotFound(f"{path} locks no dataset {dataset!r} (it locks: {listed})")
    if at and ref not in (e.ref, e.commit):
        raise UsageError(
            f"--locked reads {dataset}@{e.ref} ({e.commit[:12]}) as {path} says, "
            f"not @{ref}; drop --locked, or run vfs lock {target}"
        )
    return e.spec, e
