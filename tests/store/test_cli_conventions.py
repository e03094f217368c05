"""The command line's conventions, as a git or DVC user expects them: global options
before the verb, `python -m vfs`, XDG directories, help that fits a terminal, log
lines that name their logger, and shell completion."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vfs.cli import ACTION_VERBS, VERBS, build_parser, hoist_global_options
from vfs.cli.common import setup_logging


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vfs", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "VFS_NO_PROGRESS": "1", **(env or {})},
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    (d / "a").mkdir(parents=True)
    (d / "a" / "x.txt").write_text("x\n")
    return d


def test_global_options_are_accepted_before_the_verb(tmp_path: Path, data: Path) -> None:
    store = str(tmp_path / "store")
    env = {"VFS_CACHE_DIR": str(tmp_path / "cache")}
    p = run("--store", store, "commit", str(data), "ds", env=env)
    assert p.returncode == 0, p.stderr
    for argv in (
        ["--store", store, "ls"],
        [f"--store={store}", "-v", "ls"],
        ["-vv", "--store", store, "--cache-dir", str(tmp_path / "c2"), "log", "ds"],
        ["ls", "--store", store],
    ):
        p = run(*argv, env=env)
        assert p.returncode == 0, (argv, p.stderr)
        assert ("commit " if "log" in argv else "ds ") in p.stdout, argv
    # -vv before the verb reaches the verb's parser.
    argv = hoist_global_options(["-vv", "--store", store, "ls"])
    args = build_parser("ls").parse_args(argv)
    assert (args.verbose, args.store) == (2, store)


def test_hoisting_moves_only_what_comes_before_the_verb() -> None:
    assert hoist_global_options(["--store", "S", "-vv", "ls", "ds"]) == [
        "ls",
        "--store",
        "S",
        "-vv",
        "ds",
    ]
    # a dataset called like an option value is not taken for the verb
    assert hoist_global_options(["--store", "ls", "log", "x"]) == ["log", "--store", "ls", "x"]
    # after the verb, and anything argparse should answer, stays where it is
    assert hoist_global_options(["ls", "--store", "S"]) == ["ls", "--store", "S"]
    assert hoist_global_options(["--store", "S", "--help"]) == ["--store", "S", "--help"]
    assert hoist_global_options(["--bogus", "ls"]) == ["--bogus", "ls"]
    # a verb with actions declares the options on each action
    assert hoist_global_options(["--store", "S", "cache", "pin", "ds@v1"]) == [
        "cache",
        "pin",
        "--store",
        "S",
        "ds@v1",
    ]
    assert hoist_global_options(["-v", "remote", "--help"]) == ["remote", "-v", "--help"]


def test_options_may_stand_between_a_version_and_its_path() -> None:
    """argparse alone fills ls's PATH before the first option and then refuses
    `vfs ls ds@v1 -l sub`; every order a user writes parses the same."""
    for argv in (
        ["ls", "ds@v1", "-l", "sub"],
        ["ls", "-l", "ds@v1", "sub"],
        ["ls", "ds@v1", "sub", "-l"],
    ):
        args = build_parser("ls").parse_args(argv)
        assert (args.spec, args.path, args.long) == ("ds@v1", "sub", True), argv
    args = build_parser("get").parse_args(["get", "ds@v1", "-o", "out", "sub/a"])
    assert (args.spec, args.path, args.out) == ("ds@v1", "sub/a", "out")
    args = build_parser("show").parse_args(["show", "ds@v1", "--json", "sub"])
    assert (args.spec, args.path, args.json) == ("ds@v1", "sub", True)
    # a word still left over is an error, named as such
    with pytest.raises(SystemExit) as exit_:
        build_parser("ls").parse_args(["ls", "ds@v1", "-l", "sub", "extra"])
    assert exit_.value.code == 2


def test_a_usage_error_points_at_the_verbs_help_and_a_typo_at_the_verb(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from vfs.cli import main

    for argv, said in (
        (
            ["comit", "x"],
            "vfs: error: unknown command 'comit'; did you mean 'commit'? (see vfs --help)",
        ),
        (
            ["tag", "ds", "good", "v1"],
            "vfs: error: unrecognized arguments: v1 (see vfs tag --help)",
        ),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert capsys.readouterr().err.strip() == said


def test_the_verbs_with_actions_are_the_ones_hoisting_knows() -> None:
    parser = build_parser(all_verbs=True)
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    with_actions = {
        name
        for name, sub in verbs.choices.items()
        if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
    }
    assert with_actions == set(ACTION_VERBS)


def test_global_options_before_a_verb_with_actions(tmp_path: Path, data: Path) -> None:
    store, cache = str(tmp_path / "store"), str(tmp_path / "cache")
    env = {"VFS_CACHE_DIR": str(tmp_path / "other-cache")}
    assert run("--store", store, "commit", str(data), "ds", env=env).returncode == 0
    for argv in (
        ["--store", store, "--cache-dir", cache, "cache", "pin", "ds"],
        ["--cache-dir", cache, "cache", "stats", "--json"],
    ):
        p = run(*argv, env=env, cwd=tmp_path)
        assert p.returncode == 0, (argv, p.stderr)
        if "stats" in argv:
            assert json.loads(p.stdout)["pins"], "the pin went to another cache"


def test_a_pipe_reader_that_goes_away_is_not_an_error(tmp_path: Path) -> None:
    d = tmp_path / "many"
    d.mkdir()
    for i in range(3000):  # a listing larger than a pipe's 64 KiB
        (d / f"a-file-with-a-long-name-{i:05d}.txt").write_text("x")
    env = {**os.environ, "VFS_STORE": str(tmp_path / "store"), "VFS_NO_PROGRESS": "1"}
    env["VFS_CACHE_DIR"] = str(tmp_path / "cache")
    assert run("commit", str(d), "ds", env=env).returncode == 0
    for verb in ("ls ds", "ls -R ds"):
        p = subprocess.run(
            [
                "bash",
                "-c",
                f"{sys.executable} -m vfs {verb} | head -c 1 >/dev/null; exit ${{PIPESTATUS[0]}}",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert (p.returncode, p.stderr) == (0, ""), verb


def test_python_dash_m_vfs_is_the_cli() -> None:
    p = run("--version")
    assert p.returncode == 0 and p.stdout.startswith("vfs "), p.stderr


def test_xdg_directories_are_honoured(tmp_path: Path, data: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VFS_STORE", "VFS_CACHE_DIR")}
    env |= {
        "XDG_DATA_HOME": str(tmp_path / "xdata"),
        "XDG_CACHE_HOME": str(tmp_path / "xcache"),
        "HOME": str(tmp_path / "home"),
        "VFS_NO_PROGRESS": "1",
    }
    p = subprocess.run(
        [sys.executable, "-m", "vfs", "commit", str(data), "ds"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "xdata" / "vfs" / "store" / "config").is_file()
    assert (tmp_path / "xcache" / "vfs").is_dir()  # the commit's stat cache lives there
    assert not (tmp_path / "home").exists()


def test_help_fits_an_80_column_terminal() -> None:
    env = {"COLUMNS": "80"}
    verbs = ["", *VERBS, "cache prune"]
    for verb in verbs:
        p = run(*verb.split(), "--help", env=env)
        assert p.returncode == 0, (verb, p.stderr)
        long_lines = [line for line in p.stdout.splitlines() if len(line) > 80]
        assert not long_lines, (verb, long_lines)
        assert "%%" not in p.stdout, verb


def test_log_lines_name_their_logger() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        root.handlers.clear()
        setup_logging(2)
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("vfs.ops.commit").info("ours")
        logging.getLogger("botocore.endpoint").debug("theirs")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert stream.getvalue().splitlines() == ["vfs: INFO: ours", "botocore.endpoint: DEBUG: theirs"]


def _bash_complete(script: str, words: list[str], cwd: Path) -> list[str]:
    line = " ".join(words)
    prog = (
        f"source {script}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        f"COMP_LINE={line!r}; COMP_POINT={len(line)}\n"
        "_shtab_vfs; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    p = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, cwd=cwd, timeout=30)
    assert p.returncode == 0, p.stderr
    return [w for w in p.stdout.splitlines() if w]


def test_bash_completion_knows_verbs_options_and_local_paths(tmp_path: Path) -> None:
    script = tmp_path / "vfs.bash"
    p = run("completion", "bash")
    assert p.returncode == 0, p.stderr
    script.write_text(p.stdout)
    (tmp_path / "mydata").mkdir()
    assert _bash_complete(str(script), ["vfs", "co"], tmp_path) == [
        "commit",
        "config",
        "completion",
    ]
    assert _bash_complete(str(script), ["vfs", "cache", "p"], tmp_path) == ["prune", "pin"]
    assert "--tag" in _bash_complete(str(script), ["vfs", "commit", "--t"], tmp_path)
    assert _bash_complete(str(script), ["vfs", "commit", "myd"], tmp_path) == ["mydata"]
    (tmp_path / "one.png").write_bytes(b"")  # get -o names a file too, for one file
    assert _bash_complete(str(script), ["vfs", "get", "ds@v1", "-o", "on"], tmp_path) == [
        "one.png"
    ]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_is_valid_zsh(tmp_path: Path) -> None:
    p = run("completion", "zsh")
    assert p.returncode == 0, p.stderr
    (tmp_path / "_vfs").write_text(p.stdout)
    check = subprocess.run(["zsh", "-n", str(tmp_path / "_vfs")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_every_verb_builds_for_the_completion_script() -> None:
    parser = build_parser(all_verbs=True)
    assert parser.parse_args(["cache", "stats"]).command == "cache"


def test_odd_names_are_escaped_for_people_and_exact_for_programs(tmp_path: Path) -> None:
    env = {"VFS_STORE": str(tmp_path / "store"), "VFS_CACHE_DIR": str(tmp_path / "cache")}
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("1")
    assert run("commit", str(src), "ds", "--tag", "v1", env=env).returncode == 0
    odd = [b"a\tb", b"new\nline", b"\xff\xfe.bin", b"esc\x1b[31mred"]
    for name in odd:
        (Path(os.fsdecode(bytes(src))) / os.fsdecode(name)).write_text("x")
    assert run("commit", str(src), "ds", "--tag", "v2", env=env).returncode == 0

    p = run("ls", "ds@v2", env=env)
    assert p.stdout.splitlines() == [
        '"a\\tb"',
        '"esc\\x1b[31mred"',
        '"new\\nline"',
        "ok.txt",
        '"\\xff\\xfe.bin"',
    ], p.stdout
    raw = subprocess.run(
        [sys.executable, "-m", "vfs", "ls", "ds@v2", "-z"],
        capture_output=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert sorted(raw.stdout.split(b"\0")[:-1]) == sorted([*odd, b"ok.txt"])
    p = run("ls", "ds@v2", "--json", env=env)
    assert sorted(os.fsencode(d["path"]) for d in json.loads(p.stdout)) == sorted([*odd, b"ok.txt"])

    p = run("diff", "ds@v1", "ds@v2", env=env)
    assert len(p.stdout.splitlines()) == 4 and '+ "new\\nline"' in p.stdout, p.stdout
    assert p.stderr.startswith("4 added, 0 removed"), p.stderr
    p = run("diff", "ds@v1", "ds@v2", "--stat", env=env)
    assert p.stdout.startswith("4 added") and p.stderr == "", (p.stdout, p.stderr)
    raw = subprocess.run(
        [sys.executable, "-m", "vfs", "diff", "ds@v1", "ds@v2", "-z"],
        capture_output=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert sorted(raw.stdout.split(b"\0")[:-1]) == sorted(b"A\t" + n for n in odd)


def test_log_n_counts_as_git_does(tmp_path: Path, data: Path) -> None:
    env = {"VFS_STORE": str(tmp_path / "store"), "VFS_CACHE_DIR": str(tmp_path / "cache")}
    for i in range(3):
        (data / "a" / "x.txt").write_text(f"{i}\n")
        assert run("commit", str(data), "ds", env=env).returncode == 0
    assert run("log", "ds", "-n", "0", env=env).stdout == ""
    assert run("log", "ds", "-n", "2", env=env).stdout.count("commit ") == 2
    assert run("log", "ds", env=env).stdout.count("commit ") == 3
    assert run("reflog", "ds", "-n", "0", env=env).stdout == ""
    assert len(run("reflog", "ds", env=env).stdout.splitlines()) == 3


def test_wrong_names_get_a_suggestion(tmp_path: Path, data: Path) -> None:
    env = {"VFS_STORE": str(tmp_path / "store"), "VFS_CACHE_DIR": str(tmp_path / "cache")}
    assert run("commit", str(data), "mydata", "--tag", "v1", env=env).returncode == 0
    for argv, says, code in (
        (["log", "mydata@mian"], "did you mean 'main'? (mydata has branches main; tags v1)", 1),
        (["log", "mydata@91"], "a commit id prefix needs at least 4 hex digits", 1),
        (["diff", "mydata~1", "mydata"], "did you mean mydata@main~1?", 2),
        (["log", "mydatta"], "no dataset 'mydatta'", 1),
        (["log", "mydatta"], "did you mean 'mydata'?", 1),
        (["log", "mydata@v2"], "(mydata has branches main; tags v1)", 1),
    ):
        p = run(*argv, env=env)
        assert p.returncode == code and says in p.stderr, (argv, p.stderr)
        assert len(p.stderr.splitlines()) == 1, p.stderr


def test_the_readme_exit_code_table_is_what_the_code_does(tmp_path: Path, data: Path) -> None:
    from vfs import cli

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| (\w+)", readme, re.M))
    assert table == {"0": "done", "1": "failed", "2": "usage", "130": "interrupted"}
    assert (cli.EXIT_OK, cli.EXIT_FAILED, cli.EXIT_USAGE, cli.EXIT_INTERRUPTED) == (0, 1, 2, 130)
    env = {"VFS_STORE": str(tmp_path / "store"), "VFS_CACHE_DIR": str(tmp_path / "cache")}
    assert run("commit", str(data), "ds", "--tag", "v1", env=env).returncode == 0
    (data / "a" / "x.txt").write_text("changed\n")
    assert run("commit", str(data), "ds", env=env).returncode == 0
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    for argv, code in (
        (["ls", "ds"], 0),
        (["log", "nosuch"], 1),
        (["cat", "ds", "no/such/file"], 1),
        (["ls", "--store", str(tmp_path / "nostore")], 1),
        (["tag", "ds", "v1"], 1),
        (["ls", "--bogus"], 2),
        (["log", "ds@"], 2),
        (["mount", "ds", str(tmp_path / "missing")], 2),
        (["mount", "ds", str(full)], 2),
        (["rm", "ds"], 2),
    ):
        p = run(*argv, env=env)
        assert p.returncode == code, (argv, p.returncode, p.stderr)
        if code:
            assert len(p.stderr.strip().splitlines()) == 1, (argv, p.stderr)


def test_a_json_list_written_item_by_item_is_the_same_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`vfs ls --json` streams its array (a 200k-entry directory held 150 MB as one
    list): the text must be exactly what print_json writes for the whole list."""
    from vfs.cli.common import print_json, print_json_list

    for docs in ([], [{"name": "a\nb", "raw": "x\udcff", "size": 1}], [{"n": [1, {"k": 2}]}, {}]):
        print_json(list(docs))
        whole = capsys.readouterr().out
        print_json_list(iter(docs))
        assert capsys.readouterr().out == whole
        assert json.loads(whole) is not None


