"""Leases: how writers and `vfs gc` keep out of each other's way.

A writer that may come to reference objects already in the store (a commit reuses
chunks through the pack indexes, pages and locations by key) holds a **commit lease**,
`locks/commit-<uuid>`, from before it reads the store's indexes until its ref moved.
`vfs gc` holds **the gc lock**, `locks/gc`, while it repacks and deletes. Both are
small JSON objects (host, pid, start, expires) written with put_if, so two of them
never overwrite each other; each holder refreshes its own with put_if(its token)
every TTL/4 from a heartbeat thread, which both extends it and proves it was not
taken away.

The protocol (docs/format.md, "Garbage collection", gives the argument):

* a committer writes its lease, THEN reads `locks/gc`: if a live gc lock is there it
  deletes its lease, waits until the lock is gone or expired, and tries again;
* gc writes `locks/gc`, THEN lists `locks/`: it waits until no live commit lease is
  left (deleting expired ones, and those of processes of this machine that have
  ended: their committer was killed or failed) before it deletes anything;
* a committer refreshes its lease once more just before the ref compare-and-swap:
  if the lease is gone or changed (gc found it expired and deleted it), the commit
  aborts without moving its ref.

Both sides write, then read, so on a linearisable store (S3, SeaweedFS, a local
directory) at least one of them sees the other.

Times are wall-clock UTC: leases are compared across machines, so their clocks must
roughly agree (within a small part of the TTL, default 10 minutes).

Concurrency: a Lease is used by its owner's thread and its heartbeat thread; its
token and state change under its lock.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from vfs.backends.base import Backend
from vfs.errors import NotFound, VfsError

log = logging.getLogger(__name__)

LOCKS = "locks/"
GC_KEY = "locks/gc"
COMMIT_PREFIX = "locks/commit-"
DEFAULT_TTL = 600.0
TTL_ENV = "VFS_LEASE_TTL"


class LeaseLost(VfsError):
    """A lease was deleted or taken over while its holder was paused."""


class GcRunning(VfsError):
    """Another gc holds the store's gc lock."""


def lease_ttl() -> float:
    """Seconds a lease lives without a refresh: $VFS_LEASE_TTL (tests), else 10 min."""
    raw = os.environ.get(TTL_ENV)
    if raw:
        try:
            ttl = float(raw)
        except ValueError:
            raise VfsError(f"${TTL_ENV} must be a number of seconds, not {raw!r}") from None
        if ttl > 0:
            return ttl
    return DEFAULT_TTL


