"""Mounts seen from outside their daemon, and the messages between the two.

This module owns what every process other than a mount's daemon does with mounts:
the mountpoint checks that fail fast before anything is mounted (missing, not
empty, already or formerly mounted), starting the daemon and waiting until it is
live or has failed (`vfs mount`), one request over a daemon's control socket
(`vfs switch`, `vfs info`, status), and `vfs umount`, which also clears a mount whose daemon
died ("Transport endpoint is not connected"). The daemon itself is
vfs/mount/daemon.py.

It also owns every message the CLI and the daemon exchange, typed, each with its
JSON in one place: MountOptions (the daemon's command line, with the defaults of
its fields), Live and Failure (the ready pipe), SwitchReply, StatusReply and
InfoReply (the control socket). Both sides use these classes; nobody reads these documents by key.
They are NamedTuples rather than dataclasses: importing `dataclasses` and building
five of them cost `vfs switch` about 20 ms of start-up, a tenth of the command.

It imports only the standard library, vfs.errors and vfs.cache.layout, on purpose:
`vfs switch` and `vfs umount` should cost a Python start-up and a round trip, not
the imports of trio, the store and the cache (tests/store/test_cli.py checks that
they stay out).

The control channel is a Unix socket, one per mountpoint, at
`<runtime dir>/vfs/<hash of the mountpoint path>.sock` (runtime dir: /run as root,
else $XDG_RUNTIME_DIR, else /tmp/vfs-<uid>), mode 0600. A request is one line of
JSON, and so is the answer: {"op": "switch", "ref": "v3"}, {"op": "status"},
{"op": "info", "ino": 1} (an inode the kernel holds: `info` keeps the path open).
`vfs info MOUNTPOINT` names the socket.

The ready pipe: the daemon writes one line of JSON to the pipe it inherits (its
MountOptions.ready_fd): its status doc once the mountpoint answers ({"ok": true,
"pid": ..., "label": ...}), or its error ({"ok": false, "error": ..., "usage": ...,
"not_found": ...}).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pwd
import select
import shlex
import shutil
import socket
import subprocess
import sys
import time
from typing import Any, NamedTuple, TypeVar

from vfs import perms
from vfs.cache import layout
from vfs.errors import NotFound, UsageError, VfsError

FUSE_DEVICE = "/dev/fuse"
FUSE_CONF = "/etc/fuse.conf"
READY_TIMEOUT = 120.0  # the parent gives up on a child that neither mounts nor fails
_M = TypeVar("_M")


# --- messages ------------------------------------------------------------------------------


class MountOptions(NamedTuple):
    """What a mount's daemon is asked to do: its command line, as one JSON object."""

    target: str  # DATASET@REF, or DATASET for every version
    mountpoint: str
    cache_dir: str
    # None: the default, resolved by the daemon (it has the parent's environment and
    # working directory), so that `vfs mount` need not import the store or the cache.
    store_url: str | None = None
    endpoint_url: str | None = None  # the S3 endpoint of a remote that names one
    cache_size: int | None = None
    read_timeout: float = 30.0
    allow_other: bool = False
    log_file: str | None = None
    ready_fd: int | None = None
    verbose: int = 0  # the count of -v; 2 or more: the daemon logs at DEBUG
    xattrs: bool = False  # serve the user.vfs.* extended attributes (costs `ls -l` dearly)
    # An absolute path: write which files and byte ranges were read there at unmount
    # (vfs/access.py has the format).
    record_access: str | None = None

    def to_json(self) -> str:
        return json.dumps(self._asdict())

    @classmethod
    def from_json(cls, text: str) -> MountOptions:
        doc = json.loads(text)
        return cls(**{k: v for k, v in doc.items() if k in cls._fields})

    def resolved(self) -> MountOptions:
        """These options with the defaults of the store and the cache size filled in."""
        from vfs.backends import default_store_url
        from vfs.defaults import DEFAULT_CACHE_BYTES

        return self._replace(
            store_url=self.store_url or default_store_url(),
            cache_size=self.cache_size or DEFAULT_CACHE_BYTES,
        )


def _ok(msg: NamedTuple) -> dict[str, Any]:
    """A success message as JSON: its fields and "ok": true, the one shape of them."""
    return {"ok": True, **msg._asdict()}


