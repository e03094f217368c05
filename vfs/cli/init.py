"""The `vfs init` verb: create a store."""

from __future__ import annotations

import argparse
import sys

from vfs.cli.common import add_common, print_json
from vfs.errors import UsageError
from vfs.ops.init import init_store


def add_init(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Create a store at STORE (a directory or s3://bucket/prefix; default: --store, "
        "else $VFS_STORE, else core.store, else ~/.local/share/vfs/store; a remote's name "
        "names the remote) by writing its config. A first "
        "commit does this by itself in an absent or empty directory; init is needed to "
        "put a store in a directory that holds other files, and says so. Running it on "
        "a store changes nothing."
    )
    p.epilog = "example: vfs init /data/stores/team && vfs commit ./data imagenet --store /data/stores/team"
    p.add_argument(
        "where", nargs="?", default=None, metavar="STORE", help="where (same as --store)"
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    if args.where and args.store and args.where != args.store:
        raise UsageError(f"two stores named: {args.where} and --store {args.store}")
    r = init_store(args.where or args.store)
    if args.json:
        print_json({"store": r.where, "created": r.created, "before": r.before.value})
        return 0
    if not r.created:
        print(f"{r.where} is already a vfs store", file=sys.stderr)
    elif r.before.value == "other":
        print(
            f"created a vfs store at {r.where}, beside the files already there",
            file=sys.stderr,
        )
    else:
        print(f"created a vfs store at {r.where}", file=sys.stderr)
    return 0
