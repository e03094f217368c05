"""`vfs show`: the stored objects behind a version, decoded for reading.

A commit, a tree page (leaf or index), or a file's entry with its chunks and where
they are stored; docs/format.md explains every field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vfs import format as fmt
from vfs.ops.base import resolve, version_of
from vfs.ops.history import commit_doc, ref_names, source_line, source_of
from vfs.store import Store


def entry_doc(e: fmt.Entry) -> dict[str, Any]:
    """A tree entry with every stored field."""
    doc: dict[str, Any] = {
        "name": e.name.decode("utf-8", "surrogateescape"),
        "type": fmt.KIND_NAMES[e.kind],
        "mode": f"{e.mode:04o}",
        "mtime_ns": e.mtime_ns,
        "size": e.size,
    }
    if e.is_file:
        doc["chunks"] = [[c.id.hex(), c.length] for c in e.chunks]
    elif e.is_dir:
        doc["tree"] = e.tree.hex()
        doc["files"] = e.nfiles
    else:
        doc["target"] = e.target.decode("utf-8", "surrogateescape")
    return doc


def show(store: Store, spec: str, path: str | None) -> Iterator[Any]:
    """Yield a title line naming the object, then the object as a JSON document: the
    commit of `spec`; with `path`, the tree page of that directory or the file's
    entry. An imported commit's title says where it came from. The title comes first, so that it is out before decoding can fail."""
    r = resolve(store, spec)
    c = store.get_commit(r.commit)
    if path is None:
        src = source_of(c.meta)
        yield f"commit {r.commit.hex()}" + (f"\n{source_line(src)}" if src else "")
        yield commit_doc(r.commit, c, ref_names(store, r.spec.dataset))
        return
    v = version_of(store, r)
    found = v.stat(path)
    if found is None or found.entry.is_dir:
        top = found.entry.tree if found else v.root
        page = store.get_page(top)
        kind = "leaf" if page.kind == fmt.LEAF else "index"
        yield f"tree {top.hex()} ({kind} page, {len(page)} entries)"
        if page.kind == fmt.LEAF:
            yield [entry_doc(e) for e in page.entries()]
        else:
            yield [
                {
                    "first": ch.first.decode("utf-8", "surrogateescape"),
                    "page": ch.page.hex(),
                    "entries": ch.count,
                }
                for ch in page.children()
            ]
        return
    yield f"entry in leaf page {found.leaf.hex()}"
    doc = entry_doc(found.entry)
    if found.entry.is_file:
        doc["locations"] = [
            {
                "chunk": w.ref.id.hex(),
                "pack": w.loc.pack.hex(),
                "offset": w.loc.offset,
                "stored_length": w.loc.stored_length,
                "codec": "zstd" if w.loc.codec == fmt.CODEC_ZSTD else "raw",
            }
            for w in v.wanted(found)
        ]
    yield doc
