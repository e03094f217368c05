"""The entry point of a mount's daemon: `python -m vfs.daemon OPTIONS`, which `vfs mount`
starts (vfs.control.start_daemon) and which then serves until unmounted (vfs.mount.run).

OPTIONS is one JSON object: the fields of vfs.mount.MountOptions, already checked by
`vfs mount`, with "store_url" and "cache_size" null for their defaults, plus
"verbose" (the count of -v). A start-up of its own, rather than `python -m vfs.cli
mount --foreground`, because the daemon's start-up is on the way to a live mount:
this imports the daemon's modules and nothing else (no verbs, no argument parser).
Its errors go to the parent through the ready pipe (vfs.mount) and, like every line
it writes, to its log file, which is its stderr.
"""

from __future__ import annotations

import json
import logging
import sys

from vfs.errors import VfsError


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m vfs.daemon OPTIONS (started by vfs mount)", file=sys.stderr)
        return 2
    doc = json.loads(argv[0])
    if doc.pop("verbose", 0) >= 2:
        logging.getLogger().setLevel(logging.DEBUG)  # else the daemon logs at INFO

    from vfs.backends import default_store_url
    from vfs.defaults import DEFAULT_CACHE_BYTES
    from vfs.mount import MountOptions, run

    doc["store_url"] = doc.get("store_url") or default_store_url()
    doc["cache_size"] = doc.get("cache_size") or DEFAULT_CACHE_BYTES
    try:
        return run(MountOptions(**doc))
    except VfsError as e:  # the parent has its message already, from the ready pipe
        print(f"vfs: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