def test_without_a_terminal_long_work_says_it_is_alive_in_plain_lines(tmp_path: Path) -> None:
    """A CI log gets a line every VFS_PROGRESS_INTERVAL seconds (no bar, no carriage
    returns), beside --json too; VFS_NO_PROGRESS=1 silences it."""
    d = tmp_path / "data"
    d.mkdir()
    for i in range(8):
        (d / f"f{i}").write_bytes(os.urandom(3 << 20))
    env = {
        "VFS_STORE": str(tmp_path / "store"),
        "VFS_CACHE_DIR": str(tmp_path / "cache"),
        "VFS_NO_PROGRESS": "",
        "VFS_PROGRESS_INTERVAL": "0.01",
    }
    p = run("commit", str(d), "ds", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["files"] == 8
    lines = p.stderr.splitlines()
    assert lines and all(re.fullmatch(r"vfs commit: .*\d+ s(, \w.*)?", x) for x in lines), lines
    assert "\r" not in p.stderr
    p = run("get", "ds", "-o", str(tmp_path / "out"), env=env)
    assert p.returncode == 0, p.stderr
    assert re.search(r"^vfs get: .* of 24\.0 MiB \(\d+%\)", p.stderr, re.M), p.stderr
    p = run("get", "ds", "-o", str(tmp_path / "out2"), env={**env, "VFS_NO_PROGRESS": "1"})
    assert p.returncode == 0 and "vfs get:" not in p.stderr, p.stderr


@pytest.mark.parametrize(
    ("value", "want"), [("0.5", 0.5), ("0", 30.0), ("-1", 30.0), ("nan", 30.0), ("inf", 30.0)]
)
def test_a_progress_interval_out_of_range_is_the_default(
    monkeypatch: pytest.MonkeyPatch, value: str, want: float
) -> None:
    """0 wrote 95,898 lines in a 0.6 s get; inf killed the thread with a traceback."""
    from vfs.cli import progress

    monkeypatch.setenv("VFS_PROGRESS_INTERVAL", value)
    assert progress.interval() == want
    monkeypatch.setenv("VFS_NO_PROGRESS", "0")
    assert not progress.silenced()
