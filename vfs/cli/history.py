"""The verbs over a dataset's history and refs: `vfs log`, `vfs tag`, `vfs branch`."""

from __future__ import annotations

import argparse
import sys

from vfs.cli.common import add_common, count_int, human, open_store, print_json
from vfs.ops import history
from vfs.ops.base import short

# --- log ---


def add_log(p: argparse.ArgumentParser) -> None:
    p.description = "Commits reachable from DATASET[@REF], newest first (first parents)."
    p.add_argument("spec", metavar="DATASET[@REF]")
    p.add_argument("-n", "--max-count", type=count_int, default=0, help="show at most N commits")
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_log)


def cmd_log(args: argparse.Namespace) -> int:
    store = open_store(args)
    docs = history.log_docs(store, args.spec, args.max_count)
    if args.json:
        print_json(docs)
        return 0
    for d in docs:
        decor = f" ({', '.join(d['refs'])})" if d["refs"] else ""
        print(f"commit {d['id']}{decor}")
        print(f"Author: {d['author']}")
        print(f"Date:   {d['time']}")
        print(f"Files:  {d['files']} ({human(d['bytes'])})")
        for k, v in sorted(d["meta"].items()):
            print(f"Meta:   {k}={v}")
        print()
        for line in (d["message"] or "(no message)").splitlines():
            print(f"    {line}")
        print()
    return 0


# --- tag, branch ---


def add_tag(p: argparse.ArgumentParser) -> None:
    p.description = (
        "`vfs tag DATASET` lists tags; `vfs tag DATASET@REF NAME` creates tag NAME. "
        "Tags never move."
    )
    p.add_argument("spec", metavar="DATASET[@REF]")
    p.add_argument("name", nargs="?", metavar="NAME")
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_tag)


def _print_refs(args: argparse.Namespace, found: dict[str, bytes]) -> None:
    if args.json:
        print_json({k: v.hex() for k, v in found.items()})
    else:
        for k, v in found.items():
            print(f"{k}\t{short(v)}")


def cmd_tag(args: argparse.Namespace) -> int:
    store = open_store(args)
    if args.name is None:
        _print_refs(args, history.tags(store, args.spec))
        return 0
    dataset, commit = history.create_tag(store, args.spec, args.name)
    if args.json:
        print_json({"tag": args.name, "id": commit.hex()})
    else:
        print(f"tagged {dataset}@{args.name} -> {short(commit)}", file=sys.stderr)
    return 0


def add_branch(p: argparse.ArgumentParser) -> None:
    p.description = (
        "`vfs branch DATASET` lists branches; `vfs branch DATASET@REF NAME` creates "
        "NAME at that version; `vfs branch -d DATASET NAME` deletes NAME."
    )
    p.add_argument("spec", metavar="DATASET[@REF]")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("-d", "--delete", action="store_true", help="delete branch NAME")
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_branch)


def cmd_branch(args: argparse.Namespace) -> int:
    store = open_store(args)
    if args.delete:
        dataset = history.delete_branch(store, args.spec, args.name)
        print(f"deleted branch {dataset}@{args.name}", file=sys.stderr)
        return 0
    if args.name is None:
        _print_refs(args, history.branches(store, args.spec))
        return 0
    dataset, commit = history.create_branch(store, args.spec, args.name)
    if args.json:
        print_json({"branch": args.name, "id": commit.hex()})
    else:
        print(f"created branch {dataset}@{args.name} at {short(commit)}", file=sys.stderr)
    return 0
