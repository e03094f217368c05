"""vfs: data version control whose checkout is a filesystem.

The packages, top down (docs/architecture.md has the picture and the rules):

    vfs.cli        the `vfs` command line: parses and prints only
    vfs.ops        one module per verb (commit, get, diff, verify, prefetch, pin, ...)
    vfs.mount      a version as a read-only FUSE filesystem (daemon, core, loader)
    reader, refs, tree, store, packer, chunker, format
                   the store layer: reading and writing versions in a store
    vfs.backends   S3 and local stores, and the layers stacked over them
    vfs.cache      the machine's cache directory: the chunk cache, the stat cache
    vfs.testing    for tests: a real S3 server (SeaweedFS) and the fault launcher

The Python API: `vfs.reader.open_version("dataset@ref")`.
"""

__version__ = "0.1.0"
