"""The verbs of a mount: `vfs mount`, `vfs switch`, `vfs umount`.

`vfs switch` and `vfs umount` only talk to a mount daemon, and the parent of
`vfs mount` only starts one: this module imports vfs.mount.control and
vfs.mount.daemon inside those verbs, so that they stay a Python start-up away
(tests/store/test_cli.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

from vfs.cli.common import (
    Formatter,
    add_cache_size,
    add_common,
    add_daemon_common,
    cache_dir,
    print_json,
    seconds,
)
from vfs.config import resolve_cache_size
from vfs.errors import UsageError

if TYPE_CHECKING:
    from vfs.config import StoreTarget

# --- mount ---


def add_mount(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Mount DATASET@REF read-only at MOUNTPOINT (an existing, empty directory). "
        "Nothing is downloaded up front: a file's chunks are fetched when it is read, "
        "verified, and kept in the machine's chunk cache, which every mount and "
        "command on the machine shares. Mounting takes the same time for ten files "
        "or ten million.\n\n"
        "DATASET@REF is resolved once, when it is mounted: a mount of @main keeps "
        "showing that commit while others commit to main (a training run reads one "
        "version throughout). `vfs switch MOUNTPOINT main` moves it to main's head "
        "now; `vfs info MOUNTPOINT` says when the branch has moved on.\n\n"
        "With a bare DATASET (no '@'; the one place where that does not mean "
        "@main) the mount shows every version: MOUNTPOINT/@v3/, MOUNTPOINT/@main/ "
        "and MOUNTPOINT/@<id prefix>/ are directories. Tags and branches are "
        "listed, any commit id prefix can be looked up.\n\n"
        "The command returns once the mount is live; a daemon keeps serving it, "
        "logging to --log-file. It fails at once, with the reason, on a missing or "
        "non-empty mountpoint, an unknown dataset or ref, or an unreachable store "
        "(unless the version is pinned in the cache, `vfs cache pin`: then it mounts "
        "offline, serves what was pinned, and serves the store again once it "
        "answers). Reads that cannot be served within --read-timeout fail with EIO; "
        "the mount stays up and serves again once the store answers."
    )
    p.epilog = (
        "examples:\n"
        "  vfs mount imagenet@v3 /mnt/data\n"
        "  vfs mount imagenet /mnt/versions && ls /mnt/versions/@v2/train\n"
        "  vfs mount team:imagenet@v3 /mnt/team   # from the remote team's store\n"
        "  vfs switch /mnt/data v4      # new lookups see v4 within milliseconds\n"
        "  vfs umount /mnt/data\n\n"
        "diagnostics: vfs info /mnt/data/FILE shows the version, the file's content\n"
        "id and how many of its bytes are cached; vfs info /mnt/data the daemon."
    )
    p.formatter_class = Formatter
    p.add_argument("target", metavar="[REMOTE:]DATASET[@REF]")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument(
        "-f", "--foreground", action="store_true", help="serve in this process (Ctrl-C unmounts)"
    )
    add_cache_size(
        p,
        "cap of the chunk cache, e.g. 50G (default: core.cache_size, $VFS_CACHE_SIZE, "
        "else 10G); least recently used chunks of unpinned versions are evicted past it",
    )
    p.add_argument(
        "--read-timeout",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="a read whose data the store cannot deliver in this time, retries included, "
        "fails with EIO (default 30)",
    )
    p.add_argument(
        "--allow-other",
        action="store_true",
        help="let other users read the mount (needs user_allow_other in /etc/fuse.conf "
        "unless root); permissions are then the version's modes",
    )
    p.add_argument(
        "--xattrs",
        action="store_true",
        help="also serve the diagnostics of `vfs info` as user.vfs.* extended attributes "
        "(getfattr -d -m user.vfs FILE). Costs `ls -l` a round trip to the daemon per "
        "entry and per attribute it asks for (ACL, security label): about 10x slower on "
        "large directories. Without it the mount answers no extended attribute request, "
        "and the kernel stops asking",
    )
    p.add_argument(
        "--log-file", metavar="FILE", help="daemon log (default: CACHE_DIR/logs/mount-*.log)"
    )
    p.add_argument(
        "--record-access",
        metavar="FILE",
        help="at unmount, write to FILE which files and byte ranges were read through "
        "the mount (JSON; attach it to a model with vfs commit --access-record FILE)",
    )
    p.add_argument(
        "--locked",
        action="store_true",
        help="mount the exact version the nearest vfs.lock (here or above) records for "
        "DATASET, from the store it names unless --store is given (see vfs lock)",
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_mount)


def _apply_lock(args: argparse.Namespace) -> None:
    """With --locked, replace args.target by DATASET@<full id> from vfs.lock, and
    take the lock's store unless --store named one."""
    if not args.locked:
        return
    from vfs import lock

    args.target, entry = lock.locked_spec(args.target)
    args.store = args.store or entry.store


def _store_target(args: argparse.Namespace) -> StoreTarget:
    """The store to mount from (--store, a REMOTE: part of the target, the config),
    resolved here, where the working directory is the user's; the target loses its
    REMOTE: part. vfs.config imports nothing heavy."""
    from vfs.config import spec_target

    target, (rest,) = spec_target(args.store, [args.target])
    if not rest:
        raise UsageError(f"{args.target!r} names a store but no dataset: REMOTE:DATASET[@REF]")
    args.target = rest
    return target


