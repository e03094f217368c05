"""What a benchmark row measured, how it is judged, and how it is shown.

A row has the vfs figure and the baseline figures measured in the same run, each
the median of its repetitions. Its goals are checked against them:
- `ratio>=` / `ratio<=`: the row's ratio against the toughest of the named
  baselines (the fastest, or the smallest);
- `value<=` / `value<`: the vfs figure itself (seconds, MB).

A row's ratio is how vfs compares with a baseline, in one of two forms:
- "fraction": vfs / baseline (throughput: 0.93x means 93 % of the baseline's MB/s;
  time and bytes: 0.15x means vfs took 15 % of the baseline's seconds or bytes);
- "speedup": baseline / vfs for times, shown as "52x faster".

Output: a fixed-width table for the terminal, a Markdown table for
docs/performance.md, results.json, and PNG charts (matplotlib, optional).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PASS = "PASS"
BELOW = "BELOW GOAL"
NOT_AVAILABLE = "NOT AVAILABLE"
NOT_RUN = "NOT RUN"


@dataclass
class Figure:
    name: str
    unit: str
    samples: list[float] = field(default_factory=list)
    note: str = ""
    unavailable: str = ""  # why there is no figure

    @property
    def value(self) -> float | None:
        if self.unavailable or not self.samples:
            return None
        return statistics.median(self.samples)

    def add(self, x: float) -> None:
        self.samples.append(x)

    def fail(self, why: str) -> None:
        self.unavailable = why or "unknown error"

    def short(self) -> str:
        return "n/a" if self.unavailable else self.text()

    def text(self) -> str:
        v = self.value
        if v is None:
            return f"not available: {self.unavailable}" if self.unavailable else "—"
        return fmt_value(v, self.unit)


@dataclass
class Goal:
    text: str
    kind: str  # ratio>= ratio<= value<= value<
    target: float
    against: tuple[str, ...] = ()
    met: bool | None = None
    measured: str = ""


@dataclass
class Row:
    id: str
    title: str
    better: str  # "higher" or "lower"
    ratio_form: str  # "fraction" or "speedup"
    vfs: Figure
    baselines: list[Figure] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdict: str = NOT_RUN
    not_run: str = ""
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after

    def baseline(self, name: str) -> Figure:
        for b in self.baselines:
            if b.name == name:
                return b
        raise KeyError(name)

    def ratio(self, base: Figure) -> float | None:
        v, b = self.vfs.value, base.value
        if v is None or b is None or v <= 0 or b <= 0:
            return None
        if self.ratio_form == "speedup":
            return b / v
        return v / b

    def ratio_text(self, base: Figure) -> str:
        r = self.ratio(base)
        if r is None:
            return ""
        return f"{fmt_ratio(r)} faster" if self.ratio_form == "speedup" else f"{fmt_ratio(r)}"

    def judge(self) -> None:
        if self.not_run:
            self.verdict = NOT_RUN
            return
        if self.vfs.value is None:
            self.verdict = NOT_AVAILABLE
            for g in self.goals:
                g.met, g.measured = None, "vfs figure not available"
            return
        for g in self.goals:
            self._judge_goal(g)
        checked = [g.met for g in self.goals if g.met is not None]
        if any(m is False for m in checked):
            self.verdict = BELOW
        elif checked:
            self.verdict = PASS
        else:
            self.verdict = NOT_AVAILABLE

    def _judge_goal(self, g: Goal) -> None:
        v = self.vfs.value
        assert v is not None
        if g.kind.startswith("value"):
            g.measured = fmt_value(v, self.vfs.unit)
            g.met = v <= g.target if g.kind == "value<=" else v < g.target
            return
        figs = [b for b in self.baselines if b.name in g.against and b.value is not None]
        if not figs:
            g.met, g.measured = None, "baseline not available"
            return
        # The toughest baseline: the fastest (or smallest) one.
        pick = max if self.better == "higher" else min
        best = pick(figs, key=lambda b: b.value or 0.0)
        r = self.ratio(best)
        assert r is not None
        g.measured = fmt_ratio(r) + (f" ({best.name})" if len(g.against) > 1 else "")
        g.met = r >= g.target if g.kind == "ratio>=" else r <= g.target

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["vfs"]["value"] = self.vfs.value
        for b, d in zip(self.baselines, doc["baselines"], strict=True):
            d["value"] = b.value
            d["ratio"] = self.ratio(b)
        return doc


def fmt_value(v: float, unit: str) -> str:
    if unit == "s" and v < 1:
        return f"{v * 1000:.0f} ms"
    if abs(v) >= 100:
        text = f"{v:,.0f}"
    elif abs(v) >= 10:
        text = f"{v:.1f}"
    else:
        text = f"{v:.2f}"
    return f"{text} {unit}"


def fmt_ratio(r: float) -> str:
    if r >= 100:
        return f"{r:,.0f}×"
    if r >= 10:
        return f"{r:.1f}×"
    return f"{r:.2f}×"


def goal_mark(g: Goal) -> str:
    if g.met is None:
        return f"{g.text}: not checked ({g.measured})"
    return f"{g.text}: {g.measured}, {'met' if g.met else 'MISSED'}"


# --- text and Markdown tables --------------------------------------------------------


def table_lines(rows: list[Row]) -> list[str]:
    """The terminal table: one line per figure, the row's verdict on its first line."""
    widths = (40, 14, 22, 14, 13, 46)
    head = ("row", "vfs", "baseline", "its figure", "ratio", "goal")
    lines = [_line(head, widths) + "  result", "-" * (sum(widths) + 2 * len(widths) + 12)]
    for row in rows:
        if row.not_run:
            lines.append(
                _line((row.title, "", "", "", "", ""), widths) + f"  NOT RUN: {row.not_run}"
            )
            continue
        absolute = [g for g in row.goals if g.kind.startswith("value")]
        relative = {
            b: [g for g in row.goals if b in g.against] for b in (x.name for x in row.baselines)
        }
        first = True
        cells: list[tuple[str, str, str, str, str, str]] = []
        base_rows: list[Figure | None] = list(row.baselines) or [None]
        for b in base_rows:
            goals = (absolute if first else []) + (relative.get(b.name, []) if b else [])
            # A goal against several baselines is shown once, on its first one.
            goals = [
                g for g in goals if not b or g.kind.startswith("value") or g.against[0] == b.name
            ]
            cells.append(
                (
                    row.title if first else "",
                    row.vfs.short() if first else "",
                    b.name if b else "",
                    b.short() if b else "",
                    row.ratio_text(b) if b else "",
                    "; ".join(goal_mark(g) for g in goals),
                )
            )
            first = False
        for i, c in enumerate(cells):
            lines.append(_line(c, widths) + (f"  {row.verdict}" if i == 0 else ""))
        for f in [row.vfs, *row.baselines]:
            if f.unavailable:
                lines.append(" " * 4 + f"{f.name}: not available: {f.unavailable}")
        for n in row.notes:
            lines.append(" " * 4 + f"note: {n}")
    return lines


