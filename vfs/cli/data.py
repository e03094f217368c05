"""The verbs over stored data: commit, log, ls, cat, get, diff, tag, branch, rollback."""

from __future__ import annotations

import argparse
import stat as stat_mod
import sys
import time
from typing import TYPE_CHECKING, Any

from vfs.cli.common import (
    add_common,
    cache_dir,
    count_int,
    human,
    open_store,
    positive_int,
    print_json,
    show_progress,
)
from vfs.defaults import DEFAULT_BRANCH
from vfs.errors import NotFound, RefConflict, UsageError

if TYPE_CHECKING:
    from vfs import format as fmt
    from vfs.ops.commit import CommitResult
    from vfs.ops.diff import Change
    from vfs.store import Store


def register(sub: Any) -> None:
    p = sub.add_parser(
        "commit",
        help="snapshot a directory as a new version of a dataset",
        description=(
            "Snapshot DIR as a new version of DATASET on a branch (default main). Only "
            "chunks the store does not have yet are uploaded; files unchanged since the "
            "last commit from this machine are not even read. Prints the new version id. "
            "Inside a git work tree the git revision and its dirty flag are recorded."
        ),
        epilog="example: vfs commit ./data imagenet -m 'relabel' --tag v3",
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("-m", "--message", default="", help="what changed")
    p.add_argument("--tag", help="also tag the new version (tags never move)")
    p.add_argument(
        "--branch", default=DEFAULT_BRANCH, help=f"branch to commit on (default: {DEFAULT_BRANCH})"
    )
    p.add_argument(
        "--meta", action="append", default=[], metavar="K=V", help="free metadata (repeatable)"
    )
    p.add_argument("--allow-empty", action="store_true", help="commit even if nothing changed")
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_commit)

    p = sub.add_parser(
        "log",
        help="history of a dataset branch",
        description="Commits reachable from DATASET[@REF], newest first (first parents).",
    )
    p.add_argument("spec", metavar="DATASET[@REF]")
    p.add_argument("-n", "--max-count", type=count_int, default=0, help="show at most N commits")
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_log)

    p = sub.add_parser(
        "ls",
        help="list datasets, or the files of a version",
        description=(
            "With no argument: the datasets in the store with their branches and tags. "
            "With DATASET@REF: the entries at PATH in that version."
        ),
        epilog="examples: vfs ls; vfs ls imagenet@v3 train -l; vfs ls imagenet -R",
    )
    p.add_argument("spec", nargs="?", metavar="DATASET[@REF]")
    p.add_argument("path", nargs="?", default="", metavar="PATH")
    p.add_argument("-l", dest="long", action="store_true", help="long listing: mode, size, mtime")
    p.add_argument(
        "-R", dest="recursive", action="store_true", help="list subdirectories recursively"
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser(
        "cat",
        help="write a file of a version to stdout",
        description="Write PATH of DATASET@REF to stdout.",
    )
    p.add_argument("spec", metavar="DATASET[@REF]")
    p.add_argument("path", metavar="PATH")
    add_common(p)
    p.set_defaults(func=cmd_cat)

    p = sub.add_parser(
        "get",
        help="materialise a version as plain files",
        description=(
            "Write DATASET@REF (or PATH inside it) into OUT, a new or empty directory, "
            "fetching in parallel and verifying every chunk. Never writes outside OUT."
        ),
    )
    p.add_argument("spec", metavar="DATASET[@REF]")
    p.add_argument("path", nargs="?", default="", metavar="PATH")
    p.add_argument("-o", "--out", required=True, metavar="OUT")
    p.add_argument(
        "-j", "--jobs", type=positive_int, default=8, help="parallel fetches (default 8)"
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser(
        "diff",
        help="files added, removed and modified between two versions",
        description=(
            "Compare version A with version B. B may be written @REF for the same dataset. "
            "Unchanged directories are skipped without being read."
        ),
        epilog="example: vfs diff imagenet@v2 @v3 --format md",
    )
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    fmt_group = p.add_mutually_exclusive_group()
    fmt_group.add_argument("--format", choices=["text", "md", "json"], default="text")
    fmt_group.add_argument("--stat", action="store_true", help="only the summary line")
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser(
        "tag",
        help="list tags, or tag a version",
        description="`vfs tag DATASET` lists tags; `vfs tag DATASET@REF NAME` creates tag NAME. Tags never move.",
    )
    p.add_argument("spec", metavar="DATASET[@REF]")
    p.add_argument("name", nargs="?", metavar="NAME")
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser(
        "branch",
        help="list, create or delete branches",
        description=(
            "`vfs branch DATASET` lists branches; `vfs branch DATASET@REF NAME` creates "
            "NAME at that version; `vfs branch -d DATASET NAME` deletes NAME."
        ),
    )
    p.add_argument("spec", metavar="DATASET[@REF]")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("-d", "--delete", action="store_true", help="delete branch NAME")
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_branch)

    p = sub.add_parser(
        "show",
        help="print the stored objects behind a version, decoded",
        description=(
            "Print the commit of DATASET@REF; with PATH, the tree page of that directory, "
            "or a file's entry with its chunks and where they are stored. For looking "
            "under the hood; docs/format.md explains every field."
        ),
    )
    p.add_argument("spec", metavar="DATASET[@REF]")
    p.add_argument("path", nargs="?", default=None, metavar="PATH")
    add_common(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "rollback",
        help="make an old version current again, keeping history",
        description=(
            "Commit the tree of DATASET@OLD as a new version on top of a branch (default: "
            "main). Nothing is copied and history is kept: the versions in between stay "
            "reachable."
        ),
        epilog="example: vfs rollback imagenet@v2",
    )
    p.add_argument("spec", metavar="DATASET@OLD")
    p.add_argument("--branch", default=DEFAULT_BRANCH)
    p.add_argument("-m", "--message", default=None)
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_rollback)


