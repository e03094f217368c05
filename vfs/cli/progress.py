"""The progress bar `vfs commit` draws on stderr.

Its own module because it is a display, not a verb: it implements the
vfs.ops.commit.Progress callbacks with tqdm, which is imported only when a bar is made.
"""

from __future__ import annotations

import sys
from typing import Any

from vfs.ops.commit import Progress


class Bar(Progress):
    """A tqdm bar on stderr: files, bytes, MB/s."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar: Any = None
        self.files = 0
        self.total_files = 0

    def scanned(self, files: int, nbytes: int) -> None:
        self.total_files = files
        self.bar = self._tqdm(
            total=nbytes or None,  # 0: a streaming commit, whose totals come at the end
            unit="iB",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def advance(self, files: int, nbytes: int) -> None:
        if self.bar is None:
            return
        self.files += files
        if files:
            done = f"{self.files}/{self.total_files}" if self.total_files else f"{self.files}"
            self.bar.set_description_str(f"{done} files", refresh=False)
        self.bar.update(nbytes)

    def phase(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
