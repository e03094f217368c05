"""`vfs config`: read and write the settings of vfs.toml and its layers (vfs/config.py)."""

from __future__ import annotations

import argparse
import sys

from vfs import config
from vfs.cli.common import Formatter, print_json

_SCOPE_HELP = {
    "user": "the user's file, $XDG_CONFIG_HOME/vfs/config.toml",
    "project": "the project's vfs.toml (committed; found from here up, else created here)",
    "local": "vfs.local.toml beside vfs.toml (this clone only: keep it out of git)",
}


def add_scope(p: argparse.ArgumentParser, default: str | None, verb: str) -> None:
    """--user, --project, --local: which file `verb` works on."""
    g = p.add_mutually_exclusive_group()
    for scope in config.SCOPES:
        mark = " (the default)" if scope == default else ""
        g.add_argument(
            f"--{scope}",
            dest="scope",
            action="store_const",
            const=scope,
            help=f"{verb} {_SCOPE_HELP[scope]}{mark}",
        )
    p.set_defaults(scope=default)


def add_config(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Read and write vfs's settings. They come from, lowest precedence first: the "
        "user's file ($XDG_CONFIG_HOME/vfs/config.toml), the project's vfs.toml (found "
        "by walking up from the working directory, as git finds .git; meant to be "
        "committed), vfs.local.toml beside it (not committed), the environment "
        "($VFS_STORE, $VFS_CACHE_DIR, $VFS_CACHE_SIZE, $VFS_REMOTE), then flags (--store, "
        "--cache-dir, --cache-size).\n\n"
        "Keys: core.store (the default store: a URL, a directory or a remote's name), "
        "core.cache_dir, core.cache_size (the cache's cap, e.g. 50G; default 10G), "
        "core.remote (the remote push and pull use), "
        "remote.NAME.url, remote.NAME.endpoint_url. A relative path in a file is "
        "relative to that file. Secrets are refused: S3 credentials belong to boto3's "
        "chain (the environment or ~/.aws/credentials). docs/config.md has the details."
    )
    p.epilog = (
        "examples:\n"
        "  vfs config set core.store s3://team-bucket/vfs\n"
        "  vfs config set --user core.cache_dir /scratch/vfs-cache\n"
        "  vfs config get core.store\n"
        "  vfs config list --show-origin\n"
        "  vfs config unset --local core.store"
    )
    p.formatter_class = Formatter
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    g = sub.add_parser("get", help="print a key's value in effect", formatter_class=Formatter)
    g.description = "Print the value of KEY in effect (exit 1 if it is not set)."
    g.add_argument("key", metavar="KEY")
    add_scope(g, None, "read only")

    s = sub.add_parser("set", help="set a key in one file", formatter_class=Formatter)
    s.description = (
        "Set KEY to VALUE in one file, keeping the rest of it (comments included) as "
        "written. A relative path is rewritten relative to the file."
    )
    s.epilog = "example: vfs config set core.store ./store"
    s.add_argument("key", metavar="KEY")
    s.add_argument("value", metavar="VALUE")
    add_scope(s, "project", "write")

    u = sub.add_parser("unset", help="remove a key from one file", formatter_class=Formatter)
    u.description = "Remove KEY from one file (exit 1 if that file does not set it)."
    u.add_argument("key", metavar="KEY")
    add_scope(u, "project", "change")

    ls = sub.add_parser("list", help="every key in effect", formatter_class=Formatter)
    ls.description = "Every key in effect (or set by one file), as KEY=VALUE lines."
    ls.epilog = "example: vfs config list --show-origin"
    ls.add_argument(
        "--show-origin", action="store_true", help="say which file (or variable) sets each"
    )
    ls.add_argument("--json", action="store_true", help="print machine-readable JSON")
    add_scope(ls, None, "list only")
    p.set_defaults(func=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "set":
        path = config.scope_path(args.scope)
        value = args.value
        if config.is_path_key(args.key):
            value = config.path_for_file(value, path)
        config.set_value(path, args.key, value)
        print(f"{args.key} = {value!r} in {path}", file=sys.stderr)
        return 0
    if args.action == "unset":
        path = config.scope_path(args.scope)
        if not config.unset_value(path, args.key):
            print(f"vfs: {path} does not set {args.key}", file=sys.stderr)
            return 1
        print(f"removed {args.key} from {path}", file=sys.stderr)
        return 0
    settings = config.load()
    rows = _rows(settings, args.scope)
    if args.action == "get":
        config.check_key(args.key)
        found = [r for r in rows if r[0] == args.key]
        if not found:
            return 1
        print(found[0][1])
        return 0
    if args.json:
        print_json([{"key": k, "value": v, "origin": o} for k, v, o in rows])
        return 0
    for key, value, origin in rows:
        print(f"{origin}\t{key}={value}" if args.show_origin else f"{key}={value}")
    return 0


def _rows(settings: config.Settings, scope: str | None) -> list[tuple[str, str, str]]:
    """(key, value, origin) of every key in effect, or of those one file sets."""
    if scope is None:
        return [(k, v.text, v.origin) for k, v in settings.items()]
    path = config.scope_path(scope)
    return [(k, v, path) for k, v in sorted(settings.by_scope.get(scope, {}).items())]
