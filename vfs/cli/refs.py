"""The verbs that remove a dataset and show what happened to its refs: `vfs rm`,
`vfs reflog`."""

from __future__ import annotations

import argparse
import sys

from vfs.cli.common import add_common, count_int, open_store, print_json, restore_command
from vfs.errors import UsageError
from vfs.ops import history
from vfs.ops.base import short


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# --- rm ---


def add_rm(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Delete DATASET: all its branches and tags. It asks first on a terminal; "
        "elsewhere it needs --yes. The data stays in the store until `vfs gc` runs "
        "after its grace period, and until then the dataset is restored from the ids "
        "this command prints (also in `vfs reflog DATASET`)."
    )
    p.epilog = "example: vfs rm scratch --yes, then to undo: vfs branch scratch@3fa2c1d09b7e main"
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_rm)


def _confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_rm(args: argparse.Namespace) -> int:
    store = open_store(args)
    if "@" in args.dataset:
        raise UsageError(f"vfs rm takes a DATASET, not a version ({args.dataset!r})")
    branches, tags = history.dataset_refs(store, args.dataset)
    what = f"{_count(len(branches), 'branch', 'branches')} and {_count(len(tags), 'tag', 'tags')}"
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"vfs rm would delete dataset {args.dataset} with {what}; there is no "
                "terminal to ask on, so pass --yes to mean it"
            )
        if not _confirm(f"delete dataset {args.dataset} with {what}?"):
            print("vfs: nothing deleted", file=sys.stderr)
            return 1
    gone = history.remove_dataset(store, args.dataset)
    if args.json:
        print_json({"dataset": args.dataset, "deleted": {d.ref: d.commit.hex() for d in gone}})
    print(
        f"deleted dataset {args.dataset} ({what}). Its data stays in the store until "
        "`vfs gc` runs after its grace period; until then restore with:",
        file=sys.stderr,
    )
    for d in gone:
        print(f"  {restore_command(args, d)}", file=sys.stderr)
    return 0


# --- reflog ---


def add_reflog(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Every change of DATASET's refs, newest first: when, who, what (commit, "
        "rollback, branch, tag, delete, rm), which ref, and its old and new id. "
        "A deleted ref is recreated from its old id: vfs branch DATASET@ID NAME."
    )
    p.epilog = "example: vfs reflog imagenet -n 10"
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument(
        "-n",
        "--max-count",
        metavar="N",
        type=count_int,
        default=None,
        help="show at most N entries",
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_reflog)


def cmd_reflog(args: argparse.Namespace) -> int:
    store = open_store(args)
    docs = history.reflog_docs(store, args.dataset, args.max_count)
    if args.json:
        print_json(docs)
        return 0
    who_width = max((len(d["who"]) for d in docs), default=0)
    ref_width = max((len(d["ref"]) for d in docs), default=0)
    for d in docs:
        old = short(bytes.fromhex(d["old"])) if d["old"] else "-"
        new = short(bytes.fromhex(d["new"])) if d["new"] else "-"
        print(
            f"{d['time']}  {d['who']:<{who_width}}  {d['action']:<8}  "
            f"{d['ref']:<{ref_width}}  {old} -> {new}"
        )
    if not docs:
        print(f"{args.dataset} has no ref log entries yet", file=sys.stderr)
    return 0
