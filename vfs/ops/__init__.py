"""The verbs as library functions: one module per verb, usable without the CLI.

This package owns what a `vfs` command does, between parsing its arguments and
printing its result: `commit` (snapshot a directory), `get` (materialise a version),
`diff`, `verify`, `prefetch` (warm the chunk cache), `pin` (the offline set of a
version), `rollback`, `show` (decode the objects behind a version), `history` (log,
tags and branches), `read` (ls and cat), and `base`, which opens the store a
command names and resolves its version spec. vfs.cli parses and prints around these
functions and reaches the store layer only through them.

Each module is imported on its own (this file imports nothing), so a verb pays only
for what it uses.
"""
