"""vfs.toml and its layers (vfs/config.py), through `vfs config` as a user runs it: a
subprocess in a project directory, with HOME and XDG_CONFIG_HOME of its own so that
the real user's config is never read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vfs import config
from vfs.errors import UsageError


class Project:
    """A project directory and a home of its own, and `vfs` run in them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = tmp / "proj"
        self.root.mkdir(parents=True, exist_ok=True)
        home = tmp / "home"
        self.user_file = home / ".config" / "vfs" / "config.toml"
        self.env = {
            **os.environ,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / "data"),
            "VFS_CACHE_DIR": str(tmp / "cache"),
            "VFS_NO_PROGRESS": "1",
            # Nothing above tmp is looked at for a vfs.toml.
            config.CEILING_ENV: str(tmp.parent),
        }
        for name in config.ENV:
            self.env.pop(name, None)

    def run(
        self, *args: str, cwd: Path | None = None, check: bool = True, **env: str
    ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [sys.executable, "-m", "vfs", *args],
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
            env={**self.env, **env},
            timeout=120,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"vfs {' '.join(args)} exited {p.returncode}: {p.stderr}")
        return p

    def fails(self, *args: str, cwd: Path | None = None, **env: str) -> str:
        """The one line of a usage error (exit 2)."""
        p = self.run(*args, cwd=cwd, check=False, **env)
        assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
        return lines[0]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def _origins(project: Project, *args: str, cwd: Path | None = None) -> dict[str, tuple[str, str]]:
    out = project.run("config", "list", "--show-origin", *args, cwd=cwd).stdout
    rows = {}
    for line in out.splitlines():
        origin, _, kv = line.partition("\t")
        key, _, value = kv.partition("=")
        rows[key] = (value, origin)
    return rows


def test_layers_override_in_order_and_say_where_each_value_comes_from(project: Project) -> None:
    user = str(project.user_file)
    proj = str(project.root / "vfs.toml")
    local = str(project.root / "vfs.local.toml")
    project.run("config", "set", "--user", "core.store", "s3://user-bucket/vfs")
    project.run("config", "set", "--user", "core.remote", "team")
    assert _origins(project)["core.store"] == ("s3://user-bucket/vfs", user)

    project.run("config", "set", "core.store", "s3://project-bucket/vfs")  # --project
    rows = _origins(project)
    assert rows["core.store"] == ("s3://project-bucket/vfs", proj)
    assert rows["core.remote"] == ("team", user)  # a key one layer does not set stays

    project.run("config", "set", "--local", "core.store", "s3://local-bucket/vfs")
    assert _origins(project)["core.store"] == ("s3://local-bucket/vfs", local)
    env_rows = _origins_env(project, "s3://env-bucket/vfs")
    assert env_rows["core.store"] == ("s3://env-bucket/vfs", "env VFS_STORE")

    # One file at a time; and get prints the value in effect.
    assert _origins(project, "--user")["core.store"][0] == "s3://user-bucket/vfs"
    assert "core.remote" not in _origins(project, "--project")
    assert project.run("config", "get", "core.store").stdout == "s3://local-bucket/vfs\n"
    assert project.run("config", "get", "--user", "core.store").stdout == ("s3://user-bucket/vfs\n")
    # unset takes the local value away: the project's shows again.
    project.run("config", "unset", "--local", "core.store")
    assert project.run("config", "get", "core.store").stdout == "s3://project-bucket/vfs\n"
    assert project.run("config", "unset", "--local", "core.store", check=False).returncode == 1
    assert project.run("config", "get", "core.cache_dir", check=False).returncode == 1


def _origins_env(project: Project, store: str) -> dict[str, tuple[str, str]]:
    out = project.run("config", "list", "--show-origin", VFS_STORE=store).stdout
    return {
        kv.partition("=")[0]: (kv.partition("=")[2], origin)
        for origin, _, kv in (line.partition("\t") for line in out.splitlines())
    }


def test_the_project_file_is_found_from_a_subdirectory_and_the_walk_stops_at_a_ceiling(
    project: Project,
) -> None:
    (project.root / "vfs.toml").write_text('[core]\nremote = "team"\n')
    deep = project.root / "a" / "b"
    deep.mkdir(parents=True)
    assert project.run("config", "get", "core.remote", cwd=deep).stdout == "team\n"
    assert config.project_dir(str(deep)) == str(project.root)
    # A ceiling at the project's own directory hides it, as GIT_CEILING_DIRECTORIES does.
    hidden = project.run(
        "config", "get", "core.remote", cwd=deep, check=False, VFS_CONFIG_CEILING=str(project.root)
    )
    assert hidden.returncode == 1 and hidden.stdout == ""


def test_a_relative_store_in_vfs_toml_is_relative_to_the_file_not_the_cwd(
    project: Project, tmp_path: Path
) -> None:
    (project.root / "vfs.toml").write_text('[core]\nstore = "./store"\n')
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello\n")
    sub = project.root / "sub" / "deeper"
    sub.mkdir(parents=True)
    project.run("commit", str(src), "ds", "--tag", "v1", cwd=sub)
    assert (project.root / "store").is_dir() and not (sub / "store").exists()
    assert project.run("cat", "ds@v1", "a.txt", cwd=project.root).stdout == "hello\n"
    # A path given at the shell is rewritten relative to the file it goes into.
    project.run("config", "set", "core.cache_dir", "../cache", cwd=project.root / "sub")
    assert 'cache_dir = "./cache"' in (project.root / "vfs.toml").read_text()
    s = config.load(str(sub))
    assert s.cache_dir() == str(project.root / "cache")
    assert s.store().url == str(project.root / "store")