# --- commit ---


def _parse_meta(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not eq or not k:
            raise UsageError(f"--meta takes KEY=VALUE, got {item!r}")
        out[k] = v
    return out


def _commit_json(r: CommitResult) -> dict[str, Any]:
    return {
        "id": r.commit.hex(),
        "dataset": r.dataset,
        "branch": r.branch,
        "parent": r.parent.hex() if r.parent else None,
        "tree": r.tree.hex(),
        "unchanged": r.unchanged,
        "files": r.files,
        "bytes": r.bytes,
        "bytes_read": r.bytes_read,
        "new_chunks": r.new_chunks,
        "bytes_uploaded": r.bytes_uploaded,
        "packs": r.packs,
        "seconds": round(r.seconds, 3),
        "warnings": r.warnings,
    }


def cmd_commit(args: argparse.Namespace) -> int:
    from vfs import refs
    from vfs.cli.progress import Bar
    from vfs.ops.commit import commit_dir

    store = open_store(args, for_write=True)
    bar = Bar() if show_progress() and not args.json else None
    try:
        r = commit_dir(
            store,
            args.dir,
            args.dataset,
            message=args.message,
            branch=args.branch,
            tag=args.tag,
            meta=_parse_meta(args.meta),
            cache_dir=cache_dir(args),
            progress=bar,
            allow_empty=args.allow_empty,
        )
    except KeyboardInterrupt:
        if bar:
            bar.close()
        print(
            "vfs: commit interrupted: no ref was moved; run the same command again to "
            "resume (uploaded packs are reused)",
            file=sys.stderr,
        )
        raise
    finally:
        if bar:
            bar.close()
        store.close()
    if args.json:
        print_json(_commit_json(r))
        return 0
    rate = f" ({r.bytes_read / r.seconds / 1e6:.0f} MB/s)" if r.seconds >= 1 else ""
    where = f"{r.dataset}@{r.branch}"
    if r.unchanged:
        print(f"nothing changed since {refs.short(r.commit)} on {where}", file=sys.stderr)
    else:
        print(
            f"{where}: {r.files} files, {human(r.bytes)}; read {human(r.bytes_read)}"
            f"{rate}, uploaded {human(r.bytes_uploaded)} in {r.packs} packs, "
            f"{r.seconds:.2f} s"
            + (f" (re-parented {r.rebased}x: the branch moved)" if r.rebased else ""),
            file=sys.stderr,
        )
    print(r.commit.hex())
    return 0


# --- log ---


def _commit_doc(
    store: Store, cid: bytes, c: fmt.Commit, names: dict[bytes, list[str]]
) -> dict[str, Any]:
    return {
        "id": cid.hex(),
        "parents": [p.hex() for p in c.parents],
        "tree": c.tree.hex(),
        "author": c.author,
        "time": c.time,
        "message": c.message,
        "meta": c.meta,
        "files": c.files,
        "bytes": c.bytes,
        "refs": names.get(cid, []),
    }


def _ref_names(store: Store, dataset: str) -> dict[bytes, list[str]]:
    from vfs.store import HEADS, TAGS

    names: dict[bytes, list[str]] = {}
    for name, cid in store.refs(dataset, HEADS).items():
        names.setdefault(cid, []).append(name)
    for name, cid in store.refs(dataset, TAGS).items():
        names.setdefault(cid, []).append(f"tag: {name}")
    return names


def cmd_log(args: argparse.Namespace) -> int:
    from vfs import refs

    store = open_store(args)
    r = refs.resolve(store, args.spec)
    names = _ref_names(store, r.spec.dataset)
    docs = []
    cid: bytes | None = r.commit
    seen = set()
    while cid is not None and cid not in seen:
        seen.add(cid)
        c = store.get_commit(cid)
        docs.append(_commit_doc(store, cid, c, names))
        if args.max_count and len(docs) >= args.max_count:
            break
        cid = c.parents[0] if c.parents else None
    if args.json:
        print_json(docs)
        return 0
    for d in docs:
        decor = f" ({', '.join(d['refs'])})" if d["refs"] else ""
        print(f"commit {d['id']}{decor}")
        print(f"Author: {d['author']}")
        print(f"Date:   {d['time']}")
        print(f"Files:  {d['files']} ({human(d['bytes'])})")
        for k, v in sorted(d["meta"].items()):
            print(f"Meta:   {k}={v}")
        print()
        for line in (d["message"] or "(no message)").splitlines():
            print(f"    {line}")
        print()
    return 0


# --- ls ---


def _mode_string(e: fmt.Entry) -> str:
    from vfs import format as fmt

    kind = {fmt.DIR: stat_mod.S_IFDIR, fmt.FILE: stat_mod.S_IFREG, fmt.SYMLINK: stat_mod.S_IFLNK}[
        e.kind
    ]
    return stat_mod.filemode(kind | (e.mode & 0o777))


def _entry_doc(path: str, e: fmt.Entry) -> dict[str, Any]:
    from vfs import format as fmt

    doc: dict[str, Any] = {
        "path": path,
        "type": fmt.KIND_NAMES[e.kind],
        "size": e.size,
        "mode": f"{e.mode & 0o7777:04o}",
        "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.mtime_ns / 1e9)),
    }
    if e.is_symlink:
        doc["target"] = e.target.decode("utf-8", "surrogateescape")
    if e.is_dir:
        doc["files"] = e.nfiles
    return doc


def cmd_ls(args: argparse.Namespace) -> int:
    from vfs import refs
    from vfs.reader import Version

    store = open_store(args)
    if args.spec is None:
        return _ls_datasets(store, args)
    r = refs.resolve(store, args.spec)
    v = Version(store, r.spec.dataset, r.commit)
    found = v.stat(args.path)
    if found is not None and not found.entry.is_dir:
        rows = [(args.path, found.entry)]
    elif args.recursive:
        rows = [(p.decode("utf-8", "surrogateescape"), f.entry) for p, f in v.walk(args.path)]
    else:
        rows = [
            (f.entry.name.decode("utf-8", "surrogateescape"), f.entry) for f in v.listdir(args.path)
        ]
    if args.json:
        print_json([_entry_doc(p, e) for p, e in rows])
        return 0
    for p, e in rows:
        name = p + ("/" if e.is_dir else "")
        if e.is_symlink and args.long:
            name += " -> " + e.target.decode("utf-8", "surrogateescape")
        if args.long:
            mtime = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.mtime_ns / 1e9))
            print(f"{_mode_string(e)} {e.size:>12} {mtime} {name}")
        else:
            print(name)
    return 0


