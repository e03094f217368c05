"""GETs made by the mount's trio thread itself, through libcurl's multi interface.

Why: a cold small file is one GET of a few tens of KiB. Through a worker thread it
cost two thread hand-offs (trio to the thread, the thread back to trio: semaphores,
the wake-up pipe, the GIL passed between threads on 2 busy CPUs) besides the
request itself, and those were a larger share of the daemon's CPU per file than the
request. Here the trio thread hands the request to libcurl and waits on its socket
with the rest of its I/O.

How: one `CurlMulti`. libcurl says which sockets to watch (`M_SOCKETFUNCTION`) and
when to call it back (`M_TIMERFUNCTION`). The sockets go into an epoll set of our
own, and one driver task waits with trio on that set's descriptor (an epoll
descriptor is readable while any socket in it is ready), so one trio wait serves
every transfer. When it wakes, `socket_action` does the transfers' I/O, writing each
body through a Python callback into a `BytesIO`; `info_read` reports the transfers
that ended, and their waiting tasks are woken. Connections are kept alive in the
multi's pool between requests.

The caller (vfs/mount/loader.py) asks only for small spans this way, and verifies
them on the trio thread; large ones, whose bytes and hashing are better spent on
worker threads, keep the thread road. Any failure here is answered as `curl.Failed`
(or its kinds), and the caller asks again by the thread road, which knows every
error and retry.

Concurrency: everything runs on the trio thread. pycurl's callbacks run inside
`socket_action` and only record what they are told; `socket_action` is called only by
the driver. A task cancelled while its transfer runs (the attempt's timeout) takes
its handle out of the multi, which ends the transfer and closes its connection.
"""

from __future__ import annotations

import contextlib
import io
import math
import select

import pycurl
import trio

from vfs.backends import curl

# Connections the multi keeps alive. The loader bounds transfers in flight at once by
# its remote limiter (16 by default); this is room for them and a few idle ones.
MAX_CONNECTIONS = 32

_EPOLL_OF = {
    pycurl.POLL_IN: select.EPOLLIN,
    pycurl.POLL_OUT: select.EPOLLOUT,
    pycurl.POLL_INOUT: select.EPOLLIN | select.EPOLLOUT,
}


class _Transfer:
    __slots__ = ("body", "done", "error", "status")

    def __init__(self) -> None:
        self.body = io.BytesIO()
        self.done = trio.Event()
        self.status = 0
        self.error: curl.Failed | None = None


