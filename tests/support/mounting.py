"""Real mounts for the tests in tests/fuse/: start them as users do, always clean them up.

`Mounts` starts `vfs mount` daemons, or, where a test must count or break the
daemon's store requests, the same CLI in the foreground over a FaultyBackend
(vfs.backends.faults, through the launcher vfs.testing.faults) steered through
`Mounts.faults`. `cleanup` unmounts everything (fusermount3 -u -z) and reaps every
process it started, also when a test fails;
`error_lines` gives the ERROR lines of every daemon log, which tests fail on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vfs.backends.faults import Fault, FaultControl
from vfs.mount.control import alive, is_mounted
from vfs.testing.faults import launcher_argv

MiB = 1024 * 1024


def fuse_usable() -> bool:
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


class Mounts:
    """Starts mounts and always cleans them up."""

    def __init__(self, store_url: str, tmp: Path) -> None:
        self.tmp = tmp
        self.cache = tmp / "cache"
        self.faults = FaultControl(tmp / "ctl")
        self.faults.clear()  # no faults; record every request
        self.env = {
            **os.environ,
            "VFS_STORE": store_url,
            "VFS_CACHE_DIR": str(self.cache),
            "VFS_NO_PROGRESS": "1",
        }
        self.mountpoints: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started: dict[Path, subprocess.Popen[bytes]] = {}
        self.logs: list[Path] = []

    def cli(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`vfs ARGS` as a user runs it; `env` replaces self.env."""
        p = subprocess.run(
            [sys.executable, "-m", "vfs.cli", *args],
            capture_output=True,
            text=True,
            env=env or self.env,
            timeout=timeout,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"vfs {' '.join(args)} exited {p.returncode}: {p.stderr}")
        return p

    def mountpoint(self, name: str, parent: Path | None = None) -> Path:
        mnt = (parent or self.tmp) / name
        mnt.mkdir(exist_ok=True)
        self.mountpoints.append(mnt)
        return mnt

    def mount(self, target: str, name: str = "mnt", *extra: str) -> Path:
        """`vfs mount`, the daemon; returns once the mount is live."""
        mnt = self.mountpoint(name)
        self.cli("mount", target, str(mnt), *extra)
        assert os.path.ismount(mnt)
        return mnt

    def launch(self, target: str, name: str, *extra: str, faulty: bool = True) -> Path:
        """The CLI in the foreground, over a FaultyBackend steered by self.faults
        (or, with faulty=False, over the plain backend); its process is
        self.started[mountpoint]."""
        mnt = self.mountpoint(name)
        log = self.tmp / f"{name}.log"
        self.logs.append(log)
        cmd = ["mount", target, str(mnt), "--foreground", "-v"]
        argv = (
            launcher_argv(self.faults.dir, *cmd)
            if faulty
            else [sys.executable, "-m", "vfs.cli", *cmd]
        )
        with open(log, "ab") as f:
            proc = subprocess.Popen([*argv, *extra], env=self.env, stdout=f, stderr=f)
        self.procs.append(proc)
        self.started[mnt] = proc
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            assert proc.poll() is None, f"mount exited {proc.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, f"not mounted after 30 s: {log.read_text()}"
            time.sleep(0.02)
        return mnt

    def ranges(self) -> list[tuple[str, int, int]]:
        """The ranged GETs of packs that launched mounts made, in no order."""
        return [(key, off, n) for _, key, off, n in self.faults.requests("get_range")]

    def set_mode(self, mode: str) -> None:
        """ok, or fail or stall every ranged GET (chunk reads; metadata still loads)."""
        kinds = {"fail": "error", "stall": "stall"}
        if mode == "ok":
            self.faults.clear()
        else:
            self.faults.set(Fault(kinds[mode], ops=("get_range",)))

    def stats(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.cli("cache", "stats", "--json").stdout)
        return doc

    def cleanup(self) -> None:
        for mnt in self.mountpoints:
            if is_mounted(str(mnt)):
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def daemon_state(self, pid: int) -> str:
        """For failure messages: what a daemon that did not exit is doing."""
        try:
            tasks = [
                f"{(Path('/proc', str(pid), 'task', t, 'comm')).read_text().strip()}:"
                f"{(Path('/proc', str(pid), 'task', t, 'wchan')).read_text()}"
                for t in os.listdir(f"/proc/{pid}/task")
            ]
        except OSError as e:
            tasks = [str(e)]
        logs = [p.read_text()[-2000:] for p in (self.cache / "logs").glob("*.log")]
        return f"threads {tasks}; log: {logs}"

    def error_lines(self) -> list[str]:
        logs = [*self.logs, *(self.cache / "logs").glob("*.log")]
        return [
            ln
            for p in logs
            if p.exists()
            for ln in p.read_text(errors="replace").splitlines()
            if " ERROR " in ln
        ]


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            h.update(block)
    return h.hexdigest()


def read_tree(mnt: Path) -> None:
    for p in sorted(mnt.rglob("*")):
        if p.is_file() and not p.is_symlink():
            p.read_bytes()


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False
