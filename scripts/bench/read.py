"""The reading rows of `make bench`: a large file warm, from the local cache and cold
from S3; small files cold and warm; a whole-version prefetch; `find` on a fresh mount.
The fairness rules are in rows.py."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .ctx import DATASET, MB, Ctx, attempt, measure
from .env import PY, ROOT, Mount
from .report import Row
from .work import (
    dd_read,
    find_all,
    read_files,
    s3_download_all,
    s3_get_ranges,
    s3_get_single,
    torch_job,
)

# -- reading a large file ---------------------------------------------------------------------


WARM_PASSES = 8


def _dd_mbps(path: Path, passes: int = 1) -> float:
    """MB/s of `passes` dd reads of a file, by dd's own clock. A read from the page
    cache takes about 15 ms, so warm rows sum several: one pass varied by 1.5x."""
    secs = n = 0.0
    for _ in range(passes):
        s, b = dd_read(path)
        secs += s
        n += b
    return n / secs / MB


def row_reread_warm(ctx: Ctx, row: Row) -> None:
    b = ctx.bench
    ctx.ensure_v1()
    ctx.ensure_plain()
    opened: dict[str, Path] = {}

    def setup(name: str, fn: Callable[[], Path]) -> None:
        fig = row.baseline(name) if name != "vfs" else row.vfs

        def go() -> None:
            path = fn()
            dd_read(path)  # warm
            opened[name] = path

        attempt(fig, lambda: go())

    mounts: list[Mount] = []

    def mnt(m: Mount) -> Path:
        mounts.append(m)
        return m.path / ctx.large

    try:
        setup("vfs", lambda: mnt(b.mount_vfs(f"{DATASET}@v1", ctx.cache_main)))
        setup("local dd", lambda: ctx.src / ctx.large)
        setup("passthrough", lambda: mnt(b.mount_passthrough(ctx.src)))
        setup("rclone", lambda: mnt(b.mount_rclone("plain/v1", b.fresh("rclone-cache"))))
        setup("s3fs", lambda: mnt(b.mount_s3fs("plain/v1", b.fresh("s3fs-cache"))))
        figs = [row.vfs, *row.baselines]
        for rep in range(ctx.reps):
            # Each repetition warms every file afresh, in a rotated order: how fast
            # the kernel copies a cached file depends on the physical pages it got
            # (up to 1.25x in either direction between two FUSE mounts of the same
            # file), and a fixed order favoured whichever file was read last.
            b.drop_caches()
            turn = figs[rep % len(figs) :] + figs[: rep % len(figs)]
            for fig in turn:
                if fig.name in opened:
                    attempt(fig, lambda p=opened[fig.name]: dd_read(p))  # type: ignore[misc]
            for fig in figs:
                path = opened.get(fig.name)
                if path is not None:
                    measure(fig, lambda p=path: _dd_mbps(p, WARM_PASSES))  # type: ignore[misc]
    finally:
        for m in mounts:
            m.close()


def row_cache_read(ctx: Ctx, row: Row) -> None:
    b = ctx.bench
    ctx.ensure_v1()
    ctx.ensure_plain()
    # The file in the vfs cache: a mount reads it once (a no-op if already cached).
    attempt(row.vfs, lambda: _warm_vfs_cache(ctx))
    rcache = b.fresh("rclone-cache")

    def rclone_fill() -> None:
        with b.mounted(b.mount_rclone("plain/v1", rcache)) as m:
            dd_read(m.path / ctx.large)

    attempt(row.baseline("rclone"), lambda: rclone_fill())
    jcache = b.fresh("juicefs-cache")

    def juicefs_fill() -> None:
        ctx.ensure_juicefs("v1", ctx.src)
        with b.mounted(b.mount_juicefs(jcache)) as m:
            dd_read(m.path / "v1" / ctx.large)
            # JuiceFS writes its cache behind the reads; `juicefs warmup` returns once
            # every block of the file is in it.
            assert b.juicefs is not None
            b.run([b.juicefs, "warmup", str(m.path / "v1" / ctx.large)])

    attempt(row.baseline("JuiceFS"), lambda: juicefs_fill())

    def vfs_once() -> float:
        with b.mounted(b.mount_vfs(f"{DATASET}@v1", ctx.cache_main)) as m:
            b.drop_caches()
            return _dd_mbps(m.path / ctx.large)

    def rclone_once() -> float:
        with b.mounted(b.mount_rclone("plain/v1", rcache)) as m:
            b.drop_caches()
            return _dd_mbps(m.path / ctx.large)

    def juicefs_once() -> float:
        with b.mounted(b.mount_juicefs(jcache)) as m:
            b.drop_caches()
            return _dd_mbps(m.path / "v1" / ctx.large)

    def local_once() -> float:
        b.drop_caches()
        return _dd_mbps(ctx.src / ctx.large)

    def passthrough_once() -> float:
        with b.mounted(b.mount_passthrough(ctx.src)) as m:
            b.drop_caches()
            return _dd_mbps(m.path / ctx.large)

    for _ in range(ctx.reps):
        measure(row.vfs, vfs_once)
        measure(row.baseline("local dd"), local_once)
        measure(row.baseline("rclone"), rclone_once)
        measure(row.baseline("passthrough"), passthrough_once)
        measure(row.baseline("JuiceFS"), juicefs_once)
    row.notes.append(
        "every repetition remounts (no daemon memory) and drops page caches; "
        "JuiceFS reads from its own default cache, filled and warmed up first"
    )


def _warm_vfs_cache(ctx: Ctx) -> None:
    b = ctx.bench
    with b.mounted(b.mount_vfs(f"{DATASET}@v1", ctx.cache_main)) as m:
        dd_read(m.path / ctx.large)


def mount_tree(
    ctx: Ctx, kind: str, tree: str, cache: Path, vfs_spec: str = f"{DATASET}@v1"
) -> tuple[Mount, Path]:
    """Mount the copy of `tree` (v1, images, wide) that `kind` reads (vfs: the
    version `vfs_spec`; rclone and s3fs: s3://plain/TREE; juicefs: /TREE of its
    volume) with `cache` as its cache directory; returns the mount and the tree's
    root in it."""
    b = ctx.bench
    if kind == "vfs":
        m = b.mount_vfs(vfs_spec, cache)
        return m, m.path
    if kind == "rclone":
        m = b.mount_rclone(f"plain/{tree}", cache)
        return m, m.path
    if kind == "s3fs":
        m = b.mount_s3fs(f"plain/{tree}", cache)
        return m, m.path
    if kind == "juicefs":
        m = b.mount_juicefs(cache)
        return m, m.path / tree
    raise ValueError(kind)


@contextmanager
def cold_mount(
    ctx: Ctx, kind: str, tree: str = "v1", vfs_spec: str = f"{DATASET}@v1"
) -> Iterator[Path]:
    """A fresh mount of `tree` by `kind` over an empty cache directory, with page
    caches dropped; yields the tree's root. The cache directory goes afterwards."""
    b = ctx.bench
    cache = b.fresh(f"{kind}-cache")
    try:
        m, root = mount_tree(ctx, kind, tree, cache, vfs_spec)
        with b.mounted(m):
            b.drop_caches()
            yield root
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def row_cold_read(ctx: Ctx, row: Row) -> None:
    b = ctx.bench
    ctx.ensure_v1()
    ctx.ensure_plain()
    key = f"v1/{ctx.large}"
    client = b.client()

    def mounted_cold(kind: str) -> float:
        if kind == "juicefs":
            ctx.ensure_juicefs("v1", ctx.src)
        with cold_mount(ctx, kind) as root:
            return _dd_mbps(root / ctx.large)

    def connector() -> float:
        b.drop_caches()
        doc = torch_job(b, "s3-large", "--uri", f"s3://plain/{key}")
        return float(doc["bytes"]) / float(doc["seconds"]) / MB

    def single() -> float:
        b.drop_caches()
        secs, n = s3_get_single(client, "plain", key)
        return n / secs / MB

    def ranges() -> float:
        b.drop_caches()
        secs, n = s3_get_ranges(client, "plain", key, ctx.spec.large_size, threads=8)
        return n / secs / MB

    try:
        for _ in range(ctx.reps):
            measure(row.vfs, lambda: mounted_cold("vfs"))
            measure(row.baseline("boto3 single GET"), single)
            measure(row.baseline("boto3 8×8 MiB ranges"), ranges)
            measure(row.baseline("rclone"), lambda: mounted_cold("rclone"))
            measure(row.baseline("s3fs"), lambda: mounted_cold("s3fs"))
            measure(row.baseline("JuiceFS"), lambda: mounted_cold("juicefs"))
            measure(row.baseline("s3torchconnector"), connector)
    finally:
        client.close()
    row.notes.append(
        "vfs, rclone, s3fs, JuiceFS: empty cache dir, fresh mount, page caches dropped; "
        "s3torchconnector: an S3Reader of S3MapDataset read in 1 MiB reads, a new process"
    )


