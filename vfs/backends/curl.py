"""GETs of presigned URLs through libcurl (pycurl): the S3 backend's read road.

A mount reading cold small files makes one GET per file, so the client's CPU per
request bounds it on a small machine. Measured here (8 threads of 50 KB ranged GETs
into one 32 MiB object on SeaweedFS, process CPU per GET): urllib3 1.24–1.39 ms,
libcurl 0.33–0.38 ms, at 1.65× the GETs a second. libcurl does the request, the
status line, the headers and the body in C with the GIL released; what is left in
Python is a few `setopt` calls and one write per received buffer.

This module knows HTTP, not S3: `UrlGetter.get` answers (status, body) or raises
`Silent` (connected, then no byte for the given seconds), `Unreachable` (no
connection within the connect timeout) or `Failed` (anything else: refused, reset,
cut short). The S3 backend decides what each means (vfs/backends/s3.py).

Concurrency: libcurl's easy handles must not be used by two threads at once, so each
thread has its own, kept in a thread-local slot and reused: it keeps its connection
alive between requests. `close()` closes every handle the getter made; a thread that
asks afterwards gets `Failed`.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
import weakref

import pycurl

# libcurl reads the socket in pieces of this size and hands each to one Python write.
_BUFFER = 512 * 1024


class _Into:
    """A body received into a buffer the caller lends, the size of the body it
    expects. A BytesIO grows by reallocation into fresh memory, and each 4 KiB page
    of it faults when libcurl's writes first touch it: for a mount reading a large
    file cold, most of its page faults and a sixth of its CPU. A lent buffer that
    was used before takes none. A body longer than the buffer (a server that ignored
    the Range header) goes on in a BytesIO."""

    __slots__ = ("_more", "_n", "_view")

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._n = 0
        self._more: io.BytesIO | None = None

    def write(self, piece: bytes) -> None:
        n = self._n
        end = n + len(piece)
        if self._more is None:
            if end <= len(self._view):
                self._view[n:end] = piece
                self._n = end
                return
            self._more = io.BytesIO()
            self._more.write(self._view[:n])
        self._more.write(piece)
        self._n = end

    def value(self, view: bool) -> bytes | memoryview:
        """What was received: the view of the buffer it filled, or bytes if it
        overflowed or `view` is false (the body of an error, read as text)."""
        got = self._view[: self._n]
        self.release()
        if self._more is not None:
            return self._more.getvalue()
        return got if view else bytes(got)

    def release(self) -> None:
        """Let go of the lent buffer: the handle keeps its last WRITEDATA until the
        next request, and must not keep the buffer lent meanwhile."""
        self._view = memoryview(b"")


class Failed(Exception):
    """The request failed in a way the caller should ask again by another road."""


class Silent(Failed):
    """Connected, then no byte arrived for the silence bound."""


class Unreachable(Failed):
    """No connection could be made within the connect timeout."""


def configure(c: pycurl.Curl, ca_file: str | None, connect_ms: int) -> None:
    """The options every handle of ours has, whoever drives it."""
    c.setopt(pycurl.CONNECTTIMEOUT_MS, connect_ms)
    c.setopt(pycurl.LOW_SPEED_LIMIT, 1)  # bytes a second, over LOW_SPEED_TIME
    c.setopt(pycurl.BUFFERSIZE, _BUFFER)
    c.setopt(pycurl.FOLLOWLOCATION, 0)
    c.setopt(pycurl.SSL_VERIFYPEER, 1)
    c.setopt(pycurl.SSL_VERIFYHOST, 2)
    if ca_file:
        c.setopt(pycurl.CAINFO, ca_file)


def prepare(
    c: pycurl.Curl, url: str, headers: list[str], silence: float, body: io.BytesIO | _Into
) -> None:
    """Set up one GET on a handle."""
    c.setopt(pycurl.URL, url)
    if headers:
        c.setopt(pycurl.HTTPHEADER, headers)
    else:
        # An empty list leaves the handle's last headers in place (pycurl 7.49): a
        # GET after a ranged one would send its Range again.
        c.unsetopt(pycurl.HTTPHEADER)
    c.setopt(pycurl.LOW_SPEED_TIME, max(1, math.ceil(silence)))
    c.setopt(pycurl.WRITEDATA, body)


def failure(c: pycurl.Curl, code: int, message: str) -> Failed:
    """What a libcurl error on handle `c` means to the caller."""
    if code == pycurl.E_OPERATION_TIMEDOUT:
        # Past the connection (a new one or one kept alive), the request was about
        # to be sent: the server went silent.
        if c.getinfo(pycurl.PRETRANSFER_TIME) > 0:
            return Silent(message)
        return Unreachable(message)
    return Failed(message)


class UrlGetter:
    """GETs by URL, one libcurl handle per thread."""

    def __init__(self, ca_file: str | None, connect_timeout: float) -> None:
        self.ca_file = ca_file
        self.connect_ms = max(1, int(connect_timeout * 1000))
        self._local = threading.local()
        self._handles: weakref.WeakSet[pycurl.Curl] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False

    def _handle(self) -> pycurl.Curl:
        c: pycurl.Curl | None = getattr(self._local, "curl", None)
        if c is not None:
            return c
        with self._lock:
            if self._closed:
                raise Failed("closed")
            c = pycurl.Curl()
            self._handles.add(c)
        configure(c, self.ca_file, self.connect_ms)
        c.setopt(pycurl.NOSIGNAL, 1)  # threads: no SIGALRM for timeouts
        self._local.curl = c
        return c

    def get(
        self, url: str, headers: list[str], silence: float, into: memoryview | None = None
    ) -> tuple[int, bytes | memoryview]:
        """(status, body) of a GET of `url` with `headers` ("Name: value"); raises
        Silent after `silence` seconds (whole seconds, rounded up) without a byte.

        With `into` (a writable buffer the size of the body expected), the body of a
        200 or 206 that fits is received into it and comes back as the view of it
        that it filled, instead of in new memory (see _Into)."""
        c = self._handle()
        body: io.BytesIO | _Into = io.BytesIO() if into is None else _Into(into)
        try:
            prepare(c, url, headers, silence, body)
            c.perform()
            status = int(c.getinfo(pycurl.RESPONSE_CODE))
        except pycurl.error as exc:
            if isinstance(body, _Into):
                body.release()
            code = exc.args[0] if exc.args else 0
            raise failure(c, code, str(exc.args[-1] if exc.args else exc)) from None
        if isinstance(body, _Into):
            return status, body.value(status in (200, 206))
        # getvalue() hands over the buffer it filled, without a copy.
        return status, body.getvalue()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            handles = list(self._handles)
            self._handles.clear()
        for c in handles:
            # One in a transfer on another thread refuses; it goes with its thread.
            with contextlib.suppress(pycurl.error):
                c.close()
