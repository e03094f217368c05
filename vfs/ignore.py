"""Ignore rules of a commit: `.vfsignore` files and `vfs commit --exclude`.

Both use gitignore syntax, matched by pathspec's GitIgnoreSpec (the matcher black and
others use), with git's meaning:

* A `.vfsignore` in any directory of the committed tree holds rules relative to that
  directory: `/x` is anchored there, `x` matches at any depth below it, `x/` matches
  directories only, `!x` re-includes what an earlier rule ignored.
* Where several files have a rule matching a path, the deepest file decides; within a
  file, the last matching rule decides.
* `--exclude` rules are relative to the committed root and decide before every file:
  what the command line says wins (`--exclude '!x'` keeps an x a `.vfsignore` ignores).
* An ignored directory is never entered, so nothing below it can be re-included (as
  in git), and a `.git` of 100k objects costs one match.
* `.vfsignore` files are committed like any file: a version carries the rules that
  shaped it. One that is a symlink is committed as a symlink and not read for rules
  (git, since 2.32, does not follow a symlinked .gitignore either).

Names in a tree are bytes; rules match their file-system decoding (os.fsdecode), so a
name that is not UTF-8 is matched by its escaped form and never fails a commit.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from pathspec import GitIgnoreSpec

from vfs.errors import UsageError, VfsError

IGNORE_FILE = b".vfsignore"


def _spec(lines: Iterable[str], where: str) -> GitIgnoreSpec:
    try:
        return GitIgnoreSpec.from_lines(lines)
    except (ValueError, TypeError) as e:  # pathspec's GitWildMatchPatternError is a ValueError
        raise UsageError(f"{where}: {e}") from None


@dataclass(frozen=True)
class _Level:
    base: str  # the directory of the rules, relative to the root: "" or "a/b/"
    spec: GitIgnoreSpec


class Rules:
    """The rules in force in one directory of the scan: the command line's, then one
    level per `.vfsignore` from the root down. Immutable; `enter` makes a child's."""

    def __init__(self, excludes: GitIgnoreSpec | None, levels: tuple[_Level, ...] = ()) -> None:
        self._excludes = excludes
        self._levels = levels

    @classmethod
    def from_excludes(cls, patterns: Iterable[str]) -> Rules:
        patterns = list(patterns)
        return cls(_spec(patterns, "--exclude") if patterns else None)

    def enter(self, rel_dir: str, ignore_file: bytes | None) -> Rules:
        """The rules below the directory `rel_dir` ("" for the root, else ending in
        "/"), given the path of the `.vfsignore` it holds, if any."""
        if ignore_file is None:
            return self
        try:
            with open(ignore_file, "rb") as f:
                text = f.read().decode("utf-8", "surrogateescape")
        except OSError as e:
            raise VfsError(f"cannot read {os.fsdecode(ignore_file)}: {e.strerror or e}") from None
        spec = _spec(text.splitlines(), os.fsdecode(ignore_file))
        if not spec.patterns:
            return self
        return Rules(self._excludes, (*self._levels, _Level(rel_dir, spec)))

    def fingerprint(self) -> tuple[object, ...]:
        """The rules as plain values: equal fingerprints ignore the same paths (the
        commit's per-directory cache holds only under unchanged rules)."""

        def pats(spec: GitIgnoreSpec | None) -> tuple[str, ...]:
            return tuple(str(p.pattern) for p in spec.patterns) if spec is not None else ()

        return (pats(self._excludes), *((lv.base, pats(lv.spec)) for lv in self._levels))

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether the path `rel` (relative to the root, '/'-separated) is ignored."""
        if self._excludes is None and not self._levels:
            return False
        path = rel + "/" if is_dir else rel
        if self._excludes is not None:
            hit = self._excludes.check_file(path).include
            if hit is not None:
                return hit
        for level in reversed(self._levels):
            hit = level.spec.check_file(path[len(level.base) :]).include
            if hit is not None:
                return hit
        return False
