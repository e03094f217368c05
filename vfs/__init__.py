"""vfs: data version control whose checkout is a filesystem."""

__version__ = "0.1.0"