def _ls_datasets(store: Store, args: argparse.Namespace) -> int:
    from vfs import refs
    from vfs.store import HEADS, TAGS

    docs: list[dict[str, Any]] = []
    for ds in store.datasets():
        branches = store.refs(ds, HEADS)
        tags = store.refs(ds, TAGS)
        head = branches.get(refs.DEFAULT_BRANCH) or next(iter(branches.values()), None)
        c = store.get_commit(head) if head else None
        docs.append(
            {
                "dataset": ds,
                "branches": {k: v.hex() for k, v in branches.items()},
                "tags": {k: v.hex() for k, v in tags.items()},
                "files": c.files if c else 0,
                "bytes": c.bytes if c else 0,
                "updated": c.time if c else None,
            }
        )
    if args.json:
        print_json(docs)
        return 0
    if not docs:
        print(f"no datasets in {store.url}", file=sys.stderr)
    for d in docs:
        print(
            f"{d['dataset']:<24} {d['files']:>9} files {human(d['bytes']):>10}  "
            f"branches: {', '.join(d['branches']) or '-'}  tags: {', '.join(d['tags']) or '-'}"
        )
    return 0


# --- cat, get ---


def cmd_cat(args: argparse.Namespace) -> int:
    from vfs import refs
    from vfs.reader import Version

    store = open_store(args)
    r = refs.resolve(store, args.spec)
    v = Version(store, r.spec.dataset, r.commit)
    out = sys.stdout.buffer
    with v.open(args.path) as f:
        while True:
            block = f.read(4 * 1024 * 1024)
            if not block:
                break
            out.write(block)
    out.flush()
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from vfs import refs
    from vfs.cache import ChunkCache
    from vfs.ops.get import get
    from vfs.reader import Version

    store = open_store(args)
    r = refs.resolve(store, args.spec)
    cache = ChunkCache(cache_dir(args))
    store.use_cache(cache)
    try:
        v = Version(store, r.spec.dataset, r.commit, cache)
        t0 = time.monotonic()
        bar: Any = None
        if show_progress() and not args.json:
            from tqdm import tqdm

            found = v.stat(args.path)
            total = found.entry.size if found else v.commit.bytes
            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)
        try:
            res = get(
                v, args.path, args.out, workers=args.jobs, on_bytes=bar.update if bar else None
            )
        finally:
            if bar:
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
                "seconds": round(secs, 3),
            }
        )
    else:
        print(
            f"{res.files} files, {res.dirs} dirs, {res.symlinks} symlinks, {human(res.bytes)} "
            f"into {args.out} in {secs:.2f} s",
            file=sys.stderr,
        )
    return 0