def cmd_mount(args: argparse.Namespace) -> int:
    from vfs.mount import control
    from vfs.storecheck import check_local

    if args.read_timeout <= 0:
        raise UsageError("--read-timeout must be positive")
    if os.path.isdir(args.target) and not os.path.lexists(args.mountpoint):
        raise UsageError(
            f"mountpoint {args.mountpoint} does not exist, and {args.target} is a directory: "
            "the order is vfs mount DATASET[@REF] MOUNTPOINT (or create the mountpoint "
            "first: mkdir -p)"
        )
    _apply_lock(args)
    cdir = cache_dir(args)
    store = _store_target(args)
    if args.foreground:
        return _mount_foreground(args, cdir, store)
    # The command line first (the mountpoint), then the machine: a local store is
    # checked here, before a daemon is started, with the daemon's own words
    # (vfs/storecheck.py imports nothing heavy); an S3 store is checked by the daemon,
    # which reports the same line before the mount goes live.
    mnt = control.check_mountpoint(args.mountpoint)
    check_local(store.url)
    control.check_fuse(args.allow_other)
    log_file = args.log_file or control.default_log_file(cdir, args.mountpoint)
    # The daemon resolves the defaults of the store and the cache size (it has this
    # process's environment and working directory), so that this process need not
    # import the store or the cache: the mount is live sooner.
    options = control.MountOptions(
        target=args.target,
        mountpoint=mnt,
        store_url=store.url,
        endpoint_url=store.endpoint_url,
        cache_dir=cdir,
        cache_size=resolve_cache_size(args.cache_size),
        read_timeout=args.read_timeout,
        allow_other=args.allow_other,
        xattrs=args.xattrs,
        log_file=log_file,
        verbose=args.verbose,
        record_access=_record_path(args),
    )
    t0 = time.monotonic()
    live = control.start_daemon(options, mnt, log_file)
    doc = {**live.to_doc(), "seconds": round(time.monotonic() - t0, 3), "log": log_file}
    if args.json:
        print_json(doc)
    else:
        version = f" ({doc['version'][:12]})" if doc.get("version") else ""
        print(
            f"mounted {doc['label']}{version} at {mnt} in {doc['seconds']:.2f} s "
            f"(daemon pid {doc['pid']}, log {log_file})",
            file=sys.stderr,
        )
        if doc.get("offline"):
            print(
                "offline: the store cannot be reached; serving the versions pinned in "
                f"the cache ({doc['offline']})",
                file=sys.stderr,
            )
    return 0


def _mount_foreground(args: argparse.Namespace, cdir: str, store: StoreTarget) -> int:
    """`vfs mount --foreground`: mount and serve in this process until unmounted."""
    from vfs.mount.control import MountOptions, check_fuse
    from vfs.mount.daemon import run

    check_fuse(args.allow_other)
    opts = MountOptions(
        target=args.target,
        mountpoint=args.mountpoint,
        store_url=store.url,
        endpoint_url=store.endpoint_url,
        cache_dir=cdir,
        cache_size=resolve_cache_size(args.cache_size),
        read_timeout=args.read_timeout,
        allow_other=args.allow_other,
        xattrs=args.xattrs,
        record_access=_record_path(args),
    )
    return run(opts)


def _record_path(args: argparse.Namespace) -> str | None:
    """--record-access as an absolute path (the daemon may run elsewhere), checked
    now: a record that cannot be written at unmount is lost."""
    import os

    if args.record_access is None:
        return None
    path = os.path.abspath(args.record_access)
    d = os.path.dirname(path)
    if not os.path.isdir(d) or not os.access(d, os.W_OK):
        raise UsageError(f"--record-access {args.record_access}: cannot write in {d}")
    if os.path.isdir(path):
        raise UsageError(f"--record-access {args.record_access}: is a directory")
    return path


# --- switch, umount ---


def add_switch(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Make the DATASET@REF mount at MOUNTPOINT show REF (a tag, branch, id prefix "
        "or BRANCH~N of the same dataset) without unmounting. It takes milliseconds: "
        "only the new version's commit and root directory are read. Files opened "
        "before the switch keep reading the version they were opened in, and so do "
        "directories a process holds: a shell whose working directory is inside the "
        "mount keeps seeing the old version by relative paths until it changes "
        "directory again. Every path looked up from MOUNTPOINT sees REF."
    )
    p.epilog = "example: vfs switch /mnt/data v4"
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("ref", metavar="REF")
    add_daemon_common(p)
    p.set_defaults(func=cmd_switch)


def cmd_switch(args: argparse.Namespace) -> int:
    from vfs.mount import control

    t0 = time.monotonic()
    reply = control.switch(args.mountpoint, args.ref)
    doc = {**reply._asdict(), "total_ms": round((time.monotonic() - t0) * 1000, 2)}
    if args.json:
        print_json(doc)
    else:
        print(
            f"{control.canonical(args.mountpoint)}: {doc['label']} ({doc['new'][:12]}), was "
            f"{doc['old'][:12]}; switched in {doc['ms']:.1f} ms",
            file=sys.stderr,
        )
    return 0


def add_umount(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Unmount MOUNTPOINT and wait for its daemon to exit. A mount still in use is "
        "detached lazily: it disappears from the namespace now and its daemon serves "
        "the open files until they are closed. Also clears a mount whose daemon "
        "died ('Transport endpoint is not connected'), so it can be mounted again."
    )
    p.epilog = "example: vfs umount /mnt/data"
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    add_daemon_common(p)
    p.set_defaults(func=cmd_umount)


def cmd_umount(args: argparse.Namespace) -> int:
    from vfs.mount import control

    how = control.umount(args.mountpoint)
    where = control.canonical(args.mountpoint)
    if args.json:
        print_json({"mountpoint": where, "result": how})
    else:
        print(f"{where}: {how}", file=sys.stderr)
    return 0
