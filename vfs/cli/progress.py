"""Progress on stderr for the long verbs: a bar on a terminal, a line now and then elsewhere.

Its own module because it is a display, not a verb. On a terminal the meter is a tqdm
bar (tqdm is imported only then). Where stderr is a file or a pipe (a CI job's log, a
`nohup`), a bar would be a stream of carriage returns, and silence is worse: a CI
system stops a job that prints nothing for ten minutes, and a person reading the log
cannot tell a slow push from a hung one. There the meter writes one plain line every
`VFS_PROGRESS_INTERVAL` seconds (default 30), so a command that ends sooner prints
none. `VFS_NO_PROGRESS=1` turns both off.

Both kinds take the calls the verbs make on a tqdm bar (update, reset, the
description and the postfix, close), and CountBar draws the commit's and the
transfer's Progress callbacks on either.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from vfs.cli.common import human
from vfs.ops import commit, transfer

DEFAULT_INTERVAL = 30.0


def interval() -> float:
    """Seconds between two lines of a meter that is not a bar: VFS_PROGRESS_INTERVAL
    if it is a number from 0.01 to a day, else the default."""
    try:
        value = float(os.environ.get("VFS_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if 0.01 <= value <= 86400 else DEFAULT_INTERVAL  # nan fails both


def silenced() -> bool:
    """VFS_NO_PROGRESS set to anything but empty or 0."""
    return os.environ.get("VFS_NO_PROGRESS", "") not in ("", "0")


def meter(label: str, total: int | None = None, bar: bool = True) -> Any:
    """A meter of bytes for the verb `label`, or None where none is wanted.

    `bar=False` (a verb asked for --json, whose caller may be a terminal) allows the
    lines but no bar."""
    if silenced():
        return None
    if sys.stderr.isatty():
        if not bar:
            return None
        from tqdm import tqdm

        return tqdm(
            total=total,
            unit="iB",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            dynamic_ncols=True,
        )
    return Lines(label, total)


class Lines:
    """A meter that writes `vfs LABEL: what, done of total (pct), rate, time, phase`
    to stderr every interval() seconds, from a thread of its own: a phase that makes
    no progress calls (a long listing, one large upload) still shows it is alive."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label = label
        self.total = total
        self.n = 0
        self.what = ""
        self.postfix = ""
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(interval(),), name="vfs-progress", daemon=True
        )
        self._thread.start()

    def update(self, n: int = 1) -> None:
        self.n += n

    def reset(self, total: int | None = None) -> None:
        self.total = total
        self.n = 0

    def set_description_str(self, text: str, refresh: bool = True) -> None:
        self.what = text

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def close(self) -> None:
        self._stop.set()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        parts = [self.what] if self.what else []
        n, total = self.n, self.total
        if n or total:
            done = human(n)
            if total:
                done += f" of {human(total)} ({100 * n / total:.0f}%)"
            parts.append(done)
        secs = time.monotonic() - self.start
        if secs > 0 and n:
            parts.append(f"{n / secs / 1e6:.1f} MB/s")
        parts.append(f"{secs:.0f} s")
        if self.postfix:
            parts.append(self.postfix)
        return f"vfs {self.label}: {', '.join(parts)}"


class CountBar(commit.Progress, transfer.Progress):
    """Draws a commit's or a transfer's Progress (vfs.ops.commit, vfs.ops.transfer):
    `scanned`/`planned` give the totals, `advance` the items and bytes done."""

    def __init__(self, label: str, noun: str, bar: bool = True) -> None:
        self.label = label
        self.noun = noun
        self.allow_bar = bar
        self.done = 0
        self.total = 0
        # Lines from the start, so that what comes before the totals (a listing)
        # shows too; a bar once the totals are known.
        self.bar: Any = None if sys.stderr.isatty() else meter(label)

    def scanned(self, items: int, nbytes: int) -> None:
        self.total = items
        # 0 bytes: a streaming commit, whose totals come at the end
        if isinstance(self.bar, Lines):
            self.bar.reset(nbytes or None)
        elif self.bar is None:
            self.bar = meter(self.label, nbytes or None, self.allow_bar)

    def planned(self, items: int, nbytes: int) -> None:
        if items:
            self.scanned(items, nbytes)

    def advance(self, items: int, nbytes: int) -> None:
        if self.bar is None:
            return
        self.done += items
        if items:
            done = f"{self.done}/{self.total}" if self.total else f"{self.done}"
            self.bar.set_description_str(f"{done} {self.noun}", refresh=False)
        self.bar.update(nbytes)

    def phase(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
