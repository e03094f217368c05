"""The verbs that make a new version: `vfs commit` and `vfs rollback`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vfs.cli.common import (
    Formatter,
    add_common,
    cache_dir,
    count,
    human,
    open_store,
    print_json,
)
from vfs.cli.progress import CountBar
from vfs.defaults import DEFAULT_BRANCH
from vfs.errors import Interrupted, UsageError
from vfs.ops.base import short
from vfs.ops.commit import CommitResult, commit_dir
from vfs.ops.lineage import commit_meta
from vfs.ops.rollback import rollback

# --- commit ---


def add_commit(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Snapshot DIR as a new version of DATASET on a branch (default main). Only "
        "chunks the store does not have yet are uploaded; files unchanged since the "
        "last commit from this machine are not even read. Prints the new version id. "
        "Inside a git work tree the git revision and its dirty flag are recorded. "
        "Paths matched by a .vfsignore file (gitignore syntax, in DIR or any directory "
        "below it) or by --exclude are left out, and so is a store kept inside DIR. "
        "The first commit to a store creates it, in an absent or empty directory only "
        "(see vfs init).\n\n"
        "Lineage: --input records the exact id of each version the content was made "
        "from, and --access-record attaches the files and byte ranges a run read "
        "(vfs mount --record-access FILE); vfs show DATASET@REF --lineage and --inputs "
        "print them back. The code's git revision is recorded from DIR's work tree, "
        "else from the working directory's."
    )
    p.epilog = (
        "examples:\n"
        "  vfs commit ./data imagenet -m 'relabel' --tag v3\n"
        "  vfs commit ./data imagenet --exclude '*.tmp' --exclude '/scratch/'\n"
        "  vfs commit ./model resnet --input imagenet@v3 --input labels@v2 \\\n"
        "      --access-record run.access.json --tag v1\n"
        "  vfs commit /mnt/nfs/imagenet imagenet --store s3://bucket/vfs --ray auto"
    )
    p.formatter_class = Formatter
    p.add_argument("dir", metavar="DIR", help="the directory to snapshot")
    p.add_argument(
        "dataset", metavar="DATASET", help="the dataset it is a version of (made if new)"
    )
    p.add_argument("-m", "--message", default="", help="what changed")
    p.add_argument("--tag", help="also tag the new version (tags never move)")
    p.add_argument(
        "--branch",
        default=DEFAULT_BRANCH,
        help=f"branch to commit on (default: {DEFAULT_BRANCH}); a new branch starts at "
        f"{DEFAULT_BRANCH}'s head, so its history is {DEFAULT_BRANCH}'s",
    )
    p.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="K=V",
        help="free metadata (repeatable); keys beginning with 'vfs.' are vfs's own",
    )
    p.add_argument("--allow-empty", action="store_true", help="commit even if nothing changed")
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out paths matching PATTERN (gitignore syntax, relative to DIR; "
        "repeatable; wins over .vfsignore files; recorded in the commit as vfs.exclude)",
    )
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="DATASET@REF",
        help="a version this content was made from, recorded by its full id "
        "(repeatable; STORE_URL::DATASET@REF for another store)",
    )
    p.add_argument(
        "--access-record",
        action="append",
        default=[],
        metavar="FILE",
        help="attach the access record FILE of the run that made this content "
        "(written by vfs mount --record-access; repeatable: the records are merged)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="read, chunk and upload on a Ray cluster (needs vfs[ray]): ADDRESS as "
        "ray.init takes it ('auto', 'ray://HOST:10001'); without one, a local Ray is "
        "started. Every node must see DIR at the same path and reach the store (S3); "
        "see docs/scale.md",
    )
    p.add_argument(
        "--ray-parts",
        type=int,
        default=None,
        metavar="N",
        help="with --ray: split the tree into about N parts of equal size "
        "(default: 4 per CPU of the cluster, none under 64 MiB)",
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_commit)


def _parse_meta(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not eq or not k:
            raise UsageError(f"--meta takes KEY=VALUE, got {item!r}")
        if k.startswith("vfs."):
            # vfs's own record (inputs, access record, imports, rollbacks, excludes)
            # is written by vfs alone: a hand-made one could overwrite or fake it.
            raise UsageError(
                f"--meta {k}: keys beginning with 'vfs.' are vfs's own; record inputs "
                "with --input and reads with --access-record, or choose another key"
            )
        out[k] = v
    return out


def _commit_json(r: CommitResult) -> dict[str, Any]:
    return {
        "id": r.commit.hex(),
        "dataset": r.dataset,
        "branch": r.branch,
        "parent": r.parent.hex() if r.parent else None,
        "tree": r.tree.hex(),
        "unchanged": r.unchanged,
        "files": r.files,
        "bytes": r.bytes,
        "bytes_read": r.bytes_read,
        "new_chunks": r.new_chunks,
        "bytes_uploaded": r.bytes_uploaded,
        "packs": r.packs,
        "ignored": r.ignored,
        "seconds": round(r.seconds, 3),
        "rebased": r.rebased,  # times re-parented: others moved the branch meanwhile
        "warnings": r.warnings,
    }


def cmd_commit(args: argparse.Namespace) -> int:
    store = open_store(args, for_write=True)
    meta = _parse_meta(args.meta)
    if args.ray_parts is not None and (args.ray is None or args.ray_parts < 1):
        store.close()
        raise UsageError("--ray-parts takes a number >= 1, and only with --ray")
    try:
        # Inputs are resolved, and a record stored, before any data is read: a typo
        # in --input fails at once. The user's --meta wins over what lineage adds.
        meta = commit_meta(store, args.dir, args.input, args.access_record) | meta
    except BaseException:
        store.close()
        raise
    bar = CountBar("commit", "files", bar=not args.json)
    try:
        common: dict[str, Any] = dict(
            message=args.message,
            branch=args.branch,
            tag=args.tag,
            meta=meta,
            cache_dir=cache_dir(args),
            progress=bar,
            allow_empty=args.allow_empty,
            exclude=args.exclude,
        )
        if args.ray is None:
            r = commit_dir(store, args.dir, args.dataset, **common)
        else:
            # Imported only here: a commit without --ray never loads Ray.
            from vfs.ops.raycommit import ray_commit_dir

            r = ray_commit_dir(
                store,
                args.dir,
                args.dataset,
                address=args.ray or None,
                parts=args.ray_parts,
                **common,
            )
    except KeyboardInterrupt:
        raise Interrupted(
            "commit interrupted: no ref was moved; run the same command again to "
            "resume (uploaded packs are reused)"
        ) from None
    finally:
        bar.close()
        store.close()
    where = f"{r.dataset}@{r.branch}"
    if r.rebased:
        # Each commit is a whole snapshot: what others committed meanwhile is this
        # one's history now, not its content. Said with --json too (stderr).
        moved = (
            f"{where} moved while this commit ran; it was re-parented {r.rebased}x onto "
            "the new head, and is the head now with this directory's content "
            f"(`vfs diff {where}~1 {where}` shows what it replaced)"
        )
        r.warnings.append(moved)
        print(f"vfs: warning: {moved}", file=sys.stderr)
    if args.json:
        print_json(_commit_json(r))
        return 0
    rate = f" ({r.bytes_read / r.seconds / 1e6:.0f} MB/s)" if r.seconds >= 1 else ""
    ignored = f" ({r.ignored} ignored)" if r.ignored else ""
    if r.unchanged:
        print(f"nothing changed since {short(r.commit)} on {where}{ignored}", file=sys.stderr)
        if args.tag:
            print(f"tagged {short(r.commit)} {args.tag}", file=sys.stderr)
        unused = [
            name
            for name, given in (
                ("-m", args.message),
                ("--meta", args.meta),
                ("--input", args.input),
                ("--access-record", args.access_record),
            )
            if given
        ]
        if unused:
            print(
                f"vfs: warning: {', '.join(unused)} not recorded: no commit was made "
                f"({short(r.commit)} keeps its own); --allow-empty commits them on the "
                "same content",
                file=sys.stderr,
            )
    else:
        print(
            f"{where}: {r.files} files, {human(r.bytes)}"
            + (f", {r.ignored} ignored" if r.ignored else "")
            + f"; read {human(r.bytes_read)}"
            f"{rate}, uploaded {human(r.bytes_uploaded)} in {count(r.packs, 'pack')}, "
            f"{r.seconds:.2f} s",
            file=sys.stderr,
        )
    print(r.commit.hex())
    return 0


# --- rollback ---


def add_rollback(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Commit the tree of DATASET@OLD as a new version on top of a branch (default: "
        "main). Nothing is copied and history is kept: the versions in between stay "
        "reachable."
    )
    p.epilog = "example: vfs rollback imagenet@v2"
    p.add_argument("spec", metavar="DATASET@OLD", help="the version whose content comes back")
    p.add_argument(
        "--branch",
        default=DEFAULT_BRANCH,
        help=f"the branch that gets the new version (default {DEFAULT_BRANCH})",
    )
    p.add_argument(
        "-m", "--message", default=None, help="the message (default: rollback to DATASET@OLD)"
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_rollback)


def cmd_rollback(args: argparse.Namespace) -> int:
    store = open_store(args)
    r = rollback(store, args.spec, args.branch, args.message)
    if r.from_elsewhere:
        where = f"{r.dataset}@{r.branch}"
        print(
            f"vfs: warning: {r.spec} is not in {where}'s history: what {where} had "
            "gained since they diverged is not in its content now, only in its history "
            f"(`vfs diff {where}~1 {where}` shows what went); vfs merges no content",
            file=sys.stderr,
        )
    if args.json:
        print_json(
            {
                "id": r.id.hex(),
                "dataset": r.dataset,
                "branch": r.branch,
                "tree": r.tree.hex(),
                "rollback_of": r.rollback_of.hex(),
                "unchanged": r.unchanged,
                "from_elsewhere": r.from_elsewhere,
            }
        )
    elif r.unchanged:
        print(
            f"nothing to roll back: {r.dataset}@{r.branch} has the content of {r.spec} already",
            file=sys.stderr,
        )
        print(r.id.hex())
    else:
        print(f"{r.dataset}@{r.branch} now has the content of {r.spec}", file=sys.stderr)
        print(r.id.hex())
    return 0
