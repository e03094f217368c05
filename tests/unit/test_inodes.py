"""The mount's inode table against a plain dict doing the same work."""

from __future__ import annotations

import random

import pytest
import xxhash

from vfs.mount.inodes import NO_PAGE, InodeTable


def _key(n: int) -> bytes:
    return xxhash.xxh3_128_digest(n.to_bytes(8, "little"))


def test_random_interns_and_removes_agree_with_a_dict() -> None:
    rng = random.Random(7)
    t = InodeTable()
    model: dict[bytes, int] = {}  # identity -> inode number
    pages = [bytes([i]) * 32 for i in range(5)]
    for step in range(30_000):
        if model and rng.random() < 0.45:
            key = rng.choice(list(model))
            ino = model.pop(key)
            r = t.find(ino)
            assert r >= 0
            t.remove(r)
            assert t.find(ino) < 0
        else:
            key = _key(rng.randrange(20_000))
            r, new = t.intern(key)
            assert new == (key not in model)
            if new:
                model[key] = t.ino[r]
                t.set_leaf(r, rng.choice(pages))
                t.lookups[r] = step
            assert t.ino[r] == model[key]
        assert len(t) == len(model)
    inos = list(model.values())
    assert len(set(inos)) == len(inos), "two identities share an inode number"
    for key, ino in model.items():
        r = t.find(ino)
        assert r >= 0 and t.ino[r] == ino
        assert (t.key_hi[r], t.key_lo[r]) == (
            int.from_bytes(key[:8], "little"),
            int.from_bytes(key[8:], "little"),
        )
    assert t.pages_in_use() <= len(pages)


def test_an_identity_keeps_its_number_and_a_colliding_one_moves_on() -> None:
    t = InodeTable()
    a = (1234).to_bytes(8, "little") + b"A" * 8
    b = (1234).to_bytes(8, "little") + b"B" * 8  # the same first 8 bytes: the same home
    ra, _ = t.intern(a)
    rb, new = t.intern(b)
    assert new and t.ino[ra] == 1234 and t.ino[rb] == 1235
    t.remove(ra)
    ra2, new = t.intern(a)  # forgotten, then looked up again: the same number
    assert new and t.ino[ra2] == 1234
    assert t.find(1235) == rb


def test_numbers_0_and_1_are_never_given_out() -> None:
    t = InodeTable()
    root = t.add_special(1, b"\0" * 16)
    r, _ = t.intern((1).to_bytes(8, "little") + b"x" * 8)
    assert t.ino[r] == 2 and t.find(1) == root
    with pytest.raises(ValueError):
        t.add_special(1, b"\1" * 16)


def test_pages_are_counted_and_freed_with_their_last_record() -> None:
    t = InodeTable()
    r1, _ = t.intern(_key(1))
    r2, _ = t.intern(_key(2))
    t.set_leaf(r1, b"p" * 32)
    t.set_leaf(r2, b"p" * 32)
    assert t.pages_in_use() == 1 and t.leaf_id(r2) == b"p" * 32
    t.remove(r1)
    assert t.pages_in_use() == 1
    t.set_leaf(r2, b"q" * 32)  # moved to another page: the first has no user left
    assert t.pages_in_use() == 1 and t.leaf_id(r2) == b"q" * 32
    t.remove(r2)
    assert t.pages_in_use() == 0
    r3, _ = t.intern(_key(3))  # a reused record starts clean
    assert t.leaf[r3] == NO_PAGE and t.lookups[r3] == 0


def test_a_million_inodes_fit_in_about_70_bytes_each() -> None:
    t = InodeTable()
    page = b"p" * 32
    for n in range(200_000):
        r, _ = t.intern(_key(n))
        t.set_leaf(r, page)
    assert len(t) == 200_000
    assert t.nbytes() / len(t) < 90


def test_a_lookup_count_that_reaches_the_top_keeps_its_record() -> None:
    t = InodeTable()
    r, _ = t.intern(_key(9))
    t.lookups[r] = 0xFFFFFFFE
    t.looked_up(r)
    t.looked_up(r)  # saturated: no overflow
    assert t.lookups[r] == 0xFFFFFFFF
    t.forgotten(r, 5)  # a saturated count is kept: the record lives on
    assert t.lookups[r] == 0xFFFFFFFF
    r2, _ = t.intern(_key(10))
    t.looked_up(r2)
    t.forgotten(r2, 3)  # more than it had: zero, never negative
    assert t.lookups[r2] == 0
