"""The PyTorch workloads of `make bench`, run in a process of their own.

`python -m scripts.bench.torchjobs JOB ...` prints one JSON document on stdout. torch
is imported here only, so the bench process stays light, a missing torch makes a
figure "not available" instead of stopping the bench, and the DataLoader's workers
fork a small process instead of the bench with its threads.

Jobs:
- `epoch`: DataLoader epochs over an ImageFolder, from a directory (a mount or local
  disk) or from an S3 prefix through s3torchconnector's `S3MapDataset`. Each item is
  decoded by PIL and turned into a CHW float tensor in [0, 1] (what torchvision's
  `ToTensor` does) inside the dataset, so the workers do the decoding. The first
  pass is cold, the following ones warm; each pass's seconds include building the
  dataset (listing) on the first pass and starting the workers on every pass.
- `s3-small`: every object of a list read whole through `S3MapDataset` items
  (`S3Reader.read()`), from N threads sharing one dataset, as a loader thread pool
  would.
- `s3-large`: one object read through an `S3Reader` in 1 MiB reads.

The connector reaches the bench's SeaweedFS by its endpoint URL, path-style, with the
credentials of the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

MiB = 1024 * 1024


def _connector() -> tuple[Any, Any]:
    """(S3MapDataset, its S3ClientConfig) for the bench's server."""
    from s3torchconnector import S3ClientConfig, S3MapDataset

    return S3MapDataset, S3ClientConfig(force_path_style=True)


def _to_tensor(data: bytes) -> Any:
    """Decode an image and return it as torchvision's ToTensor would: CHW float32 / 255."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        arr = np.array(im.convert("RGB"))  # a writable copy, as ToTensor makes
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div_(255.0)


class ImageFolder:
    """torchvision's ImageFolder without torchvision: class = parent directory,
    classes and files in sorted order; items are (tensor, class index)."""

    def __init__(self, root: str) -> None:
        self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        self.samples: list[tuple[str, int]] = []
        for k, name in enumerate(self.classes):
            d = os.path.join(root, name)
            self.samples += [(os.path.join(d, f), k) for f in sorted(os.listdir(d))]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, label = self.samples[i]
        with open(path, "rb") as f:
            return _to_tensor(f.read()), label


class _S3Decode:
    """The transform given to S3MapDataset: read the object, decode it, label it by
    its parent "directory"; a class (not a closure) so workers can pickle it."""

    def __init__(self, classes: list[str]) -> None:
        self.index = {c: k for k, c in enumerate(classes)}

    def __call__(self, reader: Any) -> tuple[Any, int]:
        label = self.index[reader.key.rsplit("/", 2)[-2]]
        return _to_tensor(reader.read()), label


def _s3_images(uri: str, endpoint: str, classes: list[str]) -> Any:
    dataset_cls, config = _connector()
    return dataset_cls.from_prefix(
        uri,
        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        endpoint=endpoint,
        transform=_S3Decode(classes),
        s3client_config=config,
    )


def job_epoch(args: argparse.Namespace) -> dict[str, Any]:
    import warnings

    import torch
    from torch.utils.data import DataLoader

    # 4 workers on a 2-CPU machine is the row's setting, not a mistake to warn about.
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    torch.set_num_threads(1)
    passes: list[float] = []
    images = 0
    dataset: Any = None
    for k in range(args.passes):
        t0 = time.perf_counter()
        if dataset is None:
            if args.s3:
                dataset = _s3_images(args.s3, args.endpoint, args.classes.split(","))
            else:
                dataset = ImageFolder(args.root)
        gen = torch.Generator().manual_seed(args.seed + k)
        loader = DataLoader(
            dataset,
            batch_size=args.batch,
            shuffle=True,
            num_workers=args.workers,
            generator=gen,
        )
        n = 0
        for x, _y in loader:
            n += int(x.shape[0])
        passes.append(time.perf_counter() - t0)
        if images and n != images:
            raise RuntimeError(f"pass {k} saw {n} images, pass 0 saw {images}")
        images = n
    return {"passes": passes, "images": images}


def _read_items(ds: Any, count: int, threads: int) -> tuple[float, int]:
    """(seconds, bytes) of reading items 0..count-1 of `ds` whole, in that order,
    shared by `threads` readers taking the next index from one counter."""
    it = iter(range(count))
    lock = threading.Lock()
    total = [0] * threads

    def worker(k: int) -> None:
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                return
            total[k] += len(ds[i].read())

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(worker, k) for k in range(threads)]:
            f.result()
    return time.perf_counter() - t0, sum(total)


def job_s3_small(args: argparse.Namespace) -> dict[str, Any]:
    dataset_cls, config = _connector()
    with open(args.list) as f:
        uris = [line.strip() for line in f if line.strip()]
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    ds = dataset_cls.from_objects(
        uris, region=region, endpoint=args.endpoint, s3client_config=config
    )
    out: dict[str, Any] = {"passes": []}
    for _ in range(args.passes):
        secs, n = _read_items(ds, len(uris), args.threads)
        out["passes"].append({"seconds": secs, "bytes": n, "files": len(uris)})
    return out


def job_s3_large(args: argparse.Namespace) -> dict[str, Any]:
    dataset_cls, config = _connector()
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    ds = dataset_cls.from_objects(
        [args.uri], region=region, endpoint=args.endpoint, s3client_config=config
    )
    t0 = time.perf_counter()
    reader = ds[0]
    n = 0
    while True:
        got = reader.read(MiB)
        if not got:
            break
        n += len(got)
    return {"seconds": time.perf_counter() - t0, "bytes": n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.torchjobs")
    sub = p.add_subparsers(dest="job", required=True)
    e = sub.add_parser("epoch")
    where = e.add_mutually_exclusive_group(required=True)
    where.add_argument("--root", help="an ImageFolder directory")
    where.add_argument("--s3", help="an S3 prefix URI holding CLASS/IMAGE objects")
    e.add_argument("--classes", default="", help="comma-separated class names (--s3)")
    e.add_argument("--passes", type=int, default=2)
    e.add_argument("--workers", type=int, default=4)
    e.add_argument("--batch", type=int, default=64)
    e.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("s3-small")
    s.add_argument("--list", required=True, help="a file of s3:// URIs, one a line")
    s.add_argument("--threads", type=int, default=8)
    s.add_argument("--passes", type=int, default=1)
    g = sub.add_parser("s3-large")
    g.add_argument("--uri", required=True)
    for q in (e, s, g):
        q.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL", ""))
    args = p.parse_args(argv)
    jobs = {"epoch": job_epoch, "s3-small": job_s3_small, "s3-large": job_s3_large}
    doc = jobs[args.job](args)
    json.dump(doc, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
