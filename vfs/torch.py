"""PyTorch helpers: a map-style dataset over a version's files, and a sampler wrapper
that tells the reader each epoch's order (pip install 'vfs[torch]').

    from torch.utils.data import DataLoader, RandomSampler
    from vfs.torch import OrderHintSampler, VfsDataset

    ds = VfsDataset("imagenet@v3", root="train", transform=decode)
    loader = DataLoader(ds, sampler=OrderHintSampler(RandomSampler(ds), ds),
                        batch_size=64, num_workers=8, multiprocessing_context="spawn")

This module owns the shape PyTorch expects; the reading is vfs.api's and the
fetching ahead vfs.api.order's. VfsDataset is a torch Dataset where torch is
installed (for type checkers and `+`); without torch it is a plain map-style object,
which is all a DataLoader needs, so `import vfs.torch` works either way.

Processes: a VfsDataset pickles as its Version (names only) and its file list, so
DataLoader workers under spawn or fork open the store themselves. The order hint
lives in the process that iterates the sampler (the loader's main process): it fills
the machine's chunk cache, which the workers read.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sized
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from vfs.api import Version, open_version
from vfs.api.order import OrderPrefetch

__all__ = ["OrderHintSampler", "VfsDataset"]

MiB = 1024 * 1024
_T = TypeVar("_T")

if TYPE_CHECKING:
    from torch.utils.data import Dataset
else:
    try:
        from torch.utils.data import Dataset
    except ImportError:  # torch is optional: a DataLoader takes any map-style object

        class Dataset(Generic[_T]):
            pass


class VfsDataset(Dataset[Any], Generic[_T]):
    """The files below `root` of a version, in sorted path order. `ds[i]` is
    (path, bytes), or transform(bytes) when a transform is given (a picklable
    callable, for spawn workers). `spec` is `dataset@ref` or an open vfs.Version;
    `locked=True` reads the version the nearest vfs.lock pins, and
    `record_access=FILE` records what the run read, in every worker (vfs.open_version)."""

    def __init__(
        self,
        spec: str | Version,
        root: str = "",
        transform: Callable[[bytes], _T] | None = None,
        store: str | None = None,
        cache_dir: str | None = None,
        *,
        locked: bool | str = False,
        record_access: str | None = None,
    ) -> None:
        self.version = (
            spec
            if isinstance(spec, Version)
            else open_version(spec, store, cache_dir, locked=locked, record_access=record_access)
        )
        self.root = root
        self.paths = sorted(self.version.files(root))
        self.transform = transform
        self._prefetch: OrderPrefetch | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, bytes] | _T:
        path = self.paths[index]
        data = self.version.read_bytes(path)
        if self.transform is not None:
            return self.transform(data)
        return path, data

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_prefetch"] = None  # threads of the parent's process stay there
        return state

    def hint_order(
        self, indices: Iterable[int], *, ahead_bytes: int = 256 * MiB, threads: int = 8
    ) -> OrderPrefetch:
        """Fetch the files at `indices` into the chunk cache in that order, in
        background threads, at most `ahead_bytes` ahead of OrderPrefetch.note_read.
        Replaces the previous hint."""
        self._prefetch = self.version.prefetch(
            [self.paths[i] for i in indices], ahead_bytes=ahead_bytes, threads=threads
        )
        return self._prefetch


class OrderHintSampler:
    """Wraps a sampler: at each epoch it takes the sampler's whole order, hands it to
    the dataset's reader (VfsDataset.hint_order), then yields it, moving the reader's
    position as the loader takes each index, so fetches run ahead of the loader in
    exactly its order. `last` is the current epoch's OrderPrefetch."""

    def __init__(
        self,
        sampler: Iterable[int],
        dataset: VfsDataset[Any],
        *,
        ahead_bytes: int = 256 * MiB,
        threads: int = 8,
    ) -> None:
        self.sampler = sampler
        self.dataset = dataset
        self.ahead_bytes = ahead_bytes
        self.threads = threads
        self.last: OrderPrefetch | None = None

    def __len__(self) -> int:
        if isinstance(self.sampler, Sized):
            return len(self.sampler)
        raise TypeError("the wrapped sampler has no length")

    def set_epoch(self, epoch: int) -> None:
        """Passed on, for samplers that shuffle by epoch (DistributedSampler)."""
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __iter__(self) -> Generator[int, None, None]:
        order = [int(i) for i in self.sampler]
        if self.last is not None:
            self.last.stop()
        self.last = pf = self.dataset.hint_order(
            order, ahead_bytes=self.ahead_bytes, threads=self.threads
        )
        try:
            for place, index in enumerate(order):
                pf.note_read(place)
                yield index
        except GeneratorExit:  # the loader stopped early: the rest will not be read
            pf.stop()
            raise
