"""The `vfs lock` verb: write or check vfs.lock, the exact versions a project reads."""

from __future__ import annotations

import argparse
import os
import sys

from vfs import lock
from vfs.cli.common import Formatter, add_common, open_store, print_json
from vfs.errors import UsageError


def add_lock(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Resolve each DATASET@REF to its full version id and write them to vfs.lock "
        "(TOML, one table per dataset: the ref as written, the id, the store, the "
        "time), a file meant for git. `vfs mount --locked DS MNT` and `vfs get "
        "--locked DS` then read exactly those ids, found through the nearest vfs.lock "
        "in the working directory or above, so a rerun months later reads identical "
        "bytes. Locking a dataset again updates its entry and keeps the others.\n\n"
        "--check exits 1, listing them, when a locked ref now names another version "
        "(0 when none has moved): for CI."
    )
    p.epilog = (
        "examples:\n"
        "  vfs lock imagenet@v3 labels@main\n"
        "  vfs lock --check            # exit 1 if labels@main moved since\n"
        "  vfs mount --locked imagenet /mnt/imagenet"
    )
    p.formatter_class = Formatter
    p.add_argument("specs", nargs="*", metavar="[REMOTE:]DATASET@REF")
    p.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="FILE",
        help="the lock file (default: the nearest vfs.lock in the working directory or "
        "above, the one --locked reads; to write where there is none, ./vfs.lock)",
    )
    p.add_argument("--check", action="store_true", help="exit 1 if a locked ref has moved")
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_lock)


def _lock_to_write() -> str:
    """The lock file `vfs lock` updates: the one `--locked` reads (the nearest
    vfs.lock here or above), else a new ./vfs.lock. A lock written in a subdirectory
    would hide the project's from every reader there."""
    from vfs.errors import NotFound

    try:
        return lock.find()
    except NotFound:
        return os.path.abspath(lock.LOCK_FILE)


def cmd_lock(args: argparse.Namespace) -> int:
    from vfs.ops.lock import check, lock_specs

    if args.check:
        if args.specs:
            raise UsageError("--check takes no DATASET@REF: it checks the whole lock file")
        path = args.output or lock.find()
        # --store: every entry is checked in that store, where --locked would read it
        moved = check(lock.read(path), (lambda _: open_store(args)) if args.store else None)
        if args.json:
            print_json(
                {
                    "lock": path,
                    "moved": [
                        {
                            "dataset": m.entry.dataset,
                            "ref": m.entry.ref,
                            "locked": m.entry.commit,
                            "now": m.now,
                            "error": m.why or None,
                        }
                        for m in moved
                    ],
                }
            )
        for m in moved:
            now = m.now[:12] if m.now else f"gone ({m.why})"
            print(
                f"{m.entry.dataset}@{m.entry.ref}: locked {m.entry.commit[:12]}, now {now}",
                file=sys.stderr if args.json else sys.stdout,
            )
        if not moved:
            print(f"{path}: no locked ref has moved", file=sys.stderr)
        return 1 if moved else 0
    if not args.specs:
        raise UsageError("name at least one DATASET@REF to lock (or --check)")
    path = args.output or _lock_to_write()
    from vfs.ops import base

    # REMOTE:DATASET@REF locks a version of a remote's store, as get and mount read one
    store, specs = base.open_spec(args.store, args.specs)
    try:
        new = lock_specs(store, [str(s) for s in specs], path)
    finally:
        store.close()
    if args.json:
        print_json({"lock": path, "locked": {n: vars(e) for n, e in new.items()}})
    else:
        for e in new.values():
            print(f"{e.dataset}@{e.ref}\t{e.commit}")
        print(f"wrote {path}", file=sys.stderr)
    return 0
