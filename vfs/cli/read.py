"""The verbs that read a version without a mount: `vfs ls`, `vfs cat`, `vfs get`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from vfs.cache import ChunkCache
from vfs.cli.common import (
    Formatter,
    add_common,
    cache_dir,
    count,
    human,
    open_spec_store,
    positive_int,
    print_json,
    print_json_list,
    shown,
    write_nul,
)
from vfs.cli.progress import meter
from vfs.config import resolve_cache_size
from vfs.errors import Interrupted, UsageError, VfsError
from vfs.ops import base, history, read
from vfs.ops.get import get

log = logging.getLogger(__name__)

# --- ls ---


def add_ls(p: argparse.ArgumentParser) -> None:
    p.description = (
        "With no argument: the datasets in the store with their branches, tags and "
        "sizes. With DATASET@REF: the entries at PATH in that version. REMOTE: (a "
        "remote's name and a colon) reads another store, leaving the default alone: "
        "`vfs ls team:` lists the datasets of the remote team."
    )
    p.epilog = (
        "examples: vfs ls; vfs ls imagenet@v3 train -l; vfs ls imagenet -R; vfs ls team:; "
        "vfs ls team:imagenet@v3"
    )
    p.add_argument("spec", nargs="?", metavar="[REMOTE:]DATASET[@REF]")
    p.add_argument("path", nargs="?", default="", metavar="PATH")
    p.add_argument("-l", dest="long", action="store_true", help="long listing: mode, size, mtime")
    p.add_argument(
        "-R", dest="recursive", action="store_true", help="list subdirectories recursively"
    )
    p.add_argument(
        "-z", dest="nul", action="store_true", help="paths only, each ended by NUL, exactly"
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_ls)


@contextlib.contextmanager
def _cache_if_any(args: argparse.Namespace) -> Iterator[ChunkCache | None]:
    """The chunk cache, for ls and cat to read through (and to read pinned versions
    with the store away); None where it cannot be opened (a cache directory this
    user may not write), as they read without one."""
    try:
        cache = ChunkCache(cache_dir(args), resolve_cache_size())
    except (VfsError, OSError) as e:
        log.debug("reading without the chunk cache: %s", e)
        cache = None
    if cache is None:
        yield None
        return
    with cache:
        yield cache


def cmd_ls(args: argparse.Namespace) -> int:
    with _cache_if_any(args) as cache:
        store = open_spec_store(args, "spec", cache=cache)  # takes a REMOTE: part off
        if not args.spec:
            return _ls_datasets(args, history.datasets(store), store.url)
        rows = read.entries(store, args.spec, args.path, args.recursive)
        # Printed as they come (a page at a time): `vfs ls big@v1 | head` ends at once.
        if args.json:
            print_json_list(read.entry_doc(p, e) for p, e in rows)
            return 0
        if args.nul:
            for p, _ in rows:
                write_nul(p)
            return 0
        for p, e in rows:
            name = shown(p) + ("/" if e.is_dir else "")
            if e.is_symlink and args.long:
                name += " -> " + shown(e.target.decode("utf-8", "surrogateescape"))
            if args.long:
                mtime = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.mtime_ns / 1e9))
                print(f"{read.mode_string(e)} {e.size:>12} {mtime} {name}")
            else:
                print(name)
    return 0


def _ls_datasets(args: argparse.Namespace, docs: list[dict[str, Any]], url: str) -> int:
    if args.json:
        print_json(docs)
        return 0
    if not docs:
        print(f"no datasets in {url}", file=sys.stderr)
    for d in docs:
        print(
            f"{d['dataset']:<24} {d['files']:>9} files {human(d['bytes']):>10}  "
            f"branches: {', '.join(d['branches']) or '-'}  tags: {', '.join(d['tags']) or '-'}"
        )
    return 0


# --- cat, get ---


def add_cat(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Write PATH of DATASET@REF to stdout, verified chunk by chunk, through the chunk cache."
    )
    p.epilog = "examples: vfs cat digits@v1 labels.csv | head; vfs cat team:digits@v2 labels.csv"
    p.add_argument("spec", metavar="[REMOTE:]DATASET[@REF]")
    p.add_argument("path", metavar="PATH", help="a file of the version")
    add_common(p)
    p.set_defaults(func=cmd_cat)


def cmd_cat(args: argparse.Namespace) -> int:
    with _cache_if_any(args) as cache:
        store = open_spec_store(args, "spec", cache=cache)
        with read.open_file(store, args.spec, args.path, cache) as f:
            out = sys.stdout.buffer
            while block := f.read(4 * 1024 * 1024):
                out.write(block)
            out.flush()
    return 0


def add_get(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Write DATASET@REF (or PATH inside it) into OUT, fetching in parallel and "
        "verifying every chunk. Never writes outside OUT.\n\n"
        "Each file appears under its name only once it is complete, so an "
        "interrupted get leaves no file with wrong bytes, and running the same get "
        "again resumes: files already in place are checked against the version "
        "(locally, by hash) and kept; the rest are fetched. A file in OUT that "
        "differs from the version is refused unless --force; files the version does "
        "not have are left alone."
    )
    p.epilog = (
        "examples:\n"
        "  vfs get digits@v1 -o ./digits\n"
        "  vfs get digits@v1 images/0001.png -o one.png\n"
        "  vfs get digits@v2 -o ./digits --force     # turn a v1 copy into v2\n"
        "  vfs get team:digits@v1 -o ./digits       # from the remote team's store"
    )
    p.formatter_class = Formatter
    p.add_argument("spec", metavar="[REMOTE:]DATASET[@REF]")
    p.add_argument("path", nargs="?", default="", metavar="PATH")
    p.add_argument(
        "-o",
        "--out",
        required=True,
        metavar="OUT",
        help="the directory to write into (made if missing), or for one file its new name",
    )
    p.add_argument(
        "-j", "--jobs", type=positive_int, default=8, help="parallel fetches (default 8)"
    )
    p.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="replace what in OUT differs: files, a file or symlink where the version has "
        "a directory, an empty directory where it has a file",
    )
    p.add_argument(
        "--locked",
        action="store_true",
        help="get the exact version the nearest vfs.lock (here or above) records for "
        "DATASET, from the store it names unless --store is given (see vfs lock)",
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_get)


def cmd_get(args: argparse.Namespace) -> int:
    if args.locked:
        from vfs import lock

        args.spec, entry = lock.locked_spec(args.spec)
        args.store = args.store or entry.store
    cache = ChunkCache(cache_dir(args), resolve_cache_size())
    try:
        store = open_spec_store(args, "spec", cache=cache)
        r = base.resolve(store, args.spec)
        v = base.version_of(store, r, cache)
        t0 = time.monotonic()
        found = v.stat(args.path)
        bar = meter("get", found.entry.size if found else v.commit.bytes, bar=not args.json)
        try:
            res = get(
                v,
                args.path,
                args.out,
                workers=args.jobs,
                force=args.force,
                on_bytes=bar.update if bar is not None else None,
            )
        except KeyboardInterrupt:
            raise Interrupted(
                f"get interrupted: every file under its name in {args.out} is complete; "
                "run the same command again to fetch the rest"
            ) from None
        finally:
            if bar is not None:
                bar.close()
    finally:
        cache.close()
    secs = time.monotonic() - t0
    if args.json:
        print_json(
            {
                "files": res.files,
                "dirs": res.dirs,
                "symlinks": res.symlinks,
                "bytes": res.bytes,
                "kept": res.kept,
                "kept_bytes": res.kept_bytes,
                "damaged": [{"path": p, "error": why} for p, why in res.damaged],
                "left_alone": res.left_alone,
                "seconds": round(secs, 3),
            }
        )
    else:
        kept = (
            f"; {res.kept} already in place and verified ({human(res.kept_bytes)})"
            if res.kept
            else ""
        )
        print(
            f"{res.files} files, {res.dirs} dirs, {res.symlinks} symlinks, {human(res.bytes)} "
            f"into {args.out} in {secs:.2f} s{kept}",
            file=sys.stderr,
        )
    for why in res.left_alone[:20]:
        print(f"vfs: not replaced: {why}", file=sys.stderr)
    if res.left_alone and not res.damaged:
        hidden = len(res.left_alone) - 20
        raise UsageError(
            f"{count(len(res.left_alone), 'path')} of the version not written"
            + (f" ({hidden} more not listed)" if hidden > 0 else "")
            + ": move those directories away and run the same get again"
        )
    if res.damaged:
        for p, why in res.damaged[:20]:
            print(f"vfs: not written, damaged in the store: {p} ({why})", file=sys.stderr)
        more = f" (and {len(res.damaged) - 20} more)" if len(res.damaged) > 20 else ""
        print(
            f"vfs: error: {count(len(res.damaged), 'file')} could not be written{more}; "
            f"`vfs verify {r.spec}` names the damaged objects",
            file=sys.stderr,
        )
        return 1
    return 0