# -- small files ------------------------------------------------------------------------------


def row_small_cold(ctx: Ctx, row: Row) -> None:
    ctx.ensure_v1()
    ctx.ensure_plain()
    sample = ctx.small_sample()

    def cold(kind: str) -> float:
        if kind == "juicefs":
            ctx.ensure_juicefs("v1", ctx.src)
        with cold_mount(ctx, kind) as root:
            secs, _ = read_files([str(root / p) for p in sample], threads=8)
            return len(sample) / secs

    def connector() -> float:
        ctx.bench.drop_caches()
        return _connector_files(ctx, sample, threads=8, passes=1)

    for _ in range(ctx.reps):
        measure(row.vfs, lambda: cold("vfs"))
        for name, kind in (("rclone", "rclone"), ("s3fs", "s3fs"), ("JuiceFS", "juicefs")):
            measure(row.baseline(name), lambda k=kind: cold(k))  # type: ignore[misc]
        measure(row.baseline("s3torchconnector"), connector)
    row.notes.append(
        f"{len(sample)} files of ~{ctx.spec.small_mean // 1000} KB in a seeded shuffled order; "
        "fresh mount and cache each time, so lookups of cold directories are included; "
        "s3torchconnector: 8 threads reading S3MapDataset items (one GET each), a new process"
    )