# --- diff ---


def _spec_b(a: str, b: str) -> str:
    from vfs import refs

    if b.startswith("@"):
        return refs.parse_spec(a).dataset + b
    return b


def cmd_diff(args: argparse.Namespace) -> int:
    from vfs import refs
    from vfs.ops.diff import diff_trees, summarize

    store = open_store(args)
    ra = refs.resolve(store, args.a)
    rb = refs.resolve(store, _spec_b(args.a, args.b))
    ta, tb = store.get_commit(ra.commit).tree, store.get_commit(rb.commit).tree
    changes = list(diff_trees(store, ta, tb))
    s = summarize(changes)
    fmt_name = "json" if args.json else args.format
    if fmt_name == "json":
        print_json(
            {
                "a": {"spec": str(ra.spec), "id": ra.commit.hex()},
                "b": {"spec": str(rb.spec), "id": rb.commit.hex()},
                "summary": vars(s),
                "changes": [c.to_json() for c in changes],
            }
        )
        return 0
    if fmt_name == "md":
        _diff_md(str(ra.spec), str(rb.spec), changes, s)
        return 0
    if not args.stat:
        for c in changes:
            mark = {"added": "+", "removed": "-", "modified": "M"}[c.status]
            detail = human(c.new_size) if c.status != "removed" else human(c.old_size)
            if c.status == "modified":
                detail = f"{human(c.old_size)} -> {human(c.new_size)}, {human(c.changed_bytes)} new"
            print(f"{mark} {c.path}  ({detail})")
    print(
        f"{s.added} added, {s.removed} removed, {s.modified} modified; "
        f"{human(s.changed_bytes)} of new content",
        file=sys.stderr if not args.stat else sys.stdout,
    )
    return 0


