"""The epoch rows of `make bench`: a PyTorch DataLoader epoch over an ImageFolder of
real JPEG photographs (data.generate_images), cold and warm, in images/s.

Every competitor runs the same job (torchjobs.py `epoch`: 4 workers, shuffled,
batch 64, PIL decode and a ToTensor equivalent inside the dataset) in a new process:
- local disk: the source folder, page caches dropped (the ceiling);
- passthrough: the same folder through scripts/passthrough.py, the least a pyfuse3
  filesystem does per request, page caches dropped: the ceiling of a Python FUSE
  daemon on the machine (vfs's warm epoch is one `open` and one `release` per image
  for its daemon, as this one's is);
- vfs, rclone, s3fs, JuiceFS: a fresh mount over an empty cache directory, page
  caches dropped;
- s3torchconnector: `S3MapDataset.from_prefix` over s3://plain/images/ with a
  transform that reads and decodes each object (it has no cache: its warm pass
  fetches again).
The first pass of the process is the cold figure, the second (same mount, same
dataset object) the warm one; the two rows share one measurement (`Ctx.shared`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import data as benchdata
from .ctx import DATASET_IMAGES, Ctx, measure
from .read import cold_mount
from .report import Figure, Row
from .work import torch_job

# (figure name, how it reads); "local" and "connector" have no mount.
COMPETITORS = (
    ("vfs", "vfs"),
    ("local disk", "local"),
    ("passthrough", "passthrough"),
    ("rclone", "rclone"),
    ("s3fs", "s3fs"),
    ("JuiceFS", "juicefs"),
    ("s3torchconnector", "connector"),
)
PEERS = ("rclone", "s3fs", "JuiceFS", "s3torchconnector")


@dataclass
class Epochs:
    """Per competitor, its (cold, warm) images/s of each repetition, or why not."""

    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    images: int = 0


def _one(ctx: Ctx, kind: str) -> tuple[float, float]:
    b = ctx.bench
    job = ["--passes", "2", "--workers", "4", "--batch", "64", "--seed", ctx.spec.seed]
    if kind == "local":
        assert ctx.images_src is not None
        b.drop_caches()
        doc = torch_job(b, "epoch", "--root", ctx.images_src, *job)
    elif kind == "passthrough":
        assert ctx.images_src is not None
        with b.mounted(b.mount_passthrough(ctx.images_src)) as m:
            b.drop_caches()
            doc = torch_job(b, "epoch", "--root", m.path, *job)
    elif kind == "connector":
        b.drop_caches()
        classes = ",".join(f"c{k:02d}" for k in range(benchdata.IMAGE_CLASSES))
        doc = torch_job(b, "epoch", "--s3", "s3://plain/images/", "--classes", classes, *job)
    else:
        if kind == "juicefs":
            assert ctx.images_src is not None
            ctx.ensure_juicefs("images", ctx.images_src)
        with cold_mount(ctx, kind, "images", f"{DATASET_IMAGES}@v1") as root:
            doc = torch_job(b, "epoch", "--root", root, *job)
    n = int(doc["images"])
    if n != ctx.image_count:
        raise RuntimeError(f"the epoch saw {n} images, not {ctx.image_count}")
    cold, warm = doc["passes"]
    return n / float(cold), n / float(warm)


def epochs(ctx: Ctx) -> Epochs:
    """Measure every competitor once per repetition (shared by both rows)."""
    got = ctx.shared.get("epoch")
    if isinstance(got, Epochs):
        return got
    ctx.ensure_images()
    out = Epochs(images=ctx.image_count)
    for _ in range(epoch_reps(ctx)):
        for name, kind in COMPETITORS:
            if name in out.failed:
                continue
            # `measure` turns a competitor's failure into its reason, as in every row.
            probe = Figure(name, "images/s")
            pairs = out.samples.setdefault(name, [])
            measure(probe, lambda k=kind, p=pairs: (p.append(_one(ctx, k)), None)[1])  # type: ignore[misc]
            if probe.unavailable and name not in out.failed:
                out.failed[name] = probe.unavailable
    ctx.shared["epoch"] = out
    return out


def epoch_reps(ctx: Ctx) -> int:
    """One epoch pair (cold, warm) per competitor, also in a full run: the epoch is
    CPU-bound (decoding, the float tensors' trip through shared memory), a --quick
    cold epoch of 2,000 images took 7 to 32 s per competitor on the 2-CPU machine,
    so 7 competitors x 2 epochs of 20,000 images already take 15 to 40 minutes."""
    del ctx
    return 1


def _fill(ctx: Ctx, row: Row, which: int) -> None:
    res = epochs(ctx)
    for fig in [row.vfs, *row.baselines]:
        if fig.name in res.failed:
            fig.fail(res.failed[fig.name])
        for pair in res.samples.get(fig.name, []):
            fig.add(pair[which])
    row.notes.append(
        f"{res.images:,} JPEG images of {benchdata.IMAGE_SIDE}×{benchdata.IMAGE_SIDE} "
        f"({ctx.images_bytes / 1e6:.0f} MB) in {benchdata.IMAGE_CLASSES} classes; DataLoader "
        "with 4 workers, shuffled, batch 64, PIL decode + ToTensor in the dataset; "
        f"{epoch_reps(ctx)} epoch(s) per competitor"
    )


def row_epoch_cold(ctx: Ctx, row: Row) -> None:
    _fill(ctx, row, 0)
    row.notes.append(
        "cold: a new process, fresh mount over an empty cache dir, page caches dropped; "
        "the time includes listing the folder (building the dataset) and starting workers"
    )


def row_epoch_warm(ctx: Ctx, row: Row) -> None:
    _fill(ctx, row, 1)
    row.notes.append(
        "warm: the second epoch of the same process and mount; s3torchconnector fetches "
        "every image again (it has no cache)"
    )