class MultiGetter:
    """GETs by URL from trio tasks, while `run` drives them in a nursery."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS) -> None:
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._multi.setopt(pycurl.M_MAXCONNECTS, max_connections)
        self._epoll = select.epoll()
        self._watched: dict[int, int] = {}  # socket -> epoll events
        self._deadline = math.inf  # when libcurl wants socket_action(SOCKET_TIMEOUT)
        self._waiting: trio.CancelScope | None = None  # the driver's wait, if it waits
        self._idle: list[pycurl.Curl] = []  # handles between transfers
        self._running: dict[pycurl.Curl, _Transfer] = {}
        self._options: dict[pycurl.Curl, tuple[str | None, int]] = {}  # (ca_file, connect_ms)
        self._closed = False
        self.gets = 0  # requests made, for the mount's stats

    # -- what libcurl tells us (inside socket_action or add_handle) --------------------

    def _on_socket(self, what: int, sock: int, multi: object, socketp: object) -> None:
        if what == pycurl.POLL_REMOVE:
            if self._watched.pop(sock, None) is not None:
                # Already closed, the kernel dropped it from the set: nothing to undo.
                with contextlib.suppress(OSError):
                    self._epoll.unregister(sock)
            return
        events = _EPOLL_OF.get(what, 0)
        if sock in self._watched:
            self._epoll.modify(sock, events)
        else:
            try:
                self._epoll.register(sock, events)
            except FileExistsError:  # a number reused before libcurl said REMOVE
                self._epoll.modify(sock, events)
        self._watched[sock] = events

    def _on_timer(self, timeout_ms: int) -> None:
        # Only recorded: whoever called into libcurl brings the driver's wait up to
        # date once the call returns (_timed).
        self._deadline = math.inf if timeout_ms < 0 else trio.current_time() + timeout_ms / 1e3

    # -- the driver ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the transfers until cancelled; then fail what still runs. A `get`
        made before this starts waits for it."""
        fd = self._epoll.fileno()
        task_status.started()
        try:
            while True:
                with trio.CancelScope(deadline=self._deadline) as waiting:
                    self._waiting = waiting
                    await trio.lowlevel.wait_readable(fd)
                self._waiting = None
                self._act()
        finally:
            self._waiting = None
            self.close()

    def _timed(self) -> None:
        """Run libcurl's timer if it is due, then wake the driver sooner if libcurl now
        wants it sooner than the driver's wait allows. (Waking it later than asked
        is not needed: socket_action on a timer that is not due does nothing.)"""
        if trio.current_time() >= self._deadline:
            self._deadline = math.inf  # libcurl sets the next one from inside the call
            self._multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
        self._reap()
        waiting = self._waiting
        if waiting is not None and self._deadline < waiting.deadline:
            waiting.deadline = self._deadline

    def _act(self) -> None:
        for sock, events in self._epoll.poll(0):
            mask = 0
            if events & select.EPOLLIN:
                mask |= pycurl.CSELECT_IN
            if events & select.EPOLLOUT:
                mask |= pycurl.CSELECT_OUT
            if events & (select.EPOLLERR | select.EPOLLHUP):
                mask |= pycurl.CSELECT_ERR
            self._multi.socket_action(sock, mask)
        self._timed()

    def _reap(self) -> None:
        while True:
            queued, ok, failed = self._multi.info_read()
            for c in ok:
                self._finish(c, None)
            for c, code, message in failed:
                self._finish(c, (code, message))
            if not queued:
                break

    def _finish(self, c: pycurl.Curl, error: tuple[int, str] | None) -> None:
        t = self._running.pop(c, None)
        self._multi.remove_handle(c)
        if t is None:
            return
        if error is None:
            t.status = int(c.getinfo(pycurl.RESPONSE_CODE))
        else:
            t.error = curl.failure(c, *error)
        self._idle.append(c)
        t.done.set()

    # -- the callers' side ---------------------------------------------------------

    def _handle(self, ca_file: str | None, connect_ms: int) -> pycurl.Curl:
        want = (ca_file, connect_ms)
        for i in range(len(self._idle) - 1, -1, -1):
            if self._options[self._idle[i]] == want:
                return self._idle.pop(i)
        c = pycurl.Curl()
        curl.configure(c, ca_file, connect_ms)
        self._options[c] = want
        return c

    async def get(
        self,
        url: str,
        headers: list[str],
        silence: float,
        connect_timeout: float,
        ca_file: str | None,
    ) -> tuple[int, bytes]:
        """(status, body) of a GET of `url`; curl.Failed (or a kind of it) if there
        is none: no connection, silence past `silence` seconds, a broken transfer."""
        if self._closed:
            raise curl.Failed("closed")
        c = self._handle(ca_file, max(1, int(connect_timeout * 1000)))
        t = _Transfer()
        curl.prepare(c, url, headers, silence, t.body)
        self._running[c] = t
        self.gets += 1
        try:
            # libcurl asks for its timer at once; running it here sends the request
            # now (on a connection kept alive), without a turn of the driver.
            self._multi.add_handle(c)
            self._timed()
        except pycurl.error as e:
            if self._running.pop(c, None) is not None:
                self._multi.remove_handle(c)
                self._drop(c)
            raise curl.Failed(str(e)) from None
        try:
            await t.done.wait()
        finally:
            if not t.done.is_set():  # cancelled: end the transfer and its connection
                del self._running[c]
                self._multi.remove_handle(c)
                self._drop(c)
        if t.error is not None:
            raise t.error
        return t.status, t.body.getvalue()

    def _drop(self, c: pycurl.Curl) -> None:
        self._options.pop(c, None)
        c.close()

    def close(self) -> None:
        """Fail what still runs and let go of every handle and socket."""
        if self._closed:
            return
        self._closed = True
        for c, t in list(self._running.items()):
            self._multi.remove_handle(c)
            c.close()
            t.error = curl.Failed("closed")
            t.done.set()
        self._running.clear()
        for c in self._idle:
            c.close()
        self._idle.clear()
        self._options.clear()
        self._multi.close()
        self._epoll.close()