def _diff_md(a: str, b: str, changes: list[Change], s: Any) -> None:
    print(f"### Data changes: `{a}` → `{b}`\n")
    print("| | files | bytes |\n|---|---:|---:|")
    print(f"| added | {s.added} | {human(s.bytes_added)} |")
    print(f"| removed | {s.removed} | {human(s.bytes_removed)} |")
    print(f"| modified | {s.modified} | {human(s.changed_bytes)} new content |")
    if changes:
        print("\n<details><summary>files</summary>\n")
        print("| status | path | old size | new size |\n|---|---|---:|---:|")
        for c in changes[:1000]:
            print(f"| {c.status} | `{c.path}` | {c.old_size} | {c.new_size} |")
        if len(changes) > 1000:
            print(f"\n… and {len(changes) - 1000} more")
        print("\n</details>")


# --- show ---


def _entry_show(e: fmt.Entry) -> dict[str, Any]:
    from vfs import format as fmt

    doc: dict[str, Any] = {
        "name": e.name.decode("utf-8", "surrogateescape"),
        "type": fmt.KIND_NAMES[e.kind],
        "mode": f"{e.mode:04o}",
        "mtime_ns": e.mtime_ns,
        "size": e.size,
    }
    if e.is_file:
        doc["chunks"] = [[c.id.hex(), c.length] for c in e.chunks]
    elif e.is_dir:
        doc["tree"] = e.tree.hex()
        doc["files"] = e.nfiles
    else:
        doc["target"] = e.target.decode("utf-8", "surrogateescape")
    return doc


def cmd_show(args: argparse.Namespace) -> int:
    from vfs import format as fmt
    from vfs import refs
    from vfs.reader import Version

    store = open_store(args)
    r = refs.resolve(store, args.spec)
    c = store.get_commit(r.commit)
    if args.path is None:
        print(f"commit {r.commit.hex()}")
        print_json(_commit_doc(store, r.commit, c, {}) | {"refs": None})
        return 0
    v = Version(store, r.spec.dataset, r.commit)
    found = v.stat(args.path)
    if found is None or found.entry.is_dir:
        top = found.entry.tree if found else v.root
        page = store.get_page(top)
        print(
            f"tree {top.hex()} ({'leaf' if page.kind == fmt.LEAF else 'index'} page, {len(page)} entries)"
        )
        if page.kind == fmt.LEAF:
            print_json([_entry_show(e) for e in page.entries()])
        else:
            print_json(
                [
                    {
                        "first": ch.first.decode("utf-8", "surrogateescape"),
                        "page": ch.page.hex(),
                        "entries": ch.count,
                    }
                    for ch in page.children()
                ]
            )
        return 0
    print(f"entry in leaf page {found.leaf.hex()}")
    doc = _entry_show(found.entry)
    if found.entry.is_file:
        doc["locations"] = [
            {
                "chunk": w.ref.id.hex(),
                "pack": w.loc.pack.hex(),
                "offset": w.loc.offset,
                "stored_length": w.loc.stored_length,
                "codec": "zstd" if w.loc.codec == fmt.CODEC_ZSTD else "raw",
            }
            for w in v.wanted(found)
        ]
    print_json(doc)
    return 0