class Live(NamedTuple):
    """The ready pipe's news of a live mount."""

    pid: int
    mountpoint: str
    dataset: str
    version: str | None  # the commit shown at the root; None for every version
    label: str
    seconds: float
    offline: str = ""  # why the store could not be reached, if the mount serves pins

    def to_doc(self) -> dict[str, Any]:
        return _ok(self)


class Failure(NamedTuple):
    """An error from the daemon, over the ready pipe or the control socket."""

    error: str
    usage: bool = False
    not_found: bool = False

    @classmethod
    def of(cls, e: BaseException) -> Failure:
        return cls(str(e) or type(e).__name__, isinstance(e, UsageError), isinstance(e, NotFound))

    def to_doc(self) -> dict[str, Any]:
        return {"ok": False, **self._asdict()}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Failure:
        return cls(str(doc.get("error")), bool(doc.get("usage")), bool(doc.get("not_found")))

    def exception(self) -> VfsError:
        cls = UsageError if self.usage else NotFound if self.not_found else VfsError
        return cls(self.error)


class SwitchReply(NamedTuple):
    old: str  # commit ids, hex
    new: str
    label: str
    ms: float

    def to_doc(self) -> dict[str, Any]:
        return _ok(self)


class StatusReply(NamedTuple):
    pid: int
    dataset: str
    version: str | None
    label: str | None
    stats: dict[str, Any]

    def to_doc(self) -> dict[str, Any]:
        return _ok(self)


class InfoReply(NamedTuple):
    """`vfs info`: what the daemon knows of one path of its mount. A field that does
    not apply is None: the file fields for a directory, the root fields elsewhere."""

    dataset: str
    kind: str  # file, directory or symlink
    version: str | None = None  # the commit id, hex; None at a multi-version mount's root
    ref: str | None = None  # e.g. ds@v3: as mounted or switched to, or the @REF directory
    size: int | None = None
    content_id: str | None = None  # BLAKE3 of the chunk ids: equal bytes, equal id
    chunks: int | None = None
    cached_bytes: int | None = None  # of the file's bytes, in the machine's chunk cache
    target: str | None = None  # a symlink's
    pid: int | None = None  # the root only: the daemon,
    control: str | None = None  # its control socket,
    log: str | None = None  # its log file,
    stats: dict[str, Any] | None = None  # and its counters
    ref_now: str | None = None  # the root only: where `ref` points now, if elsewhere
    # Filled in by the client, not the daemon:
    path: str = ""  # as asked
    mountpoint: str = ""
    relpath: str = ""  # inside the mount, "." for its root

    def to_doc(self) -> dict[str, Any]:
        return _ok(self)


def _from_doc(cls: type[_M], doc: dict[str, Any]) -> _M:
    defaults = cls._field_defaults  # type: ignore[attr-defined]
    return cls(**{f: doc.get(f, defaults.get(f)) for f in cls._fields})  # type: ignore[attr-defined]


# --- checks ------------------------------------------------------------------------------


def canonical(mountpoint: str) -> str:
    """The mountpoint's absolute path, resolved without touching the mount itself
    (which may be dead)."""
    path = os.path.abspath(mountpoint)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def check_mountpoint(mountpoint: str) -> str:
    """A usable mountpoint: an existing, empty directory that is not mounted."""
    path = canonical(mountpoint)
    try:
        os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"mountpoint {path} does not exist; create it first (mkdir -p)") from None
    except OSError as e:
        if e.errno in (errno.ENOTCONN, errno.ECONNABORTED):  # its daemon is gone
            raise UsageError(
                f"{path} is a mount whose daemon died; clear it with: vfs umount {path}"
            ) from None
        raise UsageError(f"cannot use {path} as a mountpoint: {e.strerror}") from None
    if not os.path.isdir(path):
        raise UsageError(f"mountpoint {path} is not a directory")
    if is_mounted(path):
        # The kernel answers stat from attributes it cached, even for a mount whose
        # daemon died; listing the directory asks the daemon.
        try:
            os.listdir(path)
        except OSError as e:
            if e.errno in (errno.ENOTCONN, errno.ECONNABORTED):
                raise UsageError(
                    f"{path} is a mount whose daemon died; clear it with: vfs umount {path}"
                ) from None
        raise UsageError(f"{path} is already a mount point; unmount it first (vfs umount)")
    if os.listdir(path):
        raise UsageError(f"mountpoint {path} is not empty; mount on an empty directory")
    return path


