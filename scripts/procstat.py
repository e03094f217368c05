"""A process's CPU seconds and minor page faults from /proc: what the harnesses in
scripts/ report for a mount's daemon (and SeaweedFS) beside wall-clock rates, since
on a shared 2-CPU machine the CPU moves far less with load than the rates do."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_and_faults(pid: int) -> tuple[float, int]:
    """The process's CPU seconds (user + system) and minor page faults so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])
