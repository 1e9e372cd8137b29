"""Data-parallel FBR through ``torch.distributed`` (DDP).

The scheme, chosen so that R ranks reproduce a single process that sees the concatenation of the R
local batches (rank order) as its batch:

* **clean features**: each rank holds a shard of the clean subset; ``gather_rows`` all-gathers the
  shards (any sizes, concatenated in rank order), so every rank scores its local batch against the
  whole clean subset.  Scores are per-row, so local scoring equals global scoring.
* **weights**: ``DistributedReweighter.step`` all-gathers the batch's ``(idx, scores)`` from every
  rank and applies the *global* update (``mean|r|`` over the global batch, SPEC §3.6) on every rank,
  so the weight state is identical on all ranks (a replicated state; N floats per rank).  It returns
  the weights of the local rows.  Indices must not repeat across ranks within a step (a
  ``DistributedSampler`` guarantees it).
* **loss**: DDP averages gradients over ranks, so ``distributed_weighted_loss`` scales the local
  weighted sum by ``R / global normaliser`` (``Σ w`` over all ranks for ``"weight_sum"``, the global
  batch size for ``"batch"``), which makes the averaged gradient the gradient of the global loss.

Every collective here is blocking; each step costs two small all-gathers and one all-reduce.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from . import reference
from . import validate as V
from .weights import Reweighter

__all__ = ["gather_rows", "DistributedReweighter", "distributed_weighted_loss"]


def _world(group) -> int:
    return dist.get_world_size(group)


def gather_rows(t: torch.Tensor, group=None) -> torch.Tensor:
    """All-gather tensors whose first dimension differs between ranks; concatenated in rank order."""
    V.check_tensor("t", t)
    if t.dim() == 0:
        raise ValueError("t must have at least one dimension (rows), got a 0-d tensor")
    world = _world(group)
    n = torch.tensor([t.shape[0]], dtype=torch.int64, device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    sizes = [int(s) for s in sizes]
    cap = max(sizes)
    padded = torch.zeros((cap,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded.contiguous(), group=group)
    return torch.cat([o[:s] for o, s in zip(out, sizes)], dim=0)


class DistributedReweighter(Reweighter):
    """A ``Reweighter`` whose state is replicated and kept identical on every rank (see module doc)."""

    def __init__(self, num_samples: int, *, group=None, **kw) -> None:
        super().__init__(num_samples, **kw)
        self.group = group

    def step(self, idx: torch.Tensor, scores: torch.Tensor, *, check_values: bool = True) -> torch.Tensor:
        V.check_float_vector("scores", scores)
        V.check_label_vector("idx", idx, scores.shape[0], what="index")
        V.check_same_device({"weights": self.weights, "idx": idx, "scores": scores})
        all_idx = gather_rows(idx.to(torch.int64), self.group)
        all_scores = gather_rows(scores.to(self.weights.dtype), self.group)
        if check_values:
            vc = V.ValueChecks()
            vc.finite("scores", all_scores)
            vc.run()
            V.check_index_vector("idx (gathered over ranks)", all_idx, all_idx.shape[0], self.num_samples, True)
        new = reference.reweighter_update(self.weights[all_idx], all_scores, self.lr, self.normalize_update, self.eps)
        self.weights[all_idx] = new
        return self.weights[idx.to(torch.int64)]


def distributed_weighted_loss(
    losses: torch.Tensor, w: torch.Tensor, *, reduction: str = "weight_sum", eps: float = 1e-12, group=None
) -> torch.Tensor:
    """The local share of the global weighted loss, scaled for DDP's gradient averaging."""
    V.check_option("reduction", reduction, V.REDUCTION_OPTIONS)
    V.check_float_vector("losses", losses)
    V.check_float_vector("w", w, losses.shape[0])
    w = w.detach().to(losses.dtype)
    if reduction == "batch":
        norm = losses.new_full((1,), float(losses.shape[0]))  # filled on the device: no host-to-device copy
    else:
        norm = w.sum().reshape(1)
    dist.all_reduce(norm, group=group)
    norm = norm.clamp_min(eps) if reduction == "weight_sum" else norm
    return (w * losses).sum() * _world(group) / norm[0]