# --- tag, branch, rollback ---


def cmd_tag(args: argparse.Namespace) -> int:
    from vfs import refs
    from vfs.names import check_name
    from vfs.store import TAGS

    store = open_store(args)
    spec = refs.parse_spec(args.spec)
    if args.name is None:
        if spec.explicit:
            raise UsageError(
                "to list tags give just the DATASET; to create one give DATASET@REF NAME"
            )
        tags = store.refs(spec.dataset, TAGS)
        if args.json:
            print_json({k: v.hex() for k, v in tags.items()})
        else:
            for k, v in tags.items():
                print(f"{k}\t{refs.short(v)}")
        return 0
    check_name(args.name, "tag")
    r = refs.resolve(store, spec)
    store.create_tag(spec.dataset, args.name, r.commit)
    if args.json:
        print_json({"tag": args.name, "id": r.commit.hex()})
    else:
        print(f"tagged {spec.dataset}@{args.name} -> {refs.short(r.commit)}", file=sys.stderr)
    return 0


def cmd_branch(args: argparse.Namespace) -> int:
    from vfs import refs
    from vfs.names import check_name
    from vfs.store import HEADS

    store = open_store(args)
    spec = refs.parse_spec(args.spec)
    if args.delete:
        if not args.name:
            raise UsageError("branch -d needs DATASET NAME")
        store.delete_branch(spec.dataset, check_name(args.name, "branch"))
        print(f"deleted branch {spec.dataset}@{args.name}", file=sys.stderr)
        return 0
    if args.name is None:
        branches = store.refs(spec.dataset, HEADS)
        if not branches and not store.dataset_exists(spec.dataset):
            raise NotFound(f"no dataset {spec.dataset!r} in {store.url}")
        if args.json:
            print_json({k: v.hex() for k, v in branches.items()})
        else:
            for k, v in branches.items():
                print(f"{k}\t{refs.short(v)}")
        return 0
    check_name(args.name, "branch")
    r = refs.resolve(store, spec)
    if not store.set_branch(spec.dataset, args.name, r.commit, None):
        raise RefConflict(f"branch {spec.dataset}@{args.name} already exists")
    if args.json:
        print_json({"branch": args.name, "id": r.commit.hex()})
    else:
        print(
            f"created branch {spec.dataset}@{args.name} at {refs.short(r.commit)}", file=sys.stderr
        )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from vfs import format as fmt
    from vfs import refs
    from vfs.names import check_name
    from vfs.ops.commit import commit_and_move, default_author, utc_now
    from vfs.store import HEADS

    store = open_store(args)
    r = refs.resolve(store, args.spec)
    branch = check_name(args.branch, "branch")
    old = store.get_commit(r.commit)
    head = store.read_ref(r.spec.dataset, HEADS, branch)
    if head is None:
        raise NotFound(f"{r.spec.dataset} has no branch {branch!r}")
    message = args.message or f"rollback to {r.spec} ({refs.short(r.commit)})"
    template = fmt.Commit(
        tree=old.tree,
        parents=(),
        author=default_author(),
        time=utc_now(),
        message=message,
        meta={**old.meta, "vfs.rollback-of": r.commit.hex()},
        files=old.files,
        bytes=old.bytes,
    )
    cid, _, _ = commit_and_move(store, r.spec.dataset, branch, head, template)
    if args.json:
        print_json(
            {
                "id": cid.hex(),
                "branch": branch,
                "tree": old.tree.hex(),
                "rollback_of": r.commit.hex(),
            }
        )
    else:
        print(f"{r.spec.dataset}@{branch} now has the content of {r.spec}", file=sys.stderr)
        print(cid.hex())
    return 0
