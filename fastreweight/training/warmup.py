"""When reweighting starts: after a fixed number of epochs, or once the features stop improving.

``Warmup(epochs)``: epochs ``0 .. epochs-1`` train with the method's initial weights, reweighting
starts at epoch ``epochs``.  ``Warmup("auto")``: at the end of every epoch the clean subset is split
into two class-stratified halves and each half is classified by nearest class mean (the centred inner
product, FBR's similarity) of the other half's penultimate features (eval mode).  Reweighting starts
with the epoch after this cross-half prototype accuracy has not improved on its best by more than
``tol`` for ``patience`` epochs — the features stopped getting better — and at the latest after
``max_epochs`` epochs (default ``max(1, total_epochs // 3)``).  No per-dataset threshold.
"""
from __future__ import annotations

import torch

from ..scores import fbr_scores

__all__ = ["Warmup", "prototype_probe"]


@torch.no_grad()
def prototype_probe(features: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """Cross-half nearest-class-mean accuracy of the clean ``features`` (labels ``y``)."""
    half = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    for c in range(num_classes):  # class-stratified alternation
        members = (y == c).nonzero().flatten()
        half[members[::2]] = True
    correct, total = 0, 0
    for a, b in ((half, ~half), (~half, half)):
        if a.sum() == 0 or b.sum() == 0 or torch.unique(y[b]).numel() < 2:
            continue
        d = fbr_scores(features[a], y[a], features[b], y[b], num_classes=num_classes, shift="max",
                       on_missing_class="skip")
        correct += (d > 0).sum().item()
        total += int(a.sum())
    return correct / max(total, 1)


class Warmup:
    """``epochs``: an int >= 0, or ``"auto"`` (see the module doc)."""

    def __init__(self, epochs: int | str = "auto", *, tol: float = 0.005, patience: int = 2,
                 max_epochs: int | None = None) -> None:
        if epochs != "auto" and (isinstance(epochs, bool) or not isinstance(epochs, int)):
            raise ValueError(f"warmup must be an int number of epochs or 'auto', got {epochs!r}")
        if not (isinstance(patience, int) and patience >= 1):
            raise ValueError(f"warmup patience must be an int >= 1, got {patience!r}")
        if max_epochs is not None and (isinstance(max_epochs, bool) or not isinstance(max_epochs, int)):
            raise ValueError(f"warmup max_epochs must be an int or None, got {max_epochs!r}")
        self.epochs, self.tol, self.patience, self.max_epochs = epochs, float(tol), patience, max_epochs
        self.auto = epochs == "auto"
        self.start: int | None = None if self.auto else int(epochs)
        self.best, self.since, self.cap = -1.0, 0, None
        self.probes: list[float] = []

    def setup(self, total_epochs: int) -> None:
        self.cap = max(1, total_epochs // 3) if self.max_epochs is None else int(self.max_epochs)

    def active(self, epoch: int) -> bool:
        return self.start is not None and epoch >= self.start

    @property
    def waiting(self) -> bool:
        """Still probing (``"auto"`` and not started)."""
        return self.auto and self.start is None

    def update(self, epoch: int, value: float) -> None:
        """The probe's value at the end of ``epoch``; may set ``start = epoch + 1``."""
        self.probes.append(value)
        if value > self.best + self.tol:
            self.best, self.since = max(value, self.best), 0
        else:
            self.best = max(self.best, value)
            self.since += 1
        if self.since >= self.patience or epoch + 1 >= self.cap:
            self.start = epoch + 1

    def state_dict(self) -> dict:
        return {"start": self.start, "best": self.best, "since": self.since, "probes": list(self.probes)}

    def load_state_dict(self, state: dict) -> None:
        self.start, self.best, self.since = state["start"], float(state["best"]), int(state["since"])
        self.probes = [float(v) for v in state["probes"]]
