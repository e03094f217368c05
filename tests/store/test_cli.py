"""The `vfs` command line, run as a user runs it (a subprocess), on both backends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.signals import hear_sigint
from tests.support.treegen import make_tree, snapshot_fs

MiB = 1024 * 1024


class Vfs:
    def __init__(self, store: str, cache: Path) -> None:
        self.env = {
            **os.environ,
            "VFS_STORE": store,
            "VFS_CACHE_DIR": str(cache),
            "VFS_NO_PROGRESS": "1",
        }

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [sys.executable, "-m", "vfs.cli", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"vfs {' '.join(args)} exited {p.returncode}: {p.stderr}")
        return p

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


@pytest.fixture
def vfs(store_url: str, tmp_path: Path) -> Vfs:
    return Vfs(store_url, tmp_path / "cache")


def test_commit_log_ls_cat_get_diff_rollback(vfs: Vfs, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    v1 = vfs.run("commit", str(src), "digits", "-m", "v1", "--tag", "v1").stdout.strip()
    assert len(v1) == 64
    (src / "with space.csv").write_text("a,b\n9,9\n")
    (src / "images" / "0003.png").unlink()
    (src / "images" / "new.png").write_bytes(b"\x89PNG new")
    v2 = vfs.run(
        "commit", str(src), "digits", "-m", "v2", "--tag", "v2", "--meta", "labels=coarse"
    ).stdout.strip()
    assert v2 != v1

    log = vfs.json("log", "digits")
    assert [c["id"] for c in log] == [v2, v1]
    assert log[0]["meta"]["labels"] == "coarse"
    assert "tag: v2" in log[0]["refs"] and "main" in log[0]["refs"]
    assert vfs.json("show", "digits@v1")["refs"] == ["tag: v1"]  # as log names them
    assert "Author:" in vfs.run("log", "digits@v1").stdout

    datasets = vfs.json("ls")
    assert [d["dataset"] for d in datasets] == ["digits"]
    assert set(datasets[0]["tags"]) == {"v1", "v2"}
    listing = vfs.run("ls", "digits@v1", "-l").stdout
    assert "with space.csv" in listing and "link-to-csv -> with space.csv" in listing
    entries = vfs.json("ls", "digits@v1", "images", "-R")
    assert len(entries) == 40
    assert vfs.run("cat", "digits@v1", "with space.csv").stdout == "a,b\n1,2\n"
    assert vfs.run("cat", "digits", "with space.csv").stdout == "a,b\n9,9\n"

    diff = vfs.json("diff", "digits@v1", "@v2")
    changes = {c["path"]: c["status"] for c in diff["changes"]}
    assert changes == {
        "images/0003.png": "removed",
        "images/new.png": "added",
        "with space.csv": "modified",
    }
    md = vfs.run("diff", "digits@v1", "digits@v2", "--format", "md").stdout
    assert "| added | 1 |" in md

    out = tmp_path / "out"
    vfs.run("get", "digits@v1", "-o", str(out))
    want = snapshot_fs(make_tree(tmp_path / "again"))
    got = snapshot_fs(out)
    assert {k: v[:4] for k, v in got.items()} == {k: v[:4] for k, v in want.items()}
    vfs.run("get", "digits@v1", "images/0001.png", "-o", str(tmp_path / "one.png"))
    assert (tmp_path / "one.png").read_bytes() == (src / "images" / "0001.png").read_bytes()
    assert os.stat(tmp_path / "one.png").st_mode & 0o777 == 0o755

    rb = vfs.json("rollback", "digits@v1")
    assert rb["rollback_of"] == v1
    log = vfs.json("log", "digits")
    assert [c["id"] for c in log] == [rb["id"], v2, v1]
    # Again: main has v1's content already, so no empty commit is made.
    again = vfs.json("rollback", "digits@v1")
    assert again["unchanged"] and again["id"] == rb["id"] and again["dataset"] == "digits"
    assert len(vfs.json("log", "digits")) == 3
    assert vfs.run("cat", "digits", "with space.csv").stdout == "a,b\n1,2\n"
    assert vfs.json("diff", "digits@v1", "digits")["changes"] == []

    vfs.run("branch", "digits@v2", "relabel")
    assert set(vfs.json("branch", "digits")) == {"main", "relabel"}
    assert vfs.run("cat", "digits@relabel", "with space.csv").stdout == "a,b\n9,9\n"
    vfs.run("branch", "-d", "digits", "relabel")
    assert set(vfs.json("branch", "digits")) == {"main"}
    vfs.run("tag", "digits@main~1", "before-rollback")
    assert vfs.json("tag", "digits")["before-rollback"] == v2
    show = vfs.run("show", "digits@v1", "images/0001.png").stdout
    assert '"locations"' in show and '"pack"' in show


def test_diff_says_what_changed_in_every_format(vfs: Vfs, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("edit.txt", "touch.txt", "chmod.sh", "gone.txt"):
        (src / name).write_text(f"{name}\n" * 100)
    vfs.run("commit", str(src), "ds", "--tag", "v1")
    (src / "edit.txt").write_text("new words\n" * 300)  # 3,000 B, all new
    os.utime(src / "touch.txt", ns=(0, 1_000_000_000))
    (src / "chmod.sh").chmod(0o755)
    (src / "gone.txt").unlink()
    (src / "new.txt").write_text("n" * 500)
    vfs.run("commit", str(src), "ds", "--tag", "v2")

    text = vfs.run("diff", "ds@v1", "@v2").stdout.splitlines()
    assert text == [
        "M chmod.sh  (mode only)",
        "M edit.txt  (900 B -> 2.9 KiB, 2.9 KiB new)",
        "- gone.txt  (900 B)",
        "+ new.txt  (500 B)",
        "M touch.txt  (mtime only)",
    ], text
    doc = vfs.json("diff", "ds@v1", "@v2")
    fields = {c["path"]: c["fields"] for c in doc["changes"] if c["status"] == "modified"}
    assert fields == {
        "chmod.sh": ["mode"],
        "edit.txt": ["content", "mtime"],
        "touch.txt": ["mtime"],
    }
    stat = vfs.json("diff", "ds@v1", "@v2", "--stat")
    assert "changes" not in stat and stat["summary"] == doc["summary"]
    md = vfs.run("diff", "ds@v1", "@v2", "--format", "md").stdout
    assert "| added | 1 | 500 B |" in md
    assert "| modified | 3 | 2.9 KiB new content |" in md, md  # the added file not counted
    raw = subprocess.run(
        [sys.executable, "-m", "vfs.cli", "diff", "ds@v1", "@v2", "-z"],
        capture_output=True,
        env=vfs.env,
        timeout=60,
    ).stdout
    assert sorted(raw.split(b"\0")[:-1]) == [
        b"A\tnew.txt",
        b"D\tgone.txt",
        b"M\tchmod.sh",
        b"M\tedit.txt",
        b"M\ttouch.txt",
    ]


def test_usage_errors_exit_2_with_one_line(vfs: Vfs, tmp_path: Path) -> None:
    vfs.run("init")  # a store to read from: a reader of no store fails first, with exit 1
    cases = [
        ("commit", str(tmp_path), "../x"),
        ("commit", str(tmp_path), "a/b"),
        ("commit", str(tmp_path), "bad\x01name"),
        ("log", "ds@"),
        ("ls", "ds@a..b"),
        ("diff", "only-one"),
        ("nonsense",),
        ("commit", str(tmp_path), "ds", "--meta", "novalue"),
    ]
    for args in cases:
        p = vfs.run(*args, check=False)
        assert p.returncode == 2, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)
        assert "Traceback" not in p.stderr


def test_errors_name_what_is_wrong(vfs: Vfs, tmp_path: Path) -> None:
    vfs.run("init")  # without a store, every reader says that instead (test_store_errors.py)
    p = vfs.run("commit", str(tmp_path / "missing"), "ds", check=False)
    assert p.returncode == 1 and "missing" in p.stderr
    p = vfs.run("log", "nosuch", check=False)
    assert p.returncode == 1 and "no dataset 'nosuch'" in p.stderr
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    vfs.run("commit", str(tmp_path / "d"), "ds", "--tag", "v1")
    p = vfs.run("cat", "ds@v7", "f", check=False)
    assert p.returncode == 1 and "no branch, tag or commit 'v7'" in p.stderr
    p = vfs.run("cat", "ds", "nope.txt", check=False)
    assert p.returncode == 1 and "nope.txt" in p.stderr
    p = vfs.run("commit", str(tmp_path / "d"), "ds", "--tag", "v1", "--allow-empty", check=False)
    assert p.returncode == 1 and "never move" in p.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("y")
    p = vfs.run("get", "ds", "-o", str(tmp_path / "full"), check=False)
    assert p.returncode == 2 and "differs from the version; --force" in p.stderr


def test_unreachable_s3_endpoint_fails_within_seconds(tmp_path: Path) -> None:
    vfs = Vfs("s3://some-bucket/prefix", tmp_path / "cache")
    vfs.env.update(
        AWS_ACCESS_KEY_ID="AKIAEXAMPLE",
        AWS_SECRET_ACCESS_KEY="supersecretvalue",
        VFS_S3_ENDPOINT="http://127.0.0.1:9",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
    )
    (tmp_path / "d").mkdir()
    t0 = time.monotonic()
    p = vfs.run("commit", str(tmp_path / "d"), "ds", check=False, timeout=60)
    assert time.monotonic() - t0 < 20
    assert p.returncode == 1
    assert "cannot reach" in p.stderr and "supersecretvalue" not in p.stderr
    assert "Traceback" not in p.stderr


def test_a_silent_s3_endpoint_fails_a_command_within_about_15_seconds(tmp_path: Path) -> None:
    """An endpoint that accepts connections and never answers (here: a listening
    socket nobody accepts on; the kernel completes the handshake) took 150 s to fail
    (5 tries of 30 s). Small requests now give up after 3 tries of 5 s, naming the
    endpoint and the variable that raises the limit."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        vfs = Vfs("s3://some-bucket/prefix", tmp_path / "cache")
        vfs.env.update(
            AWS_ACCESS_KEY_ID="AKIAEXAMPLE",
            AWS_SECRET_ACCESS_KEY="supersecretvalue",
            VFS_S3_ENDPOINT=endpoint,
            AWS_ENDPOINT_URL=endpoint,
        )
        t0 = time.monotonic()
        p = vfs.run("ls", check=False, timeout=120)
        took = time.monotonic() - t0
        assert p.returncode == 1, p.stderr
        assert took < 25, took
        assert f"the S3 endpoint {endpoint} accepted a connection but did not answer" in p.stderr
        assert "VFS_S3_TIMEOUT=SECONDS" in p.stderr and len(p.stderr.splitlines()) == 1
        # The limit is the user's to set.
        vfs.env["VFS_S3_TIMEOUT"] = "1"
        t0 = time.monotonic()
        p = vfs.run("log", "ds", check=False, timeout=120)
        assert p.returncode == 1 and "waited 1 s per try" in p.stderr, p.stderr
        assert time.monotonic() - t0 < took
        vfs.env["VFS_S3_TIMEOUT"] = "soon"
        p = vfs.run("ls", check=False)
        assert p.returncode == 2 and "VFS_S3_TIMEOUT='soon'" in p.stderr, p.stderr


