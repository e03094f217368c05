"""Hostile input (issue 5, item 7): forged names, `vfs get`, the command line.

Forged versions (tests/support/forge.py) carry invalid names, a name twice across two pages
and symlinks that point out: readers refuse them, the mount answers EIO and keeps
serving, and `vfs get` never writes outside its target. Any command line exits 0, 1
or 2, with one line on error.

Every store here is a local one; only the EIO test mounts (FUSE), the rest read
through the Python API, the core in process and the CLI.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import forge
from tests.support.core import SHORT_FETCH, listing, run_core
from tests.support.mounting import Mounts, fuse_usable
from vfs import format as fmt
from vfs import tree
from vfs.cli import main as cli_main
from vfs.errors import CorruptObject
from vfs.mount.core import FsCore
from vfs.mount.namespace import ROOT
from vfs.reader import Version
from vfs.store import Store

# --- names: refused at commit and at read ---------------------------------------------------


def test_duplicate_or_unsorted_names_are_refused_at_commit() -> None:
    sink = forge_sink()
    e = fmt.Entry(b"same", fmt.FILE, 0o644, 0, 0)
    for entries in ([e, e], [e, fmt.Entry(b"b", fmt.FILE, 0o644, 0, 0)]):
        with pytest.raises(CorruptObject, match="sorted or duplicated"):
            tree.write_dir(entries, sink, lambda c: fmt.Location(b"\0" * 32, 0, 0, 0))
    for bad in (b"..", b".", b"a/b", b"a\0b", b"x" * 256):
        with pytest.raises(CorruptObject):
            tree.write_dir([fmt.Entry(bad, fmt.FILE, 0o644, 0, 0)], sink, lambda c: None)  # type: ignore[arg-type, return-value]


def forge_sink() -> Any:
    class Sink:
        def put_page(self, canonical: bytes) -> bytes:
            return fmt.object_id(canonical)

        def put_locs(self, leaf_id: bytes, locs: dict[bytes, fmt.Location]) -> None:
            pass

    return Sink()


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """A local store with forged versions: `evil@dups` has a name twice across two
    pages (a symlink out, then a directory with a file below it), `evil@names` a page
    with each invalid name, `evil@links` symlinks pointing out of any target."""
    url = str(tmp_path / "store")
    store = Store.open(url)
    payload = b"must never land outside\n"
    locs = forge.upload(store, tmp_path / "spool", [payload])
    outside = str(tmp_path / "outside")
    inner = forge.leaf(store, [forge.entry(b"pwned", data=payload)], locs)
    l1 = forge.leaf(
        store,
        [
            forge.entry(b"a.txt", data=payload),
            forge.entry(b"x", fmt.SYMLINK, target=outside.encode()),
        ],
        locs,
    )
    l2 = forge.leaf(
        store,
        [forge.entry(b"x", fmt.DIR, 0o755, tree=inner), forge.entry(b"z", data=payload)],
        locs,
    )
    dups = forge.index(store, [(b"a.txt", l1, 2), (b"x", l2, 2)])
    top = forge.leaf(
        store,
        [forge.entry(b"d", fmt.DIR, 0o755, tree=dups), forge.entry(b"ok.txt", data=payload)],
        locs,
    )
    forge.version(store, "evil", "dups", top)
    names = {}
    for bad in (b"..", b".", b"a/b", b"nul\0", b"x" * 256):
        page = forge.leaf(store, [forge.entry(bad, data=payload)], locs)
        names[bad] = forge.leaf(
            store,
            [forge.entry(b"d", fmt.DIR, 0o755, tree=page), forge.entry(b"ok.txt", data=payload)],
            locs,
        )
    forge.version(store, "evil", "names", names[b".."])
    links = forge.leaf(
        store,
        [
            forge.entry(b"abs", fmt.SYMLINK, target=outside.encode()),
            forge.entry(b"file.txt", data=payload),
            forge.entry(b"up", fmt.SYMLINK, target=b"../../../../outside"),
        ],
        locs,
    )
    forge.version(store, "evil", "links", links)
    store.close()
    yield (
        url,
        {"payload": payload, "outside": outside.encode(), **{k.hex(): v for k, v in names.items()}},
    )


def test_forged_names_and_duplicates_are_refused_at_read(
    hostile: tuple[str, dict[str, bytes]],
) -> None:
    url, forged = hostile
    store = Store.open(url)
    try:
        dups = Version(store, "evil", store.read_ref("evil", "tags", "dups").commit)  # type: ignore[union-attr]
        with pytest.raises(CorruptObject, match="overlaps"):
            list(dups.walk())
        # A lookup reads only the page the name sorts into, so it finds one "x" and
        # no duplicate; listing the directory, which would show both, is refused.
        found = dups.stat("d/x")
        assert found is not None and found.entry.is_dir
        assert dups.read_file("ok.txt") == forged["payload"]
        for bad in (b"..", b".", b"a/b", b"nul\0", b"x" * 256):
            page = store.get_page(forged[bad.hex()])  # the valid page above the bad one
            sub = next(e for e in page.entries() if e.is_dir)
            with pytest.raises(CorruptObject):
                store.get_page(sub.tree)
    finally:
        store.close()

    async def body(core: FsCore) -> None:
        d = await core.lookup(ROOT, b"d")
        with pytest.raises(CorruptObject, match="overlaps"):
            await listing(core, d.ino)
        assert (await core.lookup(d.ino, b"x")).ino  # one "x", as for dups.stat above

    s = Store.open(url)
    try:
        run_core(s, "evil@dups", body, fetch=SHORT_FETCH)
    finally:
        s.close()


@pytest.mark.fuse
@pytest.mark.skipif(not fuse_usable(), reason="needs /dev/fuse and fusermount3")
def test_a_forged_tree_gives_eio_through_the_mount_not_a_crash(
    hostile: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    url, forged = hostile
    m = Mounts(url, tmp_path)
    try:
        mnt = m.mount("evil@dups", "dups")
        with pytest.raises(OSError) as info:
            os.listdir(mnt / "d")
        assert info.value.errno == 5  # EIO
        assert (mnt / "ok.txt").read_bytes() == forged["payload"]  # the rest is served
        mnt = m.mount("evil@names", "names")
        with pytest.raises(OSError) as info:
            os.listdir(mnt / "d")
        assert info.value.errno == 5
        assert (mnt / "ok.txt").read_bytes() == forged["payload"]
        for p in m.mountpoints:
            assert os.path.ismount(p)
    finally:
        m.cleanup()
    assert not m.error_lines()


# --- `vfs get` writes only below its target -------------------------------------------------


def test_vfs_get_never_writes_outside_its_target(
    hostile: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    url, forged = hostile
    outside = Path(forged["outside"].decode())
    outside.mkdir()
    env = {**os.environ, "VFS_STORE": url, "VFS_CACHE_DIR": str(tmp_path / "cache")}

    def get(spec: str, *extra: str) -> subprocess.CompletedProcess[str]:
        out = tmp_path / f"out-{spec.replace('@', '-')}{'-'.join(extra)}".replace("/", "_")
        return subprocess.run(
            [sys.executable, "-m", "vfs.cli", "get", spec, *extra, "-o", str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    p = get("evil@links")
    assert p.returncode == 0, p.stderr
    out = tmp_path / "out-evil-links"
    assert os.readlink(out / "abs") == str(outside)  # stored as a link, never followed
    assert os.readlink(out / "up") == "../../../../outside"
    assert (out / "file.txt").read_bytes() == forged["payload"]
    for spec, extra in (("evil@dups", ()), ("evil@names", ()), ("evil@dups", ("d",))):
        p = get(spec, *extra)
        assert p.returncode == 1, (spec, extra, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    # One file found below the forged name lands below the target, as a file.
    p = get("evil@dups", "d/x/pwned")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out-evil-dupsd_x_pwned").read_bytes() == forged["payload"]
    assert list(outside.iterdir()) == [], "vfs get wrote through a symlink"


# --- the command line ------------------------------------------------------------------

_TOKENS = [
    "",
    "-",
    "--",
    "@",
    "ds",
    "ds@",
    "ds@v1",
    "ds@~",
    "ds@v1~x",
    "ds@tags/",
    "ds@heads/a/b",
    "../x",
    "a/b",
    "x" * 300,
    "\t",
    "é",
    "-j",
    "0",
    "-1",
    "nan",
    "inf",
    "1e999",
    "--jobs=0",
    "--jobs=-3",
    "--read-timeout=0",
    "--read-timeout=nan",
    "--cache-size=0",
    "--cache-size=-5",
    "--cache-size=10Q",
    "--to=abc",
    "--meta",
    "k",
    "=v",
    "-n",
    "-o",
    "--json",
    "--store",
    "s3://",
    "s3:///x",
    "file://host/x",
    "ftp://x",
    "--no-such-flag",
    "-vvvv",
    "--from-file",
    "/nonexistent/list",
    "--all",
    "--history",
    "-d",
    "--tag",
    "--branch",
    "--allow-empty",
]
_VERBS = [
    "commit",
    "log",
    "ls",
    "cat",
    "get",
    "diff",
    "tag",
    "branch",
    "show",
    "rollback",
    "verify",
    "mount",
    "switch",
    "umount",
    "prefetch",
    "cache",
    "cache stats",
    "cache prune",
    "cache pin",
    "cache unpin",
    "cache verify",
    "cache clear",
    "rm",
    "reflog",
    "completion",
    "gc",
    "init",
    "lock",
    "report",
    "nonsense",
]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(verb=st.sampled_from(_VERBS), tokens=st.lists(st.sampled_from(_TOKENS), max_size=5))
def test_any_command_line_exits_0_1_or_2_with_one_line_errors(
    verb: str, tokens: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VFS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("VFS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = cli_main([*verb.split(), *tokens])
        except SystemExit as e:  # argparse: --help and usage errors
            rc = e.code if isinstance(e.code, int) else 1
    assert rc in (0, 1, 2), (verb, tokens, rc, err.getvalue())
    if rc:
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1, (verb, tokens, err.getvalue())
        assert lines[0].startswith("vfs"), lines


def test_bad_arguments_exit_2_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "VFS_STORE": str(tmp_path / "store"), "VFS_CACHE_DIR": str(tmp_path / "c")}
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    subprocess.run(
        [sys.executable, "-m", "vfs.cli", "commit", str(src), "ds"],
        env=env,
        check=True,
        capture_output=True,
    )
    cases = [
        ("get", "ds", "-o", str(tmp_path / "o1"), "-j", "0"),
        ("get", "ds", "-o", str(tmp_path / "o2"), "--jobs", "x"),
        ("prefetch", "ds", "-j", "-1"),
        ("log", "ds", "-n", "-2"),
        ("mount", "ds", str(tmp_path), "--read-timeout", "nan"),
        ("mount", "ds", str(tmp_path), "--read-timeout", "0"),
        ("mount", "ds", str(tmp_path), "--cache-size", "0"),
        ("verify",),
        ("verify", "ds", "--all"),
        ("verify", "ds@a..b"),
        ("cache",),
        ("cache", "prune", "--to", "lots"),
        ("get", "ds"),
        ("ls", "ds@tags/"),
        ("cat", "ds@v1~x", "f"),
    ]
    for args in cases:
        p = subprocess.run(
            [sys.executable, "-m", "vfs.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert p.returncode == 2, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, (
            args,
            p.stderr,
        )
    assert not (tmp_path / "o1").exists()  # refused before anything was written
    assert json.loads(
        subprocess.run(
            [sys.executable, "-m", "vfs.cli", "verify", "ds", "--json"],
            capture_output=True,
            text=True,
            env=env,
        ).stdout
    )["ok"]
