"""Version specs: `ds`, `ds@tag`, `ds@branch`, `ds@<id prefix>`, `ds@branch~N`.

A bare `ds` means `ds@main`. Resolution order for `@X`: branch X, tag X, then a
commit id prefix (4+ hex digits, either case). No new branch may take a tag's name
nor a tag a branch's (Store.check_new_ref), so that a tag never seems to move; a
name that is both anyway (made before that rule, or by two people at once) is an
error that asks for `ds@tags/X` or `ds@heads/X`, which say which explicitly. A
commit id names a version of `ds` only if it is in ds's history (`in_history`):
commits do not record their dataset, and one store holds many.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import datetime

from vfs import reflog
from vfs.defaults import DEFAULT_BRANCH
from vfs.errors import AmbiguousRef, MissingObject, NotFound, NotPinned, UsageError
from vfs.names import check_name
from vfs.store import HEADS, TAGS, Store

_HEX = re.compile(r"[0-9a-f]{4,64}")


@dataclass(frozen=True)
class Spec:
    dataset: str
    ref: str  # as written, without ~N; DEFAULT_BRANCH when the spec had no '@'
    back: int = 0  # ~N: walk N first parents back
    explicit: bool = False  # the spec had '@'

    def __str__(self) -> str:
        return f"{self.dataset}@{self.ref}" + (f"~{self.back}" if self.back else "")


@dataclass(frozen=True)
class Resolved:
    spec: Spec
    commit: bytes
    branch: str | None  # the branch the spec named, if it named one (and no ~N)


def parse_spec(text: str) -> Spec:
    dataset, at, ref = text.partition("@")
    if not at and "~" in dataset:  # git's `main~1`, written without the branch
        base, _, steps = dataset.partition("~")
        if steps.isdigit() or steps == "":
            raise UsageError(
                f"invalid version {text!r}: did you mean {base}@{DEFAULT_BRANCH}~{steps or 1}? "
                "(~N follows a ref: DATASET@REF~N)"
            )
    check_name(dataset, "dataset")
    if not at:
        return Spec(dataset, DEFAULT_BRANCH)
    back = 0
    if "~" in ref:
        parts = ref.split("~")  # git's main~2~1 is main~3
        ref = parts[0]
        for n in parts[1:]:
            if n and not n.isdigit():
                raise UsageError(f"invalid version {text!r}: ~ takes a number of commits back")
            back += int(n) if n else 1
    if not ref:
        raise UsageError(f"invalid version {text!r}: nothing after '@'")
    kind, slash, name = ref.partition("/")
    if slash:
        if kind not in (HEADS, TAGS):
            raise UsageError(f"invalid version {text!r}: use @heads/NAME or @tags/NAME")
        check_name(name, "tag" if kind == TAGS else "branch")
    elif not _HEX.fullmatch(ref):
        check_name(ref, "ref")
    return Spec(dataset, ref, back, explicit=True)


def resolve(store: Store, spec: Spec | str) -> Resolved:
    if isinstance(spec, str):
        spec = parse_spec(spec)
    try:
        commit, branch = _resolve_ref(store, spec)
    except NotFound:
        if store.offline is None:
            raise
        # Offline, only the pins' refs are known: a version that is not among them
        # may well exist. Saying it does not would send a script down the wrong road.
        pinned = ", ".join(sorted({f"{d}@{r.partition('/')[2]}" for d, r in store.offline.refs}))
        raise NotPinned(
            f"{spec} is not among the versions pinned in the cache ({pinned or 'none'}), "
            f"and the store {store.url} cannot be reached to look it up"
        ) from None
    for i in range(spec.back):
        parents = store.get_commit(commit).parents
        if not parents:
            raise NotFound(f"{spec}: {spec.dataset}@{spec.ref} has only {i} ancestors")
        commit = parents[0]
    return Resolved(spec, commit, branch if spec.back == 0 else None)


def _resolve_ref(store: Store, spec: Spec) -> tuple[bytes, str | None]:
    ds, ref = spec.dataset, spec.ref
    kind, slash, name = ref.partition("/")
    if slash:
        v = store.read_ref(ds, kind, name)
        if v is None:
            raise NotFound(f"{ds} has no {'tag' if kind == TAGS else 'branch'} {name!r}")
        return v.commit, name if kind == HEADS else None
    hexid = ref.lower()
    if _HEX.fullmatch(hexid) is None or len(ref) < 64:
        branch = store.read_ref(ds, HEADS, ref) if _is_name(ref) else None
        # A bare DATASET means its default branch, never a tag of that name.
        tag = store.read_ref(ds, TAGS, ref) if _is_name(ref) and spec.explicit else None
        if branch is not None and tag is not None and branch.commit != tag.commit:
            raise AmbiguousRef(
                f"{ds}@{ref} is both a branch ({short(branch.commit)}) and a tag "
                f"({short(tag.commit)}): say {ds}@heads/{ref} or {ds}@tags/{ref}"
            )
        if branch is not None:
            return branch.commit, ref
        if tag is not None:
            return tag.commit, None
    if _HEX.fullmatch(hexid):
        return _resolve_prefix(store, ds, hexid), None
    if not store.dataset_exists(ds):
        raise no_dataset(store, ds)
    if not spec.explicit:
        raise NotFound(f"dataset {ds!r} has no branch {ref!r}{_suggest(store, ds, ref)}")
    short_hex = (
        "; a commit id prefix needs at least 4 hex digits"
        if re.fullmatch(r"[0-9a-f]{1,3}", ref)
        else ""
    )
    raise NotFound(
        f"{ds} has no branch, tag or commit {ref!r}{short_hex}{_suggest(store, ds, ref)}"
    )


def _suggest(store: Store, ds: str, ref: str) -> str:
    """ "; did you mean 'main'?" for a near miss, and the dataset's refs."""
    branches, tags = list(store.refs(ds, HEADS)), list(store.refs(ds, TAGS))
    if not branches and not tags:
        return ""
    close = difflib.get_close_matches(ref, branches + tags, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""

    def listed(kind: str, names: list[str]) -> str:
        return f"{kind} " + ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")

    kinds = [listed("branches", branches)] if branches else []
    kinds += [listed("tags", tags)] if tags else []
    return f"{hint} ({ds} has {'; '.join(kinds)})"


def _is_name(ref: str) -> bool:
    try:
        check_name(ref, "ref")
    except UsageError:
        return False
    return True


def no_dataset(store: Store, ds: str) -> NotFound:
    """The error for a dataset with no refs: it says so if the dataset was removed."""
    if reflog.has_entries(store, ds):
        return NotFound(
            f"dataset {ds!r} has no refs left (removed?); `vfs reflog {ds}` lists the ids "
            f"they held, and `vfs branch {ds}@ID main` brings one back"
        )
    close = difflib.get_close_matches(ds, store.datasets(), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else " (vfs ls lists the datasets)"
    return NotFound(f"no dataset {ds!r} in {store.url}{hint}")


def _resolve_prefix(store: Store, ds: str, prefix: str) -> bytes:
    # A dataset whose refs are all deleted still has its ref log: its commits can be
    # named by id, which is how a removed dataset is restored.
    if not store.dataset_exists(ds) and not reflog.has_entries(store, ds):
        raise NotFound(f"no dataset {ds!r} in {store.url}")
    matches = []
    for oid in store.find_objects(prefix):
        try:
            store.get_commit(oid)
        except Exception:  # a tree page shares the id space; only commits count
            continue
        matches.append(oid)
    if not matches:
        if store.offline is None:
            for e in reflog.read_reflog(store, ds):
                for i in (e.old, e.new):
                    if i is not None and i.hex().startswith(prefix):
                        raise NotFound(
                            f"{ds}@{prefix}: commit {short(i)} (in `vfs reflog {ds}`, "
                            f"{e.action} of {e.ref} at {e.time}) is no longer in the store: "
                            "gc collected it after its grace period"
                        )
        raise NotFound(f"{ds} has no branch, tag or commit {prefix!r}")
    # Other datasets' commits may share the prefix: only ds's count.
    ours = [m for m in matches if in_history(store, ds, m)]
    if len(ours) > 1:
        shown = ", ".join(m.hex()[:12] for m in ours[:5])
        raise AmbiguousRef(f"id prefix {prefix!r} is ambiguous: {shown}")
    if not ours:
        named = f"commit {short(matches[0])}" if len(matches) == 1 else f"id prefix {prefix!r}"
        raise NotFound(
            f"{named} is not in the history of {ds} (a version of another dataset?); "
            f"`vfs log {ds}` lists its commits"
        )
    return ours[0]


# Clocks of the machines that commit may disagree: a walk for a commit goes on past
# it in time by this much before it concludes the commit is not there.
CLOCK_SLACK = 86400.0


def in_history(store: Store, ds: str, commit: bytes) -> bool:
    """Whether `commit` is a version of `ds`: reachable from one of its refs, or from
    an id its ref log recorded (a deleted branch, a removed dataset: restorable by id).
    The walk goes from the newest commits back and stops at commits older than the
    one sought (less CLOCK_SLACK), so it costs the commits made since, not the whole
    history."""
    if store.offline is not None:
        return commit in store.offline.commits.get(ds, set())
    heads = [*store.refs(ds, HEADS).values(), *store.refs(ds, TAGS).values()]
    if commit in heads:
        return True
    cutoff = _epoch(store.get_commit(commit).time) - CLOCK_SLACK
    seen: set[bytes] = set()
    if _reaches(store, heads, commit, cutoff, seen):
        return True
    logged = [i for e in reflog.read_reflog(store, ds) for i in (e.old, e.new) if i is not None]
    return _reaches(store, logged, commit, cutoff, seen)


def descends_from(store: Store, head: bytes, commit: bytes) -> bool:
    """Whether `commit` is `head` or one of its ancestors (walked back from head,
    stopping past commit's time, as in_history does)."""
    if head == commit:
        return True
    cutoff = _epoch(store.get_commit(commit).time) - CLOCK_SLACK
    return _reaches(store, [head], commit, cutoff, set())


def _reaches(
    store: Store, starts: list[bytes], target: bytes, cutoff: float, seen: set[bytes]
) -> bool:
    todo = [c for c in starts if c not in seen]
    while todo:
        c = todo.pop()
        if c == target:
            return True
        if c in seen:
            continue
        seen.add(c)
        try:
            got = store.get_commit(c)
        except (NotFound, MissingObject):  # collected by gc: nothing is reached through it
            continue
        if _epoch(got.time) >= cutoff:
            todo.extend(p for p in got.parents if p not in seen)
    return False


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


def short(commit: bytes) -> str:
    return commit.hex()[:12]


__all__ = [
    "DEFAULT_BRANCH",
    "Resolved",
    "Spec",
    "descends_from",
    "in_history",
    "no_dataset",
    "parse_spec",
    "resolve",
    "short",
]
