from vfs.cli import entry

entry()
