"""The `vfs` command line: git-like verbs over datasets in a store.

Each module of this package registers its verbs with `register(subparsers)`; every
verb is a function `run(args) -> int`. Errors are mapped to exit codes in exactly one
place, `main`: 0 done, 1 failed, 2 usage error, 130 interrupted.

The modules of this package import only the standard library and small vfs modules
at module level; each verb imports what it needs (the store, the cache, trio) when
it runs. Parsing, --help, and `vfs switch` and `vfs umount`, which only talk to a
mount daemon, stay a Python start-up away (tests/test_cli.py keeps them so).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from vfs import __version__
from vfs.cli import common, data, mount, verify
from vfs.errors import UsageError, VfsError

log = logging.getLogger("vfs")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """One line on stderr and exit 2, like git: the usage is one --help away."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extra = super().parse_known_args(args, namespace)
        # Python 3.11's argparse hands a single positional a list when '--' repeats
        # (`vfs mount X -- --`); refuse it here rather than crash in a verb.
        for action in self._actions:
            value = getattr(ns, action.dest, None)
            if not action.option_strings and action.nargs is None and isinstance(value, list):
                self.error(f"argument {action.metavar or action.dest}: expected one value")
        return ns, extra


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="vfs",
        description=(
            "Data version control whose checkout is a filesystem. Snapshot a directory "
            "into a store (a local directory or s3://bucket/prefix), then list, read, "
            "diff, mount or roll back any version."
        ),
        epilog=(
            "Versions are named DATASET@REF: a branch, a tag, a commit id prefix, and "
            "BRANCH~N for N commits back. A bare DATASET means DATASET@main. "
            "The store is --store, else $VFS_STORE, else ~/.local/share/vfs/store."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"vfs {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    data.register(sub)
    verify.register(sub)
    mount.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    common.setup_logging(getattr(args, "verbose", 0))
    try:
        rc: int = args.func(args)
        return rc
    except UsageError as e:
        print(f"vfs: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except VfsError as e:
        print(f"vfs: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("vfs: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


def entry() -> None:
    sys.exit(main())
