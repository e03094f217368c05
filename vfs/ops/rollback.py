"""`vfs rollback`: make an old version current again, keeping history.

Nothing is copied: the old version's tree becomes the tree of a new commit on top
of the branch, whose meta records which version it rolls back to.
"""

from __future__ import annotations

from dataclasses import dataclass

from vfs import format as fmt
from vfs import leases, refs
from vfs.defaults import DEFAULT_BRANCH
from vfs.errors import NotFound
from vfs.names import check_name
from vfs.ops.commit import commit_and_move, default_author, utc_now
from vfs.store import HEADS, Store


@dataclass(frozen=True)
class RollbackResult:
    id: bytes  # the new commit
    dataset: str
    branch: str
    tree: bytes
    rollback_of: bytes  # the commit whose tree it has
    spec: str  # the version rolled back to, as resolved
    unchanged: bool = False  # the branch had that tree already: no commit was made
    # The version came from outside the branch's history (another branch): what the
    # branch had gained since they diverged is no longer in its content.
    from_elsewhere: bool = False


def rollback(
    store: Store, spec: str, branch: str = DEFAULT_BRANCH, message: str | None = None
) -> RollbackResult:
    """Commit the tree of the version `spec` names on top of `branch`. Like a commit,
    it holds a lease until its ref moved: the old tree may be reachable from no ref,
    and a gc must not delete it meanwhile (vfs/leases.py)."""
    with leases.CommitLease(store.backend) as lease:
        lease.acquire()
        return _rollback(store, spec, branch, message, lease)


def _rollback(
    store: Store, spec: str, branch: str, message: str | None, lease: leases.CommitLease
) -> RollbackResult:
    r = refs.resolve(store, spec)
    branch = check_name(branch, "branch")
    old = store.get_commit(r.commit)
    head = store.read_ref(r.spec.dataset, HEADS, branch)
    if head is None:
        raise NotFound(f"{r.spec.dataset} has no branch {branch!r}")
    if store.get_commit(head.commit).tree == old.tree:  # as a commit of no change
        return RollbackResult(
            head.commit, r.spec.dataset, branch, old.tree, r.commit, str(r.spec), True
        )
    message = message or f"rollback to {r.spec} ({refs.short(r.commit)})"
    template = fmt.Commit(
        tree=old.tree,
        parents=(),
        author=default_author(),
        time=utc_now(),
        message=message,
        meta={**old.meta, "vfs.rollback-of": r.commit.hex()},
        files=old.files,
        bytes=old.bytes,
    )
    elsewhere = not refs.descends_from(store, head.commit, r.commit)
    cid, _, _ = commit_and_move(
        store, r.spec.dataset, branch, head, template, "rollback", check=lease.check
    )
    return RollbackResult(
        cid, r.spec.dataset, branch, old.tree, r.commit, str(r.spec), from_elsewhere=elsewhere
    )
