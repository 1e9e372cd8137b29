"""The trusted subset as the training loop uses it: clean passes, clean mini-batches, clean features.

The clean subset is small by construction (tens to a few thousand rows), so it is held as two
tensors on the training device: ``CleanSet(x, y)`` from tensors, ``CleanSet.from_dataset(ds)`` from
any map-style ``Dataset`` or iterable of ``(x, y)`` / ``(x, y, idx)`` batches (a ``DataLoader``),
read once.  Give it without random augmentation: clean passes and clean features use the rows as
read (the trainer never augments the clean subset).
"""
from __future__ import annotations

import torch

from .batches import TensorLoader, unpack_batch

__all__ = ["CleanSet"]


class CleanSet:
    """Clean inputs ``x`` (M rows) and their trusted labels ``y`` (M int64).

    ``passes``: clean passes per epoch (ordinary mean cross-entropy training on the clean subset
    before the epoch's training steps, for every method alike; SPEC §7's recipe uses 30);
    ``batch_size``: their batch size and that of clean mini-batches (``MetaDirection``, ``L2R``,
    ``FBR(clean_features="batch")``); ``feature_batch_size``: rows per forward when computing the
    clean features.  ``generator`` draws the passes' permutations and the mini-batches."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, passes: int = 0, batch_size: int = 128,
                 feature_batch_size: int = 1024) -> None:
        for name, v, lo in (("passes", passes, 0), ("batch_size", batch_size, 1),
                            ("feature_batch_size", feature_batch_size, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"clean {name} must be an int >= {lo}, got {v!r}")
        self.passes, self.batch_size, self.feature_batch_size = passes, batch_size, feature_batch_size
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(f"clean x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
        if y.dim() != 1 or x.dim() == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(f"clean x must have one row per label of the 1-d clean y, got x {tuple(x.shape)} and "
                             f"y {tuple(y.shape)}")
        if y.shape[0] == 0:
            raise ValueError("the clean subset is empty: it needs at least one row per class that is scored")
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
            raise TypeError(f"clean labels must be integers, got {y.dtype}")
        self.x, self.y = x, y.to(torch.int64)
        self.generator = torch.Generator()

    @classmethod
    def from_dataset(cls, data, **options) -> "CleanSet":
        """Read a map-style ``Dataset`` of ``(x, y)`` items, or an iterable of ``(x, y[, idx])`` batches
        (a ``DataLoader``), once into tensors; ``options`` as for ``CleanSet``."""
        if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, torch.Tensor):
            from torch.utils.data import DataLoader

            data = DataLoader(data, batch_size=256, shuffle=False)
        xs, ys = [], []
        for batch in data:
            x, y, _ = unpack_batch(batch, need_index=False)
            xs.append(torch.as_tensor(x))
            ys.append(torch.as_tensor(y))
        if not xs:
            raise ValueError("the clean subset is empty: it needs at least one row")
        return cls(torch.cat(xs), torch.cat(ys), **options)

    def __len__(self) -> int:
        return self.y.shape[0]

    def to(self, device, dtype: torch.dtype | None = None) -> "CleanSet":
        """On ``device``; floating inputs in ``dtype`` (the model's parameter dtype).  Keeps the generator."""
        x = self.x.to(device)
        if dtype is not None and x.is_floating_point():
            x = x.to(dtype)
        out = CleanSet(x, self.y.to(device), passes=self.passes, batch_size=self.batch_size,
                       feature_batch_size=self.feature_batch_size)
        out.generator = self.generator
        return out

    def passes_loader(self, parallel) -> TensorLoader:
        """One shuffled clean pass per ``iter()`` (one ``randperm(M)`` from ``generator``); under
        ``Distributed`` each rank's shard of every global batch."""
        shard = (parallel.rank, parallel.world) if parallel.distributed else None
        return TensorLoader(self.x, self.y, self.batch_size, generator=self.generator, shard=shard)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A clean mini-batch: all rows if ``M <= batch_size``, else ``batch_size`` rows drawn without
        replacement (``randperm(M)`` from ``generator``)."""
        M = self.y.shape[0]
        if M <= batch_size:
            return self.x, self.y
        sel = torch.randperm(M, generator=self.generator)[:batch_size].to(self.y.device)
        return self.x[sel], self.y[sel]
