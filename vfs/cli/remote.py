"""`vfs remote`: named stores in vfs.toml and its layers ([remote.NAME], vfs/config.py)."""

from __future__ import annotations

import argparse
import sys

from vfs import config
from vfs.cli.common import Formatter, print_json
from vfs.cli.config import add_scope
from vfs.errors import UsageError
from vfs.names import check_name


def add_remote(p: argparse.ArgumentParser) -> None:
    p.description = (
        "A remote is a store with a name: an S3 bucket or prefix (with its endpoint, "
        "when not AWS's) or a local directory. A remote's name works wherever a store "
        "is named (--store team, core.store, $VFS_STORE), and REMOTE:DATASET@REF reads "
        "from it for one command (vfs ls team:, vfs get team:ds@v1 -o out, vfs mount "
        "team:ds@v1 /mnt/x) without changing the default store. Remotes are kept in "
        "vfs.toml (the default: committed, so the team shares them), vfs.local.toml "
        "or the user's file. Credentials are never kept there: boto3 finds them in "
        "the environment or ~/.aws/credentials (AWS_PROFILE picks a profile)."
    )
    p.epilog = (
        "examples:\n"
        "  vfs remote add team s3://team/vfs --endpoint-url http://s3.lan:9000 --default\n"
        "  vfs remote add laptop ~/vfs-store --user\n"
        "  vfs remote list\n"
        "  vfs ls team:\n"
        "  vfs remote remove laptop"
    )
    p.formatter_class = Formatter
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    a = sub.add_parser("add", help="name a store", formatter_class=Formatter)
    a.description = (
        "Name the store at URL (s3://bucket[/prefix], file:///path or a directory). "
        "The name and the URL's form are checked; the store need not be reachable, "
        "nor exist yet (--check probes it first). A relative directory is written "
        "relative to the file, so a committed vfs.toml means the same for every clone."
    )
    a.epilog = "example: vfs remote add team s3://team/vfs --endpoint-url http://s3.lan:8333"
    a.add_argument("name", metavar="NAME")
    a.add_argument("url", metavar="URL")
    a.add_argument("--endpoint-url", metavar="URL", help="the S3 endpoint, when not AWS's")
    a.add_argument(
        "--default", action="store_true", help="make it core.remote, the remote push/pull use"
    )
    a.add_argument(
        "--check", action="store_true", help="refuse unless a vfs store answers at URL now"
    )
    add_scope(a, "project", "write to")

    ls = sub.add_parser("list", help="the remotes in effect", formatter_class=Formatter)
    ls.description = "The remotes in effect here: name, URL, endpoint, the file naming each."
    ls.add_argument("--json", action="store_true", help="print machine-readable JSON")

    r = sub.add_parser("remove", help="forget a remote's name", formatter_class=Formatter)
    r.description = (
        "Remove NAME from the file that defines it (or the one given); its store is "
        "untouched. core.remote is unset there too if it named NAME."
    )
    r.add_argument("name", metavar="NAME")
    add_scope(r, None, "remove from")
    p.set_defaults(func=cmd_remote)


def cmd_remote(args: argparse.Namespace) -> int:
    if args.action == "add":
        return _add(args)
    if args.action == "remove":
        return _remove(args)
    settings = config.load()
    remotes = settings.remotes()
    default = settings.get("core.remote")
    docs = [
        {
            "name": r.name,
            "url": r.url,
            "endpoint_url": r.endpoint_url,
            "default": r.name == default,
            "origin": r.origin,
        }
        for r in remotes.values()
    ]
    if args.json:
        print_json(docs)
        return 0
    if not docs:
        print("no remotes (vfs remote add NAME URL)", file=sys.stderr)
    width = max((len(r) for r in remotes), default=0)
    for d in docs:
        endpoint = f" (endpoint {d['endpoint_url']})" if d["endpoint_url"] else ""
        mark = "* " if d["default"] else "  "
        print(f"{mark}{d['name']:<{width}}  {d['url']}{endpoint}  [{d['origin']}]")
    return 0


def _add(args: argparse.Namespace) -> int:
    from vfs.backends import check_url

    check_name(args.name, "remote")
    check_url(args.url, args.endpoint_url)
    path = config.scope_path(args.scope)
    url = config.path_for_file(args.url, path)
    settings = {f"remote.{args.name}.url": url}
    if args.endpoint_url:
        settings[f"remote.{args.name}.endpoint_url"] = args.endpoint_url
    if args.default:
        settings["core.remote"] = args.name
    for key, value in settings.items():  # all or nothing: a refused one writes none
        config.check_setting(key, value)
    if config.load_file(path).get(f"remote.{args.name}.url") is not None:
        raise UsageError(
            f"remote {args.name!r} already exists in {path}: "
            f"vfs remote remove {args.name} first, or vfs config set remote.{args.name}.url URL"
        )
    if args.check:
        from vfs.ops import base

        resolved = config.path_for_file(args.url, "")  # absolute, as the shell meant it
        base.open_target(config.StoreTarget(resolved, args.endpoint_url, args.name)).close()
    for key, value in settings.items():
        config.set_value(path, key, value)
    reach = "reachable" if args.check else "not checked for reachability"
    default = ", the default remote" if args.default else ""
    print(f"remote {args.name} = {url}{default} in {path} ({reach})", file=sys.stderr)
    return 0


def _remove(args: argparse.Namespace) -> int:
    settings = config.load()
    if args.scope is not None:
        path = config.scope_path(args.scope)
    else:
        path = settings.remote(args.name).origin
    if not config.remove_remote(path, args.name):
        raise UsageError(f"{path} has no remote {args.name!r}")
    if config.load_file(path).get("core.remote") == args.name:
        config.unset_value(path, "core.remote")
    print(f"removed remote {args.name} from {path}", file=sys.stderr)
    after = config.load()
    if args.name in after.remotes():
        print(
            f"remote {args.name} is still defined in {after.remote(args.name).origin}",
            file=sys.stderr,
        )
    elif after.get("core.remote") == args.name:
        print(
            f"core.remote still names {args.name} in {after.origin('core.remote')}",
            file=sys.stderr,
        )
    return 0