def check_fuse(allow_other: bool = False, device: str = FUSE_DEVICE) -> None:
    """What a mount needs of this machine, each missing piece named with what to do,
    before a daemon starts: otherwise libfuse says only "fuse_session_mount failed"
    and the reason is in the log."""
    try:
        os.close(os.open(device, os.O_RDWR | os.O_CLOEXEC))
    except FileNotFoundError:
        raise VfsError(
            f"{device} does not exist: load the fuse module (modprobe fuse); in a "
            f"container, start it with --device {FUSE_DEVICE} (docs/deploy.md)"
        ) from None
    except PermissionError:
        raise VfsError(
            f"no permission to open {device}: distributions ship it as crw-rw-rw-; "
            f"ask an administrator for chmod 0666 {device}, or mount as root"
        ) from None
    except OSError as e:
        raise VfsError(f"cannot open {device}: {e.strerror}") from None
    if os.geteuid() == 0:
        return  # root mounts with mount(2) itself, and may always allow others
    if shutil.which("fusermount3") is None and not os.path.exists("/usr/bin/fusermount3"):
        raise VfsError(
            "fusermount3 is missing, and a user who is not root mounts through it: "
            "install fuse3 (apt install fuse3)"
        )
    if allow_other and not _user_allow_other():
        raise VfsError(
            f"--allow-other needs the line user_allow_other in {FUSE_CONF} "
            "(an administrator adds it), or a mount as root"
        )


def _user_allow_other() -> bool:
    try:
        with open(FUSE_CONF) as f:
            return any(line.split("#", 1)[0].strip() == "user_allow_other" for line in f)
    except OSError:
        return False


def _fuse_cause(log_file: str) -> str:
    """The last line libfuse or fusermount3 wrote to the daemon's log: why a mount
    failed, in their words."""
    for line in reversed(_tail(log_file, lines=20).split(" | ")):
        for marker in ("fusermount3: ", "fuse: "):
            if marker in line:
                return line[line.index(marker) :].strip()
    return ""


def is_mounted(path: str) -> bool:
    """Whether a filesystem is mounted at `path`, also a dead FUSE mount (which
    os.path.ismount cannot stat)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                field = line.split(b" ")[4]
                if _unescape(field) == os.fsencode(path):
                    return True
    except OSError:
        return os.path.ismount(path)
    return False


def _unescape(field: bytes) -> bytes:
    """mountinfo writes space, tab, newline and backslash as \\ooo."""
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i : i + 1] == b"\\" and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def control_path(mountpoint: str) -> str:
    if os.geteuid() == 0:
        base = "/run/vfs"
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = os.path.join(os.environ["XDG_RUNTIME_DIR"], "vfs")
    else:
        base = f"/tmp/vfs-{os.getuid()}"
    digest = hashlib.sha256(os.fsencode(canonical(mountpoint))).hexdigest()[:24]
    return os.path.join(base, f"{digest}.sock")


def default_log_file(cache_dir: str, mountpoint: str) -> str:
    """logs/mount-NAME-HASH.log in the cache, per mountpoint and per user: in a cache
    a team shares, each member who mounts at /mnt/imagenet writes a log of their own
    (one name for all was the first mounter's file, and refused everyone else)."""
    path = canonical(mountpoint)
    tail = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(path))
    digest = hashlib.sha256(f"{os.getuid()}:".encode() + os.fsencode(path)).hexdigest()[:8]
    return os.path.join(layout.logs_dir(cache_dir), f"mount-{tail[:40]}-{digest}.log")


# --- the parent: start a daemon and wait until it is live ----------------------------------


def start_daemon(options: MountOptions, mountpoint: str, log_file: str) -> Live:
    """Start a daemon detached (`python -m vfs.mount.daemon`, with `options` and a
    ready pipe) and wait until it reports the mount live or fails (VfsError with its
    message)."""
    perms.make_dirs(os.path.dirname(log_file) or ".")
    r, w = os.pipe()
    cmd = [sys.executable, "-m", "vfs.mount.daemon", options._replace(ready_fd=w).to_json()]
    try:
        # Private to its writer, whatever the umask: a log names paths and errors.
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o600)
        with os.fdopen(fd, "ab") as logf:
            proc = subprocess.Popen(
                cmd,
                pass_fds=(w,),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,  # no SIGINT or SIGHUP from this terminal
            )
    finally:
        os.close(w)
    try:
        with os.fdopen(r, "rb") as pipe:
            msg = _read_ready(pipe, proc)
    except KeyboardInterrupt:
        proc.terminate()  # it unmounts if it got that far
        raise
    if msg is not None and msg.get("ok"):
        return _from_doc(Live, msg)
    if msg is not None:
        exc = Failure.from_doc(msg).exception()
        if str(exc).startswith("cannot mount"):
            cause = _fuse_cause(log_file)
            raise type(exc)(f"{exc}{f' ({cause})' if cause else ''}; log: {log_file}")
        raise exc
    rc = proc.poll()
    if rc is None:
        proc.kill()
        proc.wait()
        raise VfsError(
            f"the mount daemon did not get {mountpoint} ready within {READY_TIMEOUT:g} s; "
            f"see {log_file}"
        )
    raise VfsError(f"the mount daemon exited with status {rc}: {_tail(log_file)} (log: {log_file})")


