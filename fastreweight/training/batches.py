"""Batches the training loop reads: ``(x, y, idx)`` with ``idx`` the rows' positions in the dataset.

Per-sample methods keep one weight per training sample, so every batch must say which samples it
holds.  Two ways to get such batches:

* ``with_index(dataset)`` wraps any map-style ``Dataset`` whose items are ``(x, y)`` so that they are
  ``(x, y, i)``; a ``DataLoader`` over it (any sampler, ``DistributedSampler`` included, any
  transforms, workers) then yields ``(x, y, idx)`` batches.
* ``TensorLoader`` batches tensors already in memory (on the training device) by index gathers — no
  per-sample ``__getitem__`` and collation, which is most of the step time for small models.

Rows of ``x`` past ``len(idx)`` are trusted rows with weight 1 (never scored); the experimental
``clean_mix`` appends such rows.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.utils.data import Dataset

__all__ = ["with_index", "IndexedDataset", "TensorLoader", "unpack_batch", "labels_as_int64"]


class IndexedDataset(Dataset):
    """``dataset[i] == (x, y)`` becomes ``(x, y, i)``."""

    def __init__(self, dataset) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"dataset must be a map-style Dataset (with __getitem__ and __len__), got {type(dataset).__name__}")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"with_index: item {i} of the dataset must be a pair (x, y), got "
                             f"{type(item).__name__}{'' if not isinstance(item, (tuple, list)) else f' of length {len(item)}'}")
        return item[0], item[1], i


def with_index(dataset) -> IndexedDataset:
    """``dataset`` (items ``(x, y)``) with each item's index appended: ``(x, y, i)``."""
    return IndexedDataset(dataset)


def labels_as_int64(y: torch.Tensor) -> torch.Tensor:
    """A batch's labels as int64 (what cross-entropy and the per-sample label stores take); float or
    bool labels raise ``TypeError``: soft or one-hot targets are not class labels."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y (a batch's labels) must be a tensor of integer class labels, got {type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"y (a batch's labels) must hold integer class labels, got {y.dtype}")
    return y if y.dtype == torch.int64 else y.to(torch.int64)


def unpack_batch(batch, *, need_index: bool = True):
    """``(x, y, idx)`` of a loader's batch (``idx`` ``None`` for ``(x, y)`` batches when not needed)."""
    if isinstance(batch, dict):
        if "x" not in batch or "y" not in batch or (need_index and "idx" not in batch):
            keys = "'x', 'y' and 'idx'" if need_index else "'x' and 'y' (and optionally 'idx')"
            raise ValueError(f"a dict batch must have keys {keys}, with idx the samples' dataset indices; got "
                             f"{sorted(batch, key=str)}")
        return batch["x"], batch["y"], batch.get("idx")
    if isinstance(batch, (tuple, list)) and len(batch) == 3:
        return batch[0], batch[1], batch[2]
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and not need_index:
        return batch[0], batch[1], None
    raise ValueError("each training batch must be (x, y, idx) with idx the samples' dataset indices: wrap the "
                     "dataset with fastreweight.training.with_index(dataset) or use TensorLoader; got "
                     f"{type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))


class TensorLoader:
    """Batches of in-memory tensors: ``(x[b], y[b], b)`` for consecutive slices ``b`` of a permutation.

    ``generator`` draws one ``randperm(N)`` when an epoch's iterator is created (``iter(loader)``)
    and then, per batch, whatever ``transform(x_batch, generator)`` draws (a batch augmentation).
    ``shard=(rank, world)`` yields rank ``rank``'s contiguous part ``[r·b//R, (r+1)·b//R)`` of every
    global batch of ``b`` rows (possibly empty), the transform applied to the global batch first: every
    rank draws the same permutation and augmentation, so R ranks see one process's batches between
    them.  ``shuffle=False`` keeps the order and draws nothing.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = True,
                 generator: torch.Generator | None = None, transform: Callable | None = None,
                 shard: tuple[int, int] | None = None) -> None:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
        if x.dim() == 0 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"x must have one row per label of the 1-d y, got x {tuple(x.shape)} and y {tuple(y.shape)}")
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
            raise TypeError(f"y must hold integer class labels, got {y.dtype}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if shard is not None:
            rank, world = shard
            if not (isinstance(world, int) and world >= 1 and isinstance(rank, int) and 0 <= rank < world):
                raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard!r}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.transform, self.shard = shuffle, transform, shard
        self.generator = generator if generator is not None else torch.Generator()
        self.dataset = x  # len(loader.dataset) is the number of samples, as for a DataLoader

    def __len__(self) -> int:
        return math.ceil(self.x.shape[0] / self.batch_size)

    def __iter__(self):
        n = self.x.shape[0]
        if self.shuffle:
            perm = torch.randperm(n, generator=self.generator).to(self.x.device)
        else:
            perm = torch.arange(n, device=self.x.device)
        return self._batches(perm)

    def _batches(self, perm: torch.Tensor):
        for i in range(0, perm.shape[0], self.batch_size):
            idx = perm[i:i + self.batch_size]
            xb, yb = self.x[idx], self.y[idx]
            if self.transform is not None:
                xb = self.transform(xb, self.generator)
            if self.shard is not None:
                rank, world = self.shard
                b = idx.shape[0]
                lo, hi = rank * b // world, (rank + 1) * b // world
                idx, xb, yb = idx[lo:hi], xb[lo:hi], yb[lo:hi]
            yield xb, yb, idx
