"""Deleting refs with guards and a way back, through the CLI as users type it, on
the local store and SeaweedFS: `branch -d/-D`, `tag -d`, `rm`, `reflog`, and
restoring a deleted ref (or a removed dataset) from the id a delete printed."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from vfs import reflog
from vfs.backends import Backend
from vfs.cli import main
from vfs.errors import CorruptObject, RefConflict
from vfs.ops.commit import commit_dir
from vfs.store import HEADS, Store


class Cli:
    """`vfs ...` in this process, with the store and cache of one test."""

    def __init__(self, store: str, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.store = store
        self.cache = cache
        self.capsys = capsys

    def run(self, *args: str, stdin: str = "") -> tuple[int, str, str]:
        """Exit code, stdout and stderr of `vfs ARGS`, with `stdin` (not a terminal)."""
        self.capsys.readouterr()
        saved = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            rc = main([*args[:1], "--store", self.store, "--cache-dir", str(self.cache), *args[1:]])
        finally:
            sys.stdin = saved
        out, err = self.capsys.readouterr()
        return rc, out, err

    def ok(self, *args: str) -> str:
        rc, out, err = self.run(*args)
        assert rc == 0, f"vfs {' '.join(args)} exited {rc}: {err}"
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def commit(self, src: Path, dataset: str, *extra: str) -> str:
        return self.ok("commit", str(src), dataset, *extra).strip()


@pytest.fixture
def cli(
    store_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Cli:
    monkeypatch.setenv("VFS_NO_PROGRESS", "1")
    return Cli(store_url, tmp_path / "cache", capsys)


def _write(src: Path, name: str, text: str) -> Path:
    src.mkdir(exist_ok=True)
    (src / name).write_text(text)
    return src


def _restore_line(err: str) -> list[str]:
    """The `vfs ...` words of the restore command a delete printed."""
    m = re.search(r"restore with: (vfs .*)$", err, re.M)
    assert m, err
    return m.group(1).split()[1:]


def test_default_branch_is_refused(cli: Cli, tmp_path: Path) -> None:
    src = _write(tmp_path / "src", "a", "1")
    cli.commit(src, "ds")
    for flags in (["-d"], ["-D"], ["-d", "--force"]):
        rc, _, err = cli.run("branch", *flags, "ds", "main")
        assert rc == 1
        assert "refusing to delete ds@main: it is the default branch" in err
        assert "vfs rm ds" in err
    assert set(cli.json("branch", "ds")) == {"main"}
    assert len(cli.json("log", "ds")) == 1


def test_unmerged_branch_needs_D_and_comes_back_by_id(cli: Cli, tmp_path: Path) -> None:
    src = _write(tmp_path / "src", "a", "1")
    base = cli.commit(src, "ds")
    cli.ok("branch", "ds", "exp")
    one = cli.commit(_write(src, "b", "2"), "ds", "--branch", "exp")
    two = cli.commit(_write(src, "c", "3"), "ds", "--branch", "exp")

    rc, _, err = cli.run("branch", "-d", "ds", "exp")
    assert rc == 1
    assert "branch ds@exp holds 2 commits that no other branch or tag of ds reaches" in err
    assert "vfs branch -D ds exp" in err
    assert set(cli.json("branch", "ds")) == {"main", "exp"}

    rc, _, err = cli.run("branch", "-D", "ds", "exp")
    assert rc == 0
    assert (
        f"deleted branch ds@exp (was {two[:12]}); restore with: vfs branch ds@{two[:12]} exp --store {cli.store}"
        in err
    )
    assert set(cli.json("branch", "ds")) == {"main"}

    cli.ok(*_restore_line(err))
    assert [c["id"] for c in cli.json("log", "ds@exp")] == [two, one, base]

    # --force is -D spelled long; alone it is a usage error
    assert cli.run("branch", "--force", "ds", "exp")[0] == 2
    assert cli.run("branch", "-d", "--force", "ds", "exp")[0] == 0
    assert set(cli.json("branch", "ds")) == {"main"}


def test_merged_branch_goes_with_d(cli: Cli, tmp_path: Path) -> None:
    src = _write(tmp_path / "src", "a", "1")
    first = cli.commit(src, "ds")
    cli.commit(_write(src, "b", "2"), "ds")
    cli.ok("branch", "ds@main~1", "old")  # an ancestor of main
    cli.ok("branch", "ds", "same")  # main's own head
    cli.ok("branch", "ds", "side")
    side = cli.commit(_write(src, "c", "3"), "ds", "--branch", "side")
    cli.ok("tag", "ds@side", "keep")  # a tag reaches side's head
    for name in ("old", "same", "side"):
        rc, _, err = cli.run("branch", "-d", "ds", name)
        assert rc == 0, err
    assert set(cli.json("branch", "ds")) == {"main"}
    assert cli.json("tag", "ds") == {"keep": side}
    assert cli.run("branch", "-d", "ds", "old")[0] == 1  # gone: says so
    assert cli.json("log", "ds")[-1]["id"] == first


def test_tag_delete_and_restore(cli: Cli, tmp_path: Path) -> None:
    src = _write(tmp_path / "src", "a", "1")
    v1 = cli.commit(src, "ds", "--tag", "v1")
    rc, _, err = cli.run("tag", "-d", "ds", "v1")
    assert rc == 0
    assert (
        f"deleted tag ds@v1 (was {v1[:12]}); restore with: vfs tag ds@{v1[:12]} v1 --store {cli.store}"
        in err
    )
    assert cli.json("tag", "ds") == {}
    assert cli.run("tag", "-d", "ds", "v1")[0] == 1
    assert cli.run("tag", "-d", "ds@main", "v1")[0] == 2  # a dataset, not a version
    cli.ok(*_restore_line(err))
    assert cli.json("tag", "ds") == {"v1": v1}


def test_rm_asks_or_wants_yes_and_is_undone_by_id(cli: Cli, tmp_path: Path) -> None:
    src = _write(tmp_path / "src", "a", "1")
    first = cli.commit(src, "ds", "--tag", "v1")
    head = cli.commit(_write(src, "b", "2"), "ds")
    cli.commit(src, "other")

    rc, _, err = cli.run("rm", "ds")  # stdin is no terminal
    assert rc == 2
    assert "would delete dataset ds with 1 branch and 1 tag" in err and "--yes" in err
    assert [d["dataset"] for d in cli.json("ls")] == ["ds", "other"]

    rc, _, err = cli.run("rm", "ds", "--yes")
    assert rc == 0
    assert "deleted dataset ds (1 branch and 1 tag)" in err
    assert "`vfs gc`" in err and "grace period" in err
    assert f"  vfs branch ds@{head[:12]} main" in err
    assert f"  vfs tag ds@{first[:12]} v1" in err
    assert [d["dataset"] for d in cli.json("ls")] == ["other"]
    rc, _, err = cli.run("log", "ds")
    assert rc == 1 and "vfs reflog ds" in err
    assert cli.run("rm", "ds", "--yes")[0] == 1  # nothing left to remove

    cli.ok("branch", f"ds@{head[:12]}", "main")
    cli.ok("tag", f"ds@{first[:12]}", "v1")
    assert [d["dataset"] for d in cli.json("ls")] == ["ds", "other"]
    assert [c["id"] for c in cli.json("log", "ds")] == [head, first]
    assert cli.json("tag", "ds") == {"v1": first}


def test_rm_on_a_terminal_asks(store_url: str, tmp_path: Path) -> None:
    src = _write(tmp_path / "src", "a", "1")
    env = {**os.environ, "VFS_STORE": store_url, "VFS_CACHE_DIR": str(tmp_path / "cache")}
    subprocess.run(
        [sys.executable, "-m", "vfs.cli", "commit", str(src), "ds"],
        env=env,
        check=True,
        capture_output=True,
    )

    def rm_answering(answer: bytes) -> tuple[int, str]:
        leader, follower = pty.openpty()
        try:
            p = subprocess.Popen(
                [sys.executable, "-m", "vfs.cli", "rm", "ds"],
                stdin=follower,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            os.write(leader, answer)
            _, err = p.communicate(timeout=60)
        finally:
            os.close(leader)
            os.close(follower)
        return p.returncode, err.decode()

    rc, err = rm_answering(b"n\n")
    assert rc == 1
    assert "delete dataset ds with 1 branch and 0 tags? [y/N]" in err
    assert "nothing deleted" in err
    rc, err = rm_answering(b"y\n")
    assert rc == 0, err
    assert "deleted dataset ds" in err


def test_reflog_records_every_ref_change(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VFS_AUTHOR", "ann@lab")
    src = _write(tmp_path / "src", "a", "1")
    c1 = cli.commit(src, "ds", "--tag", "v1")
    c2 = cli.commit(_write(src, "b", "2"), "ds")
    cli.ok("branch", "ds@v1", "exp")
    c3 = cli.commit(_write(src, "c", "3"), "ds", "--branch", "exp")
    c4 = cli.json("rollback", "ds@v1")["id"]
    cli.ok("branch", "-D", "ds", "exp")
    cli.ok("tag", "-d", "ds", "v1")
    cli.ok("tag", "ds@main", "v4")
    cli.ok("rm", "ds", "--yes")

    got = cli.json("reflog", "ds")
    # the two "rm" entries: tags go first, and come out newest first
    want = [
        {"action": "rm", "ref": "heads/main", "old": c4, "new": None},
        {"action": "rm", "ref": "tags/v4", "old": c4, "new": None},
        {"action": "tag", "ref": "tags/v4", "old": None, "new": c4},
        {"action": "delete", "ref": "tags/v1", "old": c1, "new": None},
        {"action": "delete", "ref": "heads/exp", "old": c3, "new": None},
        {"action": "rollback", "ref": "heads/main", "old": c2, "new": c4},
        {"action": "commit", "ref": "heads/exp", "old": c1, "new": c3},
        {"action": "branch", "ref": "heads/exp", "old": None, "new": c1},
        {"action": "commit", "ref": "heads/main", "old": c1, "new": c2},
        {"action": "tag", "ref": "tags/v1", "old": None, "new": c1},
        {"action": "commit", "ref": "heads/main", "old": None, "new": c1},
    ]
    assert [{k: e[k] for k in ("action", "ref", "old", "new")} for e in got] == want
    assert {e["who"] for e in got} == {"ann@lab"}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["time"]) for e in got)
    assert len(cli.json("reflog", "ds", "-n", "3")) == 3

    text = cli.ok("reflog", "ds", "-n", "2").splitlines()
    assert len(text) == 2
    assert "rm" in text[0] and "heads/main" in text[0] and f"{c4[:12]} -> -" in text[0]

    # the stored bytes are the canonical form other tools (gc) read
    store = Store.open(cli.store)
    entries = reflog.read_reflog(store, "ds")
    key = entries[0].key
    assert re.fullmatch(r"reflog/ds/\d{20}-[0-9a-f]{8}", key)
    assert store.backend.get(key) == (
        json.dumps(entries[0].doc(), sort_keys=True, separators=(",", ":")).encode() + b"\n"
    )
    assert cli.run("reflog", "nosuch")[0] == 1


def test_delete_is_refused_when_the_ref_moved(store_url: str, tmp_path: Path) -> None:
    src = _write(tmp_path / "src", "a", "1")
    store = Store.open(store_url)
    commit_dir(store, str(src), "ds", branch="exp", cache_dir=str(tmp_path / "c"))
    seen = store.read_ref("ds", HEADS, "exp")
    assert seen is not None
    moved = commit_dir(
        store, str(_write(src, "b", "2")), "ds", branch="exp", cache_dir=str(tmp_path / "c")
    )
    with pytest.raises(RefConflict, match="changed while deleting"):
        store.delete_ref("ds", HEADS, "exp", seen)
    now = store.read_ref("ds", HEADS, "exp")
    assert now is not None and now.commit == moved.commit


def test_concurrent_commits_each_leave_one_entry(store_url: str, tmp_path: Path) -> None:
    store = Store.open(store_url)
    writers, rounds = 4, 3
    made: list[bytes] = []
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(rounds):
                src = _write(tmp_path / f"src{n}", "f", f"{n}-{i}")
                r = commit_dir(store, str(src), "ds", cache_dir=str(tmp_path / f"c{n}"))
                made.append(r.commit)
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors

    entries = [e for e in reflog.read_reflog(store, "ds") if e.ref == "heads/main"]
    assert len(entries) == writers * rounds
    assert {e.new for e in entries} == set(made)
    # each move starts where another ended: one chain from nothing to the head
    by_old = {e.old: e for e in entries}
    assert len(by_old) == len(entries)
    cid, walked = None, 0
    while cid in by_old:
        cid = by_old[cid].new
        walked += 1
    head = store.read_ref("ds", HEADS, "main")
    assert walked == len(entries) and head is not None and cid == head.commit


def test_damaged_entry_is_an_error(store_url: str, tmp_path: Path) -> None:
    store = Store.open(store_url)
    store.backend.put(f"reflog/ds/{time.time_ns():020d}-00000000", b"{not json\n")
    with pytest.raises(CorruptObject, match="ref log entry reflog/ds/"):
        reflog.read_reflog(store, "ds")


def test_delete_if_is_a_compare_and_swap(backend: Backend) -> None:
    """The backend half of a guarded delete: a stale token deletes nothing (on S3,
    SeaweedFS must honour If-Match on DELETE)."""
    assert backend.put_if("refs/ds/heads/x", b"one\n", None)
    first = backend.get_versioned("refs/ds/heads/x")
    assert backend.put_if("refs/ds/heads/x", b"two\n", first.token)
    assert not backend.delete_if("refs/ds/heads/x", first.token)
    assert backend.get("refs/ds/heads/x") == b"two\n"
    assert backend.delete_if("refs/ds/heads/x", backend.get_versioned("refs/ds/heads/x").token)
    assert not backend.exists("refs/ds/heads/x")
    assert not backend.delete_if("refs/ds/heads/x", first.token)  # gone: nothing to delete


def test_rm_deletes_the_default_branch_last(cli: Cli, tmp_path: Path) -> None:
    """So an rm cut short leaves a dataset that `vfs ls` shows and a bare name reads."""
    head = cli.commit(_write(tmp_path / "src", "a", "1"), "ds", "--tag", "t")
    for name in ("aa", "zz"):
        cli.ok("branch", "ds", name)
    rc, _, err = cli.run("rm", "ds", "--yes")
    assert rc == 0
    assert "deleted dataset ds (3 branches and 1 tag)" in err
    restores = [line.strip() for line in err.splitlines() if line.startswith("  vfs ")]
    assert (
        restores
        == [  # in the store the delete named
            f"vfs branch ds@{head[:12]} main --store {cli.store}",
            f"vfs branch ds@{head[:12]} aa --store {cli.store}",
            f"vfs branch ds@{head[:12]} zz --store {cli.store}",
            f"vfs tag ds@{head[:12]} t --store {cli.store}",
        ]
    )
    rm = [e["ref"] for e in cli.json("reflog", "ds") if e["action"] == "rm"]
    assert rm == ["heads/main", "heads/zz", "heads/aa", "tags/t"]  # newest first


# --- one name, one version ----------------------------------------------------------


def test_a_version_name_never_means_two_things(cli: Cli, tmp_path: Path) -> None:
    """A branch may not take a tag's name (the tag would seem to move) nor the
    reverse, no new ref may look like a commit id, and a commit id names a version of
    a dataset only if it is in that dataset's history."""
    src = _write(tmp_path / "src", "a", "1")
    v3 = cli.commit(src, "ds", "--tag", "v3")
    _write(src, "a", "2")
    head = cli.commit(src, "ds")
    other = cli.commit(_write(tmp_path / "o", "b", "x"), "other")

    rc, _, err = cli.run("branch", "ds@main", "v3")
    assert rc == 1 and "ds has a tag 'v3'" in err, err
    rc, _, err = cli.run("commit", str(src), "ds", "--branch", "v3")
    assert rc == 1 and "ds has a tag 'v3'" in err, err
    rc, _, err = cli.run("tag", "ds@main", "main")
    assert rc == 1 and "ds has a branch 'main'" in err, err
    rc, _, err = cli.run("tag", "ds@main", "deadbeef12")
    assert rc == 2 and "looks like a commit id" in err, err
    assert cli.ok("ls", "ds@v3").split() == ["a"]
    assert cli.json("log", "ds@v3", "-n", "1")[0]["id"] == v3

    # Another dataset's commit, by prefix or whole id: not a version of ds.
    for ref in (other[:12], other):
        rc, _, err = cli.run("ls", f"ds@{ref}")
        assert rc == 1 and f"commit {other[:12]} is not in the history of ds" in err, err
    rc, _, err = cli.run("branch", f"ds@{other[:12]}", "weird")
    assert rc == 1 and set(cli.json("branch", "ds")) == {"main"}
    # A deleted branch's commits still are (restorable by id), and so is history.
    cli.ok("branch", f"ds@{v3[:12]}", "old")
    cli.ok("branch", "-D", "ds", "old")
    _write(src, "a", "3")
    cli.commit(src, "ds")
    assert cli.json("log", f"ds@{head[:8].upper()}", "-n", "1")[0]["id"] == head
    assert cli.json("log", "ds@main~1~1", "-n", "1")[0]["id"] == v3

    # Listing takes a bare DATASET; tags come in natural order.
    rc, _, err = cli.run("branch", "ds@v3")
    assert rc == 2 and "to list branches give just the DATASET" in err, err
    for name in ("v10", "v2", "v1"):
        cli.ok("tag", "ds@main", name)
    assert list(cli.json("tag", "ds")) == ["v1", "v2", "v3", "v10"]


