"""Files cut in blocks: the same chunks as a cut of the whole file, and a file that moves
while it is read is refused, not cut."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from vfs import chunker

MiB = 1024 * 1024


def _whole(data: bytes) -> list[bytes]:
    return [bytes(c) for c in chunker.chunk_bytes(data)]


@pytest.mark.parametrize("size", [chunker.MIN_SIZE + 1, 3 * MiB + 5, 8 * MiB, 29 * MiB + 123])
def test_a_file_cut_in_blocks_gives_the_chunks_of_a_whole_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(chunker, "READ_BLOCK", 2 * chunker.MAX_SIZE)  # many blocks
    rng = random.Random(size)
    # Random bytes are cut near the mean; a run of one byte is cut only at MAX_SIZE,
    # which in the larger files falls across a block's end.
    run = 9 * MiB if size > 16 * MiB else 0
    head = rng.randbytes((size - run) // 2)
    data = head + b"\x07" * run + rng.randbytes(size - run - len(head))
    path = tmp_path / "f"
    path.write_bytes(data)
    got = [bytes(c) for c in chunker.chunk_file(str(path), os.stat(path))]
    assert got == _whole(data)
    if run:
        assert sum(len(c) == chunker.MAX_SIZE for c in got) == 2


@pytest.mark.parametrize("size", [1000, chunker.MIN_SIZE, 5 * MiB])
def test_a_file_written_after_its_stat_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(size))
    st = os.stat(path)
    with open(path, "r+b") as f:  # same size, new bytes, a new mtime
        f.seek(size // 2)
        f.write(b"x")
    with pytest.raises(chunker.ChangedWhileRead, match="changed while being read"):
        list(chunker.chunk_file(str(path), st))
