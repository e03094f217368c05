"""The verb `vfs info PATH`: what a mount's daemon knows of a path on its mount.

It asks the daemon over its control socket (vfs.mount.control.info) and prints the
answer: the diagnostics a mount without --xattrs does not serve as extended
attributes. Like `vfs switch`, it imports only vfs.mount.control, so it costs a
Python start-up and one round trip (tests/store/test_cli.py).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vfs.cli.common import Formatter, add_daemon_common, human, print_json

# The text form's rows, in order: (field, label).
_ROWS = (
    ("relpath", "path"),
    ("mountpoint", "mount"),
    ("dataset", "dataset"),
    ("ref", "ref"),
    ("version", "version"),
    ("kind", "kind"),
    ("size", "size"),
    ("target", "target"),
    ("content_id", "content id"),
    ("chunks", "chunks"),
    ("cached_bytes", "cached"),
    ("pid", "daemon pid"),
    ("control", "control"),
    ("log", "log"),
)


def add_info(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Show what the daemon of a vfs mount knows of PATH, a file or directory on "
        "the mount: the dataset, the version it belongs to (commit id) and the ref "
        "it was mounted or switched as, its kind; for a file its size, content id "
        "(BLAKE3 of its chunk ids: equal bytes, equal id), chunk count and how many "
        "of its bytes are in the machine's chunk cache. On the mount's root, also "
        "the daemon's pid, control socket and log file and the mount's counters "
        "(fetches, bytes, extended-attribute requests, inodes).\n\n"
        "These are the facts a mount with --xattrs also serves as user.vfs.* "
        "extended attributes; without it (the default) the mount answers no "
        "extended attribute request, which keeps `ls -l` fast. Symlinks are followed."
    )
    p.epilog = (
        "examples:\n"
        "  vfs info /mnt/data/train/0001.jpg   # is it cached? which version?\n"
        "  vfs info /mnt/data                  # the daemon and its counters\n"
        "  vfs info --json /mnt/data | jq .stats.requests\n\n"
        "exit status: 0 done; 1 the daemon did not answer (vfs umount clears a mount\n"
        "whose daemon died); 2 PATH is not on a vfs mount or does not exist."
    )
    p.formatter_class = Formatter
    p.add_argument("path", metavar="PATH", help="a file or directory on a vfs mount")
    add_daemon_common(p)
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from vfs.errors import NotFound, UsageError
    from vfs.mount import control

    try:
        reply = control.info(args.path)
    except NotFound as e:
        raise UsageError(str(e)) from None
    if args.json:
        print_json(reply._asdict())
        return 0
    doc = reply._asdict()
    rows = [(label, _show(field, doc)) for field, label in _ROWS if doc.get(field) is not None]
    if reply.stats is not None:
        for k, v in sorted(reply.stats.items()):
            if isinstance(v, dict):  # e.g. the FUSE requests by kind: a row each
                rows += [(f"stats.{k}.{kk}", str(vv)) for kk, vv in sorted(v.items())]
            else:
                rows.append((f"stats.{k}", str(v)))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    if reply.ref_now and reply.ref:
        print(
            f"note: {reply.ref} has moved to {reply.ref_now[:12]} since this mount resolved "
            f"it; `vfs switch {reply.mountpoint} {reply.ref.partition('@')[2]}` shows it",
            file=sys.stderr,
        )
    return 0


def _show(field: str, doc: dict[str, Any]) -> str:
    value = doc[field]
    if field == "size":
        return f"{value} bytes ({human(value)})"
    if field == "cached_bytes":
        size = doc.get("size") or 0
        share = f", {100 * value / size:.0f}%" if size else ""
        return f"{value} bytes{share}"
    return str(value)
