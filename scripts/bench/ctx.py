"""What the rows of `make bench` share, built on first use, and how a row measures.

`Ctx` holds the v1 source tree, the vfs store with v1 (and v2), the plain copy of v1
that rclone, s3fs, boto3 and s3torchconnector read (s3://plain/v1), the DVC
repository (its remote under s3://dvc/), the JuiceFS volume's copies (one folder per
tree: /v1, /images, /wide), the epoch row's images (vfs dataset `images`,
s3://plain/images) and the ls_l row's wide directory (vfs dataset `wide`,
s3://plain/wide). Each `ensure_*` builds its part once, untimed, unless a timed row
(commit) already did.

`measure(fig, fn)` adds one sample to a figure or marks it "not available" with the
reason, so a competitor that cannot run here never stops the others and is never
given a made-up number.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import data as benchdata
from .env import Bench, Unavailable
from .report import Figure
from .work import DvcRepo

log = logging.getLogger("bench")

MB = 1e6
DATASET = "bench"
DATASET_1M = "bench1m"
DATASET_IMAGES = "images"
DATASET_WIDE = "wide"


@dataclass
class Ctx:
    bench: Bench
    spec: benchdata.DataSpec
    reps: int
    quick: bool
    scale_files: int  # 0, or the commit rows' file count (--scale)
    src: Path = Path()
    cache_main: Path = Path()  # the machine's vfs cache for warm rows and commits
    v1_bytes: int = 0
    v1_id: str = ""
    v2_id: str = ""
    have_v1: bool = False
    have_plain: bool = False
    dvc_repo: DvcRepo | None = None
    dvc_remote: str = ""
    dvc_data: Path | None = None  # the DVC work tree's data, before a repo holds it
    v2_growth: dict[str, float] = field(default_factory=dict)
    v2_notes: list[str] = field(default_factory=list)
    have_v2: bool = False
    src_1m: Path | None = None
    src_scale: Path | None = None  # the commit rows' tree (scale_files files)
    notes: list[str] = field(default_factory=list)
    juicefs_trees: set[str] = field(default_factory=set)
    juicefs_formatted: bool = False
    images_src: Path | None = None
    images_bytes: int = 0
    images_plain: bool = False
    wide_src: Path | None = None
    wide_plain: bool = False
    wide_meta: str = ""  # the JuiceFS volume holding the wide directory
    shared: dict[str, object] = field(default_factory=dict)  # results rows share

    @property
    def image_count(self) -> int:
        return 2_000 if self.quick else 20_000

    @property
    def wide_count(self) -> int:
        return 20_000 if self.quick else 200_000

    @property
    def large(self) -> str:
        """The large file the read rows use: one v2 leaves alone."""
        return self.spec.large_path(1 if self.spec.large_files > 1 else 0)

    def small_sample(self) -> list[str]:
        """The small files of the small-file rows: a seeded, shuffled sample."""
        n = 500 if self.quick else 2000
        pool = benchdata.untouched_by_v2(self.spec)
        rnd = random.Random(self.spec.seed)
        return [self.spec.small_path(i) for i in rnd.sample(pool, min(n, len(pool)))]

    # -- shared state, built on first use -------------------------------------------------

    def ensure_v1(self) -> None:
        """v1 committed to the vfs store (tag v1), untimed unless the commit row did it."""
        if self.have_v1:
            return
        doc = self.bench.vfs_json(
            "commit", self.src, DATASET, "--tag", "v1", "--cache-dir", self.cache_main
        )
        self.v1_id = doc["id"]
        self.have_v1 = True

    def ensure_plain(self) -> None:
        """The plain copy of v1 at s3://plain/v1 for rclone, s3fs and boto3."""
        if self.have_plain:
            return
        if shutil.which("rclone"):
            self.bench.run(rclone_copy(self.src, "plain/v1"))
        else:
            client = self.bench.client()
            for path in sorted(self.src.rglob("*")):
                if path.is_file():
                    client.upload_file(str(path), "plain", f"v1/{path.relative_to(self.src)}")
            client.close()
        self.have_plain = True

    def dvc_fresh_data(self) -> Path:
        """The DVC work tree's copy of v1 (DVC rewrites the files it adds, so it must
        not touch the source vfs commits from)."""
        if self.dvc_data is None:
            if self.bench.dvc is None:
                raise Unavailable(self.bench.dvc_why)
            dst = self.bench.workdir / "dvc-data"
            self.bench.run(["cp", "-a", str(self.src), str(dst)])
            self.dvc_data = dst
        return self.dvc_data

    def ensure_dvc(self) -> DvcRepo:
        """A DVC repository with v1 added, pushed, committed and tagged."""
        if self.dvc_repo is not None:
            return self.dvc_repo
        if self.bench.dvc is None:
            raise Unavailable(self.bench.dvc_why)
        repo = DvcRepo.init(self.bench, "dvc/v1")
        os.rename(self.dvc_fresh_data(), repo.data)
        repo.dvc("add", "-q", "data")
        repo.dvc("push", "-q")
        git_commit(repo, "v1")
        self.dvc_repo, self.dvc_remote = repo, "dvc/v1"
        return repo

    def ensure_v2(self) -> None:
        """v2 made in both source trees and committed by vfs and by DVC; records the
        bytes each store grew by."""
        if self.have_v2:
            return
        self.ensure_v1()
        b = self.bench
        before = b.prefix_bytes("vfs", "main")
        changed = benchdata.make_v2(str(self.src), self.spec)
        t0 = time.perf_counter()
        doc = b.vfs_json("commit", self.src, DATASET, "--tag", "v2", "--cache-dir", self.cache_main)
        vfs_s = time.perf_counter() - t0
        self.v2_id = doc["id"]
        self.v2_growth["vfs"] = (b.prefix_bytes("vfs", "main") - before) / MB
        self.v2_growth["change"] = changed / MB
        self.v2_notes.append(
            f"vfs commit of v2: {vfs_s:.1f} s, {doc['bytes_read'] / MB:.0f} MB read, "
            f"{doc['bytes_uploaded'] / MB:.1f} MB uploaded"
        )
        try:
            repo = self.ensure_dvc()
            before = b.prefix_bytes("dvc", self.dvc_remote.split("/", 1)[1])
            benchdata.make_v2(str(repo.data), self.spec)
            t0 = time.perf_counter()
            repo.dvc("add", "-q", "data")
            repo.dvc("push", "-q")
            dvc_s = time.perf_counter() - t0
            git_commit(repo, "v2")
            grown = b.prefix_bytes("dvc", self.dvc_remote.split("/", 1)[1]) - before
            self.v2_growth["DVC"] = grown / MB
            self.v2_notes.append(f"dvc add + push of v2: {dvc_s:.1f} s")
        except (Unavailable, RuntimeError) as e:
            self.v2_notes.append(f"DVC v2 not available: {e}")
        self.have_v2 = True

    def _generate_scale(self, files: int) -> tuple[Path, float]:
        src = self.bench.workdir / f"src-{files // 1_000_000}m"
        t0 = time.perf_counter()
        if not src.exists():
            benchdata.generate(str(src), benchdata.scale_spec(files))
        return src, time.perf_counter() - t0

    def ensure_scale_src(self) -> Path:
        """The commit rows' tree of `scale_files` files, generated only (the commit
        rows commit it to local stores of their own)."""
        if self.src_scale is None:
            self.src_scale, gen_s = self._generate_scale(self.scale_files)
            self.notes.append(f"{self.scale_files:,}-file tree generated in {gen_s:.0f} s")
        return self.src_scale

    def ensure_1m(self) -> None:
        """The mount rows' 1M-file version, generated and committed to S3."""
        if self.src_1m is not None:
            return
        src, gen_s = self._generate_scale(1_000_000)
        t0 = time.perf_counter()
        self.bench.vfs_json(
            "commit", src, DATASET_1M, "--tag", "v1", "--cache-dir", self.cache_main
        )
        self.notes.append(
            f"1M-file version: generated in {gen_s:.0f} s, committed to S3 in "
            f"{time.perf_counter() - t0:.0f} s"
        )
        self.src_1m = src

    # -- the peers' copies and the new rows' data ----------------------------------------

    def ensure_juicefs(self, name: str, src: Path) -> None:
        """`src` copied into the JuiceFS volume as /name, through a writable mount (as
        its users fill it), with a cache directory thrown away afterwards."""
        if name in self.juicefs_trees:
            return
        b = self.bench
        if not self.juicefs_formatted:
            b.juicefs_format()
            self.juicefs_formatted = True
        cache = b.fresh("juicefs-fill-cache")
        t0 = time.perf_counter()
        try:
            with b.mounted(b.mount_juicefs(cache, writable=True)) as m:
                b.run(["cp", "-a", f"{src}/.", str(m.path / name)])
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        log.info("copied %s into JuiceFS in %.0f s", name, time.perf_counter() - t0)
        self.juicefs_trees.add(name)

    def ensure_images(self) -> Path:
        """The epoch row's ImageFolder: local, committed as vfs dataset `images` (tag
        v1), and at s3://plain/images."""
        if self.images_src is None:
            src = self.bench.workdir / "images"
            t0 = time.perf_counter()
            self.images_bytes = benchdata.generate_images(
                str(src), self.image_count, self.spec.seed
            )
            log.info(
                "made %d images (%.0f MB) in %.0f s",
                self.image_count,
                self.images_bytes / MB,
                time.perf_counter() - t0,
            )
            self.bench.vfs_json(
                "commit", src, DATASET_IMAGES, "--tag", "v1", "--cache-dir", self.cache_main
            )
            self.images_src = src
        if not self.images_plain:
            self.bench.run(rclone_copy(self.images_src, "plain/images"))
            self.images_plain = True
        return self.images_src

    def ensure_wide(self) -> Path:
        """The ls_l row's directory of `wide_count` empty files: local, committed as vfs
        dataset `wide` (tag v1). The peers' copies come with `ensure_wide_peer`."""
        if self.wide_src is None:
            src = self.bench.workdir / "wide" / "dir"
            t0 = time.perf_counter()
            benchdata.generate_wide(str(src), self.wide_count)
            self.bench.vfs_json(
                "commit", src.parent, DATASET_WIDE, "--tag", "v1", "--cache-dir", self.cache_main
            )
            log.info("wide directory made and committed in %.0f s", time.perf_counter() - t0)
            self.wide_src = src
        return self.wide_src

    def ensure_wide_peer(self, kind: str) -> None:
        """The wide directory for rclone (s3://plain/wide/dir/, empty objects PUT by
        `rclone copy`, 64 at a time) or JuiceFS (a volume of its own, `wide_meta`)."""
        src = self.ensure_wide()
        b = self.bench
        t0 = time.perf_counter()
        if kind == "rclone" and not self.wide_plain:
            if shutil.which("rclone") is None:
                raise Unavailable("rclone is not installed (make bench-deps)")
            cmd = ["rclone", "copy", str(src.parent), "s3:plain/wide", "--no-check-dest"]
            b.run([*cmd, "--transfers", "64", "--checkers", "64"])
            self.wide_plain = True
        elif kind == "juicefs" and not self.wide_meta:
            names = [benchdata.wide_name(i) for i in range(self.wide_count)]
            self.wide_meta = b.juicefs_flat_volume("wide", names, benchdata.MTIME_NS // 10**9)
        else:
            return
        log.info("wide directory for %s made in %.0f s", kind, time.perf_counter() - t0)


def git_commit(repo: DvcRepo, tag: str) -> None:
    repo.git("add", "-A")
    repo.git("commit", "-qm", tag)
    repo.git("tag", tag)


def rclone_copy(src: Path, remote: str) -> list[str]:
    return ["rclone", "copy", str(src), f"s3:{remote}", "--transfers", "16", "--checkers", "16"]


def measure(fig: Figure, fn: Callable[[], float | None]) -> None:
    """Add one sample to `fig`, or mark it unavailable with the reason; a figure that
    failed once is not measured again."""
    if fig.unavailable:
        return
    try:
        x = fn()
    except (Unavailable, RuntimeError, OSError, ValueError, KeyError) as e:
        fig.fail(f"{type(e).__name__}: {e}" if not isinstance(e, Unavailable) else str(e))
        return
    if x is not None:
        fig.add(x)


def attempt(fig: Figure, fn: Callable[[], object]) -> bool:
    """Run an untimed step of a competitor (a mount, a warm-up); on failure mark its
    figure unavailable with the reason. True if it worked."""
    measure(fig, lambda: (fn(), None)[1])
    return not fig.unavailable