@pytest.mark.s3
def test_missing_bucket_is_named(seaweed, tmp_path: Path) -> None:
    vfs = Vfs("s3://no-such-bucket-here/x", tmp_path / "cache")
    for args in (("ls",), ("ls", "ds@v1")):  # the second reads through the cache
        p = vfs.run(*args, check=False)
        assert p.returncode == 1 and "bucket 'no-such-bucket-here' does not exist" in p.stderr
        assert "pin it first" not in p.stderr  # an answer, not an outage


def _index_count(store: str) -> int:
    return sum(
        1 for _ in Path(store, "index").rglob("*") if _.is_file() and not _.name.startswith(".")
    )


def test_interrupted_commit_moves_no_ref_and_resumes(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    vfs = Vfs(store, tmp_path / "cache")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"part{i}.bin").write_bytes(os.urandom(24 * MiB))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vfs.cli", "commit", str(src), "big"],
        env=vfs.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=hear_sigint,
    )
    deadline = time.monotonic() + 60
    while _index_count(store) < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "no ref was moved" in err
    assert len([line for line in err.splitlines() if line.startswith("vfs:")]) == 1, err
    assert not Path(store, "refs").exists() or not any(Path(store, "refs").rglob("main"))
    done_before = _index_count(store)
    assert done_before >= 1
    r = vfs.json("commit", str(src), "big")
    assert isinstance(r, dict)
    # The rerun uploads only what the interrupted one had not: the packs it
    # finished are found through their indexes and reused.
    assert r["bytes_uploaded"] <= 192 * MiB - done_before * 30 * MiB
    out = tmp_path / "out"
    vfs.run("get", "big", "-o", str(out))
    assert snapshot_fs(out) == snapshot_fs(src)


