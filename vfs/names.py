"""What a dataset, branch or tag may be called.

Names become S3 keys and path segments, and `@`, `~` and `/` are syntax in version
specs (`ds@branch~2`), so the alphabet is small on purpose.
"""

from __future__ import annotations

import re

from vfs.errors import UsageError

MAX_LEN = 128
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
_DIGITS = re.compile(r"(\d+)")


def check_name(name: str, what: str) -> str:
    if not name:
        raise UsageError(f"{what} name is empty")
    if len(name) > MAX_LEN:
        raise UsageError(f"{what} name is longer than {MAX_LEN} characters: {name[:40]!r}...")
    remote, colon, rest = name.partition(":")
    if colon and what == "dataset" and _NAME.fullmatch(remote) and ":" not in rest:
        raise UsageError(
            f"{name!r} names a remote's store (REMOTE:DATASET), which this command "
            f"does not take: name the store with --store {remote}"
        )
    if ".." in name or not _NAME.fullmatch(name) or name.endswith(".lock"):
        raise UsageError(
            f"invalid {what} name {name!r}: use letters, digits and . _ + - "
            "(not starting with . or -, no '..', '/', '@', '~' or control characters)"
        )
    return name


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders v2 before v10: runs of digits compare as numbers."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(name) if part
    )
