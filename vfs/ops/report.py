"""`vfs report`: what changed between two versions, as a pull-request comment.

Writes DIR/report.md (Markdown: the totals, a table by top-level directory, the
changed files) and DIR/changes.png (files and bytes by top-level directory, added,
removed and modified), as CML posts them. matplotlib draws the chart; it is the
optional extra `report` (pip install 'vfs[report]') and imported only here, only
when a chart is drawn.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vfs import perms
from vfs.errors import VfsError
from vfs.ops.diff import ADDED, MODIFIED, REMOVED, Change, VersionDiff, diff_versions
from vfs.store import Store

REPORT_MD = "report.md"
CHART_PNG = "changes.png"
ROOT_FILES = "(top level)"  # the group of files directly in the version's root
MAX_FILES_LISTED = 500
STATUSES = (ADDED, REMOVED, MODIFIED)
_COLORS = {ADDED: "#2da44e", REMOVED: "#cf222e", MODIFIED: "#bf8700"}


@dataclass
class Group:
    """The changes under one top-level directory, by status."""

    name: str
    files: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))


@dataclass
class Report:
    diff: VersionDiff
    groups: list[Group]
    markdown: str  # the path of report.md
    chart: str | None  # the path of changes.png; None with chart=False


def _bytes(c: Change) -> int:
    """What a change weighs: an added file its size, a removed one its old size, a
    modified one its new content (what storing it cost)."""
    if c.status == ADDED:
        return c.new_size
    if c.status == REMOVED:
        return c.old_size
    return c.changed_bytes


def group_changes(changes: list[Change]) -> list[Group]:
    """The changes by top-level directory, the largest (in bytes) first."""
    groups: dict[str, Group] = {}
    for c in changes:
        top, slash, _ = c.path.partition("/")
        g = groups.setdefault(top if slash else ROOT_FILES, Group(top if slash else ROOT_FILES))
        g.files[c.status] += 1
        g.bytes[c.status] += _bytes(c)
    return sorted(groups.values(), key=lambda g: (-sum(g.bytes.values()), g.name))


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _cell(text: str) -> str:
    """A path in a Markdown table cell: code, with what would break the table escaped."""
    safe = text.encode("utf-8", "backslashreplace").decode().replace("|", "\\|")
    return "`" + safe.replace("`", "'").replace("\n", "\\n") + "`"


def markdown(d: VersionDiff, groups: list[Group], chart: bool) -> str:
    s = d.summary
    a, b = str(d.a.spec), str(d.b.spec)
    lines = [
        f"### Data changes: `{a}` → `{b}`",
        "",
        f"`{d.a.commit.hex()[:12]}` → `{d.b.commit.hex()[:12]}`",
        "",
    ]
    if not d.changes:
        lines.append("No changes: both versions hold the same files.")
        return "\n".join(lines) + "\n"
    lines += [
        "| | files | bytes |",
        "|---|---:|---:|",
        f"| added | {s.added} | {_human(s.bytes_added)} |",
        f"| removed | {s.removed} | {_human(s.bytes_removed)} |",
        f"| modified | {s.modified} | {_human(sum(g.bytes[MODIFIED] for g in groups))} "
        "new content |",
    ]
    # A copy without `cp -p` changes every mtime: say how many changed nothing else.
    same_bytes = sum(1 for c in d.changes if meta_only(c))
    if same_bytes:
        lines.append(f"| of those, mtime or mode only | {same_bytes} | – |")
    lines += [
        "",
    ]
    if chart:
        lines += [f"![files and bytes changed by top-level directory]({CHART_PNG})", ""]
    lines += [
        "| directory | added | removed | modified | bytes added | bytes removed | bytes modified |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for g in groups:
        name = g.name if g.name == ROOT_FILES else _cell(g.name + "/")
        lines.append(
            f"| {name} | {g.files[ADDED]} | {g.files[REMOVED]} | {g.files[MODIFIED]} | "
            f"{_human(g.bytes[ADDED])} | {_human(g.bytes[REMOVED])} | "
            f"{_human(g.bytes[MODIFIED])} |"
        )
    lines += ["", "<details><summary>changed files</summary>", ""]
    lines += ["| status | path | old size | new size |", "|---|---|---:|---:|"]
    # Changes of content first: they are what a reviewer reads for.
    listed = sorted(d.changes, key=meta_only)
    for c in listed[:MAX_FILES_LISTED]:
        lines.append(f"| {status_label(c)} | {_cell(c.path)} | {c.old_size} | {c.new_size} |")
    if len(d.changes) > MAX_FILES_LISTED:
        lines += ["", f"… and {len(d.changes) - MAX_FILES_LISTED} more (vfs diff {a} {b})"]
    lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def meta_only(c: Change) -> bool:
    return c.status == MODIFIED and bool(c.fields) and "content" not in c.fields


def status_label(c: Change) -> str:
    """`modified (mtime only)`, as `vfs diff` marks a change of no content."""
    return f"modified ({', '.join(c.fields)} only)" if meta_only(c) else c.status


def draw_chart(groups: list[Group], title: str, path: str) -> None:
    """Two horizontal stacked bar charts, files and bytes by top-level directory."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: CI runners have none
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise VfsError(
            "vfs report draws changes.png with matplotlib, which is not installed: "
            "pip install 'vfs[report]' (or pass --no-chart for the Markdown alone)"
        ) from None
    shown = groups[:20]  # the largest; a chart of hundreds of bars says nothing
    names = [g.name for g in shown][::-1]
    height = 1.2 + 0.35 * len(names)
    fig, axes = plt.subplots(1, 2, figsize=(11, height), sharey=True)
    # The byte axis in the unit that suits the largest bar: a 6-byte change drawn
    # in MiB was a '1e-6' multiplier over bars too thin to see.
    top = max((sum(g.bytes.values()) for g in shown), default=0)
    unit_name, unit = next(
        ((n, u) for n, u in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)) if top >= u),
        ("bytes", 1),
    )
    try:
        for ax, what, div in ((axes[0], "files", 1), (axes[1], "bytes", unit)):
            left = [0.0] * len(names)
            for status in STATUSES:
                vals = [getattr(g, what)[status] / div for g in shown][::-1]
                ax.barh(names, vals, left=left, color=_COLORS[status], label=status)
                left = [x + v for x, v in zip(left, vals, strict=True)]
            ax.set_xlabel("files" if what == "files" else f"{unit_name} (modified: new content)")
            if what == "files" or div == 1:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if not any(getattr(g, what)[s] for g in shown for s in STATUSES):
                ax.set_xlim(0, 1)  # nothing to draw (mtime-only changes): no negative ticks
            ax.grid(axis="x", alpha=0.3)
        # Above the plots, not over the bars.
        fig.legend(
            *axes[0].get_legend_handles_labels(),
            loc="upper right",
            ncols=len(STATUSES),
            fontsize="small",
            frameon=False,
        )
        fig.suptitle(title, fontsize="medium")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def report(store: Store, a: str, b: str, out_dir: str, chart: bool = True) -> Report:
    """Compare `a` with `b` (b may be '@REF') and write the report into `out_dir`."""
    d = diff_versions(store, a, b)
    groups = group_changes(d.changes)
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, CHART_PNG) if chart and d.changes else None
    if png is not None:
        draw_chart(groups, f"{d.a.spec} → {d.b.spec}", png)
    md = os.path.join(out_dir, REPORT_MD)
    text = markdown(d, groups, png is not None)
    perms.write_file(md, text)
    return Report(d, groups, md, png)
