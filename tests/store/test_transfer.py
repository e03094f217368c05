"""`vfs push`, `vfs pull`, `vfs import`, `vfs update` between real stores: local
directories and buckets of one SeaweedFS, through the command line as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from vfs.backends.faults import Fault, FaultControl
from vfs.ops.verify import Verifier
from vfs.store import HEADS, TAGS, Store
from vfs.testing.seaweed import SeaweedServer

ROOT = Path(__file__).resolve().parents[2]
PREFIXES = ("objects/", "locs/", "packs/", "index/")
PACK = 64 * 1024  # small packs: many objects from little data


def vfs(
    *args: str, env: dict[str, str] | None = None, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [sys.executable, "-m", "vfs", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "VFS_PACK_TARGET": str(PACK), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert p.returncode == 0, p.stderr
    return p


def vfs_json(*args: str, env: dict[str, str] | None = None) -> Any:
    return json.loads(vfs(*args, "--json", env=env).stdout)


def write(d: Path, files: dict[str, bytes]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def keys(url: str) -> dict[str, int]:
    s = Store.open(url)
    try:
        return {i.key: i.size for p in PREFIXES for i in s.backend.list_info(p)}
    finally:
        s.close()


def every_key(url: str) -> set[str]:
    s = Store.open(url)
    try:
        return set(s.backend.list(""))
    finally:
        s.close()


def ref(url: str, dataset: str, name: str, kind: str = HEADS) -> bytes | None:
    s = Store.open(url)
    try:
        v = s.read_ref(dataset, kind, name)
        return v.commit if v else None
    finally:
        s.close()


def verified(url: str) -> None:
    s = Store.open(url)
    try:
        result = Verifier(s).verify_refs()
        assert result.ok, result.damaged
        assert result.commits > 0
    finally:
        s.close()


def new_store(url: str) -> str:
    vfs("init", url)
    return url


def commit(url: str, src: Path, dataset: str, *extra: str) -> str:
    return vfs("--store", url, "commit", str(src), dataset, *extra).stdout.strip()


def bucket(seaweed: SeaweedServer) -> str:
    return seaweed.make_bucket(f"vfs-test-{uuid.uuid4().hex[:16]}")


@pytest.mark.s3
def test_push_to_s3_then_pull_into_another_laptop(seaweed: SeaweedServer, tmp_path: Path) -> None:
    laptop = new_store(str(tmp_path / "laptop"))
    team = new_store(f"s3://{bucket(seaweed)}/vfs")
    src = write(tmp_path / "src", {f"f{i}": os.urandom(50_000) for i in range(20)})
    v1 = commit(laptop, src, "ds", "--tag", "v1", "-m", "first")
    write(src, {"f0": os.urandom(50_000), "new": b"n" * 1000})
    v2 = commit(laptop, src, "ds", "-m", "second")

    pushed = vfs_json("--store", laptop, "push", "ds@v1", "--to", team)
    assert pushed["ref"] == "tags/v1" and pushed["commit"] == v1 and pushed["old"] is None
    assert pushed["by_kind"]["packs"] >= 10  # 1 MB in 64 KiB packs
    assert pushed["by_kind"]["commits"] == 1
    assert ref(team, "ds", "v1", TAGS) == bytes.fromhex(v1)
    assert ref(team, "ds", "main") is None  # a tag was pushed, not the branch

    # The branch: only what v2 adds is sent, v1's objects are found in the listing.
    before = keys(team)
    main = vfs_json("--store", laptop, "push", "ds", "--to", team)
    assert main["commit"] == v2 and not main["up_to_date"]
    assert main["already_present"] > 0
    assert main["by_kind"]["commits"] == 1  # v2 only: v1 is there
    sent = set(keys(team)) - set(before)
    assert len(sent) == main["objects"]
    assert ref(team, "ds", "main") == bytes.fromhex(v2)
    again = vfs_json("--store", laptop, "push", "ds", "--to", team)
    assert again["up_to_date"] and again["objects"] == 0
    verified(team)

    other = new_store(str(tmp_path / "other"))
    p = vfs("--store", other, "pull", "ds@main", "--from", team)
    assert f"ds@main new branch at {v2[:12]}" in p.stderr
    assert ref(other, "ds", "main") == bytes.fromhex(v2)
    log = vfs_json("--store", other, "log", "ds")
    assert [d["id"] for d in log] == [v2, v1]  # the history came along
    assert ref(other, "ds", "v1", TAGS) is None  # a branch was pulled, not its tags
    tagged = vfs_json("--store", other, "pull", "ds", "--from", team, "--tags")
    assert tagged["tags"] == ["v1"] and tagged["objects"] == 0
    assert ref(other, "ds", "v1", TAGS) == bytes.fromhex(v1)
    verified(other)
    got = tmp_path / "got"
    vfs("--store", other, "get", "ds@main", "-o", str(got))
    assert (got / "new").read_bytes() == b"n" * 1000


def test_a_branch_that_moved_on_both_sides_is_refused(tmp_path: Path) -> None:
    a = new_store(str(tmp_path / "a"))
    b = new_store(str(tmp_path / "b"))
    src = write(tmp_path / "src", {"f": os.urandom(100_000)})
    base = commit(a, src, "ds")
    vfs("--store", a, "push", "ds", "--to", b)
    ours = commit(a, write(src, {"ours": b"1"}), "ds")
    theirs = commit(b, write(tmp_path / "src2", {"theirs": os.urandom(100_000)}), "ds")
    before_b = every_key(b)

    p = vfs("--store", a, "push", "ds", "--to", b, check=False)
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1, p.stderr  # one line
    assert "push rejected" in p.stderr and "both sides have new commits" in p.stderr
    # the recipe names the other store as it was typed
    assert f"vfs pull ds@main --from {b} --as-branch theirs" in p.stderr
    assert ref(b, "ds", "main") == bytes.fromhex(theirs)
    assert every_key(b) == before_b  # refused before anything was sent

    p = vfs("--store", a, "pull", "ds", "--from", b, check=False)
    assert p.returncode == 1 and "pull rejected" in p.stderr
    assert ref(a, "ds", "main") == bytes.fromhex(ours)

    # What the message says to do works: theirs under a branch, combine, push as main.
    vfs("--store", a, "pull", "ds@main", "--from", b, "--as-branch", "theirs")
    combined = write(tmp_path / "combined", {"f": b"", "ours": b"1", "theirs": b"2"})
    merged = commit(a, combined, "ds", "--branch", "theirs")
    vfs("--store", a, "push", "ds@theirs", "--to", b, "--as-branch", "main")
    assert ref(b, "ds", "main") == bytes.fromhex(merged)
    log = [d["id"] for d in vfs_json("--store", b, "log", "ds")]
    assert log == [merged, theirs, base]
    # A tag never moves either.
    vfs("--store", a, "tag", "ds@main", "t")
    vfs("--store", b, "tag", "ds@main", "t")
    p = vfs("--store", a, "push", "ds@t", "--to", b, check=False)
    assert p.returncode == 1 and "tags never move" in p.stderr
    verified(b)


@pytest.mark.s3
def test_import_records_its_source_and_update_follows_it(
    seaweed: SeaweedServer, tmp_path: Path
) -> None:
    registry = new_store(f"s3://{bucket(seaweed)}/registry")
    here = new_store(str(tmp_path / "here"))
    src = write(tmp_path / "src", {f"img{i}": os.urandom(30_000) for i in range(10)})
    v3 = commit(registry, src, "imagenet", "--tag", "v3", "-m", "labels fixed")

    res = vfs_json("--store", here, "import", "imagenet@main", "--from", registry, "--as", "inet")
    assert res["dataset"] == "inet" and not res["up_to_date"]
    assert res["imported_from"] == {
        "store": registry,
        "dataset": "imagenet",
        "ref": "main",
        "commit": v3,
    }
    assert res["by_kind"]["commits"] == 0  # the source's history is not copied
    first = res["commit"]

    log = vfs("--store", here, "log", "inet").stdout
    assert f"Source: imported from imagenet@main (commit {v3[:12]}) at {registry}" in log
    show = vfs("--store", here, "show", "inet").stdout
    assert show.splitlines()[1] == f"imported from imagenet@main (commit {v3[:12]}) at {registry}"
    doc = vfs_json("--store", here, "show", "inet")
    assert doc["meta"]["vfs.source.commit"] == v3 and doc["imported_from"]["ref"] == "main"
    # Same tree, so the same content: the files read back.
    got = tmp_path / "got"
    vfs("--store", here, "get", "inet", "-o", str(got))
    assert (got / "img3").read_bytes() == (src / "img3").read_bytes()
    verified(here)

    up = vfs("--store", here, "update", "inet")
    assert "update: inet is up to date" in up.stderr
    assert ref(here, "inet", "main") == bytes.fromhex(first)

    write(src, {"img10": os.urandom(30_000)})
    v4 = commit(registry, src, "imagenet", "-m", "one more")
    before = keys(here)
    up2 = vfs_json("--store", here, "update", "inet")
    assert not up2["up_to_date"] and up2["imported_from"]["commit"] == v4
    assert 0 < up2["objects"] < len(before)  # only what v4 adds
    log2 = vfs_json("--store", here, "log", "inet")
    assert [d["id"] for d in log2] == [up2["commit"], first]
    assert log2[0]["parents"] == [first]
    verified(here)

    # A dataset that was not imported is not overwritten by one.
    mine = commit(here, write(tmp_path / "mine", {"x": b"x"}), "imagenet")
    p = vfs("--store", here, "import", "imagenet@v3", "--from", registry, check=False)
    assert p.returncode == 1 and "was not imported" in p.stderr
    assert ref(here, "imagenet", "main") == bytes.fromhex(mine)
    p = vfs("--store", here, "update", "imagenet", check=False)
    assert p.returncode == 1 and "was not imported" in p.stderr  # README: exit codes


def test_an_imported_model_still_names_the_dataset_version_it_was_trained_on(
    tmp_path: Path,
) -> None:
    registry = new_store(str(tmp_path / "registry"))
    data = commit(
        registry, write(tmp_path / "d", {"a": os.urandom(10_000)}), "digits", "--tag", "v1"
    )
    weights = write(tmp_path / "w", {"model.pt": os.urandom(20_000)})
    model = commit(registry, weights, "resnet", "--tag", "v1", "--input", "digits@v1")

    team = new_store(str(tmp_path / "team"))
    # REMOTE:DATASET@REF, the remote part opened as --store would open it (here the
    # directory "registry" in the working directory), and recorded by its name.
    out = vfs("--store", team, "import", "registry:resnet@v1", cwd=tmp_path).stderr
    assert f"imported from registry:resnet@v1 (commit {model[:12]})" in out
    doc = vfs_json("--store", team, "show", "resnet")
    assert doc["meta"]["vfs.input.0"] == f"digits@{data}"
    assert doc["meta"]["vfs.input.0.store"] == Store.open(registry).url
    assert doc["imported_from"]["commit"] == model
    assert doc["imported_from"]["remote"] == "registry"
    lineage = vfs_json("--store", team, "show", "resnet", "--lineage")
    # ... and the lineage reads the dataset in the registry, where it lives.
    [dataset] = lineage["inputs"]
    assert (dataset["id"], dataset["tags"], dataset.get("error")) == (data, ["v1"], None)
    assert dataset["store"] == Store.open(registry).url


@pytest.mark.s3
def test_read_only_credentials_fail_before_anything_is_uploaded(
    seaweed: SeaweedServer, tmp_path: Path
) -> None:
    laptop = new_store(str(tmp_path / "laptop"))
    team = new_store(f"s3://{bucket(seaweed)}/vfs")
    commit(laptop, write(tmp_path / "src", {"f": os.urandom(200_000)}), "ds")
    before = every_key(team)
    p = vfs(
        "--store", laptop, "push", "ds", "--to", team, env=seaweed.env(read_only=True), check=False
    )
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1, p.stderr
    assert f"cannot write to {team}" in p.stderr and "access denied" in p.stderr
    assert "nothing was uploaded" in p.stderr
    assert every_key(team) == before
    # Reading with them works: a pull from the team bucket into the laptop.
    vfs("--store", laptop, "push", "ds", "--to", team)
    other = new_store(str(tmp_path / "other"))
    vfs("--store", other, "pull", "ds", "--from", team, env=seaweed.env(read_only=True))


def test_bad_input_gets_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    a = new_store(str(tmp_path / "a"))
    b = new_store(str(tmp_path / "b"))
    commit(a, write(tmp_path / "src", {"f": b"x" * 1000}), "ds")
    cases = [
        (["--store", b, "pull", "nope", "--from", a], "no dataset 'nope'"),
        (["--store", a, "push", "ds", "--to", str(tmp_path / "absent")], "no vfs store"),
        (["--store", b, "import", "ds@v9", "--from", a], "has no branch, tag or commit 'v9'"),
        (["--store", a, "push", "ds", "--to", "s3://nowhere/x"], "cannot reach S3 endpoint"),
    ]
    env = {
        "VFS_S3_ENDPOINT": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
    }
    for argv, message in cases:
        p = vfs(*argv, env=env, check=False)
        assert p.returncode == 1, (argv, p.stderr)
        assert message in p.stderr and p.stderr.count("\n") == 1, (argv, p.stderr)
    p = vfs(
        "--store",
        a,
        "push",
        str("ds@" + (ref(a, "ds", "main") or b"").hex()[:12]),
        "--to",
        b,
        check=False,
    )
    assert p.returncode == 2 and "--as-branch" in p.stderr


def test_kill_9_during_push_then_a_rerun_sends_only_the_rest(tmp_path: Path) -> None:
    laptop = new_store(str(tmp_path / "laptop"))
    team = new_store(str(tmp_path / "team"))
    src = write(tmp_path / "src", {f"f{i:02}": os.urandom(60_000) for i in range(40)})
    commit(laptop, src, "ds")
    total = len(keys(laptop))

    # Every pack upload to the team store waits a little: the push is slow for sure.
    control = FaultControl(tmp_path / "faults")
    control.set(Fault("latency", ops=("put",), key="packs/", seconds=0.2), record=False)
    p = subprocess.Popen(
        [sys.executable, "-m", "vfs", "--store", laptop, "push", "ds", "--to", team, "-j", "2"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "VFS_FAULTS": str(control.dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    while sum(k.startswith("index/") for k in keys(team)) < 3:
        assert p.poll() is None, p.communicate()
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    partial = keys(team)
    assert 0 < len(partial) < total
    assert ref(team, "ds", "main") is None  # the ref moves last
    for k in partial:  # an index is written only after its pack
        if k.startswith("index/"):
            assert "packs/" + k[len("index/") :] in partial

    control.clear(record=False)
    rerun = vfs_json("--store", laptop, "push", "ds", "--to", team)
    assert rerun["already_present"] >= 6  # at least the three packs and their indexes
    assert rerun["objects"] + rerun["already_present"] == total
    assert ref(team, "ds", "main") == ref(laptop, "ds", "main")
    verified(team)


@pytest.mark.s3
def test_server_side_copy_between_two_buckets(seaweed: SeaweedServer, tmp_path: Path) -> None:
    laptop = new_store(str(tmp_path / "laptop"))
    team = new_store(f"s3://{bucket(seaweed)}/team")
    registry = new_store(f"s3://{bucket(seaweed)}/registry")
    commit(laptop, write(tmp_path / "src", {f"f{i}": os.urandom(40_000) for i in range(10)}), "ds")
    vfs("--store", laptop, "push", "ds", "--to", team)

    res = vfs_json("--store", team, "push", "ds", "--to", registry)
    assert res["objects"] > 0
    assert res["server_side_objects"] == res["objects"]
    assert res["server_side_bytes"] == res["bytes"] > 400_000
    assert res["client_bytes"] == 0  # no byte went through this process
    verified(registry)
    assert keys(registry) == keys(team)


def test_a_damaged_pack_is_not_pushed(tmp_path: Path) -> None:
    """Bytes that pass through a push are checked against their ids: a damaged pack
    stops it with the key named, and no ref moves in the other store (a backup must
    not receive the damage)."""
    a = new_store(str(tmp_path / "a"))
    b = new_store(str(tmp_path / "b"))
    commit(a, write(tmp_path / "src", {"f": os.urandom(100_000)}), "ds")
    store = Store.open(a)
    try:
        key = next(k for k in store.backend.list("packs/"))
        data = bytearray(store.backend.get(key))
        data[len(data) // 3] ^= 0xFF
        store.backend.put(key, bytes(data))
    finally:
        store.close()
    p = vfs("--store", a, "push", "ds", "--to", b, check=False)
    assert p.returncode == 1 and f"{key} (in the source store" in p.stderr, p.stderr
    assert "do not match its id" in p.stderr
    assert ref(b, "ds", "main") is None and key not in every_key(b)
