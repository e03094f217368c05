"""The verbs of the machine's chunk cache: `vfs prefetch` and `vfs cache ACTION`."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict
from typing import Any

from vfs.cache import ChunkCache
from vfs.cli.common import (
    Formatter,
    add_cache_size,
    add_common,
    cache_dir,
    count,
    human,
    open_store,
    parse_size,
    positive_int,
    print_json,
)
from vfs.cli.progress import meter
from vfs.ops import base, pin, prefetch


def _size_or_zero(text: str) -> int:
    """A size for prune --to, where 0 (evict all that is not pinned) makes sense."""
    return 0 if text.strip() in ("0", "0B", "0b") else parse_size(text)


def _open_cache(args: argparse.Namespace) -> ChunkCache:
    from vfs.config import resolve_cache_size

    return ChunkCache(cache_dir(args), resolve_cache_size(getattr(args, "cache_size", None)))


# --- prefetch ---


def add_prefetch(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Fetch the chunks of PATHs of DATASET@REF (every file below a directory; "
        "the whole version if no PATH) into the machine's chunk cache, so that "
        "reads through a mount never wait on the store. Files are fetched in the "
        "order given, so give them in the order a training sampler will read them "
        "(--from-file). Chunks already cached are skipped; neighbouring chunks of "
        "one pack are fetched in one request, and a pack wanted densely is read "
        "whole. Many requests run in parallel (-j)."
    )
    p.epilog = (
        "examples:\n"
        "  vfs prefetch imagenet@v3 train/n01440764\n"
        "  python sampler.py --epoch 0 --print-order > order.txt\n"
        "  vfs prefetch imagenet@v3 --from-file order.txt"
    )
    p.formatter_class = Formatter
    p.add_argument("spec", metavar="DATASET[@REF]")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument(
        "--from-file",
        metavar="LIST",
        help="paths, one a line, in reading order ('-' reads standard input); after any PATHs",
    )
    p.add_argument(
        "-j", "--jobs", type=positive_int, default=16, help="parallel requests (default 16)"
    )
    add_cache_size(p)
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_prefetch)


def cmd_prefetch(args: argparse.Namespace) -> int:
    paths = list(args.paths)
    if args.from_file:
        paths += prefetch.read_list(args.from_file)
    if not paths:
        paths = [""]
    store = open_store(args)
    cache = _open_cache(args)
    cap = cache.max_bytes
    store.use_cache(cache)  # the version's pages and locations are cached too
    bar: Any = None
    try:
        r = base.resolve(store, args.spec)
        version = base.version_of(store, r, cache)
        bar = meter("prefetch", bar=not args.json)

        def on_total(n: int) -> None:
            if bar is not None:
                bar.reset(total=n)

        res = prefetch.warm(
            version,
            paths,
            jobs=args.jobs,
            on_total=on_total,
            on_bytes=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
        cache.close()
        store.close()
    if args.json:
        doc = asdict(res)
        doc["version"] = r.commit.hex()
        print_json(doc)
        return 0
    rate = res.bytes_fetched / res.seconds / 1e6 if res.seconds > 0 else 0.0
    speed = f" ({rate:.0f} MB/s)" if res.bytes_fetched >= 10**6 else ""
    print(
        f"{r.spec}: {count(res.files, 'file')}, {count(res.chunks, 'chunk')} "
        f"({res.already_cached} already cached); fetched {human(res.bytes_fetched)} in "
        f"{count(res.requests, 'request')}, {res.seconds:.2f} s{speed}",
        file=sys.stderr,
    )
    if res.bytes > cap:
        print(
            f"vfs: warning: {human(res.bytes)} do not fit the cache's cap of {human(cap)}: "
            "it kept what was fetched last. Raise the cap (--cache-size, core.cache_size) "
            "for every process that uses this cache",
            file=sys.stderr,
        )
    return 0


# --- cache ---


def add_cache(p: argparse.ArgumentParser) -> None:
    p.description = (
        "The chunk cache is shared by every mount and command on the machine (the "
        "directory --cache-dir, else $VFS_CACHE_DIR, else $XDG_CACHE_HOME/vfs, "
        "~/.cache/vfs by default). Its index is LMDB; chunks live in 32 MiB segment "
        "files written in fetch order. Every read is checked against an xxh3 "
        "checksum, and a bad entry is evicted and fetched again."
    )
    p.epilog = (
        "examples:\n"
        "  vfs cache stats --json\n"
        "  vfs cache pin imagenet@v3     # never evict this version's chunks\n"
        "  vfs cache prune --to 20G"
    )
    p.formatter_class = Formatter
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    csub.required = True
    c = csub.add_parser(
        "stats",
        help="size, entries, hit rate, bytes fetched, pins",
        description="Totals of the whole cache, over every process that used it. The cap "
        "shown is this command's (--cache-size, else core.cache_size, $VFS_CACHE_SIZE, "
        "10G): a mount started with its own --cache-size holds the cache to that one.",
    )
    add_cache_size(c, help="the cap to show the size against (default: as every command)")
    add_common(c, json_output=True)
    c.set_defaults(func=cmd_cache_stats)
    c = csub.add_parser(
        "prune",
        help="evict least recently used unpinned chunks",
        description="Evict unpinned chunks, least recently used first, down to --to (default: "
        "80% of --cache-size).",
    )
    c.add_argument(
        "--to",
        type=_size_or_zero,
        default=None,
        metavar="SIZE",
        help="target size (0: every unpinned chunk)",
    )
    add_cache_size(c)
    add_common(c, json_output=True)
    c.set_defaults(func=cmd_cache_prune)
    c = csub.add_parser(
        "clear",
        help="remove every cached chunk (pins stay)",
        description="Remove every chunk from the cache. Pins stay, so pinned versions are "
        "protected again as soon as they are fetched. Running mounts refetch what they read.",
    )
    add_common(c)
    c.set_defaults(func=cmd_cache_clear)
    c = csub.add_parser(
        "pin",
        help="keep a version whole in the cache, for use offline",
        description="Pin DATASET@REF: fetch what the cache lacks of it (every chunk, "
        "tree page and locations object), and never evict any of it until unpinned. "
        "The store's config and the ref are recorded too, so that `vfs mount`, "
        "`vfs get`, `vfs cat`, `vfs ls DATASET@REF` and the Python API read it while "
        "the store cannot be reached (refs then name what they named when pinned).",
    )
    c.add_argument("spec", metavar="DATASET@REF")
    c.add_argument(
        "-j", "--jobs", type=positive_int, default=8, help="parallel requests (default 8)"
    )
    add_cache_size(c)
    add_common(c, json_output=True)
    c.set_defaults(func=cmd_cache_pin)
    c = csub.add_parser(
        "unpin",
        help="let a pinned version be evicted again",
        description="Drop the pin of DATASET@REF (or a pin name as `vfs cache stats` lists it).",
    )
    c.add_argument("spec", metavar="DATASET@REF|PIN")
    add_common(c)
    c.set_defaults(func=cmd_cache_unpin)
    c = csub.add_parser(
        "verify",
        help="check every cached chunk against its checksum, repair the index",
        description="Re-hash every cached chunk, drop bad or missing ones, remove orphan "
        "segment files, and fix the segment records and index totals.",
    )
    c.add_argument("--no-repair", action="store_true", help="only report")
    add_common(c, json_output=True)
    c.set_defaults(func=cmd_cache_verify)


def cmd_cache_stats(args: argparse.Namespace) -> int:
    with _open_cache(args) as cache:
        s = cache.stats()
        pins = cache.pins()
    doc = asdict(s)
    looked = s.hits + s.misses
    doc["hit_rate"] = round(s.hits / looked, 4) if looked else None
    doc["pins"] = pins
    if args.json:
        print_json(doc)
        return 0
    print(f"cache     {s.root}")
    print(
        f"size      {human(s.bytes)} of {human(s.max_bytes)} in {count(s.entries, 'chunk')}, "
        f"{count(s.segments, 'segment file')}"
    )
    print(f"pinned    {human(s.pinned_bytes)} in {s.pinned_entries} chunks")
    rate = f"{100 * s.hits / looked:.1f}%" if looked else "-"
    print(f"hits      {s.hits} of {looked} lookups ({rate})")
    print(f"fetched   {human(s.bytes_inserted)} inserted in total; {s.evictions} evictions")
    if s.corrupt_evicted:
        print(f"healed    {s.corrupt_evicted} corrupt entries evicted")
    if s.compacted:
        print(f"compacted {s.compacted} pinned chunks copied out of evicted segments")
    for name, n in pins.items():
        print(f"pin       {name} ({n} chunks)")
    return 0


def cmd_cache_prune(args: argparse.Namespace) -> int:
    with _open_cache(args) as cache:
        freed = cache.prune(args.to)
        s = cache.stats()
    if args.json:
        print_json({"freed": freed, "bytes": s.bytes, "entries": s.entries})
    else:
        print(f"freed {human(freed)}; the cache holds {human(s.bytes)}", file=sys.stderr)
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    with _open_cache(args) as cache:
        cache.clear()
    print("cleared the chunk cache", file=sys.stderr)
    return 0


def cmd_cache_pin(args: argparse.Namespace) -> int:
    store = open_store(args)
    bar: Any = None
    # The cache says, in bytes and mid-way, that pins keep it over its cap; the
    # pin says it once at the end, with what to do.
    chunks_log = logging.getLogger("vfs.cache.chunks")
    level = chunks_log.level
    chunks_log.setLevel(logging.ERROR)
    try:
        with _open_cache(args) as cache:
            bar = meter("cache pin", bar=not args.json)
            res = pin.pin(
                store,
                cache,
                args.spec,
                jobs=args.jobs,
                on_total=(lambda n: bar.reset(total=n)) if bar is not None else None,
                on_bytes=bar.update if bar is not None else None,
            )
            st = cache.stats()
    finally:
        chunks_log.setLevel(level)
        if bar is not None:
            bar.close()
        store.close()
    # The cache's count may not have every write of this pin yet: the pin's own size.
    pinned = max(st.pinned_bytes, res.bytes)
    if pinned > st.max_bytes:
        print(
            f"vfs: warning: the pins hold {human(pinned)}, over the cache's cap of "
            f"{human(st.max_bytes)}; pinned data is never evicted, so the cache stays over "
            "its cap until you unpin (vfs cache unpin) or raise the cap (core.cache_size) "
            "for every process that uses this cache",
            file=sys.stderr,
        )
    if args.json:
        print_json(
            {
                "pin": res.name,
                "chunks": res.chunks,
                "metadata": res.metadata,
                "bytes_fetched": res.bytes_fetched,
            }
        )
    else:
        print(
            f"pinned {args.spec} as {res.name} ({res.chunks} chunks, {res.metadata} metadata "
            f"objects; fetched {human(res.bytes_fetched)}); usable offline",
            file=sys.stderr,
        )
    return 0


def cmd_cache_unpin(args: argparse.Namespace) -> int:
    with _open_cache(args) as cache:
        name = pin.unpin(cache, args.spec, args.store)
    print(f"unpinned {name}", file=sys.stderr)
    return 0


def cmd_cache_verify(args: argparse.Namespace) -> int:
    with _open_cache(args) as cache:
        rep = cache.verify(repair=not args.no_repair)
    if args.json:
        print_json({**asdict(rep), "clean": rep.clean})
    else:
        print(
            f"checked {rep.checked} chunks in {rep.segments} segments: {rep.bad} bad, "
            f"{rep.missing_files} missing, {rep.orphan_files} orphan files, "
            f"{rep.index_errors} index errors; "
            f"{rep.repaired} repaired",
            file=sys.stderr,
        )
    return 0 if rep.clean or not args.no_repair else 1
