"""The verbs of the mount and its cache: mount, switch, umount, prefetch, cache."""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from vfs.cli.common import (
    add_common,
    cache_dir,
    human,
    open_store,
    positive_int,
    print_json,
    seconds,
    show_progress,
)
from vfs.defaults import DEFAULT_CACHE_BYTES
from vfs.errors import UsageError

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """'10G', '512MiB', '1.5T', '4096' -> bytes (binary units)."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 10G, 512M or a byte count)")
    n = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if n <= 0:
        raise argparse.ArgumentTypeError(f"a size must be positive: {text!r}")
    return n


def register(sub: Any) -> None:
    p = sub.add_parser(
        "mount",
        help="mount a version (or every version) read-only, fetched lazily",
        description=(
            "Mount DATASET@REF read-only at MOUNTPOINT (an existing, empty directory). "
            "Nothing is downloaded up front: a file's chunks are fetched when it is read, "
            "verified, and kept in the machine's chunk cache, which every mount and "
            "command on the machine shares. Mounting takes the same time for ten files "
            "or ten million.\n\n"
            "With a bare DATASET (no '@'; the one place where that does not mean "
            "@main) the mount shows every version: MOUNTPOINT/@v3/, MOUNTPOINT/@main/ "
            "and MOUNTPOINT/@<id prefix>/ are directories. Tags and branches are "
            "listed, any commit id prefix can be looked up.\n\n"
            "The command returns once the mount is live; a daemon keeps serving it, "
            "logging to --log-file. It fails at once, with the reason, on a missing or "
            "non-empty mountpoint, an unknown dataset or ref, or an unreachable store. "
            "Reads that cannot be served within --read-timeout fail with EIO; the mount "
            "stays up and serves again once the store answers."
        ),
        epilog=(
            "examples:\n"
            "  vfs mount imagenet@v3 /mnt/data\n"
            "  vfs mount imagenet /mnt/versions && ls /mnt/versions/@v2/train\n"
            "  vfs switch /mnt/data v4      # new lookups see v4 within milliseconds\n"
            "  vfs umount /mnt/data\n\n"
            "diagnostics: getfattr -d -m user.vfs /mnt/data/FILE shows the version, the\n"
            "file's content id and how many of its bytes are cached."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="DATASET[@REF]")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument(
        "-f", "--foreground", action="store_true", help="serve in this process (Ctrl-C unmounts)"
    )
    p.add_argument(
        "--cache-size",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="cap of the chunk cache, e.g. 50G (default 10G); least recently used chunks "
        "of unpinned versions are evicted past it",
    )
    p.add_argument(
        "--read-timeout",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="a read whose data the store cannot deliver in this time, retries included, "
        "fails with EIO (default 30)",
    )
    p.add_argument(
        "--allow-other",
        action="store_true",
        help="let other users read the mount (needs user_allow_other in /etc/fuse.conf "
        "unless root); permissions are then the version's modes",
    )
    p.add_argument(
        "--log-file", metavar="FILE", help="daemon log (default: CACHE_DIR/logs/mount-*.log)"
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_mount)

    p = sub.add_parser(
        "switch",
        help="show another version in a running mount, in place",
        description=(
            "Make the DATASET@REF mount at MOUNTPOINT show REF (a tag, branch, id prefix "
            "or BRANCH~N of the same dataset) without unmounting. It takes milliseconds: "
            "only the new version's commit and root directory are read. Files opened "
            "before the switch keep reading the version they were opened in; every new "
            "path lookup sees REF."
        ),
        epilog="example: vfs switch /mnt/data v4",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("ref", metavar="REF")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_switch)

    p = sub.add_parser(
        "umount",
        help="unmount a vfs mount (also one whose daemon died)",
        description=(
            "Unmount MOUNTPOINT and wait for its daemon to exit. A mount still in use is "
            "detached lazily: it disappears from the namespace now and its daemon serves "
            "the open files until they are closed. Also clears a mount whose daemon "
            "died ('Transport endpoint is not connected'), so it can be mounted again."
        ),
        epilog="example: vfs umount /mnt/data",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.set_defaults(func=cmd_umount)

    p = sub.add_parser(
        "prefetch",
        help="warm the chunk cache with a version, or files of it, at full bandwidth",
        description=(
            "Fetch the chunks of PATHs of DATASET@REF (every file below a directory; "
            "the whole version if no PATH) into the machine's chunk cache, so that "
            "reads through a mount never wait on the store. Files are fetched in the "
            "order given, so give them in the order a training sampler will read them "
            "(--from-file). Chunks already cached are skipped; neighbouring chunks of "
            "one pack are fetched in one request, and a pack wanted densely is read "
            "whole. Many requests run in parallel (-j)."
        ),
        epilog=(
            "examples:\n"
            "  vfs prefetch imagenet@v3 train/n01440764\n"
            "  python sampler.py --epoch 0 --print-order > order.txt\n"
            "  vfs prefetch imagenet@v3 --from-file order.txt"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    p.add_argument(
        "--cache-size",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="cache cap (default 10G)",
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_prefetch)

    p = sub.add_parser(
        "cache",
        help="inspect and manage the machine's chunk cache",
        description=(
            "The chunk cache is shared by every mount and command on the machine (the "
            "directory --cache-dir, else $VFS_CACHE_DIR, else ~/.cache/vfs). Its index "
            "is LMDB, its chunks are files; every read is checked against an xxh3 "
            "checksum and a bad entry is evicted and fetched again."
        ),
        epilog=(
            "examples:\n"
            "  vfs cache stats --json\n"
            "  vfs cache pin imagenet@v3     # never evict this version's chunks\n"
            "  vfs cache prune --to 20G"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    csub.required = True
    c = csub.add_parser(
        "stats",
        help="size, entries, hit rate, bytes fetched, pins",
        description="Totals of the whole cache, over every process that used it.",
    )
    add_common(c, json_output=True)
    c.set_defaults(func=cmd_cache_stats)
    c = csub.add_parser(
        "prune",
        help="evict least recently used unpinned chunks",
        description="Evict unpinned chunks, least recently used first, down to --to (default: "
        "80%% of --cache-size).",
    )
    c.add_argument("--to", type=parse_size, default=None, metavar="SIZE", help="target size")
    c.add_argument(
        "--cache-size",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="cache cap (default 10G)",
    )
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
        help="protect a version's chunks from eviction",
        description="Pin every chunk of DATASET@REF: cached or not yet, they are never "
        "evicted until unpinned. Pinning fetches nothing (see vfs prefetch).",
    )
    c.add_argument("spec", metavar="DATASET@REF")
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
        "and stale temporary files, and fix the index totals.",
    )
    c.add_argument("--no-repair", action="store_true", help="only report")
    add_common(c, json_output=True)
    c.set_defaults(func=cmd_cache_verify)


# --- mount, switch, umount ---


def cmd_mount(args: argparse.Namespace) -> int:
    from vfs.mount import control

    if args.read_timeout <= 0:
        raise UsageError("--read-timeout must be positive")
    cdir = cache_dir(args)
    if args.foreground:
        return _mount_foreground(args, cdir)
    log_file = args.log_file or control.default_log_file(cdir, args.mountpoint)
    mnt = control.check_mountpoint(args.mountpoint)
    # The daemon resolves the defaults of the store and the cache size (it has this
    # process's environment and working directory), so that this process need not
    # import the store or the cache: the mount is live sooner.
    options = control.MountOptions(
        target=args.target,
        mountpoint=mnt,
        store_url=args.store or None,
        cache_dir=cdir,
        cache_size=args.cache_size,
        read_timeout=args.read_timeout,
        allow_other=args.allow_other,
        log_file=log_file,
        verbose=args.verbose,
    )
    t0 = time.monotonic()
    live = control.start_daemon(options, mnt, log_file)
    doc = {**live.to_doc(), "seconds": round(time.monotonic() - t0, 3), "log": log_file}
    if args.json:
        print_json(doc)
    else:
        version = f" ({doc['version'][:12]})" if doc.get("version") else ""
        print(
            f"mounted {doc['label']}{version} at {mnt} in {doc['seconds']:.2f} s "
            f"(daemon pid {doc['pid']}, log {log_file})",
            file=sys.stderr,
        )
    return 0


def _mount_foreground(args: argparse.Namespace, cdir: str) -> int:
    """`vfs mount --foreground`: mount and serve in this process until unmounted."""
    from vfs.mount.control import MountOptions
    from vfs.mount.daemon import run

    opts = MountOptions(
        target=args.target,
        mountpoint=args.mountpoint,
        store_url=args.store or None,
        cache_dir=cdir,
        cache_size=args.cache_size,
        read_timeout=args.read_timeout,
        allow_other=args.allow_other,
    )
    return run(opts)


def cmd_switch(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from vfs.mount import control

    t0 = time.monotonic()
    reply = control.switch(args.mountpoint, args.ref)
    doc = {**asdict(reply), "total_ms": round((time.monotonic() - t0) * 1000, 2)}
    if args.json:
        print_json(doc)
    else:
        print(
            f"{control.canonical(args.mountpoint)}: {doc['label']} ({doc['new'][:12]}), was "
            f"{doc['old'][:12]}; switched in {doc['ms']:.1f} ms",
            file=sys.stderr,
        )
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    from vfs.mount import control

    how = control.umount(args.mountpoint)
    print(f"{control.canonical(args.mountpoint)}: {how}", file=sys.stderr)
    return 0


# --- prefetch ---


def _open_cache(args: argparse.Namespace) -> Any:
    from vfs.cache import ChunkCache

    return ChunkCache(cache_dir(args), getattr(args, "cache_size", None) or DEFAULT_CACHE_BYTES)


def cmd_prefetch(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from vfs import prefetch, refs
    from vfs.reader import Version

    paths = list(args.paths)
    if args.from_file:
        paths += prefetch.read_list(args.from_file)
    if not paths:
        paths = [""]
    store = open_store(args)
    cache = _open_cache(args)
    store.use_cache(cache)  # the version's pages and locations are cached too
    bar: Any = None
    try:
        r = refs.resolve(store, args.spec)
        version = Version(store, r.spec.dataset, r.commit, cache)
        if show_progress() and not args.json:
            from tqdm import tqdm

            bar = tqdm(
                unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, dynamic_ncols=True
            )

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
    print(
        f"{r.spec}: {res.files} files, {res.chunks} chunks ({res.already_cached} already "
        f"cached); fetched {human(res.bytes_fetched)} in {res.requests} requests, "
        f"{res.seconds:.2f} s ({rate:.0f} MB/s)",
        file=sys.stderr,
    )
    return 0


# --- cache ---


def cmd_cache_stats(args: argparse.Namespace) -> int:
    from dataclasses import asdict

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
    print(f"size      {human(s.bytes)} of {human(s.max_bytes)} in {s.entries} chunks")
    print(f"pinned    {human(s.pinned_bytes)} in {s.pinned_entries} chunks")
    rate = f"{100 * s.hits / looked:.1f}%" if looked else "-"
    print(f"hits      {s.hits} of {looked} lookups ({rate})")
    print(f"fetched   {human(s.bytes_inserted)} inserted in total; {s.evictions} evictions")
    if s.corrupt_evicted:
        print(f"healed    {s.corrupt_evicted} corrupt entries evicted")
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


def _pin_name(store: Any, spec: str) -> tuple[str, bytes]:
    from vfs import refs

    r = refs.resolve(store, spec)
    return f"{r.spec.dataset}@{r.commit.hex()}", r.commit


def cmd_cache_pin(args: argparse.Namespace) -> int:
    from vfs import format as fmt
    from vfs import refs, tree
    from vfs.reader import Version
    from vfs.store import locs_cache_key

    store = open_store(args)
    try:
        with _open_cache(args) as cache:
            store.use_cache(cache)
            name, commit = _pin_name(store, args.spec)
            version = Version(store, refs.parse_spec(args.spec).dataset, commit)
            # Chunks, and the metadata that finds them, so that a pinned version can
            # be read with the store out of reach (offline).
            chunks: set[bytes] = set()
            meta = {commit}
            for page in tree.pages(store, version.root):
                meta.add(page.id)
                if page.kind == fmt.LEAF:
                    meta.add(locs_cache_key(page.id))
                    chunks.update(c.id for e in page.entries() if e.is_file for c in e.chunks)
            cache.pin(name, chunks | meta)
    finally:
        store.close()
    if args.json:
        print_json({"pin": name, "chunks": len(chunks), "metadata": len(meta)})
    else:
        print(
            f"pinned {args.spec} as {name} ({len(chunks)} chunks, {len(meta)} metadata objects)",
            file=sys.stderr,
        )
    return 0


def cmd_cache_unpin(args: argparse.Namespace) -> int:
    with _open_cache(args) as cache:
        pins = cache.pins()
        name = args.spec
        if name not in pins:
            store = open_store(args)
            try:
                name, _ = _pin_name(store, args.spec)
            finally:
                store.close()
        if name not in pins:
            raise UsageError(f"{args.spec} is not pinned (vfs cache stats lists the pins)")
        cache.unpin(name)
    print(f"unpinned {name}", file=sys.stderr)
    return 0


def cmd_cache_verify(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    with _open_cache(args) as cache:
        rep = cache.verify(repair=not args.no_repair)
    if args.json:
        print_json({**asdict(rep), "clean": rep.clean})
    else:
        print(
            f"checked {rep.checked} chunks: {rep.bad} bad, {rep.missing_files} missing, "
            f"{rep.orphan_files} orphan files, {rep.index_errors} index errors; "
            f"{rep.repaired} repaired",
            file=sys.stderr,
        )
    return 0 if rep.clean or not args.no_repair else 1