def _connector_files(ctx: Ctx, sample: list[str], threads: int, passes: int) -> float:
    """Files/s of the last of `passes` reads of `sample` through S3MapDataset items."""
    listing = ctx.bench.fresh("connector-list") / "uris.txt"
    listing.write_text("".join(f"s3://plain/v1/{p}\n" for p in sample))
    doc = torch_job(
        ctx.bench, "s3-small", "--list", listing, "--threads", threads, "--passes", passes
    )
    last = doc["passes"][-1]
    return float(last["files"]) / float(last["seconds"])


def row_small_warm(ctx: Ctx, row: Row) -> None:
    b = ctx.bench
    ctx.ensure_v1()
    ctx.ensure_plain()  # s3torchconnector reads the plain copy
    sample = ctx.small_sample()
    mounts: list[Mount] = []
    roots: dict[str, Path] = {}

    def setup(name: str, fn: Callable[[], Mount], sub: str = "") -> None:
        def go() -> None:
            m = fn()
            mounts.append(m)
            root = m.path / sub if sub else m.path
            read_files([str(root / p) for p in sample], threads=8)  # warm
            roots[name] = root

        attempt(row.vfs if name == "vfs" else row.baseline(name), lambda: go())

    def juicefs() -> Mount:
        ctx.ensure_juicefs("v1", ctx.src)
        return b.mount_juicefs(b.fresh("juicefs-cache"))

    try:
        setup("vfs", lambda: b.mount_vfs(f"{DATASET}@v1", ctx.cache_main))
        setup("passthrough", lambda: b.mount_passthrough(ctx.src))
        setup("JuiceFS", juicefs, sub="v1")
        for _ in range(ctx.reps):
            measure(
                row.baseline("s3torchconnector"),
                lambda: _connector_files(ctx, sample, threads=1, passes=2),
            )
            for fig in (row.vfs, row.baseline("passthrough"), row.baseline("JuiceFS")):
                root = roots.get(fig.name)
                if root is None:
                    continue

                def once(r: Path = root) -> float:
                    secs, _ = read_files([str(r / p) for p in sample], threads=1)
                    return len(sample) / secs

                measure(fig, once)
    finally:
        for m in mounts:
            m.close()
    row.notes.append(
        "s3torchconnector has no cache: its figure is a second pass of fresh GETs "
        "(1 thread over S3MapDataset items, after a first pass in the same process)"
    )


# -- whole version -----------------------------------------------------------------------------


