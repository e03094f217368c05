"""The `vfs` command line: git-like verbs over datasets in a store.

It parses and prints only: what a verb does is a function of vfs.ops (or, for the
mount verbs, vfs.mount.control and vfs.mount.daemon), and the CLI reaches the store layer only
through those. Each verb VERB has, in its module of this package, `add_VERB(parser)`
declaring its arguments next to its handler `cmd_VERB(args) -> int`. Errors are
mapped to exit codes in exactly one place, `main`: 0 done, 1 failed, 2 usage error,
130 interrupted.

`VERBS` below is the lazy verb table: `vfs --help` lists the verbs from it without
importing a verb module, and `vfs VERB ...` imports VERB's module only. So parsing,
--help, and `vfs switch`, `vfs info` and `vfs umount`, which only talk to a mount daemon, stay a
Python start-up away (tests/store/test_cli.py keeps them so); verb modules import what
their verbs need (the store, the cache) at module level.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import re
import sys
from collections.abc import Sequence

from vfs import __version__
from vfs.cli import common
from vfs.errors import Interrupted, UsageError, VfsError

log = logging.getLogger("vfs")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# verb -> (its module in vfs.cli, its line in `vfs --help`), in the order --help lists them.
VERBS: dict[str, tuple[str, str]] = {
    "init": ("init", "create a store (a first commit also does, where there is nothing)"),
    "commit": ("commit", "snapshot a directory as a new version of a dataset"),
    "log": ("history", "history of a dataset branch"),
    "ls": ("read", "list datasets, or the files of a version"),
    "cat": ("read", "write a file of a version to stdout"),
    "get": ("read", "materialise a version as plain files"),
    "diff": ("diff", "files added, removed and modified between two versions"),
    "report": ("report", "a Markdown report and a chart of what changed, for a pull request"),
    "lock": ("lock", "write vfs.lock (exact version ids, for git) or check it"),
    "tag": ("history", "list, create or delete tags"),
    "branch": ("history", "list, create or delete branches"),
    "rm": ("refs", "delete a dataset (its refs; restorable by id until gc)"),
    "reflog": ("refs", "every change of a dataset's refs: when, who, old and new id"),
    "push": ("transfer", "copy a version to another store and move its branch or tag there"),
    "pull": ("transfer", "copy a version from another store and move its branch or tag here"),
    "import": ("transfer", "bring a version of another store here, recording its source"),
    "update": ("transfer", "import a dataset again if its recorded source has moved"),
    "show": ("show", "print the stored objects behind a version, decoded"),
    "rollback": ("commit", "make an old version current again, keeping history"),
    "verify": ("verify", "read every object of a version and report the damaged ones"),
    "gc": (
        "gc",
        "delete what no ref reaches, repacking mostly-dead packs; safe while others commit",
    ),
    "mount": ("mount", "mount a version (or every version) read-only, fetched lazily"),
    "switch": ("mount", "show another version in a running mount, in place"),
    "umount": ("mount", "unmount a vfs mount (also one whose daemon died)"),
    "info": ("info", "what a mount's daemon knows of a path: version, content id, cache"),
    "prefetch": (
        "cache",
        "warm the chunk cache with a version, or files of it, at full bandwidth",
    ),
    "cache": ("cache", "inspect and manage the machine's chunk cache"),
    "config": ("config", "get, set and list settings (vfs.toml, vfs.local.toml, user file)"),
    "remote": ("remote", "add, list and remove named stores (team buckets, registries)"),
    "completion": ("completion", "print a tab-completion script for bash or zsh"),
}


class _Parser(argparse.ArgumentParser):
    verb = ""  # the verb being parsed, set on the parser of `vfs` by main

    def error(self, message: str) -> None:  # type: ignore[override]
        """One line on stderr and exit 2, like git: the usage is one --help away,
        the verb's when there is one; a mistyped verb gets the nearest one."""
        prog = f"{self.prog} {self.verb}" if self.verb and self.verb in VERBS else self.prog
        typo = re.match(r"argument COMMAND: invalid choice: '(.*?)'", message)
        if typo:
            near = difflib.get_close_matches(typo[1], VERBS, n=1)
            message = f"unknown command {typo[1]!r}" + (
                f"; did you mean {near[0]!r}?" if near else ""
            )
            prog = self.prog
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extra = super().parse_known_args(args, namespace)
        if extra and args is not None and self._may_intermix():
            # argparse fills every positional it can before the first option, so a
            # second optional one (PATH of `vfs ls ds@v1 -l sub`) finds no slot
            # after it. Positionals parsed apart from the options (as in Python
            # 3.13's fix) take it; a word still left over is really too many.
            self._intermixing = True
            try:
                mixed = self.parse_known_intermixed_args(args, namespace)
            finally:
                self._intermixing = False
            if len(mixed[1]) < len(extra):
                ns, extra = mixed
        # Python 3.11's argparse hands a single positional a list when '--' repeats
        # (`vfs mount X -- --`); refuse it here rather than crash in a verb.
        for action in self._actions:
            value = getattr(ns, action.dest, None)
            if not action.option_strings and action.nargs is None and isinstance(value, list):
                self.error(f"argument {action.metavar or action.dest}: expected one value")
        return ns, extra

    _intermixing = False

    def _may_intermix(self) -> bool:
        """Whether this parser can take its positionals apart from its options: a
        verb's parser, whose positionals are plain words, not the parser of `vfs`
        (whose positional is the verb) nor one already doing so."""
        return not self._intermixing and all(
            a.nargs not in (argparse.PARSER, argparse.REMAINDER)
            for a in self._get_positional_actions()
        )


