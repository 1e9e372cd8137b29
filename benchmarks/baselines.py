"""Baselines the benchmarks time the library against (imported by benchmarks only).

* ``eager_pairwise_fbr``: the reference's pairwise math as one plain tensor function — centre,
  materialise K (B×M), aggregate with the class matrix, ``shift="max"`` epilogue.  Timed eager and
  under ``torch.compile``.
* ``naive_meta_scores``: per-sample gradients materialised with ``torch.func.vmap(grad)`` (B×k·d and
  M×k·d), then a Gram — what one writes without the factorised gradient kernel.
"""
from __future__ import annotations

import torch
from torch.func import grad, vmap


def eager_pairwise_fbr(x, y, z, u, num_classes: int, e=None, f=None):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, z = x.to(acc), z.to(acc)
    counts = torch.bincount(u, minlength=num_classes).to(acc)
    A = torch.nn.functional.one_hot(u, num_classes).to(acc) / counts.clamp_min(1)
    present = counts > 0
    mu = (A / present.sum()).sum(1) @ z
    K = (x - mu) @ (z - mu).T
    if e is not None:
        K = K * (e.to(acc) @ f.to(acc).T)
    S = K @ A
    own = S.gather(1, y[:, None]).squeeze(1)
    comp = S.masked_fill(~present[None, :], float("-inf")).scatter(1, y[:, None], float("-inf"))
    return own - comp.amax(1)


def naive_meta_scores(a, d, ca, cd):
    """r_i = mean_j <g_i, g_j> with g = vec(D ⊗ A) materialised by vmap(grad) of a linear layer."""
    W = torch.zeros(d.shape[1], a.shape[1], dtype=a.dtype, device=a.device)

    def surrogate(w, ai, di):  # ∇_w <w a_i, d_i> = d_i ⊗ a_i: the per-sample gradient of that layer
        return (w @ ai * di).sum()

    g = vmap(grad(surrogate), in_dims=(None, 0, 0))(W, a, d).reshape(a.shape[0], -1)
    cg = vmap(grad(surrogate), in_dims=(None, 0, 0))(W, ca, cd).reshape(ca.shape[0], -1)
    return (g @ cg.T).mean(dim=1)
