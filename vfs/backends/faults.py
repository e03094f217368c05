"""The fault injection layer: a Backend that wraps a real one and misbehaves on command.

This module owns how tests break a store on purpose. `FaultyBackend` wraps the real
backend (local or S3) and, per request, applies the faults a `FaultControl` lists:

    latency   sleep `seconds`, then serve
    stall     block until the fault is removed (or for `seconds`), then serve
    error     raise Unreachable (a BackendError), as a store that cannot be reached does
    notfound  raise NotFound
    slowdown  S3's "503 SlowDown" throttling. On an S3 backend it is injected into
              the HTTP exchange, so boto3's own retries and backoff see it as they
              would see AWS; on a local backend it raises what S3Backend raises once
              those retries are spent.
    truncate  serve only the first half of the bytes (get, get_range)
    corrupt   serve the bytes with one byte flipped (get, get_range)

A fault matches by operation (`ops`: get, get_range, put, put_file, exists, size,
list, list_info, list_dirs, delete, delete_many, get_versioned, put_if; empty means all) and by key prefix,
fires with probability `prob`, and at most `times` times per process (None: always).

Control goes through a directory, so a test can steer a daemon in another process:
`FaultControl(dir).set(Fault(...))` writes `dir/faults.json` atomically, and every
FaultyBackend using that directory re-reads it when it changes (one stat per request).
With `record`, each request is appended to `dir/requests-<pid>` as
`op key offset length`, and `FaultControl.requests()` reads them back. In process,
`FaultyBackend.tally` counts requests and the bytes of ranged reads in flight.

Product code adds this layer only when $VFS_FAULTS (vfs.backends.FAULTS_ENV) names a
control directory: `vfs.backends.open_backend` then wraps every backend the process
opens, and only then imports this module. It lives with the other backend layers
because one place, open_backend, stacks them all; and as it imports nothing of vfs but
the Backend interface and the errors, that import closes no cycle (from vfs/testing/ it
imported vfs.backends back, and the CLI for its launcher). The launcher, which sets
$VFS_FAULTS and runs the real `vfs` command line, is test tooling and stays in
vfs/testing/faults.py:

    python -m vfs.testing.faults CONTROL_DIR mount ds@v1 /mnt --foreground

Concurrency: FaultyBackend is called from many threads, as every backend is. The
parsed control file is swapped in whole under a lock; per-fault counters and the
tally are guarded by the same lock. A stalled call only sleeps and re-reads the
control file.
"""

from __future__ import annotations

import builtins
import json
import os
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vfs.backends.base import Backend, ObjectInfo, Versioned
from vfs.errors import BackendError, NotFound, Unreachable

KINDS = ("latency", "stall", "error", "notfound", "slowdown", "truncate", "corrupt")
OPS = (
    "get",
    "get_range",
    "put",
    "put_file",
    "exists",
    "size",
    "list",
    "list_info",
    "list_dirs",
    "delete",
    "delete_many",
    "get_versioned",
    "put_if",
    "delete_if",
)
_READS = frozenset({"get", "get_range", "get_versioned"})
CONTROL_FILE = "faults.json"
_POLL = 0.02

_SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass(frozen=True)
class Fault:
    kind: str
    ops: tuple[str, ...] = ()
    key: str = ""  # key prefix; "" matches every key
    prob: float = 1.0
    times: int | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {KINDS}")
        unknown = set(self.ops) - set(OPS)
        if unknown:
            raise ValueError(f"unknown operations {sorted(unknown)}; known: {OPS}")

    def matches(self, op: str, key: str) -> bool:
        return (not self.ops or op in self.ops) and key.startswith(self.key)


@dataclass
class _Plan:
    faults: list[Fault] = field(default_factory=list)
    record: bool = False
    stamp: tuple[int, int] = (0, 0)


@dataclass
class Tally:
    """What one FaultyBackend was asked in this process (read it, or reset it, from the
    test; the backend updates it under its lock)."""

    calls: Counter[str] = field(default_factory=Counter)
    range_bytes: int = 0  # asked for by ranged reads
    in_flight: int = 0  # bytes of ranged reads not answered yet
    max_in_flight: int = 0

    @property
    def gets(self) -> int:
        """Whole-object reads (get, get_versioned)."""
        return self.calls["get"] + self.calls["get_versioned"]

    @property
    def range_gets(self) -> int:
        return self.calls["get_range"]

    def requests(self) -> int:
        """Reads of either kind: what a request to the store costs a reader."""
        return self.gets + self.range_gets

    def reset(self) -> None:
        self.calls.clear()
        self.range_bytes = self.in_flight = self.max_in_flight = 0