# What the verbs that only talk to a mount daemon (and --help) must not import: each
# costs tens of milliseconds at every `vfs switch` (docs/performance.md).
_HEAVY = ("trio", "boto3", "botocore", "lmdb", "pyfuse3", "zstandard", "blake3", "vfs.store")

# Runs `vfs --help`, `vfs switch` (against a stand-in daemon that answers one request),
# `vfs umount`, `vfs info` and the parent of `vfs mount` (up to its mountpoint check) in one
# process, and prints which heavy modules each left imported.
_PROBE = """
import contextlib, json, os, socket, sys, threading
from vfs.cli import main
from vfs.mount.control import control_path

HEAVY = json.loads(sys.argv[1])
mnt = sys.argv[2]
path = control_path(mnt)
os.makedirs(os.path.dirname(path), exist_ok=True)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(1)

def answer():
    conn, _ = server.accept()
    conn.recv(4096)
    reply = {"ok": True, "old": "ab" * 32, "new": "cd" * 32, "label": "ds@v2", "ms": 1.0}
    conn.sendall(json.dumps(reply).encode() + b"\\n")
    conn.close()

threading.Thread(target=answer, daemon=True).start()
out = {}
with contextlib.suppress(SystemExit), contextlib.redirect_stdout(sys.stderr):
    main(["--help"])
out["rc"] = [main(["switch", mnt, "v2"]), main(["umount", mnt]), main(["info", mnt])]
out["client"] = [m for m in HEAVY if m in sys.modules]
out["rc"].append(main(["mount", "ds@v1", os.path.join(mnt, "missing")]))
out["mount"] = [m for m in HEAVY if m in sys.modules]
os.unlink(path)
print(json.dumps(out))
"""


