"""Learning to Reweight (Ren et al. 2018): the bi-level baseline.

Per step: one look-ahead SGD step through ``torch.func.functional_call`` with per-sample weights
``eps = 0`` that require grad (step size ``inner_lr``, default the optimiser's first group's ``lr``);
the weights are the normalised positive part of ``−∂L_clean/∂eps`` on a clean mini-batch.  The loss
is ``Σ w_i·CE_i`` with ``Σ w = 1``; the recorded weights are rescaled to mean 1."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import WarmupMethod

__all__ = ["L2R"]


class L2R(WarmupMethod):
    name = "l2r"

    def __init__(self, *, inner_lr: float | None = None, warmup=0) -> None:
        super().__init__(warmup)
        if inner_lr is not None and (isinstance(inner_lr, bool) or not isinstance(inner_lr, (int, float))
                                     or not inner_lr > 0):
            raise ValueError(f"inner_lr must be None or a positive number, got {inner_lr!r}")
        self.inner_lr = inner_lr

    def options(self) -> dict:
        return dict(inner_lr=self.inner_lr, warmup=self.warmup.epochs)

    def _weights(self, x, y):
        ctx, model = self.ctx, self.ctx.model
        params = dict(model.named_parameters())
        buffers = {k: v.clone() for k, v in model.named_buffers()}  # the look-ahead must not move BN stats
        lr = self.inner_lr if self.inner_lr is not None else ctx.optimizer.param_groups[0]["lr"]
        eps = torch.zeros(len(y), dtype=ctx.dtype, device=ctx.device, requires_grad=True)
        out = torch.func.functional_call(model, (params, buffers), (x,))
        inner = (eps * F.cross_entropy(out, y, reduction="none")).sum()
        names = [k for k, v in params.items() if v.requires_grad]
        grads = torch.autograd.grad(inner, [params[k] for k in names], create_graph=True, allow_unused=True)
        ahead = dict(params)
        for k, g in zip(names, grads):
            if g is not None:
                ahead[k] = params[k] - lr * g
        xc, yc = ctx.clean.sample(ctx.clean_batch_size)
        clean = F.cross_entropy(torch.func.functional_call(model, (ahead, buffers), (xc,)), yc)
        w = (-torch.autograd.grad(clean, eps)[0]).clamp_min(0).detach()
        s = w.sum()
        return w / s if s > 0 else w

    def loss(self, x, y, idx):
        ctx = self.ctx
        if not self.active:
            return ctx.mean_ce(ctx.forward(x, ctx.model), y), torch.ones(len(y), device=ctx.device)
        w = self._weights(x, y)
        losses = ctx.per_sample_ce(ctx.forward(x, ctx.model), y)
        return (w.to(losses.dtype) * losses).sum(), w * len(w)