class FaultControl:
    """The control directory: what the test writes and every wrapped backend reads."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / CONTROL_FILE

    # -- the test's side ------------------------------------------------------------

    def set(self, *faults: Fault, record: bool = True) -> None:
        """Replace the active faults (none: behave). Takes effect at the next request
        of every process."""
        doc = {"record": record, "faults": [asdict(f) for f in faults]}
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".faults-")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.path)

    def clear(self, record: bool = True) -> None:
        self.set(record=record)

    def requests(self, op: str | None = None) -> list[tuple[str, str, int, int]]:
        """Every recorded request (op, key, offset, length), from every process."""
        out = []
        for p in sorted(self.dir.glob("requests-*")):
            for line in p.read_text().splitlines():
                rop, key, off, n = line.split(" ")
                if op is None or rop == op:
                    out.append((rop, key, int(off), int(n)))
        return out

    def forget_requests(self) -> None:
        for p in self.dir.glob("requests-*"):
            p.unlink()

    # -- the backend's side ---------------------------------------------------------

    def load(self, current: _Plan) -> _Plan:
        """The plan on disk, or `current` if the file did not change."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return current if current.stamp == (0, 0) else _Plan()
        stamp = (st.st_ino, st.st_mtime_ns)
        if stamp == current.stamp:
            return current
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return current  # replaced while we read; the next request sees it
        faults = [Fault(**{**f, "ops": tuple(f.get("ops", ()))}) for f in doc.get("faults", [])]
        return _Plan(faults, bool(doc.get("record")), stamp)

    def record(self, op: str, key: str, offset: int = 0, length: int = 0) -> None:
        line = f"{op} {key} {offset} {length}\n".encode()
        fd = os.open(self.dir / f"requests-{os.getpid()}", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


class FaultyBackend(Backend):
    """The real backend `inner`, with the faults `control` lists applied."""

    def __init__(self, inner: Backend, control: FaultControl, seed: int | None = None) -> None:
        self.inner = inner
        self.control = control
        self.url = inner.url
        self._lock = threading.Lock()
        self._plan = _Plan()
        self._fired: dict[Fault, int] = {}
        self._rng = random.Random(seed)
        self._local = threading.local()
        self.tally = Tally()
        self._hook_s3()

    def __repr__(self) -> str:
        return f"FaultyBackend({self.inner!r}, control={str(self.control.dir)!r})"

    # -- applying faults ------------------------------------------------------------

    def _plan_now(self) -> _Plan:
        with self._lock:
            self._plan = self.control.load(self._plan)
            return self._plan

    def _fire(self, op: str, key: str, kinds: Sequence[str]) -> list[Fault]:
        """The faults of `kinds` that fire for this request (counting them)."""
        plan = self._plan_now()
        out = []
        with self._lock:
            for f in plan.faults:
                if f.kind not in kinds or not f.matches(op, key):
                    continue
                if f.times is not None and self._fired.get(f, 0) >= f.times:
                    continue
                if f.prob < 1.0 and self._rng.random() >= f.prob:
                    continue
                self._fired[f] = self._fired.get(f, 0) + 1
                out.append(f)
        return out

    def _before(self, op: str, key: str, offset: int = 0, length: int = 0) -> None:
        """Record the request, then delay, stall or fail it as the plan says."""
        with self._lock:
            self.tally.calls[op] += 1
        plan = self._plan_now()
        if plan.record:
            self.control.record(op, key, offset, length)
        for f in self._fire(op, key, ("latency", "stall", "error", "notfound", "slowdown")):
            if f.kind == "latency":
                time.sleep(f.seconds)
            elif f.kind == "stall":
                self._stall(f)
            elif f.kind == "error":
                raise Unreachable(f"injected failure: {op} {key}")
            elif f.kind == "notfound":
                raise NotFound(f"no such object: {key} (injected)")
            elif f.kind == "slowdown" and (not self._s3 or op == "put_file"):
                # put_file's HTTP requests run in s3transfer's threads, out of the
                # hook's sight: fail as boto3 does once its retries are spent.
                raise BackendError(f"S3 error SlowDown for {key} (injected)")
            elif f.kind == "slowdown":
                self._local.slowdown = f  # the HTTP hook answers 503 on this thread
                self._local.first = True

    def _stall(self, f: Fault) -> None:
        deadline = time.monotonic() + f.seconds if f.seconds > 0 else None
        while f in self._plan_now().faults:
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(_POLL)

    def _after(self, op: str, key: str, data: bytes | memoryview) -> bytes | memoryview:
        """Truncate or corrupt what a read returns (a copy: a view's buffer is the
        backend's, and other reads' views of it must not change)."""
        for f in self._fire(op, key, ("truncate", "corrupt")):
            data = bytes(data)
            if f.kind == "truncate":
                data = data[: len(data) // 2]
            elif data:
                pos = len(data) // 2
                data = data[:pos] + bytes([data[pos] ^ 0x5A]) + data[pos + 1 :]
        return data

    def _call(self, op: str, key: str, fn: Any, *args: Any) -> Any:
        self._before(op, key)
        try:
            return fn(*args)
        finally:
            self._local.slowdown = None

    # -- S3: throttling inside the HTTP exchange ---------------------------------------

    def _hook_s3(self) -> None:
        # S3Backend has two boto3 clients: transfers, and small requests.
        clients = [getattr(self.inner, name, None) for name in ("_client", "_quick")]
        self._s3 = clients[0] is not None
        for client in clients:
            if client is not None:
                client.meta.events.register("before-send.s3", self._slowdown_hook)

    def _slowdown_hook(self, request: Any, **kwargs: Any) -> Any:
        """botocore's before-send: a response here replaces the HTTP round trip. Every
        attempt of a throttled call (botocore retries it) draws again, as on AWS."""
        fault = getattr(self._local, "slowdown", None)
        if fault is None:
            return None
        from botocore.awsrequest import AWSResponse
        from botocore.compat import HTTPHeaders

        first, self._local.first = self._local.first, False
        if not first:
            with self._lock:
                again = fault.prob >= 1.0 or self._rng.random() < fault.prob
            if not again:
                self._local.slowdown = None
                return None
        headers = HTTPHeaders()
        headers["Content-Type"] = "application/xml"
        headers["Content-Length"] = str(len(_SLOWDOWN_BODY))
        return AWSResponse(request.url, 503, headers, _Body(_SLOWDOWN_BODY))

    # -- the Backend interface ----------------------------------------------------------

    def get(self, key: str) -> bytes:
        data: bytes = self._call("get", key, self.inner.get, key)
        return bytes(self._after("get", key, data))  # the same object when it is bytes

    def get_range(self, key: str, offset: int, length: int) -> bytes | memoryview:
        tally = self.tally
        with self._lock:
            tally.range_bytes += length
            tally.in_flight += length
            tally.max_in_flight = max(tally.max_in_flight, tally.in_flight)
        try:
            self._before("get_range", key, offset, length)
            data = self.inner.get_range(key, offset, length)
        finally:
            self._local.slowdown = None
            with self._lock:
                tally.in_flight -= length
        return self._after("get_range", key, data)

    def put(self, key: str, data: bytes) -> None:
        self._call("put", key, self.inner.put, key, data)

    def put_file(self, key: str, path: str) -> None:
        self._call("put_file", key, self.inner.put_file, key, path)

    def exists(self, key: str) -> bool:
        return bool(self._call("exists", key, self.inner.exists, key))

    def size(self, key: str) -> int:
        return int(self._call("size", key, self.inner.size, key))

    def list(self, prefix: str) -> Iterator[str]:
        self._before("list", prefix)
        return self.inner.list(prefix)

    def list_info(self, prefix: str) -> Iterator[ObjectInfo]:
        self._before("list_info", prefix)
        return self.inner.list_info(prefix)

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        out: builtins.list[str] = self._call("list_dirs", prefix, self.inner.list_dirs, prefix)
        return out

    def delete(self, key: str) -> None:
        self._call("delete", key, self.inner.delete, key)

    def delete_many(self, keys: Sequence[str]) -> None:
        # Faults match key by key, as a batch of single deletes would see them.
        for key in keys:
            self._before("delete", key)
        self._call("delete_many", keys[0] if keys else "", self.inner.delete_many, keys)

    def get_versioned(self, key: str) -> Versioned:
        v: Versioned = self._call("get_versioned", key, self.inner.get_versioned, key)
        return Versioned(bytes(self._after("get_versioned", key, v.data)), v.token)

    def put_if(self, key: str, data: bytes, token: str | None) -> bool:
        return bool(self._call("put_if", key, self.inner.put_if, key, data, token))

    def delete_if(self, key: str, token: str) -> bool:
        return bool(self._call("delete_if", key, self.inner.delete_if, key, token))

    def close(self) -> None:
        self.inner.close()


class _Body:
    """The raw body botocore reads from an AWSResponse."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **kwargs: Any) -> Iterator[bytes]:
        yield self._data

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        return self._data
