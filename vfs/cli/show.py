"""The `vfs show` verb: the stored objects behind a version, decoded; with
--lineage, what it was made from; with --inputs, the files its run read."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from vfs.cli.common import Formatter, add_common, human, open_spec_store, print_json, shown
from vfs.errors import UsageError

if TYPE_CHECKING:
    from vfs.store import Store


def add_show(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Print the commit of DATASET@REF; with PATH, the tree page of that directory, "
        "or a file's entry with its chunks and where they are stored. For looking "
        "under the hood; docs/format.md explains every field.\n\n"
        "--lineage prints the versions DATASET@REF was made from (vfs commit "
        "--input), and theirs, back to versions with no inputs: the raw data. "
        "--inputs prints which files of which versions the run that made it read, "
        "with the bytes read of each file's size (vfs commit --access-record)."
    )
    p.epilog = (
        "examples:\n"
        "  vfs show imagenet@v3 train/0001.jpg\n"
        "  vfs show resnet@v1 --lineage\n"
        "  vfs show resnet@v1 --inputs --json\n"
        "  vfs show team:imagenet@v3            # in the remote team's store"
    )
    p.formatter_class = Formatter
    p.add_argument("spec", metavar="[REMOTE:]DATASET[@REF]")
    p.add_argument("path", nargs="?", default=None, metavar="PATH")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--lineage", action="store_true", help="the graph of inputs back to the raw data"
    )
    what.add_argument(
        "--inputs", action="store_true", help="the files (and bytes) the run that made it read"
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    if (args.lineage or args.inputs) and args.path is not None:
        raise UsageError("--lineage and --inputs take no PATH")
    store = open_spec_store(args, "spec")
    try:
        if args.lineage:
            return _lineage(store, args)
        if args.inputs:
            return _inputs(store, args)
        from vfs.ops.show import show

        shown_objects = show(store, args.spec, args.path)
        title = next(shown_objects)
        if not args.json:
            print(title)
        print_json(next(shown_objects))
        return 0
    finally:
        store.close()


def _lineage(store: Store, args: argparse.Namespace) -> int:
    from vfs.ops.lineage import Node, lineage

    root = lineage(store, args.spec)
    if args.json:
        print_json(root.to_json())
        return 0

    def line(n: Node) -> str:
        name = f"{n.dataset}@{n.commit.hex()}"
        bits = []
        if n.tags:
            bits.append("tags: " + ", ".join(n.tags))
        if n.time:
            bits.append(n.time)
        if n.git:
            bits.append(f"git {n.git[:12]}{'+dirty' if n.git.endswith('+dirty') else ''}")
        if n.access:
            bits.append("access record")
        if n.store:
            bits.append(f"in {n.store}")
        if n.seen:
            bits.append("(shown above)")
        if n.error:
            bits.append(f"UNREADABLE: {n.error}")
        elif not n.inputs and not n.seen:
            bits.append("raw: no inputs")
        return name + (f"  [{'; '.join(bits)}]" if bits else "")

    def walk(n: Node, prefix: str, last: bool, top: bool) -> None:
        if top:
            print(line(n))
            child_prefix = ""
        else:
            print(prefix + ("└── " if last else "├── ") + line(n))
            child_prefix = prefix + ("    " if last else "│   ")
        for i, sub in enumerate(n.inputs):
            walk(sub, child_prefix, i == len(n.inputs) - 1, False)

    walk(root, "", True, True)
    return 0


def _inputs(store: Store, args: argparse.Namespace) -> int:
    from vfs.ops.lineage import inputs_read

    rid, versions = inputs_read(store, args.spec)
    if args.json:
        print_json(
            {
                "access_record": rid,
                "versions": [
                    {
                        "version": v.version,
                        "tags": v.tags,
                        "files_in_version": v.version_files,
                        "bytes_in_version": v.version_bytes,
                        "error": v.error or None,
                        "files": [
                            {
                                "path": f.path,
                                "bytes_read": f.read,
                                "size": f.size if f.size >= 0 else None,
                                "ranges": [list(r) for r in f.ranges],
                            }
                            for f in v.files
                        ],
                    }
                    for v in versions
                ],
            }
        )
        return 0
    for v in versions:
        tags = f" ({', '.join(v.tags)})" if v.tags else ""
        read = sum(f.read for f in v.files)
        print(f"{v.version}{tags}")
        if v.error:
            print(f"  unreadable: {v.error}")
        else:
            print(
                f"  {len(v.files)} of {v.version_files} files read, {human(read)} of "
                f"{human(v.version_bytes)}"
            )
        for f in v.files:
            if f.size < 0:
                print(f"  {shown(f.path)}\t{f.read} bytes (not a file of this version)")
            else:
                pct = 100.0 * f.read / f.size if f.size else 100.0
                print(f"  {shown(f.path)}\t{f.read}/{f.size} bytes ({pct:.0f}%)")
    print(f"access record {rid}", file=sys.stderr)
    return 0
