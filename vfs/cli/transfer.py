"""The verbs between stores: `vfs push`, `vfs pull`, `vfs import`, `vfs update`.

The work is in vfs/ops/transfer.py and vfs/ops/imports.py; this module parses, opens
the other store (`_other_store`) and prints: a progress bar and a summary on stderr,
`--json` on stdout.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from vfs.cli.common import (
    Formatter,
    add_common,
    count,
    human,
    open_store,
    positive_int,
    print_json,
)
from vfs.cli.progress import CountBar
from vfs.errors import Interrupted, UsageError
from vfs.ops.transfer import DEFAULT_JOBS, Progress

if TYPE_CHECKING:
    from vfs.store import Store


def _bar(args: argparse.Namespace) -> Progress:
    return CountBar(args.command, "objects", bar=not args.json)


def _other_store(args: argparse.Namespace, flag: str, for_write: bool) -> tuple[Store, str]:
    """The store on the other side, named by --to or --from: a store URL or a remote
    name (open_store resolves both), else the default remote (core.remote); and the
    name to give it in the commands a message suggests (as the user would type it)."""
    from vfs import config
    from vfs.ops import base

    where = getattr(args, flag)
    if where is not None:
        return base.open_store(where, for_write=for_write), where
    settings = config.load()
    if settings.get("core.remote") is None:
        raise UsageError(
            f"say which store to {args.command} {'to' if flag == 'to' else 'from'}: "
            f"--{flag} REMOTE_OR_URL, or set a default with `vfs remote add NAME URL --default`"
        )
    remote = settings.default_remote()
    return base.open_target(remote.target(), for_write=for_write), remote.name


def _add_jobs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        default=DEFAULT_JOBS,
        help=f"objects copied at once (default {DEFAULT_JOBS})",
    )


def _summary(verb: str, stats: dict[str, Any]) -> str:
    served = (
        f", {stats['server_side_objects']} copied server-side"
        if stats["server_side_objects"]
        else ""
    )
    moved = "received" if verb == "pull" else "sent"
    return (
        f"{verb}: {count(stats['objects'], 'object')}, {human(stats['bytes'])} {moved}"
        f"{served}; {stats['already_present']} already there; {stats['seconds']:.2f} s"
    )


# --- push, pull ---


def _add_transfer(p: argparse.ArgumentParser, verb: str) -> None:
    side, flag = ("to", "to") if verb == "push" else ("from", "from")
    other = "the other store" if verb == "push" else "this store"
    p.description = (
        f"Copy DATASET@REF {'to' if verb == 'push' else 'from'} another store, with its "
        f"history: only the objects {other} lacks (packs whole, with their indexes, then "
        "locations and tree pages, then commits), in parallel; then set the same branch "
        "(or tag) there by compare-and-swap. An interrupted run leaves no ref pointing "
        "at anything missing, and the next run sends only what is left.\n\n"
        "A branch moves only forward: if it has commits there that REF's history lacks "
        f"(both sides moved), the {verb} is refused and nothing changes; "
        "--as-branch NAME sets another branch instead. A version named by id needs "
        "--as-branch. Between two buckets or prefixes of one S3 endpoint the objects "
        "are copied server-side."
    )
    if verb == "push":
        p.epilog = (
            "examples:\n"
            "  vfs push imagenet@main --to s3://team-bucket/vfs\n"
            "  vfs push imagenet@v3 --to team            # a tag; a remote name\n"
            "  vfs push imagenet@main --to team --as-branch alice-relabel"
        )
    else:
        p.epilog = (
            "examples:\n"
            "  vfs pull imagenet@main --from s3://team-bucket/vfs\n"
            "  vfs pull imagenet@v3 --from team --json"
        )
    p.formatter_class = Formatter
    p.add_argument("spec", metavar="DATASET[@REF]")
    p.add_argument(
        f"--{flag}",
        dest=flag,
        metavar="REMOTE_OR_URL",
        default=None,
        help=f"the store to {verb} {side}: a remote name or a store URL (default: the "
        "default remote, core.remote; see vfs remote)",
    )
    p.add_argument(
        "--as-branch",
        metavar="NAME",
        default=None,
        help="set this branch on the other side instead of REF's own name",
    )
    p.add_argument(
        "--tags",
        action="store_true",
        help="also every tag of DATASET that names a version of REF's history",
    )
    _add_jobs(p)
    add_common(p, json_output=True)


def add_push(p: argparse.ArgumentParser) -> None:
    _add_transfer(p, "push")
    p.set_defaults(func=cmd_push)


def add_pull(p: argparse.ArgumentParser) -> None:
    _add_transfer(p, "pull")
    p.set_defaults(func=cmd_pull)


def _interrupted(verb: str) -> Interrupted:
    """What Ctrl-C in a copy between stores says: the same for push, pull, import and
    update, which all copy objects first and move a ref last."""
    return Interrupted(
        f"{verb} interrupted: no ref was moved; run the same command again to resume "
        "(what was copied is not copied again)"
    )


def _run_transfer(
    args: argparse.Namespace, src: Store, dst: Store, verb: str, other_name: str
) -> int:
    from vfs.ops.base import short
    from vfs.ops.transfer import transfer

    try:
        res = transfer(
            src,
            dst,
            args.spec,
            verb=verb,
            as_branch=args.as_branch,
            tags=args.tags,
            jobs=args.jobs,
            progress=_bar(args),
            other_name=other_name,
        )
    except KeyboardInterrupt:
        raise _interrupted(verb) from None
    finally:
        src.close()
        dst.close()
    doc = res.to_json()
    if args.json:
        print_json(doc)
    ref = f"{res.dataset}@{res.name}"
    if res.old == res.commit:
        print(f"{verb}: {ref} is already {short(res.commit)} on {res.destination}", file=sys.stderr)
    else:
        moved = (
            f"{short(res.old)}..{short(res.commit)}"
            if res.old
            else f"new {res.kind} at {short(res.commit)}"
        )
        print(f"{verb}: {ref} {moved} on {res.destination}", file=sys.stderr)
        print(_summary(verb, doc), file=sys.stderr)
    if res.tags:
        print(f"{verb}: tags created: {', '.join(res.tags)}", file=sys.stderr)
    there = other_name if verb == "push" else "this store"
    for spec in res.missing_inputs:
        print(
            f"vfs: warning: {ref} records the input {spec} (vfs show --lineage), which "
            f"{there} does not have: its lineage there reads UNREADABLE until that "
            f"version is {verb}ed too",
            file=sys.stderr,
        )
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    src = open_store(args)
    dst, name = _other_store(args, "to", for_write=True)
    return _run_transfer(args, src, dst, "push", name)


def cmd_pull(args: argparse.Namespace) -> int:
    src, name = _other_store(args, "from", for_write=False)
    return _run_transfer(args, src, open_store(args, for_write=True), "pull", name)


# --- import, update ---


def add_import(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Bring a version of another store into this one: copy the objects this store "
        "lacks, and commit the same tree as a new version of NAME (default: the same "
        "dataset name), on its main branch. The new commit records where it came from "
        "(store URL, dataset, ref as given, commit id; `vfs log` and `vfs show` print "
        "it), and `vfs update NAME` imports again when that ref has moved. A model's "
        "recorded inputs (vfs commit --input) stay pointed at the store they live in.\n\n"
        "The other store is REMOTE: before the version, or --from REMOTE_OR_URL."
    )
    p.epilog = (
        "examples:\n"
        "  vfs import registry:imagenet@v3\n"
        "  vfs import imagenet@v3 --from s3://registry/vfs --as imagenet-public\n"
        "  vfs log imagenet        # Source: imported from registry:imagenet@v3 (...)"
    )
    p.formatter_class = Formatter
    p.add_argument("spec", metavar="[REMOTE:]DATASET[@REF]")
    p.add_argument(
        "--from",
        dest="from_",
        metavar="REMOTE_OR_URL",
        default=None,
        help="the store to import from (instead of REMOTE:)",
    )
    p.add_argument(
        "--as",
        dest="as_name",
        metavar="NAME",
        default=None,
        help="the dataset name here (default: the source's)",
    )
    p.add_argument("-m", "--message", default=None, help="the new commit's message")
    _add_jobs(p)
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_import)


def _print_import(args: argparse.Namespace, verb: str, res: Any) -> None:
    from vfs.ops.base import short

    doc = res.to_json()
    if args.json:
        print_json(doc)
    if res.up_to_date:
        print(f"{verb}: {res.dataset} is up to date: {res.line}", file=sys.stderr)
        return
    print(
        f"{verb}: {res.dataset}@{res.branch} is now {short(res.commit)}, {res.line}",
        file=sys.stderr,
    )
    print(_summary(verb, doc), file=sys.stderr)


def cmd_import(args: argparse.Namespace) -> int:
    from vfs.ops import base
    from vfs.ops.imports import import_version

    remote, spec = base.split_remote(args.spec)
    if remote is not None and args.from_ is not None:
        raise UsageError("name the other store once: REMOTE:DATASET@REF or --from, not both")
    if remote is None and args.from_ is None:
        raise UsageError(
            "say which store to import from: REMOTE:DATASET@REF, or --from REMOTE_OR_URL"
        )
    if not spec:
        raise UsageError(f"{args.spec!r} names no dataset: REMOTE:DATASET[@REF]")
    src = base.open_store(remote or args.from_)
    store = open_store(args, for_write=True)
    try:
        res = import_version(
            store,
            src,
            spec,
            remote=remote,
            as_name=args.as_name,
            message=args.message,
            jobs=args.jobs,
            progress=_bar(args),
        )
    except KeyboardInterrupt:
        raise _interrupted("import") from None
    finally:
        src.close()
        store.close()
    _print_import(args, "import", res)
    return 0


def add_update(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Import NAME again from the source its last import recorded (vfs import), if "
        "the recorded ref now names another version there; else say it is up to date. "
        "The source store is opened by the URL recorded."
    )
    p.epilog = "example: vfs update imagenet"
    p.formatter_class = Formatter
    p.add_argument("name", metavar="NAME")
    _add_jobs(p)
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_update)


def cmd_update(args: argparse.Namespace) -> int:
    from vfs.ops.imports import update

    store = open_store(args, for_write=True)
    try:
        res = update(store, args.name, jobs=args.jobs, progress=_bar(args))
    except KeyboardInterrupt:
        raise _interrupted("update") from None
    finally:
        store.close()
    _print_import(args, "update", res)
    return 0
