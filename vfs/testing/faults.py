"""The fault launcher: the real `vfs` command line over the fault injection layer.

The layer itself (Fault, FaultControl, FaultyBackend) is a backend layer and lives in
vfs/backends/faults.py. This module only sets $VFS_FAULTS (vfs.backends.FAULTS_ENV)
to a control directory and runs the CLI, so that every backend the process opens is
wrapped:

    python -m vfs.testing.faults CONTROL_DIR mount ds@v1 /mnt --foreground
    python -m vfs.testing.faults CONTROL_DIR commit ./data ds --json

(`vfs mount` without --foreground starts its daemon with the same environment, so
the daemon is wrapped too.) Nothing in vfs imports this module: it imports the CLI.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from vfs.backends import FAULTS_ENV
from vfs.backends.faults import FaultControl


def launcher_argv(control_dir: str | os.PathLike[str], *vfs_args: str) -> list[str]:
    """The command line that runs `vfs *vfs_args` over a FaultyBackend."""
    return [sys.executable, "-m", "vfs.testing.faults", os.fspath(control_dir), *vfs_args]


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m vfs.testing.faults CONTROL_DIR VFS-ARGS...", file=sys.stderr)
        return 2
    from vfs.cli import main as vfs_main

    FaultControl(argv[0])  # the directory, before any backend reads it
    os.environ[FAULTS_ENV] = os.path.abspath(argv[0])
    return vfs_main(list(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
