"""The verbs over a dataset's history and refs: `vfs log`, `vfs tag`, `vfs branch`
(`vfs rm` and `vfs reflog` are in vfs/cli/refs.py)."""

from __future__ import annotations

import argparse
import sys

from vfs.cli.common import (
    add_common,
    count_int,
    human,
    open_spec_store,
    open_store,
    print_json,
    restore_command,
)
from vfs.errors import UsageError
from vfs.ops import history
from vfs.ops.base import short

# --- log ---


def add_log(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Commits reachable from DATASET[@REF], newest first (first parents). "
        "REMOTE:DATASET[@REF] reads a remote's store."
    )
    p.epilog = "examples: vfs log digits; vfs log digits@v2 -n 5; vfs log team:digits"
    p.add_argument("spec", metavar="[REMOTE:]DATASET[@REF]")
    p.add_argument("-n", "--max-count", type=count_int, default=None, help="show at most N commits")
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_log)


def cmd_log(args: argparse.Namespace) -> int:
    store = open_spec_store(args, "spec")
    docs = history.log_docs(store, args.spec, args.max_count)
    if args.json:
        print_json(docs)
        return 0
    for i, d in enumerate(docs):
        if i:
            print()  # a blank line between commits, as git log prints them
        decor = f" ({', '.join(d['refs'])})" if d["refs"] else ""
        print(f"commit {d['id']}{decor}")
        print(f"Author: {d['author']}")
        print(f"Date:   {d['time']}")
        print(f"Files:  {d['files']} ({human(d['bytes'])})")
        if d.get("imported_from"):
            print(f"Source: {history.source_line(d['imported_from'])}")
        for k, v in sorted(d["meta"].items()):
            print(f"Meta:   {k}={v}")
        print()
        for line in (d["message"] or "(no message)").splitlines():
            print(f"    {line}")
    return 0


# --- tag, branch ---


def add_tag(p: argparse.ArgumentParser) -> None:
    p.description = (
        "`vfs tag DATASET` lists tags; `vfs tag DATASET@REF NAME` creates tag NAME; "
        "`vfs tag -d DATASET NAME` deletes it. Tags never move: a mistyped one is "
        "deleted and created again."
    )
    p.epilog = (
        "example: vfs tag imagenet@main v3; vfs tag -d imagenet v3 "
        "(prints how to restore it; `vfs reflog imagenet` keeps the id)"
    )
    p.add_argument("spec", metavar="DATASET[@REF]")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("-d", "--delete", action="store_true", help="delete tag NAME")
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_tag)


def _print_refs(args: argparse.Namespace, found: dict[str, bytes]) -> None:
    if args.json:
        print_json({k: v.hex() for k, v in found.items()})
    else:
        for k, v in found.items():
            print(f"{k}\t{short(v)}")


def _print_deleted(args: argparse.Namespace, gone: history.Deleted) -> None:
    if args.json:
        restore = restore_command(args, gone)
        print_json({"deleted": gone.ref, "id": gone.commit.hex(), "restore": restore})
    kind = "tag" if gone.ref.startswith("tags/") else "branch"
    print(
        f"deleted {kind} {gone.dataset}@{gone.name} (was {short(gone.commit)}); "
        f"restore with: {restore_command(args, gone)}",
        file=sys.stderr,
    )


def cmd_tag(args: argparse.Namespace) -> int:
    store = open_store(args)
    if args.delete:
        _print_deleted(args, history.delete_tag(store, args.spec, args.name))
        return 0
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
        "NAME at that version (REF may be the id of a deleted ref: that restores it); "
        "`vfs branch -d DATASET NAME` deletes NAME. -d refuses the default branch "
        "(main), and a branch holding commits no other branch or tag reaches; -D "
        "deletes the latter too."
    )
    p.epilog = (
        "example: vfs branch -d imagenet exp, then, to undo it, the command it prints: "
        "vfs branch imagenet@3fa2c1d09b7e exp"
    )
    p.add_argument("spec", metavar="DATASET[@REF]")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("-d", "--delete", action="store_true", help="delete branch NAME")
    p.add_argument(
        "-D",
        dest="force_delete",
        action="store_true",
        help="delete branch NAME even if no other ref reaches its commits (-d --force)",
    )
    p.add_argument("-f", "--force", action="store_true", help="with -d: the same as -D")
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_branch)


def cmd_branch(args: argparse.Namespace) -> int:
    store = open_store(args)
    if args.force and not args.delete:
        raise UsageError("--force goes with -d (or use -D)")
    if args.delete or args.force_delete:
        gone = history.delete_branch(
            store, args.spec, args.name, force=args.force or args.force_delete
        )
        _print_deleted(args, gone)
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