def _rfc3339(t: float) -> str:
    return (
        dt.datetime.fromtimestamp(t, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _parse_time(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@functools.cache
def _here() -> tuple[str, str]:
    """This kernel's boot id and this process's pid namespace ("" where unknown): a
    lease written under both names a process this one can see, running or not. The
    host name alone does not: containers and cloned VMs share names."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    return boot, pidns


@dataclass(frozen=True)
class Holder:
    """What a lease object says about who holds it."""

    key: str
    host: str
    pid: int
    start: float
    expires: float
    token: str
    boot: str = ""  # the holder's kernel boot id and pid namespace (_here)
    pidns: str = ""

    def live(self, now: float | None = None) -> bool:
        """Not expired, and its process not known to have ended."""
        return self.expires > (time.time() if now is None else now) and not self.gone()

    def gone(self) -> bool:
        """Whether its holder is a process of this machine and pid namespace that no
        longer runs: a commit that failed on a network error, or was killed, leaves
        its lease behind, and waiting out its TTL (10 minutes) helps nobody. A reused
        pid makes a holder look alive, which only waits longer."""
        boot, pidns = _here()
        if not boot or not pidns or (self.boot, self.pidns) != (boot, pidns) or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # it runs, as another user
            return False
        return False

    def who(self) -> str:
        return f"{self.host} (pid {self.pid})"


def read_holder(backend: Backend, key: str) -> Holder | None:
    """The lease at `key`, or None if there is none. A lease that does not parse counts
    as expired at once (it cannot be refreshed by anyone who understands it)."""
    try:
        v = backend.get_versioned(key)
    except NotFound:
        return None
    try:
        doc = json.loads(v.data)
    except (ValueError, RecursionError):
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    pid = doc.get("pid")
    return Holder(
        key=key,
        host=str(doc.get("host", "?")),
        pid=pid if isinstance(pid, int) else -1,
        start=_parse_time(doc.get("start")) or 0.0,
        expires=_parse_time(doc.get("expires")) or 0.0,
        token=v.token,
        boot=str(doc.get("boot", "")),
        pidns=str(doc.get("pidns", "")),
    )


def commit_leases(backend: Backend) -> list[Holder]:
    """Every commit lease in the store, live or not."""
    out = []
    for key in backend.list(COMMIT_PREFIX):
        h = read_holder(backend, key)
        if h is not None:
            out.append(h)
    return out


class Lease:
    """One lease object, held by this process: created, refreshed by a heartbeat
    thread, checked, released."""

    def __init__(self, backend: Backend, key: str, ttl: float | None = None) -> None:
        self.backend = backend
        self.key = key
        self.ttl = ttl or lease_ttl()
        self.start = time.time()
        self._token: str | None = None
        self._lost = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _doc(self) -> bytes:
        boot, pidns = _here()
        doc = {
            "boot": boot,
            "expires": _rfc3339(time.time() + self.ttl),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pidns": pidns,
            "start": _rfc3339(self.start),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    def create(self, replacing: str | None = None) -> bool:
        """Write the lease if the key is absent (or still holds `replacing`, the token
        of an expired lease being taken over). False if somebody else was first."""
        data = self._doc()
        if not self.backend.put_if(self.key, data, replacing):
            return False
        # The token is read back: S3's is an ETag the server computes.
        now = read_holder(self.backend, self.key)
        with self._lock:
            self._token = now.token if now is not None else None
            self._lost = now is None
        return now is not None

    def refresh(self) -> bool:
        """Extend the lease; False (and the lease counts as lost) if it is no longer
        ours: deleted or overwritten by someone who judged it expired."""
        with self._lock:
            if self._lost or self._token is None:
                return False
            token = self._token
        ok = self.backend.put_if(self.key, self._doc(), token)
        if ok:
            h = read_holder(self.backend, self.key)
            ok = h is not None
        with self._lock:
            if ok and h is not None:
                self._token = h.token
            else:
                self._lost = True
        return ok

    @property
    def lost(self) -> bool:
        with self._lock:
            return self._lost

    def start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._beat, name=f"vfs-lease-{self.key}", daemon=True
        )
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                if not self.refresh():
                    log.warning("lease %s was taken away", self.key)
                    return
            except VfsError as e:  # the store unreachable: try again next beat
                log.warning("cannot refresh lease %s: %s", self.key, e)

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            mine = not self._lost and self._token is not None
            token, self._token = self._token, None
        if not mine:
            return
        h = read_holder(self.backend, self.key)
        if h is not None and h.token == token:
            self.backend.delete(self.key)


class CommitLease:
    """A commit's lease, as a context manager. `acquire` waits while a gc runs;
    `check` is called just before the ref moves."""

    POLL = 1.0

    def __init__(self, backend: Backend, on_wait: Callable[[str], None] | None = None) -> None:
        self.backend = backend
        self.on_wait = on_wait or (lambda text: log.warning("%s", text))
        self._lease: Lease | None = None

    def __enter__(self) -> CommitLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        told = False
        while True:
            lease = Lease(self.backend, f"{COMMIT_PREFIX}{uuid.uuid4().hex}")
            if not lease.create():
                continue  # a uuid collision: take another
            gc = read_holder(self.backend, GC_KEY)
            if gc is None or not gc.live():
                self._lease = lease
                lease.start_heartbeat()
                return
            lease.release()
            if not told:
                self.on_wait(f"waiting for gc on {gc.who()} to finish")
                told = True
            while gc is not None and gc.live():
                time.sleep(min(self.POLL, lease.ttl / 4))
                gc = read_holder(self.backend, GC_KEY)

    def check(self) -> None:
        """Refresh the lease before the ref moves; LeaseLost if gc deleted it."""
        if self._lease is None:
            return
        if not self._lease.refresh():
            raise LeaseLost(
                "this commit's lease expired while it was paused; rerun the commit "
                "(it resumes where it stopped)"
            )

    def release(self) -> None:
        if self._lease is not None:
            lease, self._lease = self._lease, None
            lease.release()


class GcLock:
    """The store's gc lock (`locks/gc`), held by one gc at a time."""

    def __init__(self, backend: Backend, ttl: float | None = None) -> None:
        self.backend = backend
        self.lease = Lease(backend, GC_KEY, ttl)

    def acquire(self) -> None:
        """Take the lock, or take over an expired one; GcRunning if a live one is held."""
        while True:
            if self.lease.create():
                break
            other = read_holder(self.backend, GC_KEY)
            if other is None:
                continue  # released meanwhile: try again
            if other.live():
                raise GcRunning(
                    f"another gc is running on {other.who()} (its lock {GC_KEY} "
                    f"expires {_rfc3339(other.expires)}); try again later"
                )
            why = "ended" if other.gone() else "expired"
            log.info("taking over the gc lock of %s: its holder %s", other.who(), why)
            if self.lease.create(replacing=other.token):
                break
        self.lease.start_heartbeat()

    def check(self) -> None:
        """LeaseLost unless the lock is still ours (checked before each batch of deletes)."""
        if not self.lease.refresh():
            raise LeaseLost(
                f"gc lost its lock {GC_KEY} (another gc took it over after it expired); "
                "stopped before deleting more"
            )

    def release(self) -> None:
        self.lease.release()
