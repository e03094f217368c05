"""The `vfs verify` verb: is everything a version needs in the store, and intact?"""

from __future__ import annotations

import argparse
import sys
import time

from vfs.cli.common import (
    add_common,
    count,
    human,
    open_store,
    positive_int,
    print_json,
    shown,
)
from vfs.errors import UsageError
from vfs.ops.base import resolve, short
from vfs.ops.verify import Verifier


def add_verify(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Read from the store every object DATASET@REF needs: the commit, every tree "
        "page, the locations of every directory page and every chunk (by ranged "
        "reads of the packs), and check each against its id. Each damaged object "
        "(missing, truncated, or not matching its id) is printed with its store key "
        "and the files it affects, and the command exits 1. Nothing is read from or "
        "written to the local cache."
    )
    p.epilog = "examples: vfs verify imagenet@v3; vfs verify imagenet --history; vfs verify --all"
    p.add_argument("spec", nargs="?", metavar="DATASET[@REF]")
    p.add_argument("--history", action="store_true", help="also every ancestor of the version")
    p.add_argument(
        "--all",
        action="store_true",
        help="every version reachable from any branch or tag of any dataset in the store",
    )
    p.add_argument(
        "-j", "--jobs", type=positive_int, default=8, help="parallel range reads (default 8)"
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    if args.all == (args.spec is not None):
        raise UsageError("give DATASET[@REF], or --all for every version in the store")
    store = open_store(args)
    t0 = time.monotonic()
    try:
        verifier = Verifier(store, jobs=args.jobs)
        version_id = None
        if args.all:
            what = f"every version in {store.url}"
            res = verifier.verify_refs()
        else:
            r = resolve(store, args.spec)
            what = f"{r.spec} ({short(r.commit)})" + (" and its history" if args.history else "")
            version_id = r.commit.hex()
            res = verifier.verify_version(r.commit, history=args.history)
    finally:
        store.close()
    secs = time.monotonic() - t0
    if args.json:
        print_json(
            {
                "verified": what,
                "id": version_id,  # the version's full id; null with --all
                "ok": res.ok,
                "commits": res.commits,
                "pages": res.pages,
                "locs": res.locs,
                "chunks": res.chunks,
                "packs": res.packs,
                "bytes_read": res.bytes_read,
                "seconds": round(secs, 3),
                "damaged": [d.to_json() for d in res.damaged],
            }
        )
    else:
        for d in res.damaged:
            why = d.error.removeprefix(f"{d.key}: ")  # the key is said once
            print(f"damaged {d.key}: {why}")
            if d.paths:
                print(f"  affects: {', '.join(shown(p) for p in d.paths)}")
        verdict = "all intact" if res.ok else f"{count(len(res.damaged), 'damaged object')}"
        print(
            f"verified {what}: {res.commits} commits, {res.pages} tree pages, {res.locs} "
            f"locations, {res.chunks} chunks in {res.packs} packs ({human(res.bytes_read)} "
            f"read) in {secs:.2f} s: {verdict}",
            file=sys.stderr,
        )
    return 0 if res.ok else 1
