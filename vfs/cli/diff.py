"""The `vfs diff` verb: files added, removed and modified between two versions."""

from __future__ import annotations

import argparse
import sys

from vfs.cli.common import add_common, human, open_spec_store, print_json, shown, write_nul
from vfs.ops.diff import Change, Summary, VersionDiff, diff_versions
from vfs.ops.report import meta_only, status_label


def add_diff(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Compare version A with version B. B may be written @REF for the same dataset. "
        "Unchanged directories are skipped without being read, and so are the pages "
        "of a large directory that an edit did not rewrite. Versions of a remote's "
        "store are written REMOTE:DATASET@REF (both sides in that store)."
    )
    p.epilog = (
        "examples: vfs diff imagenet@v2 @v3 --format md ; "
        "vfs diff imagenet@main @candidate --exit-code --stat || echo changed"
    )
    p.add_argument("a", metavar="A", help="the old version, DATASET@REF")
    p.add_argument("b", metavar="B", help="the new one: DATASET@REF, or @REF of A's dataset")
    fmt_group = p.add_mutually_exclusive_group()
    fmt_group.add_argument("--format", choices=["text", "md", "json"], default="text")
    fmt_group.add_argument(
        "--stat",
        action="store_true",
        help="only the summary line, on stdout (with --json: no changes)",
    )
    fmt_group.add_argument(
        "-z",
        dest="nul",
        action="store_true",
        help="'STATUS<TAB>PATH' records ended by NUL, paths exact (status: A, D or M)",
    )
    p.add_argument(
        "--exit-code",
        action="store_true",
        help="exit 1 if the versions differ, 0 if not, as git diff --exit-code "
        "(an error still exits 1, or 2 for a usage error)",
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_diff)


def cmd_diff(args: argparse.Namespace) -> int:
    store = open_spec_store(args, "a", "b")
    d = diff_versions(store, args.a, args.b)
    _print_diff(args, d)
    return 1 if args.exit_code and d.changes else 0


def _print_diff(args: argparse.Namespace, d: VersionDiff) -> None:
    changes, s = d.changes, d.summary
    fmt_name = "json" if args.json else args.format
    if fmt_name == "json":
        doc: dict[str, object] = {
            "a": {"spec": str(d.a.spec), "id": d.a.commit.hex()},
            "b": {"spec": str(d.b.spec), "id": d.b.commit.hex()},
            "summary": vars(s),
        }
        if not args.stat:
            doc["changes"] = [c.to_json() for c in changes]
        print_json(doc)
        return
    if fmt_name == "md":
        _diff_md(str(d.a.spec), str(d.b.spec), changes, s)
        return
    if args.nul:
        for c in changes:
            write_nul(f"{_LETTERS[c.status]}\t{c.path}")
        return
    if not args.stat:
        for c in changes:
            mark = {"added": "+", "removed": "-", "modified": "M"}[c.status]
            detail = human(c.new_size) if c.status != "removed" else human(c.old_size)
            if c.status == "modified":
                detail = (
                    f"{human(c.old_size)} -> {human(c.new_size)}, {human(c.changed_bytes)} new"
                    if "content" in c.fields
                    else f"{' and '.join(c.fields)} only"
                )
                if "type" in c.fields:
                    detail += f", now a {c.kind}"
            elif c.kind == "dir":
                detail = "empty directory"
            slash = "/" if c.kind == "dir" else ""
            print(f"{mark} {shown(c.path)}{slash}  ({detail})")
    # The summary goes where every verb's summary goes: stderr (data is on stdout);
    # with --stat it is the data asked for, and goes to stdout, as git diff --stat's.
    print(
        f"{s.added} added, {s.removed} removed, {s.modified} modified; "
        f"{human(s.changed_bytes)} of new content",
        file=sys.stdout if args.stat else sys.stderr,
    )


_LETTERS = {"added": "A", "removed": "D", "modified": "M"}  # as git diff --name-status


def _diff_md(a: str, b: str, changes: list[Change], s: Summary) -> None:
    print(f"### Data changes: `{a}` → `{b}`\n")
    print("| | files | bytes |\n|---|---:|---:|")
    print(f"| added | {s.added} | {human(s.bytes_added)} |")
    print(f"| removed | {s.removed} | {human(s.bytes_removed)} |")
    # changed_bytes counts the added files whole: the modified row has the rest
    print(f"| modified | {s.modified} | {human(s.changed_bytes - s.bytes_added)} new content |")
    # As the report says it: a copy without `cp -p` changes every mtime.
    same_bytes = sum(1 for c in changes if meta_only(c))
    if same_bytes:
        print(f"| of those, mtime or mode only | {same_bytes} | – |")
    if changes:
        print("\n<details><summary>files</summary>\n")
        print("| status | path | old size | new size |\n|---|---|---:|---:|")
        for c in changes[:1000]:
            print(f"| {status_label(c)} | `{shown(c.path)}` | {c.old_size} | {c.new_size} |")
        if len(changes) > 1000:
            print(f"\n… and {len(changes) - 1000} more")
        print("\n</details>")
