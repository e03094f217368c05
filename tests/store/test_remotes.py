"""Remotes (vfs remote, --store NAME) and REMOTE:DATASET@REF addressing, as a user
runs them: subprocesses in a project directory with a home of their own, on a local
store and a real SeaweedFS whose endpoint only the remote's config gives."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.store.test_config import Project
from tests.support.mounting import fuse_usable
from vfs import lock
from vfs.mount.control import is_mounted
from vfs.testing.seaweed import SeaweedServer

# What makes boto3 find the test server without being told: the remote's
# endpoint_url must be the only way in.
_ENDPOINT_VARS = ("VFS_S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_remote_add_list_remove(project: Project) -> None:
    toml = project.root / "vfs.toml"
    out = project.run("remote", "add", "shelf", "../shelf")
    assert "not checked for reachability" in out.stderr  # nothing there yet, and that is fine
    project.run(
        "remote", "add", "team", "s3://team-bucket/vfs", "--endpoint-url", "http://s3.lan:8333",
        "--default",
    )  # fmt: skip
    project.run("remote", "add", "mine", str(project.tmp / "mine"), "--user")
    assert 'url = "../shelf"' in toml.read_text()  # relative to the file, for every clone
    docs = json.loads(project.run("remote", "list", "--json").stdout)
    assert docs == [
        {
            "name": "mine",
            "url": str(project.tmp / "mine"),
            "endpoint_url": None,
            "default": False,
            "origin": str(project.user_file),
        },
        {
            "name": "shelf",
            "url": str(project.tmp / "shelf"),
            "endpoint_url": None,
            "default": False,
            "origin": str(toml),
        },
        {
            "name": "team",
            "url": "s3://team-bucket/vfs",
            "endpoint_url": "http://s3.lan:8333",
            "default": True,
            "origin": str(toml),
        },
    ]
    human = project.run("remote", "list").stdout
    assert "* team   s3://team-bucket/vfs (endpoint http://s3.lan:8333)" in human

    assert "already exists" in project.fails("remote", "add", "shelf", "/elsewhere")
    assert "invalid remote name" in project.fails("remote", "add", "a/b", "s3://b")
    assert "unsupported store URL" in project.fails("remote", "add", "ftp", "ftp://host/x")
    assert "'Bad_Bucket' is not an S3 bucket name" in project.fails(
        "remote", "add", "bad", "s3://Bad_Bucket/vfs"
    )
    assert "s3:// stores only" in project.fails(
        "remote", "add", "x", "./x", "--endpoint-url", "http://s3.lan"
    )
    # --check probes first, and adds nothing when no store answers.
    p = project.run("remote", "add", "ghost", "../ghost", "--check", check=False)
    assert p.returncode == 1 and "no vfs store at" in p.stderr
    assert "ghost" not in toml.read_text()
    # A refused endpoint writes nothing either, not even the URL before it.
    for bad in ("localhost:8333", "http://user:secret@h:1"):
        project.fails("remote", "add", "bad", "s3://bkt/vfs", "--endpoint-url", bad)
        assert "bad" not in toml.read_text()

    project.run("remote", "remove", "team")
    assert "team" not in toml.read_text()  # core.remote named it: gone with it
    project.run("remote", "remove", "mine")
    assert [d["name"] for d in json.loads(project.run("remote", "list", "--json").stdout)] == [
        "shelf"
    ]
    assert "did you mean shelf?" in project.fails("remote", "remove", "shelv")


def test_store_flag_env_and_core_store_take_a_remote_name(project: Project) -> None:
    src = _tree(project.tmp / "src", {"a.txt": "from the shelf\n"})
    project.run("remote", "add", "shelf", "./shelf-store")
    project.run("--store", "shelf", "commit", str(src), "ds", "--tag", "v1")
    assert (project.root / "shelf-store").is_dir()
    # The default store (the XDG one) did not get it: it is not even there.
    assert "no vfs store at" in project.run("ls", check=False).stderr
    assert project.run("ls", "--store", "shelf").stdout.startswith("ds ")
    assert project.run("ls", VFS_STORE="shelf").stdout.startswith("ds ")
    project.run("config", "set", "core.store", "shelf")
    assert project.run("cat", "ds@v1", "a.txt").stdout == "from the shelf\n"
    # A directory of the remote's name: the remote wins, with a warning; ./NAME is the
    # directory.
    (project.root / "shelf").mkdir()
    p = project.run("ls", "--store", "shelf")
    assert p.stdout.startswith("ds ") and "./shelf for the directory" in p.stderr
    # A bare word that is no remote and no directory is refused, not created.
    line = project.fails("commit", str(src), "ds", "--store", "shelv")
    assert "unknown remote 'shelv' (did you mean shelf?)" in line and "./shelv" in line
    assert not (project.root / "shelv").exists()
    # ...except by `vfs init NAME`, which asks for a new store.
    project.run("init", "newstore")
    assert (project.root / "newstore" / "config").is_file()


def test_unknown_remote_is_one_line_exit_2(project: Project) -> None:
    project.run("remote", "add", "team", "s3://team-bucket/vfs")
    for args in (("ls", "taem:"), ("get", "taem:ds@v1", "-o", "out"), ("log", "taem:ds")):
        line = project.fails(*args)
        assert "unknown remote 'taem' (did you mean team?)" in line, line
        assert "the remotes are team" in line
    assert "drop --store" in project.fails("ls", "team:", "--store", "/x")
    # A verb that reads one store's refs says how to name the remote's store instead.
    project.run("init", "./here")
    for verb in (["verify", "team:ds@v1"], ["reflog", "team:ds"], ["tag", "team:ds", "v9"]):
        line = project.fails(*verb, "--store", "./here")
        assert line.endswith("does not take: name the store with --store team"), line


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_unreachable_remote_is_one_line_non_zero(project: Project) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    project.run("remote", "add", "dead", "s3://bucket/vfs", "--endpoint-url", endpoint)
    project.run("remote", "add", "gone", "../nothing-here")
    for spec, words in (("dead:", endpoint), ("gone:", "nothing-here")):
        p = project.run("ls", spec, check=False, VFS_S3_TIMEOUT="2")
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1 and words in lines[0], p.stderr
        assert "Traceback" not in p.stderr
    # A lock whose store cannot be reached is an error, not a ref that moved.
    lock.write(
        str(project.root / "vfs.lock"),
        {"ds": lock.Locked("ds", "main", "ab" * 32, "s3://bucket/vfs", "2026-11-28T00:00:00Z")},
    )
    p = project.run("lock", "--check", check=False, VFS_S3_TIMEOUT="2")
    assert p.returncode == 1 and p.stdout == "", (p.stdout, p.stderr)
    assert p.stderr.count("\n") == 1 and endpoint in p.stderr, p.stderr


@pytest.fixture
def s3_project(s3_url: str, seaweed: SeaweedServer, tmp_path: Path) -> Project:
    """A project whose remote `team` is the S3 store `s3_url` (with one dataset, v1
    and v2), reachable only through the remote's endpoint_url; the project's own
    default store is a local one holding another dataset."""
    p = Project(tmp_path)  # after seaweed: its identity is in os.environ now
    v1 = _tree(tmp_path / "v1", {"a.txt": "one\n", "sub/b.txt": "bee\n"})
    p.run("--store", s3_url, "commit", str(v1), "ds", "--tag", "v1")
    (v1 / "a.txt").write_text("two\n")
    p.run("--store", s3_url, "commit", str(v1), "ds", "--tag", "v2")
    for name in _ENDPOINT_VARS:
        p.env.pop(name, None)
    local = _tree(tmp_path / "local-src", {"mine.txt": "mine\n"})
    p.run("config", "set", "core.store", "./local-store")
    p.run("commit", str(local), "mine")
    # Without the remote's endpoint the bucket is out of reach (boto3 would ask AWS):
    # so what the tests do next reaches it through endpoint_url alone.
    assert p.run("ls", "--store", s3_url, check=False, VFS_S3_TIMEOUT="2").returncode != 0
    p.run("remote", "add", "team", s3_url, "--endpoint-url", seaweed.endpoint)
    return p


@pytest.mark.s3
def test_registry_verbs_read_a_remote_by_name_leaving_the_default_store(
    s3_project: Project, s3_url: str
) -> None:
    p = s3_project
    listing = p.run("ls", "team:").stdout
    assert listing.startswith("ds ") and "tags: v1, v2" in listing and "mine" not in listing
    docs = json.loads(p.run("ls", "team:", "--json").stdout)
    assert [d["dataset"] for d in docs] == ["ds"] and docs[0]["bytes"] > 0
    assert p.run("ls").stdout.startswith("mine ")  # the default store is untouched
    assert p.run("ls", "team:ds@v1", "-R").stdout.split() == ["a.txt", "sub/", "sub/b.txt"]
    assert p.run("cat", "team:ds@v1", "a.txt").stdout == "one\n"
    assert len(json.loads(p.run("log", "team:ds", "--json").stdout)) == 2
    assert "commit" in p.run("show", "team:ds@v1").stdout.lower()
    diff = json.loads(p.run("diff", "team:ds@v1", "@v2", "--json").stdout)
    assert "a.txt" in json.dumps(diff)
    assert "one store" in p.fails("diff", "team:ds@v1", "mine")

    out = p.tmp / "out"
    p.run("get", "team:ds@v1", "-o", str(out))
    assert (out / "a.txt").read_text() == "one\n" and (out / "sub" / "b.txt").read_text() == (
        "bee\n"
    )
    p.run("get", "team:ds@v2", "a.txt", "-o", str(p.tmp / "one.txt"))
    assert (p.tmp / "one.txt").read_text() == "two\n"
    # --store NAME is the same store; and so is its URL, which takes the remote's
    # endpoint (a vfs.lock records a store by URL).
    assert p.run("cat", "ds@v2", "a.txt", "--store", "team").stdout == "two\n"
    assert p.run("cat", "ds@v2", "a.txt", "--store", s3_url + "/").stdout == "two\n"
    p.run("lock", "ds@v1", "--store", "team")
    assert "no locked ref has moved" in p.run("lock", "--check").stderr  # at the endpoint
    p.run("get", "ds", "--locked", "-o", str(p.tmp / "locked"))
    assert (p.tmp / "locked" / "a.txt").read_text() == "one\n"
    # REMOTE: names the store in a lock too, as in get and mount
    p.run("lock", "team:ds@v2")
    p.run("get", "ds", "--locked", "-o", str(p.tmp / "locked2"))
    assert (p.tmp / "locked2" / "a.txt").read_text() == "two\n"


@pytest.mark.s3
@pytest.mark.fuse
@pytest.mark.skipif(not fuse_usable(), reason="needs /dev/fuse and fusermount3")
def test_mount_of_a_remote_version(s3_project: Project) -> None:
    p = s3_project
    mnt = p.tmp / "mnt"
    mnt.mkdir()
    try:
        p.run("mount", "team:ds@v1", str(mnt))
        assert (mnt / "a.txt").read_text() == "one\n"
        assert (mnt / "sub" / "b.txt").read_text() == "bee\n"
        info = json.loads(p.run("info", str(mnt), "--json").stdout)
        assert "ds" in json.dumps(info)
        p.run("umount", str(mnt))
    finally:
        if is_mounted(str(mnt)):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
    assert not os.listdir(mnt)
    assert "no dataset" in p.fails("mount", "team:", str(mnt))


@pytest.mark.s3
def test_api_opens_a_remote_version_and_its_pickle_keeps_the_endpoint(
    s3_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vfs

    p = s3_project
    for name in (*_ENDPOINT_VARS, "VFS_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", p.env["XDG_CONFIG_HOME"])
    monkeypatch.chdir(p.root)
    with vfs.open_version("team:ds@v1", cache_dir="") as v:
        assert v.read_text("a.txt") == "one\n"
        blob = pickle.dumps(v)
    with vfs.open_version("ds@v2", store="team", cache_dir="") as v2:
        assert v2.read_text("a.txt") == "two\n"
    # A worker elsewhere, with no config and no endpoint in its environment, reads it.
    worker = subprocess.run(
        [sys.executable, "-c", "import pickle, sys; print(pickle.load(sys.stdin.buffer)"
         ".read_text('a.txt'), end='')"],
        input=blob, capture_output=True, env=p.env, cwd="/", timeout=120,
    )  # fmt: skip
    assert worker.returncode == 0 and worker.stdout == b"one\n", worker.stderr


def test_push_and_pull_go_to_the_default_remote_when_none_is_named(project: Project) -> None:
    src = _tree(project.tmp / "src", {"a.txt": "pushed\n"})
    project.run("config", "set", "core.store", "./local")
    project.run("commit", str(src), "ds", "--tag", "v1")
    project.run("remote", "add", "shelf", "./shelf")
    assert "vfs remote add NAME URL --default" in project.fails("push", "ds@main")
    project.run("config", "set", "core.remote", "shelf")
    project.run("init", "./shelf")
    project.run("push", "ds@main")
    assert project.run("cat", "shelf:ds@main", "a.txt").stdout == "pushed\n"
    project.run("config", "set", "core.store", "./other")
    project.run("pull", "ds@main")
    assert project.run("cat", "ds@main", "a.txt").stdout == "pushed\n"


def test_remote_add_keeps_vfs_toml_readable(project: Project) -> None:
    # tomlkit glued a table added after [remote.NAME] to its last line: `url = ...`
    # then `[core]` on the next line
    project.run("remote", "add", "team", "s3://team-bucket/walk", "--default")
    project.run("remote", "add", "registry", "s3://registry/walk")
    project.run("config", "set", "core.cache_dir", "./cache")
    assert (project.root / "vfs.toml").read_text() == (
        '[remote.team]\nurl = "s3://team-bucket/walk"\n\n'
        '[remote.registry]\nurl = "s3://registry/walk"\n\n'
        '[core]\nremote = "team"\ncache_dir = "./cache"\n'
    )


def test_a_refused_push_names_the_remote_in_its_recipe(project: Project) -> None:
    # The commands a refusal suggests name the other store as the user does: the
    # default remote's name, not its URL.
    project.run("config", "set", "core.store", "./local")
    project.run("remote", "add", "shelf", "./shelf", "--default")
    project.run("init", "./shelf")
    project.run("commit", str(_tree(project.tmp / "a", {"f": "1"})), "ds")
    project.run("push", "ds")
    project.run("commit", str(_tree(project.tmp / "b", {"f": "2"})), "ds")
    project.run("--store", "shelf", "commit", str(_tree(project.tmp / "c", {"f": "3"})), "ds")
    p = project.run("push", "ds", check=False)
    assert p.returncode == 1, p.stderr
    err = p.stderr
    assert "vfs pull ds@main --from shelf --as-branch theirs" in err
    assert "vfs push ds@theirs --to shelf --as-branch main" in err
    p = project.run("pull", "ds", check=False)
    assert p.returncode == 1, p.stderr
    err = p.stderr
    assert "pull rejected" in err and "--from shelf --as-branch theirs" in err


@pytest.mark.s3
def test_lineage_reads_an_input_in_a_remote_at_its_endpoint(
    s3_project: Project, s3_url: str
) -> None:
    # An input recorded by URL (vfs.input.0.store) is read at the endpoint of the
    # remote with that URL, as every verb reads a store named by URL: commit --input
    # resolves it there, and show --lineage reads it there.
    p = s3_project
    model = _tree(p.tmp / "model", {"w.bin": "weights\n"})
    p.run("commit", str(model), "clf", "--input", f"{s3_url}::ds@v1", VFS_S3_TIMEOUT="5")
    doc = json.loads(p.run("show", "clf", "--lineage", "--json", VFS_S3_TIMEOUT="5").stdout)
    (node,) = doc["inputs"]
    assert node["store"] == s3_url and node["error"] is None, node
    assert node["tags"] == ["v1"]


@pytest.mark.s3
def test_a_url_in_a_remotes_bucket_takes_its_endpoint(s3_project: Project, s3_url: str) -> None:
    # s3://BUCKET/other beside the remote's s3://BUCKET/store is on the same server:
    # a mistyped prefix says "no vfs store", not "cannot reach s3.amazonaws.com".
    p = s3_project
    bucket = s3_url[len("s3://") :].partition("/")[0]
    typo = f"s3://{bucket}/stroe"
    out = p.run("push", "mine", "--to", typo, check=False, VFS_S3_TIMEOUT="5")
    assert out.returncode == 1 and f"no vfs store at {typo}" in out.stderr, out.stderr
    p.run("init", f"s3://{bucket}/scratch", VFS_S3_TIMEOUT="5")
    p.run("push", "mine", "--to", f"s3://{bucket}/scratch", VFS_S3_TIMEOUT="5")
    assert p.run("--store", f"s3://{bucket}/scratch", "cat", "mine", "mine.txt").stdout == "mine\n"
