"""`python -m vfs`: the same command line as `vfs`, for a venv whose scripts are not
on PATH."""

from vfs.cli import entry

entry()