def test_a_name_both_a_branch_and_a_tag_asks_which(store_url: str, tmp_path: Path) -> None:
    """Two people at once (or a store from before the rule) can still make one: a
    spec naming it is an error that says how to name each."""
    from vfs import refs
    from vfs.errors import AmbiguousRef
    from vfs.store import TAGS

    store = Store.open(store_url)
    try:
        src = _write(tmp_path / "src", "a", "1")
        first = commit_dir(store, str(src), "ds", cache_dir=str(tmp_path / "c")).commit
        _write(src, "a", "2")
        second = commit_dir(store, str(src), "ds", cache_dir=str(tmp_path / "c")).commit
        store.backend.put(store._ref_key("ds", TAGS, "main"), first.hex().encode() + b"\n")
        with pytest.raises(AmbiguousRef, match="say ds@heads/main or ds@tags/main"):
            refs.resolve(store, "ds@main")
        assert refs.resolve(store, "ds@heads/main").commit == second
        assert refs.resolve(store, "ds@tags/main").commit == first
        assert refs.resolve(store, "ds").commit == second  # bare: the default branch
    finally:
        store.close()


def test_meta_keys_of_vfs_are_refused(cli: Cli, tmp_path: Path) -> None:
    src = _write(tmp_path / "src", "a", "1")
    rc, _, err = cli.run("commit", str(src), "ds", "--meta", "vfs.input.0=other@1234")
    assert rc == 2 and "keys beginning with 'vfs.' are vfs's own" in err, err
    cli.ok("commit", str(src), "ds", "--meta", "team=vision")


def test_a_rollback_to_another_branchs_version_warns_what_main_loses(
    cli: Cli, tmp_path: Path
) -> None:
    """Used as a merge, rollback replaces main's content: main's later work is gone
    from it without a word. It says so when the version is not in main's history."""
    src = _write(tmp_path / "src", "a", "1")
    base = cli.commit(src, "ds")
    cli.ok("branch", f"ds@{base[:12]}", "feat")
    cli.commit(_write(tmp_path / "feat", "a", "feat"), "ds", "--branch", "feat")
    cli.commit(_write(src, "later", "main's"), "ds")
    rc, _, err = cli.run("rollback", "ds@feat")
    assert rc == 0 and "ds@feat is not in ds@main's history" in err, err
    assert cli.json("rollback", "ds@feat")["unchanged"]
    rc, _, err = cli.run("rollback", "ds@main~2")  # an ancestor: an ordinary rollback
    assert rc == 0 and "warning" not in err, err
