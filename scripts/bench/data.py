"""The benchmark's data: a deterministic, seeded dataset and its v2.

`generate(root, spec)` writes v1: `spec.small_files` files of about `small_mean`
bytes spread over `spec.dirs` directories (`small/d000/f000000.bin` ...), and
`spec.large_files` files of `large_size` bytes (`large/big-0.bin` ...). The same
seed gives the same bytes, names and mtimes on every machine, so commit ids repeat.

`make_v2(root, spec)` turns v1 into v2 in place, as the issue asks: it adds
`v2_add` small files, rewrites `v2_modify` small files with new bytes (same size),
overwrites 1 MiB in the middle of `large/big-0.bin` and appends 4 MiB to it. It
returns the bytes really changed, the yardstick of the "bytes stored for v2" row.

Content is incompressible (random bytes), so compression neither helps nor hurts any
competitor: every tool moves the same number of bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

MiB = 1024 * 1024
# A fixed mtime (2024-01-01T00:00:00Z): the same seed gives the same version id.
MTIME_NS = 1_704_067_200 * 1_000_000_000
V2_MTIME_NS = MTIME_NS + 86_400 * 1_000_000_000
_WRITE_PIECE = 8 * MiB


@dataclass(frozen=True)
class DataSpec:
    small_files: int = 20_000
    dirs: int = 100
    small_mean: int = 50_000
    large_files: int = 4
    large_size: int = 128 * MiB
    v2_add: int = 200
    v2_modify: int = 100
    v2_overwrite: int = 1 * MiB
    v2_append: int = 4 * MiB
    seed: int = 20240101

    @property
    def v1_bytes(self) -> int:
        """Exact bytes of v1 (the sizes are drawn from the seed too)."""
        return sum(self.small_size(i) for i in range(self.small_files)) + (
            self.large_files * self.large_size
        )

    def small_size(self, i: int) -> int:
        """Sizes spread evenly over [mean/2, 3*mean/2), a fixed function of i."""
        half = self.small_mean // 2
        return half + (i * 7919 + self.seed) % (2 * half)

    def small_path(self, i: int) -> str:
        return f"small/d{i % self.dirs:03d}/f{i:06d}.bin"

    def large_path(self, i: int) -> str:
        return f"large/big-{i}.bin"


DEFAULT = DataSpec()
QUICK = DataSpec(small_files=2_000, dirs=20, large_files=2, v2_add=20, v2_modify=10)
# The metadata scale: a million small files (a few hundred bytes each), no large ones.
MILLION = DataSpec(
    small_files=1_000_000, dirs=1000, small_mean=256, large_files=0, v2_add=0, v2_modify=0
)


def scale_spec(files: int) -> DataSpec:
    """MILLION's shape (1,000 files of ~256 bytes a directory) at `files` files."""
    return DataSpec(**{**MILLION.__dict__, "small_files": files, "dirs": files // 1000})


def _rng(spec: DataSpec, *key: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, *key])


def _write(path: str, data: bytes | memoryview, mtime_ns: int) -> None:
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _write_large(path: str, rng: np.random.Generator, size: int, mtime_ns: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, _WRITE_PIECE)
            f.write(rng.bytes(n))
            left -= n
    os.utime(path, ns=(mtime_ns, mtime_ns))


def generate(root: str, spec: DataSpec) -> int:
    """Write v1 of `spec` into `root` (created); returns its bytes."""
    for d in range(spec.dirs):
        os.makedirs(os.path.join(root, f"small/d{d:03d}"), exist_ok=True)
    total = 0
    # One generator for all small files: per-file generators cost more than the bytes
    # when files are tiny, and the order is fixed, so the bytes are still the seed's.
    rng = _rng(spec, 1)
    for i in range(spec.small_files):
        n = spec.small_size(i)
        _write(os.path.join(root, spec.small_path(i)), rng.bytes(n), MTIME_NS)
        total += n
    if spec.large_files:
        os.makedirs(os.path.join(root, "large"), exist_ok=True)
    for i in range(spec.large_files):
        _write_large(
            os.path.join(root, spec.large_path(i)), _rng(spec, 2, i), spec.large_size, MTIME_NS
        )
        total += spec.large_size
    return total


def v2_modified(spec: DataSpec) -> list[int]:
    """Indexes of the small files v2 rewrites: every k-th, so all dirs see some."""
    if spec.v2_modify == 0:
        return []
    step = max(spec.small_files // spec.v2_modify, 1)
    return [i * step for i in range(spec.v2_modify)]


def untouched_by_v2(spec: DataSpec) -> list[int]:
    """Small files v2 leaves alone (the read rows sample from these)."""
    changed = set(v2_modified(spec))
    return [i for i in range(spec.small_files) if i not in changed]


def make_v2(root: str, spec: DataSpec) -> int:
    """Turn v1 in `root` into v2; returns the bytes really changed."""
    rng = _rng(spec, 3)
    changed = 0
    for j in range(spec.v2_add):
        i = spec.small_files + j
        n = spec.small_size(i)
        path = os.path.join(root, f"small/d{i % spec.dirs:03d}/new{j:05d}.bin")
        _write(path, rng.bytes(n), V2_MTIME_NS)
        changed += n
    for i in v2_modified(spec):
        n = spec.small_size(i)
        _write(os.path.join(root, spec.small_path(i)), rng.bytes(n), V2_MTIME_NS)
        changed += n
    if spec.large_files:
        path = os.path.join(root, spec.large_path(0))
        with open(path, "r+b") as f:
            f.seek(spec.large_size // 2)
            f.write(rng.bytes(spec.v2_overwrite))
            f.seek(0, os.SEEK_END)
            f.write(rng.bytes(spec.v2_append))
        os.utime(path, ns=(V2_MTIME_NS, V2_MTIME_NS))
        changed += spec.v2_overwrite + spec.v2_append
    return changed


def v2_bytes(spec: DataSpec) -> int:
    """The bytes make_v2 changes, without running it."""
    add = sum(spec.small_size(spec.small_files + j) for j in range(spec.v2_add))
    mod = sum(spec.small_size(i) for i in v2_modified(spec))
    large = spec.v2_overwrite + spec.v2_append if spec.large_files else 0
    return add + mod + large


# --- the epoch row's images and the ls_l row's wide directory -----------------------------

IMAGE_SIDE = 224  # ImageNet training size; every image has the same size, so the default collate can stack them
IMAGE_CLASSES = 10


def image_path(i: int) -> str:
    return f"c{i % IMAGE_CLASSES:02d}/img{i:06d}.jpg"


def generate_images(root: str, count: int, seed: int) -> int:
    """An ImageFolder of `count` real photographs: crops of scikit-learn's two bundled
    sample photos (china.jpg, flower.jpg) at random places and scales (a sixth of the
    photo to all of it), some mirrored, scaled to 256 x 256 and saved as JPEG
    (quality 90, ~20-30 KB) in IMAGE_CLASSES class folders. Returns the bytes written.
    The same seed gives the same files."""
    import random

    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rnd = random.Random(seed)
    for k in range(IMAGE_CLASSES):
        os.makedirs(os.path.join(root, f"c{k:02d}"), exist_ok=True)
    total = 0
    for i in range(count):
        im = photos[rnd.randrange(len(photos))]
        w, h = im.size
        side = rnd.randint(min(w, h) // 6, min(w, h))
        x, y = rnd.randint(0, w - side), rnd.randint(0, h - side)
        crop = im.crop((x, y, x + side, y + side)).resize(
            (IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BILINEAR
        )
        if rnd.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = os.path.join(root, image_path(i))
        crop.save(path, "JPEG", quality=90)
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
        total += os.path.getsize(path)
    return total


def wide_name(i: int) -> str:
    return f"e{i:07d}"


def generate_wide(root: str, count: int) -> None:
    """One directory of `count` empty files (`ls -l` and `du` read metadata only, and
    empty files cost every store the least to create)."""
    os.makedirs(root, exist_ok=True)
    for i in range(count):
        fd = os.open(os.path.join(root, wide_name(i)), os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)
        os.utime(os.path.join(root, wide_name(i)), ns=(MTIME_NS, MTIME_NS))