def row_prefetch(ctx: Ctx, row: Row) -> None:
    b = ctx.bench
    ctx.ensure_v1()
    ctx.ensure_plain()
    client = b.client()
    total = ctx.v1_bytes

    def vfs_once() -> float:
        cache = b.fresh("prefetch-cache")
        try:
            b.drop_caches()
            t0 = time.perf_counter()
            doc = b.vfs_json("prefetch", f"{DATASET}@v1", "--cache-dir", cache)
            secs = time.perf_counter() - t0
            if doc.get("bytes_fetched", 0) < total * 0.99:
                raise RuntimeError(f"prefetch fetched only {doc.get('bytes_fetched')} bytes")
            return total / secs / MB
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    def boto_once() -> float:
        out = b.fresh("boto3-download")
        try:
            b.drop_caches()
            secs, n = s3_download_all(client, "plain", "v1", out, threads=16)
            if n != total:
                raise RuntimeError(f"boto3 downloaded {n} bytes, not {total}")
            return n / secs / MB
        finally:
            shutil.rmtree(out, ignore_errors=True)

    try:
        for _ in range(ctx.reps):
            measure(row.vfs, vfs_once)
            measure(row.baseline("boto3 bulk download"), boto_once)
    finally:
        client.close()
    row.notes.append(
        "vfs: whole `vfs prefetch` command (-j 16) into an empty cache; boto3: 16 threads, "
        "listing included, objects > 8 MiB in 8 MiB ranges, written to local files"
    )


def row_find(ctx: Ctx, row: Row) -> None:
    ctx.ensure_v1()
    ctx.ensure_plain()
    counts: dict[str, int] = {}

    def once(kind: str) -> float:
        with cold_mount(ctx, kind) as root:
            secs, n = find_all(root)
            counts[kind] = n
            return secs

    for _ in range(ctx.reps):
        measure(row.vfs, lambda: once("vfs"))
        for name in ("rclone", "s3fs"):
            measure(row.baseline(name), lambda k=name: once(k))  # type: ignore[misc]
    if counts:
        row.notes.append(
            "entries printed: "
            + ", ".join(f"{k} {v:,}" for k, v in counts.items())
            + "; fresh mount, empty cache dir, page caches dropped"
        )


# -- the Python API (issue 13) ----------------------------------------------------------------


def _api_files(
    ctx: Ctx, sample: list[str], cache: Path, threads: int, passes: int, hint: bool
) -> float:
    """Files/s of the last of `passes` reads of `sample` through vfs.open_version in a
    new process (scripts/bench/apijob.py), with `cache` as its chunk cache."""
    listing = ctx.bench.fresh("api-list") / "paths.txt"
    listing.write_text("".join(f"{p}\n" for p in sample))
    cmd = [
        PY, "-m", "scripts.bench.apijob", f"{DATASET}@v1", "--list", str(listing),
        "--cache-dir", str(cache), "--threads", str(threads), "--passes", str(passes),
    ]  # fmt: skip
    if hint:
        cmd.append("--hint")
    p = ctx.bench.run(cmd, cwd=ROOT)
    last = json.loads(p.stdout.strip().splitlines()[-1])["passes"][-1]
    return float(last["files"]) / float(last["seconds"])


def row_api_cold(ctx: Ctx, row: Row) -> None:
    ctx.ensure_v1()
    sample = ctx.small_sample()

    def api(hint: bool) -> float:
        cache = ctx.bench.fresh("api-cache")
        try:
            ctx.bench.drop_caches()
            return _api_files(ctx, sample, cache, threads=8, passes=1, hint=hint)
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    def mount() -> float:
        with cold_mount(ctx, "vfs") as root:
            secs, _ = read_files([str(root / p) for p in sample], threads=8)
            return len(sample) / secs

    for _ in range(ctx.reps):
        measure(row.vfs, lambda: api(True))
        measure(row.baseline("API, no hint"), lambda: api(False))
        measure(row.baseline("vfs mount"), mount)
    row.notes.append(
        f"the small-file sample ({len(sample)} files, shuffled), 8 threads, an empty cache "
        "and dropped page caches each time; vfs: Version.read_bytes with the order handed "
        "to Version.prefetch first (what OrderHintSampler does), in a new process"
    )


def row_api_warm(ctx: Ctx, row: Row) -> None:
    ctx.ensure_v1()
    sample = ctx.small_sample()
    b = ctx.bench
    cache = b.fresh("api-warm-cache")
    try:
        for _ in range(ctx.reps):
            # Two passes in one process: the first fills the cache, the second is timed.
            measure(row.vfs, lambda: _api_files(ctx, sample, cache, 1, 2, hint=False))
            with b.mounted(b.mount_vfs(f"{DATASET}@v1", cache)) as m:

                def warm_mount(root: Path = m.path) -> float:
                    read_files([str(root / p) for p in sample], threads=1)  # warm
                    secs, _ = read_files([str(root / p) for p in sample], threads=1)
                    return len(sample) / secs

                measure(row.baseline("vfs mount"), warm_mount)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    row.notes.append(
        "the same sample, 1 thread, second pass of one process (the first filled the "
        "machine's chunk cache); the mount's second pass is served by the page cache"
    )
