"""`make demo`: the story of the seed article, told with vfs on real images.

A team keeps a small image dataset (scikit-learn's bundled handwritten digits, as
PNG files in class folders, plus labels.csv) and versions it the way the DVC article
describes: v1, then v2 with a new labelling scheme, then v3 with new images. With
vfs nothing is checked out: each version is mounted, read, diffed and switched in
place.

Everything runs against the embedded local store in .demo/store (no server).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
STORE = DEMO / "store"
CACHE = DEMO / "cache"
WORK = DEMO / "work" / "digits"
MNT = DEMO / "mnt"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

ENV = {**os.environ, "VFS_STORE": str(STORE), "VFS_CACHE_DIR": str(CACHE), "VFS_NO_PROGRESS": "1"}
VFS = [sys.executable, "-m", "vfs.cli"]


def say(text: str) -> None:
    print(f"\n\033[1m# {text}\033[0m", flush=True)


def sh(*args: str, show: bool = True, check: bool = True) -> str:
    """Run a command as a user would type it, echo it, and show what it prints."""
    printable = " ".join(a if " " not in a else repr(a) for a in args)
    if show:
        print(f"$ {printable.replace(str(DEMO) + '/', '')}", flush=True)
    cmd = [*VFS, *args[1:]] if args[0] == "vfs" else list(args)
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    out = (p.stdout + p.stderr).rstrip()
    if show and out:
        lines = out.splitlines()
        for line in lines[:25]:
            print(f"  {line}")
        if len(lines) > 25:
            print(f"  … ({len(lines) - 25} more lines)")
    if check and p.returncode != 0:
        raise SystemExit(f"demo: `{printable}` failed with exit code {p.returncode}")
    return p.stdout


def write_images(first: int, last: int) -> list[tuple[str, int]]:
    """Digits first..last-1 as 32x32 PNGs in class folders; returns (path, label)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = []
    for i in range(first, last):
        label = int(digits.target[i])
        pixels = (digits.images[i] * (255 / 16)).astype("uint8")
        img = Image.fromarray(255 - pixels, mode="L").resize((32, 32), Image.Resampling.NEAREST)
        rel = f"images/{label}/{i:04d}.png"
        (WORK / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(WORK / rel, optimize=False)
        rows.append((rel, label))
    return rows


def write_labels(rows: list[tuple[str, int]], scheme: str) -> None:
    with open(WORK / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        if scheme == "digit":
            w.writerow(["file", "label"])
            w.writerows(rows)
        else:
            w.writerow(["file", "label", "parity"])
            w.writerows((p, WORDS[label], "even" if label % 2 == 0 else "odd") for p, label in rows)


def show_image(path: Path) -> None:
    """Open a mounted PNG with Pillow, as training code would."""
    from PIL import Image

    print(f"$ python -c 'PIL.Image.open(\"{path.relative_to(DEMO)}\")'")
    with Image.open(path) as img:
        print(f"  {img.format} {img.size[0]}x{img.size[1]} {img.mode}, label {path.parent.name}")


def show_info(path: Path) -> None:
    """The diagnostics a mount's daemon gives of a file (`vfs info`)."""
    print(f"$ vfs info {path.relative_to(DEMO)}")
    out = subprocess.run([*VFS, "info", str(path)], env=ENV, capture_output=True, text=True)
    for line in (out.stdout or out.stderr).splitlines():
        print(f"  {line[:90]}")


def tree_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def unmount_quietly() -> None:
    if os.path.ismount(MNT):
        subprocess.run([*VFS, "umount", str(MNT)], env=ENV, capture_output=True)


def main() -> None:
    unmount_quietly()
    shutil.rmtree(DEMO, ignore_errors=True)
    WORK.mkdir(parents=True)
    MNT.mkdir(parents=True)

    say("v1: 1,500 handwritten digits as PNGs in class folders, and labels.csv")
    rows = write_images(0, 1500)
    write_labels(rows, "digit")
    sh("vfs", "commit", str(WORK), "digits", "-m", "v1: digits in class folders", "--tag", "v1")
    copies = tree_bytes(WORK)  # what a copy of each version would take

    say("v2: a new labelling scheme (words plus parity); the images are untouched")
    write_labels(rows, "words")
    sh(
        "vfs",
        "commit",
        str(WORK),
        "digits",
        "-m",
        "v2: labels as words, with parity",
        "--tag",
        "v2",
    )
    copies += tree_bytes(WORK)

    say("v3: 297 new images")
    rows += write_images(1500, 1797)
    write_labels(rows, "words")
    sh("vfs", "commit", str(WORK), "digits", "-m", "v3: add the remaining digits", "--tag", "v3")
    copies += tree_bytes(WORK)

    say("history, and what each version changed")
    sh("vfs", "log", "digits", "-n", "3")
    sh("vfs", "ls")
    sh("vfs", "diff", "digits@v1", "@v2")
    sh("vfs", "diff", "digits@v2", "@v3", "--stat")
    packs = tree_bytes(STORE / "packs")
    meta = tree_bytes(STORE) - packs
    print(
        f"  a copy of each version would take {copies / 1024:.0f} KiB; the store holds all three in"
        f" {(packs + meta) / 1024:.0f} KiB:\n"
        f"  {packs / 1024:.0f} KiB of packs (each image once) and {meta / 1024:.0f} KiB of trees and"
        " chunk locations,\n  which for 200-byte images weigh as much as the pixels"
    )

    say("mount v1: a read-only directory; nothing is downloaded up front")
    t0 = time.monotonic()
    sh("vfs", "mount", "digits@v1", str(MNT))
    print(f"  mounted in {time.monotonic() - t0:.2f} s")
    sh("ls", str(MNT))
    sh("head", "-3", str(MNT / "labels.csv"))
    sh("sh", "-c", f"find {MNT}/images -type f | wc -l")
    show_image(MNT / "images/3/0003.png")
    show_info(MNT / "labels.csv")

    say("switch the same mount to v3 in place: no checkout, no copy")
    t0 = time.monotonic()
    sh("vfs", "switch", str(MNT), "v3")
    print(f"  switched in {(time.monotonic() - t0) * 1000:.0f} ms (whole command)")
    sh("head", "-3", str(MNT / "labels.csv"))
    sh("sh", "-c", f"find {MNT}/images -type f | wc -l")
    sh("vfs", "umount", str(MNT))

    say("every version at once: @tag and @branch directories")
    sh("vfs", "mount", "digits", str(MNT))
    sh("ls", str(MNT))
    sh("diff", "-q", str(MNT / "@v1/labels.csv"), str(MNT / "@v2/labels.csv"), check=False)
    sh(
        "sh",
        "-c",
        f"cmp {MNT}/@v1/images/0/0000.png {MNT}/@v3/images/0/0000.png && echo 'same bytes in v1 and v3'",
    )
    sh("vfs", "umount", str(MNT))

    say("roll back to v2, keeping history")
    sh("vfs", "rollback", "digits@v2")
    sh("vfs", "log", "digits", "-n", "1")
    sh("vfs", "cache", "stats", check=False)
    print("\ndemo done: store in .demo/store; run `make test` for the suite.")


if __name__ == "__main__":
    try:
        main()
    finally:
        unmount_quietly()
