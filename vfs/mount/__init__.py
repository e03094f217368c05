"""`vfs mount`: a version of a dataset as a read-only FUSE filesystem.

This package owns everything of a mount, split by the state each part owns (after
mountpoint-s3's `fuse.rs`, `fs.rs`, `superblock/`, `prefetch/`):

    control.py    the client side (mountpoint checks, start_daemon, request, umount)
                  and the typed messages: MountOptions, Live/Failure, replies
        |
    daemon.py     the process: logging, malloc tuning, trio.run, the control socket
        |
    fuse.py       the only pyfuse3 importer: handlers call the core, one errno table
        |
    core.py       FsCore: composes the parts; switch, diagnostics, statfs
        |
    namespace.py  inodes (inodes.py: InodeTable), directories, lookup/readdir, the root
    versions.py   the versions shown (views), the `@REF` listing
    files.py      open files: layouts, reads
    readahead.py  the readahead window of an open file
        |
    loader.py     the one loader of pages and chunks: memory, single flight, in-flight
                  budget, retries within the read timeout, write-behind to the cache
        |
    vfs.store, vfs.reader, vfs.tree (the descent), vfs.cache

Nothing imports upward: the parts below core.py never import it, and control.py
imports only the standard library and vfs.errors (the parent of `vfs mount`, `vfs
switch` and `vfs umount` must not pay for trio, the store or the cache).

loader.py is over 500 lines on purpose: its state (the flight tables, the budget,
the writer's queues) is one critical section on the trio thread, and splitting its
methods over modules would add a call per chunk on the read path.

Concurrency rules. A mount is one trio run. Every FUSE handler, every table of the
namespace, versions, open files and loader, and the control server run on the trio
thread: the code between two awaits is a critical section, so no table has a lock.
What may run inline there: dictionary and array work, decoding a page already in
memory, and short LMDB read transactions (the chunk cache's index lookups). Store
reads (tree pages, locations, refs, commits, pack ranges), cache reads and cache
writes run in worker threads behind named trio.CapacityLimiters (the loader's
`meta_limiter`, `warm_limiter`, `remote_limiter`, `cache_limiter`,
`cache_write_limiter`); those threads get values, touch only the Store and the
ChunkCache (both thread-safe) and return values. Fetches run as tasks of the
mount's outer nursery, so a reader that gives up never cancels a fetch others share.
"""
