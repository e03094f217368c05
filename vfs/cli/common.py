"""What every verb shares: store and cache options, argument types, output helpers.

It imports only the standard library and vfs.defaults at module level: every verb
module imports it, and `vfs --help` and the verbs that only talk to a mount daemon
must not pay for importing the store, the cache and their libraries. The two helpers
that open the store import vfs.ops.base when they run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shlex
import sys
import textwrap
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from vfs import defaults

if TYPE_CHECKING:
    from vfs.cache import ChunkCache
    from vfs.ops.history import Deleted
    from vfs.store import Store


class Formatter(argparse.HelpFormatter):
    """Help text as a terminal wants it: prose paragraphs wrapped to the width,
    paragraphs with an indented line (examples, tables) kept exactly as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for para in re.split(r"\n[ \t]*\n", text.strip("\n")):
            lines = para.splitlines()
            if any(line.startswith((" ", "\t")) for line in lines[1:]):
                out.append("\n".join(indent + line for line in lines))
            else:
                words = " ".join(line.strip() for line in lines)
                out.append(
                    textwrap.fill(words, width, initial_indent=indent, subsequent_indent=indent)
                )
        return "\n\n".join(out)


class _LogFormatter(logging.Formatter):
    """`vfs: WARNING: ...` for vfs's own lines; a library's lines (-vv shows botocore's
    and urllib3's) keep their logger's name, so nobody mistakes them for ours."""

    def format(self, record: logging.LogRecord) -> str:
        name = record.name
        who = "vfs" if name == "vfs" or name.startswith("vfs.") else name
        return f"{who}: {record.levelname}: {super().format(record)}"


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter("%(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    # boto's own INFO chatter is noise to a user; -vv shows it.
    quiet = logging.WARNING if verbose < 2 else logging.NOTSET  # NOTSET: the root's level
    for name in ("botocore", "boto3"):
        logging.getLogger(name).setLevel(quiet)


def _whole_number(text: str, minimum: int, rule: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < minimum:
        raise argparse.ArgumentTypeError(f"{rule}, not {n}")
    return n


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (worker counts)."""
    return _whole_number(text, 1, "must be at least 1")


def count_int(text: str) -> int:
    """An argparse type: a whole number of at least 0 (a count, as `-n 0`)."""
    return _whole_number(text, 0, "must not be negative")


def seconds(text: str) -> float:
    """An argparse type: a finite, positive number of seconds."""
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return s


def parse_size(text: str) -> int:
    """'10G', '512MiB', '1.5T', '4096' -> bytes (binary units)."""
    try:
        return defaults.parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_common(p: argparse.ArgumentParser, json_output: bool = False) -> None:
    g = p.add_argument_group("common options")
    g.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help="store: a directory, s3://bucket/prefix or a remote's name (default: "
        "$VFS_STORE, else core.store of vfs.toml (see vfs config), else "
        "$XDG_DATA_HOME/vfs/store, ~/.local/share/vfs/store by default)",
    )
    g.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=None,
        help="local cache (default: $VFS_CACHE_DIR, else core.cache_dir of vfs.toml, else "
        "$XDG_CACHE_HOME/vfs, ~/.cache/vfs by default)",
    )
    g.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    if json_output:
        g.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_daemon_common(p: argparse.ArgumentParser) -> None:
    """The common options of a verb that talks to a mount's daemon (switch, info,
    umount): -v and --json, and --store and --cache-dir accepted and ignored (the
    daemon knows its store and cache), so that `vfs --store X switch ...` in a
    script that passes them to every verb works."""
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    for flag in ("--store", "--cache-dir"):
        p.add_argument(flag, default=None, help=argparse.SUPPRESS)


def add_cache_size(
    p: argparse.ArgumentParser,
    help: str = "cache cap for this command (default: core.cache_size, $VFS_CACHE_SIZE, else 10G)",
) -> None:
    """--cache-size, for the verbs that open the chunk cache."""
    p.add_argument("--cache-size", type=parse_size, default=None, metavar="SIZE", help=help)


def open_store(args: argparse.Namespace, for_write: bool = False) -> Store:
    from vfs.ops import base

    return base.open_store(args.store, for_write)


def open_spec_store(
    args: argparse.Namespace, *names: str, cache: ChunkCache | None = None
) -> Store:
    """The store the version arguments `names` of args read from: --store's, or the
    remote a REMOTE: part names (`vfs ls team:ds@v1`), which is then taken off them.
    A verb that reads through the chunk `cache` reads pinned versions offline too."""
    from vfs.ops import base

    store, rests = base.open_spec(args.store, [getattr(args, n) for n in names], cache=cache)
    for name, rest in zip(names, rests, strict=True):
        setattr(args, name, rest)
    return store


def restore_command(args: argparse.Namespace, gone: Deleted) -> str:
    """The command that recreates a deleted ref, run as the user ran the delete: in
    the store --store named (a default store needs no option)."""
    cmd = gone.restore
    if getattr(args, "store", None):
        cmd += f" --store {shlex.quote(args.store)}"
    return cmd


def cache_dir(args: argparse.Namespace) -> str:
    from vfs.config import resolve_cache_dir

    return resolve_cache_dir(args.cache_dir)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def print_json(doc: Any) -> None:
    """JSON on stdout, UTF-8. A name that is not UTF-8 (held with surrogateescape, as
    os does) is written as its \\udcXX escape: exact, and json.loads then
    os.fsencode gives the bytes back."""
    sys.stdout.write(_json_text(doc) + "\n")


def _json_text(doc: Any) -> str:
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def print_json_list(docs: Iterable[Any]) -> None:
    """A JSON array on stdout written item by item, as print_json would write the
    whole list (same text), without holding it: for listings of any length."""
    out = sys.stdout
    first = True
    for doc in docs:
        text = _json_text(doc)
        out.write(("[\n  " if first else ",\n  ") + text.replace("\n", "\n  "))
        first = False
    out.write("[]\n" if first else "\n]\n")


# A name needs quoting in human output if it holds a control character (C0, DEL, C1)
# or bytes that are not UTF-8 (surrogateescape).
_NEEDS_QUOTES = re.compile("[\x00-\x1f\x7f-\x9f\udc80-\udcff]")
_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\v": "\\v",
    "\f": "\\f",
    "\r": "\\r",
}


def shown(name: str) -> str:
    """A path as human output shows it, so that one name is one line: unchanged when
    printable; else in double quotes with C escapes, as git's quotepath and `ls -b`
    do (a tab is \\t, a byte that is not UTF-8 \\xff). `--json` and `-z` print
    names exactly."""
    if not _NEEDS_QUOTES.search(name):
        return name
    out = []
    for ch in name:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch in '\\"':
            out.append("\\" + ch)
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def write_nul(text: str) -> None:
    """One exact name and a NUL on stdout (-z): bytes that are not UTF-8 as they are."""
    sys.stdout.flush()
    sys.stdout.buffer.write(os.fsencode(text) + b"\0")


def count(n: int, noun: str) -> str:
    """'1 object', '2 objects': a count with its noun (plural by a trailing s)."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
