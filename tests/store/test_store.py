"""Commit and read versions through the Python API, on both backends."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tests.support.treegen import make_sparse, make_tree, snapshot_fs, snapshot_version
from vfs import format as fmt
from vfs import refs
from vfs.errors import AmbiguousRef, NotFound, RefConflict, UsageError
from vfs.ops.commit import commit_dir
from vfs.ops.get import get
from vfs.reader import open_version
from vfs.store import HEADS, Store

MiB = 1024 * 1024


@pytest.fixture
def store(store_url: str):
    s = Store.open(store_url)
    yield s
    s.close()


@pytest.fixture
def cache_dir(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


def test_round_trip_is_byte_for_byte(store: Store, tmp_path: Path, cache_dir: str) -> None:
    src = make_tree(tmp_path / "src", big=True)
    r = commit_dir(store, str(src), "ds", message="first", tag="v1", cache_dir=cache_dir)
    assert r.files == sum(1 for _ in src.rglob("*") if _.is_file() and not _.is_symlink())
    with open_version("ds@v1", store) as v:
        assert v.commit.message == "first"
        want = snapshot_fs(src)
        got = snapshot_version(v)
        assert got == want
        # Random access through the file object.
        data = (src / "big.bin").read_bytes()
        with v.open("big.bin") as f:
            rng = random.Random(3)
            for _ in range(50):
                off = rng.randrange(len(data))
                n = rng.randrange(1, 3 * MiB)
                f.seek(off)
                assert f.read(n) == data[off : off + n]
            f.seek(-10, os.SEEK_END)
            assert f.read() == data[-10:]
        # Materialise it and compare again, including mtimes and modes.
        out = tmp_path / "out"
        res = get(v, "", str(out))
        assert res.files == r.files
        assert snapshot_fs(out) == want
        assert os.readlink(out / "link-outside") == "/etc/passwd"


def test_sparse_file_over_1_gib(store: Store, tmp_path: Path, cache_dir: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    size = 1024 * MiB + 4097
    make_sparse(src / "huge.img", size)
    r = commit_dir(store, str(src), "sparse", cache_dir=cache_dir)
    assert r.bytes == size
    assert r.bytes_uploaded < 2 * MiB  # zero chunks dedup to a handful
    with open_version("sparse", store) as v:
        assert snapshot_version(v) == snapshot_fs(src)


def test_a_small_edit_stores_only_its_chunks(store: Store, tmp_path: Path, cache_dir: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(7)
    big = bytearray(rng.randbytes(40 * MiB))
    (src / "model.bin").write_bytes(big)
    for i in range(200):
        (src / f"s{i:03d}.dat").write_bytes(rng.randbytes(2000))
    first = commit_dir(store, str(src), "dedup", cache_dir=cache_dir)
    assert first.bytes_uploaded > 40 * MiB
    big[20 * MiB : 21 * MiB] = rng.randbytes(MiB)
    (src / "model.bin").write_bytes(big)
    for i in range(10):
        (src / f"s{i:03d}.dat").write_bytes(rng.randbytes(2000))
    second = commit_dir(store, str(src), "dedup", cache_dir=cache_dir)
    # 1 MiB edit costs the chunks around it; ten 2 KB files cost themselves.
    assert second.bytes_uploaded < 5 * MiB
    assert second.parent == first.commit
    with open_version("dedup", store) as v:
        assert v.read_file("model.bin") == bytes(big)
    with open_version("dedup@main~1", store) as v:
        assert v.commit_id == first.commit


def test_unchanged_recommit_reads_nothing(store: Store, tmp_path: Path, cache_dir: str) -> None:
    src = make_tree(tmp_path / "src")
    first = commit_dir(store, str(src), "same", cache_dir=cache_dir)
    again = commit_dir(store, str(src), "same", cache_dir=cache_dir)
    assert again.unchanged and again.commit == first.commit
    assert again.parent is None  # the head's own parent: the first commit has none
    assert again.bytes_read == 0 and again.bytes_uploaded == 0
    # A touched file is read again, and only it.
    (src / "with space.csv").write_text("a,b\n1,3\n")
    third = commit_dir(store, str(src), "same", cache_dir=cache_dir)
    assert not third.unchanged
    assert third.bytes_read == len("a,b\n1,3\n")


def test_concurrent_committers_lose_nothing(store_url: str, tmp_path: Path, cache_dir: str) -> None:
    n = 8
    srcs = []
    for i in range(n):
        d = tmp_path / f"src{i}"
        d.mkdir()
        (d / "who.txt").write_text(f"writer {i}\n")
        srcs.append(d)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        s = Store.open(store_url)
        try:
            for round_ in range(3):
                (srcs[i] / "round.txt").write_text(f"{round_}\n")
                r = commit_dir(s, str(srcs[i]), "race", cache_dir=f"{cache_dir}{i}")
                results.append(r.commit)
        except BaseException as e:
            errors.append(e)
        finally:
            s.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 3 * n
    s = Store.open(store_url)
    try:
        history = _history(s, "race")
    finally:
        s.close()
    # Every commit reported as made is on the branch: none lost, no fork.
    assert set(results) <= set(history)
    assert len(history) == len(set(history))


def _history(store: Store, dataset: str, branch: str = "main") -> list[bytes]:
    head = store.read_ref(dataset, HEADS, branch)
    assert head is not None
    out = []
    cid: bytes | None = head.commit
    while cid is not None:
        out.append(cid)
        c = store.get_commit(cid)
        cid = c.parents[0] if c.parents else None
    return out


def test_refs_and_specs(store: Store, tmp_path: Path, cache_dir: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ids = []
    for i in range(3):
        (src / "n.txt").write_text(str(i))
        ids.append(
            commit_dir(store, str(src), "specs", tag=f"v{i + 1}", cache_dir=cache_dir).commit
        )
    assert refs.resolve(store, "specs").commit == ids[2]
    assert refs.resolve(store, "specs@main").commit == ids[2]
    assert refs.resolve(store, "specs@v1").commit == ids[0]
    assert refs.resolve(store, "specs@main~2").commit == ids[0]
    assert refs.resolve(store, "specs@main~").commit == ids[1]
    assert refs.resolve(store, f"specs@{ids[1].hex()[:10]}").commit == ids[1]
    assert refs.resolve(store, "specs@tags/v2").commit == ids[1]
    with pytest.raises(NotFound, match="no dataset"):
        refs.resolve(store, "nope@v1")
    with pytest.raises(NotFound, match="no branch, tag or commit"):
        refs.resolve(store, "specs@v9")
    with pytest.raises(NotFound, match="ancestors"):
        refs.resolve(store, "specs@main~5")
    with pytest.raises(RefConflict, match="never move"):
        store.create_tag("specs", "v1", ids[2])
    with pytest.raises(RefConflict):
        commit_dir(store, str(src), "specs", tag="v1", cache_dir=cache_dir, allow_empty=True)
    for bad in ("..", "a/b", "x\x01", "", "-x", "a..b"):
        with pytest.raises(UsageError):
            refs.parse_spec(f"{bad}@main")
        with pytest.raises(UsageError):
            refs.parse_spec(f"ds@{bad}" if bad else "ds@")


def test_a_dataset_with_only_tags_is_listed_with_its_newest_version(
    store: Store, tmp_path: Path, cache_dir: str
) -> None:
    from vfs.ops import history

    src = tmp_path / "src"
    src.mkdir()
    for i, text in enumerate(("one", "three", "two")):  # v3 is the newest, not the last name
        (src / "n.txt").write_text(text * 10)
        commit_dir(store, str(src), "tagged", tag=f"v{i + 1}", cache_dir=cache_dir)
    store.delete_branch("tagged", "main")  # what a pull of a tag alone leaves
    (doc,) = history.datasets(store)
    assert doc["branches"] == {} and sorted(doc["tags"]) == ["v1", "v2", "v3"]
    assert (doc["files"], doc["bytes"]) == (1, 30)


def test_a_new_branch_starts_from_the_default_branch(
    store: Store, tmp_path: Path, cache_dir: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("one")
    main = commit_dir(store, str(src), "ds", cache_dir=cache_dir).commit
    # The same tree: the branch is created at main's head, no new commit.
    same = commit_dir(store, str(src), "ds", branch="same", cache_dir=cache_dir)
    assert same.unchanged and same.commit == main
    assert store.read_ref("ds", HEADS, "same").commit == main  # type: ignore[union-attr]
    # A change: its first commit has main's head as parent, so its log has both.
    (src / "a.txt").write_text("two")
    exp = commit_dir(store, str(src), "ds", branch="exp", cache_dir=cache_dir)
    assert exp.parent == main and store.get_commit(exp.commit).parents == (main,)
    assert store.read_ref("ds", HEADS, "main").commit == main  # type: ignore[union-attr]
    # A new dataset's first branch, whatever its name, has no parent.
    first = commit_dir(store, str(src), "other", branch="dev", cache_dir=cache_dir)
    assert store.get_commit(first.commit).parents == ()


def test_ambiguous_id_prefix(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "store"))
    store.ensure_config()
    seen: dict[str, bytes] = {}
    head: bytes | None = None
    # Commit empty versions until two ids share 4 hex digits (~300 on average).
    for i in range(5000):
        c = fmt.Commit(b"\0" * 32, (head,) if head else (), "t", "2026-01-01T00:00:00Z", str(i))
        cid = store.put_commit(c)
        head = cid
        if cid.hex()[:4] in seen:
            break
        seen[cid.hex()[:4]] = cid
    assert head is not None
    assert store.set_branch("amb", "main", head, None)
    with pytest.raises(AmbiguousRef, match="ambiguous"):
        refs.resolve(store, f"amb@{head.hex()[:4]}")


def test_special_files_skipped_and_symlinks_not_followed(
    store: Store, tmp_path: Path, cache_dir: str
) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "ok.txt").write_text("ok")
    os.mkfifo(src / "d" / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "d" / "sock"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not part of the dataset")
    os.symlink(outside, src / "d" / "escape")
    try:
        r = commit_dir(store, str(src), "special", cache_dir=cache_dir)
        again = commit_dir(store, str(src), "special", cache_dir=cache_dir)
    finally:
        sock.close()
    assert len(r.warnings) == 2 and all("skipped" in w for w in r.warnings)
    # Unchanged, the directory is not looked at again; what it skipped is still said.
    assert again.unchanged and again.warnings == [
        f"skipped 2 entries of {src / 'd'} that are not a regular file, directory or "
        "symlink (unchanged since the last commit)"
    ]
    with open_version("special", store) as v:
        names = {p.decode() for p, _ in v.walk()}
        assert names == {"d", "d/ok.txt", "d/escape"}
        found = v.stat("d/escape")
        assert found is not None and found.entry.is_symlink
        with pytest.raises(NotFound):
            v.stat("d/escape/secret.txt")


def test_missing_dir_and_bad_names_fail_clearly(
    store: Store, tmp_path: Path, cache_dir: str
) -> None:
    with pytest.raises(NotFound, match="no such directory"):
        commit_dir(store, str(tmp_path / "missing"), "ds", cache_dir=cache_dir)
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        commit_dir(store, str(tmp_path / "f"), "ds", cache_dir=cache_dir)
    with pytest.raises(UsageError, match="invalid dataset name"):
        commit_dir(store, str(tmp_path), "../etc", cache_dir=cache_dir)
    with pytest.raises(UsageError, match="invalid branch name"):
        commit_dir(store, str(tmp_path), "ds", branch="a/b", cache_dir=cache_dir)


def test_git_revision_is_recorded(store: Store, tmp_path: Path, cache_dir: str) -> None:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "x.txt").write_text("x")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "init"], check=True, env=env)
    rev = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    r = commit_dir(store, str(repo / "data"), "gitds", cache_dir=cache_dir, meta={"run": "7"})
    c = store.get_commit(r.commit)
    assert c.meta == {"git.rev": rev, "git.dirty": "false", "run": "7"}
    (repo / "data" / "x.txt").write_text("y")
    r2 = commit_dir(store, str(repo / "data"), "gitds", cache_dir=cache_dir)
    assert store.get_commit(r2.commit).meta["git.dirty"] == "true"


def test_large_directory_round_trip(store: Store, tmp_path: Path, cache_dir: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    n = 9000  # past the page split: leaves under an index page
    for i in range(n):
        (src / f"{i:05d}.txt").write_text(str(i))
    commit_dir(store, str(src), "wide", cache_dir=cache_dir)
    with open_version("wide", store) as v:
        assert store.get_page(v.root).kind == fmt.INDEX
        assert len(v.listdir()) == n
        assert v.read_file("04567.txt") == b"4567"
