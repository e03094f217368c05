"""Generated source trees for round-trip tests, and a comparison that says what differs."""

from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path

from vfs import chunker
from vfs.reader import Version


def make_tree(root: Path, seed: int = 1, big: bool = False) -> Path:
    """A tree with the awkward cases: empty files and dirs, symlinks (one pointing
    outside), unicode and spaces in names, files exactly at chunk boundaries."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty.txt").write_bytes(b"")
    (root / "empty dir").mkdir()
    (root / "nested" / "deeper" / "deepest").mkdir(parents=True)
    (root / "nested" / "deeper" / "deepest" / "leaf.bin").write_bytes(rng.randbytes(1000))
    (root / "ünïcødé ✓ name.txt").write_text("snowman ☃\n")
    (root / "with space.csv").write_text("a,b\n1,2\n")
    for size in (1, chunker.MIN_SIZE - 1, chunker.MIN_SIZE, chunker.MIN_SIZE + 1, chunker.MAX_SIZE):
        (root / f"boundary-{size}.bin").write_bytes(rng.randbytes(size))
    (root / "text-compressible.txt").write_bytes(b"the same line again\n" * 50_000)
    imgs = root / "images"
    imgs.mkdir()
    for i in range(40):
        (imgs / f"{i:04d}.png").write_bytes(rng.randbytes(rng.randint(100, 60_000)))
    os.symlink("with space.csv", root / "link-to-csv")
    os.symlink("/etc/passwd", root / "link-outside")
    os.symlink("nested/deeper", root / "link-to-dir")
    os.chmod(root / "with space.csv", 0o600)
    os.chmod(imgs / "0001.png", 0o755)
    if big:
        (root / "big.bin").write_bytes(rng.randbytes(12 * 1024 * 1024 + 12345))
    return root


def make_sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(size // 2)
        f.write(b"a needle in the middle of a sparse file")


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def snapshot_fs(root: Path) -> dict[str, tuple]:
    """path -> (kind, mode, size, sha256 or target) for everything below root."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mode & 0o777)
            else:
                out[rel] = ("file", st.st_mode & 0o777, st.st_size, _sha(p), st.st_mtime_ns)
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
    return out


def snapshot_version(v: Version) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for path, f in v.walk():
        rel = path.decode("utf-8", "surrogateescape")
        e = f.entry
        if e.is_symlink:
            out[rel] = ("symlink", e.target.decode("utf-8", "surrogateescape"))
        elif e.is_dir:
            out[rel] = ("dir", e.mode & 0o777)
        else:
            h = hashlib.sha256()
            with v.open(path) as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
            out[rel] = ("file", e.mode & 0o777, e.size, h.hexdigest(), e.mtime_ns)
    return out
