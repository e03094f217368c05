"""`vfs init`: make a location a store on purpose.

A first commit creates a store only where there is nothing (vfs/storecheck.py);
`vfs init` is how a user says "here, even beside other files". It is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

from vfs.ops.base import open_store
from vfs.storecheck import Place, where


@dataclass(frozen=True)
class InitResult:
    where: str  # the store's directory or s3:// URL
    before: Place  # what was there: STORE means nothing was written

    @property
    def created(self) -> bool:
        return self.before is not Place.STORE


def init_store(url: str | None) -> InitResult:
    # A remote's name opens the remote (with its endpoint); `vfs init NAME` of a bare
    # word that names no remote means a new directory NAME.
    store = open_store(url, for_write=True, create=True)
    try:
        return InitResult(where(store.url), store.init())
    finally:
        store.close()