def test_switch_umount_and_help_import_no_heavy_module(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run"), "VFS_CACHE_DIR": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(_HEAVY), str(mnt)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert "ds@v2 (cdcdcdcdcdcd), was abababababab" in p.stderr
    # switched; not mounted; not on a vfs mount; no mountpoint
    assert out["rc"] == [0, 2, 2, 2], p.stderr
    assert "is not on a vfs mount" in p.stderr
    assert out["client"] == []
    # The parent of `vfs mount` starts the daemon (python -m vfs.mount.daemon) without
    # importing the daemon's modules.
    assert out["mount"] == []


def test_a_pin_over_the_cap_says_so_once_in_words(vfs: Vfs, tmp_path: Path) -> None:
    """Pins win over the cap. The cache's own mid-way warning gave raw bytes and the
    pin then said only "pinned"; the pin now ends with the sizes and what to do."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(os.urandom(3 * MiB))
    vfs.run("commit", str(src), "model", "--tag", "v1")
    vfs.env["VFS_CACHE_SIZE"] = "1M"
    err = vfs.run("cache", "pin", "model@v1").stderr
    assert "remain over" not in err, err
    assert "the pins hold 3.0 MiB, over the cache's cap of 1.0 MiB" in err, err
    assert "pinned model@v1" in err


def test_a_commit_of_no_change_says_what_it_did_not_record(vfs: Vfs, tmp_path: Path) -> None:
    """A retrain that writes the same weights is no new commit; its -m, --meta,
    --input and --access-record were dropped without a word (the tag was made)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"weights")
    first = vfs.run("commit", str(src), "model").stdout.strip()
    err = vfs.run("commit", str(src), "model", "-m", "again", "--meta", "a=b", "--tag", "t").stderr
    assert f"tagged {first[:12]} t" in err, err
    assert "-m, --meta not recorded: no commit was made" in err and "--allow-empty" in err
    assert vfs.run("commit", str(src), "model").stderr.count("warning") == 0


def test_closed_stdout_or_stderr_neither_crashes_nor_misdirects(vfs: Vfs, tmp_path: Path) -> None:
    """With stdout closed a commit happened and then exited 1 with a traceback; with
    stderr closed it did nothing and exited 1, and an error line went to stdout."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")

    def closed(redirect: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "vfs.cli", *args]
        return subprocess.run(
            ["sh", "-c", f'exec "$@" {redirect}', "sh", *argv],
            capture_output=True,
            text=True,
            env=vfs.env,
            timeout=120,
        )

    p = closed(">&-", "commit", str(src), "ds")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    p = closed("2>&-", "commit", str(src), "other")
    assert p.returncode == 0, p.stdout
    assert {d["dataset"] for d in vfs.json("ls")} == {"ds", "other"}
    p = closed("2>&-", "ls", "nosuch")
    assert p.returncode == 1 and p.stdout == ""  # the error is not written on stdout