def _read_ready(pipe: Any, proc: subprocess.Popen[bytes]) -> dict[str, Any] | None:
    deadline = time.monotonic() + READY_TIMEOUT
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([pipe], [], [], 0.5)
        if ready:
            chunk = os.read(pipe.fileno(), 65536)
            if not chunk:
                break  # EOF: the child closed it, or died
            buf += chunk
            if b"\n" in buf:
                break
        elif proc.poll() is not None:
            break
    line = buf.split(b"\n", 1)[0]
    if not line:
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _tail(log_file: str, lines: int = 5) -> str:
    try:
        with open(log_file, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])


# --- clients: switch, status, umount --------------------------------------------------------


def request(mountpoint: str, doc: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """One request to the daemon serving `mountpoint`."""
    path = control_path(mountpoint)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            where = canonical(mountpoint)
            theirs = _not_yours(where)
            if theirs is not None:
                raise theirs from None
            if _mount_above(where) is None:  # as `vfs info` says it: exit 2
                raise UsageError(f"{where} is not a vfs mount") from None
            raise VfsError(
                f"no vfs mount daemon answers for {where} (its daemon died: vfs umount clears it)"
            ) from None
        s.sendall(json.dumps(doc).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except TimeoutError:
        raise VfsError(
            f"the mount daemon of {mountpoint} did not answer in {timeout:g} s"
        ) from None
    finally:
        s.close()
    try:
        reply = json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        raise VfsError("the mount daemon closed the control connection") from None
    if not reply.get("ok"):
        cls = UsageError if reply.get("usage") else VfsError
        raise cls(str(reply.get("error")))
    return dict(reply)


def switch(mountpoint: str, ref: str) -> SwitchReply:
    """`vfs switch`: show another version at the mount's root. UsageError (as `vfs
    info` gives) for a path that is not a vfs mount's root (request says it for one
    on no vfs mount); for one inside a mount, it names the mount."""
    path = canonical(mountpoint)
    above = _mount_above(path)
    if above is not None and above != path:
        raise _inside(path, above, "switch", ref)
    return _from_doc(SwitchReply, request(mountpoint, {"op": "switch", "ref": ref}))


def status(mountpoint: str, timeout: float = 60.0) -> StatusReply:
    """The daemon's pid, version and stats."""
    return _from_doc(StatusReply, request(mountpoint, {"op": "status"}, timeout=timeout))


FSTYPE = "fuse.vfs"  # a vfs mount's type in /proc/self/mountinfo (subtype=vfs)


def info(path: str, timeout: float = 30.0) -> InfoReply:
    """`vfs info`: the daemon's facts about `path`, a file or directory on a vfs mount.

    The path is opened (O_PATH: no FUSE open, no read) and held open while the daemon
    is asked, so the kernel cannot forget its inode meanwhile; the mount is the one
    whose device is the path's, and the daemon gets the inode number the kernel
    showed. Symlinks are followed, as getfattr does; NotFound for a missing path,
    UsageError for a path on another filesystem, VfsError for a dead daemon."""
    above = _mount_above(canonical(path))
    theirs = _not_yours(above) if above is not None else None
    if theirs is not None:  # without allow_other its files are closed to us anyway
        raise theirs
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file or directory") from None
    except OSError as e:
        if e.errno in (errno.ENOTCONN, errno.ECONNABORTED):
            where = f"vfs umount {above}" if above else "vfs umount MOUNTPOINT"
            raise VfsError(
                f"{path}: its mount's daemon died; clear the mount with: {where}"
            ) from None
        raise VfsError(f"{path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        mount = _mount_of_device(st.st_dev)
        if mount is None:
            raise UsageError(f"{path}: cannot find its mount in /proc/self/mountinfo")
        mountpoint, fstype = mount
        if fstype != FSTYPE:
            raise UsageError(
                f"{path} is not on a vfs mount (it is on {mountpoint}, a {fstype} filesystem)"
            )
        doc = request(mountpoint, {"op": "info", "ino": st.st_ino}, timeout=timeout)
    finally:
        os.close(fd)
    real = os.path.realpath(path)
    inside = real == mountpoint or real.startswith(mountpoint.rstrip("/") + "/")
    rel = os.path.relpath(real, mountpoint) if inside else real
    return _from_doc(InfoReply, {**doc, "path": path, "mountpoint": mountpoint, "relpath": rel})


def _mountinfo() -> list[tuple[str, str, str, list[bytes]]]:
    """(major:minor, mount point, fstype, super options) of every mount this process
    sees."""
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ")
            sep = fields.index(b"-")
            mnt = os.fsdecode(_unescape(fields[4]))
            options = fields[sep + 3].strip().split(b",")
            out.append((fields[2].decode(), mnt, fields[sep + 1].decode(), options))
    return out


def mount_owner(path: str) -> int | None:
    """The uid that mounted the FUSE mount at `path` (its user_id= option), or None."""
    try:
        for _, mnt, _, options in _mountinfo():
            if mnt == path:
                for opt in options:
                    if opt.startswith(b"user_id="):
                        return int(opt[len(b"user_id=") :])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _not_yours(path: str) -> UsageError | None:
    """The error for a vfs mount at `path` that another user made: its daemon's
    control socket is in that user's runtime directory, so nobody else reaches it."""
    owner = mount_owner(path)
    if owner is None or owner == os.getuid():
        return None
    try:
        who = f"{pwd.getpwuid(owner).pw_name} (uid {owner})"
    except KeyError:
        who = f"uid {owner}"
    return UsageError(
        f"{path} is a vfs mount of {who}: only the user who mounted it can switch, query "
        "or unmount it"
    )


def _mount_of_device(dev: int) -> tuple[str, str] | None:
    """(mount point, fstype) of the mount of device `dev`; the last one mounted wins."""
    want = f"{os.major(dev)}:{os.minor(dev)}"
    found = [(mnt, fstype) for d, mnt, fstype, _ in _mountinfo() if d == want]
    return found[-1] if found else None


def _inside(path: str, mountpoint: str, verb: str, *rest: str) -> UsageError:
    """The error for a verb that takes a mountpoint given a path inside one."""
    cmd = shlex.join(["vfs", verb, mountpoint, *rest])
    return UsageError(
        f"{path} is inside the vfs mount {mountpoint}; {verb} takes the mountpoint: {cmd}"
    )


def _mount_above(path: str) -> str | None:
    """The vfs mount whose tree holds `path` (also one whose daemon died)."""
    best = None
    for _, mnt, fstype, _ in _mountinfo():
        inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
        if fstype == FSTYPE and inside and (best is None or len(mnt) > len(best)):
            best = mnt
    return best


def umount(mountpoint: str, timeout: float = 10.0) -> str:
    """Unmount; lazily if busy; also a mount whose daemon died. Waits for the daemon
    to exit. Returns how it went, for the user."""
    path = canonical(mountpoint)
    if not is_mounted(path):
        above = _mount_above(path)
        if above is not None:
            raise _inside(path, above, "umount")
        raise UsageError(f"{path} is not mounted")
    theirs = _not_yours(path) if os.getuid() != 0 else None  # root may unmount any
    if theirs is not None:
        raise theirs
    pid = None
    with contextlib.suppress(VfsError, OSError):
        pid = int(status(path, timeout=2.0).pid)
    how = "unmounted"
    r = subprocess.run(["fusermount3", "-u", path], capture_output=True, text=True)
    if r.returncode != 0:
        lazy = subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, text=True)
        if lazy.returncode != 0:
            raise VfsError(f"cannot unmount {path}: {(lazy.stderr or r.stderr).strip()}")
        how = f"detached (lazy unmount: {r.stderr.strip() or 'busy'})"
        return how  # the daemon serves until the last open file is closed
    if pid is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(control_path(path))  # its daemon is gone
        return how
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return how
        time.sleep(0.02)
    return how + f"; its daemon (pid {pid}) is still finishing"


def alive(pid: int) -> bool:
    """Whether a process runs; a zombie (exited, not yet reaped by init, which the
    daemon's parent is once `vfs mount` has returned) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != b"Z"