def test_secrets_are_refused_with_where_they_belong(project: Project) -> None:
    for key in ("remote.team.aws_secret_access_key", "remote.team.password", "core.token"):
        line = project.fails("config", "set", key, "hunter2")
        assert "secret" in line and "~/.aws/credentials" in line and "hunter2" not in line
    assert not (project.root / "vfs.toml").exists()
    # A hand-written file is refused as it is read, naming the file.
    toml = project.root / "vfs.toml"
    toml.write_text('[remote.team]\nurl = "s3://bkt/p"\naws_secret_access_key = "hunter2"\n')
    line = project.fails("ls")
    assert str(toml) in line and "AWS_SECRET_ACCESS_KEY" in line and "hunter2" not in line
    # So are credentials inside a URL.
    toml.write_text('[remote.team]\nurl = "s3://bkt/p"\nendpoint_url = "http://me:pw@s3.lan"\n')
    assert "credentials in its URL" in project.fails("remote", "list")
    # The local file too: vfs reads no secrets from any file of its own.
    toml.unlink()
    (project.root / "vfs.local.toml").write_text('[remote.t]\nsecret = "x"\nurl = "s3://b"\n')
    assert "secret" in project.fails("config", "list")


def test_unknown_keys_are_refused_with_a_did_you_mean(project: Project) -> None:
    line = project.fails("config", "set", "core.stroe", "x")
    assert "did you mean core.store?" in line
    line = project.fails("config", "set", "remote.team.endpoint", "http://s3.lan")
    assert "did you mean remote.team.endpoint_url?" in line
    (project.root / "vfs.toml").write_text('[core]\ncache = "/tmp/x"\n')
    line = project.fails("config", "list")
    assert "vfs.toml" in line and "core.cache" in line and "core.cache_dir" in line
    (project.root / "vfs.toml").write_text("[core\nstore = 1\n")
    assert "not valid TOML" in project.fails("config", "list")


def test_one_cache_cap_for_every_process_that_uses_the_cache(project: Project) -> None:
    """core.cache_size (or $VFS_CACHE_SIZE) is the cap of every command, not only of
    the one given --cache-size: a prefetch no longer grows the cache a mount holds
    small. A version larger than the cap is said to be, not quietly cut."""
    MiB = 1024 * 1024

    def cap(size: str = "") -> int:  # "": $VFS_CACHE_SIZE unset
        p = project.run("cache", "stats", "--json", VFS_CACHE_SIZE=size)
        return int(json.loads(p.stdout)["max_bytes"])

    assert cap() == 10 * 1024**3
    project.run("config", "set", "core.cache_size", "40M")
    assert cap() == 40 * MiB
    assert cap("30M") == 30 * MiB
    assert "not a size" in project.fails("config", "set", "core.cache_size", "lots")

    src = project.tmp / "src"
    src.mkdir()
    for i in range(3):
        (src / f"part{i}.bin").write_bytes(os.urandom(20 * MiB))
    project.run("--store", "./store", "commit", str(src), "ds")
    p = project.run("--store", "./store", "prefetch", "ds")
    assert "do not fit the cache's cap of 40.0 MiB" in p.stderr, p.stderr
    held = json.loads(project.run("cache", "stats", "--json").stdout)["bytes"]
    assert 0 < held <= 40 * MiB + 32 * MiB  # the cap, and a segment being written


def test_set_and_unset_keep_the_users_comments_and_layout(project: Project) -> None:
    toml = project.root / "vfs.toml"
    original = (
        "# Our team's vfs settings: keep this comment\n"
        "\n"
        "[core]\n"
        'remote = "team"   # the bucket everyone pushes to\n'
        "\n"
        "[remote.team]\n"
        "# the on-site S3\n"
        'url = "s3://team-bucket/vfs"\n'
    )
    toml.write_text(original)
    project.run("config", "set", "remote.team.endpoint_url", "http://s3.lan:8333")
    project.run("config", "set", "core.store", "team")
    text = toml.read_text()
    for kept in (
        "# Our team's vfs settings: keep this comment",
        'remote = "team"   # the bucket everyone pushes to',
        "# the on-site S3",
    ):
        assert kept in text
    assert config.load_file(str(toml)) == {
        "core.remote": "team",
        "core.store": "team",
        "remote.team.url": "s3://team-bucket/vfs",
        "remote.team.endpoint_url": "http://s3.lan:8333",
    }
    project.run("config", "unset", "remote.team.endpoint_url")
    project.run("config", "unset", "core.store")
    assert toml.read_text() == original


def test_settings_api_for_other_verbs(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", project.env["XDG_CONFIG_HOME"])
    for name in config.ENV:
        monkeypatch.delenv(name, raising=False)
    (project.root / "vfs.toml").write_text(
        '[core]\nremote = "team"\n\n[remote.team]\nurl = "s3://bkt/p"\n'
        'endpoint_url = "http://127.0.0.1:9"\n\n[remote.shelf]\nurl = "../shelf"\n'
    )
    s = config.load(str(project.root))
    assert s.default_remote() == config.Remote(
        "team", "s3://bkt/p", "http://127.0.0.1:9", str(project.root / "vfs.toml")
    )
    assert s.remote("shelf").url == str(project.tmp / "shelf")
    with pytest.raises(UsageError, match=r"did you mean team\?.*the remotes are shelf, team"):
        s.remote("tema")
    assert s.store("team") == config.StoreTarget(
        "s3://bkt/p", "http://127.0.0.1:9", "team", "--store"
    )
    assert config.split_remote("team:ds@v1") == ("team", "ds@v1")
    (project.root / "vfs.toml").write_text('[remote.team]\nurl = "s3://bkt/p"\n')
    with pytest.raises(UsageError, match="no default remote"):
        config.load(str(project.root)).default_remote()
