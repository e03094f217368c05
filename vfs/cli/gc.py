"""The `vfs gc` verb: parse, call vfs.ops.gc, print the report."""

from __future__ import annotations

import argparse
import re
import sys

from vfs.cli.common import (
    Formatter,
    add_common,
    count,
    human,
    open_store,
    print_json,
    seconds,
)
from vfs.cli.progress import meter, silenced
from vfs.errors import Interrupted
from vfs.ops import gc as gc_op

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> float:
    """An argparse type: seconds, or a number with s, m, h, d or w (`24h`, `0`)."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (say 24h, 30m, 7d or 0)")
    return float(m.group(1)) * _UNIT[m.group(2).lower()]


def fraction(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= f <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text!r}")
    return f


def add_gc(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Delete the objects no ref of the store reaches (packs, pack indexes, tree "
        "pages, locations, commits), and ref-log entries older than 90 days and the "
        "grace period. Reachability is always judged over the whole store, every dataset at "
        "once (datasets share chunks), so gc takes no dataset argument. Nothing "
        "younger than the grace period is deleted, and a deleted branch or tag can be "
        "restored from the ref log until the grace period has passed. A live pack "
        "whose live share is under --repack-below has its live chunks copied into new "
        "packs first (no version id changes). gc is safe while others commit: it marks "
        "without a lock, then takes the store's gc lock, waits for running commits "
        "to finish, and deletes; commits started meanwhile wait for it. It can be "
        "interrupted at any point; a rerun finishes the job."
    )
    p.epilog = (
        "examples:\n"
        "  vfs gc --dry-run          # what would go, and what stays live\n"
        "  vfs gc                    # keeps the last 24 h, and deleted refs that long\n"
        "  vfs gc --grace 0          # only when nobody else writes to the store\n"
        "  vfs gc --no-repack --json"
    )
    p.formatter_class = Formatter
    p.add_argument(
        "--grace",
        type=duration,
        default=gc_op.DEFAULT_GRACE,
        metavar="DURATION",
        help="keep everything younger than this (default 24h; 0 for none)",
    )
    p.add_argument(
        "-n", "--dry-run", action="store_true", help="report what would be freed; change nothing"
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--repack-below",
        type=fraction,
        default=gc_op.DEFAULT_REPACK_BELOW,
        metavar="FRACTION",
        help="repack live packs whose live bytes are under this share (default 0.5)",
    )
    g.add_argument("--no-repack", action="store_true", help="never repack")
    p.add_argument(
        "--wait",
        type=seconds,
        default=gc_op.DEFAULT_WAIT,
        metavar="SECONDS",
        help="how long to wait for running commits before giving up (default 300)",
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_gc)


class _Progress(gc_op.Progress):
    """gc's phases on stderr: redrawn in place on a terminal, a line now and then
    elsewhere (vfs.cli.progress); a wait for running commits always said."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty() and not silenced()
        self.lines = None if self.tty else meter("gc")

    def phase(self, text: str) -> None:
        if text.startswith("waiting"):
            print(f"vfs gc: {text}", file=sys.stderr)
        elif self.tty:
            sys.stderr.write(f"\r\033[Kvfs gc: {text}")
            sys.stderr.flush()
        elif self.lines is not None:
            self.lines.set_postfix_str(text)

    def done(self) -> None:
        if self.lines is not None:
            self.lines.close()
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _days(seconds: float) -> str:
    if seconds >= 86400:
        return count(round(seconds / 86400), "day")
    return count(round(seconds / 3600), "hour") if seconds >= 3600 else f"{seconds:g} s"


def cmd_gc(args: argparse.Namespace) -> int:
    store = open_store(args)
    progress = _Progress()
    try:
        report = gc_op.gc(
            store,
            grace=args.grace,
            dry_run=args.dry_run,
            repack_below=None if args.no_repack else args.repack_below,
            wait=args.wait,
            progress=progress,
        )
    except KeyboardInterrupt:
        raise Interrupted(
            "gc interrupted: what it deleted was garbage, and every version is whole; "
            "run it again to finish"
        ) from None
    finally:
        progress.done()
        store.close()
    if args.json:
        print_json(report.to_json())
        return 0
    verb = "would free" if report.dry_run else "freed"
    print(
        f"gc {verb} {count(report.objects_freed, 'object')}, {human(report.bytes_freed)} "
        f"({report.bytes_freed} bytes) in {report.seconds:.2f} s"
        + (" (dry run: nothing changed)" if report.dry_run else ""),
        file=sys.stderr,
    )
    for kind, f in report.freed.items():
        if f.objects:
            print(f"  {kind:8} {f.objects:8} objects  {human(f.bytes):>10}", file=sys.stderr)
    if report.packs_repacked and report.dry_run:
        print(
            f"  repack (would): {count(report.packs_repacked, 'pack')}, "
            f"{human(report.bytes_rewritten)} of live chunks to move into new packs, "
            f"{count(report.locs_rewritten, 'location')} to rewrite",
            file=sys.stderr,
        )
    elif report.packs_repacked:
        print(
            f"  repack: {count(report.packs_repacked, 'pack')}, "
            f"{human(report.bytes_rewritten)} of live chunks moved into "
            f"{count(report.packs_written, 'new pack')}, "
            f"{count(report.locs_rewritten, 'location')} rewritten",
            file=sys.stderr,
        )
    for key in report.damaged_packs:
        print(
            f"vfs: warning: not repacked, damaged in the store: {key} "
            "(`vfs verify --all` names the versions it affects)",
            file=sys.stderr,
        )
    print(
        f"  live: {count(report.live_commits, 'commit')}, "
        f"{count(report.live_pages, 'tree page')}, {count(report.live_packs, 'pack')}; "
        f"{count(report.kept_young, 'unreached object')} younger than the grace period kept",
        file=sys.stderr,
    )
    if report.kept_restorable:
        print(
            f"  of the live commits, {report.kept_restorable} are only in deleted refs "
            f"(`vfs reflog DATASET` lists them): kept restorable until the grace period "
            f"({_days(report.grace)}) has passed since their deletion",
            file=sys.stderr,
        )
    return 0
