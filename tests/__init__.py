"""The tests of vfs, in folders by what they need to run (the tiers of the house style).

- `unit/`: nothing but this process and a temp directory: the format, the inode
  table, the chunk cache (real files, LMDB and processes), and fuzzed decoders and a
  fuzzed mount core over a local store.
- `store/`: the store, the commands and the mount's filesystem core in process,
  no FUSE. Tests that take `store_url` or `backend` run on the local backend and on
  S3, which needs the session's SeaweedFS server (marker `s3`).
- `fuse/`: real mounts read by real programs (marker `fuse`; skipped without
  /dev/fuse and fusermount3). A file whose story mixes tiers (crash, reliability,
  hostile input) sits with its most demanding test and says which tests mount.
- `support/`: helpers shared by the folders, each in one place: `forge` (hostile
  versions written straight into a store), `core` (the mount's core driven without
  FUSE), `mounting` (real mounts, always cleaned up), `treegen` (generated trees).

`conftest.py` holds what every folder shares: the SeaweedFS session server, fresh
stores on each backend, and the hook that fails a test which logs an ERROR.
"""
