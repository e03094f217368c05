"""Access records: which files, and which byte ranges of them, a run read.

This module owns the record's file format and the recorder a mount (or the Python
API, or a dataset) feeds. The format (JSON, written atomically):

    {"format": "vfs-access/1",
     "versions": {"<dataset>@<64-hex commit>": {"<path>": [[start, end], ...]}}}

Paths are relative to the version's root, '/'-separated, str with surrogateescape
for names that are not UTF-8 (so the file writes them as \\udcXX escapes); ranges
are half-open, sorted and merged. A record attached to a commit is stored as an
object of kind VACR (docs/format.md), whose body is this same document in
canonical form (vfs.format.encode_access).

Concurrency: AccessRecorder.add may be called from any thread; one lock guards its
table. add is O(1): a read that continues the previous one extends its range in
place, anything else appends; sorting and merging wait for save.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterable

from vfs import format as fmt
from vfs import perms
from vfs.errors import IsADirectory, VfsError

FORMAT = fmt.ACCESS_FORMAT

# version ("dataset@hex") -> path -> sorted, merged, half-open [start, end) ranges
Record = dict[str, dict[str, list[tuple[int, int]]]]


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, with overlapping and touching ranges joined; empty ones dropped."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def merge(records: Iterable[Record]) -> Record:
    """The union of several records (a run that mounted two datasets, or ran twice)."""
    acc: dict[str, dict[str, list[tuple[int, int]]]] = {}
    for rec in records:
        for version, files in rec.items():
            into = acc.setdefault(version, {})
            for path, ranges in files.items():
                into.setdefault(path, []).extend(ranges)
    return {
        v: {p: merge_ranges(r) for p, r in sorted(files.items())}
        for v, files in sorted(acc.items())
    }


def to_doc(record: Record) -> dict[str, object]:
    return {
        "format": FORMAT,
        "versions": {
            v: {p: [[s, e] for s, e in r] for p, r in files.items()} for v, files in record.items()
        },
    }


def from_doc(doc: object, where: str) -> Record:
    """A record from its JSON document, checked: a hand-edited or truncated file is
    refused with the reason rather than attached to a model."""
    try:
        return fmt.check_access(doc)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise VfsError(f"{where}: not a {FORMAT} access record ({e})") from None


def load(path: str) -> Record:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise VfsError(f"{path}: not a {FORMAT} access record ({e})") from None
    return from_doc(doc, path)


def _text(record: Record) -> str:
    """The document with one line per file, for people who open the file."""
    dump = json.dumps  # ASCII: a name that is not UTF-8 is its \\udcXX escape
    versions = []
    for v, files in record.items():
        rows = [f"   {dump(p)}: {dump([[s, e] for s, e in r])}" for p, r in files.items()]
        versions.append(f"  {dump(v)}: {{\n" + ",\n".join(rows) + "\n  }")
    body = ",\n".join(versions)
    return f'{{"format": {dump(FORMAT)},\n "versions": {{\n{body}\n }}\n}}\n'


def save(record: Record, path: str) -> None:
    """Write `record` to `path` atomically."""
    perms.write_file(path, _text(record))


class AccessRecorder:
    """Collects the ranges read; thread-safe (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (dataset, commit, path) -> [start0, end0, start1, end1, ...] in arrival order
        self._ranges: dict[tuple[str, bytes, str], list[int]] = {}

    def add(self, dataset: str, commit: bytes | str, path: str, offset: int, length: int) -> None:
        """Record that `length` bytes of `path` (relative to the version's root, '/'-
        separated) were read at `offset` in the version `commit` (its 32-byte id, or
        64 hex digits) of `dataset`."""
        if length <= 0:
            return
        if isinstance(commit, str):
            commit = bytes.fromhex(commit)
        key = (dataset, commit, path)
        end = offset + length
        with self._lock:
            flat = self._ranges.get(key)
            if flat is None:
                self._ranges[key] = [offset, end]
            elif flat[-1] == offset:  # a sequential reader: extend in place
                flat[-1] = end
            else:
                flat.extend((offset, end))

    def record(self) -> Record:
        with self._lock:
            items = [(k, list(v)) for k, v in self._ranges.items()]
        raw: Record = {}
        for (dataset, commit, path), flat in items:
            pairs = list(zip(flat[0::2], flat[1::2], strict=True))
            raw.setdefault(f"{dataset}@{commit.hex()}", {})[path] = pairs
        return merge([raw])

    def save(self, path: str) -> None:
        save(self.record(), path)


# -- one record shared by the processes of a run ---------------------------------------


class SharedRecord:
    """This process's share of an access record file: the ranges its readers read,
    merged into the file when the process ends (or `save` is called). Every process of
    a run (DataLoader workers, spawned or forked) merges its own share under an flock,
    so none overwrites another's."""

    def __init__(self, path: str) -> None:
        from multiprocessing.util import Finalize

        self.path = path
        self.pid = os.getpid()
        self.recorder = AccessRecorder()
        # multiprocessing runs these finalizers in its children too, where atexit
        # handlers are skipped (they leave through os._exit).
        Finalize(self, self.save, exitpriority=10)

    def save(self) -> None:
        if self.pid != os.getpid():
            return
        mine = self.recorder.record()
        # The lock is the record's directory, so that no lock file is left beside the
        # record for a project to commit by mistake (the record itself is replaced
        # by a rename, which a lock on it would not survive).
        fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            have = load(self.path) if os.path.exists(self.path) else {}
            save(merge([have, mine]), self.path)
        finally:
            os.close(fd)


_shared: dict[str, SharedRecord] = {}
_shared_lock = threading.Lock()


def shared_record(path: str) -> SharedRecord:
    """This process's share of the record at `path` (a new one after a fork)."""
    with _shared_lock:
        r = _shared.get(path)
        if r is None or r.pid != os.getpid():
            r = _shared[path] = SharedRecord(path)
        return r


def start_record(path: str) -> str:
    """Begin the access record of a run at `path`: an empty record (the file of an
    earlier run is replaced), into which every process of the run then merges."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise IsADirectory(f"record_access {path}: is a directory", path)
    save({}, path)
    return path
