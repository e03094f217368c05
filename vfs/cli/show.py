"""The `vfs show` verb: the stored objects behind a version, decoded."""

from __future__ import annotations

import argparse

from vfs.cli.common import add_common, open_store, print_json
from vfs.ops.show import show


def add_show(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Print the commit of DATASET@REF; with PATH, the tree page of that directory, "
        "or a file's entry with its chunks and where they are stored. For looking "
        "under the hood; docs/format.md explains every field."
    )
    p.add_argument("spec", metavar="DATASET[@REF]")
    p.add_argument("path", nargs="?", default=None, metavar="PATH")
    add_common(p)
    p.set_defaults(func=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    store = open_store(args)
    shown = show(store, args.spec, args.path)
    print(next(shown))
    print_json(next(shown))
    return 0
