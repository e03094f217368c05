"""The `vfs report` verb: a Markdown report and a chart of what changed."""

from __future__ import annotations

import argparse
import sys

from vfs.cli.common import Formatter, add_common, open_store, print_json


def add_report(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Compare version A with version B (B may be @REF for A's dataset) and write "
        "DIR/report.md, ready to post as a pull-request comment: the totals, a table "
        "by top-level directory and the changed files, with DIR/changes.png, a chart "
        "of files and bytes added, removed and modified by top-level directory. The "
        "chart needs matplotlib (pip install 'vfs[report]'). Prints the path of "
        "report.md."
    )
    p.epilog = (
        "examples:\n"
        "  vfs report imagenet@v2 @v3 -o report/\n"
        "  vfs report imagenet@main @my-branch -o out && cml comment create out/report.md"
    )
    p.formatter_class = Formatter
    p.add_argument("a", metavar="A", help="the old version, DATASET@REF")
    p.add_argument("b", metavar="B", help="the new one: DATASET@REF, or @REF of A's dataset")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="where to write")
    p.add_argument(
        "--no-chart", action="store_true", help="write report.md only (no matplotlib needed)"
    )
    add_common(p, json_output=True)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from vfs.ops.report import report

    store = open_store(args)
    try:
        r = report(store, args.a, args.b, args.out, chart=not args.no_chart)
    finally:
        store.close()
    s = r.diff.summary
    if args.json:
        print_json(
            {
                "a": {"spec": str(r.diff.a.spec), "id": r.diff.a.commit.hex()},
                "b": {"spec": str(r.diff.b.spec), "id": r.diff.b.commit.hex()},
                "summary": vars(s),
                "markdown": r.markdown,
                "chart": r.chart,
                "directories": [
                    {"name": g.name, "files": g.files, "bytes": g.bytes} for g in r.groups
                ],
            }
        )
        return 0
    print(
        f"{s.added} added, {s.removed} removed, {s.modified} modified; wrote "
        + (f"{r.markdown} and {r.chart}" if r.chart else r.markdown),
        file=sys.stderr,
    )
    print(r.markdown)
    return 0
