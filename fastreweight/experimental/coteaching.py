"""Co-teaching (Han et al. 2018): two networks; each trains on the small-loss fraction
``1 − forget_rate(t)`` of the batch chosen by the other, ``forget_rate(t) = forget_rate ·
min(1, t/num_gradual)^exponent``."""
from __future__ import annotations

import copy

import torch

from ..training.methods.base import Method

__all__ = ["CoTeaching"]


class CoTeaching(Method):
    """``model2`` / ``optimizer2`` default to a re-initialised copy of the model (seed ``seed2``) and an
    optimiser of the first one's type and settings; ``make_scheduler2(optimizer2)`` its scheduler."""

    name = "coteaching"

    def __init__(self, *, forget_rate: float = 0.2, num_gradual: int = 10, exponent: float = 1.0, model2=None,
                 optimizer2=None, make_scheduler2=None, seed2: int = 7919) -> None:
        super().__init__()
        if not (isinstance(forget_rate, (int, float)) and 0 <= forget_rate < 1):
            raise ValueError(f"forget_rate must be in [0, 1), got {forget_rate!r}")
        self.forget_rate, self.num_gradual, self.exponent = float(forget_rate), num_gradual, exponent
        self.model2, self.optimizer2, self.make_scheduler2, self.seed2 = model2, optimizer2, make_scheduler2, seed2

    def options(self) -> dict:
        return dict(forget_rate=self.forget_rate, num_gradual=self.num_gradual, exponent=self.exponent)

    def attach(self, ctx) -> None:
        super().attach(ctx)
        if self.model2 is None:
            self.model2 = copy.deepcopy(ctx.model)
            with torch.no_grad():
                state = torch.random.get_rng_state()
                torch.manual_seed(self.seed2)
                for m in self.model2.modules():
                    if hasattr(m, "reset_parameters") and m is not self.model2:
                        m.reset_parameters()
                torch.random.set_rng_state(state)
        self.model2.to(ctx.device)
        if self.optimizer2 is None:
            opt = ctx.optimizer
            self.optimizer2 = type(opt)(self.model2.parameters(), **opt.defaults)
            for g2, g in zip(self.optimizer2.param_groups, opt.param_groups):
                g2["lr"] = g["lr"]
        self.scheduler2 = self.make_scheduler2(self.optimizer2) if self.make_scheduler2 is not None else None

    def optimizers(self):
        return [self.ctx.optimizer, self.optimizer2]

    def models(self):
        return [self.ctx.model, self.model2]

    def begin_epoch(self, epoch: int) -> None:
        self.rate = self.forget_rate * min(1.0, epoch / max(self.num_gradual, 1)) ** self.exponent

    def clean_loss(self, x, y):
        ctx = self.ctx  # both networks train on the clean batch (their gradients are independent)
        return ctx.mean_ce(ctx.forward(x, ctx.model), y) + ctx.mean_ce(ctx.forward(x, self.model2), y)

    def loss(self, x, y, idx):
        ctx = self.ctx
        with ctx.precision.autocast():
            l1 = ctx.per_sample_ce(ctx.model(x), y)
            l2 = ctx.per_sample_ce(self.model2(x), y)
        keep = max(1, int(round((1 - self.rate) * len(y))))
        s1 = torch.argsort(l1.detach())[:keep]
        s2 = torch.argsort(l2.detach())[:keep]
        w = torch.zeros(len(y), device=ctx.device)
        w[s2] = 1.0
        # one backward for both: model 1 learns from model 2's picks and vice versa
        return l1[s2].mean() + l2[s1].mean(), w

    def end_epoch(self, epoch: int) -> None:
        if self.scheduler2 is not None:
            self.scheduler2.step()

    def state_dict(self) -> dict:
        return {"model2": self.model2.state_dict(),
                "scheduler2": None if self.scheduler2 is None else self.scheduler2.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model2.load_state_dict(state["model2"])
        if self.scheduler2 is not None:
            self.scheduler2.load_state_dict(state["scheduler2"])