# The options every store verb takes that may also stand before the verb, as git's do
# (`vfs --store s3://team/data ls`, `vfs -v commit ...`): the two that take a value, and -v.
_GLOBAL_VALUED = ("--store", "--cache-dir")
ACTION_VERBS = ("cache", "config", "remote")  # `vfs VERB ACTION ...`


def _is_global_flag(arg: str) -> bool:
    return arg == "--verbose" or (len(arg) > 1 and arg[0] == "-" and set(arg[1:]) == {"v"})


def hoist_global_options(argv: Sequence[str]) -> list[str]:
    """argv with the global options written before the verb moved to just after it
    (after its action, for ACTION_VERBS), where each verb's parser declares them. Anything else before the verb (--help,
    --version, a typo) is left for argparse to answer."""
    argv = list(argv)
    moved: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _GLOBAL_VALUED and i + 1 < len(argv):
            moved += argv[i : i + 2]
            i += 2
        elif (arg.partition("=")[0] in _GLOBAL_VALUED and "=" in arg) or _is_global_flag(arg):
            moved.append(arg)
            i += 1
        else:
            break
    rest = argv[i:]
    if not moved or not rest or rest[0].startswith("-"):
        return argv
    # A verb with actions (`vfs cache pin`) declares them on each action's parser.
    at = 2 if rest[0] in ACTION_VERBS and len(rest) > 1 and not rest[1].startswith("-") else 1
    return [*rest[:at], *moved, *rest[at:]]


def _verb(argv: Sequence[str]) -> str | None:
    """The verb argv names: its first word that is not an option (after
    hoist_global_options, the top-level options before it take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(chosen: str | None = None, all_verbs: bool = False) -> argparse.ArgumentParser:
    """The parser of `vfs`; of the verbs, only `chosen` gets its arguments (and its
    module imported): the others are a name and a help line. `all_verbs` builds
    every verb whole, for the completion script."""
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
            "The store is --store (a URL, a directory or a remote's name), else "
            "$VFS_STORE, else core.store of vfs.toml (vfs config), else "
            "$XDG_DATA_HOME/vfs/store (~/.local/share/vfs/store by default). "
            "REMOTE:DATASET@REF names a version in a remote's store.\n\n"
            "examples:\n"
            "  vfs commit ./data digits --tag v1 -m 'first labels'\n"
            "  vfs --store s3://team-bucket/vfs log digits\n"
            "  vfs mount digits@v1 /mnt/digits\n"
            "  vfs remote add team s3://team-bucket/vfs && vfs ls team:\n"
            "  vfs COMMAND --help     # what a command takes"
        ),
        formatter_class=common.Formatter,
    )
    p.add_argument("--version", action="version", version=f"vfs {__version__}")
    g = p.add_argument_group(
        "global options", "accepted before the command too, as `vfs --store URL ls`"
    )
    g.add_argument("--store", metavar="URL", default=argparse.SUPPRESS, help="the store to use")
    g.add_argument("--cache-dir", metavar="DIR", default=argparse.SUPPRESS, help="local cache")
    g.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output"
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module, help_line) in VERBS.items():
        verb = sub.add_parser(name, help=help_line, formatter_class=common.Formatter)
        if name == chosen or all_verbs:
            add = getattr(importlib.import_module(f"vfs.cli.{module}"), f"add_{name}")
            add(verb)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = hoist_global_options(sys.argv[1:] if argv is None else argv)
    verb = _verb(argv)
    parser = build_parser(verb)
    parser.verb = verb or ""  # type: ignore[attr-defined]
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):  # argparse took another word for the verb than _verb
        args = build_parser(args.command).parse_args(argv)
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
    except BrokenPipeError:  # `vfs ls ds | head`: the reader has what it wanted
        # Python would flush stdout again at exit and print the same error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except PermissionError as e:  # e.g. a shared directory a member cannot write
        where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
        print(f"vfs: error: permission denied: {where or e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:  # a local file system said no: one line, never a traceback
        where = f": {e.filename}" if e.filename else ""
        print(f"vfs: error: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as e:
        print(f"vfs: {e}" if isinstance(e, Interrupted) else "vfs: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _standard_fds() -> None:
    """Run with stdin, stdout or stderr closed (`vfs commit ... >&-`), the first file
    vfs opened would take that number, and a write meant for the terminal (ours, a
    library's, a mount daemon's) would land in it; Python also leaves sys.stdout
    None, and vfs crashed after its work was done. A closed one is /dev/null."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if getattr(sys, name) is None:
                stream = open(fd, "r" if fd == 0 else "w", closefd=False)  # noqa: SIM115 (for good)
                setattr(sys, name, stream)


def entry() -> None:
    _standard_fds()
    rc = main()
    try:  # what print() left buffered goes out here, to a reader that may be gone
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(rc)
