"""One conformance suite for every backend (local disk and SeaweedFS S3),
plus the S3 failure modes a user meets (no endpoint, no bucket, no permission) and
store URL parsing."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from vfs.backends import (
    FAULTS_ENV,
    Backend,
    Versioned,
    default_store_url,
    metadata_stack,
    open_backend,
)
from vfs.backends.local import LocalBackend
from vfs.backends.s3 import S3Backend
from vfs.errors import BackendError, NotFound, PermissionDenied, UsageError
from vfs.testing.seaweed import SeaweedServer

MiB = 1 << 20


def _random(n: int) -> bytes:
    return os.urandom(n)


# -- round trips -------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 5 * MiB])
def test_put_get_round_trip(backend: Backend, size: int) -> None:
    data = _random(size)
    backend.put("objs/a", data)
    assert backend.get("objs/a") == data
    assert backend.size("objs/a") == size
    assert backend.exists("objs/a")


def test_put_overwrites(backend: Backend) -> None:
    backend.put("k", b"first version, longer")
    backend.put("k", b"second")
    assert backend.get("k") == b"second"
    assert backend.size("k") == 6


def test_missing_key(backend: Backend) -> None:
    with pytest.raises(NotFound):
        backend.get("no/such/key")
    with pytest.raises(NotFound):
        backend.get_range("no/such/key", 0, 10)
    with pytest.raises(NotFound):
        backend.get_range("no/such/key", 0, 0)
    with pytest.raises(NotFound):
        backend.size("no/such/key")
    with pytest.raises(NotFound):
        backend.get_versioned("no/such/key")
    assert not backend.exists("no/such/key")


def test_a_directory_is_not_an_object(backend: Backend) -> None:
    backend.put("dir/child", b"x")
    assert not backend.exists("dir")
    with pytest.raises(NotFound):
        backend.get("dir")


def test_get_range(backend: Backend) -> None:
    data = _random(1000)
    backend.put("r", data)
    assert backend.get_range("r", 100, 50) == data[100:150]
    assert backend.get_range("r", 0, 1000) == data
    assert backend.get_range("r", 990, 100) == data[990:]  # fewer bytes at the end
    assert backend.get_range("r", 1000, 10) == b""  # starting exactly at the end
    assert backend.get_range("r", 5000, 10) == b""  # starting past the end
    assert backend.get_range("r", 10, 0) == b""
    backend.put("empty", b"")
    assert backend.get_range("empty", 0, 10) == b""


def test_put_file(backend: Backend, tmp_path: Path) -> None:
    data = _random(3 * MiB + 17)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    backend.put_file("packs/p1", str(src))
    assert backend.get("packs/p1") == data
    assert src.read_bytes() == data  # the source is left alone


def test_put_file_from_missing_path(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="cannot read"):
        backend.put_file("k", str(tmp_path / "nope"))
    assert not backend.exists("k")


@pytest.mark.s3
def test_put_file_multipart(seaweed: SeaweedServer, s3_url: str, tmp_path: Path) -> None:
    """Over the 64 MiB threshold the upload goes in 16 MiB parts; check the seams."""
    data = _random(70 * MiB)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    b = open_backend(s3_url)
    assert isinstance(b, S3Backend)
    try:
        b.put_file("packs/big", str(src))
        assert b.size("packs/big") == len(data)
        for seam in (16 * MiB, 32 * MiB, 64 * MiB):
            assert b.get_range("packs/big", seam - 10, 20) == data[seam - 10 : seam + 10]
        assert b.get_range("packs/big", len(data) - 5, 100) == data[-5:]
        assert b.get("packs/big") == data
        # A multipart ETag ends in '-<parts>': proof that the managed transfer split it.
        client = seaweed.client()
        head = client.head_object(Bucket=b.bucket, Key="store/packs/big")
        client.close()
        assert head["ETag"].strip('"').endswith("-5")
    finally:
        b.close()


@pytest.mark.s3
def test_clean_reads_skip_the_sdk_call_and_unclean_ones_take_it(s3_url: str) -> None:
    """Reads go by presigned URL (S3Backend._fast_get), not through a boto3 call; hooks
    on before-send still see them. A missing key is answered on the same road, named
    as boto3's error table names it; a missing bucket is left to boto3. A silent fall
    back to boto3 for every read would fail here."""
    b = open_backend(s3_url)
    assert isinstance(b, S3Backend)
    calls: list[str] = []
    sent: list[str] = []
    for client in (b._client, b._quick):  # ranged GETs, and the others
        events = client.meta.events
        events.register("before-call.s3.GetObject", lambda **kw: calls.append("call"))
    b._client.meta.events.register(
        "before-send.s3.GetObject", lambda request, **kw: sent.append(request.url)
    )
    try:
        data = _random(1 * MiB)
        b.put("packs/p", data)
        assert b.get_range("packs/p", 1000, 5000) == data[1000:6000]
        assert b.get_range("packs/p", len(data) - 10, 100) == data[-10:]
        assert b.get_range("packs/p", len(data) + 10, 100) == b""
        assert b.get("packs/p") == data  # after a ranged GET on the same handle
        assert b.get_range("packs/p", 10, 20) == data[10:30]
        assert b.get("packs/p") == data
        assert calls == []
        assert len(sent) == 6 and all("Signature" in url for url in sent)
        with pytest.raises(NotFound, match=r"no such object: s3://.*/packs/missing at http"):
            b.get_range("packs/missing", 0, 10)
        with pytest.raises(NotFound, match="packs/missing"):
            b.get("packs/missing")
        assert calls == []
    finally:
        b.close()
    gone = open_backend(s3_url.rsplit("/", 1)[0] + "-gone/x")
    assert isinstance(gone, S3Backend)
    calls.clear()
    gone._client.meta.events.register("before-call.s3.GetObject", lambda **kw: calls.append("call"))
    try:
        with pytest.raises(BackendError, match="does not exist"):
            gone.get_range("packs/p", 0, 10)
        assert calls == ["call"]
    finally:
        gone.close()


@pytest.mark.s3
def test_large_ranges_come_in_reused_buffers_that_no_live_answer_shares(s3_url: str) -> None:
    """A range of a MiB or more is received into a pooled buffer (s3._BODIES) and
    answered as a read-only view of it. The buffer of an answer dropped is lent
    again; that of an answer still held never is, so its bytes never change."""
    from vfs.backends import s3

    b = open_backend(s3_url)
    assert isinstance(b, S3Backend)
    try:
        data = _random(6 * MiB)
        b.put("packs/big", data)
        held = b.get_range("packs/big", 0, 2 * MiB)
        assert isinstance(held, memoryview) and held.readonly
        assert held == data[: 2 * MiB]
        reused = s3._BODIES.reused
        for i in range(1, 9):
            off = i * 400_000
            got = b.get_range("packs/big", off, 2 * MiB - i)
            assert got == data[off : off + 2 * MiB - i]
            del got
        assert s3._BODIES.reused >= reused + 7
        assert held == data[: 2 * MiB]
        assert b.get_range("packs/big", 5 * MiB, 2 * MiB) == data[5 * MiB :]  # short: at the end
    finally:
        b.close()


@pytest.mark.s3
def test_a_body_longer_than_its_buffer_or_an_error_comes_back_as_bytes(
    seaweed: SeaweedServer, s3_url: str
) -> None:
    """curl.UrlGetter with a lent buffer: a body that overflows it (a server that
    ignored the Range header sends the whole object) and the body of an error come
    back whole, as bytes."""
    from vfs.backends import curl

    b = open_backend(s3_url)
    assert isinstance(b, S3Backend)
    getter = curl.UrlGetter(None, 5.0)
    try:
        data = _random(3 * MiB + 5)
        b.put("packs/p", data)

        def url(key: str) -> str:
            return str(
                b._client.generate_presigned_url(
                    "get_object", Params={"Bucket": b.bucket, "Key": f"store/{key}"}
                )
            )

        status, body = getter.get(url("packs/p"), [], 10, memoryview(bytearray(1 * MiB)))
        assert status == 200 and isinstance(body, bytes) and body == data
        into = memoryview(bytearray(4 * MiB))
        status, body = getter.get(url("packs/p"), [], 10, into)
        assert status == 200 and isinstance(body, memoryview) and body == data
        status, body = getter.get(url("packs/none"), [], 10, memoryview(bytearray(1 * MiB)))
        assert status == 404 and isinstance(body, bytes) and b"NoSuchKey" in body
    finally:
        getter.close()
        b.close()


# -- listing and deleting ----------------------------------------------------------


def test_list_and_list_dirs(backend: Backend) -> None:
    keys = {
        "refs/ds1/heads/main",
        "refs/ds1/tags/v1",
        "refs/ds2/heads/main",
        "refs/toplevel",
        "packs/ab/ab12",
        "packs/ab/ab34",
        "packs/cd/cd56",
        "packsX",
    }
    for k in keys:
        backend.put(k, k.encode())
    assert backend.put_if("refs/ds3/heads/main", b"1", None)  # leaves a lock file on disk
    keys.add("refs/ds3/heads/main")
    assert set(backend.list("")) == keys
    assert set(backend.list("packs/")) == {"packs/ab/ab12", "packs/ab/ab34", "packs/cd/cd56"}
    assert set(backend.list("packs")) == {
        "packs/ab/ab12",
        "packs/ab/ab34",
        "packs/cd/cd56",
        "packsX",
    }
    assert set(backend.list("packs/ab/ab1")) == {"packs/ab/ab12"}
    assert set(backend.list("refs/ds1/")) == {"refs/ds1/heads/main", "refs/ds1/tags/v1"}
    assert list(backend.list("nothing/")) == []
    assert backend.list_dirs("refs/") == ["ds1", "ds2", "ds3"]
    assert backend.list_dirs("refs/ds1/") == ["heads", "tags"]
    assert backend.list_dirs("packs/ab/") == []
    assert backend.list_dirs("") == ["packs", "refs"]
    assert backend.list_dirs("nothing/") == []


def test_delete(backend: Backend) -> None:
    backend.put("d/one", b"1")
    backend.put("d/two", b"2")
    backend.delete("d/one")
    assert not backend.exists("d/one")
    assert backend.get("d/two") == b"2"
    backend.delete("d/one")  # deleting a missing key is fine
    backend.delete("never/was")
    backend.delete("d/two")
    # An emptied "directory" disappears from listings, as on S3.
    assert list(backend.list("d/")) == []
    assert backend.list_dirs("") == []


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "..", "a/"])
def test_invalid_keys_are_refused(backend: Backend, key: str) -> None:
    with pytest.raises(ValueError):
        backend.put(key, b"x")


# -- compare-and-swap --------------------------------------------------------------


def test_put_if(backend: Backend) -> None:
    assert backend.put_if("ref", b"v1", None)  # create when missing
    assert not backend.put_if("ref", b"other", None)  # create when present: refused
    v1 = backend.get_versioned("ref")
    assert v1.data == b"v1"
    assert backend.put_if("ref", b"v2", v1.token)
    assert backend.get("ref") == b"v2"
    assert not backend.put_if("ref", b"v3", v1.token)  # stale token
    assert backend.get("ref") == b"v2"
    v2 = backend.get_versioned("ref")
    assert v2.token != v1.token
    backend.delete("ref")
    assert not backend.put_if("ref", b"v4", v2.token)  # the object is gone
    assert not backend.exists("ref")


def _increment(backend: Backend, key: str, times: int) -> int:
    """Read-modify-write a decimal counter `times` times; returns lost races."""
    lost = 0
    for _ in range(times):
        while True:
            cur: Versioned = backend.get_versioned(key)
            if backend.put_if(key, str(int(cur.data) + 1).encode(), cur.token):
                break
            lost += 1
    return lost


def test_put_if_concurrent_counter(backend: Backend) -> None:
    backend.put("counter", b"0")
    errors: list[BaseException] = []
    lost: list[int] = []

    def work() -> None:
        try:
            lost.append(_increment(backend, "counter", 20))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert backend.get("counter") == b"160"


def _create_race(backend: Backend, key: str, n: int) -> list[int]:
    """`n` threads try put_if(key, None) at once; returns the winners."""
    start = threading.Barrier(n)
    winners: list[int] = []

    def create(i: int) -> None:
        start.wait()
        if backend.put_if(key, str(i).encode(), None):
            winners.append(i)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return winners


def test_put_if_create_race_has_one_winner(backend: Backend) -> None:
    for round_ in range(2):
        winners = _create_race(backend, f"refs/race{round_}", 8)
        assert len(winners) == 1
        assert backend.get(f"refs/race{round_}") == str(winners[0]).encode()


def _process_increments(root: str, times: int) -> int:
    return _increment(LocalBackend(root), "counter", times)


def test_put_if_across_processes(tmp_path: Path) -> None:
    """flock excludes other processes, not just other threads."""
    root = str(tmp_path / "store")
    LocalBackend(root).put("counter", b"0")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        pool.starmap(_process_increments, [(root, 40)] * 4)
    assert LocalBackend(root).get("counter") == b"160"


# -- local disk specifics ----------------------------------------------------------


def test_local_root_is_created_on_first_write(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "store"
    b = LocalBackend(str(root))
    with pytest.raises(NotFound):
        b.get("k")
    assert list(b.list("")) == [] and b.list_dirs("") == [] and not b.exists("k")
    b.put("k", b"v")
    assert root.is_dir() and b.get("k") == b"v"


def test_local_hides_temp_files_and_writes_atomically(tmp_path: Path) -> None:
    b = LocalBackend(str(tmp_path))
    b.put("a/b", b"x")
    (tmp_path / "a" / ".tmp-crashed").write_bytes(b"partial")
    (tmp_path / ".tmp-dir").mkdir()
    (tmp_path / ".tmp-dir" / "f").write_bytes(b"y")
    assert list(b.list("")) == ["a/b"]
    assert b.list_dirs("") == ["a"]
    with pytest.raises(ValueError):
        b.put("a/.tmp-x", b"reserved")
    with pytest.raises(ValueError):
        b.put(".locks/x", b"reserved")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_local_permission_denied_names_the_path(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    b = LocalBackend(str(root))
    b.put("k", b"v")
    root.chmod(0o500)
    try:
        with pytest.raises(PermissionDenied, match=str(root)):
            b.put("k2", b"v")
    finally:
        root.chmod(0o700)


def test_local_oserror_table() -> None:
    """The mapping itself, since the test above cannot run as root."""
    from vfs.backends.local import _map_oserror

    def err(code: int) -> OSError:
        return OSError(code, os.strerror(code))

    assert isinstance(_map_oserror(err(errno.ENOENT), "/s/k", "k"), NotFound)
    assert isinstance(_map_oserror(err(errno.EACCES), "/s/k", "k"), PermissionDenied)
    assert "/s/k" in str(_map_oserror(err(errno.EPERM), "/s/k", None))
    other = _map_oserror(err(errno.ENOSPC), "/s/k", None)
    assert type(other) is BackendError and "/s/k" in str(other)
    # Without a key, ENOENT is a broken store, not a missing object.
    assert type(_map_oserror(err(errno.ENOENT), "/s", None)) is BackendError


# -- S3 failure modes --------------------------------------------------------------

_FAKE_SECRET = "notarealsecretbutsecretnonetheless0123"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _all_text(exc: BaseException) -> str:
    """The message and the whole formatted traceback chain, as a user might see it."""
    return str(exc) + "".join(traceback.format_exception(exc))


def test_unreachable_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", _FAKE_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    b = S3Backend("bucket", "p", endpoint_url=endpoint)
    try:
        for op in (lambda: b.get("k"), lambda: b.put("k", b"v"), lambda: list(b.list(""))):
            t0 = time.monotonic()
            with pytest.raises(BackendError, match="cannot reach S3 endpoint") as info:
                op()
            assert time.monotonic() - t0 < 10
            assert endpoint in str(info.value)
            assert _FAKE_SECRET not in _all_text(info.value)
    finally:
        b.close()


@pytest.mark.s3
def test_missing_bucket_is_named(seaweed: SeaweedServer, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"data")
    b = S3Backend("no-such-bucket-here", "p", endpoint_url=seaweed.endpoint)
    ops: list[Callable[[], object]] = [
        lambda: b.get("k"),
        lambda: b.put("k", b"v"),
        lambda: b.put_file("k", str(src)),
        lambda: b.exists("k"),
        lambda: list(b.list("")),
        lambda: b.put_if("k", b"v", None),
    ]
    try:
        for op in ops:
            with pytest.raises(BackendError) as info:
                op()
            assert not isinstance(info.value, NotFound)
            msg = str(info.value)
            assert msg == f"bucket 'no-such-bucket-here' does not exist at {seaweed.endpoint}"
            assert seaweed.secret_key not in _all_text(info.value)
    finally:
        b.close()


@pytest.mark.s3
def test_wrong_secret_is_permission_denied_without_the_secret(
    seaweed: SeaweedServer, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", _FAKE_SECRET)
    b = open_backend(s3_url)
    try:
        for op in (lambda: b.get("k"), lambda: b.exists("k"), lambda: b.put("k", b"v")):
            with pytest.raises(PermissionDenied) as info:
                op()
            assert _FAKE_SECRET not in _all_text(info.value)
            assert seaweed.secret_key not in _all_text(info.value)
    finally:
        b.close()


@pytest.mark.s3
def test_read_only_identity(
    seaweed: SeaweedServer, s3_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    writer = open_backend(s3_url)
    writer.put("refs/ds/heads/main", b"v")
    writer.close()
    for name, value in seaweed.env(read_only=True).items():
        monkeypatch.setenv(name, value)
    reader = open_backend(s3_url)
    try:
        assert reader.get("refs/ds/heads/main") == b"v"
        assert reader.get_range("refs/ds/heads/main", 0, 1) == b"v"
        assert reader.exists("refs/ds/heads/main")
        assert list(reader.list("refs/")) == ["refs/ds/heads/main"]
        assert reader.list_dirs("refs/") == ["ds"]
        with pytest.raises(PermissionDenied, match="access denied") as info:
            reader.put("refs/ds/heads/main", b"w")
        assert s3_url.removeprefix("s3://") in str(info.value)
        assert seaweed.ro_secret_key not in _all_text(info.value)
        with pytest.raises(PermissionDenied):
            reader.put_if(
                "refs/ds/heads/main", b"w", reader.get_versioned("refs/ds/heads/main").token
            )
        with pytest.raises(PermissionDenied):
            reader.delete("refs/ds/heads/main")
        src = tmp_path / "f"
        src.write_bytes(b"data")
        with pytest.raises(PermissionDenied):
            reader.put_file("packs/p", str(src))
    finally:
        reader.close()


# -- store URLs --------------------------------------------------------------------


def test_open_backend_parses_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = open_backend("s3://my-bucket/some/prefix/")
    assert isinstance(s3, S3Backend)
    assert (s3.bucket, s3.prefix, s3.url) == (
        "my-bucket",
        "some/prefix",
        "s3://my-bucket/some/prefix",
    )
    s3.close()
    bare = open_backend("s3://my-bucket")
    assert isinstance(bare, S3Backend) and (bare.bucket, bare.prefix) == ("my-bucket", "")
    bare.close()

    local = open_backend(f"file://{tmp_path}/store")
    assert isinstance(local, LocalBackend) and local.root == f"{tmp_path}/store"
    assert local.url == f"file://{tmp_path}/store"
    plain = open_backend(str(tmp_path / "plain"))
    assert isinstance(plain, LocalBackend) and plain.root == str(tmp_path / "plain")
    monkeypatch.chdir(tmp_path)
    rel = open_backend("rel/store")
    assert isinstance(rel, LocalBackend) and rel.root == str(tmp_path / "rel" / "store")
    monkeypatch.setenv("HOME", str(tmp_path))
    home = open_backend("~/h")
    assert isinstance(home, LocalBackend) and home.root == str(tmp_path / "h")


@pytest.mark.parametrize(
    "url", ["", "s3://", "s3:///prefix", "gs://b/p", "file://host/x", "file:rel"]
)
def test_open_backend_refuses(url: str) -> None:
    with pytest.raises(UsageError):
        open_backend(url)


def test_default_store_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VFS_STORE", "s3://b/p")
    assert default_store_url() == "s3://b/p"
    monkeypatch.delenv("VFS_STORE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_store_url() == str(tmp_path / ".local/share/vfs/store")


@pytest.mark.allow_error_log
def test_error_log_guard_can_be_waived() -> None:
    logging.getLogger("vfs.tests").error("expected by this test")


# -- the layers, stacked by vfs.backends ---------------------------------------------


def test_open_backend_stacks_faults_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vfs.backends.faults import Fault, FaultControl, FaultyBackend

    monkeypatch.delenv(FAULTS_ENV, raising=False)
    assert isinstance(open_backend(str(tmp_path / "store")), LocalBackend)
    ctl = FaultControl(tmp_path / "ctl")
    monkeypatch.setenv(FAULTS_ENV, str(ctl.dir))
    b = open_backend(str(tmp_path / "store"))
    assert isinstance(b, FaultyBackend) and isinstance(b.inner, LocalBackend)
    b.put("k", b"v")
    ctl.set(Fault("error", ops=("get",)))
    with pytest.raises(BackendError, match="injected"):
        b.get("k")
    assert b.tally.gets == 1
    # Product code never imports the test tooling (the fault layer is a backend layer).
    code = "import sys, vfs.store; vfs.store.Store.open(sys.argv[1]); print('vfs.testing' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != FAULTS_ENV}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "store")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_the_metadata_stack_keeps_what_it_fetched(tmp_path: Path) -> None:
    from vfs import format as fmt
    from vfs.backends.metadata import BackendMetadata, MetadataCache, locs_cache_key
    from vfs.cache import ChunkCache
    from vfs.errors import MissingObject
    from vfs.store import Store

    backend = LocalBackend(str(tmp_path / "store"))
    assert isinstance(metadata_stack(backend), BackendMetadata)
    store = Store(backend)
    canonical = fmt.encode_commit(
        fmt.Commit(
            tree=b"\1" * 32, parents=(), author="a", time="2026-11-27T00:00:00Z", message="m"
        )
    )
    cid = store.put_object(canonical)
    loc = fmt.Location(b"\2" * 32, 0, 10, 0)
    store.put_locs(b"\3" * 32, {b"\4" * 32: loc})
    with ChunkCache(tmp_path / "cache", 1 << 30) as cache:
        store.use_cache(cache)
        assert isinstance(store.meta, MetadataCache)
        assert store.get_object(cid, "commit") == canonical
        assert store.get_locs(b"\3" * 32) == {b"\4" * 32: loc}
        assert cache.get(cid) == canonical and cache.get(locs_cache_key(b"\3" * 32))
        for key in list(backend.list("")):
            backend.delete(key)
        # Served from the cache with the store's copies gone; a store without it fails.
        offline = Store(backend)
        offline.use_cache(cache)
        assert offline.get_object(cid, "commit") == canonical
        assert offline.get_locs(b"\3" * 32) == {b"\4" * 32: loc}
    with pytest.raises(MissingObject):
        Store(backend).get_object(cid, "commit")
    with pytest.raises(MissingObject):
        Store(backend).get_locs(b"\3" * 32)
