"""The clean subset mixed into the training batches: the same number of clean visits as ``k`` clean
passes, without the extra steps.  Each epoch the clean subset, repeated ``k`` times and shuffled, is
split evenly over the epoch's batches and appended to them (rows past the batch's ``idx``: weight 1,
never scored, never augmented, in the loss's normaliser like any row)."""
from __future__ import annotations

import math

import torch

__all__ = ["CleanMixLoader"]


class CleanMixLoader:
    """Wraps a loader of ``(x, y, idx)`` batches with a known length; draws its ``k`` permutations of
    the clean subset from ``clean.generator`` right after the inner loader's epoch starts."""

    def __init__(self, loader, clean, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"clean_mix must be an int >= 1 here, got {k!r}")
        self.loader, self.clean, self.k = loader, clean, k
        self.dataset = getattr(loader, "dataset", None)
        self.generator = clean.generator

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        inner = iter(self.loader)  # the training permutation is drawn first
        M = len(self.clean)
        mix = torch.cat([torch.randperm(M, generator=self.clean.generator) for _ in range(self.k)])
        chunks = torch.tensor_split(mix.to(self.clean.y.device), math.ceil(len(self.dataset) / self.loader.batch_size))
        return self._mixed(inner, chunks)

    def _mixed(self, inner, chunks):
        cx, cy = self.clean.x, self.clean.y
        for i, (x, y, idx) in enumerate(inner):
            c = chunks[i]
            yield torch.cat([x, cx[c]]), torch.cat([y, cy[c]]), idx
