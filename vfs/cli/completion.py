"""`vfs completion SHELL`: a tab-completion script for bash or zsh.

The script is generated from the parser itself by shtab (every verb with its options,
files and directories where a verb takes a path), so it never falls behind the verbs.
It is static: pressing TAB runs no Python.
"""

from __future__ import annotations

import argparse
import sys

_SHELLS = ("bash", "zsh")


def add_completion(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Print a completion script for SHELL on stdout; load it from your shell's rc file."
    )
    p.epilog = (
        "examples:\n"
        "  vfs completion bash > ~/.local/share/bash-completion/completions/vfs\n"
        "  vfs completion zsh > ~/.zfunc/_vfs  # fpath+=(~/.zfunc) before compinit\n"
        "  source <(vfs completion bash)         # this shell only"
    )
    p.add_argument("shell", choices=_SHELLS, metavar="SHELL", help="bash or zsh")
    p.set_defaults(func=cmd_completion)


# Arguments that name a local directory or file, by metavar. PATH means a path inside a
# version (nothing local to complete), except for `vfs info`, which takes a path in a mount.
# OUT (`vfs get -o`) is a directory, or for one file its new name: files complete too.
_LOCAL_DIRS = {"DIR", "MOUNTPOINT"}
_LOCAL_FILES = {"FILE", "LIST", "OUT"}


def _mark_local_paths(parser: argparse.ArgumentParser, verb: str | None) -> None:
    import shtab

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                _mark_local_paths(child, verb or name)
        elif action.metavar in _LOCAL_DIRS:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
        elif action.metavar in _LOCAL_FILES or (verb == "info" and action.metavar == "PATH"):
            action.complete = shtab.FILE  # type: ignore[attr-defined]


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    from vfs.cli import build_parser

    parser = build_parser(all_verbs=True)
    _mark_local_paths(parser, None)
    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return 0