def _line(cells: tuple[str, ...], widths: tuple[int, ...]) -> str:
    out = []
    for c, w in zip(cells, widths, strict=True):
        out.append(c if len(c) <= w else c[: w - 1] + "…")
    return "  ".join(c.ljust(w) for c, w in zip(out, widths, strict=True))


def markdown_table(rows: list[Row]) -> str:
    out = [
        "| row | vfs | baselines (ratio) | goal | result |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        if row.not_run:
            out.append(f"| {row.title} | — | — | — | not run: {row.not_run} |")
            continue
        bases = (
            "<br>".join(
                f"{b.name}: {b.text()}" + (f" ({row.ratio_text(b)})" if row.ratio(b) else "")
                for b in row.baselines
            )
            or "—"
        )
        goals = "<br>".join(goal_mark(g) for g in row.goals) or "—"
        out.append(f"| {row.title} | {row.vfs.text()} | {bases} | {goals} | **{row.verdict}** |")
    return "\n".join(out)


# --- charts -----------------------------------------------------------------------------


def charts(rows: list[Row], out: Path) -> list[Path]:
    """One bar chart per measured row, plus summary.png (each goal's measured/target,
    1.0 being the goal). Returns the files written; nothing if matplotlib is missing."""
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for row in rows:
        figs = [row.vfs, *row.baselines]
        vals = [(f.name, f.value) for f in figs if f.value is not None]
        if not vals or row.not_run:
            continue
        fig, ax = plt.subplots(figsize=(7, 0.6 + 0.45 * len(vals)))
        names = [n for n, _ in vals][::-1]
        nums = [v or 0.0 for _, v in vals][::-1]
        colors = ["#d62728" if n == "vfs" else "#7f7f7f" for n in names]
        ax.barh(names, nums, color=colors)
        for y, v in enumerate(nums):
            ax.text(v, y, " " + fmt_value(v, row.vfs.unit), va="center", fontsize=8)
        better = "higher is better" if row.better == "higher" else "lower is better"
        ax.set_xlabel(f"{row.vfs.unit} ({better})")
        ax.set_title(f"{row.title}\n{row.verdict}", fontsize=9)
        if nums and max(nums) / max(min(n for n in nums if n > 0), 1e-12) > 200:
            ax.set_xscale("log")
        ax.margins(x=0.25)
        fig.tight_layout()
        path = out / f"row-{row.id}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    labels, scores, met = [], [], []
    for row in rows:
        for g in row.goals:
            s = _goal_score(row, g)
            if s is None:
                continue
            labels.append(f"{row.id}: {g.text}")
            scores.append(s)
            met.append(bool(g.met))
    if labels:
        fig, ax = plt.subplots(figsize=(9, 0.6 + 0.35 * len(labels)))
        ys = list(range(len(labels)))[::-1]
        ax.barh(ys, scores, color=["#2ca02c" if m else "#d62728" for m in met])
        ax.set_yticks(ys, labels, fontsize=7)
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xscale("log")
        lo, hi = min([*scores, 0.5]), max([*scores, 2.0])
        ticks = [
            t
            for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
            if lo / 2 <= t <= hi * 2
        ]
        ax.set_xlim(lo / 1.5, hi * 1.5)
        ax.set_xticks(ticks, [f"{t:g}×" for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("measured ÷ goal (≥ 1 meets the goal; log scale)")
        ax.set_title("vfs against its goals")
        fig.tight_layout()
        path = out / "summary.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _goal_score(row: Row, g: Goal) -> float | None:
    """How far a goal is met: ≥ 1 met, < 1 missed, as a factor."""
    v = row.vfs.value
    if g.met is None or v is None:
        return None
    if g.kind.startswith("value"):
        return g.target / v if v > 0 else math.inf
    figs = [b for b in row.baselines if b.name in g.against and b.value is not None]
    pick = max if row.better == "higher" else min
    r = row.ratio(pick(figs, key=lambda b: b.value or 0.0))
    if r is None:
        return None
    return r / g.target if g.kind == "ratio>=" else g.target / r
